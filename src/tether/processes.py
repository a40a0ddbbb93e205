"""Finding tetherd's helper processes (the port relay, tether-crypt) by their command line.

Both outlive a tetherd restart on purpose and are adopted by the next one, which finds them
by the module they run and the exec-root they serve, whatever their control socket says.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

from tether.kernel.fds import lift

log = logging.getLogger("tether.helpers")


def helper_pids(marker: str, exec_root: str) -> list[int]:
    """Live processes whose command line holds `marker` and `--exec-root EXEC_ROOT`."""
    want = f"--exec-root\0{exec_root}\0".encode()
    mark = marker.encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if mark in cmdline and want in cmdline:
            out.append(int(entry))
    return out


class HelperClient:
    """tetherd's side of a helper process that outlives it (the port relay, tether-crypt):
    find it, start it, watch it, stop it.

    The helper is found through its control socket, EXEC_ROOT/<socket_name>, and trusted
    only if the process that answers a ping is one of this exec-root's helpers by /proc (a
    socket file alone proves nothing: SO_PEERCRED would name the tetherd that made the
    listening socket).  One left by an earlier tetherd is adopted; a new one gets the
    listening socket as fd 3, made 0600 by bind itself (a chmod afterwards would leave a
    moment in which anyone whose umask let them could connect).  One that dies while tetherd
    runs is noticed through a pidfd and reported to `on_lost`.

    Subclasses say what differs: `name` (for logs), `marker` (in its command line),
    `socket_name`, `sock_type`, `error` (the exception their requests raise), `argv()`,
    `ping(sock)` (one request/reply in their framing), `_started(sock, reply)` and
    `detail()`.
    """

    name = "helper"
    marker = ""
    socket_name = ""
    sock_type = socket.SOCK_STREAM
    error: type[Exception] = RuntimeError
    timeout = 10.0

    def __init__(self, exec_root: str) -> None:
        self.exec_root = exec_root
        self.path = os.path.join(exec_root, self.socket_name)
        self.sock: socket.socket | None = None
        self.pid = 0
        self._pidfd: int | None = None
        self.stopping = False
        # Called (in the event loop) when the helper died while tetherd runs.
        self.on_lost: Callable[[], None] | None = None

    @property
    def running(self) -> bool:
        return self.sock is not None

    def pids(self) -> list[int]:
        """Live helpers of this kind and exec-root (whatever their control socket says)."""
        return helper_pids(self.marker, self.exec_root)

    # -- what differs --------------------------------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ping(self, s: socket.socket) -> dict[str, Any]:
        """Send {"op": "ping"} on `s` and return the reply (OSError, ValueError or
        self.error when there is none)."""
        raise NotImplementedError

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One request on the control socket, its reply (self.error when it fails)."""
        raise NotImplementedError

    def _started(self, s: socket.socket, reply: dict[str, Any]) -> None:
        """`s` now talks to the helper (reply: its answer to a ping, {} if none was sent)."""

    def detail(self) -> str:
        """More about the helper for the log lines (" session=...")."""
        return ""

    # -- finding and starting --------------------------------------------------------------

    def adopt(self) -> bool:
        """Connect to a helper left by an earlier tetherd; False when there is none."""
        if self.sock is not None:
            return True
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            return False
        s = socket.socket(socket.AF_UNIX, self.sock_type | socket.SOCK_CLOEXEC)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            return False
        try:
            reply = self.ping(s)
            pid = int(reply.get("pid") or 0)
        except (OSError, ValueError, self.error):
            reply, pid = {}, 0
        if pid not in self.pids():
            log.warning(
                "%s is not served by a %s of this daemon; ignoring it", self.path, self.name
            )
            s.close()
            return False
        self._attach(s, pid)
        self._started(s, reply)
        log.info("%s adopted pid=%d%s", self.name, pid, self.detail())
        return True

    def spawn(self, ping: bool) -> None:
        """Start a new helper (ending any of this exec-root that lost its socket: useless
        to us, and holding what it holds).  `ping`: wait for its first answer."""
        for pid in self.pids():
            log.warning("ending a %s without a control socket pid=%d", self.name, pid)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, self.sock_type | socket.SOCK_CLOEXEC)
        try:
            umask = os.umask(0o077)
            try:
                listener.bind(self.path)
            finally:
                os.umask(umask)
            os.chmod(self.path, 0o600)
            listener.listen(8)
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            try:
                # Its warnings go where ours go when that is a file (a terminal or a pipe
                # could be waited on by whoever started tetherd; the helper outlives us).
                err = 2 if _is_file(2) else null
                argv = self.argv()
                pid = os.posix_spawn(
                    argv[0],
                    argv,
                    {},
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, null, 0),
                        (os.POSIX_SPAWN_DUP2, null, 1),
                        (os.POSIX_SPAWN_DUP2, err, 2),
                        (os.POSIX_SPAWN_DUP2, listener.fileno(), 3),
                    ],
                    setsid=True,
                )
            finally:
                os.close(null)
            s = socket.socket(socket.AF_UNIX, self.sock_type | socket.SOCK_CLOEXEC)
            s.settimeout(self.timeout)
            s.connect(self.path)  # queued in the backlog until the helper accepts
        finally:
            listener.close()
        reply: dict[str, Any] = {}
        if ping:
            try:
                reply = self.ping(s)
            except (OSError, ValueError, self.error) as exc:
                s.close()
                raise self.error(f"{self.name} did not start: {exc}") from None
        self._attach(s, pid)
        self._started(s, reply)
        log.info("%s started pid=%d%s", self.name, pid, self.detail())

    def _attach(self, s: socket.socket, pid: int) -> None:
        self.sock, self.pid = s, pid
        try:
            fd = lift(os.pidfd_open(pid))
        except ProcessLookupError:
            self._lost()
            return
        self._pidfd = fd
        try:
            asyncio.get_running_loop().add_reader(fd, self._on_exit)
        except RuntimeError:  # no loop (a test of the client alone): not watched
            pass

    def _on_exit(self) -> None:
        pid = self.pid
        self._lost()
        try:  # our child if we started it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not self.stopping:
            log.warning("%s pid=%d ended; starting it again", self.name, pid)
            if self.on_lost is not None:
                self.on_lost()

    def _lost(self) -> None:
        if self._pidfd is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._pidfd)
            except RuntimeError:
                pass
            os.close(self._pidfd)
            self._pidfd = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.pid = 0

    # -- stopping --------------------------------------------------------------------------

    def stop(self, why: str) -> None:
        """End the helper: asked to quit, then reaped (if our child) and its socket file
        removed, so that nothing is left in exec-root."""
        if self.sock is None:
            return
        pid = self.pid
        self.stopping = True
        try:
            self.request({"op": "quit"})
        except self.error:
            pass
        finally:
            self._lost()
            self.stopping = False
        for _ in range(400):  # it exits right away
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.005)
        else:
            log.warning("%s pid=%d did not end when asked", self.name, pid)
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        log.info("%s stopped pid=%d (%s)", self.name, pid, why)

    def detach(self) -> None:
        """tetherd is stopping: the helper runs on (live restore), let go of it."""
        self.stopping = True
        self._lost()


def _is_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False
