"""The routing mesh: a service's ingress-published port open on every node of the cluster.

Docker gives each node an `ingress-sbox` namespace on the ingress overlay and on
docker_gwbridge, DNATs the published port into it, and balances there with IPVS.  tether
skips the extra namespace: the node itself takes an address on the ingress network (on the
network's bridge, claimed in the cluster store like an endpoint's, on the node's lease), and
its own nftables table DNATs a connection to any of the node's addresses to one of the
service's running tasks on the ingress network, chosen at random per connection, masqueraded
from that address so the answer comes back the same way.  One hop fewer, one namespace and
two veths fewer per node, and the same thing seen from outside: any node answers, whether or
not it runs a task, and the task sees the node's ingress address as the client (as it sees
the ingress-sbox's with Docker).

Tasks of a service that publishes in ingress mode join the ingress network (the agent does
that); the ingress network gets no DNS names (swarm gives it none).  The kernel's side of a
change is incremental: a task starting or stopping moves its port between two sets (one per
task count) and rewrites its tasks, in one transaction (firewall/manager.py); the pass that
computes the ports (`wanted`) still walks every service.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING

from tether.api.networks import NetworkCreate
from tether.drivers.overlay import bridge_name
from tether.errors import Conflict, TetherError
from tether.events import ClusterEndpoints, ClusterNetwork, EventBus
from tether.firewall.render import IngressPort
from tether.model import Network, RemoteEndpoint

if TYPE_CHECKING:
    from tether.cluster.services import Service, Services
    from tether.cluster.state import ClusterStore
    from tether.drivers.overlay import OverlayDriver
    from tether.engine.networks import Networks
    from tether.firewall.manager import Firewall

log = logging.getLogger("tether.ingress")

INGRESS = "ingress"  # the network's name, as swarm's
DEBOUNCE = 0.005


def ingress_ports(svc: Service) -> list[tuple[str, int, int]]:
    """(protocol, published port, target port) of the service's ingress-mode ports."""
    return [
        (str(p["Protocol"]), int(p["PublishedPort"]), int(p["TargetPort"]))
        for p in svc.ports
        if p.get("PublishMode") == "ingress" and p.get("PublishedPort")
    ]


def endpoint_id(node: str) -> str:
    """This node's endpoint on the ingress network: derived from its name, so a restarted
    daemon finds (and keeps) the one it had."""
    return hashlib.sha256(f"tether-ingress-endpoint:{node}".encode()).hexdigest()


async def ensure_network(networks: Networks) -> Network:
    """The ingress network, made on first need (swarm makes it at `swarm init`): an overlay
    with --ingress.  Two nodes racing both get the one that won."""
    for net in networks.by_id.values():
        if net.ingress:
            return net
    try:
        return await networks.create(
            NetworkCreate(Name=INGRESS, Driver="overlay", Ingress=True, Labels={})
        )
    except Conflict:
        for net in networks.by_id.values():
            if net.ingress:
                return net
        raise


class Mesh:
    def __init__(
        self,
        cluster: ClusterStore,
        services: Services,
        networks: Networks,
        overlay: OverlayDriver,
        firewall: Firewall,
        events: EventBus,
    ) -> None:
        self.cluster = cluster
        self.services = services
        self.networks = networks
        self.overlay = overlay
        self.firewall = firewall
        self.endpoint_id = endpoint_id(cluster.node.name)
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_pass_ms = 0.0
        services.listeners.append(self._kick.set)
        events.subscribe(ClusterEndpoints, lambda e: self._kick.set())
        events.subscribe(ClusterNetwork, lambda e: self._kick.set())

    def kick(self) -> None:
        self._kick.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._kick.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def network(self) -> Network | None:
        return next((n for n in self.networks.by_id.values() if n.ingress), None)

    def wanted(self, net: Network) -> list[IngressPort]:
        """Each ingress port of every service, over the service's tasks on `net`."""
        # The endpoints grouped by service once (not walked per service: 10,000 services
        # made that 10,000 walks of every task's endpoint).
        tasks: dict[str, list[str]] = {}
        for ep in self.cluster.endpoints.get(net.id, {}).values():
            if ep.service and ep.ipv4:
                tasks.setdefault(ep.service, []).append(ep.ipv4)
        out = []
        for svc in sorted(self.services.by_id.values(), key=lambda s: s.id):
            ports = ingress_ports(svc)
            if not ports:
                continue
            ips = sorted(tasks.get(svc.id, ()))
            for proto, published, target in ports:
                backends = tuple((ip, target) for ip in ips)
                out.append(IngressPort(proto, published, backends))
        return out

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            await asyncio.sleep(DEBOUNCE)
            self._kick.clear()
            try:
                await self.converge()
            except asyncio.CancelledError:
                raise
            except TetherError as exc:
                log.warning("routing mesh not converged: %s", exc.message)
                await asyncio.sleep(0.5)
                self._kick.set()
            except Exception:
                log.exception("routing mesh pass failed")
                await asyncio.sleep(0.5)
                self._kick.set()

    async def converge(self) -> None:
        """This node's address on the ingress network while any service publishes through
        it, and the DNAT of every published port to the tasks that run now."""
        net = self.network()
        ports = self.wanted(net) if net is not None else []
        needed = net is not None and bool(ports)
        mine = self.cluster.endpoints.get(net.id, {}).get(self.endpoint_id) if net else None
        if needed and self.cluster.connected.is_set():
            assert net is not None
            if mine is None or mine.vtep != self.cluster.node.addr:
                mine = await self._claim(net, mine)
            prefix = net.pools_of(4)[0].prefixlen
            if await self.overlay.set_host_address(net, f"{mine.ipv4}/{prefix}", mine.mac):
                log.info("routing mesh address on %s: %s", net.name, mine.ipv4)
        elif not needed:
            if net is not None and mine is not None and self.cluster.connected.is_set():
                await self.cluster.release_endpoint(net.id, mine)
                log.info("routing mesh address on %s given back", net.name)
            if net is not None:
                await self.overlay.clear_host_address(net)
        started = asyncio.get_running_loop().time()
        if self.firewall.set_ingress(ports if needed else []):
            self.last_pass_ms = (asyncio.get_running_loop().time() - started) * 1000
            log.info(
                "routing mesh programmed ports=%d backends=%d",
                len(ports),
                sum(len(p.backends) for p in ports),
            )

    async def _claim(self, net: Network, held: RemoteEndpoint | None) -> RemoteEndpoint:
        from tether.engine.endpoints import lowest_free

        if held is not None:
            # Back with another advertise address: every node sends its frames there now.
            held.vtep = self.cluster.node.addr
            await self.cluster.update_endpoint(net, held)
            return held
        remote = RemoteEndpoint(
            id=self.endpoint_id,
            network=net.id,
            node=self.cluster.node.name,
            vtep=self.cluster.node.addr,
            container="",
            name="",
        )
        pool = net.pools_of(4)[0]
        # The address the bridge still has (a restart after the lease expired) if it is free.
        have = self.overlay.rtnl.addresses()
        link = await self.overlay.rtnl.link(bridge_name(net))
        previous = ""
        if link is not None:
            for cidr in have.get(link.index, set()):
                previous = cidr.split("/")[0]
        if previous:
            try:
                return await self.cluster.claim_endpoint(net, remote, None, previous, "", None)
            except Conflict:
                remote.mac = ""
        return await self.cluster.claim_endpoint(net, remote, lowest_free(pool), "", "", None)
