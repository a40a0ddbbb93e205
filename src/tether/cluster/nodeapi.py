"""The node-to-node listener: other cluster nodes read this node's task logs, and nothing else.

`service logs` on any node shows the logs of every task of a service, and a task's container
lives on the node that runs it.  Swarm carries logs over its managers' gRPC; tether asks the
task's node directly, on its advertise address, TCP port 7946 by default (swarm's gossip
port; tetherd --cluster-node-port, 0 turns the listener off):

    GET /tasks/<task id>/logs?follow=1&tail=N&since=EPOCH HTTP/1.1

answered with 200 and the task container's log as tether-shim writes it (runtime/logs.py:
1 byte stream, 4 bytes length, 8 bytes time in ns, the data; one line per frame), until the
log ends (or, with follow, until the container stops), then the connection closes.  No other
path exists: no write, no exec, no container listing; a task id the node does not run is 404.

Who may ask (docs/services.md, "Trust"):

- with TLS to the cluster store (kv.cacertfile/kv.certfile/kv.keyfile), the listener is TLS
  and requires a client certificate signed by kv.cacertfile; the node presents kv.certfile
  (the same files every node already holds for etcd), and checks the server's the same way;
- always, the peer's address must be one of the registered nodes' (checked here, per
  connection) and the firewall drops TCP to the port from any other address (the input
  chain's `underlay` decision, firewall/policy.py), so one stray request never reaches this
  code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from tether.runtime import logs as logfile

if TYPE_CHECKING:
    from tether.cluster.state import ClusterStore
    from tether.engine.containers import Containers
    from tether.engine.lifecycle import Lifecycle
    from tether.model import Container

log = logging.getLogger("tether.nodeapi")

DEFAULT_PORT = 7946
LABEL_TASK_ID = "com.docker.swarm.task.id"
CONNECT_TIMEOUT = 3.0
MAX_REQUEST = 8192  # bytes of request line and headers


class NodeApiError(Exception):
    """A remote node could not give a task's logs (one line for the user)."""


def tls_contexts(cafile: str, certfile: str, keyfile: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for mutual TLS with the cluster store's certificates.

    Nodes are reached by address and their certificates are made for etcd, so no host name
    is checked: what is checked is that the peer holds a certificate of the cluster's CA."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certfile, keyfile)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_REQUIRED
    client.load_cert_chain(certfile, keyfile)
    if cafile:
        server.load_verify_locations(cafile)
        client.load_verify_locations(cafile)
    else:
        server.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        client.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return server, client


def encode(frames: list[logfile.Frame]) -> bytes:
    return b"".join(logfile.HEADER.pack(f.stream, len(f.data), f.time_ns) + f.data for f in frames)


class NodeApi:
    def __init__(
        self,
        cluster: ClusterStore,
        containers: Containers,
        lifecycle: Lifecycle,
        port: int = DEFAULT_PORT,
    ) -> None:
        self.cluster = cluster
        self.containers = containers
        self.lifecycle = lifecycle
        self.port = port
        self._server: asyncio.Server | None = None
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        opts = cluster.opts
        if opts.cert:
            self._server_ssl, self._client_ssl = tls_contexts(opts.cacert, opts.cert, opts.key)

    # -- the listener ----------------------------------------------------------------------

    async def start(self) -> None:
        if not self.port:
            return
        self._server = await asyncio.start_server(
            self._serve,
            host=self.cluster.node.addr,
            port=self.port,
            ssl=self._server_ssl,
            reuse_address=True,
        )
        log.info(
            "node listener ready addr=%s port=%d tls=%s",
            self.cluster.node.addr,
            self.port,
            "yes" if self._server_ssl else "no",
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def allowed(self, peer: str) -> bool:
        nodes = {n.addr for n in self.cluster.nodes.values()}
        nodes.add(self.cluster.node.addr)
        return peer in nodes

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = (writer.get_extra_info("peername") or ("", 0))[0]
        try:
            if not self.allowed(str(peer)):
                log.warning("node listener: refused a connection from %s (not a node)", peer)
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > MAX_REQUEST:
                return
            method, _, rest = head.decode("latin-1").partition(" ")
            target = rest.partition(" ")[0]
            url = urlsplit(target)
            parts = url.path.strip("/").split("/")
            if method != "GET" or len(parts) != 3 or parts[0] != "tasks" or parts[2] != "logs":
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            q = parse_qs(url.query)
            follow = q.get("follow", ["0"])[0] in ("1", "true")
            tail_text = q.get("tail", [""])[0]
            tail = int(tail_text) if tail_text.isdigit() else None
            since = float(q.get("since", ["0"])[0] or 0)
            c = self.local_container(parts[1])
            if c is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Connection: close\r\n\r\n"
            )
            async for frames in self.local_frames(c, follow, tail, since):
                writer.write(encode(frames))
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 1)

    # -- reading a task's log --------------------------------------------------------------

    def local_container(self, task_id: str) -> Container | None:
        for c in self.containers.by_id.values():
            if (c.config.get("Labels") or {}).get(LABEL_TASK_ID) == task_id:
                return c
        return None

    async def local_frames(
        self, c: Container, follow: bool, tail: int | None, since: float = 0.0
    ) -> AsyncIterator[list[logfile.Frame]]:
        """A local container's log, a line a frame: what is there (the rotated files of
        --log-opt max-file, oldest first, then the current one), then (follow) what comes
        until the container stops; read as `logs` reads a container's (runtime/logs.py)."""
        reader = logfile.LogReader(self.containers.paths(c)["log"])
        try:
            frames = reader.history()
            lines = [f for f in logfile.split_lines(frames) if f.time_ns / 1e9 >= since]
            if tail is not None:
                lines = lines[-tail:] if tail > 0 else []
            if lines:
                yield lines
            if not follow:
                return
            run = self.lifecycle.supervisor.run_of(c)
            delay = 0.005
            while run is not None and not run.finished.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.finished.wait(), delay)
                more = reader.more()
                if more:
                    yield list(logfile.split_lines(more))
                delay = 0.005 if more else min(delay * 2, 0.1)
            more = reader.more()
            if more:
                yield list(logfile.split_lines(more))
        finally:
            reader.close()

    async def remote_frames(
        self, node: str, task_id: str, follow: bool, tail: int | None, since: float = 0.0
    ) -> AsyncIterator[list[logfile.Frame]]:
        """Another node's task log, through its listener."""
        info = self.cluster.nodes.get(node)
        if info is None or info.status != "ready":
            raise NodeApiError(f"node {node} is not available")
        if not self.port:
            raise NodeApiError("the node listener is off (--cluster-node-port 0)")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(info.addr, self.port, ssl=self._client_ssl),
                CONNECT_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise NodeApiError(
                f"cannot reach node {node} at {info.addr}:{self.port}: {exc}"
            ) from None
        try:
            query = f"follow={int(follow)}&since={since}"
            if tail is not None:
                query += f"&tail={tail}"
            writer.write(
                f"GET /tasks/{task_id}/logs?{query} HTTP/1.1\r\nHost: {info.addr}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
            status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if status == b"404":
                return  # the task's container is gone there: nothing to show
            if status != b"200":
                raise NodeApiError(f"node {node} answered {status.decode(errors='replace')}")
            while True:
                try:
                    hdr = await reader.readexactly(logfile.HEADER.size)
                except asyncio.IncompleteReadError:
                    return
                stream, length, t = logfile.HEADER.unpack(hdr)
                data = await reader.readexactly(length)
                yield [logfile.Frame(stream, t, data)]
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
            raise NodeApiError(f"node {node}: connection lost ({exc})") from None
        finally:
            with contextlib.suppress(Exception):
                writer.close()
