"""Background tasks that are not lost: asyncio keeps only weak references to tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("tether.tasks")
_running: set[asyncio.Task[Any]] = set()


def background(coro: Coroutine[Any, Any, Any], what: str = "background task") -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro)
    _running.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _running.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("%s failed: %r", what, t.exception())

    task.add_done_callback(done)
    return task
