"""tether compose on namespace-hosts: the examples, run for real, and what `down` leaves."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import pytest

from nshost import NamespaceHost, Upstream, namespace_host

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
sys.path.insert(0, EXAMPLES)

import reachability  # noqa: E402  (examples/reachability.py, shared with the demo)

pytestmark = pytest.mark.integration


@pytest.fixture
def chost() -> Iterator[NamespaceHost]:
    """busybox imported, and a stand-in upstream resolver on the host's loopback, so a name
    no network knows gets a quick NXDOMAIN (as Docker's users see) instead of a timeout."""
    with namespace_host() as h:
        h.import_busybox()
        with open(os.path.join(h.dir, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.53\n")
        h.sh("ip link set lo up")
        up = Upstream(h, "127.0.0.53")
        try:
            yield h
        finally:
            up.stop()


def example(name: str, *extra: str) -> list[str]:
    files = ["-f", os.path.join(EXAMPLES, name, "compose.yaml")]
    for e in extra:
        files += ["-f", os.path.join(EXAMPLES, name, e)]
    return files


def compose(h: NamespaceHost, files: list[str], *args: str) -> tuple[str, str]:
    r = h.cli("compose", *files, *args, timeout=120)
    assert r.returncode == 0, (
        f"compose {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    )
    return r.stdout, r.stderr


def ids(h: NamespaceHost, project: str) -> dict[str, str]:
    items = h.api.get(
        "/containers/json",
        {"all": 1, "filters": {"label": [f"com.docker.compose.project={project}"]}},
    )
    return {c["Names"][0].lstrip("/"): c["Id"] for c in items}


def network_names(h: NamespaceHost) -> set[str]:
    return {n["Name"] for n in h.api.get("/networks")}


def test_three_tier_example(chost: NamespaceHost) -> None:
    h = chost
    # Things that are not the project's, which `down` must leave alone.
    h.ok("network", "create", "keepme")
    h.ok("run", "-d", "--name", "bystander", "--network", "keepme", "busybox", "sleep", "600")
    veths_before = h.veths()
    files = example("three-tier")

    _, err = compose(h, files, "up", "-d")
    assert err.splitlines() == [
        " Network three-tier_backend  Created",
        " Network three-tier_frontend  Created",
        " Container three-tier-db-1  Created",
        " Container three-tier-api-1  Created",
        " Container three-tier-web-1  Created",
        " Container three-tier-db-1  Started",
        " Container three-tier-api-1  Started",
        " Container three-tier-web-1  Started",
    ]
    first = ids(h, "three-tier")
    assert set(first) == {"three-tier-web-1", "three-tier-api-1", "three-tier-db-1"}
    backend = h.inspect_network("three-tier_backend")
    assert backend["Internal"] is True
    assert backend["Labels"]["com.docker.compose.project"] == "three-tier"
    assert backend["Labels"]["com.docker.compose.network"] == "backend"
    api = h.api.get("/containers/three-tier-api-1/json")
    assert api["Config"]["Labels"]["com.docker.compose.service"] == "api"
    assert sorted(api["NetworkSettings"]["Networks"]) == [
        "three-tier_backend",
        "three-tier_frontend",
    ]
    assert api["NetworkSettings"]["Networks"]["three-tier_frontend"]["Aliases"][:2] == [
        "three-tier-api-1",
        "api",
    ]

    # The tutorial's reachability: api bridges the tiers; web and db cannot see each other,
    # neither by name (no DNS record) nor by address (the internal network drops what comes
    # in, and db, only on it, has no route out: Docker 25+).
    targets = [
        reachability.Target("web", 80),
        reachability.Target("api", 80),
        reachability.Target("db", 5432, http=False),
    ]
    cells = reachability.matrix(h.cli, files, "three-tier", ["web", "api", "db"], targets)
    got = {
        k: (bool(c.resolved), c.reached, c.answer, c.by_address.split(" ", 1)[-1])
        for k, c in cells.items()
    }
    assert got == {
        ("web", "api"): (True, True, "api: hello from both networks", ""),
        ("web", "db"): (False, False, "timed out (dropped)", "timed out (dropped)"),
        ("api", "web"): (True, True, "web: hello from the frontend", ""),
        ("api", "db"): (True, True, "db: hello from the internal backend", ""),
        ("db", "web"): (False, False, "no route (unreachable)", "no route (unreachable)"),
        ("db", "api"): (True, True, "api: hello from both networks", ""),
    }, reachability.render(cells, ["web", "api", "db"], targets)
    # Container names resolve as well as service names; the published port answers on the host.
    out, _ = compose(h, files, "exec", "-T", "api", "nslookup", "three-tier-db-1")
    assert h.ip_of("three-tier-db-1", "three-tier_backend") in out
    assert (
        h.sh("timeout 5 busybox wget -qO- http://127.0.0.1:8080/").stdout
        == "web: hello from the frontend\n"
    )

    # ps, and a second `up` that changes nothing.
    out, _ = compose(h, files, "ps")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS"]
    assert [line.split()[0] for line in lines[1:]] == [
        "three-tier-api-1",
        "three-tier-db-1",
        "three-tier-web-1",
    ]
    _, err = compose(h, files, "up", "-d")
    assert "Created" not in err and err.count("Running") == 3
    assert ids(h, "three-tier") == first

    # down: exactly the project's containers and networks, and their kernel objects.
    _, err = compose(h, files, "down")
    assert ids(h, "three-tier") == {}
    assert network_names(h) == {"bridge", "host", "none", "keepme"}
    assert h.api.get("/containers/bystander/json")["State"]["Running"] is True
    assert h.veths() == veths_before
    bridges = h.sh("ip -br link show type bridge").stdout
    assert backend["Id"][:12] not in bridges


def test_broken_example_and_its_fix(chost: NamespaceHost) -> None:
    h = chost
    broken = example("broken-db")
    compose(h, broken, "up", "-d")
    r = h.cli("compose", *broken, "exec", "-T", "api", "nslookup", "db")
    assert r.returncode != 0 and "NXDOMAIN" in r.stdout
    r = h.cli("compose", *broken, "exec", "-T", "api", "nc", "-w", "2", "db", "5432")
    assert r.returncode != 0 and "bad address 'db'" in r.stderr
    before = ids(h, "broken-db")

    fixed = example("broken-db", "compose.fix.yaml")
    _, err = compose(h, fixed, "up", "-d")
    assert " Container broken-db-api-1  Recreated" in err
    after = ids(h, "broken-db")
    assert after["broken-db-web-1"] == before["broken-db-web-1"]
    assert after["broken-db-db-1"] == before["broken-db-db-1"]
    assert after["broken-db-api-1"] != before["broken-db-api-1"]
    out, _ = compose(h, fixed, "exec", "-T", "api", "nc", "-w", "2", "db", "5432")
    assert out == "db: hello from the backend\n"
    compose(h, fixed, "down")
    assert ids(h, "broken-db") == {} and network_names(h) == {"bridge", "host", "none"}


def test_round_robin_replicas(chost: NamespaceHost) -> None:
    h = chost
    files = example("round-robin")
    compose(h, files, "up", "-d")
    replicas = {f"round-robin-whoami-{n}" for n in (1, 2, 3)}
    assert set(ids(h, "round-robin")) == replicas | {"round-robin-client-1"}
    addrs = {h.ip_of(name, "round-robin_default") for name in replicas}
    out, _ = compose(h, files, "exec", "-T", "client", "nslookup", "whoami")
    got = {line.split()[-1] for line in out.splitlines()[2:] if line.startswith("Address")}
    assert got == addrs
    seen: set[str] = set()
    for _ in range(30):  # bounded: 30 requests, each with its own 3 s limit
        out, _ = compose(
            h, files, "exec", "-T", "client", "timeout", "3", "wget", "-qO-", "http://whoami/"
        )
        seen.add(out.strip().removeprefix("I am "))
        if seen == addrs:
            break
    assert seen == addrs
    # Scale down: the highest-numbered replicas go, and DNS follows at once.
    _, err = compose(h, files, "up", "-d", "--scale", "whoami=1")
    assert " Container round-robin-whoami-3  Removed" in err
    out, _ = compose(h, files, "exec", "-T", "client", "nslookup", "whoami")
    assert [line for line in out.splitlines()[2:] if line.startswith("Address")] == [
        f"Address: {h.ip_of('round-robin-whoami-1', 'round-robin_default')}"
    ]
    compose(h, files, "down")


def test_ports_short_and_long_syntax(chost: NamespaceHost) -> None:
    h = chost
    files = example("ports")
    compose(h, files, "up", "-d")
    for port in (8080, 8081, 8082, 9000, 9001):
        r = h.sh(f"timeout 5 busybox wget -qO- http://127.0.0.1:{port}/", check=False)
        assert r.stdout == "web: hello\n", port
    ports = h.ok("port", "ports-web-1").splitlines()
    assert "53/udp -> 0.0.0.0:5353" in ports
    assert "80/tcp -> 127.0.0.1:8081" in ports and "80/tcp -> 127.0.0.1:8082" in ports
    random = [p for p in ports if p.startswith("80/tcp -> 0.0.0.0:") and not p.endswith(":8080")]
    assert len(random) == 1  # `- target: 80` alone: a port the daemon picked
    picked = random[0].rsplit(":", 1)[1]
    assert h.sh(f"timeout 5 busybox wget -qO- http://127.0.0.1:{picked}/").stdout == "web: hello\n"
    info = h.api.get("/containers/ports-web-1/json")
    assert "7000/tcp" in info["Config"]["ExposedPorts"]
    compose(h, files, "down")


def test_static_addresses_and_ipam(chost: NamespaceHost) -> None:
    h = chost
    files = example("static-ip")
    compose(h, files, "up", "-d")
    assert h.ip_of("static-ip-fixed-1", "static-ip_lan") == "10.123.0.10"
    dynamic = h.ip_of("static-ip-dynamic-1", "static-ip_lan")
    assert dynamic.startswith("10.123.0.") and int(dynamic.rsplit(".", 1)[1]) >= 128
    assert dynamic != "10.123.0.129"  # the aux address is never handed out
    net = h.inspect_network("static-ip_lan")
    assert net["IPAM"]["Config"] == [
        {
            "Subnet": "10.123.0.0/24",
            "IPRange": "10.123.0.128/25",
            "Gateway": "10.123.0.254",
            "AuxiliaryAddresses": {"router": "10.123.0.129"},
        }
    ]
    assert net["Labels"]["example"] == "static-ip"
    out, _ = compose(h, files, "exec", "-T", "dynamic", "ping", "-c", "1", "-W", "2", "db.lan")
    assert "10.123.0.10" in out and "1 packets received" in out
    out = h.in_sandbox("static-ip-fixed-1", "ip -4 route").stdout
    assert "default via 10.123.0.254 dev eth0" in out
    compose(h, files, "down")


BAD = {
    "missing file": (None, "open {dir}/nope.yaml: no such file or directory"),
    "bad yaml": ("services:\n  web:\n    image: busybox\n   command: x\n", "yaml: line 4:"),
    "unknown network": (
        "services:\n  api:\n    image: busybox\n    networks: [backend]\nnetworks:\n  frontend: {}\n",
        'service "api" refers to undefined network backend: invalid compose project',
    ),
    "address outside the subnet": (
        "services:\n  db:\n    image: busybox\n    command: [sleep, '60']\n    networks:\n      back:\n"
        "        ipv4_address: 10.9.9.9\nnetworks:\n  back:\n    ipam:\n      config:\n"
        "        - subnet: 10.50.0.0/24\n",
        "Invalid address 10.9.9.9: It does not belong to any of this network's subnets",
    ),
    "two services on one host port": (
        "services:\n  web:\n    image: busybox\n    ports: ['8080:80']\n"
        "  admin:\n    image: busybox\n    ports: ['8080:8080']\n",
        'service "admin": Bind for 0.0.0.0:8080 failed: port is already allocated',
    ),
    "depends_on cycle": (
        "services:\n  a:\n    image: busybox\n    depends_on: [b]\n  b:\n    image: busybox\n"
        "    depends_on: [a]\n",
        "dependency cycle detected: a -> b -> a",
    ),
    "image not imported": (
        "services:\n  web:\n    image: nginx\n    pull_policy: never\nnetworks:\n  extra: {}\n",
        "No such image: nginx:latest",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_before_anything_is_created(bhost: NamespaceHost, case: str) -> None:
    h = bhost
    text, message = BAD[case]
    d = os.path.join(h.dir, "proj")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "nope.yaml" if text is None else "compose.yaml")
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    before = (network_names(h), h.kernel_snapshot(), h.sh("nft list ruleset").stdout)
    r = h.cli("compose", "-f", path, "up", "-d")
    assert r.returncode == 1
    assert message.format(dir=d) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, no traceback
    assert (network_names(h), h.kernel_snapshot(), h.sh("nft list ruleset").stdout) == before
    assert h.api.get("/containers/json", {"all": 1}) == []


def test_attached_up_logs_exec_and_dependency_conditions(chost: NamespaceHost) -> None:
    h = chost
    d = os.path.join(h.dir, "app")
    os.makedirs(d)
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(
            "services:\n"
            "  init:\n    image: busybox\n    command: [sh, -c, 'sleep 1; echo migrated']\n"
            "  app:\n    image: busybox\n    command: [sh, -c, 'echo line one; echo line two']\n"
            "    environment:\n      GREETING: ${GREETING:-hi}\n"
            "    depends_on:\n      init:\n        condition: service_completed_successfully\n"
        )
    files = ["-f", os.path.join(d, "compose.yaml")]
    # Attached: output prefixed per container, an exit line each, return when all are done.
    r = h.cli("compose", *files, "up", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "init-1  | migrated" in r.stdout
    assert "app-1   | line one" in r.stdout and "app-1   | line two" in r.stdout
    assert "app-1 exited with code 0" in r.stdout and "init-1 exited with code 0" in r.stdout
    init = h.api.get("/containers/app-init-1/json")["State"]
    app = h.api.get("/containers/app-app-1/json")
    assert app["State"]["StartedAt"] >= init["FinishedAt"]  # waited for init to complete
    assert "GREETING=hi" in app["Config"]["Env"]

    out, _ = compose(h, files, "logs", "app")
    assert out.splitlines() == ["app-1  | line one", "app-1  | line two"]
    out, _ = compose(h, files, "logs", "--no-log-prefix", "init")
    assert out == "migrated\n"
    out, _ = compose(h, files, "ps", "-a", "--format", "{{.Service}} {{.State}}")
    assert out.splitlines() == ["app exited", "init exited"]

    # A failing dependency stops `up` with compose's words.
    with open(os.path.join(d, "compose.yaml"), "a") as f:
        f.write("  sleeper:\n    image: busybox\n    command: [sleep, '600']\n")
    compose(h, files, "up", "-d", "sleeper")
    r = h.cli("compose", *files, "exec", "sleeper", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(
            "services:\n  init:\n    image: busybox\n    command: [sh, -c, 'exit 4']\n"
            "  app:\n    image: busybox\n    command: [sleep, '60']\n"
            "    depends_on:\n      init: {condition: service_completed_successfully}\n"
        )
    r = h.cli("compose", *files, "up", "-d", "--remove-orphans", timeout=60)
    assert r.returncode == 1 and 'service "init" didn\'t complete successfully: exit 4' in r.stderr
    compose(h, files, "down")
    assert h.api.get("/containers/json", {"all": 1}) == []


def test_config_prints_the_resolved_model(chost: NamespaceHost) -> None:
    r = chost.cli("compose", *example("ports"), "config", "--format", "json")
    model = json.loads(r.stdout)
    assert model["name"] == "ports"
    assert model["services"]["web"]["ports"][0] == {
        "mode": "ingress",
        "target": 80,
        "published": "8080",
        "protocol": "tcp",
    }
    assert model["networks"] == {"default": {"name": "ports_default"}}
    names = chost.ok("compose", *example("three-tier"), "config", "--services").split()
    assert names == ["web", "api", "db"]
