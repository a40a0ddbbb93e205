"""Isolation with real traffic: separate networks, internal networks, ICC off, the user chain."""

from __future__ import annotations

import time

import pytest

from nshost import NamespaceHost, sh

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]


def reach(h: NamespaceHost, client: str, ip: str, port: int = 80) -> bool:
    r = h.cli("exec", client, "timeout", "2", "wget", "-qO-", f"http://{ip}:{port}/")
    return r.returncode == 0 and r.stdout.startswith("hello-")


def test_containers_on_different_networks_cannot_reach_each_other(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "net1")
    h.ok("network", "create", "net2")
    h.ok("run", "-d", "--name", "s1", "--network", "net1", "busybox", *WEB)
    h.ok("run", "-d", "--name", "same", "--network", "net1", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "other", "--network", "net2", "busybox", "sleep", "600")
    ip = h.ip_of("s1", "net1")
    assert reach(h, "same", ip)
    assert not reach(h, "other", ip)
    assert h.cli("exec", "other", "ping", "-c1", "-W1", ip).returncode != 0
    # A container on both networks reaches both sides.
    h.ok("network", "connect", "net2", "same")
    h.ok("run", "-d", "--name", "s2", "--network", "net2", "busybox", *WEB)
    assert reach(h, "same", h.ip_of("s2", "net2"))


def test_internal_network_reaches_nothing_beyond_itself(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()
    sh(
        f"ip netns exec {lan} sh -c 'mkdir -p /tmp/lanwww-{lan} && echo hello-lan > /tmp/lanwww-{lan}/index.html'"
    )
    sh(f"ip netns exec {lan} busybox httpd -p 80 -h /tmp/lanwww-{lan}")
    try:
        h.ok("network", "create", "--internal", "back")
        h.ok("network", "create", "front")
        h.ok("run", "-d", "--name", "db", "--network", "back", "-p", "8096:80", "busybox", *WEB)
        h.ok("run", "-d", "--name", "peer", "--network", "back", "busybox", "sleep", "600")
        h.ok("run", "-d", "--name", "outside-ish", "--network", "front", "busybox", "sleep", "600")
        db = h.ip_of("db", "back")
        assert reach(h, "peer", db)  # within the internal network: fine
        # No default route on internal networks (Docker 25+; 20.10 had one and stopped the
        # traffic in the firewall, which still does so: test_hardening.py).
        assert "default" not in h.ok("exec", "db", "ip", "route")
        assert not reach(h, "db", "10.250.0.2")  # nothing beyond the network
        assert reach(h, "outside-ish", "10.250.0.2")  # (while a normal network does get out)
        assert not reach(h, "outside-ish", db)  # nothing from elsewhere gets in
        r = sh(f"ip netns exec {lan} timeout 2 busybox wget -qO- http://{db}/", check=False)
        assert r.returncode != 0
        # Publishing on an internal network is ignored, silently, as in Docker.
        assert h.ok("port", "db") == ""
        assert (
            sh(
                f"ip netns exec {lan} timeout 2 busybox wget -qO- http://10.250.0.1:8096/",
                check=False,
            ).returncode
            != 0
        )
    finally:
        sh(f"ip netns exec {lan} pkill -f 'httpd -p 80 -h /tmp/lanwww-{lan}'", check=False)
        sh(f"rm -rf /tmp/lanwww-{lan}", check=False)


def test_icc_off_blocks_neighbours_but_not_published_ports(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()
    h.ok("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "noicc")
    h.ok("run", "-d", "--name", "q1", "--network", "noicc", "-p", "8080:80", "busybox", *WEB)
    h.ok("run", "-d", "--name", "q2", "--network", "noicc", "busybox", "sleep", "600")
    assert not reach(h, "q2", h.ip_of("q1", "noicc"))
    assert h.cli("exec", "q2", "ping", "-c1", "-W1", h.ip_of("q1", "noicc")).returncode != 0
    assert reach(h, "q2", "10.250.0.1", 8080)  # through the published port
    assert sh(
        f"ip netns exec {lan} timeout 3 busybox wget -qO- http://10.250.0.1:8080/"
    ).stdout.startswith("hello-")


def test_three_tier_reachability_matrix(bhost: NamespaceHost) -> None:
    """The tutorial's exercise: web on frontend, app on both, db on the internal backend."""
    h = bhost
    lan = h.add_lan()
    h.ok("network", "create", "frontend")
    h.ok("network", "create", "--internal", "backend")
    for name, net in (("web", "frontend"), ("app", "frontend"), ("db", "backend")):
        h.ok("run", "-d", "--name", name, "--network", net, "busybox", *WEB)
    h.ok("network", "connect", "backend", "app")
    ip = {
        "web": h.ip_of("web", "frontend"),
        "app": h.ip_of("app", "frontend"),
        "db": h.ip_of("db", "backend"),
    }
    app_back = h.ip_of("app", "backend")
    assert reach(h, "web", ip["app"])  # web -> app: open
    assert reach(h, "app", ip["db"])  # app -> db: open
    assert reach(h, "app", ip["web"])
    assert reach(h, "db", app_back)
    assert not reach(h, "web", ip["db"])  # web -> db: blocked
    assert not reach(h, "db", ip["web"])
    sh(
        f"ip netns exec {lan} sh -c 'mkdir -p /tmp/lan3-{lan}; echo hello-lan > /tmp/lan3-{lan}/index.html; busybox httpd -p 80 -h /tmp/lan3-{lan}'"
    )
    try:
        assert not reach(h, "db", "10.250.0.2")  # db -> outside: blocked
        assert reach(h, "web", "10.250.0.2")
    finally:
        sh(f"ip netns exec {lan} pkill -f 'httpd -p 80 -h /tmp/lan3-{lan}'", check=False)
        sh(f"rm -rf /tmp/lan3-{lan}", check=False)
    # The app's default route goes to the frontend (internal networks rank last).
    assert "default via 172.18.0.1 dev eth0" in h.ok("exec", "app", "ip", "route")


def test_user_chain_examples_and_it_is_never_flushed(bhost: NamespaceHost) -> None:
    """The two documented examples (docs/firewall.md), and the chain surviving re-renders."""
    h = bhost
    h.ok("network", "create", "app")
    for name in ("web", "api", "db", "admin"):
        h.ok(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "app",
            "busybox",
            "sh",
            "-c",
            "echo hello-$(hostname) > /www/index.html; httpd -p 5432 -h /www; exec httpd -f -p 80 -h /www",
        )
    ip = {n: h.ip_of(n, "app") for n in ("web", "api", "db", "admin")}
    assert (
        reach(h, "web", ip["api"])
        and reach(h, "admin", ip["db"], 5432)
        and reach(h, "api", ip["db"], 5432)
    )
    # Example 1: block one container from another.
    h.sh(f"nft add rule inet tether user ip saddr {ip['web']} ip daddr {ip['api']} drop")
    assert not reach(h, "web", ip["api"])
    assert reach(h, "admin", ip["api"])
    # Example 2: only one source may reach db's port 5432.
    h.sh(
        f"nft add rule inet tether user ip daddr {ip['db']} tcp dport 5432 ip saddr != {ip['api']} drop"
    )
    assert reach(h, "api", ip["db"], 5432)
    assert not reach(h, "admin", ip["db"], 5432)
    assert reach(h, "admin", ip["db"], 80)
    # tether re-renders its table (a network change) and keeps the user's rules.
    h.ok("network", "create", "later")
    h.restart()
    assert not reach(h, "web", ip["api"]) and not reach(h, "admin", ip["db"], 5432)
    assert h.sh("nft list chain inet tether user").stdout.count("drop") == 2


def test_table_is_restored_and_other_tables_are_left_alone(bhost: NamespaceHost) -> None:
    h = bhost
    h.sh(
        "nft add table inet someone_else && nft add chain inet someone_else c && nft add rule inet someone_else c counter"
    )
    h.ok("network", "create", "app")
    h.ok("run", "-d", "--name", "s1", "--network", "app", "busybox", *WEB)
    h.ok("run", "-d", "--name", "s2", "--network", "app", "busybox", "sleep", "600")
    h.ok("network", "create", "other")
    h.ok("run", "-d", "--name", "far", "--network", "other", "busybox", "sleep", "600")
    assert not reach(h, "far", h.ip_of("s1", "app"))
    h.sh("nft delete table inet tether")
    assert reach(h, "far", h.ip_of("s1", "app"))  # nothing isolates now...
    deadline = time.monotonic() + 15
    while (
        time.monotonic() < deadline
        and h.sh("nft list table inet tether", check=False).returncode != 0
    ):
        time.sleep(0.2)
    assert h.sh("nft list table inet tether", check=False).returncode == 0  # ...until it is back
    assert not reach(h, "far", h.ip_of("s1", "app"))
    assert "counter" in h.sh("nft list table inet someone_else").stdout


def test_internal_network_cannot_use_a_published_port_to_get_out(bhost: NamespaceHost) -> None:
    """The host's address + a port published by a container elsewhere is no way out of an
    internal network (Docker drops it in DOCKER-ISOLATION, before the DNAT is accepted);
    containers on normal networks still reach it."""
    h = bhost
    h.ok("network", "create", "--internal", "--subnet", "10.86.0.0/24", "inside")
    h.ok("network", "create", "--subnet", "10.87.0.0/24", "outside")
    h.ok("run", "-d", "--name", "pubweb", "-p", "8080:80", "busybox", *WEB)
    h.ok("run", "-d", "--name", "in", "--network", "inside", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "out", "--network", "outside", "busybox", "sleep", "600")
    assert reach(h, "out", "10.87.0.1", 8080)
    assert not reach(h, "in", "10.86.0.1", 8080)
