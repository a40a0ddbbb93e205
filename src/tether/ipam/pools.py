"""Subnet pools for networks created without --subnet: Docker's defaults and its cursor.

Pure: the caller passes what is in use (other networks, host routes) and the cursor it
persisted; nothing here touches the kernel or the store.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tether.errors import Forbidden, InvalidParameter

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PoolSpec:
    """One `--default-address-pool base=CIDR,size=N`: base cut into subnets of /size."""

    base: ipaddress.IPv4Network | ipaddress.IPv6Network
    size: int

    def subnets(self) -> Iterator[Subnet]:
        return self.base.subnets(new_prefix=self.size)

    def __str__(self) -> str:
        return f"base={self.base},size={self.size}"


# Docker 20.10's defaults: 172.17-31.0.0/16, then 192.168.0.0/16 cut into /20s.
DEFAULT_POOLS: tuple[PoolSpec, ...] = (
    PoolSpec(ipaddress.ip_network("172.17.0.0/16"), 16),
    PoolSpec(ipaddress.ip_network("172.18.0.0/16"), 16),
    PoolSpec(ipaddress.ip_network("172.19.0.0/16"), 16),
    PoolSpec(ipaddress.ip_network("172.20.0.0/14"), 16),
    PoolSpec(ipaddress.ip_network("172.24.0.0/14"), 16),
    PoolSpec(ipaddress.ip_network("172.28.0.0/14"), 16),
    PoolSpec(ipaddress.ip_network("192.168.0.0/16"), 20),
)

NO_V4_POOL = (
    "could not find an available, non-overlapping IPv4 address pool among the defaults "
    "to assign to the network"
)
NO_V6_POOL = (
    "could not find an available, non-overlapping IPv6 address pool among the defaults "
    "to assign to the network"
)


def parse_pool_flag(text: str) -> PoolSpec:
    """Parse dockerd's `--default-address-pool base=172.30.0.0/16,size=24`."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise InvalidParameter(f"invalid field '{part}' must be a key=value pair")
        fields[key.strip().lower()] = value.strip()
    unknown = set(fields) - {"base", "size"}
    if unknown:
        raise InvalidParameter(f"unexpected key '{sorted(unknown)[0]}' in '{text}'")
    if "base" not in fields or "size" not in fields:
        raise InvalidParameter(f"address pool '{text}' needs both base and size")
    try:
        base = ipaddress.ip_network(fields["base"], strict=False)
        size = int(fields["size"])
    except ValueError as exc:
        raise InvalidParameter(f"invalid address pool '{text}': {exc}") from None
    if size < base.prefixlen or size > base.max_prefixlen:
        raise InvalidParameter(
            f"invalid pools size: {size} (must be between {base.prefixlen} and {base.max_prefixlen})"
        )
    return PoolSpec(base, size)


def candidates(pools: Iterable[PoolSpec], version: int) -> list[Subnet]:
    """Every default subnet of one family, in order (small pool lists only: tests, listings)."""
    out: list[Subnet] = []
    for spec in pools:
        if spec.base.version == version:
            out.extend(spec.subnets())
    return out


def ula_pool(host_id: str) -> PoolSpec:
    """This host's IPv6 default pool: a ULA /48 cut into /64s, stable for one host id.

    As Docker 27+ (moby's deriveULABaseNetwork, after RFC 4193 3.2.2): 40 bits of the
    SHA-256 of the host id after fd00::/8, so two hosts rarely pick the same /48.
    """
    digest = hashlib.sha256(host_id.encode()).digest()
    global_id = int.from_bytes(digest[:8], "big") & ((1 << 40) - 1)
    base = int(ipaddress.IPv6Address("fd00::")) + (global_id << 80)
    return PoolSpec(ipaddress.IPv6Network((base, 48)), 64)


def with_ipv6_default(pools: list[PoolSpec], host_id: str) -> list[PoolSpec]:
    """Docker adds the host's ULA pool when no IPv6 default pool is configured."""
    if any(p.base.version == 6 for p in pools):
        return pools
    return [*pools, ula_pool(host_id)]


def overlaps(a: Subnet, b: Subnet) -> bool:
    return a.version == b.version and a.overlaps(b)


def pick_subnet(
    pools: Iterable[PoolSpec],
    version: int,
    in_use: Iterable[Subnet],
    host_routes: Iterable[Subnet],
    cursor: str | None,
) -> Subnet:
    """The next free default subnet after `cursor`, wrapping around once.

    Docker keeps a cursor so that a freed pool is not handed out again at once (a container
    that still remembers the old subnet should not find a new network there).  A subnet is
    free when it overlaps no other network and no route the host already has.

    Works on integers and jumps over blocked ranges, so an IPv6 pool of 2**16 (or 2**56)
    subnets costs what the IPv4 defaults do: never a list of every candidate.
    """
    specs = [p for p in pools if p.base.version == version]
    if not specs:
        raise Forbidden(NO_V6_POOL if version == 6 else NO_V4_POOL)
    blocked = sorted(
        (int(s.network_address), int(s.broadcast_address))
        for s in [*in_use, *host_routes]
        if s.version == version and s.prefixlen > 0
    )
    bits = 32 if version == 4 else 128
    # Positions are (pool index, subnet index): the search starts just after the cursor.
    start_pool, start_sub = 0, 0
    if cursor:
        cur = ipaddress.ip_network(cursor)
        for i, spec in enumerate(specs):
            if cur.version == version and cur.prefixlen == spec.size and cur.subnet_of(spec.base):  # type: ignore[arg-type]
                start_pool = i
                start_sub = (
                    (int(cur.network_address) - int(spec.base.network_address))
                    >> (bits - spec.size)
                ) + 1
                break
    order = [(start_pool, start_sub)]
    order += [((start_pool + k) % len(specs), 0) for k in range(1, len(specs))]
    order.append((start_pool, 0))  # wrap around to the subnets before the cursor
    for n, (i, first) in enumerate(order):
        spec = specs[i]
        step = 1 << (bits - spec.size)
        base = int(spec.base.network_address)
        count = 1 << (spec.size - spec.base.prefixlen)
        last = count if n < len(order) - 1 else min(count, start_sub)
        found = _first_free(base, step, first, last, blocked)
        if found is not None:
            return ipaddress.ip_network((base + found * step, spec.size))
    raise Forbidden(NO_V6_POOL if version == 6 else NO_V4_POOL)


def _first_free(
    base: int, step: int, first: int, last: int, blocked: list[tuple[int, int]]
) -> int | None:
    """Index of the first subnet in [first, last) that overlaps no blocked range."""
    k = first
    while k < last:
        lo = base + k * step
        hi = lo + step - 1
        clash = next((b for b in blocked if b[0] <= hi and lo <= b[1]), None)
        if clash is None:
            return k
        # Jump past the blocking range in one step, however many subnets it covers.
        k = max(k + 1, (clash[1] + 1 - base + step - 1) // step)
    return None
