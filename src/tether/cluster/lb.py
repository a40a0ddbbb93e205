"""Virtual IPs: connections to a service's VIP balanced over its running tasks, in nftables.

As swarm does with IPVS, the balancing happens in the client's own network namespace: each
local container on a network that has services gets a small table `ip tether_svc` in its
sandbox, whose output hook sends a VIP's packets to a per-service chain that DNATs to
`numgen random mod N` over the service's running tasks on that network.  No per-connection
userspace hop, no source NAT (the task sees the client's address), established connections
stay with their task (conntrack) when the set changes.

Changes are incremental: a task starting or stopping rewrites one chain (flush + one rule),
a service coming or going adds or deletes one map element and one chain, each in one
transaction per sandbox, applied by one worker task a few milliseconds after the store's
change (a burst of changes costs one pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from tether.events import (
    ClusterEndpoints,
    ContainerDestroyed,
    ContainerStarted,
    ContainerStopped,
    EndpointJoined,
    EventBus,
)
from tether.kernel.nft import NftError, run_in_netns
from tether.model import Container

if TYPE_CHECKING:
    from tether.cluster.services import Services
    from tether.cluster.state import ClusterStore
    from tether.engine.containers import Containers

log = logging.getLogger("tether.lb")

TABLE = "ip tether_svc"
DEBOUNCE = 0.005

# vip -> (chain name, backends)
Wanted = dict[str, tuple[str, tuple[str, ...]]]


def chain_name(service_id: str, network_id: str) -> str:
    return f"s_{service_id[:10]}_{network_id[:10]}"


def create_table() -> str:
    return (
        f"add table {TABLE}\n"
        f"delete table {TABLE}\n"
        f"table {TABLE} {{\n"
        " map vips { type ipv4_addr : verdict; }\n"
        # Before the DNS redirect's nat hook (-100 is tether_dns's): either order works.
        " chain out { type nat hook output priority -90; policy accept; ip daddr vmap @vips; }\n"
        "}\n"
    )


def service_rule(chain: str, backends: tuple[str, ...]) -> str:
    if not backends:
        # No task runs: the VIP answers nothing (as IPVS with no real server).
        return f"add rule {TABLE} {chain} drop\n"
    pairs = ", ".join(f"{i} : {ip}" for i, ip in enumerate(backends))
    return f"add rule {TABLE} {chain} dnat to numgen random mod {len(backends)} map {{ {pairs} }}\n"


def changes(have: Wanted, want: Wanted) -> str:
    """The transaction that turns `have` into `want` (one sandbox)."""
    out: list[str] = []
    for vip, (chain, _b) in have.items():
        if vip not in want or want[vip][0] != chain:
            out.append(f"delete element {TABLE} vips {{ {vip} }}\n")
            out.append(f"delete chain {TABLE} {chain}\n")
    for vip, (chain, backends) in want.items():
        old = have.get(vip)
        if old == (chain, backends):
            continue
        if old is None or old[0] != chain:
            out.append(f"add chain {TABLE} {chain}\n")
            out.append(service_rule(chain, backends))
            out.append(f"add element {TABLE} vips {{ {vip} : jump {chain} }}\n")
        else:
            out.append(f"flush chain {TABLE} {chain}\n")
            out.append(service_rule(chain, backends))
    return "".join(out)


class Balancer:
    def __init__(
        self,
        cluster: ClusterStore,
        services: Services,
        containers: Containers,
        events: EventBus,
    ) -> None:
        self.cluster = cluster
        self.services = services
        self.containers = containers
        self.programmed: dict[str, Wanted] = {}  # container id -> what its table holds
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_pass_ms = 0.0
        services.listeners.append(self._kick.set)
        events.subscribe(ClusterEndpoints, lambda e: self._kick.set())
        # A container's sandbox is programmed once it runs (and again when it joins a network).
        events.subscribe(ContainerStarted, lambda e: self._kick.set())
        events.subscribe(EndpointJoined, lambda e: self._kick.set())
        events.subscribe(ContainerStopped, lambda e: self._forget(e.container))
        events.subscribe(ContainerDestroyed, lambda e: self._forget(e.container))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._kick.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _forget(self, c: Container) -> None:
        self.programmed.pop(c.id, None)

    def wanted(self, c: Container) -> Wanted:
        """The VIPs this container's sandbox must balance: those of the services on its
        global networks, each over the service's running tasks on that network."""
        out: Wanted = {}
        nets = {ep.network_id for ep in c.endpoints.values()}
        for svc in self.services.by_id.values():
            if svc.endpoint_mode != "vip":
                continue
            for vip in svc.vips:
                net_id = vip["NetworkID"]
                if net_id not in nets:
                    continue
                eps = self.cluster.endpoints.get(net_id, {})
                backends = tuple(
                    sorted(ep.ipv4 for ep in eps.values() if ep.service == svc.id and ep.ipv4)
                )
                out[vip["Addr"].split("/")[0]] = (chain_name(svc.id, net_id), backends)
        return out

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            await asyncio.sleep(DEBOUNCE)
            self._kick.clear()
            started = time.perf_counter()
            for c in list(self.containers.by_id.values()):
                if not c.state.running or not c.sandbox_key or not c.endpoints:
                    continue
                want = self.wanted(c)
                have = self.programmed.get(c.id)
                if have is None and not want:
                    continue
                text = create_table() if have is None else ""
                text += changes(have or {}, want)
                if not text:
                    continue
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        None, run_in_netns, c.sandbox_key, text
                    )
                    self.programmed[c.id] = want
                except (NftError, OSError) as exc:
                    log.warning("service VIPs not programmed in %s: %s", c.name, exc)
                    self.programmed.pop(c.id, None)
            self.last_pass_ms = (time.perf_counter() - started) * 1000
