"""A small HTTP/1.1 server for the API socket, on asyncio streams.

Why not a framework: the API is a few dozen JSON routes plus two streaming shapes (chunked
logs, and Docker's hijacked connection for exec), the daemon must start fast, and every
dependency is one more thing to install on a fresh machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tether import API_VERSION, __version__
from tether.errors import InvalidParameter, TetherError

log = logging.getLogger("tether.api")

VERSION_PREFIX = re.compile(r"^/v\d+(\.\d+)?(?=/)")
MAX_HEADER = 64 * 1024
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    101: "UPGRADED",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    params: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        vals = self.query.get(name)
        return vals[-1] if vals else default

    def flag(self, name: str) -> bool:
        v = self.arg(name)
        return v is not None and v.lower() in ("1", "true", "yes")

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise InvalidParameter(f"invalid JSON: {exc}") from None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode() + b"\n")


# A handler answers with a Response, or None when it wrote to the connection itself
# (streams and hijacked connections).
Handler = Callable[[Request], Awaitable[Response | None]]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        # {name} matches one path segment; {name*} may span several (image names have slashes).
        regex = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", pattern)
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex) + "$"
        self.routes.append((method, re.compile(regex), handler))

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        path_known = False
        for m, regex, handler in self.routes:
            found = regex.match(path)
            if found:
                path_known = True
                if m == method or (method == "HEAD" and m == "GET"):
                    return handler, {k: unquote(v) for k, v in found.groupdict().items()}, True
        return None, {}, path_known


def common_headers() -> list[tuple[str, str]]:
    return [
        ("Api-Version", API_VERSION),
        ("Docker-Experimental", "false"),
        ("Ostype", "linux"),
        ("Server", f"tether/{__version__}"),
    ]


def head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in common_headers() + headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def start_stream(req: Request, content_type: str = "application/octet-stream") -> None:
    """Begin a chunked response; write chunks with write_chunk, end with end_stream."""
    req.writer.write(
        head_bytes(200, [("Content-Type", content_type), ("Transfer-Encoding", "chunked")])
    )
    await req.writer.drain()


async def write_chunk(req: Request, data: bytes) -> None:
    if data:
        req.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await req.writer.drain()


async def end_stream(req: Request) -> None:
    req.writer.write(b"0\r\n\r\n")
    await req.writer.drain()


async def hijack(req: Request, content_type: str) -> None:
    """Docker's attach/exec protocol: 101 (or 200) then the raw socket is the stream."""
    upgrade = req.headers.get("upgrade", "").lower() == "tcp"
    if upgrade:
        req.writer.write(
            head_bytes(
                101, [("Content-Type", content_type), ("Connection", "Upgrade"), ("Upgrade", "tcp")]
            )
        )
    else:
        req.writer.write(head_bytes(200, [("Content-Type", content_type)]))
    await req.writer.drain()


class HttpServer:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def start_unix(self, path: str) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=path, limit=MAX_HEADER)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            while True:
                keep = await self._one(reader, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            if task is not None:
                self.connections.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            writer.write(head_bytes(400, [("Content-Length", "0")]))
            return False
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        url = urlsplit(target)
        path = VERSION_PREFIX.sub("", url.path) or "/"
        req = Request(
            method, path, parse_qs(url.query, keep_blank_values=True), headers, body, reader, writer
        )
        started = time.perf_counter()
        handler, params, known = self.router.match(method, path)
        resp: Response | None
        if handler is None:
            msg = f"page not found: {method} {path}" if not known else "method not allowed"
            resp = json_response({"message": msg}, 404 if not known else 405)
        else:
            req.params = params
            try:
                resp = await handler(req)
            except TetherError as exc:
                resp = json_response({"message": exc.message}, exc.status)
            except Exception as exc:
                log.exception("handler failed: %s %s", method, path)
                resp = json_response({"message": f"internal error: {exc}"}, 500)
        if resp is None:  # the handler streamed or hijacked
            return False
        extra = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body)))]
        writer.write(head_bytes(resp.status, extra))
        if method != "HEAD":
            writer.write(resp.body)
        await writer.drain()
        log.debug(
            "api %s %s -> %d in %.1f ms",
            method,
            path,
            resp.status,
            (time.perf_counter() - started) * 1000,
        )
        return headers.get("connection", "").lower() != "close"


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
