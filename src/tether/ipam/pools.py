"""Subnet pools for networks created without --subnet: Docker's defaults and its cursor.

Pure: the caller passes what is in use (other networks, host routes) and the cursor it
persisted; nothing here touches the kernel or the store.
"""

from __future__ import annotations

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
    out: list[Subnet] = []
    for spec in pools:
        if spec.base.version == version:
            out.extend(spec.subnets())
    return out


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
    """
    cands = candidates(pools, version)
    if not cands:
        raise Forbidden(NO_V6_POOL if version == 6 else NO_V4_POOL)
    start = 0
    if cursor:
        cur = ipaddress.ip_network(cursor)
        for i, c in enumerate(cands):
            if c == cur:
                start = i + 1
                break
    # Integer ranges: with hundreds of networks, ipaddress's overlaps() per pair was the
    # slowest part of a create.
    blocked = sorted(
        (int(s.network_address), int(s.broadcast_address))
        for s in [*in_use, *host_routes]
        if s.version == version and s.prefixlen > 0
    )
    n = len(cands)
    for step in range(n):
        cand = cands[(start + step) % n]
        lo, hi = int(cand.network_address), int(cand.broadcast_address)
        if any(b_lo <= hi and lo <= b_hi for b_lo, b_hi in blocked):
            continue
        return cand
    raise Forbidden(NO_V6_POOL if version == 6 else NO_V4_POOL)
