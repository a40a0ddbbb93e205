"""Read-only views of one network namespace, for explain, doctor and `inspect --verbose`.

Everything here reads, nothing changes: links with their state, MTU, peers and counters,
addresses, routes with their gateways, neighbour and bridge-FDB entries, and the sockets
that listen (sock_diag, the kernel's own socket table, not /proc text).  Messages are parsed
with struct, as kernel/rtdump.py does and for the same reason: doctor reads every sandbox of
a host with hundreds of containers, and pyroute2's decoder costs ~0.15 ms per message.

A `View` is bound to the namespace its sockets were opened in (netns.socket_in), so reading a
sandbox needs no thread to stay inside it.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

from tether.kernel import netns
from tether.kernel.rtdump import (
    _IFINFOMSG,
    _NLMSGHDR,
    _RTATTR,
    _RTMSG,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    _attrs,
    _cstr,
    _dump,
    dump_socket,
    link_request,
    raw_addresses,
)

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
SOCK_DIAG_BY_FAMILY = 20

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_STATS64 = 16, 18, 20, 23
IFLA_LINK_NETNSID = 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_PORT = 1, 4, 15
IFLA_MACVLAN_MODE = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 1
NUD_PERMANENT = 0x80
AF_BRIDGE = 7
TCP_LISTEN = 10

OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")
MACVLAN_MODES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}
ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 6: "blackhole"}
ROUTE_PROTOCOLS = {2: "kernel", 3: "boot", 4: "static"}
NUD_STATES = {
    0x01: "incomplete",
    0x02: "reachable",
    0x04: "stale",
    0x08: "delay",
    0x10: "probe",
    0x20: "failed",
    0x40: "noarp",
    0x80: "permanent",
}

_NDMSG = struct.Struct("=BxxxiHBB")
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid (48 bytes).
_DIAG_REQ = struct.Struct("=BBBxI48s")
# inet_diag_msg: family, state, timer, retrans, sockid (sport, dport: big endian), ...
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")


@dataclass
class Link:
    index: int
    name: str
    kind: str
    alias: str
    master: int
    mtu: int
    up: bool  # administratively (IFF_UP)
    operstate: str
    mac: str
    peer: int = 0  # IFLA_LINK: a veth's peer index (in its own namespace), a macvlan's parent
    peer_netnsid: int = -1  # the peer is in another namespace (-1: this one)
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0
    info: dict[str, str] = field(default_factory=dict)  # vni, local, port; macvlan mode

    def to_api(self) -> dict[str, object]:
        out: dict[str, object] = {
            "Name": self.name,
            "Index": self.index,
            "Kind": self.kind or "device",
            "State": self.operstate if self.up else "down",
            "MTU": self.mtu,
            "MacAddress": self.mac,
            "Statistics": {
                "RxPackets": self.rx_packets,
                "RxBytes": self.rx_bytes,
                "TxPackets": self.tx_packets,
                "TxBytes": self.tx_bytes,
                "RxDropped": self.rx_dropped,
                "TxDropped": self.tx_dropped,
            },
        }
        if self.alias:
            out["Alias"] = self.alias
        if self.info:
            out["Details"] = dict(self.info)
        return out


@dataclass(frozen=True)
class Address:
    index: int
    cidr: str


@dataclass(frozen=True)
class Route:
    family: int
    dst: str  # "default" or a CIDR
    gateway: str
    oif: int
    table: int
    protocol: str
    type: str
    prefsrc: str = ""

    def text(self, names: dict[int, str]) -> str:
        """As `ip route` shows it."""
        parts = [self.dst]
        if self.type not in ("unicast", ""):
            parts.insert(0, self.type)
        if self.gateway:
            parts += ["via", self.gateway]
        if self.oif:
            parts += ["dev", names.get(self.oif, str(self.oif))]
        if self.protocol and self.protocol != "boot":
            parts += ["proto", self.protocol]
        if self.prefsrc:
            parts += ["src", self.prefsrc]
        return " ".join(parts)


@dataclass(frozen=True)
class Neighbour:
    index: int
    dst: str  # an IP (neighbour table) or a VTEP (bridge FDB of a VXLAN device)
    mac: str
    state: str
    permanent: bool


@dataclass(frozen=True)
class Listener:
    proto: str  # tcp | udp
    addr: str  # "0.0.0.0", "::", "127.0.0.1", ...
    port: int

    @property
    def loopback_only(self) -> bool:
        return self.addr.startswith("127.") or self.addr == "::1"

    @property
    def wildcard(self) -> bool:
        return self.addr in ("0.0.0.0", "::")

    def text(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{host}:{self.port}/{self.proto}"


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ip(raw: bytes) -> str:
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return ""


class View:
    """Read-only netlink views of one namespace (the caller's, or the one at `path`)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        if path is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        else:
            sock = netns.socket_in(path, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock = dump_socket(sock)

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- links ------------------------------------------------------------------------------

    def links(self, kind: str = "") -> list[Link]:
        out = []
        for msg_kind, body in _dump(self.sock, RTM_GETLINK, link_request(kind)):
            if msg_kind != RTM_NEWLINK:
                continue
            link = _parse_link(body)
            if not kind or link.kind == kind:
                out.append(link)
        return out

    def addresses(self, family: int = 0) -> list[Address]:
        return [
            Address(index, f"{_ip(raw)}/{plen}")
            for index, _fam, raw, plen in raw_addresses(self.sock, family)
            if _ip(raw)
        ]

    def routes(self, table: int = 254) -> list[Route]:
        """The routes of one table (main by default), both families, default routes too."""
        out: list[Route] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            payload = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0)
            for kind, body in _dump(self.sock, RTM_GETROUTE, payload):
                if kind != RTM_NEWROUTE:
                    continue
                fam, dst_len, _src, _tos, rtable, proto, _scope, rtype, _flags = _RTMSG.unpack_from(
                    body, 0
                )
                a = _attrs(body, _RTMSG.size, len(body))
                if RTA_TABLE in a:
                    rtable = struct.unpack("=I", a[RTA_TABLE])[0]
                if rtable != table:
                    continue
                dst = _ip(a[RTA_DST]) if RTA_DST in a else ""
                if fam == socket.AF_INET6 and (dst.startswith("fe80:") or dst.startswith("ff")):
                    continue
                out.append(
                    Route(
                        family=4 if fam == socket.AF_INET else 6,
                        dst=f"{dst}/{dst_len}" if dst else "default",
                        gateway=_ip(a[RTA_GATEWAY]) if RTA_GATEWAY in a else "",
                        oif=struct.unpack("=i", a[RTA_OIF])[0] if RTA_OIF in a else 0,
                        table=rtable,
                        protocol=ROUTE_PROTOCOLS.get(proto, str(proto)),
                        type=ROUTE_TYPES.get(rtype, str(rtype)),
                        prefsrc=_ip(a[RTA_PREFSRC]) if RTA_PREFSRC in a else "",
                    )
                )
        return out

    def neighbours(self, index: int = 0, bridge_fdb: bool = False) -> list[Neighbour]:
        """The neighbour table (IPv4 and IPv6) or, with `bridge_fdb`, the bridge forwarding
        database (a VXLAN device's entries: MAC -> remote VTEP); only device `index` if set."""
        family = AF_BRIDGE if bridge_fdb else socket.AF_UNSPEC
        # Strict checking refuses an ifindex in the header of a neighbour dump (the bridge
        # FDB takes it as its port filter); the neighbour table is filtered here instead.
        header = _NDMSG.pack(family, index if bridge_fdb else 0, 0, 0, 0)
        out = []
        for kind, body in _dump(self.sock, RTM_GETNEIGH, header):
            if kind != RTM_NEWNEIGH:
                continue
            _fam, ifindex, state, _flags, _type = _NDMSG.unpack_from(body, 0)
            if index and ifindex != index:
                continue
            a = _attrs(body, _NDMSG.size, len(body))
            dst = _ip(a[NDA_DST]) if NDA_DST in a else ""
            mac = _mac(a[NDA_LLADDR]) if NDA_LLADDR in a else ""
            if bridge_fdb and (not dst or mac == "00:00:00:00:00:00"):
                continue
            names = [name for bit, name in NUD_STATES.items() if state & bit]
            out.append(
                Neighbour(ifindex, dst, mac, ",".join(names) or "none", bool(state & NUD_PERMANENT))
            )
        return out


def _parse_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body, 0)
    a = _attrs(body, _IFINFOMSG.size, len(body))
    kind = ""
    info: dict[str, str] = {}
    if IFLA_LINKINFO in a:
        li = _attrs(a[IFLA_LINKINFO], 0, len(a[IFLA_LINKINFO]))
        kind = _cstr(li.get(IFLA_INFO_KIND, b""))
        data = li.get(IFLA_INFO_DATA)
        if data is not None:
            d = _attrs(data, 0, len(data))
            if kind == "vxlan":
                if IFLA_VXLAN_ID in d:
                    info["VNI"] = str(struct.unpack("=I", d[IFLA_VXLAN_ID][:4])[0])
                if IFLA_VXLAN_LOCAL in d:
                    info["Local"] = _ip(d[IFLA_VXLAN_LOCAL])
                if IFLA_VXLAN_PORT in d:
                    info["Port"] = str(struct.unpack("!H", d[IFLA_VXLAN_PORT][:2])[0])
            elif kind == "macvlan" and IFLA_MACVLAN_MODE in d:
                mode = struct.unpack("=I", d[IFLA_MACVLAN_MODE][:4])[0]
                info["Mode"] = MACVLAN_MODES.get(mode, str(mode))
    stats = (0,) * 8
    if IFLA_STATS64 in a and len(a[IFLA_STATS64]) >= 64:
        stats = struct.unpack_from("=8Q", a[IFLA_STATS64], 0)
    oper = a.get(IFLA_OPERSTATE, b"\0")[0]
    return Link(
        index=index,
        name=_cstr(a.get(IFLA_IFNAME, b"")),
        kind=kind,
        alias=_cstr(a.get(IFLA_IFALIAS, b"")),
        master=struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else 0,
        mtu=struct.unpack("=I", a[IFLA_MTU])[0] if IFLA_MTU in a else 0,
        up=bool(flags & IFF_UP),
        operstate=OPERSTATES[oper] if oper < len(OPERSTATES) else str(oper),
        mac=_mac(a.get(IFLA_ADDRESS, b"")),
        peer=struct.unpack("=i", a[IFLA_LINK])[0] if IFLA_LINK in a else 0,
        peer_netnsid=struct.unpack("=i", a[IFLA_LINK_NETNSID])[0] if IFLA_LINK_NETNSID in a else -1,
        rx_packets=stats[0],
        tx_packets=stats[1],
        rx_bytes=stats[2],
        tx_bytes=stats[3],
        rx_dropped=stats[6],
        tx_dropped=stats[7],
        info=info,
    )


def listeners(path: str | None = None) -> list[Listener]:
    """TCP sockets in LISTEN and bound UDP sockets of a namespace, from the kernel's socket
    table (sock_diag), as `ss -ltnu` would list them."""
    if path is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    else:
        sock = netns.socket_in(path, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    out: set[Listener] = set()
    try:
        sock.bind((0, 0))
        for family in (socket.AF_INET, socket.AF_INET6):
            for proto, states in (("tcp", 1 << TCP_LISTEN), ("udp", 0xFFFFFFFF)):
                number = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
                req = _DIAG_REQ.pack(family, number, 0, states, b"\0" * 48)
                for kind, body in _dump(sock, SOCK_DIAG_BY_FAMILY, req):
                    if kind != SOCK_DIAG_BY_FAMILY or len(body) < _DIAG_MSG.size:
                        continue
                    fam, _state, _t, _r, sport, dport, src, _dst, *_rest = _DIAG_MSG.unpack_from(
                        body, 0
                    )
                    if proto == "udp" and struct.unpack("!H", dport)[0] != 0:
                        continue  # a connected UDP socket is a client, not a server
                    raw = src[:4] if fam == socket.AF_INET else src
                    out.add(Listener(proto, _ip(raw), struct.unpack("!H", sport)[0]))
    finally:
        sock.close()
    return sorted(out, key=lambda x: (x.proto, x.port, x.addr))


# -- nftables listings ------------------------------------------------------------------------

NFT_OUTPUT_HANDLE = 1 << 3
NFT_OUTPUT_JSON = 1 << 4


class NftListError(OSError):
    pass


def nft_list(
    command: str, path: str | None = None, json: bool = False, handles: bool = False
) -> str:
    """The output of one nft listing command (`list table inet tether`), run in the
    namespace at `path` (None: the caller's), in JSON or as text with rule handles.

    A context of its own each time, made inside the namespace (its netlink socket belongs to
    the namespace it was opened in) and freed after: ~1.5 ms, and nothing is held."""
    import ctypes
    import ctypes.util

    from tether.kernel.nft import new_ctx

    lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    if path is None:
        ctx = new_ctx(lib)
    else:
        with netns.entered(path):
            ctx = new_ctx(lib)
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        flags = (NFT_OUTPUT_JSON if json else 0) | (NFT_OUTPUT_HANDLE if handles else 0)
        lib.nft_ctx_output_set_flags(ctx, flags)
        rc = lib.nft_run_cmd_from_buffer(ctx, command.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
    finally:
        lib.nft_ctx_free(ctx)
    if rc != 0:
        raise NftListError(err.strip() or f"nft {command} failed")
    return out


NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NFTA_TABLE_NAME = 1
NLM_F_ACK = 0x4
NFPROTO = {"ip": 2, "ip6": 10, "inet": 1, "arp": 3, "bridge": 7, "netdev": 5}


def nft_table_exists(family: str, name: str, path: str | None = None) -> bool:
    """Whether a namespace holds nftables table `family name`: one NFT_MSG_GETTABLE over
    nfnetlink (~50 us), where a libnftables listing costs milliseconds (doctor asks this of
    every sandbox)."""
    if path is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    else:
        sock = netns.socket_in(path, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        raw = name.encode() + b"\0"
        attr = _RTATTR.pack(4 + len(raw), NFTA_TABLE_NAME) + raw + b"\0" * ((4 - len(raw) % 4) % 4)
        payload = struct.pack("=BBH", NFPROTO[family], 0, 0) + attr  # nfgenmsg, then the name
        seq = int.from_bytes(os.urandom(4), "little")
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
        sock.send(
            _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0)
            + payload
        )
        found = False
        while True:
            data = sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    return found
                if mseq == seq:
                    if mtype == NLMSG_ERROR:
                        (err,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
                        if err == 0:
                            return found
                        if -err == 2:  # ENOENT
                            return False
                        raise OSError(-err, os.strerror(-err))
                    if mtype == NLMSG_DONE:
                        return found
                    found = True
                off += (length + 3) & ~3
    finally:
        sock.close()
