"""Services (issue 13): VIP request rate, the routing mesh, create-to-answering, reschedule after
a node dies, and the VIP and mesh tables at 10,000 services.

    .venv/bin/python bench/bench_services.py [RATE_ROUNDS] [CREATE_ROUNDS] [CHURN_ROUNDS]
                                             (defaults: 4, 5, 30)
    .venv/bin/python bench/bench_services.py scale [CHURN_ROUNDS]   (1. alone)

Scale, on one node, no network traffic beyond the bench's own namespaces (synthetic tasks):

1. The service VIP table of one client sandbox (cluster/lb.py's Balancer, its real passes,
   over stand-ins for the cluster store's caches: services with a VIP each and two tasks
   each), loaded with 10, 100, 1,000 and 10,000 services in a namespace of the bench's own;
   at each size the first-packet latency through a VIP (a TCP connect whose SYN the table
   DNATs to one of two real listeners) against a connect straight to a listener, interleaved
   (goal: flat).  Then a sandbox that joins with 10,000 services there (one pass from nothing:
   goal <= 10 s), and churn: a service added, a task added, a task removed, a service removed,
   each one Balancer pass (the Python and one nftables transaction), in a sandbox with 10,000
   services and, interleaved, one with 10 (goal p99 <= 50 ms at 10,000; kube-proxy's nftables
   mode ~141 ms per change at 10,000 services, kubernetes/kubernetes#126013).  The layout
   before this bench (a chain and an anonymous map per service) is measured at 1,000 services
   in the same run, for comparison.
2. The routing mesh (firewall/manager.py set_ingress on a real inet tether table): 10,000
   published ports x 2 tasks loaded, churn on one port (p50 / p99), first-packet latency
   through a mesh port at 10 and at 10,000 ports, and the mesh's per-pass computation
   (cluster/ingress.py Mesh.wanted) at 10,000 services.
3. An idle connection through a VIP, opened before the 10,000 services were loaded and held
   idle for the whole bench (at least 120 s): does it still answer, on the same task?  The
   conntrack timeout that applies (nf_conntrack_tcp_timeout_established) is read in that
   namespace and in a real task client's sandbox, and the entry's remaining lifetime from the
   conntrack table.

On the three-node cluster (clusterkit.py):

4. Request rate from a client container on node 1 through the VIP of a 3-task service
   (busybox httpd) vs straight to each task's address, interleaved round by round (3 s each;
   goal VIP / direct >= 0.9).  Through the routing mesh (a 2-task service publishing 8080,
   no task on node 3) from the underlay namespace: to node 3 vs to node 1 (reported).
5. Time from `POST /services/create` (3 replicas) until all three tasks answer HTTP from the
   client on node 1 (resolving tasks.NAME through 127.0.0.11), against three plain containers
   (create + start through the API, one per node, at once) until they answer the same way.
6. Reschedule: a node's tetherd killed (kill -9) and its underlay link set down; the time
   until the scheduler shows 3 running tasks again, and until 3 tasks answer from node 1.
   The victim runs no etcd leader (etcd extends every lease when its leader changes).
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from clusterkit import (
    COMMIT,
    TTL,
    Nodes,
    Probe,
    address,
    head,
    in_netns_cmd,
    sandbox,
    summary,
    wait_for,
)
from common import PY, loadavg, save

from cluster import run_in_netns
from nshost import delete_netns, make_netns, sh
from tether.model import RemoteEndpoint

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
REAL = ["10.77.0.1", "10.77.0.2"]  # the two real listeners behind the measured VIPs
NODE_ADDR = "10.77.0.9"
SIZES = (10, 100, 1000, 10000)
IDLE_MIN = 120.0  # seconds the idle connection is held at least

SERVER = r"""
import selectors, socket, sys, time
sel = selectors.DefaultSelector()
for addr in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 80)); s.listen(1024); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, ("listen", addr))
deadline = time.monotonic() + 1800
while time.monotonic() < deadline:
    for key, _ in sel.select(1):
        kind, addr = key.data
        if kind == "listen":
            try:
                c, _peer = key.fileobj.accept()
            except OSError:
                continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, ("conn", addr))
        else:
            try:
                data = key.fileobj.recv(100)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj); key.fileobj.close()
            else:
                key.fileobj.send(addr.encode() + b"\n")
"""


# -- stand-ins for what the Balancer and the Mesh read (the cluster store's caches) ----------


@dataclass
class Svc:
    id: str
    vips: list[dict[str, str]]
    ports: list[dict[str, Any]] = field(default_factory=list)
    endpoint_mode: str = "vip"


@dataclass
class Services:
    by_id: dict[str, Svc] = field(default_factory=dict)
    listeners: list[Any] = field(default_factory=list)
    change_logs: list[set[str]] = field(default_factory=list)  # as cluster/services.py's

    def logged(self, sid: str) -> None:
        for changed in self.change_logs:
            changed.add(sid)


@dataclass
class Store:
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
class Ctrs:
    by_id: dict[str, Ctr] = field(default_factory=dict)


def vip_of(i: int) -> str:
    return f"10.80.{i // 250}.{1 + i % 250}"


def tasks_of(i: int) -> tuple[str, str]:
    if i == 0:
        return REAL[0], REAL[1]
    return f"10.81.{i // 250}.{1 + i % 250}", f"10.82.{i // 250}.{1 + i % 250}"


def endpoint(svc: str, ip: str) -> RemoteEndpoint:
    return RemoteEndpoint(
        id=f"ep-{ip}", network="net1", node="n2", vtep="", container="", name="", ipv4=ip,
        service=svc,
    )  # fmt: skip


def add_service(store: Store, services: Services, i: int, tasks: int = 2) -> list[str]:
    """Service i with its VIP and `tasks` task endpoints; the endpoint ids."""
    sid = f"svc{i:06d}"
    services.by_id[sid] = Svc(sid, [{"NetworkID": "net1", "Addr": f"{vip_of(i)}/16"}])
    services.logged(sid)
    eps = store.endpoints.setdefault("net1", {})
    for ip in tasks_of(i)[:tasks]:
        eps[f"ep-{ip}"] = endpoint(sid, ip)
    return [f"ep-{ip}" for ip in tasks_of(i)[:tasks]]


def remove_service(store: Store, services: Services, i: int) -> list[str]:
    sid = f"svc{i:06d}"
    del services.by_id[sid]
    services.logged(sid)
    eps = store.endpoints["net1"]
    gone = [f"ep-{ip}" for ip in tasks_of(i) if f"ep-{ip}" in eps]
    for k in gone:
        del eps[k]
    return gone


class Sandbox:
    """A namespace standing for one client container: the two real listeners on its loopback,
    a link with the VIPs' subnet (the DNAT happens after the routing decision), and a
    Balancer of its own over its own stand-in caches."""

    def __init__(self, name: str) -> None:
        from tether.cluster import lb
        from tether.events import EventBus

        self.netns = make_netns("ts")
        self.path = f"/run/netns/{self.netns}"
        for a in [*REAL, NODE_ADDR]:
            sh(f"ip -n {self.netns} addr add {a}/32 dev lo")
        sh(
            f"ip -n {self.netns} link add v0 type veth peer name v1 && "
            f"ip -n {self.netns} link set v1 up && "
            f"ip -n {self.netns} addr add 10.80.255.254/16 dev v0 && "
            f"ip -n {self.netns} link set v0 up"
        )
        self.server = subprocess.Popen(in_netns_cmd(self.path, PY, "-c", SERVER, *REAL))
        self.store = Store()
        self.services = Services()
        self.ctr = Ctr(name, name, self.path, {"e": Ep("net1")})
        self.containers = Ctrs({name: self.ctr})
        self.bus = EventBus()
        self.balancer = lb.Balancer(
            self.store,  # type: ignore[arg-type]
            self.services,  # type: ignore[arg-type]
            self.containers,  # type: ignore[arg-type]
            self.bus,
        )
        wait_for("the listeners", lambda: connect_ms(self.netns, REAL[1]) is not None, 10)

    def changed(self, ids: list[str]) -> None:
        """What the cluster store publishes when endpoints change (the Balancer follows it)."""
        from tether.events import ClusterEndpoints

        eps = self.store.endpoints.setdefault("net1", {})
        self.bus.publish(ClusterEndpoints("net1", eps, "n1", frozenset(ids)))

    def run_pass(self) -> float:
        t = time.perf_counter()
        asyncio.run(self.balancer.run_pass())
        return (time.perf_counter() - t) * 1000

    def close(self) -> None:
        self.server.kill()
        self.server.wait()
        delete_netns(self.netns)


def connect_ms(netns: str, addr: str, port: int = 80) -> float | None:
    def go() -> float | None:
        t = time.perf_counter()
        try:
            with socket.create_connection((addr, port), timeout=1):
                return (time.perf_counter() - t) * 1000
        except OSError:
            return None

    took: float | None = run_in_netns(netns, go, 10)
    return took


def first_packet(netns: str, target: str, n: int = 200, port: int = 80) -> dict[str, Any]:
    """n TCP connects through `target` (a VIP or a mesh port) interleaved with n straight
    to a listener: connect() latency, ms."""

    def go() -> tuple[list[float], list[float]]:
        via: list[float] = []
        direct: list[float] = []
        for k in range(n):
            pair = [(target, port, via), (REAL[0], 80, direct)]
            for addr, p, xs in pair if k % 2 == 0 else pair[::-1]:
                t = time.perf_counter()
                with socket.create_connection((addr, p), timeout=1):
                    xs.append((time.perf_counter() - t) * 1000)
        return via, direct

    via, direct = run_in_netns(netns, go, 120)
    return {
        "through the DNAT (ms)": summary(via),
        "straight to the listener (ms)": summary(direct),
    }


# -- the layout before this bench, for comparison (a chain + anonymous map per service) -----

OLD_TABLE = "ip tether_svc_old"


def old_create() -> str:
    return (
        f"table {OLD_TABLE} {{\n map vips {{ type ipv4_addr : verdict; }}\n"
        " chain out { type nat hook output priority -80; policy accept; ip daddr vmap @vips; }\n"
        "}\n"
    )


def old_service(i: int, backends: tuple[str, ...]) -> str:
    chain = f"s_{i:08d}"
    pairs = ", ".join(f"{k} : {ip}" for k, ip in enumerate(backends))
    return (
        f"add chain {OLD_TABLE} {chain}\n"
        f"add rule {OLD_TABLE} {chain} dnat to numgen random mod {len(backends)} "
        f"map {{ {pairs} }}\n"
        f"add element {OLD_TABLE} vips {{ {vip_of(i)} : jump {chain} }}\n"
    )


def old_remove(i: int) -> str:
    return (
        f"delete element {OLD_TABLE} vips {{ {vip_of(i)} }}\ndelete chain {OLD_TABLE} s_{i:08d}\n"
    )


def bench_old_layout(count: int, rounds: int) -> dict[str, Any]:
    from tether.kernel.nft import run_in_netns as nft_in

    ns = make_netns("ts")
    try:
        path = f"/run/netns/{ns}"
        text = old_create() + "".join(old_service(i, tasks_of(i)) for i in range(1, count + 1))
        t = time.perf_counter()
        nft_in(path, text)
        load = (time.perf_counter() - t) * 1000
        adds, rms = [], []
        for r in range(rounds):
            i = count + 1 + r
            t = time.perf_counter()
            nft_in(path, old_service(i, tasks_of(i)))
            adds.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            nft_in(path, old_remove(i))
            rms.append((time.perf_counter() - t) * 1000)
        return {
            "services": count,
            "load in one transaction (ms)": round(load),
            "add a service (ms)": summary(adds),
            "remove a service (ms)": summary(rms),
        }
    finally:
        delete_netns(ns)


# -- 1-3: scale ------------------------------------------------------------------------------


def conntrack_entry(netns: str, dst: str) -> str:
    out = subprocess.run(
        in_netns_cmd(f"/run/netns/{netns}", "cat", "/proc/net/nf_conntrack"),
        capture_output=True,
        text=True,
    ).stdout
    return next((line for line in out.splitlines() if f"dst={dst} " in line), "")


def sysctl_in(path: str, name: str) -> str:
    return subprocess.run(
        in_netns_cmd(path, "cat", f"/proc/sys/net/netfilter/{name}"),
        capture_output=True,
        text=True,
    ).stdout.strip()


def bench_scale(churn_rounds: int, results: dict[str, Any], idle: dict[str, Any]) -> None:
    from tether.cluster import lb
    from tether.kernel.nft import run_in_netns as nft_run_in_netns

    # Time the nftables transactions on their own too (the Balancer calls lb.run_in_netns).
    nft_times: list[float] = []
    real = nft_run_in_netns

    def timed_nft(path: str, text: str) -> None:
        t = time.perf_counter()
        real(path, text)
        nft_times.append((time.perf_counter() - t) * 1000)

    setattr(lb, "run_in_netns", timed_nft)  # noqa: B010 (the module's global, replaced)
    big, small = Sandbox("big"), Sandbox("small")
    out: dict[str, Any] = {}
    try:
        # -- the idle connection, through the VIP of service 0, opened at 10 services ---------
        for i in range(SIZES[0]):
            big.changed(add_service(big.store, big.services, i))
            small.changed(add_service(small.store, small.services, i))
        big.run_pass()
        small.run_pass()

        def hold() -> tuple[socket.socket, str]:
            s = socket.create_connection((vip_of(0), 80), timeout=2)
            s.sendall(b"?\n")
            return s, s.recv(100).decode().strip()

        held, task = run_in_netns(big.netns, hold, 10)
        idle["opened"] = time.monotonic()
        idle["socket"], idle["task"], idle["netns"] = held, task, big.netns
        idle["conntrack entry when opened"] = conntrack_entry(big.netns, vip_of(0))

        # -- first-packet latency at 10, 100, 1,000, 10,000 services ---------------------------
        latency: dict[str, Any] = {}
        loads: dict[str, float] = {}
        have = SIZES[0]
        for size in SIZES:
            for i in range(have, size):
                big.changed(add_service(big.store, big.services, i))
            if size > have:
                loads[f"{have} -> {size}"] = round(big.run_pass(), 1)
            have = size
            latency[str(size)] = first_packet(big.netns, vip_of(0))
            print(f"first packet at {size}:", latency[str(size)], flush=True)
        p50 = {k: v["through the DNAT (ms)"]["p50"] for k, v in latency.items()}
        out["first-packet latency through a VIP, by services loaded"] = latency
        out["connect through the VIP, 10,000 / 10 services (p50)"] = round(
            p50["10000"] / p50["10"], 3
        )
        out["growing passes (one pass each, ms)"] = loads

        # -- a sandbox joining with 10,000 services there: one pass from nothing --------------
        joiner = Ctr("joiner", "joiner", big.path, {"e": Ep("net1")})
        big.containers.by_id = {"joiner": joiner}
        nft_times.clear()
        t = time.perf_counter()
        asyncio.run(big.balancer.run_pass())
        full = (time.perf_counter() - t) * 1000
        out["a sandbox joining with 10,000 services x 2 tasks: one pass (ms)"] = {
            "whole pass": round(full),
            "of which the nftables transaction": round(nft_times[-1]),
            "goal": "<= 10,000 ms",
        }
        assert connect_ms(big.netns, vip_of(0)) is not None
        assert connect_ms(big.netns, vip_of(9999)) is None  # (its tasks are not real)
        # The table really holds them all.
        listing = subprocess.run(
            in_netns_cmd(big.path, "nft", "-j", "list", "map", "ip", "tether_svc", "backends"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        elems = json.loads(listing)["nftables"][1]["map"]["elem"]
        out["backends in the table"] = len(elems)
        big.containers.by_id = {"big": big.ctr}
        big.balancer.programmed["big"] = big.balancer.programmed.pop("joiner")
        big.balancer._basis["big"] = (big.balancer._pass, frozenset({"net1"}))
        big.balancer._chains["big"] = big.balancer._chains.pop("joiner")

        # -- churn at 10,000 and at 10, interleaved -------------------------------------------
        ops = ("add a service", "add a task", "remove a task", "remove a service")
        churn: dict[str, dict[str, list[float]]] = {
            f"{size} services": {op: [] for op in ops} for size in (10000, 10)
        }
        nft_churn: dict[str, list[float]] = {"10000 services": [], "10 services": []}
        for r in range(churn_rounds):
            pair = [(big, 10000), (small, 10)]
            for sb, size in pair if r % 2 == 0 else pair[::-1]:
                i = 20000 + r
                key = f"{size} services"
                first, second = (f"ep-{ip}" for ip in tasks_of(i))

                def add_task(sb: Sandbox = sb, i: int = i, second: str = second) -> list[str]:
                    sb.store.endpoints["net1"][second] = endpoint(f"svc{i:06d}", tasks_of(i)[1])
                    return [second]

                def remove_task(sb: Sandbox = sb, first: str = first) -> list[str]:
                    del sb.store.endpoints["net1"][first]
                    return [first]

                steps = [
                    (ops[0], lambda sb=sb, i=i: add_service(sb.store, sb.services, i, tasks=1)),
                    (ops[1], add_task),
                    (ops[2], remove_task),
                    (ops[3], lambda sb=sb, i=i: remove_service(sb.store, sb.services, i)),
                ]
                for op, change in steps:
                    sb.changed(change())
                    nft_times.clear()
                    churn[key][op].append(sb.run_pass())
                    if len(nft_times) != 1:
                        raise RuntimeError(f"{op}: {len(nft_times)} transactions, not one")
                    nft_churn[key].append(nft_times[0])
        out["churn: one Balancer pass per change (ms)"] = {
            key: {op: summary(xs) for op, xs in by_op.items()} for key, by_op in churn.items()
        }
        all_big = [x for xs in churn["10000 services"].values() for x in xs]
        all_small = [x for xs in churn["10 services"].values() for x in xs]
        out["churn, every change (ms)"] = {
            "10,000 services": summary(all_big),
            "10 services": summary(all_small),
            "goal": "p99 <= 50 ms at 10,000 (kube-proxy nftables: ~141 ms)",
        }
        out["churn: the nftables transaction alone (ms)"] = {
            k: summary(v) for k, v in nft_churn.items()
        }
        out["transactions per change"] = 1
        print("churn:", out["churn, every change (ms)"], flush=True)
    finally:
        setattr(lb, "run_in_netns", real)  # noqa: B010
        small.close()
        idle["close big"] = big.close
    out["the layout before (a chain + anonymous map per service), same run"] = bench_old_layout(
        1000, 10
    )
    results["VIP table at scale (cluster/lb.py)"] = out
    print("old layout:", out["the layout before (a chain + anonymous map per service), same run"])


def bench_mesh_scale(churn_rounds: int, results: dict[str, Any]) -> None:
    from tether.cluster.ingress import Mesh
    from tether.firewall.manager import Firewall
    from tether.firewall.render import IngressPort
    from tether.kernel.nft import Nft

    ns = make_netns("ts")
    path = f"/run/netns/{ns}"
    for a in [*REAL, NODE_ADDR]:
        sh(f"ip -n {ns} addr add {a}/32 dev lo")
    server = subprocess.Popen(in_netns_cmd(path, PY, "-c", SERVER, *REAL))
    out: dict[str, Any] = {}
    try:
        wait_for("the listeners", lambda: connect_ms(ns, REAL[1]) is not None, 10)
        fw = run_in_netns(ns, lambda: Firewall(Nft(), lambda: [], lambda: []), 30)
        run_in_netns(ns, fw.sync, 30)

        def port_of(i: int) -> IngressPort:
            if i == 0:
                return IngressPort("tcp", 30000, ((REAL[0], 80), (REAL[1], 80)))
            a, b = tasks_of(i)
            return IngressPort("tcp", 30000 + i, ((a, 80), (b, 80)))

        def apply(ports: list[IngressPort]) -> float:
            t = time.perf_counter()
            run_in_netns(ns, lambda: fw.set_ingress(ports), 120)
            return (time.perf_counter() - t) * 1000

        ports = [port_of(i) for i in range(10)]
        apply(ports)
        out["first-packet latency through a mesh port, 10 ports"] = first_packet(
            ns, NODE_ADDR, port=30000
        )
        ports = [port_of(i) for i in range(10000)]
        out["10 -> 10,000 ports x 2 tasks, one transaction (ms)"] = round(apply(ports))
        out["first-packet latency through a mesh port, 10,000 ports"] = first_packet(
            ns, NODE_ADDR, port=30000
        )
        changes: dict[str, list[float]] = {"task removed": [], "task added": [], "port added": []}
        changes["port removed"] = []
        for r in range(churn_rounds):
            k = 1 + r
            one = IngressPort("tcp", 30000 + k, ports[k].backends[:1])
            changes["task removed"].append(apply([*ports[:k], one, *ports[k + 1 :]]))
            changes["task added"].append(apply(ports))
            extra = IngressPort("tcp", 45000 + r, ((REAL[0], 80), (REAL[1], 80)))
            changes["port added"].append(apply([*ports, extra]))
            changes["port removed"].append(apply(ports))
        out["churn: one set_ingress per change (ms), 10,000 ports"] = {
            k: summary(v) for k, v in changes.items()
        }
        out["churn, every change (ms)"] = summary([x for v in changes.values() for x in v])
        # The mesh's own per-pass computation at 10,000 services (what feeds set_ingress).
        services = Services()
        store = Store()
        for i in range(10000):
            add_service(store, services, i)
            services.by_id[f"svc{i:06d}"].ports = [
                {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30000 + i,
                 "PublishMode": "ingress"}
            ]  # fmt: skip
        mesh = Mesh.__new__(Mesh)
        mesh.cluster = store  # type: ignore[assignment]
        mesh.services = services  # type: ignore[assignment]

        @dataclass
        class Net:
            id: str = "net1"

        took = []
        for _ in range(10):
            t = time.perf_counter()
            wanted = mesh.wanted(Net())  # type: ignore[arg-type]
            took.append((time.perf_counter() - t) * 1000)
        assert len(wanted) == 10000
        out["Mesh.wanted at 10,000 services (ms)"] = summary(took)
    finally:
        server.kill()
        server.wait()
        delete_netns(ns)
    results["routing mesh at scale (firewall/render.py ingress maps)"] = out
    print("mesh:", json.dumps(out)[:600], flush=True)


# -- 4-6: the cluster ----------------------------------------------------------------------------


def service_spec(name: str, replicas: int = 3, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Args": WEB},
            "Networks": [{"Target": "app"}],
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "EndpointSpec": {"Mode": "vip"},
    }
    spec.update(extra)
    return spec


def running(h: Any, service: str) -> list[dict[str, Any]]:
    tasks = h.api.get("/tasks", {"filters": json.dumps({"service": [service]})})
    return [
        t for t in tasks if t["Status"]["State"] == "running" and t["DesiredState"] == "running"
    ]


def task_addresses(nodes: Nodes, service: str) -> dict[str, str]:
    """address -> node of the service's running tasks."""
    out = {}
    for t in running(nodes.hosts[0], service):
        cid = str(t["Status"]["ContainerStatus"]["ContainerID"])
        node = int(str(t["NodeID"]).removeprefix("node")) - 1
        out[address(nodes.hosts[node], cid, "app")] = str(t["NodeID"])
    return out


def bench_cluster(
    nodes: Nodes, rate_rounds: int, create_rounds: int, results: dict[str, Any]
) -> None:
    a = nodes.hosts[0]
    a.ok("network", "create", "-d", "overlay", "--subnet", "10.63.0.0/24", "app")
    for h in nodes.hosts:
        wait_for("app everywhere", lambda h=h: "app" in h.ok("network", "ls"), 10)
    a.api.post("/services/create", service_spec("web"))
    wait_for("3 web tasks", lambda: len(running(a, "web")) == 3, 60, 0.2)
    a.ok("run", "-d", "--name", "cli", "--network", "app", "busybox", "sleep", "3600")
    cli_key = sandbox(a, "cli")
    probe = Probe(cli_key)
    underlay = Probe(f"/run/netns/{nodes.cluster.underlay}")
    try:
        vip = a.api.get("/services/web")["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
        tasks = task_addresses(nodes, "web")
        wait_for(
            "every web task answering",
            lambda: probe.ask(op="answering", names=["tasks.web"], want=3, timeout=2)["done"],
            30,
            0.2,
        )
        results["conntrack timeout in a client container's sandbox (s)"] = sysctl_in(
            cli_key, "nf_conntrack_tcp_timeout_established"
        )
        # -- 4. request rate: VIP vs each task straight -------------------------------------
        targets = {"VIP": vip, **{f"task on {n}": ip for ip, n in sorted(tasks.items())}}
        rates: dict[str, list[float]] = {k: [] for k in targets}
        failed = 0
        names = list(targets)
        for r in range(rate_rounds):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                got = probe.ask(op="rate", ip=targets[k], port=80, seconds=3)
                rates[k].append(got["ok"] / got["seconds"])
                failed += got["failed"]
        med = {k: round(statistics.median(v), 1) for k, v in rates.items()}
        direct = [v for k, v in med.items() if k != "VIP"]
        results["requests/s from a client on node 1 (HTTP/1.0, one at a time)"] = {
            "rounds (3 s per target, interleaved)": rate_rounds,
            "per round": {k: [round(x) for x in v] for k, v in rates.items()},
            "median": med,
            "VIP / mean of the three tasks straight": round(
                med["VIP"] / statistics.mean(direct), 3
            ),
            "VIP / the local task straight": round(
                med["VIP"] / next(v for k, v in med.items() if k == "task on node1"), 3
            ),
            "failed requests": failed,
            "goal": "VIP / direct >= 0.9",
        }
        print(json.dumps(results["requests/s from a client on node 1 (HTTP/1.0, one at a time)"]))

        # -- 4b. the routing mesh from a node without a task vs with one ---------------------
        mesh = service_spec(
            "mesh",
            replicas=2,
            EndpointSpec={
                "Mode": "vip",
                "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080}],
            },
        )
        mesh["TaskTemplate"]["Placement"] = {"Constraints": ["node.hostname!=node3"]}
        a.api.post("/services/create", mesh)
        wait_for("2 mesh tasks", lambda: len(running(a, "mesh")) == 2, 60, 0.2)
        for i in range(3):
            wait_for(
                f"the mesh on node {i + 1}",
                lambda i=i: underlay.ask(op="rate", ip=nodes.ip(i), port=8080, seconds=0.2)["ok"],
                20,
                0.2,
            )
        mrates: dict[str, list[float]] = {"node3 (no task)": [], "node1 (one task)": []}
        mfailed = 0
        for r in range(rate_rounds):
            pair = [("node3 (no task)", nodes.ip(2)), ("node1 (one task)", nodes.ip(0))]
            for k, ip in pair if r % 2 == 0 else pair[::-1]:
                got = underlay.ask(op="rate", ip=ip, port=8080, seconds=3)
                mrates[k].append(got["ok"] / got["seconds"])
                mfailed += got["failed"]
        mmed = {k: round(statistics.median(v), 1) for k, v in mrates.items()}
        results["requests/s through the routing mesh from the underlay (port 8080)"] = {
            "per round": {k: [round(x) for x in v] for k, v in mrates.items()},
            "median": mmed,
            "no task / one task": round(mmed["node3 (no task)"] / mmed["node1 (one task)"], 3),
            "failed requests": mfailed,
        }
        print(
            json.dumps(results["requests/s through the routing mesh from the underlay (port 8080)"])
        )
        a.api.delete("/services/mesh")

        # -- 5. service create -> 3 tasks answering, vs 3 plain containers ------------------
        svc_ms: list[float] = []
        plain_ms: list[float] = []
        for r in range(create_rounds):
            for kind in ("service", "plain") if r % 2 == 0 else ("plain", "service"):
                if kind == "service":
                    name = f"s{r}"
                    probe.send(op="answering", names=[f"tasks.{name}"], want=3, timeout=60)
                    t0 = time.monotonic()
                    a.api.post("/services/create", service_spec(name))
                    done = probe.receive(80)["done"]
                    if done is None:
                        raise RuntimeError(f"service {name}: 3 tasks did not answer")
                    svc_ms.append((done - t0) * 1000)
                    a.api.delete(f"/services/{name}")
                else:
                    names = [f"p{r}-{i}" for i in range(3)]
                    probe.send(op="answering", names=names, want=3, timeout=60)
                    t0 = time.monotonic()
                    errors: list[BaseException] = []

                    def start(i: int, n: str, errors: list[BaseException] = errors) -> None:
                        try:
                            h = nodes.hosts[i]
                            body = {
                                "Image": "busybox",
                                "Cmd": WEB,
                                "HostConfig": {"NetworkMode": "app"},
                            }
                            h.api.post(f"/containers/create?name={n}", body)
                            h.api.post(f"/containers/{n}/start")
                        except BaseException as exc:
                            errors.append(exc)

                    threads = [
                        threading.Thread(target=start, args=(i, n)) for i, n in enumerate(names)
                    ]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(60)
                    if errors:
                        raise errors[0]
                    done = probe.receive(80)["done"]
                    if done is None:
                        raise RuntimeError(f"{names} did not answer")
                    plain_ms.append((done - t0) * 1000)
                    for i, n in enumerate(names):
                        nodes.hosts[i].api.delete(f"/containers/{n}", {"force": 1})
            for h in nodes.hosts:  # the previous round's tasks gone before the next round
                wait_for(
                    "no task left",
                    lambda h=h, r=r: (
                        not any(
                            f"s{r}." in str(c["Names"])
                            for c in h.api.get("/containers/json", {"all": 1})
                        )
                    ),
                    60,
                    0.2,
                )
        results["service create --replicas 3 until 3 tasks answer HTTP (ms)"] = {
            "service (POST /services/create)": summary(svc_ms),
            "3 plain containers, one per node, created and started at once": summary(plain_ms),
            "service / plain, median": round(
                statistics.median(svc_ms) / statistics.median(plain_ms), 2
            ),
        }
        print(json.dumps(results["service create --replicas 3 until 3 tasks answer HTTP (ms)"]))

        # -- 6. reschedule after a node dies ------------------------------------------------
        lead = nodes.cluster.leader()
        sched = next(
            (str(n["ID"]) for n in a.api.get("/nodes") if n["ManagerStatus"]["Leader"]), ""
        )
        victim = 2 if lead != 2 else 1
        dead = f"node{victim + 1}"
        wait_for("3 web tasks", lambda: len(running(a, "web")) == 3, 30, 0.2)
        on_victim = [
            probe.ask(op="fetch", ip=ip, port=80, timeout=5)["body"]
            for ip, n in task_addresses(nodes, "web").items()
            if n == dead
        ]
        nodes.hosts[victim].kill()
        sh(f"ip -n {nodes.netns(victim)} link set eth0 down")
        t0 = time.monotonic()
        # Three tasks answering, none of them the dead node's (told apart by their pages).
        probe.send(
            op="answering", names=["tasks.web"], want=3, exclude=on_victim, timeout=3 * TTL + 30
        )
        took_sched = wait_for(
            "3 tasks off the dead node",
            lambda: len([t for t in running(a, "web") if t["NodeID"] != dead]) == 3,
            3 * TTL + 30,
            0.05,
        )
        got = probe.receive(3 * TTL + 45)
        took_answer = (got["done"] - t0) if got["done"] else None
        results["reschedule after a node dies (kill -9 tetherd + link down)"] = {
            "victim": dead,
            "the victim led the scheduling": sched == dead,
            "etcd leader": f"member {lead + 1}",
            "TTL (s)": TTL,
            "3 tasks running again, per the scheduler (s)": round(took_sched, 2),
            "3 tasks answering HTTP from node 1 (s)": round(took_answer, 2)
            if took_answer
            else None,
            "goal": f"<= TTL + 5 s ({TTL + 5} s)",
        }
        print(json.dumps(results["reschedule after a node dies (kill -9 tetherd + link down)"]))
    finally:
        probe.close()
        underlay.close()


def scale_only(churn_rounds: int) -> int:
    """`bench_services.py scale [CHURN_ROUNDS]`: part 1's VIP table alone (a minute and a
    half), saved as results/services-scale.json."""
    results: dict[str, Any] = {
        "command": f"bench/bench_services.py scale {churn_rounds}",
        "code": f"commit {COMMIT}" if COMMIT else f"the working tree at {head()}",
    }
    load = {"start": loadavg()}
    idle: dict[str, Any] = {}
    try:
        bench_scale(churn_rounds, results, idle)
    finally:
        if "socket" in idle:
            idle["socket"].close()
        if "close big" in idle:
            idle["close big"]()
    load["end"] = loadavg()
    results["load average (1, 5, 15 min)"] = load
    print(save("services-scale", results))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["scale"]:
        return scale_only(int(sys.argv[2]) if len(sys.argv) > 2 else 30)
    rate_rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    create_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    churn_rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    load: dict[str, list[float]] = {"start": loadavg()}
    results: dict[str, Any] = {
        "command": f"bench/bench_services.py {rate_rounds} {create_rounds} {churn_rounds}",
        "load average (1, 5, 15 min)": load,
        "code": f"commit {COMMIT}" if COMMIT else f"the working tree at {head()}",
    }
    t_start = time.monotonic()
    idle: dict[str, Any] = {}
    try:
        bench_scale(churn_rounds, results, idle)
        load["after the VIP table at scale"] = loadavg()
        bench_mesh_scale(churn_rounds, results)
        load["after the mesh at scale"] = loadavg()
        nodes = Nodes(3)
        try:
            bench_cluster(nodes, rate_rounds, create_rounds, results)
        except BaseException:
            nodes.keep_logs()
            raise
        finally:
            nodes.cleanup()
        load["after the cluster"] = loadavg()
        # -- 3. the idle connection ------------------------------------------------------------
        held: socket.socket = idle["socket"]
        wait = IDLE_MIN - (time.monotonic() - idle["opened"])
        if wait > 0:
            time.sleep(wait)
        idled = time.monotonic() - idle["opened"]
        entry = conntrack_entry(idle["netns"], vip_of(0))

        def again() -> str:
            held.sendall(b"?\n")
            return held.recv(100).decode().strip()

        answer = run_in_netns(idle["netns"], again, 10)
        results["an idle connection through a VIP"] = {
            "held idle (s)": round(idled),
            "answered afterwards": answer != "",
            "by the same task": answer == idle["task"],
            "nf_conntrack_tcp_timeout_established in that namespace (s)": sysctl_in(
                f"/run/netns/{idle['netns']}", "nf_conntrack_tcp_timeout_established"
            ),
            "conntrack entry when opened": idle["conntrack entry when opened"],
            "conntrack entry before the answer": entry,
            "what this shows": (
                "the connection survived this long idle and through every table change of "
                "the scale bench (10,000 services loaded, the table made again from nothing, "
                "the churn); conntrack would drop it after the timeout above, 5 days by "
                "default: an hour was not waited for"
            ),
        }
        print(json.dumps(results["an idle connection through a VIP"]), flush=True)
    finally:
        if "socket" in idle:
            idle["socket"].close()
        if "close big" in idle:
            idle["close big"]()
    results["whole run (s)"] = round(time.monotonic() - t_start, 1)
    print(save("services", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
