"""The in-daemon userland proxy, for published ports on IPv6 host addresses.

IPv4 host ports are kernel NAT (nftables maps, no process, no copy).  An IPv6 connection to an
IPv4-only container cannot be NATed by the kernel (nftables has no NAT64), so, like Docker's
docker-proxy for `[::]:8080`, tetherd relays those itself: one listening socket per port, in
the daemon, no process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

log = logging.getLogger("tether.proxy")
UDP_IDLE = 30.0


class TcpProxy:
    def __init__(self, sock: socket.socket, target: tuple[str, int]) -> None:
        self.sock = sock
        self.target = target
        self.server: asyncio.base_events.Server | None = None
        self.conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.sock.listen(128)
        self.server = await asyncio.start_server(self._client, sock=self.sock)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.conns.add(task)
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except (OSError, TimeoutError):
            writer.close()
            if task is not None:
                self.conns.discard(task)
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
                if w.can_write_eof():
                    w.write_eof()
            except (ConnectionError, OSError):
                pass

        try:
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        finally:
            for w in (writer, up_w):
                try:
                    w.close()
                except Exception:
                    pass
            if task is not None:
                self.conns.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        else:
            self.sock.close()
        for t in list(self.conns):
            t.cancel()


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self, proxy: UdpProxy, peer: tuple[str, int]) -> None:
        self.proxy = proxy
        self.peer = peer
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = time.monotonic()
        if self.proxy.transport is not None:
            self.proxy.transport.sendto(data, self.peer)


class UdpProxy(asyncio.DatagramProtocol):
    def __init__(self, sock: socket.socket, target: tuple[str, int]) -> None:
        self.sock = sock
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.clients: dict[tuple[str, int], _UdpClient] = {}
        self.reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=self.sock)
        self.reaper = loop.create_task(self._reap())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        peer = (addr[0], addr[1])
        client = self.clients.get(peer)
        if client is not None and client.transport is not None:
            client.last = time.monotonic()
            client.transport.sendto(data)
            return
        asyncio.get_running_loop().create_task(self._new_client(peer, data))

    async def _new_client(self, peer: tuple[str, int], first: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, client = await loop.create_datagram_endpoint(
                lambda: _UdpClient(self, peer), remote_addr=self.target
            )
        except OSError as exc:
            log.debug("udp proxy to %s failed: %s", self.target, exc)
            return
        self.clients[peer] = client
        if client.transport is not None:
            client.transport.sendto(first)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(UDP_IDLE / 3)
            now = time.monotonic()
            for peer, c in list(self.clients.items()):
                if now - c.last > UDP_IDLE and c.transport is not None:
                    c.transport.close()
                    del self.clients[peer]

    async def close(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        for c in self.clients.values():
            if c.transport is not None:
                c.transport.close()
        if self.transport is not None:
            self.transport.close()
        else:
            self.sock.close()
