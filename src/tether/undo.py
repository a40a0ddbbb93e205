"""One way to undo a half-done change: a stack of undo steps, run in reverse on failure.

Every multi-step change (allocate, build the sandbox, publish ports, start the process) pushes
the step that takes it back as soon as it has happened.  On success the steps are dropped
(`commit`); on any exception, including cancellation, they run newest first and the
exception goes on.  An undo step that fails is logged and the others still run: a partial
undo leaves objects the reconciler knows by name, never a half-made object it cannot see.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

log = logging.getLogger("tether.undo")

Step = Callable[[], Awaitable[None] | None]


class Undo:
    """`async with Undo() as undo: ...; undo.push(step); ...; undo.commit()`"""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Step]] = []

    def push(self, step: Step, what: str = "") -> None:
        self._steps.append((what or getattr(step, "__name__", "step"), step))

    def commit(self) -> None:
        self._steps.clear()

    async def rollback(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                result = step()
                if result is not None:
                    await result
            except Exception:
                log.exception("undo step failed: %s", what)

    async def __aenter__(self) -> Undo:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await self.rollback()
        else:
            self.commit()
