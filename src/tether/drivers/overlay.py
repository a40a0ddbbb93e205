"""The overlay driver: one L2 network across every node of the cluster, over VXLAN.

Per node and network (made on every node as soon as the network exists in the cluster store):
a Linux bridge `ov-<id12>` that carries no address on the host (overlay subnets are not
routed on the nodes, so an overlay is isolated from every other network as a bridge network
is), and a VXLAN device `vx-<id12>` on it (VNI from the store, local = this node's advertise
address, UDP 4789 by default) that neither learns nor floods: every remote endpoint's MAC is
an FDB entry towards its node's VTEP, and its IP a permanent neighbour entry that the device
answers ARP from (`proxy`).  Those entries are programmed from the cluster store's watch
(cluster/follower.py calls `program`), never resolved on a kernel miss: flannel's lesson,
and what Docker's classic overlay got wrong (moby/libnetwork#1108, moby/moby#20398).

Endpoints are veth pairs into the bridge, as with the bridge driver.  They carry no default
route: containers reach the outside through a local gateway bridge (`docker_gwbridge`),
which the engine adds when nothing else gives them one.  MTU: the underlay's minus 50 (the
VXLAN header) unless `-o com.docker.network.driver.mtu` says otherwise.

The ingress network (`--ingress`, the routing mesh's) is an overlay whose bridge carries one
address per node, claimed like an endpoint's (cluster/ingress.py): connections to services'
published ports are DNATed on the node to a task and leave from that address.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Protocol

from tether.drivers import veth
from tether.drivers.base import (
    Capabilities,
    FirewallFacts,
    HostDevice,
    NetworkDriver,
    Sandbox,
)
from tether.drivers.catalog import OVERLAY_ENCRYPTED, option_refusal
from tether.errors import ClaimTaken, Forbidden, InvalidParameter, SystemFailure
from tether.kernel.rtdump import LinkInfo
from tether.kernel.rtnl import Rtnl
from tether.kernel.sysctl import set_sysctl
from tether.model import Endpoint, Network
from tether.options import OPT_MTU, parse_mtu

log = logging.getLogger("tether.overlay")

NAME = "overlay"
OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"
BRIDGE_PREFIX = "ov-"
VXLAN_PREFIX = "vx-"
ALIAS_PREFIX = "tether:overlay:"
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
# -o encrypted: outer IPv4 20 + UDP 8 + tether-crypt's header 28 + virtio-net header 10 +
# inner Ethernet 14 + AEAD tag 16 (crypt/wire.py OVERHEAD): a full frame fits one datagram.
ENCRYPTED_OVERHEAD = 96
OPT_ENCRYPTED = OVERLAY_ENCRYPTED  # Docker's option: its presence asks for encryption
FIRST_VNI = 4096  # Docker's overlay starts its VNIs here
MAX_VNI = (1 << 24) - 1
INGRESS_CLAIM = "ingress/network"


@dataclass
class OverlayState:
    vni: int  # 0 until the cluster store handed one out
    mtu: int = 0  # 0: the underlay's MTU minus 50, decided on each node
    # -o encrypted: a TAP port to tether-crypt instead of a VXLAN device (crypt/manager.py)
    encrypted: bool = False

    @classmethod
    def of(cls, net: Network) -> OverlayState:
        return cls(**net.driver_state)


@dataclass(frozen=True)
class Remote:
    """An endpoint of the network on another node, as the store has it."""

    ip: str  # IPv4 (or IPv6) address, no prefix
    mac: str
    vtep: str  # its node's advertise address


class EncryptedPorts(Protocol):
    """What carries an encrypted overlay's frames between nodes (crypt/manager.py)."""

    async def ensure(self, net: Network, bridge: int, mtu: int) -> bool: ...

    async def program(self, net: Network, remotes: list[Remote]) -> int: ...

    async def delete(self, net: Network) -> None: ...

    async def reconcile(self, nets: list[Network]) -> int: ...

    async def joined(self, inner: Rtnl, ep: Endpoint) -> None: ...


def bridge_name(net: Network) -> str:
    return BRIDGE_PREFIX + net.id[:12]


def vxlan_name(net: Network) -> str:
    return VXLAN_PREFIX + net.id[:12]


def requested_vni(options: dict[str, str]) -> int:
    """`-o com.docker.network.driver.overlay.vxlanid_list=N` (one VNI: one subnet here)."""
    text = options.get(OPT_VNI, "")
    if not text:
        return 0
    first = text.split(",")[0].strip()
    if not first.isdigit() or not 1 <= int(first) <= MAX_VNI:
        raise InvalidParameter(f"invalid VXLAN id {text!r}: must be between 1 and {MAX_VNI}")
    if "," in text:
        raise InvalidParameter(
            f"{OPT_VNI} takes one VXLAN id per network (tether's overlays have one subnet)"
        )
    return int(first)


class OverlayDriver(NetworkDriver):
    name = NAME
    caps = Capabilities(
        scope="global", needs_cluster=True, default_route=False, ingress=True, encryption=True
    )

    def __init__(self, rtnl: Rtnl, vtep: str, port: int, underlay_mtu: int) -> None:
        self.rtnl = rtnl
        self.vtep = vtep  # this node's advertise address
        self.port = port
        self.underlay_mtu = underlay_mtu
        # What this node programmed per network: {ip: Remote}; rebuilt from the kernel at
        # start (reconcile), so a restart never reprograms what is already right.
        self.programmed: dict[str, dict[str, Remote]] = {}
        # What the store says each network's remote endpoints are: {ip: Remote}, set whole
        # by `program` and changed in place by `patch`.
        self.wanted: dict[str, dict[str, Remote]] = {}
        self._lock = asyncio.Lock()
        # Encrypted networks' data path (set by the daemon: crypt/manager.py).
        self.encryption: EncryptedPorts | None = None

    def mtu(self, net: Network) -> int:
        st = OverlayState.of(net)
        overhead = ENCRYPTED_OVERHEAD if st.encrypted else VXLAN_OVERHEAD
        return st.mtu or max(68, self.underlay_mtu - overhead)

    # -- networks ------------------------------------------------------------------------

    def validate(self, net: Network, others: list[Network]) -> None:
        options = net.options or {}
        for key in options:
            refused = option_refusal(NAME, key)
            if refused is not None:
                raise InvalidParameter(refused)
        mtu = parse_mtu(options[OPT_MTU]) if OPT_MTU in options else 0
        vni = requested_vni(options)
        if vni and any(
            o.driver == NAME and OverlayState.of(o).vni == vni for o in others if o.id != net.id
        ):
            raise Forbidden(f"VXLAN id {vni} is already in use by another overlay network")
        if OPT_ENCRYPTED in options and ":" in self.vtep:
            # tether-crypt's socket, header sizes and firewall rules are IPv4 only.
            raise InvalidParameter(
                f"encrypted overlay networks need an IPv4 --cluster-advertise address "
                f"(this node advertises {self.vtep})"
            )
        net.driver_state = asdict(
            OverlayState(vni=vni, mtu=mtu, encrypted=OPT_ENCRYPTED in options)
        )

    def claims(self, net: Network) -> list[str]:
        # The routing mesh has one network: the claim makes a second --ingress lose.
        return [f"vni/{OverlayState.of(net).vni}", *([INGRESS_CLAIM] if net.ingress else [])]

    def assign(self, net: Network, claimed: set[str]) -> None:
        if net.ingress and INGRESS_CLAIM in claimed:
            raise ClaimTaken(
                INGRESS_CLAIM,
                "rpc error: code = AlreadyExists desc = ingress network is already present",
            )
        st = OverlayState.of(net)
        if st.vni:
            if f"vni/{st.vni}" in claimed:
                raise ClaimTaken(
                    f"vni/{st.vni}", f"VXLAN id {st.vni} is already in use by another network"
                )
            return
        vni = FIRST_VNI
        while f"vni/{vni}" in claimed:
            vni += 1
        net.driver_state["vni"] = vni
        # Docker's inspect shows the VXLAN id it picked among the options.
        net.options = {**(net.options or {}), OPT_VNI: str(vni)}

    async def create(self, net: Network) -> None:
        """This node's half of a cluster network (every node runs it when the network
        appears in the store)."""
        st = OverlayState.of(net)
        if not st.vni:
            raise SystemFailure(f"overlay network {net.name} has no VXLAN id")
        async with self._lock:
            await self._ensure(net)

    async def _ensure(self, net: Network) -> bool:
        changed = False
        st = OverlayState.of(net)
        mtu = self.mtu(net)
        br = await self.rtnl.link(bridge_name(net))
        if br is None:
            index = await self.rtnl.add_bridge(bridge_name(net), mtu)
            await self.rtnl.set_link(index, ifalias=ALIAS_PREFIX + net.id)
            await self.rtnl.no_ipv6_link_local(index)
            changed = True
        else:
            index = br.index
        if st.encrypted:
            return await self._ensure_encrypted(net, index, mtu, br is None or not br.up)
        vx = await self.rtnl.link(vxlan_name(net))
        if vx is not None and await self.rtnl.vxlan_params(vx.name) != (self.vtep, st.vni):
            # This node's advertise address (or the VNI) changed: the device is remade, and
            # the follower programs its entries again (what it held went with it).
            log.info("overlay device %s remade for vtep=%s vni=%d", vx.name, self.vtep, st.vni)
            await self.rtnl.delete(vx.index)
            vx = None
        if vx is None:
            vx_index = await self.rtnl.add_vxlan(
                vxlan_name(net), st.vni, self.vtep, self.port, index, mtu
            )
            await self.rtnl.no_ipv6_link_local(vx_index)
            # The bridge must not learn remote MACs from frames: a learned entry outlives
            # the endpoint, and an address (so its MAC) that moves to this node would keep
            # going to the VXLAN port until it ages out.  Remote MACs get static entries.
            await self.rtnl.no_learning(vx_index)
            await self.rtnl.up(vx_index)
            self.programmed[net.id] = {}
            # A remade device (a restart, a new advertise address) gets what the store says
            # at once, not at the store's next change for this network.
            await self._apply(net, vx_index, list(self.wanted.get(net.id, {}).values()))
            changed = True
        elif not vx.up:
            await self.rtnl.up(vx.index)
            changed = True
        if br is None or not br.up:
            await self.rtnl.up(index)
            changed = True
        return changed

    async def _ensure_encrypted(self, net: Network, bridge: int, mtu: int, up: bool) -> bool:
        """An encrypted network's bridge gets a TAP port to tether-crypt, never a VXLAN
        device: its frames cross the underlay only sealed."""
        if self.encryption is None:
            raise SystemFailure(f"overlay network {net.name} is encrypted: no data path here")
        vx = await self.rtnl.link(vxlan_name(net))
        if vx is not None:
            await self.rtnl.delete(vx.index)
        changed = await self.encryption.ensure(net, bridge, mtu)
        if up:
            await self.rtnl.up(bridge)
            changed = True
        return changed

    async def delete(self, net: Network) -> None:
        async with self._lock:
            if self.encryption is not None and OverlayState.of(net).encrypted:
                await self.encryption.delete(net)
            for name in (vxlan_name(net), bridge_name(net)):
                index = await self.rtnl.index(name)
                if index is not None:
                    await self.rtnl.delete_in_thread(index)
            self.programmed.pop(net.id, None)
            self.wanted.pop(net.id, None)

    def host_devices(self, net: Network) -> list[HostDevice]:
        mtu, br = self.mtu(net), bridge_name(net)
        info = (("VNI", str(OverlayState.of(net).vni)), ("Local", self.vtep))
        if OverlayState.of(net).encrypted:
            # No VXLAN device: the bridge's port to tether-crypt carries the frames.
            from tether.crypt.manager import tap_name

            port = HostDevice(tap_name(net), "tun", "tap", mtu, info=info, master=br)
        else:
            port = HostDevice(vxlan_name(net), "vxlan", "vxlan", mtu, info=info, master=br)
        return [HostDevice(br, "bridge", "bridge", mtu, endpoints_master=True), port]

    def firewall(self, net: Network) -> FirewallFacts:
        # The bridge carries no address and no route: its verdicts keep its containers from
        # other networks' bridges like any network's; nothing leaves through it but VXLAN.
        return FirewallFacts(
            key=net.id[:12],
            name=net.name,
            iface=bridge_name(net),
            subnets4=tuple(p.subnet for p in net.pools if p.version == 4),
            subnets6=tuple(p.subnet for p in net.pools if p.version == 6),
            internal=net.internal,
            masquerade=False,
            ingress=net.ingress,
        )

    # -- the routing mesh's address on this node (ingress networks) -------------------------

    async def set_host_address(self, net: Network, cidr: str, mac: str) -> bool:
        """Give this node an address on the network, on its bridge (the routing mesh sends
        published ports' connections to tasks from it).  The bridge takes the MAC every
        node's FDB has for that address.  Returns whether anything changed."""
        async with self._lock:
            br = await self.rtnl.link(bridge_name(net))
            if br is None:
                return False
            changed = False
            if br.mac != mac:
                await self.rtnl.set_link(br.index, address=mac)
                changed = True
            held = self.rtnl.addresses().get(br.index, set())
            for old in held - {cidr}:
                await self.rtnl.del_address(br.index, old)
                changed = True
            if cidr not in held:
                await self.rtnl.add_address(br.index, cidr)
                changed = True
            # `curl 127.0.0.1:PORT` on the node: the DNAT sends loopback-sourced packets out
            # through the bridge (masqueraded there), which the kernel refuses without this.
            set_sysctl(f"net/ipv4/conf/{bridge_name(net)}/route_localnet", "1")
            return changed

    async def clear_host_address(self, net: Network) -> bool:
        async with self._lock:
            br = await self.rtnl.link(bridge_name(net))
            if br is None:
                return False
            held = self.rtnl.addresses().get(br.index, set())
            for old in held:
                await self.rtnl.del_address(br.index, old)
            return bool(held)

    # -- remote endpoints ------------------------------------------------------------------

    async def program(self, net: Network, remotes: list[Remote]) -> int:
        """Make the VXLAN device's FDB and neighbour table hold exactly `remotes` (the
        network's endpoints on other nodes).  Returns the number of entries changed.  Costs
        in proportion to the network's size: the path after a relist, a restart or a
        repair; a change the store names goes through `patch`."""
        async with self._lock:
            self.wanted[net.id] = {r.ip: r for r in remotes}
            if self.encryption is not None and OverlayState.of(net).encrypted:
                return await self.encryption.program(net, remotes)
            index = await self.rtnl.index(vxlan_name(net))
            if index is None:
                return 0
            return await self._apply(net, index, remotes)

    async def patch(self, net: Network, drop: list[str], put: list[Remote]) -> int:
        """Withdraw the addresses in `drop` and make each of `put` present, leaving every
        other entry alone: a change costs what it changes, not the network's size (the
        whole diff made every change cost ~230 ms at 5,000 endpoints).  Returns the number
        of entries changed."""
        async with self._lock:
            wanted = self.wanted.setdefault(net.id, {})
            for ip in drop:
                wanted.pop(ip, None)
            for r in put:
                wanted[r.ip] = r
            if self.encryption is not None and OverlayState.of(net).encrypted:
                # tether-crypt's ports take the whole list (crypt/manager.py).
                return await self.encryption.program(net, list(wanted.values()))
            index = await self.rtnl.index(vxlan_name(net))
            if index is None:
                return 0  # _ensure programs `wanted` when it makes the device
            have = self.programmed.setdefault(net.id, {})
            gone: list[tuple[Remote, Remote | None]] = []
            for ip in drop:
                if ip in have:
                    gone.append((have.pop(ip), None))
            add: list[Remote] = []
            for r in put:
                old = have.get(r.ip)
                if old == r:
                    continue
                if old is not None:
                    gone.append((have.pop(r.ip), r))
                add.append(r)
            # Withdrawals before additions, as in _apply.
            for old, new in gone:
                await self._withdraw(index, old, new)
            for r in add:
                await self._install(index, r)
                have[r.ip] = r
            return len(gone) + len(add)

    async def _apply(self, net: Network, index: int, remotes: list[Remote]) -> int:
        """The diff between what the device holds and `remotes`, applied (lock held)."""
        have = self.programmed.setdefault(net.id, {})
        want = {r.ip: r for r in remotes}
        changes = 0
        for ip, old in list(have.items()):
            new = want.get(ip)
            if new == old:
                continue
            await self._withdraw(index, old, new)
            del have[ip]
            changes += 1
        for ip, r in want.items():
            if ip in have:
                continue
            await self._install(index, r)
            have[ip] = r
            changes += 1
        return changes

    async def _withdraw(self, index: int, old: Remote, new: Remote | None) -> None:
        """`old`'s neighbour entry goes; its MAC's FDB entries too unless `new` keeps it."""
        await self.rtnl.neigh_del(index, old.ip)
        if new is None or new.mac != old.mac:
            await self.rtnl.fdb_del(index, old.mac, old.vtep)
            await self.rtnl.bridge_fdb_del(index, old.mac)

    async def _install(self, index: int, r: Remote) -> None:
        await self.rtnl.fdb_replace(index, r.mac, r.vtep)
        await self.rtnl.bridge_fdb_replace(index, r.mac)
        await self.rtnl.neigh_replace(index, r.ip, r.mac)

    async def relearn(self, net: Network) -> None:
        """Read back what the kernel holds (after a daemon restart), so `program` only
        changes what differs."""
        index = await self.rtnl.index(vxlan_name(net))
        if index is None:
            return
        await self.rtnl.no_learning(index)  # a device made by an older tether learned
        macs = dict(await self.rtnl.fdb_entries(index))
        held: dict[str, Remote] = {}
        for ip, mac in await self.rtnl.neigh_entries(index):
            if mac in macs:
                held[ip] = Remote(ip, mac, macs[mac])
        self.programmed[net.id] = held

    # -- endpoints -----------------------------------------------------------------------

    def prepare_endpoint(self, net: Network, ep: Endpoint) -> None:
        ep.host_ifname = veth.host_ifname(ep.id)

    async def join(self, net: Network, ep: Endpoint, sandbox: Sandbox) -> None:
        bridge = await self.rtnl.index(bridge_name(net))
        if bridge is None:
            # The network appeared in the store, but this node has not made it yet.
            await self.create(net)
            bridge = await self.rtnl.index(bridge_name(net))
            if bridge is None:
                raise SystemFailure(f"bridge {bridge_name(net)} of network {net.name} is missing")
        await veth.attach(self.rtnl, sandbox.inner, sandbox.path, bridge, self.mtu(net), ep)
        if self.encryption is not None and OverlayState.of(net).encrypted:
            await self.encryption.joined(sandbox.inner, ep)

    async def leave(self, net: Network, ep: Endpoint, sandbox_path: str | None) -> None:
        await self.rtnl.delete_in_thread(name=ep.host_ifname)

    async def endpoint_present(
        self, net: Network, ep: Endpoint, host_links: dict[str, LinkInfo], inner: Rtnl
    ) -> bool:
        return ep.host_ifname in host_links

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, nets: list[Network]) -> int:
        """Stray ov-/vx- devices go; every network's pair exists and is up."""
        changes = 0
        wanted = {n.id[:12]: n for n in nets}
        for link in [*self.rtnl.links("bridge"), *self.rtnl.links("vxlan")]:
            for prefix in (BRIDGE_PREFIX, VXLAN_PREFIX):
                if link.name.startswith(prefix) and link.name[len(prefix) :] not in wanted:
                    log.info("removing stray overlay device name=%s", link.name)
                    await self.rtnl.delete_in_thread(link.index)
                    changes += 1
        for net in nets:
            if OverlayState.of(net).vni:
                async with self._lock:
                    if await self._ensure(net):
                        changes += 1
        if self.encryption is not None:
            changes += await self.encryption.reconcile(nets)
        return changes

    async def sweep_endpoints(self, wanted: set[str]) -> int:
        # Overlay endpoints are veths named like the bridge driver's, which sweeps them all.
        return 0
