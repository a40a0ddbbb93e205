"""The bridge driver: one Linux bridge per network carrying its gateways, veth pairs to sandboxes.

Options (Docker's): `com.docker.network.bridge.name` (default `tb-<id12>`; a bridge the user
made first is used and never deleted), `...bridge.enable_icc`, `...bridge.enable_ip_masquerade`,
`com.docker.network.driver.mtu`.  They become `BridgeState` in `Network.driver_state`.

Kernel objects, owned by name: the bridge (`tb-<id12>` or the alias `tether:net:<id>`),
host ends of veths (`tv<endpoint id 12>`, drivers/veth.py), tombstones of removed bridges
(`tz-<id12>`).  Isolation, ICC and masquerading are the firewall's, from `firewall()`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import asdict, dataclass

from tether.drivers import veth
from tether.drivers.base import (
    TETHER_LINK_PREFIXES,
    Capabilities,
    FirewallFacts,
    HostDevice,
    NetworkDriver,
    Sandbox,
)
from tether.drivers.catalog import option_refusal
from tether.errors import Forbidden, InvalidParameter, SystemFailure
from tether.kernel.rtdump import LinkInfo
from tether.kernel.rtnl import Rtnl
from tether.kernel.sysctl import get_sysctl, set_sysctl
from tether.model import Endpoint, Network
from tether.options import OPT_MTU, parse_go_bool, parse_mtu
from tether.textcheck import ip_version

log = logging.getLogger("tether.bridge")

NAME = "bridge"
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
# The predefined network's own options (Docker shows them; they change nothing here).
OPT_DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"

DEFAULT_BRIDGE = "tether0"
ALIAS_PREFIX = "tether:net:"
BRIDGE_PREFIX = "tb-"
# A removed network's bridge, renamed and down, while the kernel finishes deleting it.
TOMBSTONE_PREFIX = "tz-"
# Linux interface names: at most 15 bytes, no '/', no whitespace, not '.' or '..'.
IFNAME_RE = re.compile(r"[^/\s:]{1,15}")


@dataclass
class BridgeState:
    bridge_name: str
    # The bridge existed before the network (-o bridge.name=<a bridge the user made>): tether
    # uses it but never deletes it, as Docker does.
    bridge_external: bool = False
    mtu: int = 0
    icc: bool = True
    masquerade: bool = True
    # A user's bridge: its route_localnet before tether set it, put back by `network rm`.
    route_localnet_was: str | None = None

    @classmethod
    def of(cls, net: Network) -> BridgeState:
        return cls(**net.driver_state)


def alias_for(net: Network) -> str:
    return ALIAS_PREFIX + net.id


def gateway_cidrs(net: Network) -> set[str]:
    return {f"{p.gateway}/{p.prefixlen}" for p in net.pools}


class BridgeDriver(NetworkDriver):
    name = NAME
    caps = Capabilities()

    def __init__(self, rtnl: Rtnl) -> None:
        self.rtnl = rtnl
        self.reaping: dict[asyncio.Task[None], int] = {}

    # -- networks ------------------------------------------------------------------------

    def predefined_options(self, name: str) -> dict[str, str]:
        """Docker's predefined `bridge` network's options, on `tether0`: `docker0` is
        dockerd's, and the two must never reap each other's bridges on a shared host."""
        return {
            OPT_DEFAULT_BRIDGE: "true",
            OPT_ICC: "true",
            OPT_MASQ: "true",
            OPT_HOST_BINDING: "0.0.0.0",
            OPT_BRIDGE_NAME: DEFAULT_BRIDGE,
            OPT_MTU: "1500",
        }

    def validate(self, net: Network, others: list[Network]) -> None:
        options = net.options or {}
        for key in options:
            refused = option_refusal(NAME, key, predefined=net.predefined)
            if refused:
                raise InvalidParameter(refused)
        given = options.get(OPT_BRIDGE_NAME, "")
        bridge_name = given or f"{BRIDGE_PREFIX}{net.id[:12]}"
        if not IFNAME_RE.fullmatch(bridge_name) or bridge_name in (".", ".."):
            raise InvalidParameter(f"invalid bridge name: {bridge_name}")
        if given.startswith(TETHER_LINK_PREFIXES):
            # The reconcilers own these names: a user's bridge called tm-x would be deleted
            # as a stray macvlan parent and rebuilt as this network's bridge, every 5 s.
            raise InvalidParameter(
                f"invalid bridge name: {given}: names starting with "
                f"{', '.join(TETHER_LINK_PREFIXES)} are tether's own"
            )
        if OPT_HOST_BINDING in options and ip_version(options[OPT_HOST_BINDING]) == 0:
            raise InvalidParameter(
                f"failed to parse {OPT_HOST_BINDING} value: {options[OPT_HOST_BINDING]} (nil ip)"
            )
        mtu = parse_mtu(options[OPT_MTU]) if OPT_MTU in options else 0
        icc = parse_go_bool(OPT_ICC, options[OPT_ICC]) if OPT_ICC in options else True
        masq = parse_go_bool(OPT_MASQ, options[OPT_MASQ]) if OPT_MASQ in options else True
        for other in others:
            if other.driver == NAME and BridgeState.of(other).bridge_name == bridge_name:
                raise Forbidden(
                    f"cannot create network {net.id} ({bridge_name}): conflicts with network "
                    f"{other.id} ({bridge_name}): networks have same bridge name"
                )
        net.driver_state = asdict(
            BridgeState(bridge_name=bridge_name, mtu=mtu, icc=icc, masquerade=masq)
        )

    async def check_kernel(self, net: Network) -> None:
        """Is the name free, or a bridge the user made (then it is used, never deleted)?"""
        st = BridgeState.of(net)
        link = await self.rtnl.link(st.bridge_name)
        if link is None:
            return
        if link.kind != "bridge":
            raise Forbidden(
                f"cannot create network {net.id} ({st.bridge_name}): "
                f"device {st.bridge_name} exists and is not a bridge"
            )
        if link.alias.startswith(ALIAS_PREFIX) and link.alias != alias_for(net):
            raise Forbidden(
                f"cannot create network {net.id} ({st.bridge_name}): "
                f"bridge {st.bridge_name} belongs to another tether network"
            )
        external = not link.alias.startswith(ALIAS_PREFIX)
        net.driver_state["bridge_external"] = external
        if external:
            # ensure() turns route_localnet on (published 127.0.0.1 ports); the bridge is
            # the user's, so what it had goes back when the network does.
            net.driver_state["route_localnet_was"] = get_sysctl(
                f"net/ipv4/conf/{st.bridge_name}/route_localnet"
            )

    async def create(self, net: Network) -> None:
        st = BridgeState.of(net)
        try:
            link = await self.rtnl.link(st.bridge_name) if st.bridge_external else None
            await self.ensure(net, link, set())
        except Exception as exc:
            if not st.bridge_external:
                await self.rtnl.delete_named(st.bridge_name)
            raise SystemFailure(f"failed to create bridge {st.bridge_name}: {exc}") from exc

    async def ensure(self, net: Network, link: LinkInfo | None, have: set[str] | None) -> bool:
        """Make the kernel match the network, given what the kernel has now.

        `link` is the bridge as last dumped (None: missing), `have` its addresses (None: not
        known, ask).  Returns whether anything had to change.
        """
        st = BridgeState.of(net)
        changed = False
        if link is None:
            if st.bridge_external:
                log.warning("bridge %s (made by the user) is gone; recreating it", st.bridge_name)
            index = await self.rtnl.add_bridge(st.bridge_name, st.mtu)
            have = set()
            changed = True
        else:
            index = link.index
            if st.mtu and link.mtu != st.mtu:
                await self.rtnl.set_link(index, mtu=st.mtu)
                changed = True
        if not st.bridge_external and (link is None or link.alias != alias_for(net)):
            await self.rtnl.set_link(index, ifalias=alias_for(net))
        # Published ports on 127.0.0.1 are DNATed out of the bridge: the kernel only routes
        # 127.0.0.0/8 sources off lo with route_localnet (the firewall's guard chain keeps
        # containers from using it to reach the host's loopback).
        set_sysctl(f"net/ipv4/conf/{st.bridge_name}/route_localnet", "1")
        if any(p.version == 6 for p in net.pools):
            set_sysctl("net/ipv6/conf/all/forwarding", "1")
            set_sysctl(f"net/ipv6/conf/{st.bridge_name}/disable_ipv6", "0")
            set_sysctl(f"net/ipv6/conf/{st.bridge_name}/accept_ra", "0")
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
        st = BridgeState.of(net)
        link = await self.rtnl.link(st.bridge_name)
        if link is None:
            return
        if st.bridge_external:
            for cidr in gateway_cidrs(net):
                await self.rtnl.del_address(link.index, cidr)
            if st.route_localnet_was is not None:
                set_sysctl(f"net/ipv4/conf/{st.bridge_name}/route_localnet", st.route_localnet_was)
            return
        await self.rtnl.set_link(link.index, state="down")
        await self.rtnl.set_link(link.index, ifname=TOMBSTONE_PREFIX + net.id[:12])
        self.reap(link.index)

    def reap(self, index: int) -> None:
        task = asyncio.get_running_loop().create_task(self._reap(index))
        self.reaping[task] = index
        task.add_done_callback(lambda t: self.reaping.pop(t, None))

    async def _reap(self, index: int) -> None:
        try:
            await self.rtnl.delete_in_thread(index)
        except Exception as exc:  # the reconciler will try again
            log.warning("deleting bridge index=%d failed: %s", index, exc)

    async def drain(self) -> None:
        """Wait until every tombstone is gone (clean stop)."""
        while self.reaping:
            await asyncio.gather(*list(self.reaping), return_exceptions=True)

    def default_host_ip(self, net: Network) -> str:
        """Docker's host_binding_ipv4: where -p without an address binds on this network."""
        ip = (net.options or {}).get(OPT_HOST_BINDING, "")
        return "" if ip in ("", "0.0.0.0") else ip

    def host_devices(self, net: Network) -> list[HostDevice]:
        st = BridgeState.of(net)
        gateways = tuple(f"{p.gateway}/{p.prefixlen}" for p in net.pools if p.gateway)
        return [
            HostDevice(st.bridge_name, "bridge", "bridge", st.mtu, gateways, endpoints_master=True)
        ]

    def firewall(self, net: Network) -> FirewallFacts:
        st = BridgeState.of(net)
        return FirewallFacts(
            key=net.id[:12],
            name=net.name,
            iface=st.bridge_name,
            subnets4=tuple(p.subnet for p in net.pools if p.version == 4),
            subnets6=tuple(p.subnet for p in net.pools if p.version == 6),
            internal=net.internal,
            icc=st.icc,
            masquerade=st.masquerade,
            gateways4=tuple(p.gateway for p in net.pools if p.version == 4 and p.gateway),
            gateways6=tuple(p.gateway for p in net.pools if p.version == 6 and p.gateway),
        )

    # -- endpoints -----------------------------------------------------------------------

    def prepare_endpoint(self, net: Network, ep: Endpoint) -> None:
        ep.host_ifname = veth.host_ifname(ep.id)

    async def join(self, net: Network, ep: Endpoint, sandbox: Sandbox) -> None:
        st = BridgeState.of(net)
        bridge = await self.rtnl.index(st.bridge_name)
        if bridge is None:
            raise SystemFailure(f"bridge {st.bridge_name} of network {net.name} is missing")
        await veth.attach(self.rtnl, sandbox.inner, sandbox.path, bridge, st.mtu, ep)

    async def leave(self, net: Network, ep: Endpoint, sandbox_path: str | None) -> None:
        # Deleting the host end takes the pair (and the sandbox end) with it.
        await self.rtnl.delete_in_thread(name=ep.host_ifname)

    async def endpoint_present(
        self, net: Network, ep: Endpoint, host_links: dict[str, LinkInfo], inner: Rtnl
    ) -> bool:
        return ep.host_ifname in host_links

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, nets: list[Network]) -> int:
        """Stray bridges (ours by name or alias) go; missing or broken ones are rebuilt."""
        changes = 0
        wanted = {BridgeState.of(n).bridge_name: n for n in nets}
        bridges = self.rtnl.links("bridge")
        by_name = {link.name: link for link in bridges}
        reaping = set(self.reaping.values())
        for link in bridges:
            if link.index in reaping:
                continue
            # Ours by alias only, never by name: a bridge someone else called tb-x is not
            # ours.  Safe after a crash: the alias is set right after the bridge is made,
            # whose network is in the store by then (so a crash in between leaves a wanted
            # bridge, which ensure() gives its alias), and a tombstone keeps its alias.
            if not link.alias.startswith(ALIAS_PREFIX):
                continue
            net = wanted.get(link.name)
            if net is None or (
                link.alias.startswith(ALIAS_PREFIX) and link.alias != alias_for(net)
            ):
                log.info("removing stray bridge name=%s alias=%s", link.name, link.alias or "-")
                await self.rtnl.delete_in_thread(link.index)
                by_name.pop(link.name, None)
                changes += 1
        addrs = self.rtnl.addresses() if wanted else {}
        for name, net in wanted.items():
            current = by_name.get(name)
            have = addrs.get(current.index, set()) if current is not None else set()
            if await self.ensure(net, current, have):
                log.info("bridge repaired name=%s network=%s", name, net.name)
                changes += 1
        return changes

    async def sweep_endpoints(self, wanted: set[str]) -> int:
        changes = 0
        for link in self.rtnl.links("veth"):
            if link.name.startswith(veth.HOST_PREFIX) and link.name not in wanted:
                log.info("removing stray veth name=%s", link.name)
                await self.rtnl.delete_in_thread(link.index)
                changes += 1
        return changes
