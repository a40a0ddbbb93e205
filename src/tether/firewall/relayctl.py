"""tetherd's side of the port relay (firewall/relay.py): find it, start it, talk to it, watch it.

The relay is found through its control socket, EXEC_ROOT/relay.sock: the process at the other
end (SO_PEERCRED) must be a relay of this exec-root (its /proc cmdline says so), or it is not
trusted.  A relay that is gone is started again (by `ensure`); one that dies while tetherd runs
is noticed through a pidfd and reported to `on_lost`, which hands it every port again.

Requests are synchronous: a round trip on a local socket costs tens of microseconds, and the
publisher that makes them runs under the daemon's lock anyway.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from tether.processes import HelperClient, helper_pids

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


class RelayClient(HelperClient):
    name = "port relay"
    marker = MARKER
    socket_name = "relay.sock"
    sock_type = socket.SOCK_SEQPACKET
    error = RelayError
    timeout = TIMEOUT

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-I",
            "-S",
            RELAY_PY,
            "--exec-root",
            self.exec_root,
            "--control-fd",
            "3",
        ]

    def ping(self, s: socket.socket) -> dict[str, Any]:
        s.send(json.dumps({"op": "ping"}).encode())
        reply: dict[str, Any] = json.loads(s.recv(4096))
        return reply

    def ensure(self) -> None:
        """A relay to talk to: the one we have, the one running, or a new one."""
        if self.sock is not None or self.adopt():
            return
        self.spawn(ping=False)

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
        self.stop("no published ports left")


def _entry(key: Key, target: Target) -> dict[str, Any]:
    return {
        "proto": key[0],
        "ip": key[1],
        "port": key[2],
        "target": list(target) if target else None,
    }
