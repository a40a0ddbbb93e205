"""Address bookkeeping for all networks, mirrored in the store.

The in-memory pools answer "what is the next free address" quickly; the store's primary key
is the guarantee that no address is ever held twice, also across crashes.  Every change goes
to the store first, inside the caller's transaction, then to memory.
"""

from __future__ import annotations

import ipaddress

from tether.errors import Forbidden, InvalidParameter
from tether.ipam.addresses import IPAddress, SubnetPool
from tether.model import Network
from tether.store.sqlite import Store


class Ipam:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.pools: dict[str, list[SubnetPool]] = {}

    def load(self, networks: list[Network]) -> None:
        self.pools = {n.id: self._pools_for(n) for n in networks}
        for net_id, addr, _owner in self.store.addresses():
            pool = self._pool_containing(net_id, ipaddress.ip_address(addr))
            if pool is not None:
                pool.taken.add(int(ipaddress.ip_address(addr)))

    @staticmethod
    def _pools_for(net: Network) -> list[SubnetPool]:
        return [
            SubnetPool(
                subnet=p.network,
                ip_range=ipaddress.ip_network(p.ip_range) if p.ip_range else None,
            )
            for p in net.pools
        ]

    def _pool_containing(self, net_id: str, addr: IPAddress) -> SubnetPool | None:
        for p in self.pools.get(net_id, []):
            if p.contains(addr):
                return p
        return None

    def add_network(self, net: Network, reservations: list[tuple[str, str]]) -> None:
        """Register a network and hold its gateway and aux addresses (caller's transaction)."""
        pools = self._pools_for(net)
        for addr_text, owner in reservations:
            addr = ipaddress.ip_address(addr_text)
            pool = next((p for p in pools if p.contains(addr)), None)
            if pool is None:
                continue
            pool.reserve(addr)
            self.store.reserve_address(net.id, str(addr), owner)
        self.pools[net.id] = pools

    def remove_network(self, net_id: str) -> None:
        self.store.release_network_addresses(net_id)
        self.pools.pop(net_id, None)

    def request(self, net: Network, version: int, requested: str | None, owner: str) -> IPAddress:
        """One address for an endpoint: the one asked for, or the lowest free one."""
        pools = [p for p in self.pools.get(net.id, []) if p.version == version]
        if requested:
            addr = ipaddress.ip_address(requested)
            pool = next((p for p in pools if p.contains(addr)), None)
            if pool is None:
                raise InvalidParameter(
                    f"Invalid address {requested}: It does not belong to any of this network's subnets"
                )
            pool.reserve(addr)
        else:
            if not pools:
                raise Forbidden(f"no IPv{version} pool on network {net.name}")
            pool = pools[0]
            try:
                addr = pool.allocate()
            except Forbidden:
                raise Forbidden(
                    f"no available IPv{version} addresses on this network's address pools: "
                    f"{net.name} ({net.id})"
                ) from None
        try:
            self.store.reserve_address(net.id, str(addr), owner)
        except Exception:
            pool.release(addr)
            raise
        return addr

    def release(self, net_id: str, address: str) -> None:
        addr = ipaddress.ip_address(address)
        self.store.release_address(net_id, str(addr))
        pool = self._pool_containing(net_id, addr)
        if pool is not None:
            pool.release(addr)

    def release_owner(self, owner: str) -> None:
        """Release everything `owner` holds (an endpoint), whatever memory says."""
        for net_id, address in self.store.release_owner(owner):
            addr = ipaddress.ip_address(address)
            pool = self._pool_containing(net_id, addr)
            if pool is not None:
                pool.release(addr)

    def forget_memory(self, net_id: str, address: str) -> None:
        """Drop an address from memory only (the store transaction that held it rolled back)."""
        addr = ipaddress.ip_address(address)
        pool = self._pool_containing(net_id, addr)
        if pool is not None:
            pool.release(addr)
