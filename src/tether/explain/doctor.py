"""`tether doctor`: what the store wants against what the kernel and the cluster hold.

Stale state that nobody reports is where the worst networking bugs hide (Docker's overlay
kept dead endpoints' FDB entries for months: moby/libnetwork#1108, moby/moby#20398).  doctor
compares, object by object, and names every difference with the object it belongs to:

- links: every network's devices (bridge, VXLAN device, macvlan's private parent) with their
  state, MTU, addresses; every running container's host-side veth on the right bridge; stray
  devices and namespaces of tether's that nothing wants;
- sandboxes: each container's interfaces (up, its MAC, its addresses), its routes (the
  subnets' and the default route through its gateway endpoint), the DNS redirect to
  127.0.0.11, and the service VIPs balanced in it (cluster/lb.py's `ip tether_svc`);
- nftables: every chain, rule and set element of `inet tether` against what
  firewall/render.py renders from the same state now (published ports are map elements);
- overlay: every VXLAN device's FDB and neighbour entries against the remote endpoints the
  cluster store holds;
- DNS: the embedded DNS's zone against the names of the running containers;
- the cluster: this node's lease and registration, and its endpoints in etcd against its
  containers.

`repair()` fixes what `check()` found with the engine's own reconcilers where they exist
(driver reconcile, Endpoints.repair, Firewall.sync, the overlay driver's program, the DNS
follower, reconcile_cluster), then checks again.

The kernel is read in a worker thread (struct netlink dumps, one libnftables context per
sandbox), from a snapshot of the state taken on the event loop, so a check of 500 sandboxes
does not hold the daemon up; a container that starts or stops meanwhile is left out of the
report rather than reported as drift.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.dns.records import Member, Zone
from tether.engine.sandbox import gateway_endpoint
from tether.explain.nftrules import normalized, rule_texts
from tether.firewall.render import MESH_CHAIN, TABLE, USER_CHAIN, FirewallState, render
from tether.kernel import observe
from tether.model import Container, Network

if TYPE_CHECKING:
    from tether.daemon.app import Daemon

log = logging.getLogger("tether.doctor")

REPAIR_ORDER = (
    "networks",
    "strays",
    "sandbox",
    "nft",
    "fdb",
    "dns",
    "vip",
    "cluster",
)


@dataclass
class Problem:
    kind: str  # link | address | route | nft | fdb | neighbour | dns | vip | cluster | netns
    object: str  # "container web", "network app", "nft chain inet tether forward"...
    text: str
    repair: str = ""  # what --repair does about it ("" : it cannot)
    action: tuple[str, str] = ("", "")  # (REPAIR_ORDER entry, its argument)
    owner: str = ""  # the container id it belongs to, for the race filter

    def to_api(self) -> dict[str, Any]:
        return {"Kind": self.kind, "Object": self.object, "Text": self.text, "Repair": self.repair}


@dataclass
class SandboxWant:
    """What one running container's namespace should hold (taken on the event loop)."""

    cid: str
    name: str
    path: str
    # (ifname, mac, [cidr...], network name)
    links: list[tuple[str, str, list[str], str]]
    defaults: list[tuple[int, str, str]]  # (family, gateway, ifname)
    dns: bool
    vips: dict[str, tuple[str, tuple[str, ...]]]  # lb.Wanted
    identity: tuple[Any, ...]


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_api(self) -> dict[str, Any]:
        return {
            "Problems": [p.to_api() for p in self.problems],
            "Checked": self.checked,
            "Seconds": round(self.seconds, 3),
        }


def _identity(c: Container) -> tuple[Any, ...]:
    return (
        c.state.status,
        c.state.pid,
        c.sandbox_key,
        tuple(sorted((ep.id, ep.ipv4) for ep in c.endpoints.values())),
        c.gateway,
        tuple((b.proto, b.host_ip, b.host_port, b.target_ip) for b in c.ports),
    )


class Doctor:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        # This node's endpoint records as the last check read them from etcd.
        self._cluster_docs: dict[str, Any] = {}

    # -- the API ----------------------------------------------------------------------------

    async def check_api(self) -> dict[str, Any]:
        return (await self.check()).to_api()

    async def repair(self) -> dict[str, Any]:
        before = await self.check()
        done = await self._repair(before.problems)
        after = await self.check()
        out = after.to_api()
        out["Found"] = [p.to_api() for p in before.problems]
        out["Repaired"] = done
        return out

    # -- check ------------------------------------------------------------------------------

    async def check(self) -> Report:
        start = time.monotonic()
        d = self.d
        rep = Report()
        running = [c for c in d.containers.by_id.values() if c.state.running and c.sandbox_key]
        nets = list(d.networks.by_id.values())
        wants = [self._sandbox_want(c) for c in running]
        state = d.firewall.state()
        host_wants = self._host_want(nets, running)
        overlay = self._overlay_want(nets)
        owners = {
            b.target_ip: c.name for c in d.containers.by_id.values() for b in c.ports if b.target_ip
        }
        loop = asyncio.get_running_loop()
        kernel = await loop.run_in_executor(
            None, _read_kernel, wants, host_wants, state, overlay, owners
        )
        rep.problems += kernel
        rep.problems += self._dns()
        if d.cluster is not None:
            rep.problems += await self._cluster()
        # A container that started, stopped or changed meanwhile: not drift, a race.
        current = {c.id: _identity(c) for c in d.containers.by_id.values()}
        wanted = {w.cid: w.identity for w in wants}
        rep.problems = [
            p for p in rep.problems if not p.owner or current.get(p.owner) == wanted.get(p.owner)
        ]
        rep.checked = {
            "Networks": len(nets),
            "Containers": len(running),
            "Sandboxes": len(wants),
            "OverlayNetworks": len(overlay),
            "Cluster": int(d.cluster is not None),
        }
        rep.seconds = time.monotonic() - start
        log.info(
            "doctor: %d problem(s), %d sandbox(es), %.2f s",
            len(rep.problems),
            len(wants),
            rep.seconds,
        )
        return rep

    def _sandbox_want(self, c: Container) -> SandboxWant:
        d = self.d
        own = c.sandbox_key.startswith(d.sandboxes.dir)
        links = []
        for name, ep in c.endpoints.items():
            cidrs = [x for x in (ep.ipv4, ep.ipv6) if x]
            links.append((ep.ifname, ep.mac, cidrs, name))
        defaults: list[tuple[int, str, str]] = []
        gw = gateway_endpoint(c, d.networks.by_id.get)
        if gw is not None:
            if gw.gateway4:
                defaults.append((4, gw.gateway4, gw.ifname))
            if gw.gateway6:
                defaults.append((6, gw.gateway6, gw.ifname))
        dns = d.dns_follower.view(c) is not None
        vips = d.balancer.wanted(c) if d.balancer is not None else {}
        return SandboxWant(
            c.id,
            c.name,
            c.sandbox_key if own else "",
            links,
            defaults,
            dns,
            dict(vips),
            _identity(c),
        )

    def _host_want(self, nets: list[Network], running: list[Container]) -> HostWant:
        d = self.d
        hw = HostWant(netns_dir=d.sandboxes.dir)
        bridges: dict[str, str] = {}  # network name -> the device its endpoints are ports of
        for net in nets:
            driver = d.drivers.by_name.get(net.driver)
            for dev in driver.host_devices(net) if driver is not None else []:
                hw.devices.append(
                    DeviceWant(
                        dev.name, dev.kind, net.name, dev.mtu, list(dev.addresses),
                        dict(dev.info), dev.master,
                    )
                )  # fmt: skip
                if dev.endpoints_master:
                    bridges[net.name] = dev.name
        for c in running:
            if c.sandbox_key:
                hw.netns.add(c.sandbox_key)
            for name, ep in c.endpoints.items():
                if not ep.host_ifname:
                    continue
                owner = d.networks.by_id.get(ep.network_id)
                bridge = bridges.get(owner.name, "") if owner is not None else ""
                hw.veths.append((ep.host_ifname, bridge, c.id, c.name, name))
        for c in d.containers.by_id.values():
            hw.netns.add(c.sandbox_key)
            hw.known_veths |= {ep.host_ifname for ep in c.endpoints.values() if ep.host_ifname}
        hw.aliases = {f"tether:net:{n.id}" for n in nets} | {f"tether:macvlan:{n.id}" for n in nets}
        return hw

    def _overlay_want(self, nets: list[Network]) -> list[OverlayWant]:
        d = self.d
        if d.cluster is None:
            return []
        from tether.drivers.overlay import OverlayState, vxlan_name

        out = []
        me = d.cluster.node.name
        for net in nets:
            if net.driver != "overlay" or OverlayState.of(net).encrypted:
                continue  # an encrypted overlay has no VXLAN device: tether-crypt holds its peers
            remotes = [
                (ep.ipv4, ep.mac, ep.vtep, ep.name, ep.node)
                for ep in d.cluster.endpoints.get(net.id, {}).values()
                if ep.node != me and ep.ipv4 and ep.mac
            ]
            out.append(OverlayWant(net.id, net.name, vxlan_name(net), remotes))
        return out

    def _dns(self) -> list[Problem]:
        """The zone the DNS server answers from against the names it should hold now."""
        d = self.d
        follower = d.dns_follower
        members: list[Member] = []
        owner: dict[tuple[str, str], str] = {}
        for c in d.containers.by_id.values():
            if not c.state.running:
                continue
            for m in follower.members_of(c):
                members.append(m)
                owner[(m.network, m.ipv4 or m.ipv6)] = c.name
        for held in follower.remote.values():
            members += list(held.values())
        members += list(follower.vips.values())
        want = Zone.build(members, 0)
        have = d.dns.zone
        problems = []
        for net in sorted(set(want.names) | set(have.names)):
            w, h = want.names.get(net, {}), have.names.get(net, {})
            for name in sorted(set(w) | set(h)):
                ws, hs = sorted(w.get(name, [])), sorted(h.get(name, []))
                if ws == hs:
                    continue
                ips = ", ".join(a or b for a, b in ws) or "nothing"
                got = ", ".join(a or b for a, b in hs) or "nothing"
                who = next((owner[(net, a or b)] for a, b in ws + hs if (net, a or b) in owner), "")
                problems.append(
                    Problem(
                        "dns",
                        f"container {who} (network {net})" if who else f"network {net}",
                        f'the embedded DNS answers "{name.rstrip(".")}" with {got}, it should '
                        f"answer {ips}",
                        "rebuild the DNS zone from the running containers",
                        ("dns", ""),
                    )
                )
        return problems

    async def _cluster(self) -> list[Problem]:
        """This node in etcd: its lease, its registration, its endpoints."""
        from tether.cluster import keys

        d = self.d
        cluster = d.cluster
        assert cluster is not None
        node = f"node {cluster.node.name}"
        if not cluster.connected.is_set():
            return [
                Problem(
                    "cluster",
                    node,
                    f"the cluster store {cluster.store_name} is unreachable: global networks "
                    "cannot change until it answers",
                )
            ]
        problems: list[Problem] = []
        try:
            lease = cluster.lease
            if lease is not None:
                info = await cluster.client.time_to_live(lease.id)
                if info.ttl <= 0:
                    problems.append(
                        Problem(
                            "cluster",
                            node,
                            f"this node's lease {lease.id:x} has expired: its endpoints vanished "
                            "from the other nodes (tetherd registers again by itself while the "
                            "store answers; restart it if that does not happen)",
                        )
                    )
            if await cluster.client.get(keys.node(cluster.node.name)) is None:
                problems.append(
                    Problem(
                        "cluster",
                        node,
                        "this node is not registered in the cluster store (tetherd registers "
                        "again by itself while the store answers; restart it if that does not "
                        "happen)",
                    )
                )
            listing = await cluster.client.get_prefix(keys.ENDPOINTS)
        except Exception as exc:
            return [*problems, Problem("cluster", node, f"reading the cluster store failed: {exc}")]
        held: dict[str, Any] = {}
        # The routing mesh's own endpoint (cluster/ingress.py) is no container's.
        mesh = getattr(d, "mesh", None)
        keep = {str(getattr(mesh, "endpoint_id", ""))} - {""}
        for kv in listing.kvs:
            try:
                doc = json.loads(kv.value)
            except ValueError:
                continue
            if doc.get("node") == cluster.node.name:
                held[str(doc.get("id"))] = doc
        mine: dict[str, tuple[Container, str, str]] = {}
        for c in d.containers.by_id.values():
            for name, ep in c.endpoints.items():
                net = d.networks.by_id.get(ep.network_id)
                if net is not None and net.scope == "global":
                    mine[ep.id] = (c, name, ep.ipv4.split("/")[0])
        self._cluster_docs = held
        for ep_id, (c, name, ip) in mine.items():
            doc = held.get(ep_id)
            if doc is None:
                problems.append(
                    Problem(
                        "cluster",
                        f"container {c.name} (network {name})",
                        f"its endpoint {ip} is not in the cluster store: the other nodes cannot "
                        "reach it or resolve its name",
                        "write it again under this node's lease",
                        ("cluster", f"write:{ep_id}"),
                        c.id,
                    )
                )
            elif doc.get("vtep") != cluster.node.addr:
                problems.append(
                    Problem(
                        "cluster",
                        f"container {c.name} (network {name})",
                        f"the cluster store sends its frames to {doc.get('vtep')}, this node is "
                        f"{cluster.node.addr}",
                        "write it again with this node's address",
                        ("cluster", f"update:{ep_id}"),
                        c.id,
                    )
                )
        for ep_id, doc in held.items():
            if ep_id not in mine and ep_id not in keep:
                problems.append(
                    Problem(
                        "cluster",
                        f"endpoint {ep_id[:12]} ({doc.get('name', '?')})",
                        "the cluster store holds an endpoint of this node that no container has: "
                        f"the other nodes still send {doc.get('ipv4', '?')} here",
                        "withdraw it",
                        ("cluster", f"withdraw:{ep_id}"),
                    )
                )
        return problems

    # -- repair -----------------------------------------------------------------------------

    async def _repair(self, problems: list[Problem]) -> list[str]:
        from tether.engine.reconcile import reconcile_networks, reconcile_sandboxes

        d = self.d
        actions: dict[str, set[str]] = defaultdict(set)
        for p in problems:
            if p.action[0]:
                actions[p.action[0]].add(p.action[1])
        done: list[str] = []
        for step in REPAIR_ORDER:
            args = actions.get(step)
            if not args:
                continue
            try:
                if step == "networks":
                    async with d.lock:
                        n = await reconcile_networks(d.networks)
                    done.append(f"networks: {n} kernel change(s) by the drivers' reconcile")
                elif step == "strays":
                    async with d.lock:
                        n = await reconcile_sandboxes(d.containers, d.endpoints)
                    done.append(f"strays: {n} stray object(s) removed")
                elif step == "sandbox":
                    for cid in sorted(args):
                        c = d.containers.by_id.get(cid)
                        if c is not None and c.state.running:
                            what = await self._repair_sandbox(c)
                            done.append(f"container {c.name}: {what}")
                elif step == "nft":
                    async with d.lock:
                        d.firewall.sync()
                    done.append("nftables: table inet tether rendered and applied again")
                elif step == "fdb":
                    for net_id in sorted(args):
                        done.append(await self._repair_overlay(net_id))
                elif step == "dns":
                    self._repair_dns()
                    done.append("dns: zone rebuilt from the running containers")
                elif step == "vip":
                    for cid in sorted(args):
                        done.append(await self._repair_vips(cid))
                elif step == "cluster" and d.cluster is not None:
                    done += await self._repair_cluster(sorted(args))
            except Exception as exc:
                log.exception("doctor repair %s failed", step)
                done.append(f"{step}: repair failed: {exc}")
        return done

    async def _repair_cluster(self, actions: list[str]) -> list[str]:
        """This node's endpoint records, written, rewritten or withdrawn one by one (the
        engine's reconcile_cluster works from the watch's cache, which may not have seen a
        change made a moment ago)."""
        from tether.model import RemoteEndpoint

        d = self.d
        cluster = d.cluster
        assert cluster is not None
        done = []
        for action in actions:
            verb, _, ep_id = action.partition(":")
            if verb == "withdraw":
                doc = self._cluster_docs.get(ep_id)
                if doc is not None:
                    fields = set(RemoteEndpoint.__dataclass_fields__)
                    remote = RemoteEndpoint(**{k: v for k, v in doc.items() if k in fields})
                    await cluster.release_endpoint(remote.network, remote)
                    done.append(f"cluster: endpoint {ep_id[:12]} ({remote.name}) withdrawn")
                continue
            found = next(
                (
                    (c, ep)
                    for c in d.containers.by_id.values()
                    for ep in c.endpoints.values()
                    if ep.id == ep_id
                ),
                None,
            )
            net = d.networks.by_id.get(found[1].network_id) if found is not None else None
            if found is None or net is None:
                continue
            c, ep = found
            remote = d.endpoints.remote_of(c, ep)
            if verb == "write" and await self._owns_address(net.id, remote.ipv4, ep.id):
                verb = "update"  # only the record went: its address is still this one's
            if verb == "update":
                await cluster.update_endpoint(net, remote)
                done.append(f"cluster: {c.name}'s endpoint on {net.name} rewritten")
            elif await cluster.republish(net, remote):
                done.append(f"cluster: {c.name}'s endpoint on {net.name} written again")
            else:
                done.append(
                    f"cluster: {c.name}'s address {ep.ipv4} on {net.name} was taken by another "
                    "node meanwhile: restart the container to get a new one"
                )
        return done

    async def _owns_address(self, net_id: str, ip: str, ep_id: str) -> bool:
        from tether.cluster import keys

        cluster = self.d.cluster
        if cluster is None or not ip:
            return False
        kv = await cluster.client.get(keys.address(net_id, ip))
        if kv is None:
            return False
        try:
            return bool(json.loads(kv.value).get("Owner") == ep_id)
        except ValueError:
            return False

    async def _repair_sandbox(self, c: Container) -> str:
        """The container's interfaces, addresses and routes as its endpoints say."""
        from tether.kernel.rtnl import Rtnl

        d = self.d
        rebuilt = await d.endpoints.repair(c)  # missing links: made again (veth pairs)
        fixed: list[str] = ["endpoints rebuilt"] if rebuilt else []
        inner = Rtnl.open(c.sandbox_key)
        try:
            links = {link.name: link for link in inner.dumper.links()}
            addrs = inner.addresses()
            host_links = {link.name: link for link in d.rtnl.links()}
            for name, ep in c.endpoints.items():
                link = links.get(ep.ifname)
                if link is None:
                    continue
                if not link.up:
                    await inner.up(link.index)
                    fixed.append(f"{ep.ifname} up")
                for cidr in (ep.ipv4, ep.ipv6):
                    if cidr and cidr not in addrs.get(link.index, set()):
                        await inner.add_address(link.index, cidr)
                        fixed.append(f"{cidr} on {ep.ifname}")
                host = host_links.get(ep.host_ifname) if ep.host_ifname else None
                net = d.networks.by_id.get(ep.network_id)
                if host is not None and net is not None:
                    want = self._bridge_of(net)
                    bridge = host_links.get(want) if want else None
                    if bridge is not None and host.master != bridge.index:
                        await d.rtnl.set_link(host.index, master=bridge.index)
                        fixed.append(f"{ep.host_ifname} back on {want}")
                    if not host.up:
                        await d.rtnl.up(host.index)
                        fixed.append(f"{ep.host_ifname} up")
                _ = name
            with observe.View(c.sandbox_key) as v:
                routes = v.routes()
            for ep in c.endpoints.values():
                link = links.get(ep.ifname)
                for cidr in (ep.ipv4, ep.ipv6):
                    if not cidr or link is None:
                        continue
                    import ipaddress

                    subnet = str(ipaddress.ip_interface(cidr).network)
                    if not any(r.dst == subnet and r.oif == link.index for r in routes):
                        await inner.ipr.route(
                            "replace",
                            dst=subnet,
                            oif=link.index,
                            scope=253,
                            proto=2,
                            prefsrc=cidr.split("/")[0],
                            family=socket.AF_INET6 if ":" in cidr else socket.AF_INET,
                        )
                        fixed.append(f"route {subnet} dev {ep.ifname}")
            c.gateway = ""  # set the default routes again, whatever they are now
            await d.sandboxes.set_gateway(c, inner, gateway_endpoint(c, d.networks.by_id.get))
            fixed.append("default route set")
        finally:
            inner.close()
        if d.dns_follower.view(c) is not None:
            d.dns.detach(c.id)
            d.dns_follower.prepare(c)
            fixed.append("DNS at 127.0.0.11 attached again")
        return ", ".join(fixed)

    def _bridge_of(self, net: Network) -> str:
        driver = self.d.drivers.by_name.get(net.driver)
        devices = driver.host_devices(net) if driver is not None else []
        return next((dev.name for dev in devices if dev.endpoints_master), "")

    async def _repair_overlay(self, net_id: str) -> str:
        from tether.drivers.overlay import Remote

        d = self.d
        net = d.networks.by_id.get(net_id)
        if net is None or d.overlay is None or d.cluster is None:
            return f"overlay {net_id[:12]}: gone"
        me = d.cluster.node.name
        remotes = [
            Remote(ep.ipv4, ep.mac, ep.vtep)
            for ep in d.cluster.endpoints.get(net.id, {}).values()
            if ep.node != me and ep.ipv4 and ep.mac
        ]
        await d.overlay.relearn(net)  # what the kernel really holds now
        n = await d.overlay.program(net, remotes)
        return (
            f"overlay {net.name}: {n} FDB/neighbour entr{'y' if n == 1 else 'ies'} programmed again"
        )

    def _repair_dns(self) -> None:
        d = self.d
        follower = d.dns_follower
        members: list[Member] = []
        follower.members = {}
        for c in d.containers.by_id.values():
            if not c.state.running:
                continue
            mine = follower.members_of(c)
            if mine:
                follower.members[c.id] = mine
                members += mine
        for held in follower.remote.values():
            members += list(held.values())
        members += list(follower.vips.values())
        follower.generation += 1
        d.dns.set_zone(Zone.build(members, follower.generation))

    async def _repair_vips(self, cid: str) -> str:
        d = self.d
        c = d.containers.by_id.get(cid)
        if c is None or d.balancer is None:
            return f"container {cid[:12]}: gone"
        rebuild = getattr(d.balancer, "rebuild", None)
        if rebuild is not None:  # the balancer makes the table and keeps its own books
            count = int(await rebuild(c))
        else:
            from tether.cluster.lb import changes, create_table
            from tether.kernel.nft import run_in_netns

            want = d.balancer.wanted(c)
            text = create_table() + changes({}, want)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, run_in_netns, c.sandbox_key, text)
            d.balancer.programmed[c.id] = want
            count = len(want)
        return f"container {c.name}: {count} service VIP(s) balanced again"


# -- what the host should hold ---------------------------------------------------------------


@dataclass
class DeviceWant:
    name: str
    kind: str  # bridge | vxlan | "" (a macvlan parent the user gave: any kind)
    network: str
    mtu: int
    addresses: list[str]
    info: dict[str, str]
    master: str = ""


@dataclass
class HostWant:
    netns_dir: str
    devices: list[DeviceWant] = field(default_factory=list)
    # (host veth, the bridge it belongs on, container id, container name, network name)
    veths: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    known_veths: set[str] = field(default_factory=set)
    netns: set[str] = field(default_factory=set)
    aliases: set[str] = field(default_factory=set)


@dataclass
class OverlayWant:
    net_id: str
    name: str
    device: str
    remotes: list[tuple[str, str, str, str, str]]  # (ip, mac, vtep, container name, node)


def _read_kernel(
    wants: list[SandboxWant],
    host: HostWant,
    state: FirewallState,
    overlays: list[OverlayWant],
    port_owners: dict[str, str],
) -> list[Problem]:
    """Everything doctor reads from the kernel (in a worker thread)."""
    problems: list[Problem] = []
    with observe.View() as v:
        links = v.links()
        addrs = v.addresses()
        problems += _check_host(host, links, addrs)
        problems += _check_overlays(v, overlays, links)
    for w in wants:
        problems += _check_sandbox(w)
    problems += _check_nft(state, port_owners)
    return problems


def _check_host(
    host: HostWant, links: list[observe.Link], addrs: list[observe.Address]
) -> list[Problem]:
    problems: list[Problem] = []
    by_name = {link.name: link for link in links}
    by_index = {link.index: link for link in links}
    have_addrs: dict[int, set[str]] = defaultdict(set)
    for a in addrs:
        have_addrs[a.index].add(a.cidr)
    net_fix = "recreate it with the network's driver (reconcile)"
    for dev in host.devices:
        obj = f"network {dev.network}"
        link = by_name.get(dev.name)
        if link is None:
            problems.append(
                Problem(
                    "link",
                    obj,
                    f"its device {dev.name} ({dev.kind or 'parent'}) is missing",
                    net_fix if dev.kind else "",
                    ("networks", "") if dev.kind else ("", ""),
                )
            )
            continue
        if dev.kind and link.kind != dev.kind:
            problems.append(
                Problem("link", obj, f"{dev.name} is a {link.kind or 'device'}, not a {dev.kind}")
            )
            continue
        if dev.kind and not link.up:
            problems.append(
                Problem("link", obj, f"{dev.name} is down", "set it up", ("networks", ""))
            )
        if dev.mtu and link.mtu != dev.mtu:
            problems.append(
                Problem(
                    "link",
                    obj,
                    f"{dev.name} has MTU {link.mtu}, the network wants {dev.mtu}",
                    "set the MTU again",
                    ("networks", ""),
                )
            )
        for cidr in dev.addresses:
            if cidr not in have_addrs.get(link.index, set()):
                problems.append(
                    Problem(
                        "address",
                        obj,
                        f"{dev.name} lacks its gateway address {cidr}",
                        "add it again",
                        ("networks", ""),
                    )
                )
        for key, value in dev.info.items():
            if value and link.info.get(key) != value:
                problems.append(
                    Problem(
                        "link",
                        obj,
                        f"{dev.name} has {key} {link.info.get(key, '?')}, the network wants {value}",
                        "make the device again",
                        ("networks", ""),
                    )
                )
        if dev.master:
            master = by_name.get(dev.master)
            if master is None or link.master != master.index:
                problems.append(
                    Problem(
                        "link",
                        obj,
                        f"{dev.name} is not on its bridge {dev.master}",
                        "make the device again",
                        ("networks", ""),
                    )
                )
    for veth, bridge, cid, cname, netname in host.veths:
        obj = f"container {cname} (network {netname})"
        link = by_name.get(veth)
        if link is None:
            problems.append(
                Problem(
                    "link",
                    obj,
                    f"its veth {veth} is missing on the host: the container is cut off from "
                    f"{netname}",
                    "rebuild the endpoint (a new veth pair, its addresses and routes)",
                    ("sandbox", cid),
                    cid,
                )
            )
            continue
        if not link.up:
            problems.append(
                Problem("link", obj, f"its veth {veth} is down", "set it up", ("sandbox", cid), cid)
            )
        master = by_index.get(link.master)
        if bridge and (master is None or master.name != bridge):
            problems.append(
                Problem(
                    "link",
                    obj,
                    f"its veth {veth} is on {master.name if master else 'no bridge'}, not on "
                    f"{bridge}",
                    f"put it back on {bridge}",
                    ("sandbox", cid),
                    cid,
                )
            )
    # tether's objects that nothing wants.
    for link in links:
        if link.kind == "veth" and link.name.startswith("tv") and link.name not in host.known_veths:
            problems.append(
                Problem(
                    "link",
                    f"veth {link.name}",
                    "a host-side veth of tether's that no container has",
                    "delete it",
                    ("strays", ""),
                )
            )
        if (
            link.alias.startswith(("tether:net:", "tether:macvlan:"))
            and link.alias not in host.aliases
        ):
            if link.name.startswith("tz-"):
                continue  # a removed network's bridge, being deleted
            problems.append(
                Problem(
                    "link",
                    f"bridge {link.name}",
                    f"a bridge of tether's ({link.alias}) that no network has",
                    "delete it",
                    ("networks", ""),
                )
            )
    try:
        files = os.listdir(host.netns_dir)
    except OSError:
        files = []
    for name in files:
        p = os.path.join(host.netns_dir, name)
        if p not in host.netns:
            problems.append(
                Problem(
                    "netns",
                    f"namespace {p}",
                    "a sandbox of tether's that no container has",
                    "delete it",
                    ("strays", ""),
                )
            )
    return problems


def _check_overlays(
    v: observe.View, overlays: list[OverlayWant], links: list[observe.Link]
) -> list[Problem]:
    problems: list[Problem] = []
    by_name = {link.name: link for link in links}
    for ov in overlays:
        link = by_name.get(ov.device)
        if link is None:
            continue  # named by the device check
        fdb = {(e.mac, e.dst) for e in v.neighbours(link.index, bridge_fdb=True) if e.permanent}
        neigh = {(e.dst, e.mac) for e in v.neighbours(link.index) if e.permanent}
        want_fdb = {(mac, vtep) for _ip, mac, vtep, _n, _node in ov.remotes}
        want_neigh = {(ip, mac) for ip, mac, _vtep, _n, _node in ov.remotes}
        action = ("fdb", ov.net_id)
        fix = "program the VXLAN device's entries again from the cluster store"
        for ip, mac, vtep, cname, node in ov.remotes:
            obj = f"container {cname} on node {node} (network {ov.name})"
            if (mac, vtep) not in fdb:
                problems.append(
                    Problem(
                        "fdb",
                        obj,
                        f"{ov.device} has no FDB entry sending {mac} to {vtep}: frames for "
                        f"{ip} go nowhere",
                        fix,
                        action,
                    )
                )
            if (ip, mac) not in neigh:
                problems.append(
                    Problem(
                        "neighbour",
                        obj,
                        f"{ov.device} has no neighbour entry {ip} -> {mac}: ARP for it is not "
                        "answered",
                        fix,
                        action,
                    )
                )
        for mac, vtep in sorted(fdb - want_fdb):
            problems.append(
                Problem(
                    "fdb",
                    f"network {ov.name}",
                    f"{ov.device} still sends {mac} to {vtep}, which the cluster store does not "
                    "hold (a stale entry)",
                    fix,
                    action,
                )
            )
        for ip, mac in sorted(neigh - want_neigh):
            problems.append(
                Problem(
                    "neighbour",
                    f"network {ov.name}",
                    f"{ov.device} still answers {ip} with {mac}, which the cluster store does not "
                    "hold (a stale entry)",
                    fix,
                    action,
                )
            )
    return problems


def _check_sandbox(w: SandboxWant) -> list[Problem]:
    if not w.path:
        return []
    obj = f"container {w.name}"
    act = ("sandbox", w.cid)
    if not os.path.exists(w.path):
        return [
            Problem(
                "netns",
                obj,
                f"its network namespace {w.path} is gone",
                "",
                ("", ""),
                w.cid,
            )
        ]
    problems: list[Problem] = []
    try:
        with observe.View(w.path) as v:
            links = {link.name: link for link in v.links()}
            addrs: dict[int, set[str]] = defaultdict(set)
            for a in v.addresses():
                addrs[a.index].add(a.cidr)
            routes = v.routes()
    except OSError as exc:
        return [Problem("netns", obj, f"its namespace cannot be read: {exc}", "", ("", ""), w.cid)]
    import ipaddress

    for ifname, mac, cidrs, netname in w.links:
        link = links.get(ifname)
        where = f"{obj} (network {netname})"
        if link is None:
            problems.append(
                Problem(
                    "link",
                    where,
                    f"its interface {ifname} is missing",
                    "rebuild the endpoint",
                    act,
                    w.cid,
                )
            )
            continue
        if not link.up:
            problems.append(
                Problem("link", where, f"its interface {ifname} is down", "set it up", act, w.cid)
            )
        if mac and link.mac != mac:
            problems.append(
                Problem(
                    "link",
                    where,
                    f"{ifname} has MAC {link.mac}, the endpoint has {mac}",
                    "",
                    ("", ""),
                    w.cid,
                )
            )
        for cidr in cidrs:
            if cidr not in addrs.get(link.index, set()):
                problems.append(
                    Problem(
                        "address",
                        where,
                        f"{ifname} lacks its address {cidr}",
                        "add it again",
                        act,
                        w.cid,
                    )
                )
                continue
            subnet = str(ipaddress.ip_interface(cidr).network)
            if not any(r.dst == subnet and r.oif == link.index for r in routes):
                problems.append(
                    Problem(
                        "route",
                        where,
                        f"the route to {subnet} through {ifname} is missing",
                        "add it again",
                        act,
                        w.cid,
                    )
                )
    names = {link.index: link.name for link in links.values()}
    defaults = [r for r in routes if r.dst == "default"]
    for family, gw, ifname in w.defaults:
        if not any(
            r.family == family and r.gateway == gw and names.get(r.oif) == ifname for r in defaults
        ):
            now = [r.text(names) for r in defaults if r.family == family]
            problems.append(
                Problem(
                    "route",
                    obj,
                    f"its default route should be via {gw} dev {ifname}"
                    + (f", it is `{'; '.join(now)}`" if now else ", it has none"),
                    "set the default route again",
                    act,
                    w.cid,
                )
            )
    families = {family for family, _gw, _if in w.defaults}
    for r in defaults:
        if r.family not in families:
            problems.append(
                Problem(
                    "route",
                    obj,
                    f"it has a default route tether did not set: `{r.text(names)}`",
                    "remove it",
                    act,
                    w.cid,
                )
            )
    if w.dns:
        try:
            present = observe.nft_table_exists("ip", "tether_dns", w.path)
        except OSError:
            present = False
        if not present:
            problems.append(
                Problem(
                    "dns",
                    obj,
                    "its redirect of 127.0.0.11:53 to the embedded DNS (table ip tether_dns) is "
                    "missing: its name lookups time out",
                    "attach the embedded DNS again",
                    act,
                    w.cid,
                )
            )
    if w.vips:
        problems += _check_vips(w)
    return problems


def _check_vips(w: SandboxWant) -> list[Problem]:
    from tether.explain.nftrules import Ruleset, vip_backends, vip_entries

    obj = f"container {w.name}"
    act = ("vip", w.cid)
    fix = "program its service VIPs again"
    try:
        rs = Ruleset(observe.nft_list("list table ip tether_svc", w.path, json=True))
    except OSError:
        return [
            Problem(
                "vip",
                obj,
                f"table ip tether_svc is missing: its {len(w.vips)} service VIP(s) answer nothing",
                fix,
                act,
                w.cid,
            )
        ]
    balanced = vip_backends(rs)
    # VIP -> the set (or, in a table of an older layout, the chain) that balances it.
    have = {vip: where for vip, (where, _rule) in vip_entries(rs).items()}
    problems = []
    for vip, (chain, backends) in sorted(w.vips.items()):
        if have.get(vip) != chain:
            problems.append(
                Problem(
                    "vip", obj, f"the VIP {vip} is not balanced in its namespace", fix, act, w.cid
                )
            )
            continue
        got = balanced.get(vip, [])
        if sorted(got) != sorted(backends):
            problems.append(
                Problem(
                    "vip",
                    obj,
                    f"the VIP {vip} goes to {', '.join(sorted(got)) or 'nothing'}, its service's "
                    f"running tasks are {', '.join(sorted(backends)) or 'none'}",
                    fix,
                    act,
                    w.cid,
                )
            )
    for vip in sorted(set(have) - set(w.vips)):
        problems.append(
            Problem("vip", obj, f"it still balances {vip}, which no service has", fix, act, w.cid)
        )
    return problems


# -- nftables ---------------------------------------------------------------------------------


def _rendered(state: FirewallState) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Chain -> rule texts, and set/map -> element texts, as render() writes them."""
    chains: dict[str, list[str]] = defaultdict(list)
    elements: dict[str, set[str]] = defaultdict(set)
    prefix = f"add rule {TABLE} "
    eprefix = f"add element {TABLE} "
    for line in render(state).splitlines():
        if line.startswith(prefix):
            chain, _, text = line[len(prefix) :].partition(" ")
            chains[chain].append(normalized(text))
        elif line.startswith(eprefix):
            name, _, body = line[len(eprefix) :].partition(" ")
            inner = body.strip()[1:-1]
            for elem in _split_elements(inner):
                elements[name].add(_norm_elem(elem))
        elif line.startswith(f"add chain {TABLE} "):
            chains.setdefault(line.split()[4], [])
    return chains, elements


def _split_elements(text: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        depth += ch in "{("
        depth -= ch in "})"
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _norm_elem(text: str) -> str:
    return " ".join(text.replace('"', "").split())


def _json_elem(e: Any) -> str:
    """One set or map element from nft's JSON, in render()'s text form."""
    if isinstance(e, list) and len(e) == 2:
        return f"{_json_elem(e[0])} : {_json_elem(e[1])}"
    if isinstance(e, dict):
        if "concat" in e:
            return " . ".join(_json_elem(x) for x in e["concat"])
        if "prefix" in e:
            return f"{e['prefix']['addr']}/{e['prefix']['len']}"
        if "range" in e:
            return f"{e['range'][0]}-{e['range'][1]}"
        if "jump" in e:
            return f"jump {e['jump'].get('target', '')}"
        if "goto" in e:
            return f"goto {e['goto'].get('target', '')}"
        if "elem" in e:
            return _json_elem(e["elem"].get("val"))
        if len(e) == 1:
            k, val = next(iter(e.items()))
            return str(k) if val is None else f"{k} {val}"
    return str(e)


def _check_nft(state: FirewallState, port_owners: dict[str, str]) -> list[Problem]:
    obj_table = f"nft table {TABLE}"
    try:
        listing = json.loads(observe.nft_list(f"list table {TABLE}", json=True))
        texts = rule_texts(observe.nft_list(f"list table {TABLE}", handles=True))
    except (OSError, ValueError):
        return [
            Problem(
                "nft",
                obj_table,
                "tether's table is missing: no isolation, no published ports",
                "render and apply it again",
                ("nft", ""),
            )
        ]
    want_chains, want_elems = _rendered(state)
    have_chains: dict[str, list[tuple[int, str]]] = {}
    have_elems: dict[str, set[str]] = {}
    for item in listing.get("nftables", []):
        if "chain" in item:
            have_chains.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            r = item["rule"]
            h = int(r.get("handle", 0))
            have_chains.setdefault(r["chain"], []).append((h, normalized(texts.get(h, ""))))
        elif "set" in item or "map" in item:
            s = item.get("set") or item.get("map")
            have_elems[s["name"]] = {_norm_elem(_json_elem(e)) for e in s.get("elem") or []}
    owners = {f.key: f.label for f in state.networks}
    problems: list[Problem] = []
    fix = ("nft", "")
    repair = "render and apply tether's table again (the user chain is kept)"
    if MESH_CHAIN in want_chains and MESH_CHAIN in have_chains:
        # The mesh's rules, one per (protocol, task count): a change appends the rule of a
        # count no port had and leaves that of a count no port has any more (its set empty)
        # until the next full render; neither their order nor those leftovers is a fault.
        wanted = sorted(want_chains[MESH_CHAIN])
        kept = [
            (h, t)
            for h, t in have_chains[MESH_CHAIN]
            if t in wanted or any(have_elems.get(n) for n in re.findall(r"@(ing_\w+_n\d+)", t))
        ]
        want_chains[MESH_CHAIN] = wanted
        have_chains[MESH_CHAIN] = sorted(kept, key=lambda r: r[1])
    for chain in sorted(set(have_chains) - set(want_chains) - {USER_CHAIN}):
        problems.append(
            Problem(
                "nft",
                _chain_owner(chain, owners),
                f"chain {chain} is not one tether renders (rules: {len(have_chains[chain])})",
                repair,
                fix,
            )
        )
    for chain, rules in sorted(want_chains.items()):
        if chain == USER_CHAIN:
            continue  # the user's own: never compared, never touched
        obj = _chain_owner(chain, owners)
        have = have_chains.get(chain)
        if have is None:
            problems.append(Problem("nft", obj, f"chain {chain} is missing", repair, fix))
            continue
        texts_have = [t for _h, t in have]
        if texts_have == rules:
            continue
        for i, want in enumerate(rules):
            got = texts_have[i] if i < len(texts_have) else None
            if got == want:
                continue
            if got is None:
                problems.append(
                    Problem("nft", obj, f"chain {chain} lacks rule `{want}`", repair, fix)
                )
            else:
                problems.append(
                    Problem(
                        "nft",
                        obj,
                        f"chain {chain} rule {i + 1} (handle {have[i][0]}) is `{got}`, tether "
                        f"renders `{want}`",
                        repair,
                        fix,
                    )
                )
            break
        for h, text in have[len(rules) :]:
            problems.append(
                Problem(
                    "nft",
                    obj,
                    f"chain {chain} has a rule tether did not render: `{text}` (handle {h})",
                    repair,
                    fix,
                )
            )
    for name, elems in sorted(want_elems.items()):
        have_set = have_elems.get(name)
        if have_set is None:
            problems.append(Problem("nft", obj_table, f"set {name} is missing", repair, fix))
            continue
        for e in sorted(elems - have_set):
            problems.append(
                Problem(
                    "nft",
                    _elem_owner(name, e, owners, port_owners),
                    f"{name} lacks element `{e}`",
                    repair,
                    fix,
                )
            )
        for e in sorted(have_set - elems):
            problems.append(
                Problem(
                    "nft",
                    _elem_owner(name, e, owners, port_owners),
                    f"{name} holds element `{e}` that tether did not put there",
                    repair,
                    fix,
                )
            )
    for name, have_set in sorted(have_elems.items()):
        if name not in want_elems and have_set:
            for e in sorted(have_set):
                problems.append(
                    Problem(
                        "nft",
                        _elem_owner(name, e, owners, port_owners),
                        f"{name} holds element `{e}` that tether did not put there",
                        repair,
                        fix,
                    )
                )
    return problems


def _chain_owner(chain: str, owners: dict[str, str]) -> str:
    if chain.startswith("net_"):
        key = chain[4:].rsplit("_", 1)[0]
        if key in owners:
            return f"network {owners[key]} (nft chain {chain})"
    return f"nft chain {TABLE} {chain}"


def _elem_owner(name: str, elem: str, owners: dict[str, str], port_owners: dict[str, str]) -> str:
    if name in ("pub4", "pub4ip"):
        key, _, value = elem.partition(" : ")
        who = port_owners.get(value.split(" . ")[0], "")
        parts = key.split(" . ")
        port = f"{parts[-1]}/{parts[-2]}" if len(parts) >= 2 else key
        return (
            f"container {who} (published port {port}, nft map {name})"
            if who
            else f"published port {port} (nft map {name})"
        )
    for key, label in owners.items():
        if f"net_{key}_" in elem:
            return f"network {label} (nft map {name})"
    return f"nft set {TABLE} {name}"
