"""tetherd's side of tether-crypt (crypt/datapath.py): find it, start it, talk to it, watch it.

As with the port relay (firewall/relayctl.py): the process is found through its control
socket, EXEC_ROOT/crypt.sock, and trusted only if /proc says it is a tether-crypt of this
exec-root; one left by an earlier tetherd is adopted (traffic never stopped); one that dies
while tetherd runs is noticed through a pidfd and reported to `on_lost`, which starts it
again and hands it everything (it starts with nothing: a new session, hence new keys).

Requests are synchronous (a local round trip, tens of microseconds) and framed: a 4-byte
big-endian length, then JSON.
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

log = logging.getLogger("tether.crypt")

MODULE = "tether.crypt.datapath"
# What identifies the process in /proc/<pid>/cmdline (and to the test suite's leak check).
MARKER = MODULE
SOCKET_NAME = "crypt.sock"
TIMEOUT = 10.0


class CryptError(Exception):
    pass


def crypt_pids(exec_root: str) -> list[int]:
    """Live tether-crypt processes of this exec-root."""
    return helper_pids(MARKER, exec_root)


class CryptClient:
    def __init__(self, exec_root: str) -> None:
        self.exec_root = exec_root
        self.path = os.path.join(exec_root, SOCKET_NAME)
        self.sock: socket.socket | None = None
        self.pid = 0
        self.session = ""
        self._pidfd: int | None = None
        self.stopping = False
        # Called (in the event loop) when the process died while tetherd runs.
        self.on_lost: Callable[[], None] | None = None

    @property
    def running(self) -> bool:
        return self.sock is not None

    # -- finding and starting --------------------------------------------------------------

    def adopt(self) -> bool:
        """Connect to a tether-crypt left by an earlier tetherd; False when there is none."""
        if self.sock is not None:
            return True
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(TIMEOUT)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            return False
        try:
            reply = _exchange(s, {"op": "ping"})
            pid = int(reply.get("pid") or 0)
        except (OSError, ValueError, CryptError):
            pid = 0
            reply = {}
        if pid not in crypt_pids(self.exec_root):
            log.warning("%s is not served by a tether-crypt of this daemon; ignoring it", self.path)
            s.close()
            return False
        self._attach(s, pid, str(reply.get("session") or ""))
        log.info("tether-crypt adopted pid=%d session=%s", pid, self.session)
        return True

    def ensure(self) -> bool:
        """A data path to talk to: the one we have, the one running, or a new one.  True
        when it had to be started (it knows nothing yet)."""
        if self.sock is not None or self.adopt():
            return False
        self._spawn()
        return True

    def _spawn(self) -> None:
        for pid in crypt_pids(self.exec_root):
            log.warning("ending a tether-crypt without a control socket pid=%d", pid)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
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
                err = 2 if _is_file(2) else null
                # -I: no PYTHON* variables, no user site; the venv's packages (cryptography,
                # tether itself) are still found.
                argv = [
                    sys.executable,
                    "-I",
                    "-m",
                    MODULE,
                    "--exec-root",
                    self.exec_root,
                    "--control-fd",
                    "3",
                ]
                pid = os.posix_spawn(
                    sys.executable,
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
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.settimeout(TIMEOUT)
            s.connect(self.path)  # queued in the backlog until the process accepts
        finally:
            listener.close()
        try:
            reply = _exchange(s, {"op": "ping"})
        except (OSError, CryptError) as exc:
            s.close()
            raise CryptError(f"tether-crypt did not start: {exc}") from None
        self._attach(s, pid, str(reply.get("session") or ""))
        log.info("tether-crypt started pid=%d session=%s", pid, self.session)

    def _attach(self, s: socket.socket, pid: int, session: str) -> None:
        self.sock, self.pid, self.session = s, pid, session
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
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not self.stopping:
            log.warning("tether-crypt pid=%d ended; starting it again", pid)
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

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.sock is None:
            raise CryptError("tether-crypt is not running")
        try:
            return _exchange(self.sock, msg)
        except OSError as exc:
            self._lost()
            raise CryptError(f"tether-crypt: {exc}") from None
        except CryptError:
            raise

    def quit(self) -> None:
        """End the process (no encrypted network is left on this node)."""
        if self.sock is None:
            return
        pid = self.pid
        self.stopping = True
        try:
            self.request({"op": "quit"})
        except CryptError:
            pass
        finally:
            self._lost()
            self.stopping = False
        for _ in range(400):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.005)
        else:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        log.info("tether-crypt stopped pid=%d (no encrypted network left)", pid)

    def detach(self) -> None:
        """tetherd is stopping: the data path runs on (traffic keeps flowing), let go of it."""
        self.stopping = True
        self._lost()


def _exchange(s: socket.socket, msg: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(msg, separators=(",", ":")).encode()
    s.sendall(len(data).to_bytes(4, "big") + data)
    head = _recv_exact(s, 4)
    body = _recv_exact(s, int.from_bytes(head, "big"))
    reply: dict[str, Any] = json.loads(body)
    if not reply.get("ok"):
        raise CryptError(f"tether-crypt: {reply.get('error')}")
    return reply


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("connection closed")
        out += chunk
    return bytes(out)


def _is_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False
