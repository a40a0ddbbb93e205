"""Services across three nodes: replicas, the scheduler, virtual IPs, names."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from test_overlay import WEB, three_nodes, wait_for

from nshost import NamespaceHost

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


def test_replicas_spread_vip_balances_and_names_resolve(host: NamespaceHost) -> None:
    del host
    with three_nodes() as c:
        a, b, d = c.hosts
        a.ok("network", "create", "-d", "overlay", "app")
        for h in c.hosts:
            wait_for("the network", lambda h=h: "app" in h.ok("network", "ls"))
        created = a.api.post("/services/create", service_spec("web", "app"))
        assert len(created["ID"]) == 25
        wait_for("3 running tasks", lambda: len(running(a, "web")) == 3, 30)
        nodes = sorted(str(t["NodeID"]) for t in running(b, "web"))
        assert nodes == ["node1", "node2", "node3"]
        # A client on node 1: `web` is the VIP, `tasks.web` the three tasks.
        a.ok("run", "-d", "--name", "cli", "--network", "app", "busybox", "sleep", "600")
        vip = a.api.get("/services/web")["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
        out = a.ok("exec", "cli", "nslookup", "web")
        assert vip in out
        wait_for(
            "tasks.web lists 3",
            lambda: a.ok("exec", "cli", "nslookup", "tasks.web").count("Address") >= 4,
            10,
        )
        # Connections to the VIP are spread over the three tasks.
        seen: Counter[str] = Counter()
        for _ in range(60):
            r = a.cli("exec", "cli", "timeout", "3", "wget", "-qO-", f"http://{vip}/")
            assert r.returncode == 0, r.stderr
            seen[r.stdout.strip()] += 1
        assert len(seen) == 3, seen
        # Scale down and up; then remove.
        svc = a.api.get("/services/web")
        spec = svc["Spec"]
        spec["Mode"]["Replicated"]["Replicas"] = 1
        a.api.post(f"/services/web/update?version={svc['Version']['Index']}", spec)
        wait_for("1 running task", lambda: len(running(a, "web")) == 1, 30)
        a.api.delete("/services/web")
        wait_for(
            "no task containers", lambda: all("web." not in h.ok("ps", "-a") for h in c.hosts), 30
        )
        a.ok("rm", "-f", "cli")
        del d
        time.sleep(0.1)
