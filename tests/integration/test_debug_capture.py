"""tether debug and tether capture: the host's tools in a container's network, packets on disk."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from nshost import PYTHON, NamespaceHost, sh

pytestmark = pytest.mark.integration


def mounts(h: NamespaceHost) -> list[str]:
    """This host's mounts, and any on the paths debug mounts over in its own namespace."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted(
        p for p in points if p.startswith(h.dir) or p in ("/etc/resolv.conf", "/etc/hosts", "/sys")
    )


def addrs(text: str) -> dict[str, list[str]]:
    """`ip -br addr` as {interface: [addresses]} (the @ifN peer suffix dropped)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if parts:
            out[parts[0].split("@")[0]] = sorted(parts[2:])
    return out


@contextlib.contextmanager
def capturing(h: NamespaceHost, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`tether capture ARGS` against h's daemon, its stderr piped to the test; killed if it
    still runs at the end."""
    env = dict(os.environ, TETHER_HOST=f"unix://{h.socket}")
    proc = subprocess.Popen(
        [PYTHON, "-m", "tether.cli.main", "capture", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_debug_runs_host_tools_in_the_containers_network_and_leaves_nothing(
    bhost: NamespaceHost,
) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.61.0.0/24", "dbg")
    h.ok("run", "-d", "--name", "web", "--network", "dbg", "busybox", "httpd", "-f", "-p", "80")
    h.ok("run", "-d", "--name", "client", "--network", "dbg", "busybox", "sleep", "600")
    before_mounts = mounts(h)
    before_root = h.ok("exec", "client", "ls", "-a", "/", "/etc", "/bin")

    # What ip shows is the container's own interfaces and addresses, not the host's.
    shown = addrs(h.ok("debug", "client", "ip", "-br", "addr"))
    truth = addrs(h.in_sandbox("client", "ip -br addr").stdout)
    assert shown == truth
    assert shown["eth0"] == [f"{h.ip_of('client', 'dbg')}/24"]
    assert not any(name.startswith("tb-") for name in shown)

    # The container's resolv.conf and hosts, so dig asks the embedded DNS, which knows `web`.
    assert "nameserver 127.0.0.11" in h.ok("debug", "client", "cat", "/etc/resolv.conf")
    assert h.ip_of("client", "dbg") in h.ok("debug", "client", "cat", "/etc/hosts")
    answer = h.ok("debug", "client", "dig", "+short", "+time=2", "+tries=1", "web")
    assert answer.split() == [h.ip_of("web", "dbg")]
    # (the host's own tool, talking to the container's neighbour over its network)
    r = h.cli("debug", "client", "bash", "-c", f"exec 3<>/dev/tcp/{h.ip_of('web', 'dbg')}/80")
    assert r.returncode == 0

    # The rest of netshoot's kit, each the host's own, each seeing the container's network.
    web_ip = h.ip_of("web", "dbg")
    assert ":80 " in h.ok("debug", "web", "ss", "-Hltn")
    assert "table ip tether_dns" in h.ok("debug", "client", "nft", "list", "tables")
    assert h.cli("debug", "client", "ping", "-c", "1", "-W", "2", web_ip).returncode == 0
    # curl resolves through the container's resolv.conf (glibc, 127.0.0.11): busybox's
    # httpd answers 404 for a missing index, which proves the exchange happened.
    code = h.ok("debug", "client", "curl", "-s", "-m", "5", "-o", "/dev/null", "-w",
                "%{http_code}", "http://web/")  # fmt: skip
    assert code == "404"
    assert "eth0" in h.ok("debug", "client", "tcpdump", "-D")
    assert h.ok("debug", "client", "iperf3", "--version").startswith("iperf ")
    # The command's exit code is debug's; errors are one line in Docker's words.
    assert h.cli("debug", "client", "sh", "-c", "exit 7").returncode == 7
    assert mounts(h) == before_mounts  # (the mount namespace went with the process)
    r = h.cli("debug", "client", "no-such-tool")
    assert r.returncode == 127 and "executable file not found" in r.stderr
    r = h.cli("debug", "nosuch", "ip", "addr")
    assert (
        r.returncode == 1
        and r.stderr.strip() == "Error response from daemon: No such container: nosuch"
    )
    h.ok("stop", "-t", "0", "web")
    r = h.cli("debug", "web", "ip", "addr")
    assert r.returncode == 1 and "is not running" in r.stderr and "Traceback" not in r.stderr

    # Nothing left in the container's files (no tool was copied in).
    assert h.ok("exec", "client", "ls", "-a", "/", "/etc", "/bin") == before_root
    assert h.cli("exec", "client", "which", "dig").returncode != 0


def test_debug_shell_prompt_says_where_you_are(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.62.0.0/24", "dbg2")
    h.ok("run", "-d", "--name", "web", "--network", "dbg2", "busybox", "sleep", "600")
    ip = h.ip_of("web", "dbg2")
    master, slave = pty.openpty()
    env = dict(os.environ, TETHER_HOST=f"unix://{h.socket}", HOME=h.dir)
    proc = subprocess.Popen(
        [PYTHON, "-m", "tether.cli.main", "debug", "web"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        prompt = f"[debug web {ip}] # ".encode()
        sent = False
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
            if prompt in seen and not sent:
                os.write(master, b"ip -br addr show eth0; exit 5\n")
                sent = True
            if proc.poll() is not None:
                break
        assert prompt in seen, seen.decode(errors="replace")
        assert proc.wait(10) == 5
        assert f"{ip}/24".encode() in seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_capture_of_a_container_holds_the_pings(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.63.0.0/24", "cap")
    h.ok("run", "-d", "--name", "alpha", "--network", "cap", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "beta", "--network", "cap", "busybox", "sleep", "600")
    b = h.ip_of("beta", "cap")
    with tempfile.TemporaryDirectory(prefix="tether-capture-") as d:
        pcap = os.path.join(d, "a.pcap")
        with capturing(h, "-w", pcap, "-c", "6", "--duration", "20", "alpha", "icmp") as proc:
            # tcpdump is listening once it says so (on stderr)
            line = proc.stderr.readline() + proc.stderr.readline()  # type: ignore[union-attr]
            assert "capturing on eth0 of container alpha" in line, line
            h.ok("exec", "alpha", "ping", "-c", "3", "-W", "1", b)
            assert proc.wait(20) == 0
        read = sh(f"tcpdump -nr {pcap}").stdout.splitlines()
        requests = [line for line in read if "ICMP echo request" in line]
        replies = [line for line in read if "ICMP echo reply" in line]
        assert len(requests) == 3 and len(replies) == 3, read
        assert all(f"> {b}:" in line for line in requests)


def test_capture_of_a_network_taps_its_bridge_and_is_bounded(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.64.0.0/24", "capnet")
    h.ok("run", "-d", "--name", "alpha", "--network", "capnet", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "beta", "--network", "capnet", "busybox", "sleep", "600")
    with tempfile.TemporaryDirectory(prefix="tether-capture-") as d:
        pcap = os.path.join(d, "net.pcap")
        with capturing(h, "--duration", "20", "-w", pcap, "capnet", "icmp") as proc:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            bridge = h.api.get("/networks")  # (the list, not inspect: any id prefix of it)
            bridge = next(n["Id"][:12] for n in bridge if n["Name"] == "capnet")
            assert f"capturing on tb-{bridge} of network capnet" in line, line
            proc.stderr.readline()  # type: ignore[union-attr]  (tcpdump: listening on ...)
            h.ok("exec", "alpha", "ping", "-c", "2", "-W", "1", h.ip_of("beta", "capnet"))
            proc.send_signal(2)  # Ctrl-C: the capture ends cleanly
            assert proc.wait(10) == 0
        read = sh(f"tcpdump -nr {pcap}").stdout
        assert read.count("ICMP echo request") == 2 and read.count("ICMP echo reply") == 2
    # Without -c, the default bound still ends it; --duration bounds it as asked.
    started = time.monotonic()
    r = h.cli("capture", "--duration", "1", "capnet", timeout=30)
    assert r.returncode == 0 and time.monotonic() - started < 15
    assert "stopping after 1s" in r.stderr
    # Bad input: one line, nothing started.
    r = h.cli("capture", "-i", "vxlan", "capnet")
    assert r.returncode == 1 and "has no device 'vxlan'" in r.stderr
    r = h.cli("capture", "nosuch")
    assert r.returncode == 1 and "No such container or network: nosuch" in r.stderr
    r = h.cli("capture", "--duration", "soon", "alpha")
    assert r.returncode == 125 and 'invalid duration "soon"' in r.stderr


def test_capture_of_an_overlays_vxlan_device_holds_what_crosses_nodes() -> None:
    """`-i vxlan` on an overlay: the frames that leave for (and arrive from) the other node,
    as the VXLAN device carries them, in the daemon's namespace."""
    from test_overlay import three_nodes, wait_for

    with three_nodes(2) as c, tempfile.TemporaryDirectory(prefix="tether-capture-") as d:
        a, b = c.hosts
        a.ok("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.65.0.0/24", "ov")
        wait_for("the network on node 2", lambda: "ov" in b.ok("network", "ls"))
        a.ok("run", "-d", "--name", "w1", "--network", "ov", "busybox", "sleep", "600")
        a.ok("run", "-d", "--name", "w3", "--network", "ov", "busybox", "sleep", "600")
        b.ok("run", "-d", "--name", "w2", "--network", "ov", "busybox", "sleep", "600")
        ip2, ip3 = b.ip_of("w2", "ov"), a.ip_of("w3", "ov")
        net = a.api.get("/networks/ov")["Id"][:12]
        pcap = os.path.join(d, "vx.pcap")
        cmd = ["-i", "vxlan", "-c", "4", "--duration", "30", "-w", pcap, "ov", "icmp"]
        with capturing(a, *cmd) as proc:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            assert f"capturing on vx-{net} of network ov" in line, line
            proc.stderr.readline()  # type: ignore[union-attr]  (tcpdump: listening on ...)
            # w3 is on this node: its packets cross the overlay's bridge, never the VXLAN
            # device (on the bridge they would fill the count before w2's).
            a.ok("exec", "w1", "ping", "-c", "1", "-W", "2", ip3)
            a.ok("exec", "w1", "ping", "-c", "2", "-W", "2", ip2)
            assert proc.wait(30) == 0
        read = sh(f"tcpdump -nr {pcap}").stdout
        assert read.count(f"> {ip2}: ICMP echo request") == 2, read
        assert read.count("ICMP echo reply") == 2 and ip3 not in read, read
