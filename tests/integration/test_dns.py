"""The embedded DNS at 127.0.0.11, queried from inside containers; upstreams the tests run."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from nshost import HERE, NamespaceHost, Upstream, namespace_host
from tether.kernel import netns

pytestmark = pytest.mark.integration

UPSTREAM = "198.18.53.53"


@pytest.fixture
def dhost() -> Iterator[tuple[NamespaceHost, Upstream]]:
    with namespace_host() as h:
        h.import_busybox()
        up = Upstream(h)
        try:
            yield h, up
        finally:
            up.stop()


def ask(
    h: NamespaceHost,
    container: str,
    name: str,
    rdtype: str = "A",
    tcp: bool = False,
    edns: int | None = None,
    timeout: float = 3.0,
) -> dns.message.Message:
    key = h.api.get(f"/containers/{container}/json")["NetworkSettings"]["SandboxKey"]
    q = dns.message.make_query(name, rdtype)
    if edns is not None:
        q.use_edns(0, payload=edns)
    if tcp:
        s = netns.socket_in(key, socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(("127.0.0.11", 53))
        with s:
            return dns.query.tcp(q, "127.0.0.11", timeout=timeout, sock=s)
    s = netns.socket_in(key, socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        return dns.query.udp(q, "127.0.0.11", timeout=timeout, sock=s, ignore_trailing=True)


def addrs(m: dns.message.Message) -> list[str]:
    return [r.to_text() for rrset in m.answer for r in rrset]


def test_names_aliases_hostnames_and_qualified_names(dhost: tuple[NamespaceHost, Upstream]) -> None:
    h, up = dhost
    h.ok("network", "create", "my-net")
    wid = h.ok(
        "run",
        "-d",
        "--name",
        "web",
        "--hostname",
        "webhost",
        "--network",
        "my-net",
        "--network-alias",
        "front",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ).strip()
    h.ok("run", "-d", "--name", "client", "--network", "my-net", "busybox", "sleep", "600")
    web = h.ip_of("web", "my-net")
    for name in ("web", "web.my-net", wid[:12], "webhost", "front", "front.my-net"):
        m = ask(h, "client", name)
        assert m.rcode() == dns.rcode.NOERROR and addrs(m) == [web], name
    m = ask(h, "client", "WeB")
    assert (
        m.answer[0].name.to_text() == "WeB." and m.answer[0].ttl == 600
    )  # the query's case, TTL 600
    assert m.flags & dns.flags.RA and m.flags & dns.flags.RD and not m.flags & dns.flags.AA
    assert addrs(ask(h, "client", "client")) == [
        h.ip_of("client", "my-net")
    ]  # the asker's own name
    m = ask(h, "client", "web", "AAAA")  # known name, no IPv6: NOERROR, no data, not forwarded
    assert m.rcode() == dns.rcode.NOERROR and m.answer == []
    rev = ".".join(reversed(web.split("."))) + ".in-addr.arpa"
    assert addrs(ask(h, "client", rev, "PTR")) == ["web.my-net."]
    assert addrs(ask(h, "client", "web", tcp=True)) == [web]  # TCP too
    assert up.lines() == []  # nothing of that reached the upstream
    # What a user runs: busybox nslookup and wget by name, dig in the sandbox.
    out = h.ok("exec", "client", "nslookup", "web")
    assert "Server:\t\t127.0.0.11" in out and f"Address: {web}" in out
    assert h.ok("exec", "client", "wget", "-qO-", "http://web/") == "hello from busybox\n"
    assert h.in_sandbox("client", "dig @127.0.0.11 +short front").stdout.strip() == web
    assert (
        h.ok("exec", "client", "cat", "/etc/resolv.conf")
        == "nameserver 127.0.0.11\noptions ndots:0\n"
    )


def test_round_robin_spread(dhost: tuple[NamespaceHost, Upstream]) -> None:
    h, _ = dhost
    h.ok("network", "create", "rr")
    for i in range(3):
        h.ok(
            "run",
            "-d",
            "--name",
            f"b{i}",
            "--network",
            "rr",
            "--network-alias",
            "backend",
            "busybox",
            "sleep",
            "600",
        )
    h.ok("run", "-d", "--name", "asker", "--network", "rr", "busybox", "sleep", "600")
    ips = sorted(h.ip_of(f"b{i}", "rr") for i in range(3))
    first: Counter[str] = Counter()
    key = h.api.get("/containers/asker/json")["NetworkSettings"]["SandboxKey"]
    s = netns.socket_in(key, socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        for _ in range(300):
            m = dns.query.udp(
                dns.message.make_query("backend", "A"), "127.0.0.11", timeout=3, sock=s
            )
            got = addrs(m)
            assert sorted(got) == ips  # every answer holds all of them
            first[got[0]] += 1
    for ip in ips:
        assert 80 <= first[ip] <= 120, first  # within 20 % of uniform (100 each)


def test_other_networks_are_not_visible_and_unknown_names_are_forwarded(
    dhost: tuple[NamespaceHost, Upstream],
) -> None:
    h, up = dhost
    h.ok("network", "create", "net1")
    h.ok("network", "create", "net2")
    h.ok("run", "-d", "--name", "hidden", "--network", "net1", "busybox", "sleep", "600")
    h.ok(
        "run",
        "-d",
        "--name",
        "outsider",
        "--network",
        "net2",
        "--dns",
        UPSTREAM,
        "busybox",
        "sleep",
        "600",
    )
    m = ask(h, "outsider", "hidden")
    assert (
        m.rcode() == dns.rcode.NXDOMAIN and m.flags & dns.flags.AA
    )  # the upstream's answer, relayed
    me = h.ip_of("outsider", "net2")
    assert f"udp {me} hidden. 1" in up.lines()  # forwarded from the container's own address
    assert addrs(ask(h, "outsider", "fwd.anchor.test")) == ["198.18.0.1"]
    m = ask(h, "outsider", "fwd.anchor.test", "MX")
    assert m.rcode() == dns.rcode.NOERROR and m.answer == []
    assert ask(h, "outsider", "www.example.com").rcode() == dns.rcode.NXDOMAIN
    out = h.cli("exec", "outsider", "nslookup", "hidden")
    assert out.returncode == 1 and "can't find hidden: NXDOMAIN" in out.stdout


def test_truncation_tcp_retry_and_edns(dhost: tuple[NamespaceHost, Upstream]) -> None:
    h, up = dhost
    h.ok("network", "create", "n")
    h.ok(
        "run", "-d", "--name", "c1", "--network", "n", "--dns", UPSTREAM, "busybox", "sleep", "600"
    )
    m = ask(h, "c1", "big.anchor.test")  # 40 records: too big for plain UDP
    assert m.flags & dns.flags.TC and m.answer == []
    assert any(
        line.startswith("tcp ") and "big.anchor.test." in line for line in up.lines()
    )  # we retried over TCP
    assert len(addrs(ask(h, "c1", "big.anchor.test", tcp=True))) == 40
    assert len(addrs(ask(h, "c1", "big.anchor.test", edns=4096))) == 40
    # Internal answers truncate the same way: 40 containers behind one alias.
    for i in range(40):
        h.api.post(
            "/containers/create",
            {
                "Image": "busybox",
                "Cmd": ["sleep", "600"],
                "HostConfig": {"NetworkMode": "n"},
                "NetworkingConfig": {"EndpointsConfig": {"n": {"Aliases": ["many"]}}},
            },
            query={"name": f"m{i}"},
        )
        h.api.post(f"/containers/m{i}/start")
    m = ask(h, "c1", "many")
    assert m.flags & dns.flags.TC
    assert len(addrs(ask(h, "c1", "many", tcp=True))) == 40
    assert len(addrs(ask(h, "c1", "many", edns=4096))) == 40


def test_dead_upstream_gives_servfail_quickly(dhost: tuple[NamespaceHost, Upstream]) -> None:
    h, _ = dhost
    h.ok("network", "create", "n")
    # Nothing listens on 198.18.53.54 (the host refuses: fast); nothing routes 192.0.2.53 (silence).
    h.sh("ip addr add 198.18.53.54/32 dev lo")
    h.ok(
        "run",
        "-d",
        "--name",
        "refused",
        "--network",
        "n",
        "--dns",
        "198.18.53.54",
        "busybox",
        "sleep",
        "600",
    )
    h.ok(
        "run",
        "-d",
        "--name",
        "silent",
        "--network",
        "n",
        "--dns",
        "192.0.2.53",
        "busybox",
        "sleep",
        "600",
    )
    for name, limit in (("refused", 0.5), ("silent", 2.5)):
        t = time.monotonic()
        m = ask(h, name, "fwd.anchor.test", timeout=5)
        assert m.rcode() == dns.rcode.SERVFAIL and time.monotonic() - t < limit, name


def test_dns_options_and_explicit_ndots(dhost: tuple[NamespaceHost, Upstream]) -> None:
    h, up = dhost
    h.ok("network", "create", "n")
    h.ok(
        "run",
        "-d",
        "--name",
        "opts",
        "--network",
        "n",
        "--dns",
        UPSTREAM,
        "--dns-search",
        "corp.anchor.test",
        "--dns-option",
        "ndots:2",
        "busybox",
        "sleep",
        "600",
    )
    assert (
        h.ok("exec", "opts", "cat", "/etc/resolv.conf")
        == "search corp.anchor.test\nnameserver 127.0.0.11\noptions ndots:2\n"
    )
    m = ask(h, "opts", "singlelabel")  # explicit ndots + one label: answered empty, not forwarded
    assert m.rcode() == dns.rcode.NOERROR and m.answer == []
    assert not any("singlelabel" in line for line in up.lines())
    h.cli("exec", "opts", "nslookup", "web")  # the container's resolver applies its search list
    assert any(
        "web.corp.anchor.test." in line for line in up.lines()
    )  # the search domain was applied


def test_answers_follow_connect_disconnect_stop_start(
    dhost: tuple[NamespaceHost, Upstream],
) -> None:
    h, _ = dhost
    h.ok("network", "create", "n1")
    h.ok("network", "create", "n2")
    h.ok("run", "-d", "--name", "svc", "--network", "n1", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "peer", "--network", "n2", "busybox", "sleep", "600")
    assert (
        ask(h, "peer", "svc").rcode() == dns.rcode.SERVFAIL
    )  # not visible: forwarded to 192.0.2.53, silent
    h.ok("network", "connect", "--alias", "api", "n2", "svc")
    ip2 = h.ip_of("svc", "n2")
    assert addrs(ask(h, "peer", "svc")) == [ip2] and addrs(ask(h, "peer", "api")) == [ip2]
    h.ok("network", "disconnect", "n2", "svc")
    assert ask(h, "peer", "api").answer == []
    h.ok("network", "connect", "n2", "svc")
    assert ask(h, "peer", "svc").answer != []
    h.ok("stop", "-t", "0", "svc")
    assert ask(h, "peer", "svc").answer == []
    h.ok("start", "svc")
    assert addrs(ask(h, "peer", "svc")) == [h.ip_of("svc", "n2")]
    # The default bridge has no embedded DNS: the upstream is in the file, names do not resolve.
    h.ok("run", "-d", "--name", "b1", "--dns", UPSTREAM, "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "b2", "--dns", UPSTREAM, "busybox", "sleep", "600")
    assert h.ok("exec", "b1", "cat", "/etc/resolv.conf") == f"nameserver {UPSTREAM}\n"
    assert "can't find b2" in h.cli("exec", "b1", "nslookup", "b2").stdout


def test_loopback_resolver_of_the_host_is_asked_from_the_host() -> None:
    h = NamespaceHost()
    try:
        os.makedirs(h.dir, exist_ok=True)
        with open(os.path.join(h.dir, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.53\n")
        h.start()
        h.import_busybox()
        up = Upstream(h, "127.0.0.53")
        try:
            h.ok("network", "create", "n")
            h.ok("run", "-d", "--name", "c1", "--network", "n", "busybox", "sleep", "600")
            assert addrs(ask(h, "c1", "fwd.anchor.test")) == ["198.18.0.1"]
            assert "udp 127.0.0.1 fwd.anchor.test. 1" in up.lines()
            # Never on behalf of a container only on internal networks (CVE-2024-29018).
            h.ok("network", "create", "--internal", "back")
            h.ok("run", "-d", "--name", "c2", "--network", "back", "busybox", "sleep", "600")
            asked = len(up.lines())
            assert ask(h, "c2", "other.anchor.test").rcode() == dns.rcode.SERVFAIL
            assert len(up.lines()) == asked
        finally:
            up.stop()
    finally:
        h.cleanup()


def test_internal_network_forwards_only_within_itself(
    dhost: tuple[NamespaceHost, Upstream],
) -> None:
    """Docker 25+ (CVE-2024-29018, moby#47821): a container only on internal networks gets no
    answer from an upstream outside them, but one on its own internal network still answers."""
    h, up = dhost
    h.ok("network", "create", "--internal", "--subnet", "10.79.0.0/24", "back")
    h.ok("network", "create", "front")
    h.ok(
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "back",
        "--dns",
        UPSTREAM,
        "busybox",
        "sleep",
        "600",
    )
    # The upstream is an address of the host itself (as in the reference): out of reach now.
    m = ask(h, "db", "fwd.anchor.test")
    assert m.rcode() == dns.rcode.SERVFAIL and m.answer == []
    assert not any(h.ip_of("db", "back") in line for line in up.lines())
    # Names of the internal network itself still resolve.
    h.ok("run", "-d", "--name", "peer", "--network", "back", "busybox", "sleep", "600")
    assert addrs(ask(h, "db", "peer")) == [h.ip_of("peer", "back")]
    # A DNS server on the internal network (here: the stand-in upstream inside a container's
    # network namespace) is asked from the container's namespace, and answers.
    h.ok(
        "run",
        "-d",
        "--name",
        "ns",
        "--network",
        "back",
        "--ip",
        "10.79.0.53",
        "busybox",
        "sleep",
        "600",
    )
    key = h.api.get("/containers/ns/json")["NetworkSettings"]["SandboxKey"]
    log = os.path.join(h.dir, "onnet-dns.log")
    server = subprocess.Popen(
        [
            "nsenter",
            f"--net={key}",
            sys.executable,
            os.path.join(HERE, "dnsupstream.py"),
            "10.79.0.53",
            "53",
            log,
            "60",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(log) and time.monotonic() < deadline:
            time.sleep(0.05)
        h.ok(
            "run",
            "-d",
            "--name",
            "c2",
            "--network",
            "back",
            "--dns",
            "10.79.0.53",
            "busybox",
            "sleep",
            "600",
        )
        assert addrs(ask(h, "c2", "fwd.anchor.test")) == ["198.18.0.1"]
        with open(log) as f:
            assert f"udp {h.ip_of('c2', 'back')} fwd.anchor.test. 1" in f.read()
    finally:
        server.kill()
        server.wait()
    # Connected to a normal network as well, db forwards to the host's upstream again.
    h.ok("network", "connect", "front", "db")
    assert addrs(ask(h, "db", "fwd.anchor.test")) == ["198.18.0.1"]


def test_hostile_packets_never_stop_the_server(dhost: tuple[NamespaceHost, Upstream]) -> None:
    h, _ = dhost
    h.ok("network", "create", "n")
    h.ok("run", "-d", "--name", "web", "--network", "n", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "fz", "--network", "n", "busybox", "sleep", "600")
    key = h.api.get("/containers/fz/json")["NetworkSettings"]["SandboxKey"]
    valid = dns.message.make_query("web", "A").to_wire()
    rng = random.Random(42)
    s = netns.socket_in(key, socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(0)
        for i in range(4000):
            if i % 2:
                pkt = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 600)))
            else:  # a valid query, mutated: flipped bytes, cut, extended
                pkt = bytearray(valid)
                for _ in range(rng.randint(1, 6)):
                    pkt[rng.randrange(len(pkt))] = rng.getrandbits(8)
                pkt = bytes(pkt[: rng.randint(0, len(pkt))]) + bytes(
                    rng.getrandbits(8) for _ in range(rng.randint(0, 20))
                )
            try:
                s.sendto(pkt, ("127.0.0.11", 53))
            except OSError:
                pass
    # Malformed over TCP too: a length prefix that lies, garbage, then a hang-up.
    t = netns.socket_in(key, socket.AF_INET, socket.SOCK_STREAM)
    with t:
        t.settimeout(3)
        t.connect(("127.0.0.11", 53))
        t.sendall(b"\xff\xff" + os.urandom(300))
    time.sleep(0.3)
    m = ask(h, "fz", "web")
    assert addrs(m) == [h.ip_of("web", "n")]
    assert h.api.get("/_ping") == "OK"
