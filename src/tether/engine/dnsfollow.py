"""Keeping the embedded DNS in step with the containers.

Every container event rebuilds the Zone (a snapshot of names per network) and updates which
sandboxes the DNS server listens in.  A container's sockets are opened before its process
starts, so even its first lookup finds 127.0.0.11 answering.
"""

from __future__ import annotations

import logging

from tether.dns.answer import View
from tether.dns.records import Member, Zone
from tether.dns.server import DnsServer, is_loopback
from tether.engine.container_views import user_defined
from tether.engine.containers import Containers
from tether.model import Container

log = logging.getLogger("tether.dns")


class DnsFollower:
    def __init__(self, server: DnsServer, containers: Containers) -> None:
        self.server = server
        self.containers = containers
        self.generation = 0
        containers.listeners.append(self.on_event)
        containers.before_process_start.append(self.prepare)

    def view(self, c: Container) -> View | None:
        """The sandbox's view, or None when it has no embedded DNS (default bridge, host, none)."""
        nets = []
        external = False
        for name, ep in c.endpoints.items():
            net = self.containers.network_of(ep.network_id)
            if user_defined(net):
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
        self.rebuild()
        v = self.view(c)
        if v is not None and c.sandbox_key:
            try:
                self.server.attach(c.id, c.sandbox_key, v)
            except Exception as exc:  # the container runs; only its name lookups will fail
                log.warning("embedded DNS not available in %s: %s", c.name, exc)

    def on_event(self, c: Container, event: str) -> None:
        self.rebuild()
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

    def rebuild(self) -> None:
        members: list[Member] = []
        for c in self.containers.by_id.values():
            if not c.endpoints:
                continue
            hostname = str(c.config.get("Hostname") or "")
            for name, ep in c.endpoints.items():
                net = self.containers.network_of(ep.network_id)
                if not user_defined(net):
                    continue
                cfg = c.networks.get(name)
                members.append(
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
        self.generation += 1
        self.server.set_zone(Zone.build(members, self.generation))
