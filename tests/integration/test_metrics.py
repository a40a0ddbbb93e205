"""tetherd --metrics-addr: a scrape whose values move when traffic flows."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from nshost import PYTHON, NamespaceHost, Upstream, namespace_host, sh

pytestmark = pytest.mark.integration

ADDR = "127.0.0.1:9323"


@pytest.fixture
def mhost() -> Iterator[NamespaceHost]:
    with namespace_host(["--metrics-addr", ADDR]) as h:
        h.import_busybox()
        yield h


def scrape(h: NamespaceHost) -> dict[str, float]:
    """Every sample of one scrape: {'name{labels}': value}."""
    text = h.sh(f"busybox wget -qO- http://{ADDR}/metrics").stdout
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_move_with_traffic(mhost: NamespaceHost) -> None:
    h = mhost
    up = Upstream(h)  # answers *.anchor.test, NXDOMAIN for the rest
    try:
        h.ok("network", "create", "--subnet", "10.71.0.0/24", "mnet")
        h.ok(
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "mnet",
            "-p",
            "8088:80",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
        )
        h.ok(
            "run",
            "-d",
            "--name",
            "cli",
            "--network",
            "mnet",
            "--dns",
            "198.18.53.53",
            "busybox",
            "sleep",
            "600",
        )
        h.ok(
            "run",
            "-d",
            "--name",
            "lost",
            "--network",
            "mnet",
            "--dns",
            "192.0.2.99",
            "busybox",
            "sleep",
            "600",
        )
        before = scrape(h)
        assert before['tether_containers{state="running"}'] == 3

        h.ok("exec", "cli", "ping", "-c", "5", "-W", "1", h.ip_of("web", "mnet"))
        h.ok("exec", "cli", "nslookup", "web")
        h.ok("exec", "cli", "nslookup", "www.anchor.test")
        h.cli("exec", "cli", "nslookup", "nosuch.test")
        h.cli("exec", "lost", "nslookup", "nosuch.test")
        # A connection held open through the published port (from the host's loopback).
        held = subprocess.Popen(
            f"ip netns exec {h.netns} sh -c '(sleep 4) | busybox nc 127.0.0.1 8088'", shell=True
        )
        try:
            time.sleep(1)
            after = scrape(h)
        finally:
            held.wait(10)

        def moved(key: str) -> float:
            return after.get(key, 0) - before.get(key, 0)

        # 5 requests and 5 replies between two containers of mnet: both directions counted.
        assert moved('tether_network_packets_total{direction="tx",network="mnet"}') >= 10
        assert moved('tether_network_bytes_total{direction="tx",network="mnet"}') >= 10 * 84
        assert moved('tether_network_packets_total{direction="tx",network="bridge"}') == 0
        assert moved('tether_dns_queries_total{answer="local"}') >= 1
        assert moved('tether_dns_queries_total{answer="forwarded"}') >= 1
        assert moved('tether_dns_queries_total{answer="nxdomain"}') >= 1
        assert moved('tether_dns_queries_total{answer="servfail"}') >= 1
        key = 'tether_published_port_connections{container="web",host_ip="0.0.0.0",host_port="8088",proto="tcp"}'
        assert after[key] == 1
        assert any(k.startswith("tether_api_request_duration_seconds_bucket") for k in after)
        assert (
            after['tether_api_requests_total{code="201",method="POST",route="/containers/create"}']
            == 3
        )
        assert "tether_cluster_store_up" not in "".join(after)  # not a cluster node
        # The connection closed: the gauge falls back.
        assert scrape(h)[key] == 0
        # Containers by state move as they stop.
        h.ok("stop", "-t", "0", "lost")
        now = scrape(h)
        assert now['tether_containers{state="running"}'] == 2
        assert now['tether_containers{state="exited"}'] == 1
        # A network removed takes its counters along (nothing left in the table).
        h.ok("rm", "-f", "web", "cli", "lost")
        h.ok("network", "rm", "mnet")
        table = h.sh("nft list counters table inet tether").stdout
        assert table.count("counter ") == 2  # the default bridge's tx and rx
    finally:
        up.stop()


def test_bad_metrics_addr_is_refused() -> None:
    r = sh(
        f"{PYTHON} -m tether.daemon.main --root /nonexistent --metrics-addr nowhere", check=False
    )
    assert r.returncode == 2
    assert "invalid --metrics-addr 'nowhere'" in r.stderr and "Traceback" not in r.stderr


def test_cluster_store_health_and_nodes_move() -> None:
    """On a cluster node: the store's health and the nodes by status follow what happens to
    etcd and to the other node (the last family of the issue's list)."""
    from test_overlay import start_node, wait_for

    from cluster import Cluster

    cluster = Cluster(nodes=2, members=1)
    cluster.start()
    hosts: list[NamespaceHost] = []
    try:
        for i in range(2):
            hosts.append(start_node(cluster, i, ["--metrics-addr", ADDR]))
        a, b = hosts

        def value(key: str) -> float | None:
            return scrape(a).get(key)

        wait_for("both nodes ready", lambda: value('tether_cluster_nodes{status="ready"}') == 2)
        assert value("tether_cluster_store_up") == 1
        assert value('tether_cluster_nodes{status="down"}') == 0
        # The other node stops: its lease ends (discovery.ttl=4s) and it is counted down.
        b.stop()
        wait_for("node2 down", lambda: value('tether_cluster_nodes{status="down"}') == 1, 30)
        assert value('tether_cluster_nodes{status="ready"}') == 1
        # The store itself goes: the gauge says so, and again when it comes back.
        cluster.kill_member(0)
        wait_for("the store seen down", lambda: value("tether_cluster_store_up") == 0, 30)
        cluster.start_member(0)
        wait_for("the store seen up", lambda: value("tether_cluster_store_up") == 1, 30)
    finally:
        for h in hosts:
            h.cleanup()
        cluster.cleanup()
