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
from typing import Any

from tether.api.networks import NetworkCreate
from tether.drivers.bridge import BridgeDriver
from tether.engine import filters as flt
from tether.engine import netcreate
from tether.errors import Forbidden, InvalidParameter, NotFound
from tether.ipam.manager import Ipam
from tether.ipam.pools import PoolSpec, pick_subnet
from tether.kernel.rtnl import Rtnl
from tether.model import PREDEFINED, Network
from tether.store import records
from tether.store.sqlite import Store

log = logging.getLogger("tether.networks")

NETWORK_FILTERS = {"driver", "id", "label", "name", "scope", "type", "dangling"}


class Networks:
    def __init__(
        self,
        store: Store,
        ipam: Ipam,
        rtnl: Rtnl,
        default_pools: list[PoolSpec],
        lock: asyncio.Lock,
    ) -> None:
        self.store = store
        self.ipam = ipam
        self.rtnl = rtnl
        self.bridge = BridgeDriver(rtnl)
        self.default_pools = default_pools
        self.lock = lock
        self.by_id: dict[str, Network] = {}
        # Filled in by the container side: endpoints per network for inspect and rm checks.
        self.containers_of: Callable[[Network], dict[str, Any]] = lambda net: {}
        # Called after every change that the firewall must follow.
        self.on_change: Callable[[], None] = lambda: None

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        loaded = records.parse_all("network", self.store.load("network"), records.network)
        self.by_id = {n.id: n for n in loaded}

    async def ensure_predefined(self) -> None:
        """First start: create bridge (172.17.0.0/16 unless a host route overlaps), host, none."""
        names = {n.name for n in self.by_id.values()}
        if all(p in names for p in PREDEFINED):
            return
        created: list[Network] = []
        if "bridge" not in names:
            routes = self.rtnl.route_destinations()
            taken = [p.network for n in self.by_id.values() for p in n.pools]
            subnet = pick_subnet(self.default_pools, 4, taken, routes, None)
            net = netcreate.predefined("bridge", "bridge", subnet)
            with self.store.transaction():
                self.store.put("network", net.id, net.name, net.to_doc())
                self.store.set_meta("pool_cursor_4", str(subnet))
                self.ipam.add_network(net, [(net.pools[0].gateway, "gateway")])
            created.append(net)
        for name, driver in (("host", "host"), ("none", "null")):
            if name not in names:
                net = netcreate.predefined(name, driver)
                with self.store.transaction():
                    self.store.put("network", net.id, net.name, net.to_doc())
                created.append(net)
        for net in created:
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
        existing = list(self.by_id.values())
        cursor4 = self.store.get_meta("pool_cursor_4")
        configs = (req.IPAM.Config if req.IPAM else None) or []
        has_v4 = any(c.Subnet and ":" not in c.Subnet for c in configs)
        needs_pool = (req.Driver or "bridge") == "bridge" and not has_v4
        routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        if needs_pool:
            routes = self.rtnl.route_destinations(self._own_routes())
        resolved = netcreate.resolve(
            req, existing, routes, self.default_pools, {4: cursor4} if cursor4 else {}
        )
        net = resolved.network
        if net.driver == "bridge":
            net.bridge_external = await self.bridge.check_name(net)
        with self.store.transaction():
            self.store.put("network", net.id, net.name, net.to_doc())
            for version, cursor in resolved.cursors.items():
                self.store.set_meta(f"pool_cursor_{version}", cursor)
            self.ipam.add_network(net, resolved.reservations)
        self.by_id[net.id] = net
        if net.driver == "bridge":
            try:
                await self.bridge.create(net)
            except Exception:
                self._forget(net)
                raise
        log.info(
            "network created name=%s id=%s driver=%s subnets=%s bridge=%s",
            net.name,
            net.id[:12],
            net.driver,
            ",".join(p.subnet for p in net.pools) or "-",
            net.bridge_name or "-",
        )
        self.on_change()
        return net

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
        if self.containers_of(net):
            raise Forbidden(
                f"error while removing network: network {net.name} id {net.id} has active endpoints"
            )
        self._forget(net)
        if net.driver == "bridge":
            try:
                await self.bridge.delete(net)
            except Exception as exc:  # the reconciler removes what is left
                log.warning("bridge %s not removed: %s", net.bridge_name, exc)
        log.info("network removed name=%s id=%s", net.name, net.id[:12])
        self.on_change()

    async def prune(self, filters: flt.Filters) -> list[str]:
        flt.check_keys(filters, {"label", "label!", "until"})
        deleted: list[str] = []
        async with self.lock:
            for net in list(self.by_id.values()):
                if net.predefined or self.containers_of(net):
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
