"""Links, addresses and routes over rtnetlink, through pyroute2's asyncio core.

One `Rtnl` per network namespace.  The daemon keeps one for its own namespace; a sandbox's
is opened from a netlink socket created inside that namespace (see netns.socket_in), which
costs no helper process (pyroute2's own netns= path forks one per socket).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from tether.kernel import netns
from tether.kernel.rtdump import Dumper, LinkInfo, delete_link

NETLINK_ROUTE = 0
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NUD_NOARP = 0x40  # a static bridge FDB entry (permanent would mean "the bridge's own")
NTF_MASTER = 0x04
RTN_LOCAL = 2
LOOPBACK_INDEX = 1


def _link(msg: Any) -> LinkInfo:
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        alias=str(msg.get("ifalias") or ""),
        master=int(msg.get("master") or 0),
        mtu=int(msg.get("mtu") or 0),
        up=bool(msg["flags"] & 1),
        mac=str(msg.get("address") or ""),
    )


class Rtnl:
    def __init__(self, ipr: AsyncIPRoute, dumper: Dumper, netns_path: str | None = None) -> None:
        self.ipr = ipr
        self.dumper = dumper
        self.netns_path = netns_path

    @classmethod
    def open(cls, netns_path: str | None = None) -> Rtnl:
        if netns_path is None:
            return cls(AsyncIPRoute(), Dumper())
        sock = netns.socket_in(netns_path, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        raw = netns.socket_in(netns_path, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        return cls(AsyncIPRoute(use_socket=sock), Dumper(raw), netns_path)

    def close(self) -> None:
        try:
            self.ipr.close()
        except Exception:
            pass
        self.dumper.close()

    # -- links -----------------------------------------------------------------------------

    def links(self, kind: str = "") -> list[LinkInfo]:
        return self.dumper.links(kind)

    async def link(self, name: str) -> LinkInfo | None:
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

    async def add_macvlan(
        self,
        name: str,
        parent: int,
        mode: str,
        netns_fd: int,
        mac: str | None = None,
        mtu: int = 0,
    ) -> None:
        """A macvlan port of `parent` (an index in this namespace), born inside `netns_fd`.

        One RTM_NEWLINK: the kernel resolves the parent here and registers the port in the
        target namespace, so it never shows on the host, as with the veth peer.
        """
        kwargs: dict[str, Any] = {
            "ifname": name,
            "kind": "macvlan",
            "link": parent,
            "macvlan_mode": mode,
            "net_ns_fd": netns_fd,
        }
        if mac:
            kwargs["address"] = mac
        if mtu:
            kwargs["mtu"] = mtu
        await self.ipr.link("add", **kwargs)

    async def add_vxlan(
        self, name: str, vni: int, local: str, port: int, master: int, mtu: int = 0
    ) -> int:
        """A VXLAN device that neither learns nor floods: every remote MAC and neighbour it
        knows is programmed (fdb_add / neigh_add); `proxy` answers ARP and neighbour
        solicitations from its neighbour table, so no broadcast crosses the underlay."""
        kwargs: dict[str, Any] = {
            "ifname": name,
            "kind": "vxlan",
            "vxlan_id": vni,
            "vxlan_local": local,
            "vxlan_port": port,
            "vxlan_learning": 0,
            "vxlan_proxy": 1,
            "master": master,
        }
        if mtu:
            kwargs["mtu"] = mtu
        await self.ipr.link("add", **kwargs)
        idx = await self.index(name)
        assert idx is not None
        return idx

    async def vxlan_params(self, name: str) -> tuple[str, int] | None:
        """(local address, VNI) of a VXLAN device, or None when there is none."""
        try:
            msgs = await self.ipr.link("get", ifname=name)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        data = msgs[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        if data is None:
            return None
        return str(data.get("IFLA_VXLAN_LOCAL") or ""), int(data.get("IFLA_VXLAN_ID") or 0)

    async def fdb_replace(self, index: int, mac: str, dst: str) -> None:
        """Frames for `mac` leave device `index` (a VXLAN) towards the VTEP `dst`."""
        await self.ipr.fdb(
            "replace", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF
        )

    async def fdb_del(self, index: int, mac: str, dst: str) -> None:
        try:
            await self.ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst, flags=NTF_SELF)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ENODEV):
                raise

    async def bridge_fdb_replace(self, port: int, mac: str) -> None:
        """The bridge that `port` is on sends frames for `mac` out of that port (a static
        entry: what learning would find, but never stale)."""
        await self.ipr.fdb("replace", ifindex=port, lladdr=mac, state=NUD_NOARP, flags=NTF_MASTER)

    async def bridge_fdb_del(self, port: int, mac: str) -> None:
        try:
            await self.ipr.fdb("del", ifindex=port, lladdr=mac, flags=NTF_MASTER)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ENODEV):
                raise

    async def no_learning(self, port: int) -> None:
        """The bridge learns no MAC from frames arriving on `port`."""
        await self.ipr.brport("set", index=port, learning=0)

    async def neigh_replace(self, index: int, ip: str, mac: str) -> None:
        await self.ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT)

    async def neigh_del(self, index: int, ip: str) -> None:
        try:
            await self.ipr.neigh("del", ifindex=index, dst=ip)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ENODEV):
                raise

    async def fdb_entries(self, index: int) -> list[tuple[str, str]]:
        """(mac, dst) of the permanent entries a VXLAN device holds (what tether put there)."""
        out = []
        async for msg in await self.ipr.fdb("dump", ifindex=index):
            if msg["ifindex"] != index or not msg["state"] & NUD_PERMANENT:
                continue
            dst = msg.get("NDA_DST")
            mac = msg.get("NDA_LLADDR")
            if dst and mac and mac != "00:00:00:00:00:00":
                out.append((str(mac), str(dst)))
        return out

    async def neigh_entries(self, index: int) -> list[tuple[str, str]]:
        """(ip, mac) of the permanent neighbours of a device."""
        out = []
        async for msg in await self.ipr.neigh("dump", ifindex=index):
            if msg["ifindex"] != index or not msg["state"] & NUD_PERMANENT:
                continue
            dst, mac = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
            if dst and mac:
                out.append((str(dst), str(mac)))
        return out

    async def kind_supported(self, kind: str) -> bool:
        """Whether this kernel has the link type `kind` (vlan, ipvlan, dummy, ...).

        Asks for a link of that kind with no parent and no name: a kernel without the type
        answers EOPNOTSUPP ("Unknown device type"), one with it refuses the incomplete request
        (EINVAL) or makes nothing it can keep; nothing is left behind either way.
        """
        probe = f"tq{os.getpid() % 100000}"
        try:
            await self.ipr.link("add", ifname=probe, kind=kind)
        except NetlinkError as exc:
            return bool(exc.code != errno.EOPNOTSUPP)
        await self.delete_named(probe)  # a kind that needs no parent (dummy) was made
        return True

    async def set_link(self, index: int, **attrs: Any) -> None:
        await self.ipr.link("set", index=index, **attrs)

    async def no_ipv6_link_local(self, index: int) -> None:
        """addrgenmode none: no IPv6 link-local address, hence no DAD, router solicitations or
        MLD reports.  Must be set while the link is down (it cannot go in the create message:
        the kernel has no IPv6 state for a device before it is registered)."""
        spec = {"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", 1]]}]]}
        await self.ipr.link("set", index=index, IFLA_AF_SPEC=spec)

    async def up(self, index: int) -> None:
        await self.ipr.link("set", index=index, state="up")

    async def delete(self, index: int) -> None:
        try:
            await self.ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.ENOENT):
                raise

    async def delete_in_thread(self, index: int = 0, name: str = "") -> None:
        """Delete (by index or name) from a worker thread: see rtdump.delete_link for why."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, delete_link, index, self.netns_path, name)

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

    def addresses(self) -> dict[int, set[str]]:
        """All addresses (but link-local IPv6) by interface index, in one dump."""
        out: dict[int, set[str]] = {}
        for a in self.dumper.addresses():
            out.setdefault(a.index, set()).add(a.cidr)
        return out

    # -- routes ----------------------------------------------------------------------------

    def route_destinations(
        self, skip: set[tuple[bytes, int]] | None = None
    ) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """What the host routes somewhere, to keep default pools clear of it.

        The main table, plus whole subnets made local on lo (an address with a prefix on lo
        routes nothing in main, but the host owns that subnet).  `skip` holds (packed
        network address, prefix length) pairs already known, i.e. tether's own networks.
        """
        skip = skip or set()
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        main = self.dumper.routes(254)
        local = [r for r in self.dumper.routes(255, oif=LOOPBACK_INDEX) if r[3] == RTN_LOCAL]
        for is_local, (family, dst, plen, _rtype, _oif) in [(False, r) for r in main] + [
            (True, r) for r in local
        ]:
            host_len = 32 if family == socket.AF_INET else 128
            if plen == 0 or (dst, plen) in skip or (is_local and plen == host_len):
                continue
            if family == socket.AF_INET and dst[0] == 127:
                continue
            if family == socket.AF_INET6 and (dst[:2] == b"\xfe\x80" or dst[0] == 0xFF):
                continue
            out.append(ipaddress.ip_network((dst, plen), strict=False))
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
