"""The API client over tetherd's Unix socket, used by the CLI and the tests.

Plain HTTP/1.1 on the low-level _socket module: importing `socket`, `http.client` or
`urllib` costs more start-up time than a whole `tether network ls` may take.
"""

from __future__ import annotations

import _socket
import sys
import time

from tether import wire

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

DEFAULT_SOCKET = "/run/tether/tether.sock"
DEFAULT_ROOT = "/var/lib/tether"
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DaemonUnavailable(Exception):
    pass


class ConnectionLost(ConnectionError):
    """The daemon went away in the middle of a request: reset, or closed before answering.

    One line for the user, as docker's client gives one ("...: EOF"); never retried, since
    the request may have done its work before the connection broke.
    """

    def __init__(self, socket_path: str, reason: str) -> None:
        self.message = f"Cannot connect to the tether daemon at unix://{socket_path}: {reason}"
        super().__init__(self.message)


def _reason(exc: OSError) -> str:
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timeout waiting for the daemon's answer"
    return exc.strerror.lower() if exc.strerror else str(exc)


def quote(text: str) -> str:
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode())


def encode_query(query: dict[str, Any] | None) -> str:
    if not query:
        return ""
    parts: list[str] = []
    for k, v in query.items():
        if v is None:
            continue
        if isinstance(v, list):  # repeated parameter: changes=a&changes=b
            parts.extend(f"{quote(k)}={quote(str(x))}" for x in v)
            continue
        if isinstance(v, bool):
            v = "1" if v else "0"
        elif isinstance(v, dict):
            v = wire.dumps(v)
        parts.append(f"{quote(k)}={quote(str(v))}")
    return "?" + "&".join(parts) if parts else ""


def socket_from_host(host: str | None) -> str:
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host[len("unix://") :]
    if host.startswith("/"):
        return host
    raise ValueError(f"unsupported host {host!r}: only unix:// sockets are served")


class Response:
    def __init__(
        self, sock: Any, status: int, headers: dict[str, str], buf: bytes, socket_path: str = ""
    ) -> None:
        self.sock = sock
        self.status = status
        self.headers = headers
        self._buf = buf
        self.socket_path = socket_path

    def _recv(self) -> bytes:
        if self._buf:
            data, self._buf = self._buf, b""
            return data
        try:
            return bytes(self.sock.recv(65536))
        except OSError as exc:
            raise ConnectionLost(self.socket_path, _reason(exc)) from None

    def _read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = self._recv()
            if not data:
                raise ConnectionLost(self.socket_path, "unexpected EOF")
            out += data
        extra = bytes(out[n:])
        if extra:
            self._buf = extra + self._buf
        return bytes(out[:n])

    def _read_line(self) -> bytes:
        out = bytearray()
        while b"\r\n" not in out:
            data = self._recv()
            if not data:
                raise ConnectionLost(self.socket_path, "unexpected EOF")
            out += data
        line, _, rest = bytes(out).partition(b"\r\n")
        if rest:
            self._buf = rest + self._buf
        return line

    def iter_body(self) -> Iterator[bytes]:
        if "content-length" in self.headers:
            n = _number(self.headers["content-length"], 10, self.socket_path)
            if n:
                yield self._read_exact(n)
        elif self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = _number(self._read_line().split(b";")[0] or b"0", 16, self.socket_path)
                if size == 0:
                    self._read_line()
                    return
                yield self._read_exact(size)
                self._read_exact(2)
        else:
            while True:
                data = self._recv()
                if not data:
                    return
                yield data

    def read(self) -> bytes:
        return b"".join(self.iter_body())

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Docker's multiplexed stream: (1 stdout | 2 stderr, data) per 8-byte-headed frame."""
        # Read in place and cut once per chunk: tetherd sends a log's whole history as one
        # chunk, and cutting each frame off the rest made a long log quadratic.
        buf = bytearray()
        for chunk in self.iter_body():
            buf += chunk
            off, end = 0, len(buf)
            while end - off >= 8:
                size = int.from_bytes(buf[off + 4 : off + 8], "big")
                if end - off < 8 + size:
                    break
                yield buf[off], bytes(buf[off + 8 : off + 8 + size])
                off += 8 + size
            del buf[:off]

    def lines(self) -> Iterator[str]:
        """The multiplexed stream as text lines (both streams), the last one even unfinished."""
        pending = b""
        for _stream, data in self.frames():
            pending += data
            *done, pending = pending.split(b"\n")
            for line in done:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ChunkWriter:
    """A request body written as HTTP chunks, for what is too big to hold (docker cp's tar)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def write(self, data: bytes) -> int:
        if data:
            self.sock.sendall(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.sock.sendall(b"0\r\n\r\n")


class Client:
    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float | None = None) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _connect(self) -> Any:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        try:
            s.connect(self.socket_path)
        except OSError as exc:
            s.close()
            raise DaemonUnavailable(
                f"Cannot connect to the tether daemon at unix://{self.socket_path}. "
                f"Is the tether daemon running?"
            ) from exc
        return s

    def open(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream: Callable[[ChunkWriter], None] | None = None,
    ) -> Response:
        """`stream`, if given, writes the request body as it goes (chunked encoding)."""
        s = self._connect()
        payload = b""
        hdrs = {"Host": "tether", "User-Agent": "tether-cli", "Connection": "close"}
        if raw is not None:
            payload = raw
            hdrs["Content-Type"] = "application/octet-stream"
        elif body is not None:
            payload = wire.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if stream is not None:
            hdrs["Transfer-Encoding"] = "chunked"
        elif payload or method in ("POST", "PUT"):
            hdrs["Content-Length"] = str(len(payload))
        if headers:
            hdrs.update(headers)
        # A path may name its own API version (volume prune: 1.42+ prunes anonymous ones only).
        version = "" if path.startswith("/v1.") else "/v1.41"
        head = f"{method} {version}{path}{encode_query(query)} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        buf = b""
        try:
            s.sendall(head.encode() + payload)
            if stream is not None:
                writer = ChunkWriter(s)
                try:
                    stream(writer)
                    writer.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the daemon answered before the end of the body: read that answer
            while b"\r\n\r\n" not in buf:
                data = s.recv(65536)
                if not data:
                    raise ConnectionLost(self.socket_path, "EOF")
                buf += data
        except OSError as exc:
            if isinstance(exc, ConnectionLost):
                s.close()
                raise
            # The daemon may have answered (a 413 or 400) and closed before reading the
            # whole request: that answer is the one to show.
            reset = isinstance(exc, (BrokenPipeError, ConnectionResetError))
            buf = _drain(s) if reset and not buf else b""
            if b"\r\n\r\n" not in buf:
                s.close()
                raise ConnectionLost(self.socket_path, _reason(exc)) from None
        head_bytes, _, rest = buf.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            s.close()
            raise ConnectionLost(self.socket_path, "malformed HTTP response")
        status = int(parts[1])
        rheaders: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            rheaders[k.strip().lower()] = v.strip()
        return Response(s, status, rheaders, rest, self.socket_path)

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        raw: bytes | None = None,
    ) -> Any:
        resp = self.open(method, path, query, body, raw)
        try:
            data = resp.read()
        finally:
            resp.close()
        if resp.status >= 400:
            raise ApiError(resp.status, _error_message(data, resp.status))
        if not data:
            return None
        if resp.headers.get("content-type", "").startswith("application/json"):
            return wire.loads(data)
        return data.decode()

    def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self.call("GET", path, query)

    def post(self, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, query, body)

    def delete(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self.call("DELETE", path, query)

    def ping(self) -> bool:
        try:
            return bool(self.call("GET", "/_ping") == "OK")
        except (DaemonUnavailable, ConnectionError, ApiError):  # ConnectionLost too
            return False


def _number(text: str | bytes, base: int, socket_path: str) -> int:
    try:
        return int(text, base)
    except ValueError:
        raise ConnectionLost(socket_path, "malformed HTTP response") from None


def _drain(sock: Any) -> bytes:
    """What the daemon sent before it closed (its answer to a request it refused)."""
    out = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return out
            out += data
    except OSError:
        return out


def _error_message(data: bytes, status: int) -> str:
    try:
        return str(wire.loads(data)["message"])
    except (ValueError, KeyError, TypeError):
        return data.decode(errors="replace").strip() or f"HTTP {status}"


def start_daemon(
    socket_path: str = DEFAULT_SOCKET, root: str = DEFAULT_ROOT, wait: float = 20.0
) -> int:
    """Start tetherd in the background (same interpreter) and wait until it answers."""
    import os  # here only: `os` is a tenth of a `tether ps` (tether/cli/fast.py)

    exec_root = os.path.dirname(socket_path)
    os.makedirs(root, mode=0o711, exist_ok=True)
    log_path = os.path.join(root, "tetherd.log")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    argv = [sys.executable, "-m", "tether.daemon.main", "--root", root, "--exec-root", exec_root]
    pid = os.posix_spawn(
        sys.executable,
        argv,
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ],
        setsid=True,
    )
    os.close(log_fd)
    os.close(null)
    client = Client(socket_path)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if client.ping():
            return pid
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            raise DaemonUnavailable(f"tetherd exited during start-up; see {log_path}")
        time.sleep(0.02)
    raise DaemonUnavailable(f"tetherd did not answer within {wait:.0f}s; see {log_path}")
