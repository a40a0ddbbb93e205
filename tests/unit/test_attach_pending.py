"""Stdin typed before the start (engine.attach): the frames held for a shim that was not there
yet are sent once it connects, by a task the hub keeps (asyncio holds tasks only weakly).
Pure: a socket pair stands for the shim's attach socket."""

from __future__ import annotations

import asyncio
import socket

from tether.engine.attach import Attacher, Hub
from tether.model import Container


def test_pending_stdin_is_sent_by_a_task_the_hub_holds() -> None:
    async def main() -> None:
        ours, shim = socket.socketpair()
        shim.setblocking(False)
        c = Container(
            id="c" * 64,
            name="c",
            created="",
            image="b",
            image_id="x",
            path="true",
            args=[],
            config={},
            host_config={},
        )
        hub = Hub()
        hub.pending = [b"i\x00\x00\x00\x03abc", b"i\x00\x00\x00\x01\n"]
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        Attacher(lambda _c: "/nonexistent")._serve(c, hub, reader, writer)
        assert len(hub.flushes) == 1 and hub.pending == []
        loop = asyncio.get_running_loop()
        got = b""
        async with asyncio.timeout(5):
            while len(got) < 14:
                got += await loop.sock_recv(shim, 64)
        assert got == b"i\x00\x00\x00\x03abci\x00\x00\x00\x01\n"
        for _ in range(3):
            await asyncio.sleep(0)
        assert hub.flushes == set()  # discarded once done
        shim.close()
        async with asyncio.timeout(5):
            while hub.task is not None:  # the relay ends when the shim closes
                await asyncio.sleep(0.01)
        if hub.sender is not None:
            hub.sender.close()

    asyncio.run(main())
