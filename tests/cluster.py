"""Clusters on one machine: an underlay, node namespaces on it, and a real etcd cluster.

    underlay netns (bridge br0, 10.99.0.1/24)
      ├── veth ── node 1 netns (eth0 10.99.0.11/24)   etcd member etcd1
      ├── veth ── node 2 netns (eth0 10.99.0.12/24)   etcd member etcd2
      ├── veth ── node 3 netns (eth0 10.99.0.13/24)   etcd member etcd3
      └── veth ── node 4 netns (eth0 10.99.0.14/24)   (no member: nodes beyond `members`)

Every namespace is made with `ip netns add` (tests/nshost.make_netns), so a node's netns can
be handed to NamespaceHost(name=node.netns) to run a tetherd in it.  The machine's own
namespace is never touched: every cluster lives in namespaces of its own, so two clusters
(say, two test runs at once) can both use 10.99.0.0/24.  The tests' own code reaches the
underlay by running in a thread that has entered a namespace (run_in_netns, arun); the
underlay namespace is the natural vantage point (10.99.0.1, on no node).

etcd is Debian's etcd-server (3.4), started with `nsenter --net=...` in a node's namespace,
data on /dev/shm (the WAL's fsyncs would otherwise dominate every write), heartbeat 50 ms and
election timeout 500 ms so that a cluster forms and elects a new leader within a second.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from nshost import NETNS_DIR, delete_netns, make_netns, sh

T = TypeVar("T")

SUBNET = "10.99.0"
UNDERLAY_IP = f"{SUBNET}.1"
CLIENT_PORT = 2379
PEER_PORT = 2380
# Marks the etcd processes (in their data dir's path) of test clusters, for the suite's
# leak check (tests/conftest.py) and for cleanup.
ETCD_MARKER = "tether-etcd-"


# -- running code inside a namespace --------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(netns: str) -> None:
    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(netns: str, fn: Callable[[], T], timeout: float = 120) -> T:
    """fn() in a thread that has entered `netns` (a network namespace is per thread): its
    sockets, and the threads and processes it starts, live there.  The thread ends with fn,
    so the caller's own namespace never changes."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            _enter_netns(netns)
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name=f"in-{netns}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(
            f"{getattr(fn, '__name__', fn)} in {netns} still running after {timeout} s"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def arun(netns: str, main: Callable[[], Awaitable[T]], timeout: float = 120) -> T:
    """asyncio.run(main()) inside `netns` (see run_in_netns)."""
    import asyncio

    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    return run_in_netns(netns, lambda: asyncio.run(bounded()), timeout + 10)


# -- TLS material ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSMaterial:
    """A CA, a server certificate for the members' addresses and a client certificate."""

    dir: str
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls(directory: str, ips: list[str]) -> TLSMaterial:
    """Generate a CA, a server certificate valid for `ips` (and 127.0.0.1), and a client
    certificate, with openssl (EC P-256 keys: fast to make)."""
    os.makedirs(directory, exist_ok=True)

    def p(name: str) -> str:
        return os.path.join(directory, name)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    def key(name: str) -> None:
        run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", p(name))

    key("ca.key")
    run("req", "-x509", "-new", "-key", p("ca.key"), "-subj", "/CN=tether test CA",
        "-days", "2", "-out", p("ca.crt"))  # fmt: skip
    sans = ",".join(f"IP:{ip}" for ip in [*ips, "127.0.0.1"])
    for name, cn, ext in (
        ("server", "etcd", f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth"),
        ("client", "tetherd", "extendedKeyUsage=clientAuth"),
    ):
        key(f"{name}.key")
        run("req", "-new", "-key", p(f"{name}.key"), "-subj", f"/CN={cn}", "-out", p(f"{name}.csr"))
        with open(p(f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        run("x509", "-req", "-in", p(f"{name}.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", p(f"{name}.ext"),
            "-out", p(f"{name}.crt"))  # fmt: skip
    return TLSMaterial(
        directory,
        p("ca.crt"),
        p("server.crt"),
        p("server.key"),
        p("client.crt"),
        p("client.key"),
    )


# -- the cluster ----------------------------------------------------------------------------


@dataclass
class Node:
    index: int  # 1-based
    netns: str
    ip: str
    iface: str = "eth0"


@dataclass
class Member:
    name: str
    node: Node
    data_dir: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def ip(self) -> str:
        return self.node.ip

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """`nodes` node namespaces on an underlay bridge, etcd members in the first `members`.

    Use as a context manager (or call start() and cleanup()).  What tests use:

    - nodes, members, underlay: the namespaces (node.netns, node.ip, member.name ...)
    - endpoints: "etcd://10.99.0.11:2379,..." (https members: "https://..." when tls)
    - kill_member(i) (SIGKILL), stop_member(i) (SIGTERM), start_member(i) (with its data),
      restart_member(i), pause_member(i) / resume_member(i) (SIGSTOP / SIGCONT)
    - healthy(), wait_healthy(): every running member answers /health with a leader
    - keys(prefix), delete_prefix(prefix): the keys under a prefix, read from any member
    - in_underlay(fn) / arun(coro_fn): run test code where the members can be reached
    """

    def __init__(
        self,
        nodes: int = 3,
        members: int = 3,
        *,
        tls: TLSMaterial | None = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
    ) -> None:
        if not 0 <= members <= nodes or nodes > 200:
            raise ValueError("need 0 <= members <= nodes <= 200")
        self.n_nodes = nodes
        self.n_members = members
        self.tls = tls
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.dir = tempfile.mkdtemp(prefix="tether-cluster-", dir="/tmp")
        # On tmpfs: etcd fsyncs its WAL on every write.
        self.data_root = tempfile.mkdtemp(prefix=ETCD_MARKER, dir="/dev/shm")
        self.underlay = ""
        self.bridge = "br0"
        self.nodes: list[Node] = []
        self.members: list[Member] = []
        self.token = os.path.basename(self.data_root)

    # -- building -----------------------------------------------------------------------

    def start(self, wait: float = 20) -> Cluster:
        try:
            self._build_network()
            for node in self.nodes[: self.n_members]:
                name = f"etcd{node.index}"
                self.members.append(
                    Member(
                        name,
                        node,
                        os.path.join(self.data_root, name),
                        os.path.join(self.dir, f"{name}.log"),
                    )
                )
            for m in self.members:
                self._spawn(m)
            if self.members:
                self.wait_healthy(wait)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _build_network(self) -> None:
        self.underlay = make_netns("tu")
        u = self.underlay
        sh(
            f"ip -n {u} link add {self.bridge} type bridge && "
            f"ip -n {u} addr add {UNDERLAY_IP}/24 dev {self.bridge} && "
            f"ip -n {u} link set {self.bridge} up"
        )
        for i in range(1, self.n_nodes + 1):
            node = Node(i, make_netns("tn"), f"{SUBNET}.{10 + i}")
            self.nodes.append(node)
            sh(
                f"ip link add n{i} netns {u} type veth peer name {node.iface} netns {node.netns}"
                f" && ip -n {u} link set n{i} master {self.bridge} up"
                f" && ip -n {node.netns} addr add {node.ip}/24 dev {node.iface}"
                f" && ip -n {node.netns} link set {node.iface} up"
            )

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def client_url(self, m: Member) -> str:
        return f"{self.scheme}://{m.ip}:{CLIENT_PORT}"

    @property
    def endpoints(self) -> str:
        """The --cluster-store value for this cluster."""
        return f"{'https' if self.tls else 'etcd'}://" + ",".join(
            f"{m.ip}:{CLIENT_PORT}" for m in self.members
        )

    def endpoints_from(self, i: int) -> str:
        """endpoints, starting with member i (0-based): the member a client talks to first."""
        order = self.members[i:] + self.members[:i]
        return f"{'https' if self.tls else 'etcd'}://" + ",".join(
            f"{m.ip}:{CLIENT_PORT}" for m in order
        )

    def _spawn(self, m: Member) -> None:
        initial = ",".join(f"{x.name}=http://{x.ip}:{PEER_PORT}" for x in self.members)
        cmd = [
            "nsenter",
            f"--net={NETNS_DIR}/{m.node.netns}",
            "--",
            "etcd",
            "--name", m.name,
            "--data-dir", m.data_dir,
            "--listen-client-urls", self.client_url(m),
            "--advertise-client-urls", self.client_url(m),
            "--listen-peer-urls", f"http://{m.ip}:{PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{m.ip}:{PEER_PORT}",
            "--initial-cluster", initial,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip
        if self.tls:
            cmd += [
                "--cert-file", self.tls.server_cert,
                "--key-file", self.tls.server_key,
                "--trusted-ca-file", self.tls.ca,
                "--client-cert-auth",
            ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        log = open(m.log_path, "ab")  # noqa: SIM115 (handed to etcd, closed below)
        m.proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        log.close()
        m.paused = False

    # -- members --------------------------------------------------------------------------

    def kill_member(self, i: int) -> None:
        """kill -9 member i (0-based): the crash case."""
        m = self.members[i]
        if m.proc is not None:
            if m.paused:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGCONT)
            m.proc.kill()
            m.proc.wait(10)
            m.proc = None
            m.paused = False

    def stop_member(self, i: int, timeout: float = 10) -> None:
        """A clean stop (SIGTERM): etcd closes its connections and leaves its data."""
        m = self.members[i]
        if m.proc is None:
            return
        if m.paused:
            self.resume_member(i)
        m.proc.terminate()
        try:
            m.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait(10)
        m.proc = None

    def start_member(self, i: int, wait: float = 20) -> None:
        """Start member i again with its data (it rejoins the cluster); waits until the
        cluster is healthy (when a quorum runs)."""
        m = self.members[i]
        if m.running:
            return
        self._spawn(m)
        if sum(x.running for x in self.members) > len(self.members) // 2:
            self.wait_member(i, wait)  # a quorum runs: it can serve

    def restart_member(self, i: int, wait: float = 20) -> None:
        self.stop_member(i)
        self.start_member(i, wait)

    def pause_member(self, i: int) -> None:
        """SIGSTOP: the member holds its connections but answers nothing (a hung machine)."""
        m = self.members[i]
        if m.proc is not None and not m.paused:
            m.proc.send_signal(signal.SIGSTOP)
            m.paused = True

    def resume_member(self, i: int) -> None:
        m = self.members[i]
        if m.proc is not None and m.paused:
            m.proc.send_signal(signal.SIGCONT)
            m.paused = False

    def ensure_all_running(self, wait: float = 20) -> None:
        """Resume or start every member that a test left stopped, then wait for health."""
        for i, m in enumerate(self.members):
            if m.paused:
                self.resume_member(i)
            if not m.running:
                self._spawn(m)
        self.wait_healthy(wait)

    def log(self, i: int) -> str:
        try:
            with open(self.members[i].log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- talking to members (from the underlay namespace) ---------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.tls.ca)
        ctx.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return ctx

    def _request(self, m: Member, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        url = self.client_url(m) + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
        ctx = self._ssl_context()
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return json.loads(resp.read())

    def in_underlay(self, fn: Callable[[], T], timeout: float = 120) -> T:
        return run_in_netns(self.underlay, fn, timeout)

    def arun(self, main: Callable[[], Awaitable[T]], timeout: float = 120) -> T:
        """asyncio.run(main()) in the underlay namespace: where test clients run."""
        return arun(self.underlay, main, timeout)

    def member_health(self, i: int, timeout: float = 1.0) -> bool:
        m = self.members[i]
        if not m.running or m.paused:
            return False

        def check() -> bool:
            try:
                data = self._request(m, "/health", None, timeout)
            except (OSError, ValueError, urllib.error.URLError):
                return False
            return str(data.get("health")) == "true"

        return self.in_underlay(check, timeout + 5)

    def healthy(self) -> bool:
        """Every running member is up and has a leader, and a quorum runs."""
        running = [i for i, m in enumerate(self.members) if m.running and not m.paused]
        if len(running) <= len(self.members) // 2:
            return False
        return all(self.member_health(i) for i in running)

    def wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, m in enumerate(self.members):
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(
                        f"{m.name} exited ({m.proc.returncode}):\n{self.log(i)[-3000:]}"
                    )
            if self.healthy():
                return
            time.sleep(0.05)
        logs = "\n".join(f"--- {m.name}\n{self.log(i)[-1500:]}" for i, m in enumerate(self.members))
        raise RuntimeError(f"etcd cluster not healthy after {timeout} s\n{logs}")

    def wait_member(self, i: int, timeout: float = 20) -> None:
        """Wait until member i serves (with a leader), when a quorum runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.member_health(i):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.members[i].name} not healthy after {timeout} s\n{self.log(i)[-3000:]}"
        )

    def _any_member(self, path: str, body: dict[str, Any]) -> Any:
        errors = []
        for m in self.members:
            if not m.running or m.paused:
                continue
            try:
                return self.in_underlay(lambda m=m: self._request(m, path, body, 3.0), 10)  # type: ignore[misc]
            except (OSError, ValueError) as exc:
                errors.append(f"{m.name}: {exc}")
        raise RuntimeError(f"no etcd member answered {path}: {errors}")

    def leader(self) -> int:
        """The index (0-based) of the member that leads now."""
        for i, m in enumerate(self.members):
            if not m.running or m.paused:
                continue
            try:
                st = self.in_underlay(
                    lambda m=m: self._request(m, "/v3/maintenance/status", {}, 2.0),  # type: ignore[misc]
                    10,
                )
            except (OSError, ValueError):
                continue
            if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return i
        raise RuntimeError("no member leads")

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under prefix (all keys with ""), as the store has them (prefix
        included): the leak check's view."""
        start = prefix.encode() or b"\0"
        body = {
            "key": base64.b64encode(start).decode(),
            "range_end": base64.b64encode(_prefix_end(prefix.encode())).decode(),
            "keys_only": True,
        }
        data = self._any_member("/v3/kv/range", body)
        return [base64.b64decode(kv["key"]).decode(errors="replace") for kv in data.get("kvs", [])]

    def delete_prefix(self, prefix: str) -> int:
        start = prefix.encode() or b"\0"
        body = {
            "key": base64.b64encode(start).decode(),
            "range_end": base64.b64encode(_prefix_end(prefix.encode())).decode(),
        }
        return int(self._any_member("/v3/kv/deleterange", body).get("deleted", 0))

    # -- teardown -------------------------------------------------------------------------

    def cleanup(self) -> None:
        for m in self.members:
            if m.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGCONT)
                    m.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.proc.wait(10)
                m.proc = None
        kill_stray_etcds(self.data_root)
        for node in self.nodes:
            delete_netns(node.netns)
        if self.underlay:
            delete_netns(self.underlay)
        shutil.rmtree(self.data_root, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def etcd_cluster(nodes: int = 3, members: int = 3, **kw: Any) -> Iterator[Cluster]:
    c = Cluster(nodes, members, **kw)
    c.start()
    try:
        yield c
    finally:
        c.cleanup()


def live_etcd_processes(marker: str = ETCD_MARKER) -> dict[int, str]:
    """etcd processes whose command line has `marker` (test clusters' data dirs)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z":
            continue
        if argv and os.path.basename(argv[0]) == b"etcd" and marker.encode() in b" ".join(argv):
            out[int(pid)] = b" ".join(argv).decode(errors="replace")
    return out


def kill_stray_etcds(marker: str) -> None:
    for pid in live_etcd_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def _prefix_end(prefix: bytes) -> bytes:
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"
