"""Services across three nodes: replicas, the scheduler, virtual IPs, names."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import pytest
from test_overlay import WEB, three_nodes, wait_for

from cluster import run_in_netns
from nshost import NamespaceHost, sh
from tether.client import ApiError

pytestmark = pytest.mark.integration


def service_spec(name: str, network: str, replicas: int = 3, **extra: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Args": WEB},
            "Networks": [{"Target": network}],
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "EndpointSpec": {"Mode": "vip"},
    }
    spec.update(extra)
    return spec


def running(h: NamespaceHost, service: str) -> list[dict[str, object]]:
    tasks = h.api.get("/tasks", {"filters": f'{{"service":["{service}"]}}'})
    return [
        t for t in tasks if t["Status"]["State"] == "running" and t["DesiredState"] == "running"
    ]


def task_addresses(h: NamespaceHost, service: str, network: str) -> set[str]:
    """The addresses on `network` of the service's running tasks, from their nodes."""
    out = set()
    for t in running(h, service):
        cid = str(t["Status"]["ContainerStatus"]["ContainerID"])  # type: ignore[index]
        for other in h.cluster_hosts:  # type: ignore[attr-defined]
            try:
                nets = other.api.get(f"/containers/{cid}/json")["NetworkSettings"]["Networks"]
            except ApiError:
                continue
            out.add(str(nets[network]["IPAddress"]))
    return out


def resolved(h: NamespaceHost, client: str, name: str) -> set[str]:
    """The addresses busybox's nslookup in `client` gets for `name` (the server's own
    address, 127.0.0.11, left out)."""
    r = h.cli("exec", client, "nslookup", name)
    lines = r.stdout.split("Name:", 1)[-1] if r.returncode == 0 else ""
    return {line.split()[-1] for line in lines.splitlines() if line.strip().startswith("Address")}


def spread(h: NamespaceHost, client: str, target: str, n: int) -> Counter[str]:
    """`n` HTTP requests from `client` to `target` in one exec (each bounded by 3 s):
    how many each task answered."""
    loop = (
        f"i=0; while [ $i -lt {n} ]; do timeout 3 wget -qO- http://{target}/ || echo FAILED; "
        "i=$((i+1)); done"
    )
    out = h.ok("exec", client, "sh", "-c", loop, timeout=n * 4)
    return Counter(line.strip() for line in out.splitlines() if line.strip())


def test_replicas_spread_vip_balances_names_resolve_and_scale(host: NamespaceHost) -> None:
    del host
    with three_nodes() as c:
        a, b, d = c.hosts
        for h in c.hosts:
            h.cluster_hosts = c.hosts  # type: ignore[attr-defined]
        a.ok("network", "create", "-d", "overlay", "app")
        for h in c.hosts:
            wait_for("the network", lambda h=h: "app" in h.ok("network", "ls"))
        created = a.api.post("/services/create", service_spec("web", "app"))
        assert len(created["ID"]) == 25
        wait_for("3 running tasks", lambda: len(running(a, "web")) == 3, 30)
        # Spread: one task per node, seen the same from every node.
        for h in c.hosts:
            assert sorted(str(t["NodeID"]) for t in running(h, "web")) == [
                "node1",
                "node2",
                "node3",
            ]
        # Tasks are ordinary containers on their nodes, named as swarm names them.
        for h in c.hosts:
            names = [
                n for n in h.ok("ps", "--format", "{{.Names}}").split() if n.startswith("web.")
            ]
            assert len(names) == 1 and len(names[0].split(".")[2]) == 25, names
        # A client on node 1: `web` is the VIP, `tasks.web` exactly the running tasks.
        a.ok("run", "-d", "--name", "cli", "--network", "app", "busybox", "sleep", "600")
        vip = a.api.get("/services/web")["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
        assert resolved(a, "cli", "web") == {vip}
        tasks = task_addresses(a, "web", "app")
        assert len(tasks) == 3 and vip not in tasks
        wait_for("tasks.web", lambda: resolved(a, "cli", "tasks.web") == tasks, 10)
        # 300 connections to the VIP: every task answers, each between 20% and 47%.
        seen = spread(a, "cli", vip, 300)
        assert "FAILED" not in seen, seen
        assert len(seen) == 3, seen
        assert all(60 <= k <= 141 for k in seen.values()), seen
        # Scale 3 -> 6 -> 1: tasks, names and the VIP's backends follow.
        for replicas in (6, 1):
            svc = a.api.get("/services/web")
            spec = svc["Spec"]
            spec["Mode"]["Replicated"]["Replicas"] = replicas
            a.api.post(f"/services/web/update?version={svc['Version']['Index']}", spec)
            wait_for(f"{replicas} running", lambda r=replicas: len(running(a, "web")) == r, 30)
            tasks = task_addresses(a, "web", "app")
            wait_for(
                f"tasks.web lists {replicas}",
                lambda t=tasks: resolved(a, "cli", "tasks.web") == t,
                10,
            )
            wait_for(
                f"the VIP reaches {replicas}",
                lambda r=replicas: len(spread(a, "cli", vip, 12 * r)) == r,
                15,
            )
        # Six tasks were spread two per node.
        a.api.delete("/services/web")
        wait_for(
            "no task containers", lambda: all("web." not in h.ok("ps", "-a") for h in c.hosts), 30
        )
        # dnsrr: no VIP; the name itself answers with the tasks' addresses, in turn.
        a.api.post(
            "/services/create",
            service_spec("rr", "app", replicas=2, EndpointSpec={"Mode": "dnsrr"}),
        )
        wait_for("2 running tasks", lambda: len(running(a, "rr")) == 2, 30)
        assert a.api.get("/services/rr")["Endpoint"]["VirtualIPs"] == []
        tasks = task_addresses(a, "rr", "app")
        wait_for("rr lists 2", lambda: resolved(a, "cli", "rr") == tasks, 10)
        firsts = set()
        for _ in range(6):
            r = a.ok("exec", "cli", "nslookup", "rr").split("Name:", 1)[-1]
            firsts.add(
                next(x.split()[-1] for x in r.splitlines() if x.strip().startswith("Address"))
            )
        assert firsts == tasks  # round robin: each address comes first in turn
        # (A task counts as running once its container is, a moment before httpd listens.)
        wait_for(
            "both rr tasks answer",
            lambda: len(spread(a, "cli", "rr", 8) - Counter({"FAILED": 99})) == 2,
            10,
        )
        seen = spread(a, "cli", "rr", 20)
        assert "FAILED" not in seen and len(seen) == 2, seen
        a.api.delete("/services/rr")
        a.ok("rm", "-f", "cli")
        # No VIP chains are left in any sandbox or node.
        for h in c.hosts:
            wait_for("no task containers", lambda h=h: "rr." not in h.ok("ps", "-a"), 30)
        del b, d


def fetch(netns: str, url: str) -> str:
    """An HTTP GET from a namespace of the test's own (3 s at most); "" if it fails."""

    def get() -> str:
        try:
            # No proxy from the environment: the request stays in the test's namespaces.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=3) as r:
                return str(r.read().decode().strip())
        except OSError:
            return ""

    return run_in_netns(netns, get, timeout=10)


def test_routing_mesh_answers_on_every_node_and_host_mode_only_where_tasks_run(
    host: NamespaceHost,
) -> None:
    del host
    with three_nodes() as c:
        a, b, d = c.hosts
        a.ok("network", "create", "-d", "overlay", "app")
        for h in c.hosts:
            wait_for("the network", lambda h=h: "app" in h.ok("network", "ls"))
        # Two tasks, never on node 3; port 8080 of every node reaches them.
        spec = service_spec(
            "web",
            "app",
            replicas=2,
            EndpointSpec={
                "Mode": "vip",
                "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080}],
            },
        )
        spec["TaskTemplate"]["Placement"] = {"Constraints": ["node.hostname!=node3"]}  # type: ignore[index]
        a.api.post("/services/create", spec)
        wait_for("2 running tasks", lambda: len(running(a, "web")) == 2, 30)
        assert "ingress" in a.ok("network", "ls")
        tasks = {str(t["Status"]["ContainerStatus"]["ContainerID"])[:12] for t in running(a, "web")}
        underlay = c.cluster.underlay
        for node in c.cluster.nodes[:3]:
            url = f"http://{node.ip}:8080/"
            wait_for(f"the mesh on {node.ip}", lambda url=url: fetch(underlay, url) != "", 10)
        # From node 3 (no task there): both tasks answer, and only they.
        seen: Counter[str] = Counter()
        for _ in range(40):
            body = fetch(underlay, f"http://{c.cluster.nodes[2].ip}:8080/")
            assert body.startswith("hello-"), body
            seen[body.removeprefix("hello-")] += 1
        assert set(seen) == tasks, (seen, tasks)
        # The node's own loopback reaches the mesh too (as `curl localhost:8080` on a swarm node).
        assert fetch(d.netns, "http://127.0.0.1:8080/").startswith("hello-")
        # A second service cannot take the same port.
        clash = service_spec(
            "other",
            "app",
            EndpointSpec={
                "Mode": "vip",
                "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080}],
            },
        )
        with pytest.raises(ApiError) as err:
            a.api.post("/services/create", clash)
        assert err.value.status == 400
        assert "port '8080' is already in use by service 'web'" in err.value.message
        a.api.delete("/services/web")
        # With the service gone, the port is closed on every node, and nothing is left.
        for node in c.cluster.nodes[:3]:
            url = f"http://{node.ip}:8080/"
            wait_for(f"port closed on {node.ip}", lambda url=url: fetch(underlay, url) == "", 15)
        for h in c.hosts:
            wait_for(
                "no mesh chains",
                lambda h=h: "tcp . 8080" not in h.sh("nft list table inet tether").stdout,
                10,
            )
        # mode=host: the port opens only on the node that runs the task.
        spec = service_spec(
            "hosted",
            "app",
            replicas=1,
            EndpointSpec={
                "Mode": "vip",
                "Ports": [
                    {
                        "Protocol": "tcp",
                        "TargetPort": 80,
                        "PublishedPort": 8081,
                        "PublishMode": "host",
                    }
                ],
            },
        )
        a.api.post("/services/create", spec)
        wait_for("1 running task", lambda: len(running(a, "hosted")) == 1, 30)
        where = str(running(a, "hosted")[0]["NodeID"])
        for i, node in enumerate(c.cluster.nodes[:3]):
            body = fetch(underlay, f"http://{node.ip}:8081/")
            assert bool(body) == (where == f"node{i + 1}"), (where, i, body)
        a.api.delete("/services/hosted")
        del b


def leader_of(h: NamespaceHost) -> str:
    nodes = h.api.get("/nodes")
    return next((str(n["ID"]) for n in nodes if n["ManagerStatus"]["Leader"]), "")


def test_a_dead_nodes_tasks_start_elsewhere_and_another_node_takes_the_lead(
    host: NamespaceHost,
) -> None:
    del host
    ttl = 4.0  # three_nodes' discovery.ttl
    with three_nodes() as c:
        a = c.hosts[0]
        a.ok("network", "create", "-d", "overlay", "app")
        for h in c.hosts:
            wait_for("the network", lambda h=h: "app" in h.ok("network", "ls"))
        a.api.post("/services/create", service_spec("web", "app"))
        wait_for("3 running tasks", lambda: len(running(a, "web")) == 3, 30)
        # The leader's tetherd is killed (kill -9): another node leads within the TTL (its
        # lease expires; etcd checks leases every 0.5 s).
        leader = leader_of(a)
        assert leader in ("node1", "node2", "node3")
        i = int(leader.removeprefix("node")) - 1
        other = c.hosts[(i + 1) % 3]
        c.hosts[i].kill()
        killed = time.monotonic()
        wait_for("a new leader", lambda: leader_of(other) not in ("", leader), ttl + 3)
        took_lead = time.monotonic() - killed
        assert took_lead <= ttl + 1, took_lead
        c.hosts[i].start()
        # A node dies for good: its tetherd killed, its underlay link down (its task and its
        # etcd member go with it; two members keep the quorum).  Its task starts elsewhere
        # within TTL + 5 s.
        j = (i + 2) % 3
        victim, node = c.hosts[j], c.cluster.nodes[j]
        dead = f"node{j + 1}"
        survivor = c.hosts[i]
        victim.kill()
        sh(f"ip -n {node.netns} link set {node.iface} down")
        died = time.monotonic()
        wait_for(
            "3 tasks on the other nodes",
            lambda: len([t for t in running(survivor, "web") if t["NodeID"] != dead]) == 3,
            ttl + 8,
        )
        took_tasks = time.monotonic() - died
        print(f"new leader after {took_lead:.1f} s, 3 tasks again after {took_tasks:.1f} s")
        # (etcd extends every lease when its own leader changes, so if the dead node held
        # etcd's lead too, this can take up to another TTL: docs/services.md.)
        assert took_tasks <= 2 * ttl + 5, took_tasks
        # The VIP reaches the three live tasks from a client on a surviving node.
        survivor.ok("run", "-d", "--name", "cli", "--network", "app", "busybox", "sleep", "600")
        svc = survivor.api.get("/services/web")
        vip = svc["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
        wait_for(
            "3 tasks behind the VIP",
            lambda: len(spread(survivor, "cli", vip, 30) - Counter({"FAILED": 99})) == 3,
            20,
        )
        survivor.ok("rm", "-f", "cli")
        # A global service while the node is away: one task per ready node.
        mon = service_spec("mon", "app", Mode={"Global": {}})
        survivor.api.post("/services/create", mon)
        wait_for("2 global tasks", lambda: len(running(survivor, "mon")) == 2, 30)
        # The node comes back: its orphaned task container goes, nothing is duplicated, and
        # the global service gets a task there too.
        sh(f"ip -n {node.netns} link set {node.iface} up")
        victim.start()
        wait_for("the orphan removed", lambda: "web." not in victim.ok("ps", "-a"), 30)
        assert len(running(survivor, "web")) == 3
        wait_for("3 global tasks", lambda: len(running(survivor, "mon")) == 3, 30)
        assert sorted(str(t["NodeID"]) for t in running(survivor, "mon")) == [
            "node1",
            "node2",
            "node3",
        ]
