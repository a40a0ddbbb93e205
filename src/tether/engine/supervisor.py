"""Process supervision: tether-shim per container, its exit, signals, and finding shims again.

Each running container has a tether-shim parent (runtime/shim.c) that outlives tetherd and
records the exit status in a file.  This module starts shims, watches them through pidfds,
signals containers without ever hitting a recycled pid, and after a restart finds the shims
still running (live restore).  What a container's exit *means* (state, teardown, auto-remove)
is the lifecycle's business: the supervisor only calls back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from tether.kernel.fds import lift
from tether.model import Container, ContainerState
from tether.runtime import shim
from tether.tasks import background
from tether.timefmt import now_iso

log = logging.getLogger("tether.supervisor")


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: tells our process from a later one with the same pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    return int(data[data.rindex(b")") + 2 :].split()[19])


def running_state(pid: int, shim_pid: int) -> ContainerState:
    """A container whose process `pid` (child of `shim_pid`) runs, as of now."""
    return ContainerState(
        status="running",
        pid=pid,
        pid_start=proc_start_time(pid),
        shim_pid=shim_pid,
        started_at=now_iso(),
    )


class Run:
    """What the daemon holds for one running container, in memory only."""

    def __init__(self) -> None:
        self.pidfd: int | None = None  # the container's pid 1, for signals
        self.watch_fd: int | None = None  # the process whose exit we wait for
        self.finished = asyncio.Event()


class Supervisor:
    def __init__(
        self, containers_dir: str, on_exit: Callable[[str], Coroutine[Any, Any, None]]
    ) -> None:
        self.dir = containers_dir
        self.runs: dict[str, Run] = {}
        self.shim_path = ""
        # Called (as a background task) with the container id when its shim or process ends.
        self.on_exit = on_exit

    def ensure_shim(self) -> str:
        if not self.shim_path:
            self.shim_path = shim.ensure_built()
        return self.shim_path

    async def spawn(self, spec: shim.RunSpec) -> tuple[int, int]:
        """(shim pid, container pid) once the container's command is executing."""
        return await shim.start(self.ensure_shim(), spec)

    def run_of(self, c: Container) -> Run | None:
        return self.runs.get(c.id)

    def watch(self, c: Container, pid: int | None = None) -> None:
        """Be told when the shim (or, without one, the container process) ends."""
        run = self.runs.setdefault(c.id, Run())
        if run.pidfd is None and c.state.pid:
            try:
                run.pidfd = lift(os.pidfd_open(c.state.pid))
            except ProcessLookupError:
                run.pidfd = None
        target = pid or c.state.shim_pid
        loop = asyncio.get_running_loop()
        try:
            fd = lift(os.pidfd_open(target))
        except ProcessLookupError:
            loop.call_soon(lambda: background(self.on_exit(c.id), "container exit"))
            return
        run.watch_fd = fd
        loop.add_reader(fd, self._readable, c, fd)

    def _readable(self, c: Container, fd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        os.close(fd)
        if c.state.shim_pid:
            try:  # our child (not after a restart): reap it
                os.waitpid(c.state.shim_pid, os.WNOHANG)
            except ChildProcessError:
                pass
        background(self.on_exit(c.id), "container exit")

    def forget(self, c: Container) -> Run:
        """Stop holding the container's pidfds (it ended); returns its Run for waiters."""
        run = self.runs.pop(c.id, None) or Run()
        if run.pidfd is not None:
            os.close(run.pidfd)
            run.pidfd = None
        return run

    def signal(self, c: Container, sig: int) -> None:
        run = self.runs.get(c.id)
        try:
            if run is not None and run.pidfd is not None:
                signal.pidfd_send_signal(run.pidfd, sig)
            elif c.state.pid and proc_start_time(c.state.pid) == c.state.pid_start:
                os.kill(c.state.pid, sig)
        except ProcessLookupError:
            pass

    def still_running(self, c: Container) -> bool:
        """The container's own process lives on (whatever happened to its shim)."""
        pid = c.state.pid
        return bool(pid and c.state.pid_start and proc_start_time(pid) == c.state.pid_start)

    # -- after a restart -----------------------------------------------------------------

    def find_shims(self) -> dict[str, int]:
        """Live tether-shim run processes of this daemon's root, by container id."""
        marker = (self.dir.rstrip("/") + "/").encode()
        out: dict[str, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if len(argv) < 2 or b"tether-shim" not in argv[0] or argv[1] != b"run":
                continue
            for arg in argv:
                if arg.startswith(marker):
                    cid = arg[len(marker) :].split(b"/", 1)[0].decode()
                    out[cid] = int(entry)
                    break
        return out


def first_child(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return 0
    return int(kids[0]) if kids else 0


def kill_shim_tree(shim_pid: int) -> None:
    """Kill a shim's container (its pid 1 takes the whole pid namespace along) and the shim."""
    if not shim_pid:
        return
    child = first_child(shim_pid)
    for pid in (child, shim_pid):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
