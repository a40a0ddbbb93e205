"""docker's JSON message stream, daemon side (streamformatter): what pull, push, load and
build send to the client, one JSON object per line.

    {"status":"Pulling from library/busybox","id":"latest"}
    {"status":"Downloading","progressDetail":{"current":1024,"total":4096},"progress":"[==>  ] ...","id":"a1b2c3d4e5f6"}
    {"stream":"Step 1/3 : FROM busybox\\n"}
    {"aux":{"ID":"sha256:..."}}
    {"errorDetail":{"message":"..."},"error":"..."}

The CLI (tether.cli.jsonmessage) draws them as docker's does: a line per id, progress bars
on a terminal, plain status lines otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any


def human_size(n: float, precision: int = 4) -> str:
    """go-units HumanSizeWithPrecision: decimal units, `precision` significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.{precision}g}{units[i]}"


def bar(current: int, total: int, width: int = 200) -> str:
    """jsonmessage's RenderTUIProgress (the legacy "progress" text field)."""
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
    return box + nums


class Progress:
    """Writes messages through `write` (bytes of one line); sync callers use Collect."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        self._write = write
        self._last: dict[str, float] = {}

    async def send(self, msg: dict[str, Any]) -> None:
        await self._write(json.dumps(msg, separators=(",", ":")).encode() + b"\r\n")

    async def status(self, ident: str, text: str) -> None:
        msg: dict[str, Any] = {"status": text}
        if ident:
            msg["id"] = ident
        await self.send(msg)

    async def update(self, ident: str, action: str) -> None:
        """progress.Update: an id's new state, with an empty progressDetail."""
        await self.send({"status": action, "progressDetail": {}, "id": ident})

    async def progress(
        self, ident: str, action: str, current: int, total: int, force: bool = False
    ) -> None:
        """A progress bar step; at most ten a second per id unless `force`."""
        now = time.monotonic()
        if not force and now - self._last.get(ident, 0.0) < 0.1:
            return
        self._last[ident] = now
        await self.send(
            {
                "status": action,
                "progressDetail": {"current": current, "total": total},
                "progress": bar(current, total),
                "id": ident,
            }
        )

    async def stream(self, text: str) -> None:
        await self.send({"stream": text})

    async def aux(self, value: Any, ident: str = "") -> None:
        msg: dict[str, Any] = {"aux": value}
        if ident:
            msg["id"] = ident
        await self.send(msg)

    async def error(self, text: str) -> None:
        await self.send({"errorDetail": {"message": text}, "error": text})


class Collect(Progress):
    """Messages kept in a list (a pull nobody watches, tests)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

        async def keep(line: bytes) -> None:
            self.messages.append(json.loads(line))

        super().__init__(keep)
