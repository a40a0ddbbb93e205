"""Attaching to a container's stdio: Docker's `attach` (and `run` without -d) on tether-shim.

The shim holds the container's output (and, with -i, its stdin pipe; with -t, its terminal)
for the container's whole life, so an attachment outlives nothing it should not and a
daemon restart loses nothing but the connections.  tetherd speaks the shim's attach
protocol (runtime/shim.c, attach_loop) on one connection per container, and only while
someone is attached:

- a client that attaches before the start (docker run, compose up) is served through a
  socket pair handed to the shim at spawn: it sees the very first byte, and the stream ends
  only after the last one (the shim closes the connection once the output has ended), so
  `run --rm` prints everything before the container is removed;
- a client that attaches to a running container reaches the shim through the socket the
  shim listens on (`attach.sock` in the container's directory), from now on.

Every attached session gets the output it asked for (stdout, stderr); stdin from any of
them goes to the container (frames 'i'); 'c' closes the container's stdin (StdinOnce);
'r' resizes its terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from tether.model import Container

log = logging.getLogger("tether.attach")

FRAME = struct.Struct(">BIQ")  # the shim's output frames: stream, length, time (ns)
SOCKET_NAME = "attach.sock"

Write = Callable[[int, bytes], Awaitable[None]]


@dataclass(eq=False)
class Session:
    """One attached client: which streams it wants and how to send it a chunk."""

    stdout: bool
    stderr: bool
    write: Write
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False  # the client went away (a write failed)


class Hub:
    """The attached sessions of one container and its connection to the shim, if any."""

    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        self.writer: asyncio.StreamWriter | None = None
        # Frames to the shim go through a duplicate of the connection, never through the
        # reading transport: a shim that has already closed (its container ended) makes a
        # write fail, and asyncio would drop the output still buffered for reading with it.
        self.sender: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None
        # Frames for the shim sent before it was there (stdin typed before the start).
        self.pending: list[bytes] = []
        self.size: tuple[int, int] | None = None  # the last resize, for the start
        # Sends of `pending` under way: asyncio holds tasks weakly, the hub keeps them.
        self.flushes: set[asyncio.Task[None]] = set()


def _frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack(">I", len(payload)) + payload


@contextlib.contextmanager
def _in_dir(directory: str) -> Iterator[str]:
    """A path to `directory` short enough for a unix socket's 108 bytes, whatever its
    length: through a descriptor of it (/proc/self/fd/N)."""
    fd = os.open(directory, os.O_PATH | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


class Attacher:
    def __init__(self, cdir: Callable[[Container], str]) -> None:
        self.cdir = cdir
        self.hubs: dict[str, Hub] = {}
        # Our end of the socket pair handed to a shim being spawned, by container id.
        self._spawning: dict[str, socket.socket] = {}

    def hub(self, c: Container) -> Hub:
        return self.hubs.setdefault(c.id, Hub())

    # -- the start -------------------------------------------------------------------------

    def listener(self, c: Container) -> int:
        """A listening socket in the container's directory for the shim to hold (the caller
        closes its copy once the shim is spawned)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with _in_dir(self.cdir(c)) as d:
                path = f"{d}/{SOCKET_NAME}"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                s.bind(path)
                os.chmod(path, 0o600)
            s.listen(16)
        except BaseException:
            s.close()
            raise
        return s.detach()

    def shim_end(self, c: Container) -> int:
        """The shim's end of a connection for the sessions waiting for this start (-1: none
        waits).  `spawned` or `spawn_failed` must follow."""
        hub = self.hubs.get(c.id)
        if hub is None or not (hub.sessions or hub.pending):
            return -1
        log.debug(
            "attach shim end id=%s sessions=%d pending=%d",
            c.short_id,
            len(hub.sessions),
            len(hub.pending),
        )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.set_inheritable(False)
        self._spawning[c.id] = ours
        return theirs.detach()

    def tty_size(self, c: Container) -> tuple[int, int] | None:
        hub = self.hubs.get(c.id)
        return hub.size if hub is not None else None

    async def spawned(self, c: Container) -> None:
        ours = self._spawning.pop(c.id, None)
        if ours is None:
            return
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        self._serve(c, self.hub(c), reader, writer)

    def spawn_failed(self, c: Container) -> None:
        """The start failed: the sessions that waited for it end (as dockerd closes the
        streams of a container whose start failed), and the client reports the error."""
        ours = self._spawning.pop(c.id, None)
        if ours is not None:
            ours.close()
        hub = self.hubs.get(c.id)
        if hub is not None:
            hub.pending = []
            for s in hub.sessions:
                s.ended.set()

    # -- sessions ----------------------------------------------------------------------------

    async def attach(self, c: Container, session: Session) -> None:
        """Add a session; with the container running, make sure the shim serves us."""
        hub = self.hub(c)
        hub.sessions.add(session)
        log.debug("attach session added id=%s running=%s", c.short_id, c.state.running)
        if c.state.running:
            await self._connect(c, hub)
            if hub.writer is None:
                # The shim no longer listens: the command's output has ended and only the
                # exit is left to be reaped.  Nothing more will come; the stream ends now
                # (a session left waiting here hung docker-compose 1.29's `run`, which
                # attaches only after the start: dockerpty's lazy map).
                session.ended.set()

    def detach(self, c: Container, session: Session) -> None:
        hub = self.hubs.get(c.id)
        if hub is None:
            return
        hub.sessions.discard(session)
        log.debug("attach session removed id=%s left=%d", c.short_id, len(hub.sessions))
        if not hub.sessions:
            # Nobody to relay to: the shim stops sending us its output.
            if hub.writer is not None:
                hub.writer.close()
                hub.writer = None
            if hub.sender is not None:
                hub.sender.close()
                hub.sender = None
            if hub.task is not None:
                hub.task.cancel()
                hub.task = None
            if not hub.pending:
                self.hubs.pop(c.id, None)

    async def stdin(self, c: Container, data: bytes) -> None:
        for i in range(0, len(data), 65536):
            await self._send(c, _frame(b"i", data[i : i + 65536]))

    async def close_stdin(self, c: Container) -> None:
        await self._send(c, _frame(b"c"))

    async def resize(self, c: Container, rows: int, cols: int) -> None:
        hub = self.hub(c)
        hub.size = (rows, cols)
        if c.state.running:
            await self._send(c, _frame(b"r", struct.pack(">HH", rows, cols)), connect=True)
            if not hub.sessions:
                self.detach(c, Session(False, False, _nowhere))

    def forget(self, c: Container) -> None:
        """The container is gone: its sessions end."""
        hub = self.hubs.pop(c.id, None)
        if hub is None:
            return
        for s in hub.sessions:
            s.ended.set()
        if hub.writer is not None:
            hub.writer.close()
        if hub.sender is not None:
            hub.sender.close()

    # -- the connection to the shim ----------------------------------------------------------

    async def _send(self, c: Container, frame: bytes, connect: bool = False) -> None:
        hub = self.hub(c)
        if hub.sender is None and (connect or hub.sessions) and c.state.running:
            await self._connect(c, hub)
        if hub.sender is None:
            hub.pending.append(frame)  # for the start
            return
        # What was typed before the start goes first: a frame sent past it (the stdin close
        # of a short `run -i`, above all) would reorder the stream or cut its end off.
        while hub.flushes:
            await asyncio.gather(*list(hub.flushes), return_exceptions=True)
        if hub.sender is None:
            return
        try:
            await asyncio.get_running_loop().sock_sendall(hub.sender, frame)
        except OSError:
            pass

    async def _connect(self, c: Container, hub: Hub) -> None:
        if hub.writer is not None:
            return
        try:
            with _in_dir(self.cdir(c)) as d:
                reader, writer = await asyncio.open_unix_connection(f"{d}/{SOCKET_NAME}")
        except OSError as exc:
            log.warning("cannot attach to %s: %s", c.name, exc)
            return
        if hub.writer is not None:  # another session connected meanwhile
            writer.close()
            return
        self._serve(c, hub, reader, writer)

    def _serve(
        self, c: Container, hub: Hub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hub.writer = writer
        raw = writer.get_extra_info("socket")
        hub.sender = socket.socket(fileno=os.dup(raw.fileno()))
        hub.sender.setblocking(False)
        pending, hub.pending = hub.pending, []
        hub.task = asyncio.create_task(self._relay(c, hub, reader, writer))
        if pending:
            sender = hub.sender

            async def flush() -> None:
                try:
                    await asyncio.get_running_loop().sock_sendall(sender, b"".join(pending))
                except OSError:
                    pass

            task = asyncio.get_running_loop().create_task(flush())
            hub.flushes.add(task)
            task.add_done_callback(hub.flushes.discard)

    async def _relay(
        self, c: Container, hub: Hub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The shim's output to every session, until it closes (the output has ended)."""
        try:
            while True:
                head = await reader.readexactly(FRAME.size)
                stream, length, _t = FRAME.unpack(head)
                data = await reader.readexactly(length)
                for s in list(hub.sessions):
                    if (stream == 1 and s.stdout) or (stream == 2 and s.stderr):
                        try:
                            await s.write(stream, data)
                        except (ConnectionError, OSError):
                            s.failed = True
                            s.ended.set()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            log.debug("attach relay ended id=%s %r", c.short_id, exc)
        except asyncio.CancelledError:
            log.debug("attach relay cancelled id=%s", c.short_id)
            writer.close()
            raise
        writer.close()
        if hub.writer is writer:
            hub.writer = None
            hub.task = None
            if hub.sender is not None:
                hub.sender.close()
                hub.sender = None
            # The output ended (the container stopped): every session is done.
            for s in list(hub.sessions):
                s.ended.set()


async def _nowhere(stream: int, data: bytes) -> None:
    return None
