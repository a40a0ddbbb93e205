"""Live restore and crash safety: containers outlive the daemon; kill -9 leaks nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import threading
import time

import pytest

from nshost import NamespaceHost, sh

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]


def reachable(h: NamespaceHost, client: str, ip: str) -> bool:
    r = h.cli("exec", client, "timeout", "3", "wget", "-qO-", f"http://{ip}/")
    return r.returncode == 0 and r.stdout.startswith("hello-")


def test_containers_outlive_the_daemon_and_are_adopted(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "n")
    h.ok("run", "-d", "--name", "web", "--network", "n", "busybox", *WEB)
    h.ok("run", "-d", "--name", "client", "--network", "n", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "short", "--network", "n", "busybox", "sh", "-c", "sleep 1; exit 5")
    ip = h.ip_of("web", "n")
    pid = h.api.get("/containers/web/json")["State"]["Pid"]
    client_ns = h.api.get("/containers/client/json")["NetworkSettings"]["SandboxKey"]
    h.kill()  # kill -9: no goodbye
    # Still serving with no daemon at all.
    r = sh(f"nsenter --net={client_ns} timeout 3 busybox wget -qO- http://{ip}/", check=False)
    assert "hello-" in r.stdout, r
    time.sleep(1.5)  # `short` exits while nobody watches
    h.start()
    info = h.api.get("/containers/web/json")
    assert info["State"]["Running"] and info["State"]["Pid"] == pid
    assert reachable(h, "client", ip)
    short = h.api.get("/containers/short/json")["State"]
    assert short["Status"] == "exited" and short["ExitCode"] == 5
    assert h.ok("ps", "--format", "{{.Names}}").split() == ["client", "web"]
    # The adopted containers are fully managed: stop, connect, rm.
    h.ok("network", "create", "m")
    h.ok("network", "connect", "m", "client")
    h.ok("stop", "-t", "1", "web")
    assert h.api.get("/containers/web/json")["State"]["Status"] == "exited"
    h.ok("rm", "-f", "client", "web", "short")
    assert h.veths() == [] and h.netns_files() == []


def test_kill9_during_runs_connects_and_removes(bhost: NamespaceHost) -> None:
    """kill -9 at random moments while 50 runs, connects and removes are under way."""
    h = bhost
    h.ok("network", "create", "--subnet", "10.50.0.0/16", "a")
    h.ok("network", "create", "--subnet", "10.51.0.0/16", "b")
    h.ok("run", "-d", "--name", "probe", "--network", "a", "busybox", "sleep", "600")
    h.ok("network", "connect", "b", "probe")
    rng = random.Random(7)
    for round_ in range(3):
        for i in range(8):
            h.api.post(
                "/containers/create",
                {"Image": "busybox", "Cmd": ["sleep", "600"], "HostConfig": {"NetworkMode": "a"}},
                query={"name": f"r{round_}-old{i}"},
            )
            h.api.post(f"/containers/r{round_}-old{i}/start")

        def work(i: int, round_: int = round_) -> None:
            try:
                kind = i % 3
                if kind == 0:
                    name = f"r{round_}-new{i}"
                    h.api.post(
                        "/containers/create",
                        {
                            "Image": "busybox",
                            "Cmd": [
                                "sh",
                                "-c",
                                "echo hi > /www/index.html; exec httpd -f -p 80 -h /www",
                            ],
                            "HostConfig": {"NetworkMode": "a"},
                        },
                        query={"name": name},
                    )
                    h.api.post(f"/containers/{name}/start")
                elif kind == 1:
                    h.api.post("/networks/b/connect", {"Container": f"r{round_}-old{i % 8}"})
                else:
                    h.api.delete(f"/containers/r{round_}-old{i % 8}", {"force": 1})
            except Exception:
                pass

        threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.05, 0.6))
        h.kill()
        for t in threads:
            t.join()
        h.start()
        audit(h)


def audit(h: NamespaceHost) -> None:
    containers = h.api.get("/containers/json", {"all": 1})
    running = [c for c in containers if c["State"] == "running"]
    # Kernel objects: exactly the running containers' endpoints and sandboxes.
    wanted_veths = set()
    wanted_netns = set()
    owners = set()
    seen_addresses: dict[tuple[str, str], str] = {}
    for c in containers:
        info = h.api.get(f"/containers/{c['Id']}/json")
        for name, ep in info["NetworkSettings"]["Networks"].items():
            if ep["EndpointID"]:
                assert c["State"] == "running", f"{c['Names']} holds an endpoint while {c['State']}"
                wanted_veths.add("tv" + ep["EndpointID"][:12])
                owners.add(ep["EndpointID"])
                key = (ep["NetworkID"], ep["IPAddress"])
                assert key not in seen_addresses, f"{ep['IPAddress']} on {name} twice"
                seen_addresses[key] = c["Id"]
        if info["State"]["Running"] and info["NetworkSettings"]["SandboxKey"]:
            wanted_netns.add(info["NetworkSettings"]["SandboxKey"].rsplit("/", 1)[-1])
    assert set(h.veths()) == wanted_veths
    assert set(h.netns_files()) == wanted_netns
    held = [(net, addr, owner) for net, addr, owner in h.allocations() if owner != "gateway"]
    assert {owner for _, _, owner in held} == owners
    assert len(held) == len(seen_addresses)
    # Every surviving container answers at its address.
    probe_ip = h.ip_of("probe", "a")
    assert probe_ip
    for c in running:
        name = c["Names"][0].lstrip("/")
        if "new" in name:
            ip = h.ip_of(name, "a")
            r = h.cli("exec", "probe", "timeout", "3", "wget", "-qO-", f"http://{ip}/")
            assert r.stdout == "hi\n", f"{name} at {ip} does not answer"
        else:
            ip = h.ip_of(name, "a")
            assert h.cli("exec", "probe", "ping", "-c1", "-W2", ip).returncode == 0, (
                f"{name} at {ip}"
            )


def test_a_container_whose_shim_died_is_adopted_in_full(bhost: NamespaceHost) -> None:
    """Its shim killed while tetherd was down: the container runs on, and the restarted
    daemon adopts it as any other (its names, its DNS, its published ports), and remembers
    that it has no shim."""
    h = bhost
    h.ok("network", "create", "--subnet", "10.52.0.0/24", "n")
    h.ok("run", "-d", "--name", "web", "--network", "n", "-p", "8085:80", "busybox", *WEB)
    h.ok("run", "-d", "--name", "client", "--network", "n", "busybox", "sleep", "600")
    ip = h.ip_of("web", "n")
    pid = h.api.get("/containers/web/json")["State"]["Pid"]
    with open(f"/proc/{pid}/stat") as f:
        shim = int(f.read().rsplit(")", 1)[1].split()[1])
    h.kill()
    os.kill(shim, signal.SIGKILL)
    h.start()
    info = h.api.get("/containers/web/json")
    assert info["State"]["Running"] and info["State"]["Pid"] == pid
    # Its name answers (SERVFAIL or NXDOMAIN before), and its own lookups are answered.
    assert ip in h.ok("exec", "client", "nslookup", "web")
    assert h.ip_of("client", "n") in h.ok("exec", "web", "nslookup", "client")
    # Its published port: by kernel NAT on IPv4, relayed on IPv6, held against others.
    hello = f"hello-{info['Id'][:12]}"
    for url in ("http://127.0.0.1:8085/", "http://[::1]:8085/"):
        r = h.sh(f"timeout 3 busybox wget -qO- {url}", check=False)
        assert r.stdout.startswith(hello), (url, r.stderr)
    r = h.cli("run", "-d", "--name", "thief", "-p", "8085:80", "busybox", "sleep", "600")
    assert r.returncode != 0 and "port is already allocated" in r.stderr, r.stderr
    # The store says there is no shim: a later restart does not look for one by its old pid.
    db = sqlite3.connect(f"file:{os.path.join(h.root, 'tether.db')}?mode=ro", uri=True)
    try:
        (doc,) = db.execute("SELECT data FROM objects WHERE kind='container' AND name='web'")
    finally:
        db.close()
    assert json.loads(doc[0])["state"]["shim_pid"] == 0
    h.restart()
    assert h.api.get("/containers/web/json")["State"]["Running"]
    assert ip in h.ok("exec", "client", "nslookup", "web")
    # It is fully managed: stop reports the SIGKILL its pid 1 gets (sleep ignores TERM).
    h.ok("stop", "-t", "1", "web")
    assert h.api.get("/containers/web/json")["State"]["ExitCode"] == 137
    # Gone, or a zombie for init to reap (its parent, since the shim died).
    state = sh(f"cat /proc/{pid}/stat", check=False).stdout.rsplit(")", 1)[-1].split()[:1]
    assert state in ([], ["Z"]), state
