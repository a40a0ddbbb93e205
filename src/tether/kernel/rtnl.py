"""Links, addresses and routes over rtnetlink, through pyroute2's asyncio core.

One `Rtnl` per network namespace.  The daemon keeps one for its own namespace; a sandbox's
is opened from a netlink socket created inside that namespace (see netns.socket_in), which
costs no helper process (pyroute2's own netns= path forks one per socket).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from tether.kernel import netns

NETLINK_ROUTE = 0
RTN_LOCAL = 2
IFF_UP = 1


@dataclass
class Link:
    index: int
    name: str
    kind: str
    alias: str
    master: int
    mtu: int
    up: bool
    mac: str


def _link(msg: Any) -> Link:
    return Link(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        alias=str(msg.get("ifalias") or ""),
        master=int(msg.get("master") or 0),
        mtu=int(msg.get("mtu") or 0),
        up=bool(msg["flags"] & IFF_UP),
        mac=str(msg.get("address") or ""),
    )


class Rtnl:
    def __init__(self, ipr: AsyncIPRoute) -> None:
        self.ipr = ipr

    @classmethod
    def open(cls, netns_path: str | None = None) -> Rtnl:
        if netns_path is None:
            return cls(AsyncIPRoute())
        sock = netns.socket_in(netns_path, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        return cls(AsyncIPRoute(use_socket=sock))

    def close(self) -> None:
        try:
            self.ipr.close()
        except Exception:
            pass

    # -- links -----------------------------------------------------------------------------

    async def links(self) -> list[Link]:
        return [_link(m) async for m in await self.ipr.link("dump")]

    async def link(self, name: str) -> Link | None:
        try:
            msgs = await self.ipr.link("get", ifname=name)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return _link(msgs[0]) if msgs else None

    async def index(self, name: str) -> int | None:
        found = await self.ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    async def add_bridge(self, name: str, mtu: int = 0) -> int:
        kwargs: dict[str, Any] = {"ifname": name, "kind": "bridge"}
        if mtu:
            kwargs["mtu"] = mtu
        await self.ipr.link("add", **kwargs)
        idx = await self.index(name)
        assert idx is not None
        return idx

    async def add_veth(
        self,
        name: str,
        peer: str,
        peer_netns_fd: int | None = None,
        master: int | None = None,
        mtu: int = 0,
        peer_mac: str | None = None,
    ) -> int:
        """A veth pair; the peer is born inside the sandbox, so it never shows on the host."""
        peer_spec: dict[str, Any] = {"ifname": peer}
        if peer_netns_fd is not None:
            peer_spec["net_ns_fd"] = peer_netns_fd
        if mtu:
            peer_spec["mtu"] = mtu
        if peer_mac:
            peer_spec["address"] = peer_mac
        kwargs: dict[str, Any] = {"ifname": name, "kind": "veth", "peer": peer_spec}
        if master is not None:
            kwargs["master"] = master
        if mtu:
            kwargs["mtu"] = mtu
        await self.ipr.link("add", **kwargs)
        idx = await self.index(name)
        assert idx is not None
        return idx

    async def set_link(self, index: int, **attrs: Any) -> None:
        await self.ipr.link("set", index=index, **attrs)

    async def up(self, index: int) -> None:
        await self.ipr.link("set", index=index, state="up")

    async def delete(self, index: int) -> None:
        try:
            await self.ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.ENOENT):
                raise

    async def delete_named(self, name: str) -> bool:
        idx = await self.index(name)
        if idx is None:
            return False
        await self.delete(idx)
        return True

    # -- addresses -------------------------------------------------------------------------

    async def add_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        kwargs: dict[str, Any] = {
            "index": index,
            "address": str(iface.ip),
            "prefixlen": iface.network.prefixlen,
        }
        if iface.version == 6:
            # No duplicate address detection: the address is ours by allocation, and DAD
            # would leave it "tentative" (unusable) for a second or more after attach.
            kwargs["flags"] = IFA_F_NODAD
        try:
            await self.ipr.addr("add", **kwargs)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    async def del_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        try:
            await self.ipr.addr(
                "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
            )
        except NetlinkError as exc:
            if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                raise

    async def addresses(self, index: int) -> set[str]:
        out: set[str] = set()
        async for m in await self.ipr.addr("dump", index=index):
            if int(m["index"]) != index:
                continue
            addr = m.get("IFA_ADDRESS")
            if addr and not str(addr).startswith("fe80:"):
                out.add(f"{addr}/{m['prefixlen']}")
        return out

    # -- routes ----------------------------------------------------------------------------

    async def route_destinations(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Every destination the host routes somewhere (to keep default pools clear of them)."""
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            host_len = 32 if family == socket.AF_INET else 128
            async for m in await self.ipr.route("dump", family=family):
                table = m.get("RTA_TABLE") or m["table"]
                dst = m.get("RTA_DST")
                plen = int(m["dst_len"])
                if dst is None or plen == 0:
                    continue
                # The main table, plus whole subnets made local (an address with a prefix
                # on lo routes nothing in main, but the host still owns that subnet).
                local_subnet = table == 255 and m["type"] == RTN_LOCAL and plen < host_len
                if table != 254 and not local_subnet:
                    continue
                if str(dst).startswith("127."):
                    continue
                if family == socket.AF_INET6 and str(dst).startswith(("fe80:", "ff00:")):
                    continue
                try:
                    out.append(ipaddress.ip_network(f"{dst}/{plen}", strict=False))
                except ValueError:
                    continue
        return out

    async def add_default_route(self, gateway: str, index: int | None = None) -> None:
        family = socket.AF_INET6 if ":" in gateway else socket.AF_INET
        dst = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
        kwargs: dict[str, Any] = {"dst": dst, "gateway": gateway, "family": family}
        if index is not None:
            kwargs["oif"] = index
        await self.ipr.route("replace", **kwargs)

    async def del_default_route(self, family: int) -> None:
        dst = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
        try:
            await self.ipr.route("del", dst=dst, family=family)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT):
                raise
