"""tether ui: the topology as a live web page on 127.0.0.1, for the person at this machine.

One asyncio process (the CLI's): an HTTP server on a loopback port, and one client of the
daemon's API socket that follows `GET /events`.  On every event (a burst is taken as one) it
fetches `GET /tether/topology`, lays it out with Graphviz (topology/dot.py, the picture
`tether topology` draws) and tells the open pages through Server-Sent Events, which fetch
the new SVG: no reloads, no polling.

Nothing beyond loopback, and nothing without the token: the server listens on 127.0.0.1
only, every request must carry the random token printed in the URL (403 otherwise), and a
Host header other than the loopback address it serves is refused too (a web page elsewhere
cannot reach it through DNS rebinding).  Clicking a container shows its inspect; the explain
form posts to the daemon's `POST /tether/explain`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from tether.daemon.http import (
    HttpServer,
    Request,
    Response,
    Router,
    json_response,
    start_stream,
    write_chunk,
)
from tether.topology.dot import render
from tether.ui.page import PAGE

log = logging.getLogger("tether.ui")

DEBOUNCE = 0.15  # seconds: events that arrive together make one new picture
RETRY = 1.0  # seconds between attempts to follow the daemon's events again


class DaemonError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def api(
    socket_path: str, method: str, path: str, body: Any = None, timeout: float = 30
) -> Any:
    """One call to the daemon's API socket; the decoded JSON, or DaemonError."""
    payload = json.dumps(body).encode() if body is not None else b""
    reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        writer.write(head.encode() + b"\r\n" + payload)
        await writer.drain()
        status, headers = await _read_head(reader)
        data = b"".join([c async for c in _body(reader, headers)])
    finally:
        writer.close()
    if status >= 400:
        try:
            message = str(json.loads(data)["message"])
        except (ValueError, KeyError, TypeError):
            message = data.decode(errors="replace").strip()
        raise DaemonError(status, message)
    return json.loads(data) if data.strip() else None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k:
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        yield await reader.read()


async def layout(dot_text: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "dot",
        "-Tsvg",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(dot_text.encode())
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {err.decode(errors='replace').strip()}")
    # The XML prologue and DOCTYPE cannot go inside a page; the <svg> element can.
    text = out.decode()
    return text[text.find("<svg") :].encode()


class UiServer:
    def __init__(self, socket_path: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket_path = socket_path
        self.host = host
        self.port = port
        self.token = secrets.token_urlsafe(24)
        self.svg = b""
        self.topology: dict[str, Any] = {}
        self.version = 0
        self.status = "starting"
        self.changed = asyncio.Event()
        self.listeners: set[asyncio.Queue[str]] = set()
        self.server: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/?token={quote(self.token)}"

    # -- the daemon's side ---------------------------------------------------------------------

    async def refresh(self) -> None:
        topo = await api(self.socket_path, "GET", "/tether/topology")
        svg = await layout(render(topo))
        self.topology, self.svg = topo, svg
        self.version += 1
        self._tell(json.dumps({"version": self.version, "status": self.status}))

    def _tell(self, message: str) -> None:
        for q in list(self.listeners):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(message)

    async def follow(self) -> None:
        """Follow the daemon's events for good; each burst makes one new picture."""
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError:
                self._set_status("daemon unreachable")
                await asyncio.sleep(RETRY)
                continue
            try:
                writer.write(b"GET /events HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n")
                await writer.drain()
                status, headers = await _read_head(reader)
                if status != 200:
                    raise DaemonError(status, "the daemon refused /events")
                self._set_status("live")
                self.changed.set()  # whatever happened while not following
                async for _chunk in _body(reader, headers):
                    self.changed.set()
            except (OSError, asyncio.IncompleteReadError, ValueError, DaemonError) as exc:
                log.debug("events stream ended: %s", exc)
            finally:
                writer.close()
            self._set_status("reconnecting")
            await asyncio.sleep(RETRY)

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self._tell(json.dumps({"version": self.version, "status": status}))

    async def redraw(self) -> None:
        while True:
            await self.changed.wait()
            await asyncio.sleep(DEBOUNCE)
            self.changed.clear()
            try:
                await self.refresh()
            except (OSError, DaemonError, RuntimeError, ValueError) as exc:
                log.warning("cannot redraw the topology: %s", exc)

    # -- the page's side -----------------------------------------------------------------------

    def _allowed(self, req: Request) -> bool:
        given = req.arg("token") or req.headers.get("x-tether-token", "")
        host = req.headers.get("host", "")
        hosts = {f"{self.host}:{self.port}", f"localhost:{self.port}"}
        return secrets.compare_digest(given.encode(), self.token.encode()) and host in hosts

    def router(self) -> Router:
        r = Router()

        def guarded(handler: Any) -> Any:
            async def wrapped(req: Request) -> Response | None:
                if not self._allowed(req):
                    return Response(
                        403, b"forbidden: open the URL tether ui printed\n", "text/plain"
                    )
                result: Response | None = await handler(req)
                return result

            return wrapped

        async def page(req: Request) -> Response:
            return Response(200, PAGE.encode(), "text/html; charset=utf-8")

        async def svg(req: Request) -> Response:
            return Response(200, self.svg, "image/svg+xml")

        async def topology(req: Request) -> Response:
            return json_response({"Version": self.version, "Status": self.status, **self.topology})

        async def inspect(req: Request) -> Response:
            try:
                data = await api(
                    self.socket_path, "GET", f"/containers/{quote(req.params['id'])}/json"
                )
            except DaemonError as exc:
                return json_response({"message": exc.message}, exc.status)
            return json_response(data)

        async def explain(req: Request) -> Response:
            try:
                body = json.loads(req.body or b"{}")
            except ValueError:
                return json_response({"message": "invalid JSON"}, 400)
            try:
                data = await api(self.socket_path, "POST", "/tether/explain", body, timeout=60)
            except DaemonError as exc:
                return json_response({"message": exc.message}, exc.status)
            return json_response(data)

        async def events(req: Request) -> None:
            q: asyncio.Queue[str] = asyncio.Queue(100)
            self.listeners.add(q)
            closed = asyncio.ensure_future(req.reader.read(1))
            try:
                await start_stream(req, "text/event-stream")
                first = json.dumps({"version": self.version, "status": self.status})
                await write_chunk(req, f"data: {first}\n\n".encode())
                while True:
                    get = asyncio.ensure_future(q.get())
                    done, _ = await asyncio.wait(
                        {get, closed}, timeout=15, return_when=asyncio.FIRST_COMPLETED
                    )
                    if closed in done:
                        get.cancel()
                        return
                    if get in done:
                        await write_chunk(req, f"data: {get.result()}\n\n".encode())
                    else:
                        get.cancel()
                        await write_chunk(req, b": keep-alive\n\n")
            finally:
                self.listeners.discard(q)
                closed.cancel()

        r.add("GET", "/", guarded(page))
        r.add("GET", "/topology.svg", guarded(svg))
        r.add("GET", "/topology.json", guarded(topology))
        r.add("GET", "/inspect/{id}", guarded(inspect))
        r.add("POST", "/explain", guarded(explain))
        r.add("GET", "/events", guarded(events))
        return r

    async def start(self) -> None:
        await self.refresh()  # fails early (no daemon, no Graphviz) before printing a URL
        self.server = HttpServer(self.router())
        await self.server.start_tcp(self.host, self.port)
        assert self.server.server is not None
        self.port = self.server.server.sockets[0].getsockname()[1]
        self._tasks = [
            asyncio.create_task(self.follow()),
            asyncio.create_task(self.redraw()),
        ]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.server is not None:
            await self.server.close()


async def serve(socket_path: str, port: int, ready: Any) -> None:
    ui = UiServer(socket_path, port=port)
    await ui.start()
    ready(ui)
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        await ui.close()
