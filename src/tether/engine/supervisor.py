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
        self.watched = 0  # ...and its pid
        # The container's exit code as tetherd itself reaped it: its shim was killed while
        # tetherd ran, so its pid 1 was re-parented to tetherd (a child subreaper).
        self.status: int | None = None
        # tetherd sent SIGKILL to pid 1 (stop's timeout, kill, rm -f).  After a daemon
        # restart a container whose shim is gone has init as its parent and its status is
        # lost; SIGKILL cannot be caught, so its exit code is still known: 137.
        self.killed = False
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
        run.watched = target
        loop.add_reader(fd, self._readable, c, fd)

    def _readable(self, c: Container, fd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        os.close(fd)
        run = self.runs.get(c.id)
        if run is not None and run.watched:
            # Our child (the shim we started, or pid 1 adopted when its shim died): reap
            # it.  After a daemon restart neither is our child and this finds nothing.
            status = reap(run.watched)
            if run.watched == c.state.pid and status is not None:
                run.status = status
            run.watch_fd, run.watched = None, 0
        background(self.on_exit(c.id), "container exit")

    def exit_status(self, c: Container, run: Run) -> int | bool | None:
        """How a container whose shim recorded nothing ended, as far as tetherd can know.

        An exit code (reaped by tetherd itself, or 137 for a SIGKILL it sent); None when the
        status is lost; False when the container's process still runs (the shim alone died:
        the caller should wait for the process itself).
        """
        pid, start = c.state.pid, c.state.pid_start
        if run.status is None and pid and start and proc_start_time(pid) == start:
            # Re-parented to us when its shim died, and already ended: reap it now.
            run.status = reap(pid)
            if run.status is None and alive(pid):
                return False
        if run.status is not None:
            return run.status
        if run.killed:
            return 128 + signal.SIGKILL
        return None

    def runs_on(self, c: Container) -> bool:
        """Whether the container's own pid 1 is still alive (told from a later process with
        the same pid by its start time)."""
        pid, start = c.state.pid, c.state.pid_start
        return bool(pid and start and proc_start_time(pid) == start and alive(pid))

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
            else:
                return
        except ProcessLookupError:
            return
        if run is not None and sig == signal.SIGKILL:
            run.killed = True

    def reap_orphans(self, watched: set[int]) -> int:
        """Reap zombies that were re-parented to tetherd and that nothing else waits for.

        tetherd is a child subreaper (so that a container whose shim died is re-parented to
        it and its exit status is not lost).  The same makes it the parent of processes of
        `exec` whose tether-shim was killed; those live in a container's pid namespace, which
        is how they are told from tetherd's own children (shims, compilers), whose owners
        reap them.  `watched`: containers' own pids, reaped by the exit path.
        """
        depth = len(_proc_status(os.getpid()).get("NSpid", "").split())
        # The shims watched here are reaped when their pidfd fires: skip them without reading
        # their status (every running container's shim is a child: with 1,000 containers the
        # reads took ~100 ms of the event loop, under the daemon's lock, every 5 s).
        skip = watched | {run.watched for run in self.runs.values() if run.watched}
        reaped = 0
        for pid in _child_pids():
            if pid in skip:
                continue
            st = _proc_status(pid)
            if not st.get("State", "").startswith("Z") or len(st.get("NSpid", "").split()) <= depth:
                continue
            if reap(pid) is not None:
                reaped += 1
        return reaped

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


def reap(pid: int) -> int | None:
    """Reap `pid` if it is our child and has ended: its exit code as docker shows one."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done != pid:
        return None
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that is not us to reap it."""
    state = _proc_status(pid).get("State", "")
    return bool(state) and state[0] not in "ZX"


def _child_pids() -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            continue
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
