"""The bridge driver's network half: one Linux bridge per network, carrying the gateways.

Endpoints (veth pairs into sandboxes) are in drivers/veth.py; the firewall is rendered for all
networks at once in firewall/.
"""

from __future__ import annotations

import logging

from tether.engine.model import Network
from tether.errors import Forbidden, SystemFailure
from tether.kernel.rtnl import Rtnl
from tether.kernel.sysctl import set_sysctl

log = logging.getLogger("tether.bridge")

ALIAS_PREFIX = "tether:net:"


def alias_for(net: Network) -> str:
    return ALIAS_PREFIX + net.id


def gateway_cidrs(net: Network) -> set[str]:
    return {f"{p.gateway}/{p.prefixlen}" for p in net.pools}


class BridgeDriver:
    def __init__(self, rtnl: Rtnl) -> None:
        self.rtnl = rtnl

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
            await self.ensure(net)
        except Exception as exc:
            if not net.bridge_external:
                await self.rtnl.delete_named(net.bridge_name)
            raise SystemFailure(f"failed to create bridge {net.bridge_name}: {exc}") from exc

    async def ensure(self, net: Network) -> bool:
        """Make the kernel match the network; returns whether anything had to change."""
        changed = False
        link = await self.rtnl.link(net.bridge_name)
        if link is None:
            if net.bridge_external:
                log.warning("bridge %s (made by the user) is gone; recreating it", net.bridge_name)
            index = await self.rtnl.add_bridge(net.bridge_name, net.mtu)
            changed = True
        else:
            index = link.index
            if net.mtu and link.mtu != net.mtu:
                await self.rtnl.set_link(index, mtu=net.mtu)
                changed = True
        if not net.bridge_external and (link is None or link.alias != alias_for(net)):
            await self.rtnl.set_link(index, ifalias=alias_for(net))
        if any(p.version == 6 for p in net.pools):
            set_sysctl(f"net/ipv6/conf/{net.bridge_name}/disable_ipv6", "0")
            set_sysctl(f"net/ipv6/conf/{net.bridge_name}/accept_ra", "0")
        have = await self.rtnl.addresses(index)
        for cidr in sorted(gateway_cidrs(net) - have):
            await self.rtnl.add_address(index, cidr)
            changed = True
        if link is None or not link.up:
            await self.rtnl.up(index)
            changed = True
        return changed

    async def delete(self, net: Network) -> None:
        if net.bridge_external:
            index = await self.rtnl.index(net.bridge_name)
            if index is not None:
                for cidr in gateway_cidrs(net):
                    await self.rtnl.del_address(index, cidr)
            return
        await self.rtnl.delete_named(net.bridge_name)
