"""tetherd's side of the port relay (firewall/relay.py): find it, start it, talk to it, watch it.

The relay is found through its control socket, EXEC_ROOT/relay.sock: the process at the other
end (SO_PEERCRED) must be a relay of this exec-root (its /proc cmdline says so), or it is not
trusted.  A relay that is gone is started again (by `ensure`); one that dies while tetherd runs
is noticed through a pidfd and reported to `on_lost`, which hands it every port again.

Requests are synchronous: a round trip on a local socket costs tens of microseconds, and the
publisher that makes them runs under the daemon's lock anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

from tether.kernel.fds import lift
from tether.processes import helper_pids

log = logging.getLogger("tether.relay")

RELAY_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.py")
# What identifies a relay in /proc/<pid>/cmdline (and to the test suite's leak check).
MARKER = "tether/firewall/relay.py"
TIMEOUT = 10.0
BATCH = 200  # ports per message (and sockets: below SCM_MAX_FD)

Key = tuple[str, str, int]
Target = tuple[str, int] | None


class RelayError(Exception):
    pass


def relay_pids(exec_root: str) -> list[int]:
    """Live relay processes of this exec-root (whatever their control socket says)."""
    return helper_pids(MARKER, exec_root)


class RelayClient:
    def __init__(self, exec_root: str) -> None:
        self.exec_root = exec_root
        self.path = os.path.join(exec_root, "relay.sock")
        self.sock: socket.socket | None = None
        self.pid = 0
        self._pidfd: int | None = None
        self.stopping = False
        # Called (in the event loop) when the relay died while tetherd runs.
        self.on_lost: Callable[[], None] | None = None

    # -- finding and starting --------------------------------------------------------------

    def adopt(self) -> bool:
        """Connect to a relay left by an earlier tetherd; False when there is none."""
        if self.sock is not None:
            return True
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.settimeout(TIMEOUT)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            return False
        # The relay says who it is (SO_PEERCRED would name the tetherd that made the
        # listening socket), and /proc must agree: a relay of this exec-root, ours to trust
        # since only root can make a socket in it.
        try:
            s.send(json.dumps({"op": "ping"}).encode())
            pid = int(json.loads(s.recv(4096)).get("pid") or 0)
        except (OSError, ValueError):
            pid = 0
        if pid not in relay_pids(self.exec_root):
            log.warning("%s is not served by a relay of this daemon; ignoring it", self.path)
            s.close()
            return False
        self._attach(s, pid)
        log.info("port relay adopted pid=%d", pid)
        return True

    def ensure(self) -> None:
        """A relay to talk to: the one we have, the one running, or a new one."""
        if self.sock is not None or self.adopt():
            return
        self._spawn()

    def _spawn(self) -> None:
        # A relay that lost its socket file is useless to us and holds ports: end it.
        for pid in relay_pids(self.exec_root):
            log.warning("ending a port relay without a control socket pid=%d", pid)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            # Made 0600 by bind itself: a chmod afterwards leaves a moment in which anyone
            # whose umask let them could connect (the relay checks who connects, too).
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
                # could be waited on by whoever started tetherd; the relay outlives us).
                err = 2 if _is_file(2) else null
                pid = os.posix_spawn(
                    sys.executable,
                    [
                        sys.executable,
                        "-I",
                        "-S",
                        RELAY_PY,
                        "--exec-root",
                        self.exec_root,
                        "--control-fd",
                        "3",
                    ],
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
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            s.settimeout(TIMEOUT)
            s.connect(self.path)  # queued in the backlog until the relay accepts
        finally:
            listener.close()
        self._attach(s, pid)
        log.info("port relay started pid=%d", pid)

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
        except RuntimeError:  # no loop (tests of the client alone): not watched
            pass

    def _on_exit(self) -> None:
        pid = self.pid
        self._lost()
        try:  # our child if we started it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not self.stopping:
            log.warning("port relay pid=%d ended; starting it again", pid)
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

    # -- requests --------------------------------------------------------------------------

    def request(self, msg: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        self.ensure()
        assert self.sock is not None
        try:
            data = json.dumps(msg).encode()
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)
            answer = self.sock.recv(1 << 20)
        except OSError as exc:
            self._lost()
            raise RelayError(f"port relay: {exc}") from None
        if not answer:
            self._lost()
            raise RelayError("port relay: connection closed")
        reply: dict[str, Any] = json.loads(answer)
        if not reply.get("ok"):
            raise RelayError(f"port relay: {reply.get('error')}")
        return reply

    def add(self, items: list[tuple[Key, Target, socket.socket]]) -> None:
        """Hand bound sockets over (the relay keeps them; close ours afterwards)."""
        for i in range(0, len(items), BATCH):
            chunk = items[i : i + BATCH]
            self.request(
                {"op": "add", "ports": [_entry(k, t) for k, t, _ in chunk]},
                [s.fileno() for _, _, s in chunk],
            )

    def retarget(self, items: list[tuple[Key, Target]]) -> None:
        for i in range(0, len(items), BATCH):
            self.request(
                {"op": "retarget", "ports": [_entry(k, t) for k, t in items[i : i + BATCH]]}
            )

    def remove(self, keys: list[Key]) -> None:
        if self.sock is None and not self.adopt():
            return  # no relay: nothing is held
        for i in range(0, len(keys), BATCH):
            self.request({"op": "remove", "ports": [_entry(k, None) for k in keys[i : i + BATCH]]})

    def held(self) -> dict[Key, Target]:
        """What the relay holds now (empty when there is no relay)."""
        if self.sock is None and not self.adopt():
            return {}
        out: dict[Key, Target] = {}
        offset: int | None = 0
        while offset is not None:
            reply = self.request({"op": "list", "offset": offset})
            for p in reply["ports"]:
                t = p.get("target")
                out[(p["proto"], p["ip"], int(p["port"]))] = (t[0], int(t[1])) if t else None
            offset = reply.get("next")
        return out

    def quit(self) -> None:
        """End the relay (it holds nothing any more)."""
        if self.sock is None:
            return
        pid = self.pid
        self.stopping = True
        try:
            self.request({"op": "quit"})
        except RelayError:
            pass
        finally:
            self._lost()
            self.stopping = False
        gone = False
        for _ in range(200):  # it exits right away; reap it if it is our child
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not os.path.exists(f"/proc/{pid}"):
                gone = True
                break
            time.sleep(0.005)
        if gone:
            try:  # its socket file, so that nothing is left in exec-root
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        log.info("port relay stopped pid=%d (no published ports left)", pid)

    def detach(self) -> None:
        """tetherd is stopping: leave the relay running (live restore), just let go of it."""
        self.stopping = True
        self._lost()


def _entry(key: Key, target: Target) -> dict[str, Any]:
    return {
        "proto": key[0],
        "ip": key[1],
        "port": key[2],
        "target": list(target) if target else None,
    }


def _is_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False
