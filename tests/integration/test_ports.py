"""Published ports, with real TCP and UDP traffic from the LAN, the host, and containers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from nshost import NamespaceHost, sh

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
UDP_ECHO = textwrap.dedent(
    """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 53))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(b"echo:" + data, peer)
    """
)


def get(netns: str, url: str) -> str:
    """HTTP GET from a namespace with the host's busybox; '' when it fails."""
    r = sh(f"ip netns exec {netns} timeout 3 busybox wget -qO- '{url}'", check=False)
    return r.stdout if r.returncode == 0 else ""


def udp(netns: str, host: str, port: int, payload: str = "ping") -> str:
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.settimeout(2)\n"
        "s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))\n"
        "try:\n    print(s.recvfrom(2048)[0].decode())\nexcept OSError:\n    print('')\n"
    )
    r = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code, host, str(port), payload],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return r.stdout.strip()


def test_every_publish_form_is_reachable_where_it_should_be(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()
    h.ok("network", "create", "app")
    cid = h.ok(
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "app",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:8081:80",
        "-p",
        "[::1]:8082:80",
        "-p",
        "80",
        "-p",
        "8083:80/tcp",
        "busybox",
        *WEB,
    ).strip()
    hello = f"hello-{cid[:12]}\n"
    # From another machine on the LAN, to the host's address.
    assert get(lan, "http://10.250.0.1:8080/") == hello
    assert get(lan, "http://10.250.0.1:8083/") == hello
    # From the host itself: its LAN address, loopback, IPv6 loopback.
    assert get(h.netns, "http://10.250.0.1:8080/") == hello
    assert get(h.netns, "http://127.0.0.1:8080/") == hello
    assert get(h.netns, "http://127.0.0.1:8081/") == hello
    assert get(h.netns, "http://[::1]:8082/") == hello
    assert get(h.netns, "http://[::1]:8080/") == hello  # no host address: both families
    # A port bound to one address is reachable on that address only.
    assert get(lan, "http://10.250.0.1:8081/") == ""
    assert get(h.netns, "http://10.250.0.1:8081/") == ""
    # The random port: docker port shows it, and it works.
    out = h.ok("port", "web")
    assert out.splitlines() == [
        "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> 0.0.0.0:8083",
        "80/tcp -> 0.0.0.0:32768",
        "80/tcp -> 127.0.0.1:8081",
        "80/tcp -> [::1]:8082",
        "80/tcp -> [::]:8080",
        "80/tcp -> [::]:8083",
        "80/tcp -> [::]:32768",
    ]
    assert get(lan, "http://10.250.0.1:32768/") == hello
    # Hairpin: another container on the same network, through the host's address.
    h.ok("run", "-d", "--name", "peer", "--network", "app", "busybox", "sleep", "600")
    r = h.cli("exec", "peer", "timeout", "3", "wget", "-qO-", "http://10.250.0.1:8080/")
    assert r.stdout == hello
    # ...and from a container on another network (published ports are for everyone).
    h.ok("network", "create", "other")
    h.ok("run", "-d", "--name", "far", "--network", "other", "busybox", "sleep", "600")
    assert (
        h.cli("exec", "far", "timeout", "3", "wget", "-qO-", "http://10.250.0.1:8080/").stdout
        == hello
    )
    # ps and inspect show them as docker does.
    ps = h.ok("ps", "--filter", "name=web", "--format", "{{.Ports}}").strip()
    # docker orders mappings by address string: "::" before "::1".
    assert ps == (
        "0.0.0.0:8080->80/tcp, 0.0.0.0:8083->80/tcp, 0.0.0.0:32768->80/tcp, 127.0.0.1:8081->80/tcp, "
        "[::]:8080->80/tcp, [::]:8083->80/tcp, [::]:32768->80/tcp, [::1]:8082->80/tcp"
    )
    ports = h.api.get("/containers/web/json")["NetworkSettings"]["Ports"]
    assert {"HostIp": "127.0.0.1", "HostPort": "8081"} in ports["80/tcp"]
    # No process per port: the only processes are the containers' shims and workloads.
    assert "docker-proxy" not in sh("ps -eo comm").stdout


def test_udp_ranges_and_publish_all(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()
    h.ok("network", "create", "app")
    # UDP: the host image runs the host's python3 as a UDP echo server in the container.
    h.ok(
        "run",
        "-d",
        "--name",
        "dns",
        "--network",
        "app",
        "-p",
        "53:53/udp",
        "host",
        "python3",
        "-c",
        UDP_ECHO,
    )
    assert udp(lan, "10.250.0.1", 53, "from-lan") == "echo:from-lan"
    assert udp(h.netns, "127.0.0.1", 53, "from-host") == "echo:from-host"
    assert udp(h.netns, "::1", 53, "over-v6") == "echo:over-v6"
    # Ranges: three servers, three host ports.
    script = "for p in 5000 5001 5002; do mkdir -p /w$p; echo port-$p > /w$p/index.html; httpd -p $p -h /w$p; done; exec sleep 600"
    h.ok(
        "run",
        "-d",
        "--name",
        "ranged",
        "--network",
        "app",
        "-p",
        "5000-5002:5000-5002",
        "busybox",
        "sh",
        "-c",
        script,
    )
    for p in (5000, 5001, 5002):
        assert get(lan, f"http://10.250.0.1:{p}/") == f"port-{p}\n"
    assert h.ok("ps", "--filter", "name=ranged", "--format", "{{.Ports}}").strip() == (
        "0.0.0.0:5000-5002->5000-5002/tcp, [::]:5000-5002->5000-5002/tcp"
    )
    # -P: every exposed port to a random host port, counted per protocol from 32768.
    h.ok(
        "run",
        "-d",
        "--name",
        "allp",
        "--network",
        "app",
        "--expose",
        "7000",
        "--expose",
        "7001/udp",
        "-P",
        "busybox",
        "sleep",
        "600",
    )
    assert h.ok("port", "allp").splitlines() == [
        "7000/tcp -> 0.0.0.0:32768",
        "7000/tcp -> [::]:32768",
        "7001/udp -> 0.0.0.0:32768",
        "7001/udp -> [::]:32768",
    ]
    # -P with nothing exposed publishes nothing.
    h.ok("run", "-d", "--name", "none-exposed", "--network", "app", "-P", "busybox", "sleep", "600")
    assert h.ok("port", "none-exposed") == ""


def test_conflicts_are_refused_and_change_nothing(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "app")
    cid = h.ok(
        "run", "-d", "--name", "first", "--network", "app", "-p", "8080:80", "busybox", *WEB
    ).strip()
    before = (h.kernel_snapshot(), h.sh("nft list table inet tether").stdout)
    r = h.cli("run", "-d", "--name", "second", "--network", "app", "-p", "8080:80", "busybox", *WEB)
    assert r.returncode == 125
    line = r.stderr.splitlines()[0]
    assert line.startswith(
        "tether: Error response from daemon: driver failed programming external connectivity on endpoint second ("
    )
    assert line.endswith("): Bind for 0.0.0.0:8080 failed: port is already allocated")
    assert (h.kernel_snapshot(), h.sh("nft list table inet tether").stdout) == before
    assert h.api.get("/containers/second/json")["State"]["Status"] == "created"
    # 127.0.0.1:8080 overlaps 0.0.0.0:8080.
    r = h.cli("run", "-d", "--network", "app", "-p", "127.0.0.1:8080:80", "busybox", *WEB)
    assert "Bind for 127.0.0.1:8080 failed: port is already allocated" in r.stderr
    # A host process already listening.
    listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            h.netns,
            sys.executable,
            "-c",
            "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 8095)); s.listen(); time.sleep(60)",
        ],
    )
    try:
        sh(
            f"ip netns exec {h.netns} sh -c 'for i in $(seq 50); do ss -ltn | grep -q :8095 && exit 0; sleep 0.1; done; exit 1'"
        )
        r = h.cli("run", "-d", "--network", "app", "-p", "8095:80", "busybox", *WEB)
        assert r.returncode == 125
        assert (
            "Error starting userland proxy: listen tcp4 0.0.0.0:8095: bind: address already in use"
            in r.stderr
        )
        r = h.cli("run", "-d", "--network", "app", "-p", "192.0.2.99:8086:80", "busybox", *WEB)
        assert "listen tcp4 192.0.2.99:8086: bind: cannot assign requested address" in r.stderr
    finally:
        listener.kill()
        listener.wait()
    assert (h.kernel_snapshot(), h.sh("nft list table inet tether").stdout) == before
    # Malformed -p values are refused by the CLI, in docker's words.
    for spec, message in (
        ("99999:80", "invalid hostPort: 99999"),
        ("8082:80/sctpx", "invalid proto: sctpx"),
        ("1.2.3.4.5:8087:80", "invalid IP address: 1.2.3.4.5"),
    ):
        r = h.cli("run", "-d", "--network", "app", "-p", spec, "busybox", "true")
        assert r.returncode == 125 and r.stderr.startswith(f"tether: {message}")
    # Removing the first container frees its port for the next one.
    h.ok("rm", "-f", cid)
    h.ok("run", "-d", "--name", "third", "--network", "app", "-p", "8080:80", "busybox", *WEB)


WHOAMI = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 9000)); s.listen(); s.settimeout(30)\n"
    "for _ in range(4):\n"
    "    c, peer = s.accept(); c.sendall(peer[0].encode() + b'\\n'); c.close()\n"
)


def test_outbound_masquerade_on_and_off(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()
    server = subprocess.Popen(["ip", "netns", "exec", lan, sys.executable, "-c", WHOAMI])
    try:
        h.ok("network", "create", "masq")
        h.ok(
            "network",
            "create",
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=false",
            "plain",
        )
        h.ok("run", "-d", "--name", "mq", "--network", "masq", "busybox", "sleep", "600")
        h.ok("run", "-d", "--name", "pl", "--network", "plain", "busybox", "sleep", "600")
        seen = h.ok(
            "exec",
            "mq",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do nc 10.250.0.2 9000 && exit 0; sleep 0.2; done",
        )
        assert seen == "10.250.0.1\n"  # the host's address: masqueraded
        seen = h.ok("exec", "pl", "nc", "10.250.0.2", "9000")
        assert seen == h.ip_of("pl", "plain") + "\n"  # the container's own address
    finally:
        server.kill()
        server.wait()


def test_ports_follow_connect_and_survive_restart(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()
    h.ok("network", "create", "zeta")
    h.ok("network", "create", "alpha")
    cid = h.ok(
        "run", "-d", "--name", "web", "--network", "zeta", "-p", "8080:80", "busybox", *WEB
    ).strip()
    hello = f"hello-{cid[:12]}\n"
    assert get(lan, "http://10.250.0.1:8080/") == hello
    # Connecting a network that takes over the default route moves the port with it.
    h.ok("network", "connect", "alpha", "web")
    assert get(lan, "http://10.250.0.1:8080/") == hello
    h.ok("network", "disconnect", "alpha", "web")
    assert get(lan, "http://10.250.0.1:8080/") == hello
    h.restart()
    assert get(lan, "http://10.250.0.1:8080/") == hello
    assert h.ok("port", "web", "80").splitlines() == ["0.0.0.0:8080", "[::]:8080"]
    assert get(h.netns, "http://[::1]:8080/") == hello  # the IPv6 proxy is back too
    h.ok("stop", "-t", "0", "web")
    assert get(lan, "http://10.250.0.1:8080/") == ""
    assert "8080" not in h.sh("nft list map inet tether pub4").stdout
