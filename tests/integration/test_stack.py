"""`tether stack deploy|ls|services|ps|rm` of the lesson's stack file (examples/stack/) on
three nodes: docker stack's names and labels, every service reaching what it should by name
(and not what it should not), a re-deploy that updates only what changed, refusals naming
the file and the service, and a `stack rm` that leaves nothing behind."""

from __future__ import annotations

import os
import re

import pytest
from test_overlay import three_nodes, wait_for

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))
STACK_FILE = os.path.join(HERE, "..", "..", "examples", "stack", "stack.yaml")


def task_containers(h: NamespaceHost, service: str = "") -> list[str]:
    return [
        str(ctr["Names"][0]).lstrip("/")
        for ctr in h.api.get("/containers/json", {"all": 1})
        if (ctr.get("Labels") or {}).get("com.docker.swarm.service.name", "").startswith(service)
        and "com.docker.swarm.task.id" in (ctr.get("Labels") or {})
    ]


def find_task(hosts: list[NamespaceHost], service: str) -> tuple[NamespaceHost, str]:
    for h in hosts:
        names = task_containers(h, service)
        if names:
            return h, names[0]
    raise AssertionError(f"no task of {service} anywhere")


def fetch(h: NamespaceHost, container: str, url: str) -> str:
    r = h.cli("exec", container, "timeout", "3", "wget", "-qO-", url)
    return r.stdout.strip() if r.returncode == 0 else ""


def services_table(h: NamespaceHost) -> dict[str, list[str]]:
    out = h.ok("stack", "services", "shop")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    rows = [re.split(r"\s{3,}", line.strip()) for line in lines[1:]]
    return {r[1]: r for r in rows}


def test_stack_deploy_reach_redeploy_rm(host: NamespaceHost, tmp_path: object) -> None:
    del host
    import pathlib

    with three_nodes() as c:
        a, b, d = c.hosts
        out = a.ok("stack", "deploy", "-c", STACK_FILE, "shop")
        assert sorted(out.splitlines()) == [
            "Creating network shop_back",
            "Creating network shop_front",
            "Creating service shop_api",
            "Creating service shop_db",
            "Creating service shop_web",
        ]
        assert a.ok("stack", "ls") == "NAME      SERVICES\nshop      3\n"
        wait_for(
            "every replica running",
            lambda: (
                [services_table(b)[s][3] for s in ("shop_api", "shop_db", "shop_web")]
                == ["2/2", "1/1", "2/2"]
            ),
            60,
        )
        rows = services_table(a)
        assert rows["shop_web"][2:5] == ["replicated", "2/2", "busybox"]
        assert rows["shop_web"][5] == "*:8080->80/tcp"
        # docker stack's names and labels.
        for h in c.hosts:
            nets = h.ok(
                "network", "ls", "--filter", "label=com.docker.stack.namespace=shop",
                "--format", "{{.Name}} {{.Driver}} {{.Scope}}",
            )  # fmt: skip
            assert sorted(nets.splitlines()) == [
                "shop_back overlay global",
                "shop_front overlay global",
            ]
        labels = b.api.get("/services/shop_api")["Spec"]["Labels"]
        assert labels == {"com.docker.stack.namespace": "shop", "com.docker.stack.image": "busybox"}
        ps = a.ok("stack", "ps", "shop", "--format", "{{.Name}} {{.Node}} {{.CurrentState}}")
        names = sorted(line.split()[0] for line in ps.splitlines())
        assert names == ["shop_api.1", "shop_api.2", "shop_db.1", "shop_web.1", "shop_web.2"]
        assert all(" Running " in line for line in ps.splitlines())
        assert "shop_db.1 node3 " in ps  # its placement constraint

        # Names: web reaches api (front); api reaches db (back) and web; web does not
        # reach db (no shared network: the name does not even resolve there).
        hw, web = find_task(c.hosts, "shop_web")
        ha, api = find_task(c.hosts, "shop_api")
        wait_for("web -> api", lambda: fetch(hw, web, "http://api:8000/").startswith("api-"), 15)
        assert fetch(ha, api, "http://db:5432/").startswith("db-")
        assert fetch(ha, api, "http://web/").startswith("web-")
        assert fetch(hw, web, "http://db:5432/") == ""
        assert hw.cli("exec", web, "nslookup", "db").returncode != 0
        # The full service names resolve too (their VIPs).
        assert fetch(ha, api, "http://shop_db:5432/").startswith("db-")

        # Re-deploy with api changed: only api is updated; web and db keep their tasks.
        before = {s: sorted(task_ids(a, s)) for s in ("shop_web", "shop_db")}
        changed = pathlib.Path(str(tmp_path)) / "stack.yaml"
        with open(STACK_FILE) as f:
            changed.write_text(f.read().replace("DB_HOST: db", "DB_HOST: db\n      MODE: v2"))
        out = a.ok("stack", "deploy", "-c", str(changed), "shop")
        api_id = a.api.get("/services/shop_api")["ID"]
        assert out == f"Updating service shop_api (id: {api_id})\n"
        wait_for(
            "api updated",
            lambda: (
                (a.api.get("/services/shop_api").get("UpdateStatus") or {}).get("State")
                == "completed"
            ),
            60,
        )
        assert {s: sorted(task_ids(a, s)) for s in ("shop_web", "shop_db")} == before
        h2, api2 = find_task(c.hosts, "shop_api")
        env = h2.api.get(f"/containers/{api2}/json")["Config"]["Env"]
        assert "MODE=v2" in env and "DB_HOST=db" in env

        # What tether cannot honour is refused by name, with the file and the service, and
        # nothing changes.
        bad = pathlib.Path(str(tmp_path)) / "bad.yaml"
        with open(STACK_FILE) as f:
            bad.write_text(
                f.read().replace(
                    "      replicas: 1\n",
                    "      replicas: 1\n      resources:\n        limits:\n          memory: 50M\n",
                )
            )
        r = a.cli("stack", "deploy", "-c", str(bad), "other")
        assert r.returncode == 1
        assert r.stderr.endswith(
            ": services.db.deploy.resources: not supported by tether's stacks\n"
        )
        assert "bad.yaml" in r.stderr
        restart = pathlib.Path(str(tmp_path)) / "restart.yaml"
        restart.write_text(
            "services:\n  x:\n    image: busybox\n    deploy:\n"
            "      restart_policy:\n        condition: on-failure\n"
        )
        r = a.cli("stack", "deploy", "-c", str(restart), "other")
        assert (
            r.returncode == 1
            and "services.x.deploy.restart_policy.condition: on-failure" in r.stderr
        )
        assert "other" not in a.ok("stack", "ls")
        assert a.ok("stack", "services", "other") == ""

        # stack rm: services, then networks; nothing left on any node.
        out = a.ok("stack", "rm", "shop")
        assert out == (
            "Removing service shop_api\nRemoving service shop_db\nRemoving service shop_web\n"
            "Removing network shop_back\nRemoving network shop_front\n"
        )
        assert a.ok("service", "ls", "-q") == ""
        for h in c.hosts:
            wait_for("no task containers", lambda h=h: task_containers(h) == [], 30)
            assert "shop_" not in h.ok("network", "ls")
        r = a.cli("stack", "rm", "shop")
        assert r.returncode == 0 and r.stderr == "Nothing found in stack: shop\n"
        del d


def task_ids(h: NamespaceHost, service: str) -> list[str]:
    return [
        t["ID"]
        for t in h.api.get("/tasks", {"filters": f'{{"service":["{service}"]}}'})
        if t["DesiredState"] == "running"
    ]
