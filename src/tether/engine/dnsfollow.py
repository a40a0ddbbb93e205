"""Keeping the embedded DNS in step with the containers.

Every container event rebuilds the Zone (a snapshot of names per network) and updates which
sandboxes the DNS server listens in.  A container's sockets are opened before its process
starts, so even its first lookup finds 127.0.0.11 answering.
"""

from __future__ import annotations

import logging

from tether.dns.answer import View
from tether.dns.records import Member
from tether.dns.server import DnsServer, is_loopback
from tether.engine.containers import Containers
from tether.engine.endpoints import user_defined
from tether.events import (
    ClusterEndpoints,
    ContainerDestroyed,
    ContainerStarted,
    ContainerStopped,
    EndpointJoined,
    EndpointLeft,
    EventBus,
    SandboxReady,
    SandboxRemoving,
)
from tether.model import Container, Network
from tether.netmodes import GATEWAY_BRIDGE

log = logging.getLogger("tether.dns")


def has_names(net: Network | None, name: str) -> bool:
    """Whether the embedded DNS serves names on this network: user-defined networks only,
    and not the gateway bridge (it only carries an overlay container's way out) nor the
    ingress network (it only carries the routing mesh's traffic; swarm gives it no DNS)."""
    return user_defined(net) and name != GATEWAY_BRIDGE and net is not None and not net.ingress


class DnsFollower:
    def __init__(self, server: DnsServer, containers: Containers, events: EventBus) -> None:
        self.server = server
        self.containers = containers
        self.generation = 0
        # Each container's entries in the zone now (what the next change must take out).
        self.members: dict[str, list[Member]] = {}
        events.subscribe(SandboxReady, lambda e: self.prepare(e.container))
        events.subscribe(SandboxRemoving, lambda e: self.release(e.container))
        events.subscribe(ContainerStarted, lambda e: self.on_event(e.container, "start"))
        events.subscribe(ContainerStopped, lambda e: self.on_event(e.container, "stop"))
        events.subscribe(ContainerDestroyed, lambda e: self.on_event(e.container, "destroy"))
        events.subscribe(EndpointJoined, lambda e: self.on_event(e.container, "connect"))
        events.subscribe(EndpointLeft, lambda e: self.on_event(e.container, "disconnect"))
        # Containers on other nodes (global networks), as the cluster store has them.
        events.subscribe(ClusterEndpoints, self.on_remote)
        self.remote: dict[str, dict[str, Member]] = {}  # network id -> endpoint id -> entry
        self.vips: dict[tuple[str, str], Member] = {}  # (network, service) -> its VIP's entry

    def view(self, c: Container) -> View | None:
        """The sandbox's view, or None when it has no embedded DNS (default bridge, host, none)."""
        nets = []
        external = False
        for name, ep in c.endpoints.items():
            net = self.containers.network_of(ep.network_id)
            if has_names(net, name):
                nets.append(name)
            external = external or (net is not None and not net.internal)
        if not nets:
            return None
        options = c.host_config.get("DnsOptions") or []
        upstreams = tuple(c.dns_upstreams)
        if not external:
            # Only on internal networks: never ask from the host's namespace (a loopback
            # upstream) on the container's behalf, or DNS would be a way out
            # (CVE-2024-29018).  Upstreams are still asked from the container's own
            # namespace, where only a server on its internal networks can answer
            # (moby#47821).
            upstreams = tuple(u for u in upstreams if not is_loopback(u))
        return View(
            networks=tuple(nets),
            upstreams=upstreams,
            ndots_set=any(str(o).startswith("ndots:") for o in options),
        )

    def prepare(self, c: Container) -> None:
        self.update(c)
        v = self.view(c)
        if v is not None and c.sandbox_key:
            try:
                self.server.attach(c.id, c.sandbox_key, v)
            except Exception as exc:  # the container runs; only its name lookups will fail
                log.warning("embedded DNS not available in %s: %s", c.name, exc)

    def release(self, c: Container) -> None:
        """The sandbox is about to go: its names leave the zone and its sockets are closed
        before this returns (server.detach), so nothing holds the namespace any more."""
        old = self.members.pop(c.id, [])
        if old:
            self.generation += 1
            self.server.set_zone(self.server.zone.apply(old, [], self.generation))
        self.server.detach(c.id)

    def on_event(self, c: Container, event: str) -> None:
        self.update(c)
        if event in ("stop", "destroy") or not c.state.running:
            self.server.detach(c.id)
            return
        v = self.view(c)
        if v is None:
            self.server.detach(c.id)
        elif c.sandbox_key:
            try:
                self.server.attach(c.id, c.sandbox_key, v)
            except Exception as exc:
                log.warning("embedded DNS not available in %s: %s", c.name, exc)

    def members_of(self, c: Container) -> list[Member]:
        """The container's entries in the zone: one per endpoint on a user-defined network."""
        if c.id not in self.containers.by_id or not c.endpoints:
            return []
        hostname = str(c.config.get("Hostname") or "")
        out = []
        for name, ep in c.endpoints.items():
            net = self.containers.network_of(ep.network_id)
            if not has_names(net, name):
                continue
            cfg = c.networks.get(name)
            out.append(
                Member(
                    network=name,
                    name=c.name,
                    short_id=c.short_id,
                    hostname="" if hostname == c.short_id else hostname,
                    aliases=tuple(cfg.aliases) if cfg else (),
                    ipv4=ep.ipv4.split("/")[0] if ep.ipv4 else "",
                    ipv6=ep.ipv6.split("/")[0] if ep.ipv6 else "",
                )
            )
        return out

    def on_remote(self, ev: ClusterEndpoints) -> None:
        """Another node's endpoints on a global network changed: swap in their entries
        (only those of the endpoints the change touched, when it says which)."""
        net = self.containers.network_of(ev.network_id)
        held = self.remote.setdefault(ev.network_id, {})
        ids = ev.changed if ev.changed is not None else set(held) | set(ev.endpoints)
        removed: list[Member] = []
        added: list[Member] = []
        for ep_id in ids:
            ep = ev.endpoints.get(ep_id)
            new = None
            if has_names(net, net.name if net else "") and ep is not None and ep.node != ev.node:
                assert net is not None
                new = Member(
                    network=net.name,
                    name=ep.name,
                    short_id=ep.short_id,
                    hostname=ep.hostname,
                    aliases=tuple(ep.aliases),
                    ipv4=ep.ipv4,
                    ipv6=ep.ipv6,
                )
            old = held.get(ep_id)
            if old == new:
                continue
            if old is not None:
                removed.append(old)
                del held[ep_id]
            if new is not None:
                added.append(new)
                held[ep_id] = new
        if not held:
            self.remote.pop(ev.network_id, None)
        if removed or added:
            self.generation += 1
            self.server.set_zone(self.server.zone.apply(removed, added, self.generation))

    def set_vips(self, entries: list[tuple[str, str, str]]) -> None:
        """Services' virtual IPs as names: (network name, service name, VIP) each; the
        swarm names `web` (the VIP) and `web.<network>`."""
        new = {
            (net, name): Member(
                network=net, name=name, short_id="", hostname="", aliases=(), ipv4=vip
            )
            for net, name, vip in entries
        }
        removed = [m for k, m in self.vips.items() if new.get(k) != m]
        added = [m for k, m in new.items() if self.vips.get(k) != m]
        self.vips = new
        if removed or added:
            self.generation += 1
            self.server.set_zone(self.server.zone.apply(removed, added, self.generation))

    def update(self, c: Container) -> None:
        """Swap in a zone with this container's entries as they are now.

        Only the container's own entries are replaced (Zone.apply), so an event costs the
        same with 10 or 1,000 containers on the network.
        """
        new = self.members_of(c)
        old = self.members.pop(c.id, [])
        if new:
            self.members[c.id] = new
        if new == old:
            return
        self.generation += 1
        self.server.set_zone(self.server.zone.apply(old, new, self.generation))
