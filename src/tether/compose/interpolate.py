"""Variable interpolation in compose files, as docker compose does it (compose-go/template).

    $VAR  ${VAR}          value, or "" with a warning when unset
    ${VAR:-default}       default when unset or empty     ${VAR-default}  when unset
    ${VAR:?message}       error when unset or empty       ${VAR?message}  when unset
    ${VAR:+replacement}   replacement when set, non-empty ${VAR+replacement} when set
    $$                    a literal $

Defaults and messages may themselves contain ${...}.  Only string values are interpolated,
never keys, exactly like compose.  Pure: the environment comes in as a mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
NAME_CHARS = NAME_START + "0123456789"


class InterpolationError(ValueError):
    pass


class _Parser:
    def __init__(self, text: str, env: Mapping[str, str], warn: Callable[[str], None]) -> None:
        self.text = text
        self.env = env
        self.warn = warn

    def run(self) -> str:
        out, end = self.until(0, stop="")
        assert end == len(self.text)
        return out

    def until(self, i: int, stop: str) -> tuple[str, int]:
        """Expand from i up to an unnested `stop` character (or the end when stop is "")."""
        text = self.text
        out: list[str] = []
        while i < len(text):
            ch = text[i]
            if stop and ch == stop:
                return "".join(out), i
            if ch != "$":
                out.append(ch)
                i += 1
                continue
            nxt = text[i + 1 : i + 2]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt == "{":
                value, i = self.braced(i + 2)
                out.append(value)
            elif nxt and nxt in NAME_START:
                j = i + 1
                while j < len(text) and text[j] in NAME_CHARS:
                    j += 1
                out.append(self.lookup(text[i + 1 : j]))
                i = j
            else:
                # A lone '$' (end of string, or before a character that starts no name) stays.
                out.append("$")
                i += 1
        if stop:
            raise InterpolationError(f'Invalid template: "{text}"')
        return "".join(out), i

    def lookup(self, name: str) -> str:
        if name in self.env:
            return self.env[name]
        self.warn(f'The "{name}" variable is not set. Defaulting to a blank string.')
        return ""

    def braced(self, i: int) -> tuple[str, int]:
        text = self.text
        j = i
        while j < len(text) and text[j] in NAME_CHARS:
            j += 1
        name = text[i:j]
        if not name or name[0] not in NAME_START or j >= len(text):
            raise InterpolationError(f'Invalid template: "{text}"')
        if text[j] == "}":
            return self.lookup(name), j + 1
        op = text[j : j + 2] if text[j] == ":" else text[j]
        if op not in (":-", ":?", ":+", "-", "?", "+"):
            raise InterpolationError(f'Invalid template: "{text}"')
        arg, end = self.until(j + len(op), stop="}")
        is_set = name in self.env
        value = self.env.get(name, "")
        usable = is_set and (value != "" or ":" not in op)
        kind = op[-1]
        if kind == "-":
            result = value if usable else arg
        elif kind == "+":
            result = arg if usable else ""
        else:
            if not usable:
                raise InterpolationError(
                    f"required variable {name} is missing a value" + (f": {arg}" if arg else "")
                )
            result = value
        return result, end + 1


def interpolate_string(
    text: str, env: Mapping[str, str], warn: Callable[[str], None] = lambda _m: None
) -> str:
    if "$" not in text:
        return text
    return _Parser(text, env, warn).run()


def interpolate(
    node: Any, env: Mapping[str, str], warn: Callable[[str], None], path: str = ""
) -> Any:
    """Every string value in a loaded YAML document, recursively; keys stay as written."""
    if isinstance(node, str):
        try:
            return interpolate_string(node, env, warn)
        except InterpolationError as exc:
            raise InterpolationError(f"error while interpolating {path}: {exc}") from None
    if isinstance(node, dict):
        return {
            k: interpolate(v, env, warn, f"{path}.{k}" if path else str(k)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [interpolate(v, env, warn, f"{path}.{i}") for i, v in enumerate(node)]
    return node


def parse_env_file(text: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A .env file: KEY=VALUE lines, `export` prefix, comments, single and double quotes.

    Unquoted and double-quoted values are interpolated against the variables defined so far
    (and `env`), single-quoted ones are literal, as compose's dotenv does.
    """
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not key or any(c.isspace() for c in key):
            raise InterpolationError(
                f"line {lineno}: unexpected character in variable name {key!r}"
            )
        if not sep:
            # `KEY` alone: take it from the environment, if there.
            if env is not None and key in env:
                out[key] = env[key]
            continue
        value = value.strip()
        scope = {**(env or {}), **out}
        if value[:1] == "'" and value.rfind("'") > 0:
            out[key] = value[1 : value.rfind("'")]
        elif value[:1] == '"' and value.rfind('"') > 0:
            inner = value[1 : value.rfind('"')]
            inner = (
                inner.replace("\\n", "\n")
                .replace("\\t", "\t")
                .replace('\\"', '"')
                .replace("\\\\", "\\")
            )
            out[key] = interpolate_string(inner, scope)
        else:
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
            out[key] = interpolate_string(value, scope)
    return out
