"""tetherd --metrics-addr HOST:PORT: Prometheus metrics, read from the daemon's state on scrape.

Nothing here costs anything between scrapes except the API's request counter and histogram
(one dictionary lookup and two increments per request).  The DNS thread keeps its own plain
integer counts (dns/server.py: `stats`), which a custom collector reads as they are; packet
and byte counts per network are nftables named counters in tether's table (firewall/
render.py: `tx_<key>`, `rx_<key>`), listed on scrape; connections per published port are the
established conntrack entries DNATed to it, counted on scrape.  Like Docker's --metrics-addr, the
endpoint is unauthenticated: bind it to loopback unless the network in front is trusted.

    tether_api_requests_total{method, route, code}
    tether_api_request_duration_seconds{method, route}      histogram
    tether_dns_queries_total{answer}                          local | forwarded | nxdomain | servfail
    tether_network_packets_total{network, direction}          tx (from its containers) | rx
    tether_network_bytes_total{network, direction}
    tether_published_port_connections{container, proto, host_ip, host_port}   established now
    tether_containers{state}
    tether_cluster_store_up, tether_cluster_nodes{status}     cluster nodes only
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from tether.daemon.http import HttpServer, Request, Response, Router
from tether.kernel.nft import NftError

if TYPE_CHECKING:
    from tether.daemon.app import Daemon

log = logging.getLogger("tether.metrics")

TCP_ESTABLISHED = 3  # enum tcp_conntrack (linux/netfilter/nf_conntrack_tcp.h)
# How long a scrape waits for the cluster store to answer before calling it down (well under
# Prometheus's default scrape timeout of 10 s).
STORE_PROBE_TIMEOUT = 2.0
# A probe's answer serves the scrapes of the next second too: scrapers that poll together
# (several Prometheus, a dashboard) cost the store one read, not one each.
STORE_PROBE_TTL = 1.0
STATES = ("created", "running", "exited", "removing", "dead")


def parse_addr(text: str) -> tuple[str, int]:
    """HOST:PORT ([v6]:PORT too), as Docker's --metrics-addr; ValueError in its words."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid --metrics-addr {text!r}: want HOST:PORT, e.g. 127.0.0.1:9323")
    host = host.strip("[]") or "0.0.0.0"
    try:
        socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise ValueError(f"invalid --metrics-addr {text!r}: {host} is not an IP address") from None
    return host, int(port)


class StateCollector(Collector):
    """Everything read from the daemon at scrape time."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        # Whether the cluster store answered the scrape's own read (Metrics.probe_store).
        # The follower's `connected` is not enough: its watch moves from member to member
        # without telling anyone, so a store that died stays "connected" until the next
        # relist (up to a minute).
        self.store_answers: bool | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._dns()
        yield from self._containers()
        try:
            yield from self._networks()
        except (NftError, ValueError, KeyError) as exc:
            log.warning("metrics: nftables counters unreadable: %s", exc)
        try:
            yield from self._ports()
        except Exception as exc:  # conntrack may be unavailable; the rest still answers
            log.warning("metrics: conntrack unreadable: %s", exc)
        yield from self._cluster()

    def _dns(self) -> Iterator[Metric]:
        s = dict(self.daemon.dns.stats)  # a copy: the DNS thread goes on counting
        m = CounterMetricFamily(
            "tether_dns_queries",
            "DNS queries to 127.0.0.11, by how they were answered",
            labels=["answer"],
        )
        m.add_metric(["local"], s.get("cache_hits", 0) + s.get("local", 0))
        m.add_metric(["forwarded"], s.get("upstream", 0))
        m.add_metric(["nxdomain"], s.get("nxdomain", 0))
        m.add_metric(["servfail"], s.get("servfail", 0))
        yield m

    def _containers(self) -> Iterator[Metric]:
        counts = dict.fromkeys(STATES, 0)
        for c in self.daemon.containers.by_id.values():
            counts[c.state.status] = counts.get(c.state.status, 0) + 1
        m = GaugeMetricFamily("tether_containers", "Containers by state", labels=["state"])
        for state, n in counts.items():
            m.add_metric([state], n)
        yield m

    def _networks(self) -> Iterator[Metric]:
        from tether.firewall.render import TABLE

        names = {n.id[:12]: n.name for n in self.daemon.networks.by_id.values()}
        out = self.daemon.nft.run(f"list counters table {TABLE}", json_output=True)
        packets = CounterMetricFamily(
            "tether_network_packets",
            "Packets forwarded from (tx) and to (rx) a network's containers",
            labels=["network", "direction"],
        )
        octets = CounterMetricFamily(
            "tether_network_bytes",
            "Bytes forwarded from (tx) and to (rx) a network's containers",
            labels=["network", "direction"],
        )
        for item in json.loads(out or "{}").get("nftables", []):
            counter = item.get("counter")
            if not counter:
                continue
            direction, _, key = str(counter.get("name", "")).partition("_")
            if direction not in ("tx", "rx") or key not in names:
                continue
            packets.add_metric([names[key], direction], counter.get("packets", 0))
            octets.add_metric([names[key], direction], counter.get("bytes", 0))
        yield packets
        yield octets

    def _ports(self) -> Iterator[Metric]:
        bindings = [
            (c.name, p)
            for c in self.daemon.containers.by_id.values()
            if c.state.running
            for p in c.ports
            if p.target_ip and p.family == 4
        ]
        m = GaugeMetricFamily(
            "tether_published_port_connections",
            "Established connections through a published port now (conntrack entries DNATed to it)",
            labels=["container", "proto", "host_ip", "host_port"],
        )
        if bindings:
            # pyroute2's synchronous API refuses to run inside an event loop's thread.
            with ThreadPoolExecutor(1) as pool:
                seen = pool.submit(_dnat_targets).result(timeout=5)
            for name, p in bindings:
                n = seen.get((p.proto, p.host_port, p.target_ip, p.container_port), 0)
                m.add_metric([name, p.proto, p.host_ip, str(p.host_port)], n)
        yield m

    def _cluster(self) -> Iterator[Metric]:
        cluster = self.daemon.cluster
        if cluster is None:
            return
        up = GaugeMetricFamily(
            "tether_cluster_store_up", "Whether the cluster store answers (1) or not (0)"
        )
        answers = self.store_answers
        if answers is None:
            answers = cluster.connected.is_set()
        up.add_metric([], 1 if answers else 0)
        yield up
        nodes = GaugeMetricFamily(
            "tether_cluster_nodes", "Cluster nodes by status", labels=["status"]
        )
        counts = {"ready": 0, "down": 0}
        for node in cluster.nodes.values():
            counts[node.status] = counts.get(node.status, 0) + 1
        for status, count in counts.items():
            nodes.add_metric([status], count)
        yield nodes


def _dnat_targets() -> dict[tuple[str, int, str, int], int]:
    """Conntrack entries by (proto, original destination port, DNAT target, target port)."""
    from pyroute2 import Conntrack

    protos = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", 132: "sctp"}
    out: dict[tuple[str, int, str, int], int] = {}
    ct = Conntrack()
    try:
        for e in ct.dump_entries():
            orig, reply = e.tuple_orig, e.tuple_reply
            proto = protos.get(getattr(orig, "proto", 0))
            if proto is None or reply.saddr == orig.daddr:
                continue  # not DNATed
            if proto == "tcp" and getattr(e.protoinfo, "state", TCP_ESTABLISHED) != TCP_ESTABLISHED:
                continue  # closing or closed (TIME_WAIT lingers for minutes)
            key = (proto, int(orig.dport or 0), str(reply.saddr), int(reply.sport or 0))
            out[key] = out.get(key, 0) + 1
    finally:
        ct.close()
    return out


class Metrics:
    def __init__(self, daemon: Daemon) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ProcessCollector(registry=None))
        self.daemon = daemon
        self.state = StateCollector(daemon)
        self.registry.register(self.state)
        self.requests = Counter(
            "tether_api_requests",
            "API requests by route and status code",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tether_api_request_duration_seconds",
            "API request latency by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.server: HttpServer | None = None
        self._probe: asyncio.Task[None] | None = None  # the read under way, shared
        self._probed_at = float("-inf")  # loop time the last read ended

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """The API server's hook, once per request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    async def start(self, addr: str) -> None:
        host, port = parse_addr(addr)
        router = Router()

        async def scrape(req: Request) -> Response:
            await self.probe_store()
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

        router.add("GET", "/metrics", scrape)
        self.server = HttpServer(router)
        await self.server.start_tcp(host, port)
        log.info("metrics on http://%s/metrics (unauthenticated)", addr)

    async def probe_store(self) -> None:
        """Does the store answer now?  Scrapes meanwhile wait for the read under way, and
        one within STORE_PROBE_TTL of its end takes its answer."""
        if self.daemon.cluster is None:
            return
        loop = asyncio.get_running_loop()
        if self._probe is None:
            if loop.time() - self._probed_at < STORE_PROBE_TTL:
                return
            self._probe = loop.create_task(self._probe_once())
        # Shielded: a scraper that goes away does not cancel the read the others wait for.
        await asyncio.shield(self._probe)

    async def _probe_once(self) -> None:
        """One bounded read of this node's own registration."""
        try:
            await self._read_own_registration()
        finally:
            self._probed_at = asyncio.get_running_loop().time()
            self._probe = None

    async def _read_own_registration(self) -> None:
        cluster = self.daemon.cluster
        if cluster is None:
            return
        from tether.cluster import keys
        from tether.store.etcd import StoreError

        try:
            await asyncio.wait_for(
                cluster.client.get(keys.node(cluster.node.name)), STORE_PROBE_TIMEOUT
            )
            self.state.store_answers = True
        except (StoreError, TimeoutError):
            self.state.store_answers = False

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
