"""The bridge driver's network half: one Linux bridge per network, carrying the gateways.

Endpoints (veth pairs into sandboxes) are in drivers/veth.py; the firewall is rendered for all
networks at once in firewall/.
"""

from __future__ import annotations

import asyncio
import logging

from tether.errors import Forbidden, SystemFailure
from tether.kernel.rtdump import LinkInfo
from tether.kernel.rtnl import Rtnl
from tether.kernel.sysctl import set_sysctl
from tether.model import Network

log = logging.getLogger("tether.bridge")

ALIAS_PREFIX = "tether:net:"
# A removed network's bridge, renamed and down, while the kernel finishes deleting it.
TOMBSTONE_PREFIX = "tz-"


def alias_for(net: Network) -> str:
    return ALIAS_PREFIX + net.id


def gateway_cidrs(net: Network) -> set[str]:
    return {f"{p.gateway}/{p.prefixlen}" for p in net.pools}


class BridgeDriver:
    def __init__(self, rtnl: Rtnl) -> None:
        self.rtnl = rtnl
        self.reaping: dict[asyncio.Task[None], int] = {}

    async def check_name(self, net: Network) -> bool:
        """Whether the bridge name is free (False) or names a user-made bridge (True).

        Raises when the name belongs to a device that is not a bridge, or to another
        tether network's bridge.
        """
        link = await self.rtnl.link(net.bridge_name)
        if link is None:
            return False
        if link.kind != "bridge":
            raise Forbidden(
                f"cannot create network {net.id} ({net.bridge_name}): "
                f"device {net.bridge_name} exists and is not a bridge"
            )
        if link.alias.startswith(ALIAS_PREFIX) and link.alias != alias_for(net):
            raise Forbidden(
                f"cannot create network {net.id} ({net.bridge_name}): "
                f"bridge {net.bridge_name} belongs to another tether network"
            )
        return not link.alias.startswith(ALIAS_PREFIX)

    async def create(self, net: Network) -> None:
        try:
            link = await self.rtnl.link(net.bridge_name) if net.bridge_external else None
            await self.ensure(net, link, set())
        except Exception as exc:
            if not net.bridge_external:
                await self.rtnl.delete_named(net.bridge_name)
            raise SystemFailure(f"failed to create bridge {net.bridge_name}: {exc}") from exc

    async def ensure(self, net: Network, link: LinkInfo | None, have: set[str] | None) -> bool:
        """Make the kernel match the network, given what the kernel has now.

        `link` is the bridge as last dumped (None: missing), `have` its addresses (None: not
        known, ask).  Returns whether anything had to change.
        """
        changed = False
        if link is None:
            if net.bridge_external:
                log.warning("bridge %s (made by the user) is gone; recreating it", net.bridge_name)
            index = await self.rtnl.add_bridge(net.bridge_name, net.mtu)
            have = set()
            changed = True
        else:
            index = link.index
            if net.mtu and link.mtu != net.mtu:
                await self.rtnl.set_link(index, mtu=net.mtu)
                changed = True
        if not net.bridge_external and (link is None or link.alias != alias_for(net)):
            await self.rtnl.set_link(index, ifalias=alias_for(net))
        # Published ports on 127.0.0.1 are DNATed out of the bridge: the kernel only routes
        # 127.0.0.0/8 sources off lo with route_localnet (the firewall's guard chain keeps
        # containers from using it to reach the host's loopback).
        set_sysctl(f"net/ipv4/conf/{net.bridge_name}/route_localnet", "1")
        if any(p.version == 6 for p in net.pools):
            set_sysctl("net/ipv6/conf/all/forwarding", "1")
            set_sysctl(f"net/ipv6/conf/{net.bridge_name}/disable_ipv6", "0")
            set_sysctl(f"net/ipv6/conf/{net.bridge_name}/accept_ra", "0")
        if have is None:
            have = self.rtnl.addresses().get(index, set())
        for cidr in sorted(gateway_cidrs(net) - have):
            await self.rtnl.add_address(index, cidr)
            changed = True
        if link is None or not link.up:
            await self.rtnl.up(index)
            changed = True
        return changed

    async def delete(self, net: Network) -> None:
        """Take the bridge away now; the kernel's slow part finishes in the background.

        Unregistering a bridge costs ~30 ms of kernel time here.  The bridge is set down (its
        routes go at once) and renamed to a tombstone (its name is free at once), then deleted
        from a worker thread; the daemon waits for tombstones on stop, and the reconciler
        deletes any a crash left behind.
        """
        link = await self.rtnl.link(net.bridge_name)
        if link is None:
            return
        if net.bridge_external:
            for cidr in gateway_cidrs(net):
                await self.rtnl.del_address(link.index, cidr)
            return
        await self.rtnl.set_link(link.index, state="down")
        await self.rtnl.set_link(link.index, ifname=TOMBSTONE_PREFIX + net.id[:12])
        self.reap(link.index)

    def reap(self, index: int) -> None:
        task = asyncio.get_running_loop().create_task(self._reap(index))
        self.reaping[task] = index
        task.add_done_callback(lambda t: self.reaping.pop(t, None))

    def reaping_indexes(self) -> set[int]:
        return set(self.reaping.values())

    async def _reap(self, index: int) -> None:
        try:
            await self.rtnl.delete_in_thread(index)
        except Exception as exc:  # the reconciler will try again
            log.warning("deleting bridge index=%d failed: %s", index, exc)

    async def drain(self) -> None:
        """Wait until every tombstone is gone (clean stop)."""
        while self.reaping:
            await asyncio.gather(*list(self.reaping), return_exceptions=True)
