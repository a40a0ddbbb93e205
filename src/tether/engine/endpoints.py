"""Endpoints: a container's attachments to networks (libnetwork's endpoint and sandbox halves).

Allocate (IPAM, recorded in the store with the names of the kernel objects to be) -> join (the
network's driver makes the interface inside the sandbox) -> the default route -> leave and
release.  The driver is always asked through the registry; nothing here knows what a bridge
or a macvlan port is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from tether.drivers.base import NetworkDriver, Sandbox
from tether.drivers.registry import DriverRegistry
from tether.engine.sandbox import Sandboxes, gateway_endpoint
from tether.errors import Forbidden, NotFound, TetherError
from tether.ipam.addresses import SubnetPool, mac_from_ipv4, random_mac
from tether.ipam.manager import Ipam
from tether.kernel.rtnl import Rtnl
from tether.model import Container, Endpoint, EndpointConfig, Network, Pool, RemoteEndpoint
from tether.store.sqlite import Store
from tether.undo import Undo

if TYPE_CHECKING:
    from tether.cluster.state import ClusterStore

log = logging.getLogger("tether.endpoints")

# (network name, what the user asked for, the network) for each endpoint to make.
Plan = list[tuple[str, EndpointConfig, Network]]


def service_of(c: Container) -> str:
    """The service a task's container belongs to (swarm's label), or ""."""
    return str((c.config.get("Labels") or {}).get("com.docker.swarm.service.id") or "")


def user_defined(net: Network | None) -> bool:
    """Docker's user-defined network: any but the predefined ones (only those get aliases,
    --ip and the embedded DNS)."""
    return net is not None and not net.predefined


def check_endpoint_rules(net: Network, cfg: EndpointConfig) -> None:
    """Docker's rules for --ip/--ip6 and aliases, checked before anything is allocated."""
    if (cfg.ipv4 or cfg.ipv6) and not user_defined(net):
        raise Forbidden("user specified IP address is supported on user defined networks only")
    if cfg.ipv4 and (not net.user_subnets or not net.pools_of(4)):
        raise Forbidden(
            "user specified IP address is supported only when connecting to networks with user configured subnets"
        )
    if cfg.ipv6 and (not net.enable_ipv6 or not net.pools_of(6)):
        raise Forbidden(
            "user specified IP address is supported only when connecting to networks with user configured subnets"
        )
    if cfg.aliases and not user_defined(net):
        raise Forbidden(
            "network-scoped alias is supported only for containers in user defined networks"
        )


class Endpoints:
    def __init__(
        self,
        store: Store,
        ipam: Ipam,
        drivers: DriverRegistry,
        network_of: Callable[[str], Network | None],
        find_network: Callable[[str], Network],
        sandboxes: Sandboxes,
        host: Rtnl,
        lock: asyncio.Lock,
        cluster: ClusterStore | None = None,
    ) -> None:
        self.store = store
        self.ipam = ipam
        self.drivers = drivers
        self.network_of = network_of
        self.find_network = find_network
        self.sandboxes = sandboxes
        self.host = host
        self.lock = lock  # the daemon's lock: allocations and network changes
        # The cluster store (endpoints of global networks), or None: a single host.
        self.cluster = cluster

    def driver(self, net: Network) -> NetworkDriver:
        return self.drivers.of(net.driver)

    def has_endpoints(self, net: Network) -> bool:
        """False for the network modes (host, none): a container on them gets no interface."""
        return self.driver(net).caps.endpoints

    # -- plan and allocate ---------------------------------------------------------------

    def resolve(self, c: Container) -> Plan:
        """The networks to attach, resolved and checked (no changes made)."""
        plan: Plan = []
        renamed: dict[str, EndpointConfig] = {}
        for name, cfg in c.networks.items():
            net = self.network_of(cfg.network_id) if cfg.network_id else None
            if net is None:
                try:
                    net = self.find_network(name)
                except NotFound:
                    raise NotFound(f"network {name} not found") from None
            if not self.has_endpoints(net):
                renamed[net.name] = cfg
                continue
            check_endpoint_rules(net, cfg)
            cfg.network_id = net.id
            renamed[net.name] = cfg
            plan.append((net.name, cfg, net))
        c.networks = renamed
        return plan

    def next_ifname(self, c: Container) -> str:
        """eth0, eth1, ...: never reused while the container runs."""
        name = f"eth{c.next_if}"
        c.next_if += 1
        return name

    def allocate(
        self,
        c: Container,
        net: Network,
        cfg: EndpointConfig,
        taken: list[tuple[str, str]],
        ifname: str,
    ) -> Endpoint:
        """Addresses and names for one endpoint of a local network, inside the caller's
        store transaction.

        Each address is appended to `taken` as (network id, address): if the transaction
        rolls back, the caller hands them to `forget`, which drops them from memory only.
        """
        ep_id = secrets.token_hex(32)
        ep = Endpoint(id=ep_id, network_id=net.id, ifname=ifname, host_ifname="", mac="")
        routes = self.driver(net).caps.default_route
        v4 = net.pools_of(4)
        if v4:
            addr = self.ipam.request(net, 4, cfg.ipv4 or None, ep_id)
            taken.append((net.id, str(addr)))
            ep.ipv4 = f"{addr}/{v4[0].prefixlen}"
            ep.gateway4 = v4[0].gateway if routes else ""
        v6 = net.pools_of(6)
        if v6 and net.enable_ipv6:
            addr6 = self.ipam.request(net, 6, cfg.ipv6 or None, ep_id)
            taken.append((net.id, str(addr6)))
            ep.ipv6 = f"{addr6}/{v6[0].prefixlen}"
            ep.gateway6 = v6[0].gateway if routes else ""
        ep.mac = cfg.mac or (mac_from_ipv4(ep.ipv4.split("/")[0]) if ep.ipv4 else random_mac())
        self.driver(net).prepare_endpoint(net, ep)
        return ep

    def needs_gateway_bridge(self, plan: Plan) -> bool:
        """A container whose only ways out are networks without a default route of their
        own (overlays) gets one more endpoint, on the local gateway bridge."""
        outside = [net for _n, _c, net in plan if not net.internal]
        return bool(outside) and not any(self.driver(n).caps.default_route for n in outside)

    @staticmethod
    def is_global(net: Network) -> bool:
        return net.scope == "global"

    async def claim_global(
        self, c: Container, net: Network, cfg: EndpointConfig, ifname: str
    ) -> Endpoint:
        """An endpoint of a global network: its addresses and its record claimed in the
        cluster store in one transaction (so no two nodes ever hold one address); every
        other node learns of it from the store's watch."""
        if self.cluster is None:
            raise Forbidden(f"network {net.name} is global: this daemon has no cluster store")
        ep_id = secrets.token_hex(32)
        hostname = str(c.config.get("Hostname") or "")
        remote = RemoteEndpoint(
            id=ep_id,
            network=net.id,
            node=self.cluster.node.name,
            vtep=self.cluster.node.addr,
            container=c.id,
            name=c.name,
            hostname="" if hostname == c.short_id else hostname,
            aliases=list(cfg.aliases),
            mac=cfg.mac,
            service=service_of(c),
        )
        v4 = net.pools_of(4)
        v6 = net.pools_of(6) if net.enable_ipv6 else []
        remote = await self.cluster.claim_endpoint(
            net,
            remote,
            lowest_free(v4[0]) if v4 else None,
            cfg.ipv4,
            cfg.ipv6,
            lowest_free(v6[0]) if v6 else None,
        )
        routes = self.driver(net).caps.default_route
        ep = Endpoint(id=ep_id, network_id=net.id, ifname=ifname, host_ifname="", mac=remote.mac)
        if remote.ipv4:
            ep.ipv4 = f"{remote.ipv4}/{v4[0].prefixlen}"
            ep.gateway4 = v4[0].gateway if routes else ""
        if remote.ipv6:
            ep.ipv6 = f"{remote.ipv6}/{v6[0].prefixlen}"
            ep.gateway6 = v6[0].gateway if routes else ""
        self.driver(net).prepare_endpoint(net, ep)
        return ep

    async def release_global(self, c: Container, eps: list[Endpoint]) -> None:
        """Withdraw endpoints of global networks from the cluster (before the local record
        goes).  With the store down this is left to the sweep (reconcile), which withdraws
        this node's endpoints that no container has."""
        if self.cluster is None:
            return
        for ep in eps:
            net = self.network_of(ep.network_id)
            if net is None or not self.is_global(net):
                continue
            try:
                await self.cluster.release_endpoint(net.id, self.remote_of(c, ep))
            except TetherError as exc:
                log.warning("endpoint %s not withdrawn yet: %s", ep.id[:12], exc.message)

    def remote_of(self, c: Container, ep: Endpoint) -> RemoteEndpoint:
        """A local endpoint of a global network as the cluster store records it."""
        assert self.cluster is not None
        cfg = next((x for x in c.networks.values() if x.network_id == ep.network_id), None)
        hostname = str(c.config.get("Hostname") or "")
        return RemoteEndpoint(
            id=ep.id,
            network=ep.network_id,
            node=self.cluster.node.name,
            vtep=self.cluster.node.addr,
            container=c.id,
            name=c.name,
            hostname="" if hostname == c.short_id else hostname,
            aliases=list(cfg.aliases) if cfg else [],
            ipv4=ep.ipv4.split("/")[0] if ep.ipv4 else "",
            ipv6=ep.ipv6.split("/")[0] if ep.ipv6 else "",
            mac=ep.mac,
            service=service_of(c),
        )

    def forget(self, taken: list[tuple[str, str]]) -> None:
        """The transaction that held these addresses rolled back: free them in memory."""
        for net_id, addr in taken:
            self.ipam.forget_memory(net_id, addr)

    def release(self, ep: Endpoint) -> None:
        """Give the endpoint's addresses back (inside the caller's store transaction)."""
        self.ipam.release_owner(ep.id)

    # -- kernel ----------------------------------------------------------------------------

    async def join(self, c: Container, net: Network, ep: Endpoint, inner: Rtnl) -> None:
        await self.driver(net).join(net, ep, Sandbox(c.sandbox_key, inner))

    async def leave(self, c: Container, ep: Endpoint) -> None:
        """Remove one endpoint's interface, also when the namespace is deleted next: the
        kernel frees a namespace's interfaces only once nothing holds it, in a worker, so
        "deleted with the namespace" is not "deleted now" (a macvlan port with a MAC the
        next endpoint needs must be gone when the address is given back)."""
        net = self.network_of(ep.network_id)
        if net is None:
            # The network is gone from the store: the host end, if any, is swept by name.
            if ep.host_ifname:
                await self.host.delete_in_thread(name=ep.host_ifname)
            return
        await self.driver(net).leave(net, ep, c.sandbox_key or None)

    async def build_sandbox(self, c: Container, plan: Plan) -> None:
        """The namespace, every planned endpoint in it, and the default route."""
        if not c.sandbox_key or not c.sandbox_key.startswith(self.sandboxes.dir):
            return
        await self.sandboxes.create(c)
        if not plan:
            return
        inner = self.sandboxes.open(c)
        try:
            for name, _cfg, net in plan:
                await self.join(c, net, c.endpoints[name], inner)
            await self.sandboxes.set_gateway(c, inner, gateway_endpoint(c, self.network_of))
        finally:
            inner.close()

    async def destroy_sandbox(self, c: Container) -> None:
        """Every endpoint's interface, then the namespace.  Idempotent."""
        await asyncio.gather(*(self.leave(c, ep) for ep in c.endpoints.values()))
        if c.sandbox_key and c.sandbox_key.startswith(self.sandboxes.dir):
            self.sandboxes.delete(c)

    async def connect(self, c: Container, net: Network, cfg: EndpointConfig) -> Endpoint:
        """Attach a running container to one more network: store first, then the kernel."""
        async with Undo() as undo:
            async with self.lock:
                if self.network_of(net.id) is None:  # removed while we waited
                    raise NotFound(f"network {net.name} not found")
                taken: list[tuple[str, str]] = []
                ifname = self.next_ifname(c)
                claimed = None
                if self.is_global(net):
                    claimed = await self.claim_global(c, net, cfg, ifname)
                    undo.push(lambda: self.release_global(c, [claimed]), "cluster claim")
                try:
                    with self.store.transaction():
                        ep = claimed or self.allocate(c, net, cfg, taken, ifname)
                        c.networks[net.name] = cfg
                        c.endpoints[net.name] = ep
                        self.store.put("container", c.id, c.name, c.to_doc())
                except BaseException:
                    self.forget(taken)
                    c.networks.pop(net.name, None)
                    c.endpoints.pop(net.name, None)
                    raise

            async def unrecord() -> None:
                async with self.lock:
                    with self.store.transaction():
                        self.release(ep)
                        c.networks.pop(net.name, None)
                        c.endpoints.pop(net.name, None)
                        self.store.put("container", c.id, c.name, c.to_doc())

            undo.push(unrecord, "endpoint record")
            undo.push(lambda: self.leave(c, ep), "endpoint interface")
            inner = self.sandboxes.open(c)
            try:
                await self.join(c, net, ep, inner)
                await self.sandboxes.set_gateway(c, inner, gateway_endpoint(c, self.network_of))
            finally:
                inner.close()
        return ep

    async def disconnect(self, c: Container, name: str) -> Endpoint | None:
        ep = c.endpoints.get(name)
        if ep is not None:
            await self.leave(c, ep)
            await self.release_global(c, [ep])
        async with self.lock:
            with self.store.transaction():
                if ep is not None:
                    self.release(ep)
                c.networks.pop(name, None)
                c.endpoints.pop(name, None)
                self.store.put("container", c.id, c.name, c.to_doc())
        if c.state.running and c.sandbox_key:
            await self.sandboxes.set_gateway(c, None, gateway_endpoint(c, self.network_of))
        return ep

    async def repair(self, c: Container) -> bool:
        """Rebuild endpoints of a running container whose kernel objects are gone (after a
        restart, or someone deleting links).  Returns whether anything was rebuilt."""
        if not c.endpoints or not c.sandbox_key or not os.path.exists(c.sandbox_key):
            return False
        host_links = {link.name: link for link in self.host.links()}
        inner = self.sandboxes.open(c)
        try:
            missing = []
            for name, ep in c.endpoints.items():
                net = self.network_of(ep.network_id)
                if net is None:
                    continue
                if not await self.driver(net).endpoint_present(net, ep, host_links, inner):
                    missing.append((name, ep, net))
            for name, ep, net in missing:
                stale = await inner.index(ep.ifname)
                if stale is not None:
                    await inner.delete(stale)
                await self.join(c, net, ep, inner)
                log.info("endpoint rebuilt container=%s network=%s", c.name, name)
            if missing:
                c.gateway = ""  # the rebuilt link lost its routes: set them again
                await self.sandboxes.set_gateway(c, inner, gateway_endpoint(c, self.network_of))
            return bool(missing)
        finally:
            inner.close()

    # -- views -----------------------------------------------------------------------------

    def port_target(self, c: Container) -> tuple[str, str]:
        """(container address, endpoint id) that published ports lead to: the gateway
        endpoint's, when its network's driver publishes ports.

        As in Docker, ports are programmed on the endpoint that has external connectivity;
        a container whose gateway is on an --internal network publishes nothing (silently).
        """
        gw = gateway_endpoint(c, self.network_of)
        if gw is None or not gw.ipv4:
            return "", ""
        net = self.network_of(gw.network_id)
        if net is None or net.internal or not self.driver(net).caps.publishes_ports:
            return "", ""
        return gw.ipv4.split("/")[0], gw.id

    def default_host_ip(self, c: Container) -> str:
        """Where `-p` without a host address binds, as the network that publishes the
        container's ports says (Docker's host_binding_ipv4); "" for 0.0.0.0 and ::."""
        gw = gateway_endpoint(c, self.network_of)
        net = self.network_of(gw.network_id) if gw is not None else None
        return self.driver(net).default_host_ip(net) if net is not None else ""

    def embedded_dns(self, c: Container) -> bool:
        return any(
            user_defined(net) and self.driver(net).caps.embedded_dns
            for ep in c.endpoints.values()
            if (net := self.network_of(ep.network_id)) is not None
        )


def lowest_free(pool: Pool) -> Callable[[set[str]], str | None]:
    """For a global network's pool: the lowest address not in `taken` (Docker's order: the
    first of the ip-range, never the network or broadcast address)."""
    import ipaddress

    subnet = pool.network
    ip_range = ipaddress.ip_network(pool.ip_range) if pool.ip_range else None

    def pick(taken: set[str]) -> str | None:
        held = set()
        for text in taken:
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                continue
            if addr.version == subnet.version and addr in subnet:
                held.add(int(addr))
        try:
            return str(SubnetPool(subnet, ip_range, held).allocate())
        except TetherError:
            return None

    return pick
