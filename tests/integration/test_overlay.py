"""Overlay networks across three nodes: a real etcd cluster, VXLAN on an underlay bridge.

Each node is a namespace-host on the underlay (tests/cluster.py), with an etcd member and a
tetherd started with --cluster-store / --cluster-advertise.  What a user checks: one
`network create -d overlay` seen by every node, unique addresses, real packets crossing
nodes by address and by name, isolation, the FDB and neighbour entries tether programmed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from cluster import Cluster
from nshost import NamespaceHost

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
PREFIX = "/tether"


class Nodes:
    """A cluster of tetherds: nodes[i] is node i+1's NamespaceHost."""

    def __init__(self, cluster: Cluster, hosts: list[NamespaceHost]) -> None:
        self.cluster = cluster
        self.hosts = hosts

    def etcd_keys(self) -> list[str]:
        return self.cluster.keys(PREFIX + "/")

    def state_keys(self) -> list[str]:
        """Keys that are not node registrations (those live on leases)."""
        return [k for k in self.etcd_keys() if not k.startswith(f"{PREFIX}/nodes/")]


def start_node(cluster: Cluster, i: int, extra: list[str] | None = None) -> NamespaceHost:
    node = cluster.nodes[i]
    h = NamespaceHost(
        [
            "--cluster-store",
            cluster.endpoints,
            "--cluster-advertise",
            node.ip,
            "--node-name",
            f"node{i + 1}",
            "--cluster-store-opt",
            "discovery.ttl=4s",
            *(extra or []),
        ],
        name=node.netns,
    )
    h.start()
    h.import_busybox()
    return h


@contextlib.contextmanager
def three_nodes(n: int = 3) -> Iterator[Nodes]:
    cluster = Cluster(nodes=n, members=min(n, 3))
    cluster.start()
    hosts: list[NamespaceHost] = []
    try:
        for i in range(n):
            hosts.append(start_node(cluster, i))
        yield Nodes(cluster, hosts)
    except BaseException:
        for h in hosts:
            import sys

            sys.stderr.write(f"\n--- tetherd log ({h.netns}) ---\n{h.log()[-4000:]}\n")
        raise
    finally:
        for h in hosts:
            h.cleanup()
        cluster.cleanup()


def wait_for(what: str, fn, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def reach(h: NamespaceHost, client: str, target: str) -> bool:
    r = h.cli("exec", client, "timeout", "3", "wget", "-qO-", f"http://{target}/")
    return r.returncode == 0 and r.stdout.startswith("hello-")


def test_overlay_across_three_nodes(host: NamespaceHost) -> None:
    del host  # (a plain namespace-host fixture keeps the suite's per-test layout)
    with three_nodes() as c:
        a, b, _ = c.hosts
        nodes = a.ok("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Address}}")
        assert sorted(nodes.split("\n")[:-1]) == [
            "node1 Ready 10.99.0.11",
            "node2 Ready 10.99.0.12",
            "node3 Ready 10.99.0.13",
        ]
        a.ok("network", "create", "-d", "overlay", "--attachable", "app-net")
        # Every node sees it, scope global, one subnet from Docker's global pool.
        for h in c.hosts:
            wait_for("the network on every node", lambda h=h: "app-net" in h.ok("network", "ls"))
            ls = h.ok(
                "network", "ls", "--filter", "name=app-net", "--format", "{{.Driver}} {{.Scope}}"
            )
            assert ls.strip() == "overlay global"
        info = b.inspect_network("app-net")
        subnet = info["IPAM"]["Config"][0]["Subnet"]
        assert subnet.startswith("10.0.") and subnet.endswith("/24")
        # One container per node; unique addresses from the one subnet.
        for i, h in enumerate(c.hosts):
            h.ok("run", "-d", "--name", f"web{i + 1}", "--network", "app-net", "busybox", *WEB)
        ips = [h.ip_of(f"web{i + 1}", "app-net") for i, h in enumerate(c.hosts)]
        assert len(set(ips)) == 3
        # Reachability matrix, by address then by name, across nodes.
        for i, h in enumerate(c.hosts):
            for j in range(3):
                assert reach(h, f"web{i + 1}", ips[j]), (i, j)
                assert reach(h, f"web{i + 1}", f"web{j + 1}"), (i, j)
        # What tether programmed on node 1 for node 2's container: FDB and neighbour.
        net_id = info["Id"]
        vx = f"vx-{net_id[:12]}"
        fdb = a.sh(f"bridge fdb show dev {vx}").stdout
        mac2 = b.api.get("/containers/web2/json")["NetworkSettings"]["Networks"]["app-net"][
            "MacAddress"
        ]
        assert f"{mac2} dst 10.99.0.12 self permanent" in fdb
        assert mac2 in a.sh(f"ip neigh show dev {vx}").stdout
        # The outside through the node's gateway bridge.
        assert "docker_gwbridge" in a.ok("network", "ls")
        # Removal: refused while any node has endpoints; then everything goes from etcd.
        r = a.cli("network", "rm", "app-net")
        assert r.returncode != 0 and "has active endpoints" in r.stderr
        for i, h in enumerate(c.hosts):
            h.ok("rm", "-f", f"web{i + 1}")
        a.ok("network", "rm", "app-net")
        for h in c.hosts:
            wait_for(
                "the network gone everywhere", lambda h=h: "app-net" not in h.ok("network", "ls")
            )
        assert c.state_keys() == []
        assert not any(n.startswith(("ov-", "vx-")) for h in c.hosts for n in h.links())


def test_concurrent_runs_on_three_nodes_never_share_an_address(host: NamespaceHost) -> None:
    del host
    with three_nodes() as c:
        c.hosts[0].ok("network", "create", "-d", "overlay", "--subnet", "10.55.0.0/24", "busy")
        for h in c.hosts:
            wait_for("the network", lambda h=h: "busy" in h.ok("network", "ls"))
        import threading

        errors: list[str] = []

        def runs(h: NamespaceHost, k: int) -> None:
            for n in range(20):
                r = h.cli(
                    "run",
                    "-d",
                    "--name",
                    f"c{k}-{n}",
                    "--network",
                    "busy",
                    "busybox",
                    "sleep",
                    "600",
                )
                if r.returncode != 0:
                    errors.append(r.stderr)

        threads = [threading.Thread(target=runs, args=(h, k)) for k, h in enumerate(c.hosts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors[:3]
        addrs = []
        for k, h in enumerate(c.hosts):
            for n in range(20):
                addrs.append(h.ip_of(f"c{k}-{n}", "busy"))
        assert len(addrs) == 60 and len(set(addrs)) == 60
        keys = [k for k in c.etcd_keys() if "/ipam/" in k]
        assert len(keys) == 60 + 1  # the endpoints and the gateway
