"""A daemon that goes away in the middle of a request: the CLI says so in one line and exits 1.

The "daemon" is a unix socket served by a thread of this test that accepts a connection and
then breaks it in one of the ways a crashing or restarting tetherd can: closing before
reading (a reset), reading the request and closing (EOF), or closing half-way through its
answer.  Never a Python traceback.
"""

from __future__ import annotations

import _socket
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

Behaviour = Callable[[object], None]


def _reset(conn: object) -> None:
    conn.close()  # type: ignore[attr-defined]


def _read_request(conn: object) -> None:
    conn.settimeout(5)  # type: ignore[attr-defined]
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)  # type: ignore[attr-defined]
        if not data:
            break
        buf += data


def _read_then_close(conn: object) -> None:
    _read_request(conn)
    conn.close()  # type: ignore[attr-defined]


def _half_answer(conn: object) -> None:
    _read_request(conn)
    conn.sendall(  # type: ignore[attr-defined]
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{"
    )
    conn.close()  # type: ignore[attr-defined]


def _garbage(conn: object) -> None:
    conn.sendall(b"this is not http\r\n\r\n")  # type: ignore[attr-defined]
    conn.close()  # type: ignore[attr-defined]


class FakeDaemon:
    def __init__(self, behaviour: Behaviour) -> None:
        self.dir = tempfile.mkdtemp(prefix="tether-fake-")
        self.path = os.path.join(self.dir, "tether.sock")
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                fd, _ = self.sock._accept()  # type: ignore[attr-defined]
            except (TimeoutError, OSError):
                continue
            conn = _socket.socket(fileno=fd)
            try:
                self.behaviour(conn)
            except OSError:
                conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture(params=[_reset, _read_then_close, _half_answer, _garbage])
def daemon(request: pytest.FixtureRequest) -> Iterator[FakeDaemon]:
    d = FakeDaemon(request.param)
    yield d
    d.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["ps", "-a"],
        ["network", "ls"],
        ["run", "-d", "busybox", "true"],
        ["network", "create", "n1"],
    ],
)
def test_a_daemon_gone_mid_request_is_one_line_and_exit_1(
    daemon: FakeDaemon, argv: list[str]
) -> None:
    env = dict(os.environ, TETHER_HOST=f"unix://{daemon.path}")
    r = subprocess.run(
        [sys.executable, "-m", "tether.cli.main", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    prefix = f"Cannot connect to the tether daemon at unix://{daemon.path}: "
    assert lines[0].startswith(prefix), lines[0]
    reason = lines[0][len(prefix) :]
    assert reason in ("connection reset", "EOF", "unexpected EOF", "malformed HTTP response")
    if daemon.behaviour is _read_then_close:
        assert reason == "EOF"
    if daemon.behaviour is _half_answer:
        assert reason == "unexpected EOF"
