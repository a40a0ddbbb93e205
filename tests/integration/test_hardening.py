"""Hardening, tried as an attacker would: loopback from the LAN, internal networks, the state on
disk, exit codes with the shim gone, published ports with tetherd gone (docs/security.md)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from nshost import NamespaceHost, sh

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
RELAY = "tether/firewall/relay.py"


def get(netns: str, url: str, timeout: int = 2) -> str:
    """HTTP GET from inside a namespace (by name, or a path for nsenter); '' when it fails."""
    enter = f"nsenter --net={netns}" if netns.startswith("/") else f"ip netns exec {netns}"
    r = sh(f"{enter} timeout {timeout} busybox wget -qO- '{url}'", check=False)
    return r.stdout if r.returncode == 0 else ""


def serve_on_host(h: NamespaceHost, addr: str, port: int, text: str) -> None:
    """A web server of the host itself (in the namespace-host), ended with the namespace."""
    d = os.path.join(h.dir, f"www-{port}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "index.html"), "w") as f:
        f.write(text + "\n")
    h.sh(f"busybox httpd -p {addr}:{port} -h {d}")


def stop_host_servers(h: NamespaceHost) -> None:
    h.sh(f"pkill -f 'busybox httpd -p .* -h {h.dir}/www-'", check=False)


def route_loopback_via(netns_cmd: str, gateway: str, dev: str) -> None:
    """What an attacker next to the host does: send 127.0.0.0/8 to the host instead of to its
    own lo (its lo loses 127.0.0.1, and route_localnet lets it route loopback addresses)."""
    sh(
        f"{netns_cmd} sh -c 'ip addr del 127.0.0.1/8 dev lo; "
        f"sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.{dev}.route_localnet=1; "
        f"ip route add 127.0.0.0/8 via {gateway} dev {dev}'"
    )


def relay_pids(h: NamespaceHost) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if RELAY.encode() in cmdline and h.exec_root.encode() in cmdline:
            out.append(int(pid))
    return out


def wait_for(check: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def bind_fails(
    h: NamespaceHost, family: str, addr: str, port: int, kind: str = "SOCK_STREAM"
) -> bool:
    """Whether a host process (in the namespace-host) cannot take addr:port, even asking for
    SO_REUSEADDR as servers do."""
    code = (
        f"import socket,sys; s=socket.socket(socket.{family}, socket.{kind}); "
        f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"try:\n    s.bind(({addr!r}, {port}))\nexcept OSError:\n    sys.exit(3)"
    )
    r = subprocess.run(
        ["ip", "netns", "exec", h.netns, sys.executable, "-c", code],
        capture_output=True,
        timeout=10,
    )
    return r.returncode == 3


# -- 127.0.0.1 stays local -----------------------------------------------------------------------


def test_loopback_ports_and_services_are_reachable_from_the_host_only(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()
    h.ok(
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1:8080:80",
        "-p",
        "[::1]:8081:80",
        "busybox",
        *WEB,
    )
    h.ok("run", "-d", "--name", "intruder", "busybox", "sleep", "600")
    hello = f"hello-{h.api.get('/containers/web/json')['Id'][:12]}\n"
    serve_on_host(h, "127.0.0.1", 8099, "host-only")
    try:
        # The host itself: both its loopback ports and its loopback service answer.
        assert get(h.netns, "http://127.0.0.1:8080/") == hello
        assert get(h.netns, "http://[::1]:8081/") == hello
        assert get(h.netns, "http://127.0.0.1:8099/") == "host-only\n"
        # A LAN neighbour that routes 127.0.0.0/8 through the host (CVE-2020-8558): nothing,
        # even with route_localnet on the host's LAN interface (as kube-proxy sets it).
        route_loopback_via(f"ip netns exec {lan}", "10.250.0.1", "lan0")
        h.sh("sysctl -qw net.ipv4.conf.lan0.route_localnet=1")
        assert get(lan, "http://127.0.0.1:8080/") == ""
        assert get(lan, "http://127.0.0.1:8099/") == ""
        # ...while the same neighbour still reaches what is published for it.
        h.ok("run", "-d", "--name", "pub", "-p", "8082:80", "busybox", *WEB)
        assert get(lan, "http://10.250.0.1:8082/").startswith("hello-")
        # A container doing the same (it would need NET_ADMIN; done from outside here).
        key = h.api.get("/containers/intruder/json")["NetworkSettings"]["SandboxKey"]
        gw = h.api.get("/containers/intruder/json")["NetworkSettings"]["Gateway"]
        route_loopback_via(f"nsenter --net={key}", gw, "eth0")
        assert get(key, "http://127.0.0.1:8080/") == ""
        assert get(key, "http://127.0.0.1:8099/") == ""
        # The host still does (hairpin from the host's own loopback).
        assert get(h.netns, "http://127.0.0.1:8080/") == hello
        assert "127.0.0.0/8 drop" in h.sh("nft list chain inet tether guard").stdout
    finally:
        stop_host_servers(h)


# -- internal networks -------------------------------------------------------------------------


def test_internal_network_has_no_default_route_and_reaches_only_its_gateway(
    bhost: NamespaceHost,
) -> None:
    h = bhost
    lan = h.add_lan()
    h.ok("network", "create", "--internal", "--subnet", "10.77.0.0/24", "back")
    h.ok("network", "create", "--subnet", "10.78.0.0/24", "front")
    h.ok("run", "-d", "--name", "db", "--network", "back", "busybox", *WEB)
    serve_on_host(h, "0.0.0.0", 8090, "hello-host")
    sh(
        f"ip netns exec {lan} sh -c 'mkdir -p /tmp/lanwww-{lan} && echo hello-lan > /tmp/lanwww-{lan}/index.html'"
    )
    sh(f"ip netns exec {lan} busybox httpd -p 80 -h /tmp/lanwww-{lan}")
    try:
        # No default route (Docker 25+): a connect beyond the subnet fails at once.
        routes = h.ok("exec", "db", "ip", "route")
        assert "default" not in routes and "10.77.0.0/24 dev eth0" in routes, routes
        r = h.cli("exec", "db", "wget", "-qO-", "http://10.250.0.2/")
        assert r.returncode != 0 and "Network is unreachable" in r.stderr, r.stderr
        # The host is reachable on the gateway address of the network's own bridge only.
        key = h.api.get("/containers/db/json")["NetworkSettings"]["SandboxKey"]
        assert get(key, "http://10.77.0.1:8090/") == "hello-host\n"
        # Even with a default route put back (a container with NET_ADMIN could), neither the
        # host's other addresses nor anything beyond the host is reachable.
        sh(f"nsenter --net={key} ip route add default via 10.77.0.1")
        assert get(key, "http://10.77.0.1:8090/") == "hello-host\n"
        assert get(key, "http://10.250.0.1:8090/") == ""  # the host's LAN address
        assert get(key, "http://10.78.0.1:8090/") == ""  # another network's gateway
        assert get(key, "http://10.250.0.2/") == ""  # the LAN
        # The host reaches into the internal network (replies come back).
        assert get(h.netns, f"http://{h.ip_of('db', 'back')}/").startswith("hello-")
        # A container on an internal and a normal network gets its route from the normal one,
        # whichever it joined first, and loses it with it.
        h.ok("run", "-d", "--name", "app", "--network", "back", "busybox", "sleep", "600")
        assert "default" not in h.ok("exec", "app", "ip", "route")
        h.ok("network", "connect", "front", "app")
        assert "default via 10.78.0.1 dev eth1" in h.ok("exec", "app", "ip", "route")
        app_key = h.api.get("/containers/app/json")["NetworkSettings"]["SandboxKey"]
        assert get(app_key, "http://10.250.0.2/") == "hello-lan\n"
        h.ok("network", "disconnect", "front", "app")
        assert "default" not in h.ok("exec", "app", "ip", "route")
        h.ok("run", "-d", "--name", "app2", "--network", "front", "busybox", "sleep", "600")
        h.ok("network", "connect", "back", "app2")
        assert "default via 10.78.0.1 dev eth0" in h.ok("exec", "app2", "ip", "route")
    finally:
        stop_host_servers(h)
        sh(f"ip netns exec {lan} pkill -f 'httpd -p 80 -h /tmp/lanwww-{lan}'", check=False)
        sh(f"rm -rf /tmp/lanwww-{lan}", check=False)


# -- state and secrets -----------------------------------------------------------------------


def as_nobody(cmd: str) -> subprocess.CompletedProcess[str]:
    return sh(f"setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c {cmd!r}", check=False)


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_state_is_readable_by_root_only(bhost: NamespaceHost) -> None:
    h = bhost
    # Where a distribution puts --root (/var/lib) anyone may look in; the test's temporary
    # directory may not, which would hide the modes under it.
    os.chmod(h.dir, 0o755)
    secret = "hunter2-" + os.urandom(4).hex()
    cid = h.ok(
        "run",
        "-d",
        "--name",
        "sec",
        "-e",
        f"SECRET={secret}",
        "busybox",
        "sh",
        "-c",
        "echo started; exec sleep 600",
    ).strip()
    db = os.path.join(h.root, "tether.db")
    cdir = os.path.join(h.root, "containers", cid)
    assert wait_for(lambda: os.path.exists(db + "-wal"))
    r = as_nobody(f"cat {db}")
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = as_nobody(f"grep -rl {secret} {h.dir}")
    assert r.returncode != 0 and secret not in r.stdout, r
    assert mode(h.root) == 0o700
    for f in (db, db + "-wal", db + "-shm", os.path.join(cdir, "container.log")):
        assert mode(f) == 0o600, (f, oct(mode(f)))
    assert mode(os.path.join(h.root, "containers")) == 0o700 and mode(cdir) == 0o700
    # The files bound into the container stay readable inside it (private by their directory).
    assert secret in h.ok("exec", "sec", "env")
    assert "127.0.0.1\tlocalhost" in h.ok("exec", "sec", "cat", "/etc/hosts")
    assert h.ok("exec", "sec", "cat", "/etc/resolv.conf")
    assert h.ok("logs", "sec") == "started\n"
    h.ok("stop", "-t", "0", "sec")
    assert mode(os.path.join(cdir, "exit")) == 0o600
    # State left wide by an earlier version is tightened when the daemon starts.
    h.stop()
    for path, m in (
        (h.root, 0o755),
        (db, 0o644),
        (cdir, 0o755),
        (os.path.join(cdir, "exit"), 0o644),
    ):
        os.chmod(path, m)
    h.start()
    assert mode(h.root) == 0o700 and mode(db) == 0o600 and mode(cdir) == 0o700
    assert mode(os.path.join(cdir, "exit")) == 0o600
    assert as_nobody(f"cat {db}").returncode != 0
    # The API socket keeps its mode: root and its group.
    assert mode(h.socket) == 0o660


def proc_file(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def pids_whose(name: str, needle: str) -> set[int]:
    """As root: every process whose /proc/PID/<name> holds needle."""
    return {
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and needle.encode() in proc_file(int(p), name)
    }


def nobody_grep(*needles: str) -> list[str]:
    """The /proc/PID/cmdline and environ files that user nobody can read and that hold one of
    the needles (given on stdin: the scanner's own command line stays clean)."""
    scan = subprocess.run(
        "setpriv --reuid=nobody --regid=nogroup --clear-groups "
        "grep -l -s -a -F -f - /proc/[0-9]*/cmdline /proc/[0-9]*/environ",
        shell=True,
        input="".join(n + "\n" for n in needles),
        capture_output=True,
        text=True,
        timeout=30,
    )
    # 2: some files were unreadable (root's environments), which is the point.
    assert scan.returncode in (0, 1, 2) and scan.stderr == "", scan
    return scan.stdout.split()


def printenv(h: NamespaceHost, container: str, name: str, *exec_args: str) -> str:
    return h.ok("exec", *exec_args, container, "sh", "-c", f'printf %s "${name}"')


def test_environment_is_on_no_command_line(bhost: NamespaceHost) -> None:
    h = bhost
    tag = os.urandom(4).hex()
    secret, other = f"s3cr3t-value-{tag}", f"0th3r-s3cr3t-{tag}"
    h.ok("run", "-d", "--name", "envs", "-e", f"TETHER_SECRET={secret}", "busybox", "sleep", "600")
    h.ok("exec", "-d", "-e", f"OTHER_SECRET={other}", "envs", "sleep", "601")
    pid = h.api.get("/containers/envs/json")["State"]["Pid"]
    run_shim = shim_of(pid)
    assert proc_file(run_shim, "cmdline").split(b"\0")[1] == b"run"

    def exec_shims() -> list[int]:
        marker = f"\0exec\0--pid\0{pid}\0".encode()
        return [
            p for p in pids_whose("cmdline", "tether-shim") if marker in proc_file(p, "cmdline")
        ]

    assert wait_for(lambda: len(exec_shims()) == 1 and bool(pids_whose("environ", other)))
    exec_shim = exec_shims()[0]
    container_ns = os.readlink(f"/proc/{pid}/ns/pid")

    # What the user `nobody` can read: every command line (the shims' among them) and its own
    # processes' environments; the values are in none of them.
    shims = nobody_grep("tether-shim")
    assert f"/proc/{run_shim}/cmdline" in shims and f"/proc/{exec_shim}/cmdline" in shims, shims
    assert as_nobody(f"cat /proc/{run_shim}/environ").returncode != 0
    assert nobody_grep(secret, other) == []

    # Only the container's own processes hold the values, in their environment: not the
    # shims (command line or environment), not tetherd, not anything else on the machine.
    assert pids_whose("cmdline", secret) == set() and pids_whose("cmdline", other) == set()
    holders = pids_whose("environ", secret) | pids_whose("environ", other)
    assert pid in holders and run_shim not in holders and exec_shim not in holders
    for p in holders:
        assert os.readlink(f"/proc/{p}/ns/pid") == container_ns, (p, proc_file(p, "cmdline"))
    assert pids_whose("environ", other) <= holders - {pid}  # the exec'd sleep's
    # The descriptor the environment came through is closed, in tetherd, the shims and the
    # container.
    assert h.proc is not None and b"tether.daemon.main" in proc_file(h.proc.pid, "cmdline")
    for p in [h.proc.pid, run_shim, exec_shim, *holders]:
        fds = [os.readlink(f"/proc/{p}/fd/{fd}") for fd in os.listdir(f"/proc/{p}/fd")]
        assert not [f for f in fds if "memfd:" in f], (p, fds)

    # The container still gets its environment, and exec its own on top.
    assert f"TETHER_SECRET={secret}\n" in h.ok("exec", "envs", "env")
    assert printenv(h, "envs", "OTHER_SECRET", "-e", f"OTHER_SECRET={other}") == other


def test_environment_reaches_the_container_unchanged(bhost: NamespaceHost) -> None:
    h = bhost
    tricky = {"SPACES": "a b  c", "EQ": "x=y=z", "NL": "line1\nline2", "EMPTY": "", "U": "é€"}
    many = {f"V{i}": str(i) for i in range(300)}  # more than the shim's old 256 --env slots
    big = "b" * 100_000  # one value near the kernel's 128 KiB limit for a single string
    args = [f"-e={k}={v}" for k, v in {**tricky, **many, "BIG": big}.items()]
    h.ok("run", "-d", "--name", "envs", *args, "busybox", "sleep", "600")
    for k, v in tricky.items():
        assert printenv(h, "envs", k) == v, k
    assert printenv(h, "envs", "V299") == "299"
    assert printenv(h, "envs", "BIG") == big
    # exec's own variables replace the container's of the same name, as in Docker.
    out = h.ok(
        "exec", "-e", "NL=other\nvalue", "-e", "NEW=1", "envs", "sh", "-c", 'echo "$NL/$NEW/$V7"'
    )
    assert out == "other\nvalue/1/7\n"


# -- exit codes with the shim gone -----------------------------------------------------------


def shim_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_exit_code_of_a_container_killed_after_its_shim_died(bhost: NamespaceHost) -> None:
    h = bhost
    # The shim is killed while tetherd runs; then the container's pid 1, from outside tether.
    h.ok("run", "-d", "--name", "ca", "busybox", "sleep", "600")
    pid = h.api.get("/containers/ca/json")["State"]["Pid"]
    os.kill(shim_of(pid), signal.SIGKILL)
    time.sleep(0.3)
    assert h.api.get("/containers/ca/json")["State"]["Running"]
    os.kill(pid, signal.SIGKILL)
    assert h.ok("wait", "ca").strip() == "137"
    state = h.api.get("/containers/ca/json")["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 137, "")
    # The shim is killed while tetherd is down; the restarted tetherd kills the container.
    for name in ("cb", "cc"):
        h.ok("run", "-d", "--name", name, "busybox", "sleep", "600")
    shims = [shim_of(h.api.get(f"/containers/{n}/json")["State"]["Pid"]) for n in ("cb", "cc")]
    h.kill()
    for shim in shims:
        os.kill(shim, signal.SIGKILL)
    h.start()
    assert h.api.get("/containers/cb/json")["State"]["Running"]
    h.ok("kill", "cb")
    assert h.ok("wait", "cb").strip() == "137"
    h.ok("stop", "-t", "1", "cc")  # sleep ignores SIGTERM as a pid 1: SIGKILL after 1 s
    assert h.api.get("/containers/cc/json")["State"]["ExitCode"] == 137
    # A container whose shim lives reports its own code as ever.
    h.ok("run", "-d", "--name", "cd", "busybox", "sh", "-c", "exit 7")
    assert h.ok("wait", "cd").strip() == "7"


# -- published ports that outlive tetherd -----------------------------------------------------


def test_ipv6_ports_outlive_tetherd_and_the_relay_is_adopted(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "web", "-p", "8080:80", "-p", "5353:53/udp", "busybox", *WEB)
    hello = f"hello-{h.api.get('/containers/web/json')['Id'][:12]}\n"
    assert get(h.netns, "http://[::1]:8080/") == hello
    (relay,) = relay_pids(h)
    h.kill()
    # tetherd is gone: the relay still serves the IPv6 port and holds every published port.
    assert get(h.netns, "http://[::1]:8080/") == hello
    assert get(h.netns, "http://127.0.0.1:8080/") == hello  # (kernel NAT, as ever)
    assert bind_fails(h, "AF_INET6", "::", 8080) and bind_fails(h, "AF_INET", "0.0.0.0", 8080)
    assert bind_fails(h, "AF_INET6", "::", 5353, "SOCK_DGRAM")
    assert bind_fails(h, "AF_INET", "0.0.0.0", 5353, "SOCK_DGRAM")
    h.start()
    assert relay_pids(h) == [relay]  # adopted, not started again
    assert get(h.netns, "http://[::1]:8080/") == hello
    h.ok("run", "-d", "--name", "web2", "-p", "8081:80", "busybox", *WEB)
    assert get(h.netns, "http://[::1]:8081/").startswith("hello-")
    assert relay_pids(h) == [relay]
    # A clean stop leaves it running too (live restore), and the next daemon adopts it.
    h.restart()
    assert relay_pids(h) == [relay] and get(h.netns, "http://[::1]:8081/").startswith("hello-")
    # The relay dies: tetherd starts another and hands it every port again.
    os.kill(relay, signal.SIGKILL)
    assert wait_for(lambda: relay_pids(h) not in ([], [relay]))
    assert wait_for(lambda: get(h.netns, "http://[::1]:8080/") == hello)
    assert bind_fails(h, "AF_INET6", "::", 8081)
    # The last port goes: so does the relay.
    h.ok("rm", "-f", "web", "web2")
    assert wait_for(lambda: relay_pids(h) == [], 15)
    assert wait_for(lambda: not os.path.exists(os.path.join(h.exec_root, "relay.sock")))
    assert not bind_fails(h, "AF_INET6", "::", 8080)


def test_relay_memory_and_many_connections(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "web", "-p", "[::1]:8080:80", "busybox", *WEB)
    (relay,) = relay_pids(h)
    # 200 connections in a row and 20 at once, all answered; nothing held afterwards.
    code = (
        "import socket, concurrent.futures as cf\n"
        "def one(_):\n"
        "    s = socket.create_connection(('::1', 8080), timeout=5)\n"
        "    s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); data = b''\n"
        "    while chunk := s.recv(65536): data += chunk\n"
        "    s.close(); return b'hello-' in data\n"
        "with cf.ThreadPoolExecutor(20) as ex: ok = sum(ex.map(one, range(200)))\n"
        "print(ok)\n"
    )
    r = subprocess.run(
        ["ip", "netns", "exec", h.netns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout.strip() == "200", r.stderr
    time.sleep(0.5)
    fds = os.listdir(f"/proc/{relay}/fd")
    assert len(fds) < 20, fds  # the listening sockets and the control socket, no leftovers
    with open(f"/proc/{relay}/status") as f:
        rss_kb = int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    assert rss_kb < 32 * 1024, rss_kb
