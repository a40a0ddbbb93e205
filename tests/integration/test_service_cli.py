"""`tether service ...` on three nodes, as a user types it: create, ls, ps, inspect, logs
from tasks on other nodes (and the node listener they come through), scale, update
(rolling), rm, the errors docker gives, docker's own CLI, and logs over mutual TLS."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from test_overlay import three_nodes, wait_for

from cluster import run_in_netns
from nshost import NamespaceHost

pytestmark = pytest.mark.integration

# A task that says which container it is on stdout (for logs) and serves its name (HTTP).
# (sh stays PID 1 with a TERM trap: busybox's httpd as PID 1 ignores SIGTERM, and each task
# stopped in a rolling update would wait out the 10 s grace period.)
WEB = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; echo started-$(hostname); echo hello-$(hostname) > /www/index.html; "
    "httpd -f -p 80 -h /www & wait",
]


def ls_row(h: NamespaceHost, name: str) -> list[str]:
    out = h.ok("service", "ls", "--filter", f"name={name}")
    rows = [re.split(r"\s{3,}", line.strip()) for line in out.splitlines()[1:]]
    return next((r for r in rows if r[1] == name), [])


def replicas(h: NamespaceHost, name: str) -> str:
    row = ls_row(h, name)
    return row[3] if len(row) > 3 else ""


def ps_rows(h: NamespaceHost, *args: str) -> list[list[str]]:
    out = h.ok("service", "ps", *args)
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS",
    ]  # fmt: skip
    return [re.split(r"\s{3,}", line.rstrip()) for line in lines[1:]]


def test_create_ls_ps_inspect_logs_scale_rm(host: NamespaceHost) -> None:
    del host
    with three_nodes() as c:
        a, b, _ = c.hosts
        a.ok("network", "create", "-d", "overlay", "--attachable", "app")
        for h in c.hosts:
            wait_for("the network", lambda h=h: "app" in h.ok("network", "ls"))
        out = a.ok(
            "service", "create", "-d", "--name", "web", "--replicas", "3",
            "--network", "app", "--label", "tier=front", "busybox", *WEB,
        )  # fmt: skip
        sid = out.strip()
        assert re.fullmatch(r"[a-z0-9]{25}", sid), out
        wait_for("3/3 in service ls", lambda: replicas(a, "web") == "3/3", 30)
        row = ls_row(b, "web")  # any node answers the same
        assert row == [sid[:12], "web", "replicated", "3/3", "busybox"], row
        # ps: three running tasks, one per node, docker's columns.
        rows = ps_rows(a, "web")
        assert sorted(r[1] for r in rows) == ["web.1", "web.2", "web.3"]
        assert sorted(r[3] for r in rows) == ["node1", "node2", "node3"]
        assert all(r[2] == "busybox" and r[4] == "Running" for r in rows)
        assert all(
            re.fullmatch(r"Running (less than a second|\d+ seconds?) ago", r[5]) for r in rows
        )
        ids = a.ok("service", "ps", "-q", "web").split()
        assert len(ids) == 3 and all(len(i) == 12 for i in ids)
        full = a.ok("service", "ps", "--no-trunc", "--format", "{{.ID}} {{.Node}}", "web")
        assert all(len(line.split()[0]) == 25 for line in full.splitlines())
        on2 = a.ok("service", "ps", "-f", "node=node2", "--format", "{{.Name}}", "web").split()
        assert len(on2) == 1
        # inspect: Docker's JSON and --pretty.
        doc = json.loads(a.ok("service", "inspect", "web"))[0]
        assert doc["ID"] == sid and doc["Spec"]["Labels"] == {"tier": "front"}
        assert doc["Spec"]["UpdateConfig"]["Parallelism"] == 1
        pretty = a.ok("service", "inspect", "--pretty", "web")
        assert re.search(r"^Name:\s+web$", pretty, re.M)
        assert re.search(r"^Service Mode:\s+Replicated$", pretty, re.M)
        assert re.search(r"^ Replicas:\s+3$", pretty, re.M)
        assert re.search(r"^Networks: app $", pretty, re.M)
        # Real HTTP answers from the three tasks, through the VIP, from a node-1 client.
        a.ok("run", "-d", "--name", "cli", "--network", "app", "busybox", "sleep", "600")
        seen: Counter[str] = Counter()
        for _ in range(30):
            r = a.cli("exec", "cli", "timeout", "3", "wget", "-qO-", "http://web/")
            assert r.returncode == 0, r.stderr
            seen[r.stdout.strip()] += 1
        assert len(seen) == 3, seen
        hostnames = {s.removeprefix("hello-") for s in seen}
        # logs on node 1 show the lines of the tasks on nodes 2 and 3 too, docker's prefix.
        by_task = {line.split()[0]: line.split()[1] for line in full.splitlines()}
        logs = a.ok("service", "logs", "web")
        lines = logs.splitlines()
        assert len(lines) == 3, logs
        for line in lines:
            m = re.fullmatch(r"web\.([123])\.([a-z0-9]{12})@(node[123])    \| started-(\w+)", line)
            assert m, line
            assert m[4] in hostnames
            tid = next(t for t in by_task if t.startswith(m[2]))
            assert by_task[tid] == m[3]
        assert {re.search(r"@(node\d)", x)[1] for x in lines} == {"node1", "node2", "node3"}  # type: ignore[index]
        plain = b.ok("service", "logs", "--no-task-ids", "-t", "web")
        assert all(
            re.fullmatch(r"\S+Z web\.[123]@node[123]    \| started-\w+", x)
            for x in plain.splitlines()
        ), plain
        raw = b.ok("service", "logs", "--raw", "web")
        assert sorted(raw.split()) == sorted(f"started-{h}" for h in hostnames)
        # A task's logs by its id.
        one = b.ok("service", "logs", ids[0])
        assert one.count("started-") == 1

        # The node listener (10.99.0.11:7946) those logs came through: a node gets a task's
        # lines; nothing else is served; the underlay's own address (no node) is dropped by
        # the firewall before the listener.
        tid = a.ok("service", "ps", "--no-trunc", "-q", "-f", "node=node1", "web").strip()
        assert (
            "tcp dport 7946 ip saddr != @vteps drop"
            in a.sh("nft list chain inet tether input").stdout
        )

        def ask(path: str) -> bytes:
            s = socket.create_connection(("10.99.0.11", 7946), timeout=2)
            try:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data
            finally:
                s.close()

        got = run_in_netns(b.netns, lambda: ask(f"/tasks/{tid}/logs"))
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"started-" in got
        assert run_in_netns(b.netns, lambda: ask("/containers/json")).startswith(b"HTTP/1.1 404")
        assert run_in_netns(b.netns, lambda: ask("/tasks/nope/logs")).startswith(b"HTTP/1.1 404")
        with pytest.raises(OSError):
            c.cluster.in_underlay(lambda: ask(f"/tasks/{tid}/logs"))

        # logs -f from node 2 follows: the tasks that scaling up starts (on any node) join in.
        follow = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether.cli.main",
                "service",
                "logs",
                "-f",
                "--tail",
                "0",
                "web",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "TETHER_HOST": f"unix://{b.socket}"},
        )
        followed: list[str] = []
        reader = threading.Thread(
            target=lambda: followed.extend(iter(follow.stdout.readline, "")),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        try:
            # scale up and down: docker's words; history rows in ps.
            assert a.ok("service", "scale", "-d", "web=5") == "web scaled to 5\n"
            wait_for("5/5", lambda: replicas(a, "web") == "5/5", 30)
            wait_for("the new tasks' lines, followed", lambda: len(followed) >= 2, 10)
        finally:
            follow.terminate()
            follow.wait(10)
        assert all(
            re.fullmatch(r"web\.[45]\.\w{12}@node\d    \| started-\w+\n", x) for x in followed
        )
        assert sorted(x.split(".")[1] for x in followed) == ["4", "5"], followed
        assert a.ok("service", "scale", "-d", "web=1") == "web scaled to 1\n"
        wait_for("1/1", lambda: replicas(a, "web") == "1/1", 30)
        wait_for(
            "only one task container left",
            lambda: sum(len(tasks(h)) for h in c.hosts) == 1,
            30,
        )
        rows = ps_rows(a, "web", "-f", "desired-state=running")
        assert [r[1] for r in rows] == ["web.1"]

        # Errors, as docker words them; nothing changes.
        r = a.cli("service", "rm", "nope", "web2")
        assert r.returncode == 1
        assert r.stderr == "Error: No such service: nope\nError: No such service: web2\n"
        r = a.cli("service", "ps", "nope")
        assert r.returncode == 1 and r.stderr == "no such service: nope\n"
        r = a.cli("service", "inspect", "nope")
        assert r.returncode == 1 and "Error: no such service: nope" in r.stderr
        r = a.cli("service", "logs", "nope")
        assert r.returncode == 1 and r.stderr == "no such task or service: nope\n"
        r = a.cli("service", "scale", "web")
        assert r.returncode == 1 and r.stderr.startswith("Invalid scale specifier 'web'.")
        r = a.cli(
            "service", "create", "--name", "m", "--mount", "type=bind,src=/,dst=/x", "busybox"
        )
        assert r.returncode == 125
        assert (
            r.stderr
            == "--mount: tether's services do not support mounts in tasks\n"
        )
        r = a.cli(
            "service", "create", "--name", "g", "--mode", "global", "--replicas", "2", "busybox"
        )
        assert r.returncode == 125
        assert "replicas can only be used with replicated or replicated-job mode" in r.stderr
        r = a.cli("service", "create", "--name", "p", "-p", "a:80", "busybox")
        assert (
            r.returncode == 125 and 'invalid argument "a:80" for "-p, --publish" flag' in r.stderr
        )
        r = a.cli(
            "service", "create", "--name", "u", "--update-failure-action", "rollback", "busybox"
        )
        assert r.returncode == 1 and "rollback is not supported by tether" in r.stderr
        assert [s for s in a.ok("service", "ls", "-q").split()] == [sid]

        # Global mode: one task per node; `scale` refuses it in docker's words.
        a.ok(
            "service",
            "create",
            "-d",
            "--name",
            "mon",
            "--mode",
            "global",
            "busybox",
            "sleep",
            "600",
        )
        wait_for("global 3/3", lambda: ls_row(a, "mon")[2:4] == ["global", "3/3"], 30)
        assert sorted(x.split()[0] for x in ps_rows(a, "mon")[0:3] for x in [x[3]]) == [
            "node1", "node2", "node3",
        ]  # fmt: skip
        r = a.cli("service", "scale", "mon=2")
        assert r.returncode == 1
        assert r.stderr == "scale can only be used with replicated or replicated-job mode\n"

        assert a.ok("service", "rm", "web", "mon") == "web\nmon\n"
        wait_for("no task containers", lambda: all(not tasks(h) for h in c.hosts), 30)
        assert a.ok("service", "ls", "-q") == ""
        a.ok("rm", "-f", "cli")


def tasks(h: NamespaceHost) -> list[str]:
    return [
        str(ctr["Names"][0])
        for ctr in h.api.get("/containers/json", {"all": 1})
        if "com.docker.swarm.task.id" in (ctr.get("Labels") or {})
    ]


def update_state(h: NamespaceHost, name: str) -> dict[str, str]:
    doc = h.api.get(f"/services/{name}")
    return doc.get("UpdateStatus") or {}


def test_rolling_update_one_task_at_a_time_then_paused_on_failure(host: NamespaceHost) -> None:
    del host
    with three_nodes() as c:
        a, b, _ = c.hosts
        a.ok("network", "create", "-d", "overlay", "app")
        for h in c.hosts:
            wait_for("the network", lambda h=h: "app" in h.ok("network", "ls"))
        a.ok(
            "service", "create", "-d", "--name", "web", "--replicas", "3", "--network", "app",
            "--update-monitor", "1s", "--env", "V=1", "busybox", *WEB,
        )  # fmt: skip
        wait_for("3/3", lambda: replicas(a, "web") == "3/3", 30)
        # Without -d: docker's progress lines, then "verify: Service converged".
        out = a.ok("service", "update", "--env-add", "V=2", "web", timeout=120)
        assert out.startswith("web\n"), out
        assert "overall progress: 3 out of 3 tasks\n" in out
        assert "verify: Waiting 1 seconds to verify that tasks are stable...\n" in out
        assert out.endswith("verify: Service web converged\n"), out
        st = update_state(b, "web")
        assert st["State"] == "completed" and st["Message"] == "update completed"
        pretty = a.ok("service", "inspect", "--pretty", "web")
        assert re.search(r"^ State:\s+completed$", pretty, re.M), pretty
        assert re.search(r"^ Message:\s+update completed$", pretty, re.M)
        assert re.search(r"^ Monitoring Period: 1s$", pretty, re.M)
        # Every task now runs V=2; the old ones are history rows (` \_ web.1`).
        rows = ps_rows(a, "web")
        assert len([r for r in rows if r[4] == "Running"]) == 3
        assert len([r for r in rows if r[1].startswith("\\_ web.")]) == 3
        for h in c.hosts:
            for name in tasks(h):
                env = h.api.get(f"/containers/{name.lstrip('/')}/json")["Config"]["Env"]
                assert "V=2" in env

        # One at a time (parallelism 1, stop-first): sampled while it rolls, never more than
        # one slot without its running task; with a 2 s delay between tasks.
        a.ok("service", "update", "-d", "--update-delay", "2s", "--env-add", "V=3", "web")
        wait_for("updating", lambda: update_state(a, "web").get("State") == "updating", 10)
        least, started = 3, time.monotonic()
        versions_seen = set()
        while update_state(a, "web").get("State") == "updating" and time.monotonic() - started < 60:
            running = [
                t for t in a.api.get("/tasks", {"filters": '{"service":["web"]}'})
                if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
            ]  # fmt: skip
            least = min(least, len(running))
            versions_seen.add(tuple(sorted(t["SpecVersion"]["Index"] for t in running)))
            time.sleep(0.1)
        assert update_state(a, "web")["State"] == "completed"
        assert least == 2, least  # stop-first: one slot at a time down, never two
        assert time.monotonic() - started > 4  # two delays of 2 s between three tasks
        # Mixed versions were seen: one task after another moved to the new version.
        assert len({sum(1 for x in v if x == max(v)) for v in versions_seen if len(v) == 3}) >= 2

        # A new version whose tasks fail: the update pauses with swarm's message.
        r = a.cli("service", "update", "--args", "sh -c 'exit 3'", "web", timeout=60)
        assert r.returncode == 1
        assert r.stderr.startswith(
            "service update paused: update paused due to failure or early termination of task "
        ), r.stderr
        st = update_state(b, "web")
        assert st["State"] == "paused"
        # Paused: the two other tasks still run the previous version and answer.
        running = [
            t for t in a.api.get("/tasks", {"filters": '{"service":["web"]}'})
            if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
        ]  # fmt: skip
        assert len(running) >= 2
        rows = ps_rows(a, "web")
        assert any('"task: non-zero exit (3)"' in r for r in rows), rows
        # A fixed spec resumes: completed, all running.
        a.ok("service", "update", "-d", "--args", shlex.join(WEB), "--env-add", "V=4", "web")
        wait_for("completed", lambda: update_state(a, "web").get("State") == "completed", 60)
        wait_for("3/3", lambda: replicas(a, "web") == "3/3", 10)
        a.ok("service", "rm", "web")


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI on this machine")
def test_the_docker_cli_manages_services_on_a_tether_node(
    host: NamespaceHost, tmp_path: object
) -> None:
    """docker's own CLI (no dockerd anywhere) sees an active swarm manager and runs its
    `service` commands against a tether node: create, ls, ps, logs from both nodes, a rolling
    update with its progress display, rm."""
    del host

    def docker(h: NamespaceHost, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "DOCKER_HOST": f"unix://{h.socket}",
            "DOCKER_CONFIG": str(tmp_path),
        }
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, env=env, timeout=90
        )

    with three_nodes(2) as c:
        a, b = c.hosts
        a.ok("network", "create", "-d", "overlay", "app")
        wait_for("the network", lambda: "app" in b.ok("network", "ls"))
        r = docker(a, "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
        assert r.stdout == "active true\n", r.stderr
        r = docker(
            a, "service", "create", "-d", "--name", "web", "--replicas", "2", "--network", "app",
            "--update-monitor", "1s", "busybox", *WEB,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        sid = r.stdout.strip()
        assert len(sid) == 25
        wait_for(
            "2/2 in docker service ls",
            lambda: " 2/2 " in docker(b, "service", "ls").stdout,
            30,
        )
        ps = docker(a, "service", "ps", "--format", "{{.Name}} {{.Node}} {{.CurrentState}}", "web")
        assert sorted(line.split()[:2] for line in ps.stdout.splitlines()) == [
            ["web.1", "node1"] if "web.1 node1" in ps.stdout else ["web.1", "node2"],
            ["web.2", "node2"] if "web.2 node2" in ps.stdout else ["web.2", "node1"],
        ]
        logs = docker(b, "service", "logs", "web").stdout
        assert sorted(re.findall(r"@(node\d)\s+\| started-", logs)) == ["node1", "node2"], logs
        r = docker(a, "service", "update", "--env-add", "X=1", "web")
        assert r.returncode == 0, r.stderr
        assert r.stdout.endswith("verify: Service web converged\n"), r.stdout
        assert update_state(a, "web")["State"] == "completed"
        assert docker(a, "service", "rm", "web").stdout == "web\n"
        wait_for("no task containers", lambda: all(not tasks(h) for h in c.hosts), 30)
        # docker stack deploy and rm of the lesson's stack: nothing left afterwards.
        stack_file = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "stack")
        r = docker(b, "stack", "deploy", "-c", os.path.join(stack_file, "stack.yaml"), "shop")
        assert r.returncode == 0, r.stderr
        assert "Creating service shop_web" in r.stdout
        wait_for(
            "web and api running",
            lambda: (
                docker(
                    a, "stack", "services", "--format", "{{.Name}} {{.Replicas}}", "shop"
                ).stdout.count(" 2/2")
                == 2
            ),
            30,
        )
        r = docker(a, "stack", "rm", "shop")
        assert r.returncode == 0, r.stderr
        assert sorted(r.stdout.splitlines()[-2:]) == [
            "Removing network shop_back",
            "Removing network shop_front",
        ]
        assert all("shop_" not in h.ok("network", "ls") for h in c.hosts)
        wait_for("no task containers", lambda: all(not tasks(h) for h in c.hosts), 30)


def test_service_logs_across_nodes_over_mutual_tls(host: NamespaceHost, tmp_path: object) -> None:
    """With TLS to the store, the node listener is TLS too: node 1 reads node 2's task log
    with the kv.* certificates; a plain connection, or one with another CA's certificate,
    gets nothing."""
    import ssl

    from test_overlay import Nodes, assert_nothing_left_in_etcd, start_node

    from cluster import Cluster, make_tls

    del host
    tls = make_tls(os.path.join(str(tmp_path), "tls"), ["10.99.0.11", "10.99.0.12"])
    other = make_tls(os.path.join(str(tmp_path), "other"), ["10.99.0.12"])
    cluster = Cluster(nodes=2, members=2, tls=tls)
    cluster.start()
    hosts: list[NamespaceHost] = []
    opts = [
        "--cluster-store-opt", f"kv.cacertfile={tls.ca}",
        "--cluster-store-opt", f"kv.certfile={tls.server_cert}",
        "--cluster-store-opt", f"kv.keyfile={tls.server_key}",
    ]  # fmt: skip
    try:
        for i in range(2):
            hosts.append(start_node(cluster, i, opts))
        a, b = hosts
        a.ok("network", "create", "-d", "overlay", "app")
        wait_for("the network", lambda: "app" in b.ok("network", "ls"))
        a.ok(
            "service", "create", "-d", "--name", "web", "--replicas", "1",
            "--constraint", "node.hostname==node2", "--network", "app", "busybox", *WEB,
        )  # fmt: skip
        wait_for("1/1", lambda: replicas(a, "web") == "1/1", 30)
        wait_for("the task's line", lambda: "started-" in a.ok("service", "logs", "web"), 10)
        line = a.ok("service", "logs", "web").strip()
        assert re.fullmatch(r"web\.1\.[a-z0-9]{12}@node2    \| started-\w+", line), line
        tid = a.ok("service", "ps", "-q", "--no-trunc", "web").strip()

        def plain() -> bytes:
            s = socket.create_connection(("10.99.0.12", 7946), timeout=2)
            try:
                s.sendall(f"GET /tasks/{tid}/logs HTTP/1.1\r\n\r\n".encode())
                s.settimeout(3)
                try:
                    return s.recv(65536)
                except OSError:
                    return b""
            finally:
                s.close()

        def with_cert(ca: str, cert: str, key: str) -> bytes:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(cert, key)
            raw = socket.create_connection(("10.99.0.12", 7946), timeout=3)
            try:
                s = ctx.wrap_socket(raw)
                s.sendall(f"GET /tasks/{tid}/logs HTTP/1.1\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data
            except (ssl.SSLError, OSError):
                return b""
            finally:
                raw.close()

        assert b"started-" not in run_in_netns(a.netns, plain)
        assert run_in_netns(
            a.netns, lambda: with_cert(tls.ca, tls.server_cert, tls.server_key)
        ).startswith(b"HTTP/1.1 200 OK")
        assert (
            run_in_netns(a.netns, lambda: with_cert(other.ca, other.server_cert, other.server_key))
            == b""
        )
        a.ok("service", "rm", "web")
        assert_nothing_left_in_etcd(Nodes(cluster, hosts))
    finally:
        for h in hosts:
            h.cleanup()
        cluster.cleanup()
