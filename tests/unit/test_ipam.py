"""IPAM: default pools with Docker's cursor, address allocation rules, concurrency in the store."""

from __future__ import annotations

import ipaddress

import pytest

from tether.errors import Conflict, Forbidden, InvalidParameter
from tether.ipam.addresses import SubnetPool, default_gateway
from tether.ipam.pools import DEFAULT_POOLS, PoolSpec, candidates, parse_pool_flag, pick_subnet

net = ipaddress.ip_network
ip = ipaddress.ip_address


def test_default_pool_order_matches_docker() -> None:
    c = candidates(DEFAULT_POOLS, 4)
    assert [str(x) for x in c[:15]] == [f"172.{i}.0.0/16" for i in range(17, 32)]
    assert str(c[15]) == "192.168.0.0/20"
    assert str(c[-1]) == "192.168.240.0/20"
    assert len(c) == 31


def test_cursor_skips_freed_pool_and_wraps() -> None:
    used = [net("172.17.0.0/16"), net("172.18.0.0/16")]
    first = pick_subnet(DEFAULT_POOLS, 4, used, [], "172.18.0.0/16")
    assert str(first) == "172.19.0.0/16"
    # 172.19 freed again, but the cursor is past it: Docker hands out 172.20 next.
    assert str(pick_subnet(DEFAULT_POOLS, 4, used, [], "172.19.0.0/16")) == "172.20.0.0/16"
    # At the end of the list it wraps around to the first free pool.
    assert str(pick_subnet(DEFAULT_POOLS, 4, used, [], "192.168.240.0/20")) == "172.19.0.0/16"


def test_host_routes_are_avoided() -> None:
    got = pick_subnet(DEFAULT_POOLS, 4, [], [net("172.17.0.0/16"), net("172.18.5.0/24")], None)
    assert str(got) == "172.19.0.0/16"


def test_exhausted_pools_raise_docker_message() -> None:
    pools = [PoolSpec(net("10.0.0.0/24"), 25)]
    used = [net("10.0.0.0/25"), net("10.0.0.128/25")]
    with pytest.raises(Forbidden, match="could not find an available, non-overlapping IPv4"):
        pick_subnet(pools, 4, used, [], None)
    with pytest.raises(Forbidden, match="IPv6 address pool"):
        pick_subnet(DEFAULT_POOLS, 6, [], [], None)


def test_pool_flag_parsing() -> None:
    spec = parse_pool_flag("base=10.10.0.0/16,size=24")
    assert spec.base == net("10.10.0.0/16") and spec.size == 24
    for bad in ("base=10.10.0.0/16", "10.10.0.0/16", "base=x,size=24", "base=10.0.0.0/16,size=8"):
        with pytest.raises(InvalidParameter):
            parse_pool_flag(bad)


def test_gateway_defaults() -> None:
    assert str(default_gateway(net("10.1.0.0/16"), None)) == "10.1.0.1"
    # With an ip-range, Docker puts the gateway on the range's first address.
    assert str(default_gateway(net("10.140.0.0/24"), net("10.140.0.128/25"))) == "10.140.0.128"
    assert str(default_gateway(net("10.0.0.0/24"), net("10.0.0.0/25"))) == "10.0.0.1"


def test_allocation_from_ip_range_starts_at_its_first_address() -> None:
    pool = SubnetPool(net("10.123.0.0/16"), net("10.123.5.0/24"))
    pool.reserve(ip("10.123.0.254"))  # gateway
    pool.reserve(ip("10.123.5.7"))  # aux
    assert str(pool.allocate()) == "10.123.5.0"  # .0 is fine: not the /16's network address
    got = [str(pool.allocate()) for _ in range(8)]
    assert "10.123.5.7" not in got
    assert got[:6] == [
        "10.123.5.1",
        "10.123.5.2",
        "10.123.5.3",
        "10.123.5.4",
        "10.123.5.5",
        "10.123.5.6",
    ]
    assert got[6] == "10.123.5.8"


def test_network_and_broadcast_never_handed_out() -> None:
    pool = SubnetPool(net("10.0.0.0/30"))
    pool.reserve(ip("10.0.0.1"))
    assert str(pool.allocate()) == "10.0.0.2"
    with pytest.raises(Forbidden):
        pool.allocate()
    for edge in ("10.0.0.0", "10.0.0.3"):
        with pytest.raises(Conflict, match="Address already in use"):
            pool.reserve(ip(edge))


def test_requested_address_rules() -> None:
    pool = SubnetPool(net("10.140.0.0/24"), net("10.140.0.128/25"))
    pool.reserve(ip("10.140.0.128"))
    pool.reserve(ip("10.140.0.10"))  # --ip outside the range is allowed
    with pytest.raises(Conflict, match="Address already in use"):
        pool.reserve(ip("10.140.0.10"))
    with pytest.raises(InvalidParameter, match="does not belong to any of this network's subnets"):
        pool.reserve(ip("10.141.0.10"))
    assert str(pool.allocate()) == "10.140.0.129"


def test_release_makes_lowest_free_again() -> None:
    pool = SubnetPool(net("10.9.0.0/24"))
    pool.reserve(ip("10.9.0.1"))
    a = [pool.allocate() for _ in range(5)]
    pool.release(a[1])
    assert pool.allocate() == a[1]
    assert str(pool.allocate()) == "10.9.0.7"


def test_ipv6_allocation_skips_subnet_router_anycast() -> None:
    pool = SubnetPool(net("fd00:1::/64"))
    pool.reserve(ip("fd00:1::1"))
    assert str(pool.allocate()) == "fd00:1::2"


def test_ipv6_default_pool_is_a_stable_ula_48_cut_into_64s() -> None:
    from tether.ipam.pools import ula_pool, with_ipv6_default

    pool = ula_pool("host-a")
    assert pool == ula_pool("host-a") and pool != ula_pool("host-b")
    assert pool.base.prefixlen == 48 and pool.size == 64
    assert pool.base.subnet_of(net("fd00::/8"))
    pools = with_ipv6_default(list(DEFAULT_POOLS), "host-a")
    assert pools[-1] == pool
    # A configured IPv6 pool wins, as with dockerd's --default-address-pool.
    mine = [*DEFAULT_POOLS, PoolSpec(net("fd12:3456::/32"), 64)]
    assert with_ipv6_default(mine, "host-a") == mine
    first = pick_subnet(pools, 6, [], [], None)
    assert first == net(f"{pool.base.network_address}/64")
    second = pick_subnet(pools, 6, [first], [], str(first))
    assert int(second.network_address) - int(first.network_address) == 1 << 64


def test_huge_pools_are_searched_without_listing_them() -> None:
    # 2**56 candidate /64s: a blocked range covering the first half is jumped in one step.
    pools = [PoolSpec(net("fd00::/8"), 64)]
    got = pick_subnet(pools, 6, [net("fd00::/9")], [], None)
    assert got == net("fd80::/64")
    with pytest.raises(Forbidden):
        pick_subnet(pools, 6, [net("fd00::/8")], [], "fd00::/64")
