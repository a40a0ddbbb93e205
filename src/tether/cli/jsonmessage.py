"""docker's JSON message streams, drawn as the docker CLI draws them (jsonmessage.go).

On a terminal each id (a layer) keeps one line, rewritten in place with its progress bar
(cursor up, erase, rewrite, cursor down); elsewhere progress steps are left out and each
status is a plain line (`a1b2c3d4e5f6: Pull complete`).  An error message ends the stream:
its text is returned for the command to print.
"""

from __future__ import annotations

import sys
import time

from tether import wire
from tether.cli.output import human_size

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, TextIO

    from tether.client import Response


def render_progress(p: dict[str, Any], width: int) -> str:
    current, total = int(p.get("current") or 0), int(p.get("total") or 0)
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    pct = min(int(current / total * 100) // 2, 50)
    box = ""
    if width > 110:
        box = "[" + "=" * pct + ">" + " " * max(50 - pct, 0) + "] "
    nums = f"{human_size(current):>8}/{human_size(total)}"
    if current > total:
        nums = f"{human_size(current):>8}"
    left = ""
    start = int(p.get("start") or 0)
    if width > 50 and current > 0 and start > 0 and pct < 50:
        per = (time.time() - start) / current
        left = f" {round((total - current) * per)}s"
    return box + nums + left


def messages(resp: Response) -> Iterator[dict[str, Any]]:
    pending = b""
    for chunk in resp.iter_body():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.strip()
            if line:
                yield wire.loads(line)
    if pending.strip():
        yield wire.loads(pending)


def display(
    resp: Response,
    out: TextIO | None = None,
    terminal: bool | None = None,
    aux: Callable[[Any], None] | None = None,
) -> str | None:
    """Draw the stream; the error message that ended it, if one did."""
    out = out if out is not None else sys.stdout
    if terminal is None:
        try:
            terminal = out.isatty()
        except (AttributeError, ValueError):
            terminal = False
    width = 200
    if terminal:
        import os

        try:
            width = os.get_terminal_size(out.fileno()).columns
        except OSError:
            width = 200
    ids: dict[str, int] = {}
    for jm in messages(resp):
        if "aux" in jm and jm.get("aux") is not None:
            if aux is not None:
                aux(jm["aux"])
            continue
        err = jm.get("errorDetail") or ({"message": jm["error"]} if jm.get("error") else None)
        if err:
            return str(err.get("message") or jm.get("error") or "unknown error")
        ident = str(jm.get("id") or "")
        progress = jm.get("progressDetail")
        diff = 0
        if ident and progress is not None:
            line = ids.get(ident)
            if line is None:
                line = len(ids)
                ids[ident] = line
                if terminal:
                    out.write("\n")
            diff = len(ids) - line
            if terminal and diff:
                out.write(f"\x1b[{diff}A")
        else:
            ids = {}
        _show(jm, out, terminal, width)
        if ident and terminal and diff:
            out.write(f"\x1b[{diff}B")
        out.flush()
    return None


def _show(jm: dict[str, Any], out: TextIO, terminal: bool, width: int) -> None:
    progress = jm.get("progressDetail")
    stream = jm.get("stream") or ""
    endl = ""
    if terminal and not stream and progress is not None:
        out.write("\x1b[2K\r")
        endl = "\r"
    elif progress is not None and (progress.get("current") or progress.get("total")):
        return  # no progress bars off a terminal
    if jm.get("id"):
        out.write(f"{jm['id']}: ")
    if progress is not None and terminal:
        out.write(f"{jm.get('status', '')} {render_progress(progress, width)}{endl}")
    elif stream:
        out.write(f"{stream}{endl}")
    else:
        out.write(f"{jm.get('status', '')}{endl}\n")
