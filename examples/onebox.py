"""A tether cluster on one machine: an underlay, three "machines", etcd and a tetherd on each.

    underlay netns  tcd-<id>-u   bridge br0 10.99.0.1/24 (the LAN the machines share)
      ├── veth n1 ── node1 netns tcd-<id>-n1   eth0 10.99.0.11   etcd member etcd1, tetherd
      ├── veth n2 ── node2 netns tcd-<id>-n2   eth0 10.99.0.12   etcd member etcd2, tetherd
      └── veth n3 ── node3 netns tcd-<id>-n3   eth0 10.99.0.13   etcd member etcd3, tetherd

Everything lives in namespaces made here: the machine's own network is never touched (no
link, address or route in it changes) and nothing is sent outside those namespaces (the
nodes have no default route; their containers' upstream resolver is a TEST-NET address that
nothing routes to).  Each node's tetherd has its own --root/--exec-root under one run
directory (/tmp/tether-cluster-demo-<id>), and is started with `nsenter --net=...`, which
changes only the network namespace (`ip netns exec` would also give it a private mount
namespace, hiding the netns files it bind-mounts).  etcd is Debian's etcd-server, data on
/dev/shm (its WAL fsyncs every write), heartbeat 50 ms and election timeout 500 ms so the
cluster forms in about a second.

What was made is written to <run dir>/state.json as it is made, so a teardown from another
process (`cluster_demo.py --down`, after `--keep` or a crash) finds and removes exactly that:
processes by the pids recorded (checked against their command lines), namespaces by name.
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from tether.client import ApiError, Client

T = TypeVar("T")

PY = sys.executable
NETNS_DIR = "/run/netns"
RUN_PREFIX = "tether-cluster-demo-"
# etcd data dirs carry the test suite's etcd marker (tests/cluster.py: ETCD_MARKER), so the
# suite's leak check counts a demo's etcd members too.
ETCD_PREFIX = "tether-etcd-demo-"
SUBNET = "10.99.0"
CLIENT_PORT = 2379
PEER_PORT = 2380
# Containers' upstream resolver: TEST-NET-1, and the nodes have no route to it, so a name no
# network knows fails at once instead of leaving the namespaces.
UPSTREAM = "192.0.2.53"


class SetupError(Exception):
    """A step of the setup failed; the message says which, with the tail of its log."""


def sh(cmd: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SetupError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
    return r


def in_netns(netns: str, fn: Callable[[], T], timeout: float = 10) -> T:
    """fn() in a thread that entered `netns` (a network namespace is per thread), so this
    process can reach the nodes' addresses without its own namespace changing."""
    box: dict[str, Any] = {}
    libc = ctypes.CDLL(None, use_errno=True)

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns({netns}) failed")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout} s in {netns}")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


@dataclass
class Node:
    index: int  # 1-based
    name: str  # node1: its --node-name
    netns: str
    ip: str
    dir: str  # root/, run/, logs
    tetherd_pid: int = 0
    etcd_pid: int = 0

    @property
    def root(self) -> str:
        return os.path.join(self.dir, "root")

    @property
    def exec_root(self) -> str:
        return os.path.join(self.dir, "run")

    @property
    def socket(self) -> str:
        return os.path.join(self.exec_root, "tether.sock")

    @property
    def host(self) -> str:
        """What TETHER_HOST (or -H) says to reach this node's tetherd."""
        return f"unix://{self.socket}"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.ip}:{CLIENT_PORT}"


@dataclass
class OneBox:
    """The cluster.  start() builds it, teardown() removes all of it (also from a state
    file: OneBox.load)."""

    n: int = 3
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    dir: str = ""
    etcd_root: str = ""
    underlay: str = ""
    nodes: list[Node] = field(default_factory=list)
    extra_tetherd_args: list[str] = field(default_factory=list)

    # -- what was made, on disk as it is made --------------------------------------------

    @property
    def state_file(self) -> str:
        return os.path.join(self.dir, "state.json")

    def save(self) -> None:
        if self.dir and os.path.isdir(self.dir):
            tmp = self.state_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(asdict(self), f, indent=1)
            os.replace(tmp, self.state_file)

    @classmethod
    def load(cls, path: str) -> OneBox:
        with open(path) as f:
            data = json.load(f)
        nodes = [Node(**n) for n in data.pop("nodes")]
        return cls(**data, nodes=nodes)

    @classmethod
    def leftovers(cls) -> list[str]:
        """The state files of clusters still up (kept, or whose demo was killed)."""
        return sorted(
            glob.glob(os.path.join(tempfile.gettempdir(), RUN_PREFIX + "*", "state.json"))
        )

    @property
    def store(self) -> str:
        """The --cluster-store value: every member, so a node fails over between them."""
        return "etcd://" + ",".join(f"{node.ip}:{CLIENT_PORT}" for node in self.nodes)

    @property
    def etcd_endpoints(self) -> str:
        """etcdctl's --endpoints for the same members."""
        return ",".join(node.etcd_url for node in self.nodes)

    def tetherd_args(self, node: Node) -> list[str]:
        """The command line of a node's tetherd: the part a real machine would run too
        (everything after --resolv-conf), and where this one keeps its files."""
        return [
            "tetherd",
            "--root",
            node.root,
            "--exec-root",
            node.exec_root,
            "--resolv-conf",
            os.path.join(node.dir, "resolv.conf"),
            "--cluster-store",
            self.store,
            "--cluster-advertise",
            "eth0",
            "--node-name",
            node.name,
            *self.extra_tetherd_args,
        ]

    # -- building -------------------------------------------------------------------------

    def start(self, on_step: Callable[[str], None] = lambda _: None) -> None:
        """Underlay and node namespaces, etcd (healthy), a tetherd per node (answering),
        busybox imported on each.  On failure, whatever was made stays recorded for
        teardown(), which the caller runs."""
        self.dir = tempfile.mkdtemp(prefix=RUN_PREFIX + self.token + "-")
        self.etcd_root = tempfile.mkdtemp(prefix=ETCD_PREFIX + self.token + "-", dir="/dev/shm")
        self.save()
        self._build_network()
        on_step("network")
        self._start_etcd()
        on_step("etcd")
        self._start_tetherds()
        on_step("tetherd")
        self._import_busybox()
        on_step("busybox")

    def _netns(self, name: str) -> str:
        sh(["ip", "netns", "add", name])
        sh(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def _build_network(self) -> None:
        self.underlay = self._netns(f"tcd-{self.token}-u")
        self.save()
        u = self.underlay
        sh(["ip", "-n", u, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", u, "addr", "add", f"{SUBNET}.1/24", "dev", "br0"])
        sh(["ip", "-n", u, "link", "set", "br0", "up"])
        for i in range(1, self.n + 1):
            node = Node(
                i,
                f"node{i}",
                f"tcd-{self.token}-n{i}",
                f"{SUBNET}.{10 + i}",
                os.path.join(self.dir, f"node{i}"),
            )
            self._netns(node.netns)
            self.nodes.append(node)
            self.save()
            # Both ends are made in their namespaces: nothing appears in the machine's own.
            sh(["ip", "link", "add", f"n{i}", "netns", u, "type", "veth",
                "peer", "name", "eth0", "netns", node.netns])  # fmt: skip
            sh(["ip", "-n", u, "link", "set", f"n{i}", "master", "br0", "up"])
            sh(["ip", "-n", node.netns, "addr", "add", f"{node.ip}/24", "dev", "eth0"])
            sh(["ip", "-n", node.netns, "link", "set", "eth0", "up"])
            os.makedirs(node.dir)
            with open(os.path.join(node.dir, "resolv.conf"), "w") as f:
                f.write(f"nameserver {UPSTREAM}\n")

    def _start_etcd(self, wait: float = 30) -> None:
        initial = ",".join(f"etcd{x.index}=http://{x.ip}:{PEER_PORT}" for x in self.nodes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        for node in self.nodes:
            cmd = [
                "nsenter", f"--net={NETNS_DIR}/{node.netns}", "--",
                "etcd",
                "--name", f"etcd{node.index}",
                "--data-dir", os.path.join(self.etcd_root, f"etcd{node.index}"),
                "--listen-client-urls", node.etcd_url,
                "--advertise-client-urls", node.etcd_url,
                "--listen-peer-urls", f"http://{node.ip}:{PEER_PORT}",
                "--initial-advertise-peer-urls", f"http://{node.ip}:{PEER_PORT}",
                "--initial-cluster", initial,
                "--initial-cluster-token", os.path.basename(self.etcd_root),
                "--initial-cluster-state", "new",
                "--heartbeat-interval", "50",
                "--election-timeout", "500",
                "--logger", "zap",
                "--log-level", "warn",
            ]  # fmt: skip
            with open(os.path.join(node.dir, "etcd.log"), "ab") as log:
                proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            node.etcd_pid = proc.pid
            self.save()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if all(self._etcd_healthy(node) for node in self.nodes):
                return
            for node in self.nodes:
                if not _alive(node.etcd_pid):
                    raise SetupError(f"etcd{node.index} exited:\n{_tail(node, 'etcd.log')}")
            time.sleep(0.1)
        raise SetupError(f"etcd not healthy after {wait} s:\n{_tail(self.nodes[0], 'etcd.log')}")

    def _etcd_healthy(self, node: Node) -> bool:
        def get() -> bool:
            with urllib.request.urlopen(node.etcd_url + "/health", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        try:
            return in_netns(self.underlay, get, 3)
        except (OSError, ValueError):
            return False

    def _start_tetherds(self, wait: float = 60) -> None:
        for node in self.nodes:
            cmd = [
                "nsenter",
                f"--net={NETNS_DIR}/{node.netns}",
                "--",
                PY,
                "-m",
                "tether.daemon.main",
                *self.tetherd_args(node)[1:],
            ]
            with open(os.path.join(node.dir, "tetherd.log"), "ab") as log:
                proc = subprocess.Popen(
                    cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
                )
            node.tetherd_pid = proc.pid
            self.save()
        deadline = time.monotonic() + wait
        waiting = list(self.nodes)
        while waiting and time.monotonic() < deadline:
            for node in list(waiting):
                if not _alive(node.tetherd_pid):
                    raise SetupError(f"{node.name}'s tetherd exited:\n{_tail(node, 'tetherd.log')}")
                if Client(node.socket, timeout=2).ping():
                    waiting.remove(node)
            time.sleep(0.05)
        if waiting:
            raise SetupError(
                f"{waiting[0].name}'s tetherd did not answer within {wait} s:\n"
                f"{_tail(waiting[0], 'tetherd.log')}"
            )
        # Registered: every node sees the other two (a node registers as it starts).
        while time.monotonic() < deadline:
            if all(len(Client(n.socket, timeout=5).get("/nodes")) == self.n for n in self.nodes):
                return
            time.sleep(0.05)
        raise SetupError(f"the nodes did not all see each other within {wait} s")

    def _import_busybox(self) -> None:
        from tether.runtime.busybox import build

        tar = os.path.join(self.dir, "busybox.tar")
        build(tar)
        procs = []
        for node in self.nodes:
            cmd = [PY, "-m", "tether.cli.main", "-H", node.host, "image", "import",
                   "--change", 'CMD ["sh"]', tar, "busybox"]  # fmt: skip
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for node, p in zip(self.nodes, procs, strict=True):
            try:
                _, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise SetupError(f"importing busybox on {node.name} took over 60 s") from None
            if p.returncode != 0:
                raise SetupError(f"importing busybox on {node.name}: {err.decode().strip()}")
        os.unlink(tar)

    # -- taking it down -------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove everything start() made, whatever state it is in.  Each step is bounded
        and goes on when the previous one failed."""
        for node in self.nodes:
            self._remove_containers(node)
        for node in self.nodes:
            _stop(node.tetherd_pid, "tether.daemon.main", node.dir, 20)
        for node in self.nodes:
            _stop(node.etcd_pid, "etcd", self.etcd_root, 10)
        if self.dir:
            self._kill_leftovers()
        for node in self.nodes:
            netns_files = os.path.join(node.exec_root, "netns")
            if os.path.isdir(netns_files):
                for f in os.listdir(netns_files):
                    sh(["umount", "-l", os.path.join(netns_files, f)], check=False)
                sh(["umount", "-l", netns_files], check=False)
        # Deleting a namespace deletes what tether made in it: bridges, VXLAN devices,
        # veths, its nftables table.
        for name in [n.netns for n in self.nodes] + [self.underlay]:
            if name and os.path.exists(os.path.join(NETNS_DIR, name)):
                sh(["ip", "netns", "del", name], check=False)
        for d in (self.etcd_root, self.dir):
            if d:
                shutil.rmtree(d, ignore_errors=True)

    def _remove_containers(self, node: Node) -> None:
        """rm -f every container while the daemon runs: containers outlive their daemon."""
        if not (node.tetherd_pid and _alive(node.tetherd_pid) and os.path.exists(node.socket)):
            return
        api = Client(node.socket, timeout=20)
        with contextlib.suppress(Exception):
            for c in api.get("/containers/json", {"all": 1}) or []:
                with contextlib.suppress(ApiError):
                    api.delete(f"/containers/{c['Id']}", {"force": 1})

    def _kill_leftovers(self) -> None:
        """Containers' shims, port relays and tether-crypt data paths of these nodes still
        running (their daemon died before removing them): killed as `rm -f` would, and their
        cgroups removed."""
        marker = self.dir.encode()
        for pid in _pids():
            cmdline = _cmdline(pid)
            if marker not in cmdline:
                continue
            if b"tether/firewall/relay.py" in cmdline or b"tether.crypt.datapath" in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            elif b"tether-shim" in cmdline:
                try:
                    with open(f"/proc/{pid}/task/{pid}/children") as f:
                        children = [int(c) for c in f.read().split()]
                except OSError:
                    children = []
                for victim in [*children, pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim, signal.SIGKILL)
        from tether.runtime import cgroups

        ids = [
            cid
            for node in self.nodes
            for cid in (
                os.listdir(os.path.join(node.root, "containers"))
                if os.path.isdir(os.path.join(node.root, "containers"))
                else []
            )
        ]
        deadline = time.monotonic() + 5
        for cid in ids:
            while cgroups.existing(cid) and time.monotonic() < deadline:
                cgroups.remove(cid)  # busy until the killed processes are gone
                if cgroups.existing(cid):
                    time.sleep(0.02)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


def _stop(pid: int, program: str, marker: str, timeout: float) -> None:
    """SIGTERM the process we started as `pid`, SIGKILL after `timeout`.  Only if its
    command line is still ours (program and our directory): a recorded pid may have been
    reused since.  nsenter execs its command, so the pid is the program's own."""
    if not pid or not marker:
        return
    cmdline = _cmdline(pid)
    if program.encode() not in cmdline or marker.encode() not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect our own child's exit status (a process we started stays a zombie until we
    do); another process's pid is not our child, which waitpid says by ChildProcessError."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _tail(node: Node, log: str, lines: int = 15) -> str:
    try:
        with open(os.path.join(node.dir, log), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""
