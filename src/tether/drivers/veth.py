"""The bridge driver's endpoint half: a veth pair from a network's bridge into a sandbox.

The sandbox end is created directly inside the sandbox's namespace (never visible on the
host), already on the bridge and with its MAC, so an attach is: one RTM_NEWLINK, addresses,
two links up.  Host ends are named tv<endpoint id prefix>: the reconciler owns that prefix.
"""

from __future__ import annotations

import os

from tether.errors import SystemFailure
from tether.kernel.rtnl import Rtnl
from tether.model import Endpoint

HOST_PREFIX = "tv"


def host_ifname(endpoint_id: str) -> str:
    return HOST_PREFIX + endpoint_id[:12]


async def attach(
    host: Rtnl, inner: Rtnl, netns_path: str, bridge: int, mtu: int, ep: Endpoint
) -> None:
    """A veth pair from the bridge (index `bridge` on the host) to `ep.ifname` in the sandbox."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        index = await host.add_veth(
            ep.host_ifname, ep.ifname, peer_netns_fd=fd, master=bridge, mtu=mtu, peer_mac=ep.mac
        )
    finally:
        os.close(fd)
    try:
        # IPv6 link-local addresses on every new interface cost more than they seem: each
        # container's DAD, router solicitations and MLD reports are flooded by the bridge to
        # every other port, so starts got slower as containers piled up (run latency at 400
        # containers was 1.5x that at 100).  Host ends never need IPv6 addresses; container
        # ends only on networks with IPv6 enabled (as newer Docker does).
        await host.no_ipv6_link_local(index)
        await host.up(index)
        inner_index = await inner.index(ep.ifname)
        if inner_index is None:
            raise SystemFailure(f"{ep.ifname} did not appear in the sandbox")
        ep.index = inner_index
        if not ep.ipv6:
            await inner.no_ipv6_link_local(inner_index)
        for cidr in (ep.ipv4, ep.ipv6):
            if cidr:
                await inner.add_address(inner_index, cidr)
        await inner.up(inner_index)
    except Exception:
        await host.delete(index)
        raise
