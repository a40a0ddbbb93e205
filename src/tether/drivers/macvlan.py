"""The macvlan driver: containers straight on a LAN, each with its own MAC address.

Each endpoint is a macvlan port of the network's parent link (`-o parent=eth0`), created
directly inside the container's namespace.  Frames leave through the parent without crossing
the host's IP stack, so there is no bridge, no NAT and no host firewall on the path: the LAN
sees one more station per container.  As with Docker:

- `-o macvlan_mode=bridge|private|vepa|passthru` (bridge by default): bridge lets ports of one
  parent reach each other inside the kernel; private forbids it; vepa sends everything to the
  LAN switch (which must hairpin); passthru gives the single port the parent's identity.
- no parent, or `--internal`: the network has no link to the LAN at all.  Docker makes a
  dummy link `dm-<id12>` for that; this kernel has no dummy devices, so tether uses an
  unconnected Linux bridge `tm-<id12>` as the private parent, which is the same thing for
  macvlan (an L2 segment that goes nowhere).
- `-o parent=eth0.20` needs 802.1q VLAN links, which this kernel lacks: refused, nothing made.
- the gateway is a router on the LAN, never an address of this host; the host itself cannot
  reach its own macvlan containers through the parent (a macvlan limitation: see
  docs/macvlan.md for the usual workaround).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import asdict, dataclass

from pyroute2.netlink.exceptions import NetlinkError

from tether.drivers.base import Capabilities, HostDevice, NetworkDriver, Sandbox
from tether.drivers.catalog import option_refusal
from tether.errors import Forbidden, InvalidParameter, SystemFailure
from tether.kernel.rtdump import LinkInfo
from tether.kernel.rtnl import Rtnl
from tether.model import Endpoint, Network
from tether.options import OPT_MTU, parse_mtu

log = logging.getLogger("tether.macvlan")

NAME = "macvlan"
OPT_PARENT = "parent"
OPT_MODE = "macvlan_mode"
MODES = ("bridge", "private", "vepa", "passthru")
# The stand-in for Docker's dm-<id12> dummy parent: an unconnected bridge, owned by name.
PRIVATE_PREFIX = "tm-"
ALIAS_PREFIX = "tether:macvlan:"
VLAN_RE = re.compile(r"^(?P<parent>.+)\.(?P<vid>[^.]*)$")


@dataclass
class MacvlanState:
    parent: str  # the link the ports hang off
    mode: str = "bridge"
    mtu: int = 0
    # The parent is tether's private stand-in bridge (no parent given, or --internal).
    private_parent: bool = False

    @classmethod
    def of(cls, net: Network) -> MacvlanState:
        return cls(**net.driver_state)


def private_parent_name(net_id: str) -> str:
    return PRIVATE_PREFIX + net_id[:12]


class MacvlanDriver(NetworkDriver):
    name = NAME
    caps = Capabilities(publishes_ports=False)

    def __init__(self, rtnl: Rtnl) -> None:
        self.rtnl = rtnl
        self._vlan_supported: bool | None = None

    # -- networks ------------------------------------------------------------------------

    def validate(self, net: Network, others: list[Network]) -> None:
        options = net.options or {}
        for key in options:
            refused = option_refusal(NAME, key)
            if refused:
                raise InvalidParameter(refused)
        mode = options.get(OPT_MODE, "") or "bridge"
        if mode not in MODES:
            raise InvalidParameter(
                f"requested macvlan mode '{mode}' is not valid, 'bridge' mode is the macvlan "
                "driver default"
            )
        parent = options.get(OPT_PARENT, "")
        if parent == "lo":
            raise InvalidParameter("loopback interface is not a valid macvlan parent link")
        # Docker 20.10: "empty --parent= and --internal are handled the same".
        private = not parent or net.internal
        if private:
            parent = private_parent_name(net.id)
        mtu = parse_mtu(options[OPT_MTU]) if OPT_MTU in options else 0
        for other in others:
            if other.driver != NAME or other.id == net.id:
                continue
            theirs = MacvlanState.of(other)
            if theirs.parent != parent:
                continue
            if mode == "passthru":
                raise Forbidden(
                    f"cannot use mode passthru, macvlan network {other.id} is already using "
                    f"parent interface {parent}"
                )
            if theirs.mode == "passthru":
                raise Forbidden(
                    f"macvlan network {other.id} is already using parent interface {parent} "
                    "in mode passthru"
                )
        net.driver_state = asdict(
            MacvlanState(parent=parent, mode=mode, mtu=mtu, private_parent=private)
        )

    async def check_kernel(self, net: Network) -> None:
        st = MacvlanState.of(net)
        if st.private_parent:
            return
        link = await self.rtnl.link(st.parent)
        if link is None:
            found = VLAN_RE.match(st.parent)
            if found is None:
                raise InvalidParameter(
                    f"invalid subinterface vlan name {st.parent}, example formatting is eth0.10"
                )
            vid = found["vid"]
            if not vid.isdigit():
                raise InvalidParameter(
                    f"unable to parse a valid vlan id from: {st.parent} (ex. eth0.10 for vlan 10)"
                )
            if not 1 <= int(vid) <= 4094:
                raise InvalidParameter(f"vlan id must be between 1-4094, received: {int(vid)}")
            if await self.rtnl.link(found["parent"]) is None:
                raise InvalidParameter(
                    f"-o parent interface was not found on the host: {found['parent']}"
                )
            if not await self._vlans():
                raise Forbidden(
                    f"failed to create {st.parent} vlan link: this kernel has no 802.1q VLAN "
                    "support (CONFIG_VLAN_8021Q), so a parent like eth0.20 cannot be made; "
                    "use an existing link as -o parent"
                )
            raise Forbidden(
                f"failed to create {st.parent} vlan link: tether does not create 802.1q "
                "links; create it first (ip link add link PARENT name PARENT.VID type vlan "
                "id VID) and pass it as -o parent"
            )
        if link.alias.startswith("tether:") or link.name.startswith(PRIVATE_PREFIX):
            raise Forbidden(
                f"{st.parent} belongs to tether (another network's device) and cannot be a "
                "macvlan parent"
            )
        if st.mtu and link.mtu and st.mtu > link.mtu:
            raise InvalidParameter(
                f"invalid MTU {st.mtu}: larger than the MTU of parent {st.parent} ({link.mtu})"
            )

    async def _vlans(self) -> bool:
        if self._vlan_supported is None:
            self._vlan_supported = await self.rtnl.kind_supported("vlan")
        return self._vlan_supported

    async def create(self, net: Network) -> None:
        st = MacvlanState.of(net)
        if st.private_parent:
            await self._ensure_private_parent(net, st, None)

    async def _ensure_private_parent(
        self, net: Network, st: MacvlanState, link: LinkInfo | None
    ) -> bool:
        changed = False
        if link is None:
            try:
                index = await self.rtnl.add_bridge(st.parent, st.mtu)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise SystemFailure(f"failed to create {st.parent}: {exc}") from exc
                found = await self.rtnl.index(st.parent)
                assert found is not None
                index = found
            changed = True
        else:
            index = link.index
        if link is None or link.alias != ALIAS_PREFIX + net.id:
            await self.rtnl.set_link(index, ifalias=ALIAS_PREFIX + net.id)
        if link is None or not link.up:
            await self.rtnl.up(index)
            changed = True
        return changed

    async def delete(self, net: Network) -> None:
        st = MacvlanState.of(net)
        if st.private_parent:
            index = await self.rtnl.index(st.parent)
            if index is not None:
                await self.rtnl.delete_in_thread(index)

    def host_devices(self, net: Network) -> list[HostDevice]:
        # The parent: the user's link (any kind), or the bridge standing in for Docker's
        # dummy parent of an --internal network.
        st = MacvlanState.of(net)
        return [HostDevice(st.parent, "bridge" if st.private_parent else "", "macvlan parent")]

    # -- endpoints -----------------------------------------------------------------------

    async def join(self, net: Network, ep: Endpoint, sandbox: Sandbox) -> None:
        st = MacvlanState.of(net)
        parent = await self.rtnl.index(st.parent)
        if parent is None:
            raise SystemFailure(
                f"the requested parent interface {st.parent} was not found on the host"
            )
        fd = os.open(sandbox.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            await self.rtnl.add_macvlan(ep.ifname, parent, st.mode, fd, ep.mac, st.mtu)
        except NetlinkError as exc:
            raise SystemFailure(
                f"failed to create the macvlan port {ep.ifname} on {st.parent}: "
                f"{_netlink_text(exc)}"
            ) from exc
        finally:
            os.close(fd)
        inner = sandbox.inner
        index = await inner.index(ep.ifname)
        if index is None:
            raise SystemFailure(f"{ep.ifname} did not appear in the sandbox")
        step = "configure"
        try:
            ep.index = index
            if not ep.ipv6:
                await inner.no_ipv6_link_local(index)
            for cidr in (ep.ipv4, ep.ipv6):
                if cidr:
                    step = f"add address {cidr} to"
                    await inner.add_address(index, cidr)
            step = "bring up"
            await inner.up(index)
        except Exception as exc:
            await inner.delete(index)
            if not isinstance(exc, NetlinkError):
                raise
            if exc.code == errno.EADDRINUSE and step == "bring up":
                # The kernel refuses a second port with one MAC on a parent.
                raise SystemFailure(
                    f"failed to bring up the macvlan port {ep.ifname} on {st.parent}: another "
                    f"port of {st.parent} already has its MAC address {ep.mac}"
                ) from exc
            raise SystemFailure(
                f"failed to {step} the macvlan port {ep.ifname} on {st.parent}: "
                f"{_netlink_text(exc)}"
            ) from exc

    async def leave(self, net: Network, ep: Endpoint, sandbox_path: str | None) -> None:
        # The port lives only inside the sandbox.  It is deleted now even when the namespace
        # goes next: the kernel frees a namespace's interfaces later, in a worker, and only
        # once nothing holds the namespace; until then the port keeps its MAC on the parent
        # (and answers ARP for its address), and the next port with that MAC cannot come up.
        if not sandbox_path or not os.path.exists(sandbox_path):
            return
        try:
            inner = Rtnl.open(sandbox_path)
        except OSError:  # the file is there but no longer a namespace (a crash mid-delete)
            return
        try:
            index = await inner.index(ep.ifname)
            if index is not None:
                await inner.delete(index)
        finally:
            inner.close()

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, nets: list[Network]) -> int:
        changes = 0
        host_links = self.rtnl.links("bridge")
        wanted = {
            st.parent: (net, st)
            for net in nets
            for st in [MacvlanState.of(net)]
            if st.private_parent
        }
        present = {link.name: link for link in host_links}
        for link in host_links:
            # Ours by alias only: a bridge called tm-x that another driver (or the user)
            # made is not a private parent.  Safe after a crash: the alias is set right
            # after the bridge is made, and its network is in the store by then (wanted).
            ours = link.alias.startswith(ALIAS_PREFIX)
            if ours and link.name not in wanted:
                log.info("removing stray macvlan parent name=%s", link.name)
                await self.rtnl.delete_in_thread(link.index)
                changes += 1
        for name, (net, st) in wanted.items():
            if await self._ensure_private_parent(net, st, present.get(name)):
                log.info("macvlan private parent repaired name=%s network=%s", name, net.name)
                changes += 1
        return changes


def _netlink_text(exc: NetlinkError) -> str:
    """`Address already in use (EADDRINUSE)` rather than pyroute2's `(98, '...')`."""
    name = errno.errorcode.get(exc.code, str(exc.code))
    return f"{os.strerror(exc.code)} ({name})"
