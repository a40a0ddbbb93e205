"""A build context as the docker CLI sends it: a tar of the directory, less what
.dockerignore excludes (moby/patternmatcher's rules), with the Dockerfile always in it.

Used by `tether build` and `tether compose build` (both client-side, as docker's).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import tarfile
from dataclasses import dataclass


@dataclass
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def _clean(p: str) -> str:
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not parts:
                continue
            continue
        parts.append(seg)
    return "/".join(parts) or "."


def _regex(pattern: str) -> re.Pattern[str]:
    out = "^"
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                # "**/" matches zero or more directories; a trailing "**" anything.
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                    out += "(.*/)?"
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out += re.escape(ch)
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out += "[" + body + "]"
                i = end
        elif ch == "\\" and i + 1 < n:
            out += re.escape(pattern[i + 1])
            i += 1
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def read_dockerignore(context: str) -> list[Pattern]:
    path = os.path.join(context, ".dockerignore")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        exclusion = text.startswith("!")
        if exclusion:
            text = text[1:].strip()
        text = _clean(text.lstrip("/"))
        if not text or text == ".":
            continue
        out.append(Pattern(text, exclusion, _regex(text)))
    return out


def excluded(rel: str, patterns: list[Pattern]) -> bool:
    """The last pattern matching the path or one of its parent directories decides."""
    result = False
    parents = []
    parts = rel.split("/")
    for i in range(1, len(parts)):
        parents.append("/".join(parts[:i]))
    for p in patterns:
        match = bool(p.regex.match(rel)) or any(p.regex.match(d) for d in parents)
        if match:
            result = not p.exclusion
    return result


def pack(
    context: str, dockerfile: str | None, dockerfile_text: bytes | None = None
) -> tuple[bytes, str]:
    """(the tar, the Dockerfile's name inside it).

    `dockerfile`: a path (relative to the working directory, or absolute), or None for
    CONTEXT/Dockerfile; `dockerfile_text`: the Dockerfile's bytes when it came from stdin.
    A Dockerfile outside the context is added under a random name, as the docker CLI does.
    """
    context = os.path.abspath(context)
    patterns = read_dockerignore(context)
    df_path = os.path.abspath(dockerfile) if dockerfile else os.path.join(context, "Dockerfile")
    df_name = ""
    extra: bytes | None = dockerfile_text
    if extra is None:
        if not os.path.isfile(df_path):
            shown = os.path.relpath(df_path) if dockerfile else df_path
            raise FileNotFoundError(
                f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {shown}: no such file or directory"
            )
        if df_path.startswith(context + os.sep):
            df_name = os.path.relpath(df_path, context)
        else:
            with open(df_path, "rb") as f:
                extra = f.read()
    if extra is not None:
        df_name = f".dockerfile.{secrets.token_hex(10)}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        keep = {df_name, ".dockerignore"}
        for dirpath, dirnames, filenames in os.walk(context):
            rel_dir = os.path.relpath(dirpath, context)
            rel_dir = "" if rel_dir == "." else rel_dir
            dirnames.sort()
            kept_dirs = []
            for d in dirnames:
                rel = f"{rel_dir}/{d}" if rel_dir else d
                has_exception = any(p.exclusion for p in patterns)
                if excluded(rel, patterns) and not has_exception:
                    continue
                kept_dirs.append(d)
                if not excluded(rel, patterns):
                    tar.add(os.path.join(dirpath, d), rel, recursive=False, filter=_owner)
            dirnames[:] = kept_dirs
            for name in sorted(filenames):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if rel not in keep and excluded(rel, patterns):
                    continue
                tar.add(os.path.join(dirpath, name), rel, recursive=False, filter=_owner)
        if extra is not None:
            info = tarfile.TarInfo(df_name)
            info.size = len(extra)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(extra))
    return buf.getvalue(), df_name


def _owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
