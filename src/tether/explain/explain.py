"""`tether explain A B [PORT]`: may A reach B, and why, from the decisions the firewall is
rendered from.

The verdict is the reachability model's (firewall/policy.py: `path()` over `decide()` of the
same FirewallState that firewall/render.py turns into the ruleset), with the user's own
chain, which the model leaves to the kernel, read from the live table.  Every reason names
the object it is about: the name and the network it resolves on, the networks the two share,
the nft rule that decides (the live rule, with its handle, found by following the packet
through the kernel's own ruleset, which also checks that the kernel still holds what tether
rendered), the socket that listens in B's namespace.  With a probe, one real packet from A's
namespace confirms or contradicts it.

Reasons come in order: names, path, policy, port, probe.
"""

from __future__ import annotations

import asyncio
import difflib
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tether.errors import InvalidParameter, NotFound
from tether.explain.model import Explanation, parse_port
from tether.explain.nftrules import (
    Outcome,
    Packet,
    Rule,
    Ruleset,
    rule_texts,
    vip_backends,
    vip_entries,
)
from tether.explain.probe import probe
from tether.firewall.policy import Decision, Net, Policy, Where, allowed, decide, path
from tether.firewall.render import TABLE
from tether.kernel import observe
from tether.model import Container, Network, PortBinding, RemoteEndpoint
from tether.netmodes import DEFAULT_NETWORK, is_container, is_host

if TYPE_CHECKING:
    from tether.cluster.services import Service
    from tether.daemon.app import Daemon

log = logging.getLogger("tether.explain")

Kind = Literal["container", "remote", "service", "host", "outside", "unknown"]
USER_FIX_REPLY = "nft insert rule inet tether user ct state established,related accept"


@dataclass(frozen=True)
class Attachment:
    """One side's presence on one network: a local endpoint or a remote one (cluster)."""

    net: Network
    ip: str  # IPv4, no prefix ("" if none)
    mac: str
    node: str = ""  # "" for this node
    vtep: str = ""


@dataclass
class Party:
    kind: Kind
    label: str  # as the user wrote it
    name: str  # for people
    container: Container | None = None  # a local container (the one asked about)
    netc: Container | None = None  # whose network namespace it uses (container:X mode)
    remotes: list[RemoteEndpoint] = field(default_factory=list)
    service: Service | None = None
    ip: str = ""  # the address given (or of host / outside)

    @property
    def sandbox(self) -> str:
        c = self.netc or self.container
        return c.sandbox_key if c is not None else ""


@dataclass
class Route:
    """One way from A to B that was followed: the packets and what decided them."""

    src: Attachment | None
    dst_ip: str
    dst_port: int | None
    decisions: list[Decision]
    forward: Packet | None = None  # None: not through the host's forward hook
    reply: Packet | None = None
    reply_decisions: list[Decision] = field(default_factory=list)
    via: str = ""  # "10.0.0.1:8080" when through a published port
    binding: PortBinding | None = None
    blocked: str = ""  # why no rule matters: the packets have no way at all


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return ""


def _bare(cidr: str) -> str:
    return cidr.split("/")[0] if cidr else ""


class Explainer:
    def __init__(self, daemon: Daemon) -> None:
        """One per question: it holds a snapshot of the policy and the live ruleset."""
        self.d = daemon
        self.state = daemon.firewall.state()
        self.policy: Policy = decide(self.state.networks, self.state.underlay)
        self.keys: dict[str, Net] = {f.key: f for f in self.state.networks}
        self._ruleset: Ruleset | None = None

    # -- entry ------------------------------------------------------------------------------

    async def explain(self, src: str, dst: str, port_text: str, want_probe: bool) -> Explanation:
        try:
            port = parse_port(port_text or "")
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
        if not src.strip() or not dst.strip():
            raise InvalidParameter("explain needs a source and a destination (From and To)")
        a = self._resolve(src, source=True)
        b = self._resolve(dst, source=False)
        x = Explanation(a.name, b.name if b.kind != "unknown" else dst, _port_text(port))
        route = self._analyse(x, a, b, port)
        x.static = x.reachable
        if want_probe:
            await self._probe(x, a, route, port)
        return x

    # -- who is who -------------------------------------------------------------------------

    def _resolve(self, term: str, source: bool) -> Party:
        t = term.strip()
        if t == "host":
            return Party("host", t, "the host")
        ip = _ip(t)
        if ip:
            return self._by_address(t, ip)
        containers = self.d.containers
        try:
            c = containers.find(t)
        except (NotFound, InvalidParameter):
            c = None
        if c is not None:
            return self._of_container(t, c)
        svc = self._service(t)
        if svc is not None:
            if source:
                task = self._local_task(svc)
                if task is None:
                    raise NotFound(f"service {svc.name} has no task running on this node")
                return self._of_container(t, task)
            return Party("service", t, svc.name, service=svc)
        remotes = self._remote_named(t)
        if remotes:
            return Party("remote", t, remotes[0].name, remotes=remotes)
        if source:
            raise NotFound(f"No such container: {t}")
        return Party("unknown", t, t)

    def _of_container(self, label: str, c: Container, ip: str = "") -> Party:
        mode = c.network_mode
        if is_host(mode):
            return Party("host", label, f"{c.name} (host network)", container=c, ip=ip)
        netc = c
        if is_container(mode):
            try:
                netc = self.d.containers.find(mode.split(":", 1)[1])
            except NotFound:
                netc = c
        return Party("container", label, c.name, container=c, netc=netc, ip=ip)

    def _by_address(self, label: str, ip: str) -> Party:
        for c in self.d.containers.by_id.values():
            if not c.state.running:
                continue
            if any(ip in (_bare(ep.ipv4), _bare(ep.ipv6)) for ep in c.endpoints.values()):
                return self._of_container(label, c, ip)
        for svc in self._services():
            if any(_bare(v.get("Addr", "")) == ip for v in svc.vips):
                return Party("service", label, svc.name, service=svc, ip=ip)
        cluster = self.d.cluster
        if cluster is not None:
            for eps in cluster.endpoints.values():
                for ep in eps.values():
                    if ip in (ep.ipv4, ep.ipv6) and ep.node != cluster.node.name:
                        return Party("remote", label, ep.name, remotes=self._remotes(ep), ip=ip)
        with observe.View() as v:
            if any(_bare(a.cidr) == ip for a in v.addresses()):
                return Party("host", label, f"the host ({ip})", ip=ip)
        return Party("outside", label, ip, ip=ip)

    def _services(self) -> list[Service]:
        cluster = self.d.cluster
        return list(cluster.services.by_id.values()) if cluster is not None else []

    def _service(self, term: str) -> Service | None:
        for svc in self._services():
            if term in (svc.name, svc.id) or (len(term) >= 4 and svc.id.startswith(term)):
                return svc
        return None

    def _local_task(self, svc: Service) -> Container | None:
        for c in self.d.containers.by_id.values():
            labels = c.config.get("Labels") or {}
            if c.state.running and labels.get("com.docker.swarm.service.id") == svc.id:
                return c
        return None

    def _remote_named(self, name: str) -> list[RemoteEndpoint]:
        cluster = self.d.cluster
        if cluster is None:
            return []
        for eps in cluster.endpoints.values():
            for ep in eps.values():
                if ep.node != cluster.node.name and name in (ep.name, ep.container, ep.short_id):
                    return self._remotes(ep)
        return []

    def _remotes(self, first: RemoteEndpoint) -> list[RemoteEndpoint]:
        cluster = self.d.cluster
        assert cluster is not None
        return [
            ep
            for eps in cluster.endpoints.values()
            for ep in eps.values()
            if ep.container == first.container
        ]

    def attachments(self, p: Party) -> list[Attachment]:
        out = []
        if p.kind == "container":
            c = p.netc or p.container
            assert c is not None
            for ep in c.endpoints.values():
                net = self.d.networks.by_id.get(ep.network_id)
                if net is not None:
                    out.append(Attachment(net, _bare(ep.ipv4), ep.mac))
        elif p.kind == "remote":
            for r in p.remotes:
                net = self.d.networks.by_id.get(r.network)
                if net is not None:
                    out.append(Attachment(net, r.ipv4, r.mac, r.node, r.vtep))
        return out

    def _running(self, p: Party) -> bool:
        c = p.container
        if c is None:
            return True
        if not c.state.running:
            return False
        return p.netc is None or p.netc.state.running

    # -- the analysis -----------------------------------------------------------------------

    def _analyse(
        self, x: Explanation, a: Party, b: Party, port: tuple[int, str] | None
    ) -> Route | None:
        if b.kind == "unknown":
            self._unknown_name(x, a, b)
            return None
        for p in (a, b):
            if not self._running(p):
                assert p.container is not None
                x.add(
                    "path",
                    False,
                    p.container.name,
                    f"{p.container.name} is not running ({p.container.state.status})",
                    f"tether start {p.container.name}",
                )
                return None
        if a.kind == "container" and b.kind in ("container", "remote"):
            return self._between_containers(x, a, b, port)
        if a.kind == "container" and b.kind == "service":
            return self._to_service(x, a, b, port)
        if a.kind == "container" and b.kind == "host":
            return self._to_host(x, a, b, port)
        if a.kind == "container" and b.kind == "outside":
            return self._to_outside(x, a, b, port)
        if a.kind in ("host", "outside") and b.kind in ("container", "remote"):
            return self._into_container(x, a, b, port)
        x.add(
            "path",
            True,
            f"{a.name} -> {b.name}",
            "neither side is a container: this traffic never meets tether's networks or firewall",
        )
        x.reachable = True
        x.target = b.ip
        return None

    # names ----------------------------------------------------------------------------------

    def _names(self, x: Explanation, a: Party, b: Party) -> list[str]:
        """Does B's name resolve from A?  Returns the addresses it resolves to."""
        if b.ip and _ip(b.label):
            x.add("names", True, b.label, f"{b.label} is an address: there is no name to resolve")
            return [b.ip]
        c = a.netc or a.container
        assert c is not None
        label = b.label
        hosts = self._hosts_file(a)
        if label.lower() in hosts:
            ip = hosts[label.lower()]
            x.add(
                "names",
                True,
                f"/etc/hosts of {a.name}",
                f'"{label}" is in {a.name}\'s /etc/hosts (--add-host): {ip}',
            )
            return [ip]
        view = self.d.dns_follower.view(c)
        if view is None:
            x.by_name = False
            nets = [self.d.networks.by_id.get(ep.network_id) for ep in c.endpoints.values()]
            names = [n.name for n in nets if n is not None]
            if not names:
                text = f"{a.name} is on no network (--network none): no name resolves there"
            elif all(n == DEFAULT_NETWORK for n in names):
                text = (
                    f"{a.name} is only on the default bridge network, which has no embedded DNS: "
                    "container names do not resolve there (Docker's default bridge only knows "
                    "--link)"
                )
            else:
                text = f"{a.name} has no embedded DNS on {', '.join(names)}"
            x.add(
                "names",
                False,
                a.name,
                text,
                "put both on a user-defined network: tether network create app && "
                f"tether network connect app {a.name} && tether network connect app {b.name}",
            )
            return []
        zone = self.d.dns.zone
        found: list[tuple[str, list[str]]] = []
        for net in view.networks:
            entries = zone.lookup((net,), label.rstrip(".") + ".")
            if entries:
                found.append((net, [v4 or v6 for v4, v6 in entries]))
        if found:
            where = "; ".join(f"{', '.join(ips)} on network {net}" for net, ips in found)
            x.add(
                "names",
                True,
                f"{label} (embedded DNS, 127.0.0.11)",
                f'"{label}" resolves from {a.name} to {where}',
            )
            return [ip for _net, ips in found for ip in ips]
        x.by_name = False
        b_nets = sorted({att.net.name for att in self.attachments(b)})
        if b.kind == "service" and b.service is not None:
            b_nets = sorted(
                {
                    n.name
                    for v in b.service.vips
                    if (n := self.d.networks.by_id.get(v.get("NetworkID", ""))) is not None
                }
            )
        a_nets = list(view.networks)
        if b_nets and b_nets == [DEFAULT_NETWORK]:
            text = (
                f'"{label}" does not resolve from {a.name}: {b.name} is only on the default '
                "bridge, which has no embedded DNS"
            )
            fix = f"tether network connect {a_nets[0]} {b.name}"
        elif b_nets:
            text = (
                f'"{label}" does not resolve from {a.name}: names resolve only between '
                f"containers of one network, and they share none ({a.name} is on "
                f"{', '.join(a_nets)}; {b.name} on {', '.join(b_nets)})"
            )
            fix = f"tether network connect {b_nets[0]} {a.name}"
        else:
            text = f'"{label}" does not resolve from {a.name}'
            fix = ""
        x.add("names", False, label, text, fix)
        return []

    def _hosts_file(self, a: Party) -> dict[str, str]:
        c = a.container
        if c is None:
            return {}
        try:
            with open(self.d.containers.paths(c)["hosts"]) as f:
                text = f.read()
        except OSError:
            return {}
        out: dict[str, str] = {}
        own = {_bare(ep.ipv4) for ep in c.endpoints.values()} | {"127.0.0.1", "::1"}
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[0] not in own and not fields[0].startswith(("fe", "ff")):
                for name in fields[1:]:
                    out.setdefault(name.lower(), fields[0])
        return out

    def _unknown_name(self, x: Explanation, a: Party, b: Party) -> None:
        candidates = {c.name for c in self.d.containers.by_id.values()}
        candidates |= {s.name for s in self._services()}
        c = a.netc or a.container
        view = self.d.dns_follower.view(c) if c is not None else None
        if view is not None:
            for net in view.networks:
                for fqdn in self.d.dns.zone.names.get(net, {}):
                    candidates.add(fqdn.rstrip(".").removesuffix(f".{net}"))
        close = difflib.get_close_matches(b.label, sorted(candidates), n=1, cutoff=0.6)
        x.by_name = False
        if close:
            x.add(
                "names",
                False,
                b.label,
                f'no container, network alias or service is called "{b.label}"; did you mean '
                f'"{close[0]}"?',
                f"use {close[0]}",
            )
        else:
            x.add(
                "names",
                False,
                b.label,
                f'no container, network alias or service is called "{b.label}"',
                "tether ps shows the running containers",
            )

    # container -> container -----------------------------------------------------------------

    def _keys(self, atts: list[Attachment]) -> tuple[str, ...]:
        return tuple(k for att in atts if (k := att.net.id[:12]) in self.keys)

    def _iface(self, net: Network) -> str:
        f = self.keys.get(net.id[:12])
        return f.iface if f is not None else ""

    def _between_containers(
        self, x: Explanation, a: Party, b: Party, port: tuple[int, str] | None
    ) -> Route | None:
        self._names(x, a, b)
        a_att, b_att = self.attachments(a), self.attachments(b)
        if b.ip:  # an address was given: only the network that address is on counts
            b_att = [att for att in b_att if att.ip == b.ip] or b_att
        shared = [(s, t) for s in a_att for t in b_att if s.net.id == t.net.id]
        fw_shared = [(s, t) for s, t in shared if s.net.id[:12] in self.keys]
        if shared and not fw_shared:
            return self._macvlan(x, a, b, shared[0], port)
        proto = port[1] if port else "icmp"
        dport = port[0] if port else None
        # Every way A's packets may take to B, in the order a person would try them: over a
        # shared network, to B's other addresses through the host, to a published port.
        candidates: list[tuple[str, Route]] = []
        if fw_shared:
            candidates.append(("shared", self._shared_route(a_att, fw_shared, proto, dport)))
        if b.kind == "container":
            on_shared = {t.net.id for _s, t in fw_shared}
            for t in b_att:
                if t.net.id in on_shared or t.net.id[:12] not in self.keys or not t.ip:
                    continue
                cross = self._cross_route(a, b, a_att, t, proto, dport)
                if cross is not None:
                    candidates.append(("cross", cross))
        if port is not None and b.kind == "container":
            published = self._published_route(x, a, b, a_att, port)
            if published is not None:
                candidates.append(("published", published))
        kind, route = next(
            ((k, r) for k, r in candidates if self._verdict(r)[0]),
            candidates[0] if candidates else ("", None),
        )
        first = candidates[0][1] if candidates else None
        if route is None:
            reason = self._no_direct_text(a, b, a_att, b_att, None)
            if b.kind == "container" and a_att and not self._gateway_net(a):
                reason += f"; {a.name} has no default route (its networks are --internal)"
            x.add(
                "path",
                False,
                f"{a.name} -> {b.name}",
                reason,
                f"tether network connect {b_att[0].net.name} {a.name}"
                if b_att
                else "connect both containers to one network (tether network connect NET CTR)",
            )
            if port is not None and b.kind == "container":
                self._unpublished_note(x, b, port)
            x.target = _where(b_att[0].ip, dport) if b_att else ""
            return Route(a_att[0] if a_att else None, b_att[0].ip, dport, []) if b_att else None
        ok_route = self._verdict(route)[0]
        path_ok = True
        if kind == "shared":
            path_ok = self._path_text(x, a, b, route)
        elif kind == "published" and port is not None:
            why_not = (
                self._no_direct_text(a, b, a_att, b_att, first if fw_shared else None)
                + f"; {b.name} publishes {port[0]}/{port[1]} on {_binding_text(route.binding)}"
            )
            x.add(
                "path",
                True,
                f"{a.name} -> {route.via}",
                f"{why_not}: {a.name} reaches it through the host at {route.via}",
            )
        else:
            src = route.src
            assert src is not None
            t_net = next((t.net for t in b_att if t.ip == route.dst_ip), None)
            through = (
                f"{a.name}'s packets for {route.dst_ip} go through the host, from "
                f"{self._iface(src.net)} to {self._iface(t_net) if t_net else '?'}"
            )
            before = (
                self._no_direct_text(a, b, a_att, b_att, first if fw_shared else None)
                if fw_shared
                else self._no_direct_text(a, b, a_att, b_att, None).split(":")[0]
            )
            if ok_route:
                x.add(
                    "path",
                    True,
                    f"{a.name} -> {b.name}",
                    f"{before}: {through}, where a rule of yours lets them through",
                )
            else:
                x.add(
                    "path",
                    False,
                    f"{a.name} -> {b.name}",
                    self._no_direct_text(a, b, a_att, b_att, None) + f" ({through})",
                    f"tether network connect {t_net.name if t_net else b_att[0].net.name} {a.name}",
                )
                if port is not None:
                    self._unpublished_note(x, b, port)
        x.target = route.via or _where(route.dst_ip, route.dst_port)
        ok = self._policy(x, a, b, route) and path_ok
        if kind == "cross":  # the model's fix is generic; here the network is known
            t_net = next((t.net for t in b_att if t.ip == route.dst_ip), None)
            for r in x.reasons:
                if r.step == "policy" and r.fix.startswith("connect both containers") and t_net:
                    r.fix = f"tether network connect {t_net.name} {a.name}"
        if port is not None:
            ok = self._port(x, b, route, port) and ok
        x.reachable = ok
        return route

    def _shared_route(
        self,
        a_att: list[Attachment],
        fw_shared: list[tuple[Attachment, Attachment]],
        proto: str,
        dport: int | None,
    ) -> Route:
        """Over a network both are on: the model picks the network whose decision allows."""
        a_keys = self._keys(a_att)
        b_keys = tuple(t.net.id[:12] for _s, t in fw_shared)
        decisions = path(self.policy, Where("container", a_keys), Where("container", b_keys))
        chosen = next(
            (d for d in reversed(decisions) if d.network), decisions[-1] if decisions else None
        )
        s, t = next(
            (
                (s, t)
                for s, t in fw_shared
                if chosen is not None and s.net.id[:12] == chosen.network
            ),
            fw_shared[0],
        )
        return Route(
            s,
            t.ip,
            dport,
            decisions,
            forward=Packet(
                4, s.ip, t.ip, proto, dport, None, self._iface(s.net), self._iface(t.net)
            ),
            reply=Packet(
                4,
                t.ip,
                s.ip,
                proto,
                None,
                dport,
                self._iface(t.net),
                self._iface(s.net),
                ct_state="established",
            ),
            reply_decisions=path(
                self.policy, Where("container", b_keys), Where("container", a_keys)
            ),
        )

    def _gateway_net(self, p: Party) -> str:
        """The id of the network p's default route goes through ("": none)."""
        from tether.engine.sandbox import gateway_endpoint

        c = p.netc or p.container
        if c is None:
            return ""
        gw = gateway_endpoint(c, self.d.networks.by_id.get)
        return gw.network_id if gw is not None else ""

    def _cross_route(
        self,
        a: Party,
        b: Party,
        a_att: list[Attachment],
        t: Attachment,
        proto: str,
        dport: int | None,
    ) -> Route | None:
        """To B's address `t` on a network A is not on: A's packets leave by A's default
        route, through the host, where isolation drops them (unless the user's chain
        accepts); B's answers go back by B's own route to A."""
        gw_a = self._gateway_net(a)
        s = next((s for s in a_att if s.net.id == gw_a), None)
        if s is None or not s.ip:
            return None
        import ipaddress as ipa

        every_b = self.attachments(b)
        back = next(
            (
                u
                for u in every_b
                if any(ipa.ip_address(s.ip) in p.network for p in u.net.pools if p.version == 4)
            ),
            None,
        )
        if back is None:
            gw_b = self._gateway_net(b)
            back = next((u for u in every_b if u.net.id == gw_b), None)
        a_keys = (s.net.id[:12], *(k for k in self._keys(a_att) if k != s.net.id[:12]))
        b_keys = tuple(u.net.id[:12] for u in every_b if u.net.id[:12] in self.keys)
        if back is not None:
            b_keys = (back.net.id[:12], *(k for k in b_keys if k != back.net.id[:12]))
        route = Route(
            s,
            t.ip,
            dport,
            path(self.policy, Where("container", a_keys), Where("container", (t.net.id[:12],))),
            forward=Packet(
                4, s.ip, t.ip, proto, dport, None, self._iface(s.net), self._iface(t.net)
            ),
        )
        if back is not None:
            route.reply = Packet(
                4,
                t.ip,
                s.ip,
                proto,
                None,
                dport,
                self._iface(back.net),
                self._iface(s.net),
                ct_state="established",
            )
            route.reply_decisions = path(
                self.policy, Where("container", b_keys), Where("container", a_keys)
            )
        else:
            route.blocked = (
                f"{b.name} has no route back to {s.ip}: its networks are --internal, so its "
                "answers cannot leave it"
            )
        return route

    def _no_direct_text(
        self,
        a: Party,
        b: Party,
        a_att: list[Attachment],
        b_att: list[Attachment],
        direct: Route | None,
    ) -> str:
        if direct is not None:
            d = next((d for d in reversed(direct.decisions) if d.verdict != "continue"), None)
            return f"no direct way ({d.reason})" if d is not None else "no direct way"
        a_nets = ", ".join(f"{s.net.name} ({s.ip})" for s in a_att) or "no network"
        b_nets = ", ".join(f"{t.net.name} ({t.ip})" for t in b_att) or "no network"
        return (
            f"{a.name} and {b.name} share no network ({a.name} is on {a_nets}; {b.name} on "
            f"{b_nets}): tether's networks are isolated from each other"
        )

    def _path_text(self, x: Explanation, a: Party, b: Party, route: Route) -> bool:
        s = route.src
        assert s is not None
        net = s.net
        marks = []
        if net.internal:
            marks.append("--internal")
        f = self.keys.get(net.id[:12])
        if f is not None and not f.icc:
            marks.append("ICC off")
        kind = f"{net.driver} {f.iface}" if f is not None else net.driver
        text = f"{a.name} and {b.name} share network {net.name} ({kind}{', ' + ', '.join(marks) if marks else ''})"
        obj = f"network {net.name}"
        remote = next((t for t in self.attachments(b) if t.net.id == net.id and t.node), None)
        if remote is None:
            x.add("path", True, obj, text)
            return True
        ok, extra, fix = self._overlay_check(net, remote)
        x.add(
            "path",
            ok,
            obj,
            f"{text}; {b.name} runs on node {remote.node} (VTEP {remote.vtep}): {extra}",
            fix,
        )
        return ok

    def _overlay_check(self, net: Network, remote: Attachment) -> tuple[bool, str, str]:
        from tether.drivers.overlay import vxlan_name

        dev = vxlan_name(net)
        with observe.View() as v:
            link = next((link for link in v.links("vxlan") if link.name == dev), None)
            if link is None:
                return False, f"this node has no VXLAN device {dev}", "tether doctor --repair"
            fdb = v.neighbours(link.index, bridge_fdb=True)
            neigh = v.neighbours(link.index)
        vni = link.info.get("VNI", "?")
        if not any(e.mac == remote.mac and e.dst == remote.vtep for e in fdb):
            return (
                False,
                f"the FDB of {dev} has no entry sending {remote.mac} to {remote.vtep}: frames "
                "for it go nowhere",
                "tether doctor --repair",
            )
        if not any(e.dst == remote.ip and e.mac == remote.mac for e in neigh):
            return (
                False,
                f"{dev} has no neighbour entry for {remote.ip}: ARP for it goes unanswered",
                "tether doctor --repair",
            )
        return (
            True,
            f"frames for {remote.mac} leave through {dev} (VNI {vni}) towards {remote.vtep}",
            "",
        )

    def _published_route(
        self,
        x: Explanation,
        a: Party,
        b: Party,
        a_att: list[Attachment],
        port: tuple[int, str],
    ) -> Route | None:
        c = b.container
        assert c is not None
        bindings = [
            bd
            for bd in c.ports
            if bd.container_port == port[0]
            and bd.proto == port[1]
            and bd.family == 4
            and bd.target_ip
        ]
        if not bindings:
            return None
        usable = [bd for bd in bindings if not bd.host_ip.startswith("127.")]
        if not usable:
            x.add(
                "path",
                False,
                f"{b.name} {port[0]}/{port[1]}",
                f"{b.name} publishes {port[0]}/{port[1]} only on {_binding_text(bindings[0])}: "
                "reachable from the host itself, not from containers",
                f"publish it on all addresses: -p {bindings[0].host_port}:{port[0]}",
            )
            return None
        bd = usable[0]
        from tether.engine.sandbox import gateway_endpoint

        src_c = a.netc or a.container
        assert src_c is not None
        gw = gateway_endpoint(src_c, self.d.networks.by_id.get)
        src = next(
            (s for s in a_att if gw is not None and s.net.id == gw.network_id),
            a_att[0] if a_att else None,
        )
        if src is None:
            return None
        host_ip = (
            bd.host_ip
            if bd.host_ip not in ("0.0.0.0", "")
            else next((p.gateway for p in src.net.pools if p.version == 4 and p.gateway), "")
        )
        b_att = next((t for t in self.attachments(b) if t.ip == bd.target_ip), None)
        oif = self._iface(b_att.net) if b_att is not None else ""
        decisions = path(
            self.policy, Where("container", self._keys(a_att)), Where("container", ()), True
        )
        dnat = frozenset(["dnat"])
        return Route(
            src,
            bd.target_ip,
            port[0],
            decisions,
            forward=Packet(
                4,
                src.ip,
                bd.target_ip,
                port[1],
                port[0],
                None,
                self._iface(src.net),
                oif,
                ct_status=dnat,
            ),
            reply=Packet(
                4,
                bd.target_ip,
                src.ip,
                port[1],
                None,
                port[0],
                oif,
                self._iface(src.net),
                ct_state="established",
                ct_status=dnat,
            ),
            reply_decisions=decisions,
            via=f"{host_ip}:{bd.host_port}",
            binding=bd,
        )

    def _unpublished_note(self, x: Explanation, b: Party, port: tuple[int, str]) -> None:
        c = b.container
        if c is None:
            return
        others = sorted({f"{bd.container_port}/{bd.proto}" for bd in c.ports})
        if others:
            x.add(
                "port",
                False,
                f"{b.name} {port[0]}/{port[1]}",
                f"{b.name} does not publish {port[0]}/{port[1]} (it publishes {', '.join(others)})",
                f"publish it: -p HOSTPORT:{port[0]}/{port[1]}",
            )

    def _macvlan(
        self,
        x: Explanation,
        a: Party,
        b: Party,
        pair: tuple[Attachment, Attachment],
        port: tuple[int, str] | None,
    ) -> Route:
        s, t = pair
        st = s.net.driver_state
        mode = str(st.get("mode", "bridge"))
        parent = str(st.get("parent", ""))
        obj = f"network {s.net.name} (macvlan on {parent}, mode {mode})"
        route = Route(s, t.ip, port[0] if port else None, [])
        x.target = _where(t.ip, route.dst_port)
        if mode == "private":
            x.add(
                "path",
                False,
                obj,
                f"{a.name} and {b.name} share macvlan network {s.net.name} in private mode: "
                "ports of one parent never reach each other",
                "recreate the network with -o macvlan_mode=bridge",
            )
            return route
        text = (
            f"{a.name} and {b.name} share macvlan network {s.net.name} (parent {parent}, mode "
            f"{mode}): "
        )
        text += (
            "the LAN switch must send their frames back (hairpin)"
            if mode == "vepa"
            else "ports of one parent reach each other inside the kernel"
        )
        x.add("path", True, obj, text)
        x.add(
            "policy",
            True,
            obj,
            "macvlan frames leave through the parent without crossing the host's IP stack: no "
            "nft rule of the host is on this path",
        )
        ok = True
        if port is not None:
            ok = self._port(x, b, route, port)
        x.reachable = ok
        return route

    # container -> service, host, outside ---------------------------------------------------

    def _to_service(
        self, x: Explanation, a: Party, b: Party, port: tuple[int, str] | None
    ) -> Route | None:
        svc = b.service
        assert svc is not None
        self._names(x, a, b)
        a_att = self.attachments(a)
        vips = [
            (att, _bare(v.get("Addr", "")))
            for v in svc.vips
            for att in a_att
            if att.net.id == v.get("NetworkID")
        ]
        if not vips:
            nets = sorted(
                n.name
                for v in svc.vips
                if (n := self.d.networks.by_id.get(v.get("NetworkID", ""))) is not None
            )
            x.add(
                "path",
                False,
                f"service {svc.name}",
                f"{a.name} shares no network with service {svc.name} (its VIPs are on "
                f"{', '.join(nets) or 'no network'})",
                f"tether network connect {nets[0]} {a.name}" if nets else "",
            )
            return None
        att, vip = vips[0]
        x.target = _where(vip, port[0] if port else None)
        backends, rule = self._vip_backends(a, vip)
        obj = f"table ip tether_svc in {a.name}'s namespace" + (
            f", chain {rule.chain} handle {rule.handle}" if rule is not None else ""
        )
        x.add(
            "path",
            True,
            f"network {att.net.name}",
            f"{a.name} reaches service {svc.name}'s VIP {vip} on network {att.net.name}",
        )
        if backends is None:
            x.add(
                "policy",
                False,
                obj,
                f"{svc.name}'s VIP {vip} is not balanced in {a.name}'s namespace (in no set "
                "vips_n<N>)",
                "tether doctor --repair",
            )
            return None
        if not backends:
            x.add(
                "policy",
                False,
                obj,
                f"no task of {svc.name} runs: its VIP {vip} answers nothing (rule drop)",
                f"check the service's tasks: tether service ps {svc.name}",
            )
            return None
        x.add(
            "policy",
            True,
            obj,
            f"connections to {vip} are sent to one of {len(backends)} task(s) at random: "
            f"{', '.join(backends)}",
        )
        # Then each task is an ordinary container on the network: the first one decides.
        task = self._task_at(backends[0])
        if task is None:
            x.reachable = True
            return Route(att, vip, port[0] if port else None, [])
        sub = Explanation(x.source, task.name, x.port)
        route = self._between_containers(sub, a, task, port)
        for r in sub.reasons:
            if r.step in ("policy", "port"):
                r.text = f"task {task.name}: {r.text}"
                x.reasons.append(r)
        x.reachable = sub.reachable
        return route

    def _vip_backends(self, a: Party, vip: str) -> tuple[list[str] | None, Rule | None]:
        try:
            listing = observe.nft_list("list table ip tether_svc", a.sandbox, json=True)
        except OSError:
            return None, None
        rs = Ruleset(listing)
        found = vip_entries(rs).get(vip)
        if found is None:
            return None, None
        return vip_backends(rs).get(vip, []), found[1]

    def _task_at(self, ip: str) -> Party | None:
        for c in self.d.containers.by_id.values():
            if c.state.running and any(_bare(ep.ipv4) == ip for ep in c.endpoints.values()):
                return self._of_container(c.name, c)
        cluster = self.d.cluster
        if cluster is not None:
            for eps in cluster.endpoints.values():
                for ep in eps.values():
                    if ep.ipv4 == ip:
                        return Party("remote", ep.name, ep.name, remotes=self._remotes(ep))
        return None

    def _to_host(
        self, x: Explanation, a: Party, b: Party, port: tuple[int, str] | None
    ) -> Route | None:
        from tether.engine.sandbox import gateway_endpoint

        c = a.netc or a.container
        assert c is not None
        a_att = self.attachments(a)
        gw = gateway_endpoint(c, self.d.networks.by_id.get)
        src = next((s for s in a_att if gw is not None and s.net.id == gw.network_id), None)
        src = src or (a_att[0] if a_att else None)
        if src is None:
            x.add("path", False, a.name, f"{a.name} has no network interface but lo")
            return None
        target = b.ip or next(
            (p.gateway for p in src.net.pools if p.version == 4 and p.gateway), ""
        )
        x.add(
            "names",
            True,
            "host",
            f"the host is reached at {target} (the gateway of {src.net.name})"
            if not b.ip
            else f"{target} is an address of the host",
        )
        x.target = _where(target, port[0] if port else None)
        if src.net.id[:12] not in self.keys:
            x.add(
                "path",
                False,
                f"network {src.net.name}",
                f"{src.net.name} is a {src.net.driver} network: the host cannot talk to its own "
                "macvlan containers through the parent",
                "add a macvlan interface on the host, or connect the container to a bridge network",
            )
            return None
        x.add(
            "path",
            True,
            f"network {src.net.name}",
            f"{a.name} reaches the host through {self._iface(src.net)}",
        )
        decisions = path(self.policy, Where("container", self._keys(a_att)), Where("host"))
        d = decisions[-1] if decisions else None
        ok = allowed(decisions)
        if d is not None and not ok and target in d.allowed:
            ok = True
        proto = port[1] if port else "icmp"
        pkt = Packet(
            4, src.ip, target, proto, port[0] if port else None, None, self._iface(src.net)
        )
        live = self._rules().evaluate("input", pkt)
        live_ok = live.verdict in ("accept", "continue")
        rule = live.rule
        obj = _rule_obj(rule) if rule is not None else "nft chain inet tether input"
        if d is not None:
            text = d.reason if ok == allowed(decisions) else f"{d.reason}; {target} is one of them"
            x.add(
                "policy",
                ok,
                obj,
                text + (f" (rule `{rule.text}`)" if rule is not None and rule.text else ""),
                d.fix if not ok else "",
            )
        if live_ok != ok:
            self._disagree(x, "the packet to the host", ok, live)
        if port is not None:
            ls = observe.listeners(None)
            ok = self._listening(x, "the host", ls, target, port) and ok
        x.reachable = ok
        return Route(src, target, port[0] if port else None, decisions)

    def _to_outside(
        self, x: Explanation, a: Party, b: Party, port: tuple[int, str] | None
    ) -> Route | None:
        from tether.engine.sandbox import gateway_endpoint

        c = a.netc or a.container
        assert c is not None
        a_att = self.attachments(a)
        x.add("names", True, b.ip, f"{b.ip} is an address outside tether's networks")
        x.target = _where(b.ip, port[0] if port else None)
        gw = gateway_endpoint(c, self.d.networks.by_id.get)
        decisions = path(self.policy, Where("container", self._keys(a_att)), Where("outside"))
        if gw is None:
            internal = [s.net.name for s in a_att if s.net.internal]
            d = decisions[-1] if decisions and decisions[-1].verdict != "continue" else None
            x.add(
                "path",
                False,
                a.name,
                f"{a.name} has no default route: "
                + (
                    f"its networks are --internal ({', '.join(internal)})"
                    if internal
                    else "none of its networks gives a way out"
                ),
                d.fix
                if d is not None and d.fix
                else "connect the container to a non-internal network",
            )
            if d is not None:
                x.add("policy", False, self._decision_obj(d), d.reason, d.fix)
            return None
        src = next(s for s in a_att if s.net.id == gw.network_id)
        out_if, out_gw = self._host_route(b.ip)
        if not out_if:
            x.add("path", False, "the host's routing table", f"the host has no route to {b.ip}")
            return None
        x.add(
            "path",
            True,
            f"network {src.net.name}",
            f"{a.name} leaves through {src.net.name} ({self._iface(src.net)}), then the host "
            f"sends it out of {out_if}" + (f" via {out_gw}" if out_gw else ""),
        )
        proto = port[1] if port else "icmp"
        dport = port[0] if port else None
        route = Route(
            src,
            b.ip,
            dport,
            decisions,
            forward=Packet(4, src.ip, b.ip, proto, dport, None, self._iface(src.net), out_if),
        )
        x.reachable = self._policy(x, a, b, route)
        if port is not None:
            x.add("port", True, b.ip, f"not checked: {b.ip} is outside tether")
        return route

    def _into_container(
        self, x: Explanation, a: Party, b: Party, port: tuple[int, str] | None
    ) -> Route | None:
        b_att = self.attachments(b)
        if b.ip:
            b_att = [t for t in b_att if t.ip == b.ip] or b_att
        x.add(
            "names",
            True,
            b.label,
            f"{b.label} is an address: there is no name to resolve"
            if _ip(b.label)
            else f"{b.name} is a container; the host does not resolve container names",
        )
        if not b_att:
            x.add("path", False, b.name, f"{b.name} has no address (--network none)")
            return None
        t = b_att[0]
        x.target = _where(t.ip, port[0] if port else None)
        if a.kind == "host":
            if t.node:
                x.add(
                    "path",
                    False,
                    f"network {t.net.name}",
                    f"{b.name} runs on node {t.node}: overlay subnets are not routed on the "
                    "nodes, only containers on the network reach it",
                    "run the client in a container on the overlay network",
                )
                return Route(None, t.ip, port[0] if port else None, [])  # for a probe
            if t.net.id[:12] not in self.keys:
                x.add(
                    "path",
                    False,
                    f"network {t.net.name}",
                    f"{b.name} is on macvlan network {t.net.name}: the host cannot reach its own "
                    "macvlan containers through the parent",
                    "add a macvlan interface on the host (ip link add ... type macvlan mode "
                    "bridge) and route the subnet through it",
                )
                return Route(None, t.ip, port[0] if port else None, [])  # for a probe
            if t.net.driver == "overlay":
                x.add(
                    "path",
                    False,
                    f"network {t.net.name}",
                    f"overlay subnets are not routed on the host ({t.net.name} has no address "
                    "here): only containers on the network reach it",
                    "publish a port, or run the client in a container on the network",
                )
                return Route(None, t.ip, port[0] if port else None, [])  # for a probe
            x.add(
                "path",
                True,
                f"network {t.net.name}",
                f"the host routes straight onto {self._iface(t.net)} (network {t.net.name}): "
                "no forwarding, no isolation on this path",
            )
            decisions = path(self.policy, Where("host"), Where("container", (t.net.id[:12],)))
            x.add(
                "policy",
                True,
                "nft table inet tether",
                "the host's own connections to its containers meet no rule of tether's (they are "
                "not forwarded)",
            )
            ok = True
            route = Route(None, t.ip, port[0] if port else None, decisions)
            if port is not None:
                ok = self._port(x, b, route, port)
            x.reachable = ok
            return route
        # From an address outside: only published ports get in.
        c = b.container
        bindings = [
            bd
            for bd in (c.ports if c is not None else [])
            if port is not None
            and bd.container_port == port[0]
            and bd.proto == port[1]
            and bd.family == 4
            and bd.target_ip
            and not bd.host_ip.startswith("127.")
        ]
        published = bool(bindings)
        decisions = path(
            self.policy, Where("outside"), Where("container", self._keys(b_att)), published
        )
        in_if, _gw = self._host_route(a.ip)
        if published:
            bd = bindings[0]
            x.target = (
                f"{'<host address>' if bd.host_ip == '0.0.0.0' else bd.host_ip}:{bd.host_port}"
            )
            x.add(
                "path",
                True,
                f"{b.name} {port[0] if port else ''}/{port[1] if port else ''}",
                f"{b.name} publishes it on {_binding_text(bd)}: {a.ip} reaches it at the host's "
                f"address, port {bd.host_port}",
            )
            pkt = Packet(
                4,
                a.ip,
                bd.target_ip,
                bd.proto,
                bd.container_port,
                None,
                in_if,
                self._iface(t.net),
                ct_status=frozenset(["dnat"]),
            )
        else:
            x.add(
                "path",
                False,
                f"network {t.net.name}",
                f"{a.ip} is outside tether: nothing from outside enters {t.net.name} but replies "
                "and published ports",
                f"publish the port: tether run -p HOSTPORT:{port[0] if port else 'PORT'} ...",
            )
            pkt = Packet(
                4,
                a.ip,
                t.ip,
                port[1] if port else "icmp",
                port[0] if port else None,
                None,
                in_if,
                self._iface(t.net),
            )
        route = Route(None, pkt.daddr, pkt.dport, decisions, forward=pkt)
        ok = self._policy(x, a, b, route) and published
        if port is not None and published:
            ok = self._port(x, b, route, port) and ok
        x.reachable = ok
        return route

    def _host_route(self, ip: str) -> tuple[str, str]:
        """(device, gateway) the host sends `ip` out of (longest prefix of the main table)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return "", ""
        best: tuple[int, str, str] | None = None
        with observe.View() as v:
            names = {link.index: link.name for link in v.links()}
            for r in v.routes():
                if r.family != addr.version:
                    continue
                net = ipaddress.ip_network(
                    "0.0.0.0/0"
                    if r.dst == "default" and r.family == 4
                    else "::/0"
                    if r.dst == "default"
                    else r.dst
                )
                if addr in net and (best is None or net.prefixlen > best[0]):
                    best = (net.prefixlen, names.get(r.oif, ""), r.gateway)
        return (best[1], best[2]) if best is not None else ("", "")

    # policy -----------------------------------------------------------------------------------

    def _rules(self) -> Ruleset:
        if self._ruleset is None:
            table = TABLE
            try:
                listing = observe.nft_list(f"list table {table}", json=True)
                texts = rule_texts(observe.nft_list(f"list table {table}", handles=True))
            except OSError as exc:
                log.warning("cannot read nft table %s: %s", table, exc)
                listing, texts = '{"nftables": []}', {}
            self._ruleset = Ruleset(listing, texts)
        return self._ruleset

    def _verdict(self, route: Route) -> tuple[bool, Outcome | None, bool, Outcome | None]:
        """(forward allowed, the user chain's outcome, reply allowed, its user outcome)."""
        rs = self._rules()
        user = rs.evaluate("user", route.forward) if route.forward is not None else None
        fwd = _judge(user, route.decisions) and not route.blocked
        user_reply = rs.evaluate("user", route.reply) if route.reply is not None else None
        back = _judge(user_reply, route.reply_decisions) if route.reply is not None else True
        return fwd and back, user, back, user_reply

    def _decision_obj(self, d: Decision) -> str:
        net = self.policy.net(d.network) if d.network else None
        return f"network {net.label}" if net is not None else "nft table inet tether"

    def _policy(self, x: Explanation, a: Party, b: Party, route: Route) -> bool:
        rs = self._rules()
        assert route.forward is not None
        ok_all, user, back, user_reply = self._verdict(route)
        fwd = _judge(user, route.decisions)
        live = rs.evaluate("forward", route.forward)
        d = next((d for d in reversed(route.decisions) if d.verdict != "continue"), None)
        if user is not None and user.verdict != "continue" and user.rule is not None:
            r = user.rule
            if user.verdict == "accept":
                x.add(
                    "policy",
                    True,
                    _rule_obj(r),
                    f"rule `{r.text}` in chain user accepts it (your rule: tether's isolation is skipped)",
                )
            else:
                x.add(
                    "policy",
                    False,
                    _rule_obj(r),
                    f"rule `{r.text}` in chain user {'rejects' if user.verdict == 'reject' else 'drops'} it",
                    f"nft delete rule inet tether user handle {r.handle}",
                )
        elif d is not None:
            rule = live.rule
            shown = f" (rule `{rule.text}`)" if rule is not None and rule.text else ""
            x.add(
                "policy",
                fwd,
                _rule_obj(rule) if rule is not None else self._decision_obj(d),
                d.reason + shown,
                "" if fwd else d.fix,
            )
        else:
            x.add("policy", True, "nft table inet tether", "no rule of tether's stops it")
        for r in user.maybe if user is not None else []:
            x.add(
                "policy",
                True,
                _rule_obj(r),
                f"rule `{r.text}` in chain user may also apply: it matches on something explain cannot know for this packet",
            )
        live_ok = live.verdict in ("accept", "continue")
        if live_ok != fwd and not (user and user.maybe):
            self._disagree(x, f"{a.name} -> {b.name}", fwd, live)
        if fwd and route.reply is not None:
            live_back = rs.evaluate("forward", route.reply)
            rd = next((d for d in reversed(route.reply_decisions) if d.verdict != "continue"), None)
            if not back:
                if (
                    user_reply is not None
                    and user_reply.verdict in ("drop", "reject")
                    and user_reply.rule is not None
                ):
                    r = user_reply.rule
                    x.add(
                        "policy",
                        False,
                        _rule_obj(r),
                        f"the replies from {b.name} are dropped by rule `{r.text}` in chain user",
                        f"nft delete rule inet tether user handle {r.handle}",
                    )
                else:
                    rule = live_back.rule
                    reason = rd.reason if rd is not None else "tether's rules"
                    x.add(
                        "policy",
                        False,
                        _rule_obj(rule) if rule is not None else "nft table inet tether",
                        f"the replies from {b.name} are dropped: {reason}"
                        + (f" (rule `{rule.text}`)" if rule is not None and rule.text else "")
                        + "; your rule in chain user lets the first packet through, but not the answers",
                        USER_FIX_REPLY,
                    )
            live_back_ok = live_back.verdict in ("accept", "continue")
            if live_back_ok != back and not (user_reply and user_reply.maybe):
                self._disagree(x, f"the replies {b.name} -> {a.name}", back, live_back)
        if route.binding is not None and not self._dnat_present(route.binding):
            bd = route.binding
            x.add(
                "policy",
                False,
                "nft map inet tether pub4",
                f"MISMATCH: {bd.host_port}/{bd.proto} is published, but the kernel's table has no "
                f"DNAT for it (no element `{bd.proto} . {bd.host_port} : {bd.target_ip} . "
                f"{bd.container_port}`): the table was changed behind tether's back",
                "tether doctor --repair",
            )
            ok_all = False
        if route.blocked:
            x.add(
                "policy",
                False,
                f"{b.name}'s routes",
                route.blocked,
                f"connect {b.name} to a network with a way out (tether network connect NET {b.name})",
            )
        return ok_all

    def _dnat_present(self, bd: PortBinding) -> bool:
        from tether.explain.doctor import _json_elem, _norm_elem

        rs = self._rules()
        if not rs.chains:
            return True  # the table could not be read: already said
        value = f"{bd.target_ip} . {bd.container_port}"
        if bd.host_ip in ("0.0.0.0", ""):
            name, key = "pub4", f"{bd.proto} . {bd.host_port}"
        else:
            name, key = "pub4ip", f"{bd.host_ip} . {bd.proto} . {bd.host_port}"
        have = {_norm_elem(_json_elem(e)) for e in rs.sets.get(name, [])}
        return f"{key} : {value}" in have

    def _disagree(self, x: Explanation, what: str, model: bool, live: Outcome) -> None:
        rule = live.rule
        x.add(
            "policy",
            False,
            _rule_obj(rule) if rule is not None else "nft table inet tether",
            f"MISMATCH: tether's model says {what} is {'accepted' if model else 'dropped'}, but "
            f"the kernel's live ruleset {'accepts' if live.verdict in ('accept', 'continue') else 'drops'} it"
            + (f" (rule `{rule.text}`)" if rule is not None and rule.text else "")
            + ": the table was changed behind tether's back",
            "tether doctor --repair",
        )

    # port -------------------------------------------------------------------------------------

    def _port(self, x: Explanation, b: Party, route: Route, port: tuple[int, str]) -> bool:
        if b.kind == "remote" or (b.kind == "container" and not b.sandbox):
            node = b.remotes[0].node if b.remotes else "another node"
            x.add("port", True, b.name, f"not checked: {b.name} runs on node {node}")
            return True
        try:
            ls = observe.listeners(b.sandbox)
        except OSError as exc:
            x.add("port", False, b.name, f"cannot read {b.name}'s sockets: {exc.strerror or exc}")
            return False
        return self._listening(x, b.name, ls, route.dst_ip, port)

    def _listening(
        self, x: Explanation, who: str, ls: list[observe.Listener], ip: str, port: tuple[int, str]
    ) -> bool:
        number, proto = port
        mine = [s for s in ls if s.proto == proto and s.port == number]
        obj = f"{who} {number}/{proto}"
        if any(s.wildcard or s.addr == ip for s in mine):
            s = next(s for s in mine if s.wildcard or s.addr == ip)
            x.add("port", True, obj, f"{who} listens on {s.text()}")
            return True
        if mine and all(s.loopback_only for s in mine):
            x.add(
                "port",
                False,
                obj,
                f"{who} listens on {mine[0].text()} only: reachable from inside {who}, not from "
                "other containers",
                f"make the server listen on 0.0.0.0:{number} (all addresses) instead of "
                f"{mine[0].addr}",
            )
            return False
        if mine:
            x.add(
                "port",
                False,
                obj,
                f"{who} listens on {mine[0].text()} only, not on {ip}",
                f"make the server listen on 0.0.0.0:{number} (all addresses)",
            )
            return False
        others = sorted(
            {f"{s.port}/{s.proto}" for s in ls if s.addr != "127.0.0.11"},
            key=lambda t: int(t.split("/")[0]),
        )
        x.add(
            "port",
            False,
            obj,
            f"nothing in {who} listens on {number}/{proto}"
            + (f" (it listens on {', '.join(others)})" if others else " (nothing listens at all)"),
            f"start the server in {who} on port {number}/{proto}, or ask for the port it uses",
        )
        return False

    # probe ------------------------------------------------------------------------------------

    async def _probe(
        self, x: Explanation, a: Party, route: Route | None, port: tuple[int, str] | None
    ) -> None:
        if a.kind not in ("container", "host"):
            x.add("probe", True, a.name, f"not probed: {a.name} is not a container or the host")
            return
        if not x.target or route is None:
            x.add("probe", True, a.name, "not probed: there is no address to send to")
            return
        where = route.via or _where(route.dst_ip, route.dst_port)
        ip, _, p = where.rpartition(":") if route.dst_port is not None else (where, "", "")
        ip = ip.strip("[]")
        ns = a.sandbox if a.kind == "container" else None
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            None, probe, ns, ip, int(p) if p else None, port[1] if port else "icmp"
        )
        x.probed = result.reached
        if result.reached is None:
            x.add("probe", True, f"{a.name} -> {where}", f"{result.text}: inconclusive")
            return
        if result.reached == x.static:
            x.add(
                "probe",
                result.reached,
                f"{a.name} -> {where}",
                f"{result.text}: confirms the verdict",
            )
            x.reachable = result.reached
            return
        x.contradiction = True
        x.reachable = result.reached
        x.add(
            "probe",
            result.reached,
            f"{a.name} -> {where}",
            f"CONTRADICTION: {result.text}, but the static verdict was "
            f"{'reachable' if x.static else 'not reachable'}: something tether does not model is "
            "on this path (a firewall inside the container, a changed table, a moved address)",
            "tether doctor",
        )


def _judge(user: Outcome | None, decisions: list[Decision]) -> bool:
    if user is not None and user.verdict == "accept":
        return True
    if user is not None and user.verdict in ("drop", "reject"):
        return False
    return allowed(decisions)


def _rule_obj(rule: Rule | None) -> str:
    if rule is None:
        return "nft table inet tether"
    return f"nft rule inet tether {rule.chain} handle {rule.handle}"


def _where(ip: str, port: int | None) -> str:
    if port is None:
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _port_text(port: tuple[int, str] | None) -> str:
    return f"{port[0]}/{port[1]}" if port else ""


def _binding_text(bd: PortBinding | None) -> str:
    if bd is None:
        return ""
    return f"{_where(bd.host_ip, bd.host_port)}"
