"""Overlay networks across three nodes: a real etcd cluster, VXLAN on an underlay bridge.

Each node is a namespace-host on the underlay (tests/cluster.py), with an etcd member and a
tetherd started with --cluster-store / --cluster-advertise.  What a user checks: one
`network create -d overlay` seen by every node, unique addresses, real packets crossing
nodes by address and by name, isolation, the FDB and neighbour entries tether programmed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
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
        """Keys that are not node registrations or the scheduler's lead (those live on
        the nodes' leases)."""
        lease_bound = (f"{PREFIX}/nodes/", f"{PREFIX}/leader")
        return [k for k in self.etcd_keys() if not k.startswith(lease_bound)]


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
def three_nodes(n: int = 3, extra: list[str] | None = None) -> Iterator[Nodes]:
    """n nodes (etcd members on up to three), each tetherd with start_node's flags and then
    `extra` (later ones win)."""
    cluster = Cluster(nodes=n, members=min(n, 3))
    cluster.start()
    hosts: list[NamespaceHost] = []
    try:
        for i in range(n):
            hosts.append(start_node(cluster, i, extra))
        nodes = Nodes(cluster, hosts)
        yield nodes
        assert_nothing_left_in_etcd(nodes)
    except BaseException:
        for h in hosts:
            import sys

            sys.stderr.write(f"\n--- tetherd log ({h.netns}) ---\n{h.log()[-4000:]}\n")
        raise
    finally:
        for h in hosts:
            h.cleanup()
        cluster.cleanup()


def assert_nothing_left_in_etcd(c: Nodes) -> None:
    """The suite's leak check for the cluster store: with every container and network gone,
    no key is left but the nodes' own registrations (which live on their leases)."""
    for h in c.hosts:
        if h.proc is None:
            h.start()
    for svc in c.hosts[0].api.get("/services"):
        c.hosts[0].api.delete(f"/services/{svc['ID']}")
    wait_for("no task container", lambda: all(not tasks_of(h) for h in c.hosts), 30)
    for h in c.hosts:
        for ctr in h.api.get("/containers/json", {"all": 1}):
            h.api.delete(f"/containers/{ctr['Id']}", {"force": 1})

    def emptied() -> bool:
        # The ingress network is in use until every node has given back its routing mesh
        # address (a moment after the last service went): removal is tried again meanwhile.
        for net in c.hosts[0].api.get("/networks"):
            if net["Scope"] == "global":
                c.hosts[0].cli("network", "rm", net["Id"])
        return c.state_keys() == []

    try:
        wait_for("the store emptied", emptied, 10)
    except AssertionError:
        raise AssertionError(f"keys left in etcd: {c.state_keys()}") from None


def tasks_of(h: NamespaceHost) -> list[str]:
    """Names of the service task containers on a node (swarm's labels)."""
    return [
        str(ctr["Names"][0])
        for ctr in h.api.get("/containers/json", {"all": 1})
        if "com.docker.swarm.task.id" in (ctr.get("Labels") or {})
    ]


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
        # The VXLAN id the cluster picked, among the options as Docker shows it; the device
        # on every node carries it.
        vni = info["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        assert int(vni) >= 4096
        for h in c.hosts:
            assert f"vxlan id {vni} " in h.sh(f"ip -d link show vx-{info['Id'][:12]}").stdout
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
        addrs, macs = [], []
        for k, h in enumerate(c.hosts):
            for n in range(20):
                addrs.append(h.ip_of(f"c{k}-{n}", "busy"))
                ep = h.api.get(f"/containers/c{k}-{n}/json")["NetworkSettings"]["Networks"]["busy"]
                macs.append(ep["MacAddress"])
        assert len(addrs) == 60 and len(set(addrs)) == 60
        # One L2 across the nodes: a MAC is the address's (02:42 + the IPv4), also when a
        # node lost a race for its first address and took the next one.
        assert len(set(macs)) == 60
        for ip, mac in zip(addrs, macs, strict=True):
            assert mac == "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split(".")), (ip, mac)
        keys = [k for k in c.etcd_keys() if "/ipam/" in k]
        assert len(keys) == 60 + 1  # the endpoints and the gateway


def ping(h: NamespaceHost, client: str, target: str) -> bool:
    return h.cli("exec", client, "ping", "-c1", "-W1", target).returncode == 0


def fdb_has(h: NamespaceHost, net_id: str, vtep: str) -> bool:
    return f"dst {vtep} self permanent" in h.sh(f"bridge fdb show dev vx-{net_id[:12]}").stdout


def resolves(h: NamespaceHost, client: str, name: str) -> bool:
    return h.cli("exec", client, "nslookup", name).returncode == 0


def test_node_faults_restart_within_and_after_the_ttl_and_death(host: NamespaceHost) -> None:
    """kill -9 within the TTL: nothing is withdrawn and traffic flows meanwhile; after the
    TTL: the others withdraw the node's endpoints and put them back when it returns; a node
    that stays dead vanishes from everyone's FDB and DNS and its addresses are freed."""
    del host
    with three_nodes() as c:
        a, b, d = c.hosts
        a.ok("network", "create", "-d", "overlay", "ov")
        for h in c.hosts:
            wait_for("the network", lambda h=h: "ov" in h.ok("network", "ls"))
        a.ok("run", "-d", "--name", "w1", "--network", "ov", "busybox", *WEB)
        b.ok("run", "-d", "--name", "w2", "--network", "ov", "busybox", *WEB)
        d.ok("run", "-d", "--name", "w3", "--network", "ov", "busybox", *WEB)
        net_id = a.inspect_network("ov")["Id"]
        ip2 = b.ip_of("w2", "ov")
        wait_for("w2 known on node 1", lambda: resolves(a, "w1", "w2"))

        # 1. kill -9 and back within the TTL (4 s): nothing withdrawn, traffic flows.
        b.kill()
        assert ping(a, "w1", ip2)
        assert fdb_has(a, net_id, "10.99.0.12")
        b.start()
        assert fdb_has(a, net_id, "10.99.0.12") and resolves(a, "w1", "w2")
        assert reach(a, "w1", "w2") and reach(b, "w2", "w1")

        # 1b. back within the TTL, but under a new lease while the old one still lives (its
        # saved id lost): the node's keys move to the new lease, so the old one's expiry
        # takes nothing with it.
        b.kill()
        db = sqlite3.connect(os.path.join(b.root, "tether.db"))
        with db:
            db.execute("DELETE FROM meta WHERE key = 'cluster_lease'")
        db.close()
        b.start()
        time.sleep(4 + 3)  # the old lease's TTL, and etcd's expiry sweep
        assert fdb_has(a, net_id, "10.99.0.12") and resolves(a, "w1", "w2")
        assert reach(a, "w1", "w2")

        # 2. kill -9 for longer than the TTL: withdrawn everywhere, then back on return.
        b.kill()
        wait_for(
            "node 2 down",
            lambda: "node2 Down" in a.ok("node", "ls", "--format", "{{.Hostname}} {{.Status}}"),
            10,
        )
        wait_for("node 2's entries withdrawn", lambda: not fdb_has(a, net_id, "10.99.0.12"), 10)
        assert not resolves(a, "w1", "w2")
        assert ping(d, "w3", a.ip_of("w1", "ov"))  # the rest of the cluster is unaffected
        started = time.monotonic()
        b.start()
        wait_for("node 2's entries back", lambda: fdb_has(a, net_id, "10.99.0.12"), 10)
        wait_for("w2's name back", lambda: resolves(a, "w1", "w2"), 5)
        assert time.monotonic() - started < 15
        assert reach(a, "w1", "w2")

        # 3. a node that stays dead: its endpoints and addresses vanish within the TTL.
        d.kill()
        wait_for("node 3's entries withdrawn", lambda: not fdb_has(a, net_id, "10.99.0.13"), 10)
        assert not resolves(a, "w1", "w3")
        assert not [k for k in c.etcd_keys() if "/endpoints/" in k and "w3" in k]
        left = [k for k in c.etcd_keys() if f"/ipam/{net_id}/" in k]
        assert len(left) == 3  # gateway, w1, w2: w3's address is free again
        d.start()  # (cleanup needs its daemon)


def test_the_store_fails_and_comes_back(host: NamespaceHost) -> None:
    """One etcd member down of three: everything works.  All down: local work goes on,
    global operations fail at once naming the store, overlay traffic keeps flowing; when
    etcd returns the nodes catch up without a restart."""
    del host
    with three_nodes() as c:
        a, b, _ = c.hosts
        a.ok("network", "create", "-d", "overlay", "ov")
        wait_for("the network on node 2", lambda: "ov" in b.ok("network", "ls"))
        a.ok("run", "-d", "--name", "w1", "--network", "ov", "busybox", *WEB)
        c.cluster.kill_member(2)  # (0-based)
        b.ok("run", "-d", "--name", "w2", "--network", "ov", "busybox", *WEB)
        wait_for("w2 by name on node 1", lambda: reach(a, "w1", "w2"), 10)

        for i in (0, 1):
            c.cluster.kill_member(i)
        started = time.monotonic()
        r = a.cli("network", "create", "-d", "overlay", "ov2")
        assert r.returncode != 0 and time.monotonic() - started < 8
        assert "cluster store" in r.stderr and "10.99.0.11:2379" in r.stderr
        assert r.stderr.count("\n") == 1
        a.ok("network", "create", "--subnet", "10.90.0.0/24", "local-net")  # local: fine
        a.ok("run", "-d", "--name", "l1", "--network", "local-net", "busybox", "sleep", "600")
        assert reach(a, "w1", b.ip_of("w2", "ov"))  # the kernel keeps the overlay going

        for i in (0, 1, 2):
            c.cluster.start_member(i)
        c.cluster.wait_healthy()
        wait_for(
            "global operations again",
            lambda: a.cli("network", "create", "-d", "overlay", "ov2").returncode == 0,
            20,
        )
        wait_for("ov2 on node 2", lambda: "ov2" in b.ok("network", "ls"), 10)
        b.ok("run", "-d", "--name", "w3", "--network", "ov2", "busybox", *WEB)
        a.ok("run", "-d", "--name", "w4", "--network", "ov2", "busybox", "sleep", "600")
        wait_for("w3 by name from node 1", lambda: reach(a, "w4", "w3"), 10)


def test_isolation_between_overlays_and_from_bridges(host: NamespaceHost) -> None:
    del host
    with three_nodes(2) as c:
        a, b = c.hosts
        a.ok("network", "create", "-d", "overlay", "red")
        a.ok("network", "create", "-d", "overlay", "blue")
        for h in c.hosts:
            wait_for("both overlays", lambda h=h: "blue" in h.ok("network", "ls"))
        a.ok("network", "create", "--subnet", "10.91.0.0/24", "plain")
        a.ok("run", "-d", "--name", "r1", "--network", "red", "busybox", *WEB)
        b.ok("run", "-d", "--name", "r2", "--network", "red", "busybox", *WEB)
        b.ok("run", "-d", "--name", "b2", "--network", "blue", "busybox", *WEB)
        a.ok("run", "-d", "--name", "p1", "--network", "plain", "busybox", *WEB)
        assert reach(a, "r1", b.ip_of("r2", "red"))
        assert not reach(a, "r1", b.ip_of("b2", "blue"))  # another overlay
        assert not reach(a, "p1", a.ip_of("r1", "red"))  # a bridge network on the same node
        assert not reach(a, "r1", a.ip_of("p1", "plain"))
        # Overlay subnets are not routed on the nodes.
        assert "10.0." not in a.sh("ip route").stdout


def test_a_node_back_with_another_advertise_address_moves_its_vtep(host: NamespaceHost) -> None:
    del host
    with three_nodes(2) as c:
        a, b = c.hosts
        a.ok("network", "create", "-d", "overlay", "ov")
        wait_for("the network on node 2", lambda: "ov" in b.ok("network", "ls"))
        a.ok("run", "-d", "--name", "w1", "--network", "ov", "busybox", *WEB)
        b.ok("run", "-d", "--name", "w2", "--network", "ov", "busybox", *WEB)
        net_id = a.inspect_network("ov")["Id"]
        wait_for("w2 reachable", lambda: reach(a, "w1", "w2"), 10)
        b.stop()
        b.sh("ip addr add 10.99.0.22/24 dev eth0")
        args = b.extra_args
        b.extra_args = [x if x != "10.99.0.12" else "10.99.0.22" for x in args]
        b.start()
        wait_for(
            "node 1 sends w2's frames to the new address",
            lambda: fdb_has(a, net_id, "10.99.0.22"),
            10,
        )
        assert not fdb_has(a, net_id, "10.99.0.12")
        assert "10.99.0.22" in a.ok("node", "ls")
        assert reach(a, "w1", "w2") and reach(b, "w2", "w1")


def test_compose_services_of_one_project_on_two_nodes_share_an_overlay(
    host: NamespaceHost, tmp_path: object
) -> None:
    del host
    import pathlib

    base = pathlib.Path(str(tmp_path))
    web = base / "web" / "compose.yaml"
    web.parent.mkdir()
    web.write_text(
        "name: shop\n"
        "services:\n"
        "  web:\n"
        "    image: busybox\n"
        '    command: ["sh", "-c", "echo hello-web > /www/index.html && exec httpd -f -p 80 -h /www"]\n'
        "    networks: [app]\n"
        "networks:\n"
        "  app:\n"
        "    driver: overlay\n"
        "    attachable: true\n"
    )
    client = base / "client" / "compose.yaml"
    client.parent.mkdir()
    client.write_text(
        "name: shop\n"
        "services:\n"
        "  client:\n"
        "    image: busybox\n"
        '    command: ["sleep", "600"]\n'
        "    networks: [app]\n"
        "networks:\n"
        "  app:\n"
        "    driver: overlay\n"
        "    attachable: true\n"
    )
    with three_nodes(2) as c:
        a, b = c.hosts
        a.ok("compose", "-f", str(web), "up", "-d")
        assert "overlay global" in a.ok(
            "network", "ls", "--filter", "name=shop_app", "--format", "{{.Driver}} {{.Scope}}"
        )
        wait_for("the project's network on node 2", lambda: "shop_app" in b.ok("network", "ls"))
        b.ok("compose", "-f", str(client), "up", "-d")
        got = b.ok(
            "compose",
            "-f",
            str(client),
            "exec",
            "-T",
            "client",
            "timeout",
            "3",
            "wget",
            "-qO-",
            "http://web/",
        )
        assert got.startswith("hello-web")
        b.ok("compose", "-f", str(client), "down")
        a.ok("compose", "-f", str(web), "down")
