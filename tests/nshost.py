"""Namespace-hosts: one network namespace + one tetherd per test, as if each were a machine.

The daemon is started with `nsenter --net=...` rather than `ip netns exec`: the latter also
gives the daemon a private mount namespace, so the netns files a daemon bind-mounts would
vanish for the test (and for a restarted daemon).  With nsenter only the network differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from tether.client import ApiError, Client

PYTHON = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
NETNS_DIR = "/run/netns"


def sh(cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, shell=True, check=check, capture_output=True, text=True, timeout=timeout
    )


_BUSYBOX_TAR: str | None = None


def busybox_tar() -> str:
    """A busybox rootfs tarball, built once per test session."""
    global _BUSYBOX_TAR
    if _BUSYBOX_TAR is None or not os.path.exists(_BUSYBOX_TAR):
        from tether.runtime.busybox import build

        path = os.path.join(tempfile.mkdtemp(prefix="tether-busybox-"), "busybox.tar")
        build(path)
        _BUSYBOX_TAR = path
    return _BUSYBOX_TAR


def make_netns(prefix: str = "tt") -> str:
    name = f"{prefix}-{secrets.token_hex(4)}"
    sh(f"ip netns add {name}")
    sh(f"ip netns exec {name} ip link set lo up")
    return name


def delete_netns(name: str) -> None:
    sh(f"ip netns del {name}", check=False)


class NamespaceHost:
    """A network namespace with its own tetherd, root and exec-root."""

    def __init__(
        self,
        extra_args: list[str] | None = None,
        name: str | None = None,
        block_registries: bool = True,
    ) -> None:
        self.netns = name or make_netns()
        self.owns_netns = name is None
        self.dir = tempfile.mkdtemp(prefix=f"tether-{self.netns}-", dir="/tmp")
        self.root = os.path.join(self.dir, "root")
        self._shim_cgroups: set[str] = set()  # cgroups of shims killed at cleanup
        self.exec_root = os.path.join(self.dir, "run")
        self.socket = os.path.join(self.exec_root, "tether.sock")
        self.log_path = os.path.join(self.dir, "tetherd.log")
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = Client(self.socket, timeout=60)
        self.lan_peers: list[str] = []
        # False only for a tetherd of an older commit (bench/common.py's trees), which has no
        # --block-registry and never pulls.
        self.block_registries = block_registries

    # -- daemon ------------------------------------------------------------------------------

    def start(self, wait: float = 30) -> None:
        # Containers must never learn the machine's own resolver (the traffic rule): this
        # host's "upstream" is an address nothing routes to unless a test puts a server there.
        resolv = os.path.join(self.dir, "resolv.conf")
        if not os.path.exists(resolv):
            with open(resolv, "w") as f:
                f.write("nameserver 192.0.2.53\n")
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the daemon, closed below)
        cmd = [
            "nsenter",
            f"--net={NETNS_DIR}/{self.netns}",
            "--",
            PYTHON,
            "-m",
            "tether.daemon.main",
            "--root",
            self.root,
            "--exec-root",
            self.exec_root,
            "--debug",
            "--resolv-conf",
            resolv,
            # Nothing in the tests reaches past the machine: a name with no registry (nginx)
            # is refused at once instead of being looked for on Docker Hub.
            *(["--block-registry", "docker.io"] if self.block_registries else []),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tetherd exited ({self.proc.returncode}):\n{self.log()}")
            if Client(self.socket, timeout=2).ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"tetherd did not start:\n{self.log()}")

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def kill(self) -> None:
        """kill -9: the crash case."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- using it ----------------------------------------------------------------------------

    def cli(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        full_env["TETHER_HOST"] = f"unix://{self.socket}"
        if env:
            full_env.update(env)
        return subprocess.run(
            [PYTHON, "-m", "tether.cli.main", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env=full_env,
        )

    def ok(self, *args: str, **kw: Any) -> str:
        r = self.cli(*args, **kw)
        assert r.returncode == 0, (
            f"tether {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )
        return r.stdout

    def sh(
        self, cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """A shell command inside this host's network namespace."""
        return sh(f"ip netns exec {self.netns} sh -c {_quote(cmd)}", check=check, timeout=timeout)

    def import_busybox(self) -> None:
        self.ok("image", "import", "--change", 'CMD ["sh"]', busybox_tar(), "busybox")

    def in_sandbox(
        self, container: str, cmd: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """A host-side command (ip, nc, dig...) inside a container's network namespace."""
        key = self.api.get(f"/containers/{container}/json")["NetworkSettings"]["SandboxKey"]
        return sh(f"nsenter --net={key} sh -c {_quote(cmd)}", check=check)

    def netns_files(self) -> list[str]:
        d = os.path.join(self.exec_root, "netns")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def allocations(self) -> list[tuple[str, str, str]]:
        import sqlite3

        db = sqlite3.connect(f"file:{os.path.join(self.root, 'tether.db')}?mode=ro", uri=True)
        try:
            return sorted(db.execute("SELECT network_id, address, owner FROM addresses"))
        finally:
            db.close()

    def veths(self) -> list[str]:
        return sorted(n for n in self.links() if n.startswith("tv"))

    def ip_of(self, container: str, network: str) -> str:
        nets = self.api.get(f"/containers/{container}/json")["NetworkSettings"]["Networks"]
        return str(nets[network]["IPAddress"])

    def links(self) -> dict[str, dict[str, Any]]:
        out = self.sh("ip -j -d addr show").stdout
        return {link["ifname"]: link for link in json.loads(out)}

    def inspect_network(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.api.get(f"/networks/{name}")
        return data

    # -- cleanup -----------------------------------------------------------------------------

    def _kill_leftover_shims(self) -> None:
        """Containers of this host still running (a test failed while its daemon was down):
        kill them, as `rm -f` would have, so one failure does not leak into the next test.
        The same for its port relay, which holds published ports while no daemon runs."""
        marker = self.dir.encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            # The port relay and tether-crypt outlive a daemon on purpose (live restore).
            if (
                b"tether/firewall/relay.py" in cmdline or b"tether.crypt.datapath" in cmdline
            ) and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
                continue
            if b"tether-shim" in cmdline and marker in cmdline:
                args = cmdline.split(b"\0")
                if b"--cgroup" in args[:-1]:
                    # Its container may be gone from the store already (run --rm): the
                    # cgroup is found by the shim's own argument, not by a container dir.
                    cg = args[args.index(b"--cgroup") + 1].decode()
                    self._shim_cgroups.add(os.path.basename(cg))
                try:
                    with open(f"/proc/{pid}/task/{pid}/children") as f:
                        children = [int(c) for c in f.read().split()]
                except OSError:
                    children = []
                for victim in [*children, int(pid)]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim, signal.SIGKILL)

    def _remove_leftover_cgroups(self) -> None:
        """The cgroups of this host's containers whose shims were killed (the shim removes
        its container's when it ends; a killed one cannot)."""
        from tether.runtime import cgroups

        cdir = os.path.join(self.root, "containers")
        ids = set(os.listdir(cdir) if os.path.isdir(cdir) else []) | self._shim_cgroups
        deadline = time.monotonic() + 5
        for cid in ids:
            while cgroups.existing(cid) and time.monotonic() < deadline:
                cgroups.remove(cid)  # busy until the killed processes are gone
                if cgroups.existing(cid):
                    time.sleep(0.02)

    def add_lan(self, host_ip: str = "10.250.0.1", peer_ip: str = "10.250.0.2") -> str:
        """Another machine on this host's LAN: a namespace joined by a veth, default route
        via this host.  Returns its netns name (deleted at cleanup)."""
        peer = make_netns("tl")
        self.lan_peers.append(peer)
        sh(f"ip link add lan0 netns {self.netns} type veth peer name lan0 netns {peer}")
        self.sh(f"ip addr add {host_ip}/24 dev lan0 && ip link set lan0 up")
        sh(
            f"ip netns exec {peer} sh -c 'ip addr add {peer_ip}/24 dev lan0 && ip link set lan0 up && ip route add default via {host_ip}'"
        )
        return peer

    def kernel_snapshot(self) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
        """(host veths, netns files, address allocations): what a refused command must not change."""
        return self.veths(), self.netns_files(), self.allocations()

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                for c in self.api.get("/containers/json", {"all": 1}) or []:
                    with contextlib.suppress(ApiError):
                        self.api.delete(f"/containers/{c['Id']}", {"force": 1})
            self.stop()
        self._kill_leftover_shims()
        self._remove_leftover_cgroups()
        netns_dir = os.path.join(self.exec_root, "netns")
        if os.path.isdir(netns_dir):
            for f in os.listdir(netns_dir):
                sh(f"umount -l {netns_dir}/{f}", check=False)
            sh(f"umount -l {netns_dir}", check=False)
        for peer in self.lan_peers:
            delete_netns(peer)
        if self.owns_netns:
            delete_netns(self.netns)
        shutil.rmtree(self.dir, ignore_errors=True)


class Upstream:
    """tests/dnsupstream.py on an address of the namespace-host (never a real resolver)."""

    def __init__(self, h: NamespaceHost, addr: str = "198.18.53.53") -> None:
        self.log = os.path.join(h.dir, f"upstream-{addr}.log")
        if not addr.startswith("127."):
            h.sh(f"ip addr add {addr}/32 dev lo")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                h.netns,
                sys.executable,
                os.path.join(HERE, "dnsupstream.py"),
                addr,
                "53",
                self.log,
                "240",
            ]
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.log) and time.monotonic() < deadline:
            time.sleep(0.05)

    def lines(self) -> list[str]:
        with open(self.log) as f:
            return f.read().splitlines()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


@contextlib.contextmanager
def namespace_host(extra_args: list[str] | None = None) -> Iterator[NamespaceHost]:
    host = NamespaceHost(extra_args)
    try:
        host.start()
        yield host
    except BaseException:
        sys.stderr.write(f"\n--- tetherd log ({host.netns}) ---\n{host.log()[-6000:]}\n")
        raise
    finally:
        host.cleanup()
