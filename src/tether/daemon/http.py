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
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from tether import API_VERSION, MIN_API_VERSION, __version__
from tether.api import version as api_version
from tether.api.decode import MAX_BODY, Model, decode
from tether.errors import TetherError

log = logging.getLogger("tether.api")
M = TypeVar("M", bound=Model)

VERSION_PREFIX = re.compile(r"^/v(\d+(?:\.\d+)?)(?=/)")
MAX_HEADER = 64 * 1024
MAX_TRAILERS = 64  # trailer lines after a chunked body
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CTL_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")  # RFC 9112: no blanks or controls
CTL_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed in a value
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    101: "UPGRADED",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request the server cannot read: answered with `status` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    # For routes that stream their body (image import): how to read it; see body_chunks.
    framing: tuple[str, int] = ("length", 0)
    # The API version the client asked for (/v1.44/...), the newest when it named none.
    version: tuple[int, int] = field(default_factory=lambda: version_tuple(API_VERSION))

    def at_least(self, version: str) -> bool:
        return self.version >= version_tuple(version)

    def arg(self, name: str, default: str | None = None) -> str | None:
        vals = self.query.get(name)
        return vals[-1] if vals else default

    def flag(self, name: str) -> bool:
        v = self.arg(name)
        return v is not None and v.lower() in ("1", "true", "yes")

    def decode(self, model: type[M], empty: M | None = None) -> M:
        """The body as a typed request object (tether.api), or Docker's 400."""
        if self.body and not _is_json(self.headers.get("content-type", "")):
            ct = self.headers["content-type"]
            raise HttpError(
                400, f"unsupported Content-Type header ({ct}): must be 'application/json'"
            )
        return decode(self.body, model, empty)

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The body of a streaming route, as it arrives (Content-Length or chunked)."""
        kind, length = self.framing
        if kind == "chunked":
            async for chunk in _chunks(self.reader, None):
                yield chunk
            return
        while length > 0:
            data = await self.reader.read(min(length, 1 << 20))
            if not data:
                raise HttpError(400, "unexpected EOF in the request body")
            length -= len(data)
            yield data


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def version_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def check_version(text: str) -> tuple[int, int]:
    """dockerd's versionMiddleware: the versions it serves, its 400 outside them."""
    v = version_tuple(text)
    if v < version_tuple(MIN_API_VERSION):
        raise HttpError(
            400,
            f"client version {text} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version",
        )
    if v > version_tuple(API_VERSION):
        raise HttpError(
            400,
            f"client version {text} is too new. Maximum supported API version is {API_VERSION}",
        )
    return v


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode() + b"\n")


# A handler answers with a Response, or None when it wrote to the connection itself
# (streams and hijacked connections).
Handler = Callable[[Request], Awaitable[Response | None]]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self.templates: dict[Handler, str] = {}  # handler -> its pattern (metrics' label)

    def add(self, method: str, pattern: str, handler: Handler, stream_body: bool = False) -> None:
        """`stream_body`: the handler reads the body itself (Request.body_chunks), so it may
        be larger than MAX_BODY (an image tarball goes to disk, not to memory)."""
        # {name} matches one path segment; {name*} may span several (image names have slashes).
        self.templates.setdefault(handler, pattern)
        regex = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", pattern)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
        self.routes.append((method, re.compile(regex), handler, stream_body))

    def template(self, handler: Handler | None) -> str:
        """The pattern a handler was added with ("other" for none: no label per raw path)."""
        return self.templates.get(handler, "other") if handler is not None else "other"

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool, bool]:
        """(handler, path parameters, whether the path is known at all, stream_body)."""
        path_known = False
        for m, regex, handler, stream in self.routes:
            found = regex.fullmatch(path)
            if found:
                path_known = True
                if m == method or (method == "HEAD" and m == "GET"):
                    params = {k: unquote(v) for k, v in found.groupdict().items()}
                    return handler, params, True, stream
        return None, {}, path_known, False


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
        # Called once per request with (method, route pattern, status, seconds): metrics.
        self.observe: Callable[[str, str, int, float], None] | None = None

    async def start_unix(self, path: str) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=path, limit=MAX_HEADER)

    async def start_tcp(self, host: str, port: int) -> None:
        """Serve on a TCP address (the metrics endpoint, the ui page), not the API socket."""
        self.server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEADER)

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
        """Serve one request; False when the connection must close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await _refuse(writer, 400, "malformed HTTP request: unexpected EOF in the headers")
            return False
        except asyncio.LimitOverrunError:
            await _refuse(writer, 431, f"request headers larger than {MAX_HEADER} bytes")
            return False
        try:
            method, target, headers, framing = _parse_head(head)
        except HttpError as exc:
            await _refuse(writer, exc.status, exc.message)
            return False
        url = urlsplit(target)
        found = VERSION_PREFIX.match(url.path)
        path = VERSION_PREFIX.sub("", url.path) or "/"
        handler, params, known, stream = self.router.match(method, path)
        version = version_tuple(API_VERSION)
        version_error = ""
        if found is not None:
            try:
                version = check_version(found.group(1))
            except HttpError as exc:
                handler, known = None, True
                version_error = exc.message
        body = b""
        try:
            if not stream:
                body = await _read_body(reader, framing)
        except HttpError as exc:
            await _refuse(writer, exc.status, exc.message)
            return False
        req = Request(
            method, path, parse_qs(url.query, keep_blank_values=True), headers, body, reader, writer
        )
        req.framing = framing
        req.version = version
        api_version.requested.set(version)
        started = time.perf_counter()
        resp: Response | None
        if found is not None and version_error:
            resp = json_response({"message": version_error}, 400)
        elif handler is None:
            msg = f"page not found: {method} {path}" if not known else "method not allowed"
            resp = json_response({"message": msg}, 404 if not known else 405)
        else:
            req.params = params
            try:
                resp = await handler(req)
            except TetherError as exc:
                resp = json_response({"message": exc.message}, exc.status)
            except HttpError as exc:
                resp = json_response({"message": exc.message}, exc.status)
                stream = True  # the body may be half read: this connection is done
            except (ConnectionError, asyncio.IncompleteReadError):
                return False
            except Exception:
                # A fault of ours, not of the request: the traceback goes to the log under an
                # id, the client gets the id and no Python text.
                rid = secrets.token_hex(6)
                log.exception("internal error in %s %s (request id %s)", method, path, rid)
                resp = json_response(
                    {"message": f"internal server error (request id {rid}; see the daemon log)"},
                    500,
                )
        if self.observe is not None:
            status = resp.status if resp is not None else 200
            self.observe(
                method, self.router.template(handler), status, time.perf_counter() - started
            )
        if resp is None:  # the handler streamed or hijacked
            return False
        extra = [
            ("Content-Type", resp.content_type),
            ("Content-Length", str(len(resp.body))),
            *resp.headers,
        ]
        if stream:
            extra.append(("Connection", "close"))
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
        return not stream and headers.get("connection", "").lower() != "close"


def _is_json(content_type: str) -> bool:
    """Docker's CheckForJSON, lenient only about a missing header."""
    if not content_type:
        return True
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """Answer a request that cannot be read (framing, size) and let the caller close."""
    body = json.dumps({"message": message}).encode() + b"\n"
    extra = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    try:
        writer.write(head_bytes(status, extra) + body)
        await writer.drain()
    except ConnectionError:
        pass


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str], tuple[str, int]]:
    """(method, target, headers, body framing) of one request head, or HttpError."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[1].startswith("/"):
        raise HttpError(400, f"malformed HTTP request {json.dumps(lines[0][:200])}")
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        raise HttpError(505, f"unsupported protocol version {json.dumps(version[:50])}")
    if CTL_IN_TARGET.search(target):
        raise HttpError(400, "malformed HTTP request: control characters in the target")
    headers: dict[str, str] = {}
    lengths: set[str] = set()
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if not sep or not TOKEN.fullmatch(k):
            raise HttpError(400, f"malformed MIME header line: {json.dumps(line[:200])}")
        key, value = k.lower(), v.strip(" \t")
        if CTL_IN_VALUE.search(value):
            raise HttpError(400, f"malformed MIME header line: {json.dumps(line[:200])}")
        if key == "content-length":
            lengths.add(value)
        headers[key] = value
    te = headers.get("transfer-encoding", "").lower()
    if te:
        if te != "chunked":
            raise HttpError(501, f"unsupported transfer encoding: {json.dumps(te)}")
        # RFC 9112: Transfer-Encoding overrides Content-Length.
        return method, target, headers, ("chunked", 0)
    if len(lengths) > 1:
        raise HttpError(400, "http: message cannot contain multiple Content-Length headers")
    if lengths:
        text = lengths.pop()
        # Go's net/http: decimal digits only (no sign, no blanks), at most int64.
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise HttpError(400, f"bad Content-Length {json.dumps(text[:50])}")
        return method, target, headers, ("length", int(text))
    return method, target, headers, ("length", 0)


async def _read_body(reader: asyncio.StreamReader, framing: tuple[str, int]) -> bytes:
    kind, length = framing
    if kind == "length":
        if length > MAX_BODY:
            # Refused from the header: nothing of the body is read.
            raise HttpError(
                413, f"request body too large: {length} bytes (the limit is {MAX_BODY})"
            )
        try:
            return await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise HttpError(400, "unexpected EOF in the request body") from None
    out = bytearray()
    async for chunk in _chunks(reader, MAX_BODY):
        out += chunk
    return bytes(out)


async def _chunks(reader: asyncio.StreamReader, limit: int | None) -> AsyncIterator[bytes]:
    """A chunked body, chunk by chunk; its total bounded by `limit` (413 past it)."""
    total = 0
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line[:-2].split(b";", 1)[0].strip()
            if (
                not size_text
                or len(size_text) > 15
                or not all(c in b"0123456789abcdefABCDEF" for c in size_text)
            ):
                raise HttpError(
                    400,
                    f"malformed chunked encoding: bad chunk size {json.dumps(size_text[:20].decode('latin-1'))}",
                )
            size = int(size_text, 16)
            if size == 0:
                for _ in range(MAX_TRAILERS):
                    if await reader.readuntil(b"\r\n") == b"\r\n":
                        return
                raise HttpError(400, "malformed chunked encoding: too many trailer lines")
            total += size
            if limit is not None and total > limit:
                raise HttpError(413, f"request body too large (the limit is {limit} bytes)")
            data = await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise HttpError(400, "malformed chunked encoding: chunk not followed by CRLF")
            yield data
    except asyncio.IncompleteReadError:
        raise HttpError(400, "unexpected EOF in the chunked request body") from None
    except asyncio.LimitOverrunError:
        raise HttpError(400, "malformed chunked encoding: chunk size line too long") from None
