"""What bench_overlay.py and bench_services.py share: a tether cluster on this machine, and
probes that run inside a container's network namespace.

The cluster is the tests' (tests/cluster.py: an underlay bridge namespace, node namespaces on
it at 10.99.0.11-13, a real three-member etcd, data on /dev/shm), with a tetherd per node
started as tests/integration/test_overlay.py starts them (--cluster-store, --cluster-advertise,
--node-name nodeN, discovery.ttl=4s).  Everything lives in namespaces the bench makes; the
probes send packets only to addresses inside them (the traffic rule).

A probe is one Python process entered into a sandbox's network namespace (nsenter --net=KEY,
as `tether debug` does), reading one JSON command a line and answering one JSON line, so
that polling costs no process start per attempt:

    {"op": "reach", "ip": A, "name": N, "timeout": S}   polls ICMP echo to A and the A record
        of N at 127.0.0.11 every few ms; answers {"ping": T, "dns": T} (CLOCK_MONOTONIC,
        the same clock as the bench's time.monotonic(); null if not within S seconds)
    {"op": "gone", "names": [N...], "ips": [A...], "timeout": S}   until no N resolves to
        any A (an unknown name is forwarded upstream, which answers nothing): {"dns": T}
    {"op": "rate", "ip": A, "port": P, "seconds": S}    HTTP/1.0 GETs one after another for
        S seconds: {"ok": n, "failed": n, "seconds": s}
    {"op": "answering", "names": [N...], "want": K, "timeout": S, "exclude": [P...]}   resolve
        the names and GET every address they give until K distinct pages (each task's names
        its container) but those excluded answered: {"done": T, "seen": [...]}
    {"op": "fetch", "ip": A, "port": P}                 one GET: {"body": the page or null}

The bench's own code that must run in a namespace uses tests/cluster.run_in_netns.

TETHER_BENCH_COMMIT=REV runs everything (the daemons, the CLI, the code the bench drives and
tests/'s harness) from that commit, exported with git archive, instead of the working tree,
where others' unfinished edits may be at any moment.  It must be imported before anything
imports tether (the bench scripts import it first).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

COMMIT = os.environ.get("TETHER_BENCH_COMMIT", "")
if COMMIT:
    _repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    COMMIT = subprocess.run(
        ["git", "-C", _repo, "rev-parse", "--short=7", COMMIT],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    _export = tempfile.mkdtemp(prefix=f"tether-bench-{COMMIT}-")
    atexit.register(shutil.rmtree, _export, True)
    _archive = subprocess.run(
        ["git", "-C", _repo, "archive", COMMIT, "src", "tests"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", _export], input=_archive, check=True)
    import compileall

    compileall.compile_dir(os.path.join(_export, "src"), quiet=1)
    sys.path[0:0] = [os.path.join(_export, "src"), os.path.join(_export, "tests")]
    os.environ["PYTHONPATH"] = os.path.join(_export, "src")  # the daemons and CLI calls
    import cluster  # noqa: F401  (the export's harness, before common imports the tree's)
    import nshost  # noqa: F401

from common import PY  # noqa: E402

from cluster import Cluster  # noqa: E402
from nshost import NamespaceHost  # noqa: E402

TTL = 4  # seconds: the nodes' discovery.ttl (the tests' value; tether's default is 10)


def head() -> str:
    """The working tree's HEAD, and whether files differ from it (others' edits included)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sha = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", repo, "diff", "--quiet", "HEAD", "--", "src"], capture_output=True
    ).returncode
    return sha + (" with uncommitted changes under src/" if dirty else "")


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of xs."""
    s = sorted(xs)
    return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 2)


def summary(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "min": round(min(xs), 2),
        "p50": round(statistics.median(xs), 2),
        "p99": pct(xs, 0.99),
        "max": round(max(xs), 2),
    }


def wait_for(what: str, fn: Callable[[], object], timeout: float, step: float = 0.02) -> float:
    """Poll fn until it is true; the seconds it took.  Raises if it never is."""
    t0 = time.monotonic()
    while True:
        if fn():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


class Nodes:
    """A started cluster: etcd members and a tetherd per node (hosts[i] is node i+1)."""

    def __init__(self, n: int = 3) -> None:
        self.cluster = Cluster(nodes=n, members=min(n, 3))
        self.hosts: list[NamespaceHost] = []
        self.cluster.start()
        try:
            for i, node in enumerate(self.cluster.nodes):
                h = NamespaceHost(
                    [
                        "--cluster-store", self.cluster.endpoints,
                        "--cluster-advertise", node.ip,
                        "--node-name", f"node{i + 1}",
                        "--cluster-store-opt", f"discovery.ttl={TTL}s",
                    ],
                    name=node.netns,
                )  # fmt: skip
                self.hosts.append(h)
                h.start()
            errors: list[BaseException] = []

            def imp(h: NamespaceHost) -> None:
                try:
                    h.import_busybox()
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=imp, args=(h,)) for h in self.hosts]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            if errors:
                raise errors[0]
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        for h in self.hosts:
            h.cleanup()
        self.cluster.cleanup()

    def keep_logs(self) -> None:
        """Copy every tetherd's and etcd member's log out of the run directories the
        teardown removes (called when a bench fails, so that the failure can be read)."""
        dest = tempfile.mkdtemp(prefix="tether-bench-failed-")
        for i, h in enumerate(self.hosts):
            with contextlib.suppress(OSError):
                shutil.copy(h.log_path, os.path.join(dest, f"tetherd-node{i + 1}.log"))
        for m in self.cluster.members:
            with contextlib.suppress(OSError):
                shutil.copy(m.log_path, os.path.join(dest, f"{m.name}.log"))
        print(f"the daemons' and etcd's logs: {dest}", file=sys.stderr, flush=True)

    def netns(self, i: int) -> str:
        return self.cluster.nodes[i].netns

    def ip(self, i: int) -> str:
        return self.cluster.nodes[i].ip


def sandbox(h: NamespaceHost, container: str) -> str:
    key: str = h.api.get(f"/containers/{container}/json")["NetworkSettings"]["SandboxKey"]
    return key


def address(h: NamespaceHost, container: str, network: str) -> str:
    nets = h.api.get(f"/containers/{container}/json")["NetworkSettings"]["Networks"]
    return str(nets[network]["IPAddress"])


def in_netns_cmd(path: str, *argv: str) -> list[str]:
    """argv run in the network namespace at `path` (a sandbox key or /run/netns/NAME)."""
    return ["nsenter", f"--net={path}", "--", *argv]


PROBE = r"""
import json, os, select, socket, struct, sys, time
import dns.message, dns.rcode, dns.rdatatype

def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

ident = os.getpid() & 0xFFFF

def echo(seq):
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"tether-bench"
    return struct.pack("!BBHHH", 8, 0, checksum(hdr), ident, seq) + b"tether-bench"

def resolve(name, timeout=0.2):
    q = dns.message.make_query(name, "A")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q.to_wire(), ("127.0.0.11", 53))
        r = dns.message.from_wire(s.recv(4096))
    except (OSError, dns.exception.DNSException):
        return None
    finally:
        s.close()
    if r.rcode() == dns.rcode.NXDOMAIN:
        return []
    return [rd.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]

def reach(ip, name, timeout, step=0.004, dns_every=0.01):
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got = {"ping": None, "dns": None}
    deadline = time.monotonic() + timeout
    seq = 0
    next_dns = 0.0
    while time.monotonic() < deadline and (got["ping"] is None or got["dns"] is None):
        if got["ping"] is None:
            seq = (seq + 1) & 0xFFFF
            try:
                icmp.sendto(echo(seq), (ip, 0))
            except OSError:
                pass
        if got["dns"] is None and time.monotonic() >= next_dns:
            next_dns = time.monotonic() + dns_every
            udp.sendto(dns.message.make_query(name, "A").to_wire(), ("127.0.0.11", 53))
        end = time.monotonic() + step
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([icmp, udp], [], [], left)
            for s in ready:
                data, peer = s.recvfrom(4096)
                now = time.monotonic()
                if s is icmp:
                    ihl = (data[0] & 15) * 4
                    typ, _c, _s, rid, _q = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                    if typ == 0 and rid == ident and peer[0] == ip and got["ping"] is None:
                        got["ping"] = now
                else:
                    try:
                        r = dns.message.from_wire(data)
                    except Exception:
                        continue
                    for rrset in r.answer:
                        hit = any(getattr(rd, "address", "") == ip for rd in rrset)
                        if hit and got["dns"] is None:
                            got["dns"] = now
    icmp.close(); udp.close()
    return got

def gone(names, ips, timeout):
    # A name tether no longer knows is forwarded upstream (here: an address nothing routes
    # to), so "gone" is any answer without the addresses, or none within 0.2 s.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(not set(resolve(n) or []) & set(ips) for n in names):
            return {"dns": time.monotonic()}
        time.sleep(0.02)
    return {"dns": None}

def fetch(ip, port, timeout=2.0):
    # The body of GET /, or None if the answer is not a 200.
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not (buf.startswith(b"HTTP/1.") and b" 200 " in buf[:20]):
        return None
    return buf.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()

def get(ip, port, timeout=2.0):
    return fetch(ip, port, timeout) is not None

def rate(ip, port, seconds):
    ok = failed = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        try:
            if get(ip, port):
                ok += 1
            else:
                failed += 1
        except OSError:
            failed += 1
    return {"ok": ok, "failed": failed, "seconds": time.monotonic() - t0}

def answering(names, want, timeout, exclude=()):
    # Counted by what answers (each task's page names its container), not by address: a
    # dead task's address may be a new task's a moment later.
    deadline = time.monotonic() + timeout
    seen = set()
    exclude = set(exclude)
    while time.monotonic() < deadline and len(seen) < want:
        for n in names:
            for ip in resolve(n) or []:
                try:
                    body = fetch(ip, 80, 0.3)
                except OSError:
                    continue
                if body is not None and body not in exclude:
                    seen.add(body)
        if len(seen) < want:
            time.sleep(0.005)
    return {"done": time.monotonic() if len(seen) >= want else None, "seen": sorted(seen)}

for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "reach":
        out = reach(cmd["ip"], cmd["name"], cmd["timeout"])
    elif op == "gone":
        out = gone(cmd["names"], cmd["ips"], cmd["timeout"])
    elif op == "rate":
        out = rate(cmd["ip"], cmd["port"], cmd["seconds"])
    elif op == "fetch":
        try:
            out = {"body": fetch(cmd["ip"], cmd["port"])}
        except OSError:
            out = {"body": None}
    elif op == "answering":
        out = answering(cmd["names"], cmd["want"], cmd["timeout"], cmd.get("exclude", ()))
    else:
        out = {"error": op}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"""


class Probe:
    """PROBE running in the network namespace at `path`; ask() sends one command and waits
    for its answer (bounded by the command's own timeout, plus a margin)."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen(
            in_netns_cmd(path, PY, "-c", PROBE),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        box: dict[str, str] = {}

        def read() -> None:
            assert self.proc.stdout is not None
            box["line"] = self.proc.stdout.readline()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if "line" not in box or not box["line"]:
            raise RuntimeError(f"probe gave no answer within {timeout} s")
        data: dict[str, Any] = json.loads(box["line"])
        return data

    def ask(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.receive(float(cmd.get("timeout", cmd.get("seconds", 10))) + 15)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def sh_in(netns: str, cmd: str, timeout: float = 30) -> str:
    """A shell command in /run/netns/NAME (nsenter: no private mount namespace)."""
    r = subprocess.run(
        in_netns_cmd(f"/run/netns/{netns}", "sh", "-c", cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} in {netns}: {r.stderr.strip()}")
    return r.stdout


def log_lines_after(h: NamespaceHost, mark: int, needle: str) -> list[str]:
    """Lines of the daemon's log past byte `mark` that contain `needle`."""
    with open(h.log_path, "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if needle in line]


def log_size(h: NamespaceHost) -> int:
    return os.path.getsize(h.log_path)


def cli(launcher: str, h: NamespaceHost, *args: str, timeout: float = 120) -> str:
    """`tether ARGS` against h's daemon through the fast launcher; its stdout."""
    r = subprocess.run(
        [launcher, "-H", f"unix://{h.socket}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise RuntimeError(f"tether {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def flush() -> None:
    sys.stdout.flush()
