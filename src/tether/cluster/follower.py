"""What a node does when the cluster store changes: kernel work, in order, in one task.

The cluster store publishes ClusterNetwork and ClusterEndpoints events synchronously (from its
watch); the kernel work they call for (making an overlay network's bridge and VXLAN device,
programming its FDB and neighbour entries) is queued here and done by one worker task that
the daemon owns, in the order the store changed.  Changes to a network that wait are merged:
a burst of 1,000 joins, or a dead node's endpoints deleted at once when its lease expires,
cost one programming pass.  A change that names its endpoints (the store's watch) is applied
for those endpoints only, so it costs what it changes, not the network's size; a change that
does not (a relist, the first listing after a start) programs the whole set, which is what
keeps the kernel from drifting from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping

from tether.drivers.overlay import OverlayDriver, Remote
from tether.engine.networks import Networks
from tether.events import ClusterEndpoints, ClusterNetwork, EventBus
from tether.model import RemoteEndpoint

log = logging.getLogger("tether.cluster")


def remotes_of(ep: RemoteEndpoint) -> tuple[Remote, ...]:
    """An endpoint's FDB/neighbour entries: one per address, all with its MAC."""
    if not ep.mac:
        return ()
    return tuple(Remote(ip, ep.mac, ep.vtep) for ip in (ep.ipv4, ep.ipv6) if ip)


def delta(
    applied: dict[str, tuple[Remote, ...]],
    endpoints: Mapping[str, RemoteEndpoint],
    ids: Iterable[str],
    me: str,
) -> tuple[list[str], list[Remote]]:
    """What the endpoints `ids` changed: the addresses to withdraw and the entries to make
    present, given `applied` (endpoint id -> the entries given to the driver), which is
    updated to match.  An endpoint absent from `endpoints` or on node `me` has none."""
    drop: list[str] = []
    put: list[Remote] = []
    for ep_id in ids:
        ep = endpoints.get(ep_id)
        new = remotes_of(ep) if ep is not None and ep.node != me else ()
        old = applied.pop(ep_id, ())
        if new:
            applied[ep_id] = new
        kept = {r.ip for r in new}
        drop.extend(r.ip for r in old if r.ip not in kept)
        put.extend(new)
    return drop, put


class Follower:
    def __init__(self, events: EventBus, networks: Networks, overlay: OverlayDriver) -> None:
        self.networks = networks
        self.overlay = overlay
        self._queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        # Per network waiting for the worker: the endpoint ids changed since its last pass,
        # or None when the whole set must be programmed (a relist, or a network (re)made).
        self._pending: dict[str, set[str] | None] = {}
        # The last event per network: its `endpoints` is the store's live mapping, read when
        # the worker gets to the network.
        self._live: dict[str, ClusterEndpoints] = {}
        # Per network, endpoint id -> the entries this node gave the driver for it: what a
        # removed endpoint (gone from the store) had.
        self._applied: dict[str, dict[str, tuple[Remote, ...]]] = {}
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
        net_id = ev.network_id
        if net_id not in self._pending:
            self._queue.put_nowait(("endpoints", net_id))
            self._since[net_id] = time.perf_counter()
            self._pending[net_id] = set()
        waiting = self._pending[net_id]
        if ev.changed is None or waiting is None:
            self._pending[net_id] = None
        else:
            waiting.update(ev.changed)
        self._live[net_id] = ev

    async def _run(self) -> None:
        while True:
            kind, item = await self._queue.get()
            try:
                if kind == "network":
                    assert isinstance(item, ClusterNetwork)
                    net_id = item.network.id
                    if item.removed:
                        self._live.pop(net_id, None)
                        self._applied.pop(net_id, None)
                        await self.networks.drop(item.network)
                    else:
                        await self.networks.adopt(item.network)
                        await self.overlay.relearn(item.network)
                        if net_id in self._pending:
                            # Programmed whole when its endpoints' turn comes.
                            self._pending[net_id] = None
                            continue
                        await self._program(net_id, None)
                else:
                    assert isinstance(item, str)
                    await self._program(item, self._pending.pop(item, None))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster change not applied: %s %s", kind, item)

    async def _program(self, net_id: str, ids: set[str] | None) -> None:
        """The endpoints `ids` of a network applied (None: all of them, as a whole diff)."""
        net = self.networks.by_id.get(net_id)
        if net is None or net.driver != self.overlay.name:
            return
        ev = self._live.get(net_id)
        endpoints: Mapping[str, RemoteEndpoint] = ev.endpoints if ev is not None else {}
        me = ev.node if ev is not None else ""
        if ids is None or net_id not in self._applied:
            applied: dict[str, tuple[Remote, ...]] = {}
            for ep_id, ep in endpoints.items():
                if ep.node != me and (entries := remotes_of(ep)):
                    applied[ep_id] = entries
            self._applied[net_id] = applied
            remotes = [r for entries in applied.values() for r in entries]
            changes = await self.overlay.program(net, remotes)
            scope = "all"
        else:
            drop, put = delta(self._applied[net_id], endpoints, ids, me)
            changes = await self.overlay.patch(net, drop, put) if drop or put else 0
            scope = f"{len(ids)}"
        started = self._since.pop(net_id, None)
        if changes:
            log.info(
                "overlay programmed network=%s remote_endpoints=%d endpoints_applied=%s "
                "changes=%d after_ms=%.1f",
                net.name,
                len(self._applied[net_id]),
                scope,
                changes,
                (time.perf_counter() - started) * 1000 if started else 0.0,
            )
