"""The service VIP table (cluster/lb.py) and the routing mesh's maps (firewall/render.py) on a
real kernel: connections to a VIP or a mesh port reach the running tasks and only them, a
change keeps established connections on their task, and what the kernel holds reads back as
what was wanted.

Everything happens in one network namespace the test makes: three "tasks" are TCP servers on
addresses of its loopback (each answers with its own address), the client connects from the
same namespace, so the DNATs are the output hook's, as in a container's sandbox.  The
Balancer runs its real passes over stand-in cluster, services and containers objects.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cluster import run_in_netns
from nshost import delete_netns, make_netns, sh
from tether.cluster import lb
from tether.events import ClusterEndpoints, EventBus
from tether.explain.nftrules import Ruleset, vip_backends, vip_entries
from tether.model import RemoteEndpoint

pytestmark = pytest.mark.integration

TASKS = ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
VIP, EMPTY_VIP, MOVED_VIP = "10.78.0.1", "10.78.0.2", "10.78.0.3"
NODE_ADDR = "10.77.0.9"  # the mesh's "node address"

SERVER = """
import selectors, socket, sys, time
sel = selectors.DefaultSelector()
for addr in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 80)); s.listen(128); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, ("listen", addr))
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    for key, _ in sel.select(1):
        kind, addr = key.data
        if kind == "listen":
            c, _peer = key.fileobj.accept()
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, ("conn", addr))
        else:
            data = key.fileobj.recv(100)
            if not data:
                sel.unregister(key.fileobj); key.fileobj.close()
            else:
                key.fileobj.send(addr.encode() + b"\\n")
"""


@pytest.fixture
def ns() -> Iterator[str]:
    name = make_netns("tv")
    proc = None
    try:
        for a in [*TASKS, NODE_ADDR]:
            sh(f"ip -n {name} addr add {a}/32 dev lo")
        # The VIPs' subnet on a link, as a container has its network's: the output hook's
        # DNAT comes after the routing decision, which needs a route to the VIP.
        sh(
            f"ip -n {name} link add v0 type veth peer name v1 && ip -n {name} link set v1 up && "
            f"ip -n {name} addr add 10.78.0.254/24 dev v0 && ip -n {name} link set v0 up"
        )
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{name}", sys.executable, "-c", SERVER, *TASKS]
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ask(name, TASKS[2]) != TASKS[2]:
            time.sleep(0.05)
        yield name
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        delete_netns(name)


def ask(netns: str, addr: str, port: int = 80) -> str:
    """One connection from the namespace: the address of the task that answered, "" if
    none did within 0.5 s."""

    def go() -> str:
        try:
            with socket.create_connection((addr, port), timeout=0.5) as s:
                s.sendall(b"?\n")
                return s.recv(100).decode().strip()
        except OSError:
            return ""

    return run_in_netns(netns, go, 10)


def spread(netns: str, addr: str, n: int, port: int = 80) -> Counter[str]:
    def go() -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(n):
            try:
                with socket.create_connection((addr, port), timeout=0.5) as s:
                    s.sendall(b"?\n")
                    seen[s.recv(100).decode().strip()] += 1
            except OSError:
                seen[""] += 1
        return seen

    return run_in_netns(netns, go, 60)


# -- stand-ins for what the Balancer reads ----------------------------------------------------


@dataclass
class Svc:
    id: str
    vips: list[dict[str, str]]
    endpoint_mode: str = "vip"


@dataclass
class Services:
    by_id: dict[str, Svc] = field(default_factory=dict)
    listeners: list[Any] = field(default_factory=list)
    change_logs: list[set[str]] = field(default_factory=list)

    def put(self, svc: Svc) -> None:
        """As cluster/services.py does on a watch event: the cache, then the change logs."""
        self.by_id[svc.id] = svc
        self.logged(svc.id)

    def drop(self, sid: str) -> None:
        del self.by_id[sid]
        self.logged(sid)

    def logged(self, sid: str) -> None:
        for changed in self.change_logs:
            changed.add(sid)


@dataclass
class Cluster:
    endpoints: dict[str, dict[str, RemoteEndpoint]] = field(default_factory=dict)


@dataclass
class State:
    running: bool = True


@dataclass
class Ep:
    network_id: str


@dataclass
class Ctr:
    id: str
    name: str
    sandbox_key: str
    endpoints: dict[str, Ep]
    state: State = field(default_factory=State)


@dataclass
class Containers:
    by_id: dict[str, Ctr] = field(default_factory=dict)


def task(net: str, svc: str, ip: str) -> RemoteEndpoint:
    return RemoteEndpoint(
        id=f"ep-{ip}", network=net, node="n1", vtep="", container="", name="", ipv4=ip, service=svc
    )


def listing(netns: str, table: str) -> dict[str, Any]:
    out = sh(f"ip netns exec {netns} nft -j list table {table}").stdout
    sets: dict[str, Any] = {}
    for item in json.loads(out)["nftables"]:
        s = item.get("map") or item.get("set")
        if s:
            sets[s["name"]] = list(s.get("elem") or [])
    return sets


def test_vip_balances_over_running_tasks_and_follows_changes(ns: str) -> None:
    cluster = Cluster({"net1": {f"ep-{ip}": task("net1", "s1", ip) for ip in TASKS}})
    services = Services(
        {
            "s1": Svc("s1", [{"NetworkID": "net1", "Addr": f"{VIP}/24"}]),
            "s2": Svc("s2", [{"NetworkID": "net1", "Addr": f"{EMPTY_VIP}/24"}]),
        }
    )
    client = Ctr("c1", "client", f"/run/netns/{ns}", {"e1": Ep("net1")})
    bus = EventBus()
    balancer = lb.Balancer(
        cluster,  # type: ignore[arg-type]
        services,  # type: ignore[arg-type]
        Containers({"c1": client}),  # type: ignore[arg-type]
        bus,
    )

    def run_pass(*changed: str) -> None:
        # As the cluster store does: the endpoints a change touched, then the pass.
        if changed:
            bus.publish(
                ClusterEndpoints("net1", cluster.endpoints["net1"], "n0", frozenset(changed))
            )
        asyncio.run(balancer.run_pass())

    run_pass()
    # Every task answers through the VIP, each a fair share of 90 connections.
    seen = spread(ns, VIP, 90)
    assert set(seen) == set(TASKS), seen
    assert all(15 <= k <= 50 for k in seen.values()), seen
    # A service without a running task: its VIP answers nothing.
    assert ask(ns, EMPTY_VIP) == ""
    # What the kernel holds reads back as what was wanted.
    sets = listing(ns, lb.TABLE)
    assert lb.backends_by_vip(sets) == {VIP: sorted(TASKS)}
    assert balancer.programmed["c1"] == {
        VIP: ("vips_n3", tuple(TASKS)),
        EMPTY_VIP: ("vips_n0", ()),
    }
    # Elements of plain sets, one per task count: no verdict map (its elements made the
    # kernel validate the chain graph again over every VIP at each change).
    assert sets["vips_n3"] == [VIP] and sets["vips_n0"] == [EMPTY_VIP]
    assert "vips" not in sets
    # explain's and doctor's reader of the table finds the same, and the rule of each VIP.
    rs = Ruleset(sh(f"ip netns exec {ns} nft -j list table {lb.TABLE}").stdout)
    assert vip_backends(rs) == {VIP: sorted(TASKS), EMPTY_VIP: []}
    entries = vip_entries(rs)
    assert {v: w for v, (w, _r) in entries.items()} == {VIP: "vips_n3", EMPTY_VIP: "vips_n0"}
    assert all(r is not None and r.chain == "out" for _w, r in entries.values())

    # A connection held open; its task stops: new connections go to the two others only,
    # the held one stays with its task (conntrack keeps its DNAT).
    def hold() -> tuple[socket.socket, str]:
        s = socket.create_connection((VIP, 80), timeout=2)
        s.sendall(b"?\n")
        return s, s.recv(100).decode().strip()

    held, gone = run_in_netns(ns, hold, 10)
    try:
        del cluster.endpoints["net1"][f"ep-{gone}"]
        run_pass(f"ep-{gone}")  # the incremental path: only this VIP's elements change
        seen = spread(ns, VIP, 40)
        assert set(seen) == set(TASKS) - {gone}, (gone, seen)
        # It moved from the 3-task set to the 2-task one (one transaction).
        sets = listing(ns, lb.TABLE)
        assert sets["vips_n2"] == [VIP] and sets["vips_n3"] == []

        def again() -> str:
            held.sendall(b"?\n")
            return held.recv(100).decode().strip()

        assert run_in_netns(ns, again, 10) == gone
    finally:
        held.close()
    assert lb.backends_by_vip(listing(ns, lb.TABLE)) == {VIP: sorted(set(TASKS) - {gone})}
    # The empty service gets a task, the first loses its VIP: both follow.
    cluster.endpoints["net1"]["ep-x"] = task("net1", "s2", TASKS[0])
    services.drop("s1")
    run_pass("ep-x")
    assert ask(ns, EMPTY_VIP) == TASKS[0]
    assert ask(ns, VIP) == ""
    assert set(lb.backends_by_vip(listing(ns, lb.TABLE))) == {EMPTY_VIP}
    # A service's record replaced (the store makes a new object on every change): its
    # new VIP is balanced, its old one no longer.
    services.put(Svc("s2", [{"NetworkID": "net1", "Addr": f"{MOVED_VIP}/24"}]))
    run_pass()
    assert ask(ns, MOVED_VIP) == TASKS[0]
    assert ask(ns, EMPTY_VIP) == ""
    # The incremental state agrees with a computation from nothing (what doctor compares).
    assert (
        balancer.wanted(client)
        == balancer.programmed["c1"]
        == {MOVED_VIP: ("vips_n1", (TASKS[0],))}
    )
    # doctor --repair's rebuild makes the same table from scratch.
    assert asyncio.run(balancer.rebuild(client)) == 1
    assert ask(ns, MOVED_VIP) == TASKS[0]
    assert lb.backends_by_vip(listing(ns, lb.TABLE)) == {MOVED_VIP: [TASKS[0]]}
    # A pass with no change logged and no endpoint changed looks at nothing and sends
    # nothing (the services are not walked: the change log says what changed).
    services.by_id["s3"] = Svc("s3", [{"NetworkID": "net1", "Addr": f"{VIP}/24"}])
    run_pass()
    assert VIP not in vip_entries(
        Ruleset(sh(f"ip netns exec {ns} nft -j list table {lb.TABLE}").stdout)
    )
    services.logged("s3")  # as the cache does: then the pass looks at s3
    run_pass()
    sets = listing(ns, lb.TABLE)
    assert sets["vips_n0"] == [VIP] and sets["vips_n1"] == [MOVED_VIP]


def test_mesh_ports_reach_their_tasks_and_follow_changes(ns: str) -> None:
    from tether.firewall.manager import Firewall
    from tether.firewall.render import IngressPort
    from tether.kernel.nft import Nft

    def in_ns(fn: Any) -> Any:
        return run_in_netns(ns, fn, 30)

    fw = in_ns(lambda: Firewall(Nft(), lambda: [], lambda: []))
    in_ns(fw.sync)
    three = IngressPort("tcp", 8080, tuple((ip, 80) for ip in TASKS))
    one = IngressPort("tcp", 8081, ((TASKS[1], 80),))
    assert in_ns(lambda: fw.set_ingress([three, one]))
    seen = spread(ns, NODE_ADDR, 60, port=8080)
    assert set(seen) == set(TASKS), seen
    assert ask(ns, NODE_ADDR, 8081) == TASKS[1]
    # A task leaves 8080, 8081 gets a second task: one transaction, elements only.
    three = IngressPort("tcp", 8080, tuple((ip, 80) for ip in TASKS[:2]))
    one = IngressPort("tcp", 8081, ((TASKS[1], 80), (TASKS[2], 80)))
    assert in_ns(lambda: fw.set_ingress([three, one]))
    assert set(spread(ns, NODE_ADDR, 30, port=8080)) == set(TASKS[:2])
    assert set(spread(ns, NODE_ADDR, 30, port=8081)) == set(TASKS[1:])
    # Both ports are elements of the 2-task set now, none left in the others; no verdict map.
    sets = listing(ns, "inet tether")
    assert sorted(sets["ing_tcp_n2"]) == [8080, 8081]
    assert sets["ing_tcp_n3"] == [] and sets["ing_tcp_n1"] == []
    assert "ingress" not in sets
    # doctor finds the table as tether rendered it: the mesh chain's rules in the order the
    # changes made them, the emptied counts' rules left until the next full render.
    from tether.explain.doctor import _check_nft

    assert in_ns(lambda: _check_nft(fw.state(), {})) == []
    # A full render from the same state holds the same (the periodic sync, a restart).
    in_ns(fw.sync)
    assert set(spread(ns, NODE_ADDR, 30, port=8081)) == set(TASKS[1:])
    sets = listing(ns, "inet tether")
    assert sorted(sets["ing_tcp_n2"]) == [8080, 8081]
    assert sets["ing_tcp_n3"] == []  # an unused set stays, empty, until it is used again
    mesh = json.loads(sh(f"ip netns exec {ns} nft -j list chain inet tether mesh").stdout)
    rules = [i["rule"] for i in mesh["nftables"] if "rule" in i]
    assert len(rules) == 1 and "@ing_tcp_n2" in json.dumps(rules[0]["expr"]), rules
    # ... and the mesh's rule gone is a fault it names.
    sh(f"ip netns exec {ns} nft flush chain inet tether mesh")
    found = [p.text for p in in_ns(lambda: _check_nft(fw.state(), {}))]
    assert any(t.startswith("chain mesh lacks rule `tcp dport @ing_tcp_n2 dnat") for t in found), (
        found
    )
    in_ns(fw.sync)
    assert len(sets["ingress_tcp"]) == 4
    # The port's last task goes: the port closes (nothing listens on 8080 itself).
    assert in_ns(lambda: fw.set_ingress([one]))
    assert ask(ns, NODE_ADDR, 8080) == ""
    assert len(listing(ns, "inet tether")["ingress_tcp"]) == 2
