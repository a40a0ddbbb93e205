"""What a node does when the cluster store changes: kernel work, in order, in one task.

The cluster store publishes ClusterNetwork and ClusterEndpoints events synchronously (from its
watch); the kernel work they call for (making an overlay network's bridge and VXLAN device,
programming its FDB and neighbour entries) is queued here and done by one worker task that
the daemon owns, in the order the store changed.  Only the latest endpoint set of a network
is kept while it waits: a burst of 1,000 joins costs one programming pass, not 1,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tether.drivers.overlay import OverlayDriver, Remote
from tether.engine.networks import Networks
from tether.events import ClusterEndpoints, ClusterNetwork, EventBus
from tether.model import RemoteEndpoint

log = logging.getLogger("tether.cluster")


class Follower:
    def __init__(self, events: EventBus, networks: Networks, overlay: OverlayDriver) -> None:
        self.networks = networks
        self.overlay = overlay
        self._queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        # The latest change per network still waiting: its endpoints are read (the store's
        # live set) when the worker gets to it, so a burst costs one pass.
        self._latest: dict[str, ClusterEndpoints] = {}
        self._task: asyncio.Task[None] | None = None
        # When the store last changed a network's endpoints, for the convergence log line.
        self._since: dict[str, float] = {}
        events.subscribe(ClusterNetwork, self._on_network)
        events.subscribe(ClusterEndpoints, self._on_endpoints)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_network(self, ev: ClusterNetwork) -> None:
        self._queue.put_nowait(("network", ev))

    def _on_endpoints(self, ev: ClusterEndpoints) -> None:
        if ev.network_id not in self._latest:
            self._queue.put_nowait(("endpoints", ev.network_id))
            self._since[ev.network_id] = time.perf_counter()
        self._latest[ev.network_id] = ev

    async def _run(self) -> None:
        while True:
            kind, item = await self._queue.get()
            try:
                if kind == "network":
                    assert isinstance(item, ClusterNetwork)
                    if item.removed:
                        await self.networks.drop(item.network)
                    else:
                        await self.networks.adopt(item.network)
                        await self.overlay.relearn(item.network)
                        if item.network.id in self._latest:
                            continue  # programmed when its endpoints' turn comes
                        await self._program(item.network.id, {})
                else:
                    assert isinstance(item, str)
                    latest = self._latest.pop(item, None)
                    await self._program(item, latest.others() if latest else {})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster change not applied: %s %s", kind, item)

    async def _program(self, net_id: str, endpoints: dict[str, RemoteEndpoint]) -> None:
        net = self.networks.by_id.get(net_id)
        if net is None or net.driver != self.overlay.name:
            return
        remotes = [
            Remote(ip, ep.mac, ep.vtep)
            for ep in endpoints.values()
            for ip in (ep.ipv4, ep.ipv6)
            if ip and ep.mac
        ]
        changes = await self.overlay.program(net, remotes)
        started = self._since.pop(net_id, None)
        if changes:
            log.info(
                "overlay programmed network=%s remote_endpoints=%d changes=%d after_ms=%.1f",
                net.name,
                len(endpoints),
                changes,
                (time.perf_counter() - started) * 1000 if started else 0.0,
            )
