"""Address allocation inside one subnet: pure, with Docker's rules.

- The subnet's network and broadcast addresses are never handed out (IPv4); the first address
  of an --ip-range is, even when it ends in .0 (Docker does the same).
- The gateway and the aux addresses are reserved.
- Without a request, the lowest free address of the ip-range (or of the subnet) is taken.
- A requested address (--ip) may lie anywhere in the subnet, even outside the ip-range.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from tether.errors import Conflict, Forbidden, InvalidParameter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network

ADDRESS_IN_USE = "Address already in use"
NO_FREE_ADDRESS = "no available IPv{v} addresses on this network's address pools: {name} ({id})"


@dataclass
class SubnetPool:
    """One subnet of a network, with what is taken in it."""

    subnet: Subnet
    ip_range: Subnet | None = None
    taken: set[int] = field(default_factory=set)
    # Where the next lowest-free scan starts: every address below it is taken, so a network
    # with 500 containers does not rescan 500 addresses for the 501st.
    _low: int | None = None

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, addr: IPAddress) -> bool:
        return addr.version == self.version and addr in self.subnet

    def _first_last(self) -> tuple[int, int]:
        rng = self.ip_range or self.subnet
        first, last = int(rng.network_address), int(rng.broadcast_address)
        net, bcast = int(self.subnet.network_address), int(self.subnet.broadcast_address)
        if self.version == 4 and self.subnet.prefixlen < 31:
            if first == net:
                first += 1
            if last == bcast:
                last -= 1
        elif self.version == 6 and first == net:
            # IPv6 has no broadcast; the subnet-router anycast address (::0) is still skipped.
            first = net + 1
        return first, last

    def is_reserved_edge(self, addr: IPAddress) -> bool:
        """Network and broadcast addresses of an IPv4 subnet answer "in use" like Docker."""
        if self.version != 4 or self.subnet.prefixlen >= 31:
            return False
        return addr in (self.subnet.network_address, self.subnet.broadcast_address)

    def reserve(self, addr: IPAddress) -> None:
        """Take a specific address (gateway, aux address, --ip)."""
        if not self.contains(addr):
            raise InvalidParameter(
                f"Invalid address {addr}: It does not belong to any of this network's subnets"
            )
        value = int(addr)
        if value in self.taken or self.is_reserved_edge(addr):
            raise Conflict(ADDRESS_IN_USE)
        self.taken.add(value)

    def allocate(self) -> IPAddress:
        first, last = self._first_last()
        start = max(first, self._low) if self._low is not None else first
        value = start
        while value <= last and value in self.taken:
            value += 1
        if value > last:
            # The fast-path start may have skipped a hole left by an explicit reservation
            # outside the range order; rescan once from the beginning.
            value = first
            while value <= last and value in self.taken:
                value += 1
            if value > last:
                raise Forbidden("no available addresses")
        self.taken.add(value)
        self._low = value + 1
        return ipaddress.ip_address(value)

    def release(self, addr: IPAddress) -> None:
        value = int(addr)
        self.taken.discard(value)
        if self._low is not None and value < self._low:
            self._low = value


def default_gateway(subnet: Subnet, ip_range: Subnet | None) -> IPAddress:
    """Docker's implicit gateway: the first usable address of the ip-range, else of the subnet."""
    base = ip_range if ip_range is not None else subnet
    first = int(base.network_address)
    if base is subnet or first == int(subnet.network_address):
        first += 1
    return ipaddress.ip_address(first)


def random_mac() -> str:
    """A locally administered unicast MAC (an endpoint without an IPv4 address)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def mac_from_ipv4(ip: str) -> str:
    """Docker's default MAC: 02:42 followed by the four bytes of the IPv4 address."""
    packed = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in packed)
