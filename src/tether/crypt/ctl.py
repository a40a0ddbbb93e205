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

import json
import socket
import sys
from typing import Any

from tether.processes import HelperClient, helper_pids

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


class CryptClient(HelperClient):
    name = "tether-crypt"
    marker = MARKER
    socket_name = SOCKET_NAME
    sock_type = socket.SOCK_STREAM
    error = CryptError
    timeout = TIMEOUT

    def __init__(self, exec_root: str) -> None:
        super().__init__(exec_root)
        self.session = ""

    def argv(self) -> list[str]:
        # -I: no PYTHON* variables, no user site; the venv's packages (cryptography,
        # tether itself) are still found.
        return [
            sys.executable,
            "-I",
            "-m",
            MODULE,
            "--exec-root",
            self.exec_root,
            "--control-fd",
            "3",
        ]

    def ping(self, s: socket.socket) -> dict[str, Any]:
        return _exchange(s, {"op": "ping"})

    def _started(self, s: socket.socket, reply: dict[str, Any]) -> None:
        self.session = str(reply.get("session") or "")

    def detail(self) -> str:
        return f" session={self.session}"

    def ensure(self) -> bool:
        """A data path to talk to: the one we have, the one running, or a new one.  True
        when it had to be started (it knows nothing yet)."""
        if self.sock is not None or self.adopt():
            return False
        self.spawn(ping=True)
        return True

    # -- requests --------------------------------------------------------------------------

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.sock is None:
            raise CryptError("tether-crypt is not running")
        try:
            return _exchange(self.sock, msg)
        except OSError as exc:
            self._lost()
            raise CryptError(f"tether-crypt: {exc}") from None

    def quit(self) -> None:
        """End the process (no encrypted network is left on this node)."""
        self.stop("no encrypted network left")


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
