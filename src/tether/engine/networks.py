"""Network operations: create, find, list, inspect, remove, prune, and the predefined three.

Every change follows one order: validate (pure) -> write the intent to the store in one
transaction -> apply to the kernel -> on a kernel failure, undo the store.  A crash between
the store and the kernel is repaired by the reconciler at the next start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.api.networks import NetworkCreate
from tether.drivers.base import NetworkDriver
from tether.drivers.registry import DriverRegistry
from tether.engine import filters as flt
from tether.engine import netcreate
from tether.errors import ClaimTaken, Forbidden, InvalidParameter, NotFound, SubnetTaken
from tether.events import EventBus, NetworkCreated, NetworkRemoved

if TYPE_CHECKING:
    from tether.cluster.state import ClusterStore
from tether.ipam.addresses import default_gateway
from tether.ipam.manager import Ipam
from tether.ipam.pools import PoolSpec, pick_subnet
from tether.kernel.rtnl import Rtnl
from tether.model import Network, Pool
from tether.netmodes import DEFAULT_DRIVER, GATEWAY_BRIDGE, GATEWAY_BRIDGE_OPTIONS, PREDEFINED
from tether.store import records
from tether.store.sqlite import Store

log = logging.getLogger("tether.networks")

NETWORK_FILTERS = {"driver", "id", "label", "name", "scope", "type", "dangling"}


# Docker's global-scope default pool: 10.0.0.0/8 cut into /24s (overlay networks).
GLOBAL_POOLS = [PoolSpec(ipaddress.ip_network("10.0.0.0/8"), 24)]
# How often a global create may lose a race for a subnet or VXLAN id before giving up.
GLOBAL_CREATE_ATTEMPTS = 16


class Networks:
    def __init__(
        self,
        store: Store,
        ipam: Ipam,
        rtnl: Rtnl,
        drivers: DriverRegistry,
        default_pools: list[PoolSpec],
        lock: asyncio.Lock,
        events: EventBus,
        containers_of: Callable[[Network], dict[str, Any]],
        cluster: ClusterStore | None = None,
        in_use: Callable[[Network], bool] | None = None,
    ) -> None:
        self.store = store
        self.ipam = ipam
        self.rtnl = rtnl
        self.drivers = drivers
        self.default_pools = default_pools
        self.lock = lock
        self.events = events
        self.by_id: dict[str, Network] = {}
        # Endpoints per network (the container side knows them): inspect, rm and prune.
        self.containers_of = containers_of
        # Whether any container holds an endpoint on a network (rm and prune): also one
        # that is still starting, whose endpoints exist before its process runs.
        self.in_use = in_use or (lambda net: bool(containers_of(net)))
        # The cluster store (global networks), or None: a single host.
        self.cluster = cluster

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        loaded = records.parse_all("network", self.store.load("network"), records.network)
        self.by_id = {n.id: n for n in loaded}

    async def ensure_predefined(self) -> None:
        """First start: the predefined networks (the default bridge on 172.17.0.0/16 unless a
        host route overlaps it, host, none)."""
        names = {n.name for n in self.by_id.values()}
        for name, driver_name in PREDEFINED.items():
            if name in names:
                continue
            driver = self.drivers.of(driver_name)
            pool = None
            if driver.caps.endpoints:
                routes = self.rtnl.route_destinations()
                taken = [p.network for n in self.by_id.values() for p in n.pools]
                subnet = pick_subnet(self.default_pools, 4, taken, routes, None)
                pool = Pool(subnet=str(subnet), gateway=str(default_gateway(subnet, None)))
            net = netcreate.predefined(name, driver, driver.predefined_options(name), pool)
            with self.store.transaction():
                self.store.put("network", net.id, net.name, net.to_doc())
                if pool is not None:
                    self.store.set_meta("pool_cursor_4", pool.subnet)
                    self.ipam.add_network(net, [(pool.gateway, "gateway")])
            self.by_id[net.id] = net
            log.info("created predefined network name=%s id=%s", net.name, net.id[:12])

    # -- lookups -------------------------------------------------------------------------

    def find(self, term: str) -> Network:
        """Docker's FindNetwork: full id, then exact name, then unique id prefix."""
        net = self.by_id.get(term)
        if net is not None:
            return net
        named = [n for n in self.by_id.values() if n.name == term]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise InvalidParameter(
                f"network {term} is ambiguous ({len(named)} matches found based on name)"
            )
        if term:
            prefixed = [n for n in self.by_id.values() if n.id.startswith(term)]
            if len(prefixed) == 1:
                return prefixed[0]
            if len(prefixed) > 1:
                raise InvalidParameter(
                    f"network {term} is ambiguous ({len(prefixed)} matches found based on ID prefix)"
                )
        raise NotFound(f"network {term} not found")

    def inspect(self, net: Network) -> dict[str, Any]:
        return net.to_api(self.containers_of(net))

    def query(self, filters: flt.Filters) -> list[dict[str, Any]]:
        flt.check_keys(filters, NETWORK_FILTERS)
        types = filters.get("type", [])
        for t in types:
            if t not in ("custom", "builtin"):
                raise InvalidParameter(f"invalid filter: 'type'='{t}'")
        dangling = flt.bool_value(filters, "dangling")
        out = []
        for net in self.by_id.values():
            if "name" in filters and not flt.regex_match(filters["name"], net.name):
                continue
            if "id" in filters and not flt.regex_match(filters["id"], net.id):
                continue
            if "driver" in filters and net.driver not in filters["driver"]:
                continue
            if "scope" in filters and net.scope not in filters["scope"]:
                continue
            if "label" in filters and not flt.label_match(filters["label"], net.labels):
                continue
            if types:
                kind = "builtin" if net.predefined else "custom"
                if kind not in types:
                    continue
            if dangling is not None:
                unused = not net.predefined and not self.containers_of(net)
                if unused != dangling:
                    continue
            out.append(self.inspect(net))
        return out

    # -- changes -------------------------------------------------------------------------

    async def create(self, req: NetworkCreate) -> Network:
        """A network from a request already checked at the API edge (tether.api)."""
        async with self.lock:
            return await self._create(req)

    async def _create(self, req: NetworkCreate) -> Network:
        driver = self.drivers.get(req.Driver or DEFAULT_DRIVER)
        if driver.caps.scope == "global":
            return await self._create_global(req, driver)
        existing = list(self.by_id.values())
        cursors = {
            v: c for v in (4, 6) if (c := self.store.get_meta(f"pool_cursor_{v}")) is not None
        }
        configs = (req.IPAM.Config if req.IPAM else None) or []
        has_v4 = any(c.Subnet and ":" not in c.Subnet for c in configs)
        has_v6 = any(c.Subnet and ":" in c.Subnet for c in configs)
        needs_pool = driver.caps.endpoints and (not has_v4 or (bool(req.EnableIPv6) and not has_v6))
        routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        if needs_pool:
            routes = self.rtnl.route_destinations(self._own_routes())
        resolved = netcreate.resolve(req, driver, existing, routes, self.default_pools, cursors)
        net = resolved.network
        await driver.check_kernel(net)
        with self.store.transaction():
            self.store.put("network", net.id, net.name, net.to_doc())
            for version, cursor in resolved.cursors.items():
                self.store.set_meta(f"pool_cursor_{version}", cursor)
            self.ipam.add_network(net, resolved.reservations)
        self.by_id[net.id] = net
        try:
            await driver.create(net)
        except Exception:
            self._forget(net)
            raise
        log.info(
            "network created name=%s id=%s driver=%s subnets=%s",
            net.name,
            net.id[:12],
            net.driver,
            ",".join(p.subnet for p in net.pools) or "-",
        )
        self.events.publish(NetworkCreated(net))
        return net

    async def _create_global(self, req: NetworkCreate, driver: NetworkDriver) -> Network:
        """A network every node has: claimed in the cluster store (name, subnet, VXLAN id in
        one transaction), then made here; the other nodes make theirs from the store."""
        assert self.cluster is not None  # the registry serves global drivers only then
        self.cluster.require()
        routes = self.rtnl.route_destinations(self._own_routes())
        lost: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        lost_claims: set[str] = set()
        for _ in range(GLOBAL_CREATE_ATTEMPTS):
            existing = [*self.by_id.values(), *self.cluster.networks.values()]
            existing = list({n.id: n for n in existing}.values())
            resolved = netcreate.resolve(req, driver, existing, [*routes, *lost], GLOBAL_POOLS, {})
            net = resolved.network
            # What must be unique across the cluster besides name and subnets (a VXLAN id):
            # the driver picks it, and refuses a value the user asked for that is taken.
            driver.assign(net, self.cluster.claimed() | lost_claims)
            try:
                await self.cluster.create_network(net, resolved.reservations, driver.claims(net))
            except SubnetTaken:
                if req.IPAM and req.IPAM.Config:
                    raise
                lost.extend(p.network for p in net.pools)  # another node was first
                continue
            except ClaimTaken as exc:
                lost_claims.add(exc.claim)
                continue
            await self.adopt(net)
            log.info(
                "network created name=%s id=%s driver=%s scope=global subnets=%s vni=%s",
                net.name,
                net.id[:12],
                net.driver,
                ",".join(p.subnet for p in net.pools),
                net.driver_state.get("vni"),
            )
            return net
        raise Forbidden("could not claim a free subnet: too much contention")

    async def gateway_bridge(self) -> Network:
        """The local network that gives containers on overlays their way out (Docker's
        docker_gwbridge): made the first time one needs it, ICC off, masquerading."""
        async with self.lock:
            for net in self.by_id.values():
                if net.name == GATEWAY_BRIDGE:
                    return net
            req = NetworkCreate(Name=GATEWAY_BRIDGE, Options=dict(GATEWAY_BRIDGE_OPTIONS))
            return await self._create(req)

    async def adopt(self, net: Network) -> None:
        """A global network (made here, or seen in the cluster store): kept in the local
        store as a cache (so a restart without the store still knows it), and made in this
        node's kernel."""
        old = self.by_id.get(net.id)
        if old is not None and old.to_doc() == net.to_doc():
            return
        with self.store.transaction():
            self.store.put("network", net.id, None, net.to_doc())
        self.by_id[net.id] = net
        try:
            await self.drivers.of(net.driver).create(net)
        except Exception as exc:  # the reconciler tries again
            log.warning("network %s: kernel objects not made: %s", net.name, exc)
        if old is None:
            self.events.publish(NetworkCreated(net))

    async def drop(self, net: Network) -> None:
        """A global network is gone from the cluster store: gone here too."""
        if self.by_id.pop(net.id, None) is None:
            return
        with self.store.transaction():
            self.store.delete("network", net.id)
        try:
            await self.drivers.of(net.driver).delete(net)
        except Exception as exc:
            log.warning("network %s: kernel objects not removed: %s", net.name, exc)
        log.info("network removed name=%s id=%s scope=global", net.name, net.id[:12])
        self.events.publish(NetworkRemoved(net))

    def _own_routes(self) -> set[tuple[bytes, int]]:
        """Our networks' own subnets, which the pool picker checks anyway."""
        return {
            (p.network.network_address.packed, p.prefixlen)
            for n in self.by_id.values()
            for p in n.pools
        }

    def _forget(self, net: Network) -> None:
        with self.store.transaction():
            self.store.delete("network", net.id)
            self.ipam.remove_network(net.id)
        self.by_id.pop(net.id, None)

    async def remove(self, term: str) -> None:
        async with self.lock:
            net = self.find(term)
            await self._remove(net)

    async def _remove(self, net: Network) -> None:
        if net.predefined:
            raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        if self.in_use(net):
            raise Forbidden(
                f"error while removing network: network {net.name} id {net.id} has active endpoints"
            )
        if net.scope == "global":
            if self.cluster is None:
                raise Forbidden(f"network {net.name} is global: this daemon has no cluster store")
            driver = self.drivers.of(net.driver)
            # Only while no node has endpoints on it (a range compare in the transaction).
            await self.cluster.delete_network(net, driver.claims(net))
            await self.drop(net)
            return
        self._forget(net)
        try:
            await self.drivers.of(net.driver).delete(net)
        except Exception as exc:  # the reconciler removes what is left
            log.warning("network %s: kernel objects not removed: %s", net.name, exc)
        log.info("network removed name=%s id=%s", net.name, net.id[:12])
        self.events.publish(NetworkRemoved(net))

    async def prune(self, filters: flt.Filters) -> list[str]:
        flt.check_keys(filters, {"label", "label!", "until"})
        deleted: list[str] = []
        async with self.lock:
            for net in list(self.by_id.values()):
                if net.predefined or self.in_use(net):
                    continue
                if "label" in filters and not flt.label_match(filters["label"], net.labels):
                    continue
                if "label!" in filters and flt.label_match(filters["label!"], net.labels):
                    continue
                if "until" in filters and not _created_before(net.created, filters["until"][-1]):
                    continue
                await self._remove(net)
                deleted.append(net.name)
        return deleted


def _created_before(created: str, until: str) -> bool:
    from datetime import datetime, timedelta

    try:
        ts = datetime.fromisoformat(created)
    except ValueError:
        return True
    now = datetime.now(ts.tzinfo)
    text = until.strip()
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units and text[:-1].isdigit():
        return ts <= now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        limit = datetime.fromisoformat(text)
        if limit.tzinfo is None:
            limit = limit.replace(tzinfo=ts.tzinfo)
        return ts <= limit
    except ValueError:
        raise InvalidParameter(f"Cannot parse until filter: {until}") from None
