"""What a container gives back when it stops, fails to start, or is restarted: its name in the
embedded DNS, its sandbox (namespace and interfaces), its address, and nothing left behind
that still answers for it.

On macvlan the last point is visible from the LAN: a port left alive in a namespace that
something still holds answers ARP for an address that was given back, and the next
container given that address (same address, same MAC) cannot bring its own port up.
"""

from __future__ import annotations

import os
import re

import pytest

from nshost import NamespaceHost, make_netns, sh

pytestmark = pytest.mark.integration

LAN_GW = "192.168.78.1"


def make_lan(h: NamespaceHost) -> str:
    """A LAN behind the host's lan0; returns the LAN namespace (deleted at cleanup)."""
    lan = make_netns("tl")
    h.lan_peers.append(lan)
    sh(f"ip link add lan0 netns {h.netns} type veth peer name lan0 netns {lan}")
    h.sh("ip link set lan0 up")
    sh(f"ip netns exec {lan} sh -c 'ip addr add {LAN_GW}/24 dev lan0 && ip link set lan0 up'")
    return lan


def lan_arp(lan: str, ip: str) -> str:
    """The MAC that answers ARP for `ip` on the LAN ("" if nothing answers within 1 s)."""
    out = sh(f"ip netns exec {lan} busybox arping -c1 -w1 -I lan0 {ip}", check=False).stdout
    found = re.search(r"reply from \S+ \[([0-9a-f:]{17})\]", out, re.IGNORECASE)
    return found[1].lower() if found else ""


def macvlan_net(h: NamespaceHost) -> None:
    h.ok("network", "create", "-d", "macvlan", "--subnet", "192.168.78.0/24",
         "--gateway", LAN_GW, "-o", "parent=lan0", "lan-net")  # fmt: skip


def test_a_failed_start_takes_back_its_name_and_its_port(bhost: NamespaceHost) -> None:
    h = bhost
    lan = make_lan(h)
    macvlan_net(h)
    h.ok("run", "-d", "--name", "probe", "--network", "lan-net", "busybox", "sleep", "600")
    # The command does not exist: the start fails after the sandbox, the address and the
    # name were made (the process is the last step).
    r = h.cli("run", "-d", "--name", "ghost", "--network", "lan-net", "busybox", "nosuchcmd")
    assert r.returncode != 0 and "executable file not found" in r.stderr, r.stderr
    ghost_ip = "192.168.78.3"  # what it was given: the next after probe's .2
    # Its name is gone from the embedded DNS...
    r = h.cli("exec", "probe", "nslookup", "ghost")
    assert r.returncode != 0 and ghost_ip not in r.stdout, r.stdout
    # ...and nothing answers for its address on the LAN any more.
    assert lan_arp(lan, ghost_ip) == ""
    # The next container is given the same address (and so the same MAC) and starts.
    h.ok("run", "-d", "--name", "next", "--network", "lan-net", "busybox", "sleep", "600")
    assert h.ip_of("next", "lan-net") == ghost_ip
    mac = h.api.get("/containers/next/json")["NetworkSettings"]["Networks"]["lan-net"]["MacAddress"]
    assert lan_arp(lan, ghost_ip) == mac
    assert ghost_ip in h.ok("exec", "probe", "nslookup", "next")


def test_a_failed_start_on_a_bridge_leaves_no_name(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.61.0.0/24", "app")
    h.ok("run", "-d", "--name", "probe", "--network", "app", "busybox", "sleep", "600")
    r = h.cli("run", "-d", "--name", "ghost", "--network", "app", "busybox", "nosuchcmd")
    assert r.returncode != 0
    r = h.cli("exec", "probe", "nslookup", "ghost")
    assert r.returncode != 0 and "10.61.0.3" not in r.stdout, r.stdout
    # Starting it again fails the same way (nothing half-made is in the way), and a
    # working container gets the address.
    r = h.cli("start", "ghost")
    assert r.returncode != 0 and "executable file not found" in r.stderr, r.stderr
    h.ok("run", "-d", "--name", "ok", "--network", "app", "busybox", "sleep", "600")
    assert h.ip_of("ok", "app") == "10.61.0.3"
    assert h.netns_files() == sorted(
        h.api.get(f"/containers/{n}/json")["Id"][:12] for n in ("probe", "ok")
    )


def test_restart_on_macvlan_always_succeeds(bhost: NamespaceHost) -> None:
    h = bhost
    lan = make_lan(h)
    macvlan_net(h)
    h.ok("run", "-d", "--name", "probe", "--network", "lan-net", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "web", "--network", "lan-net", "busybox", "sleep", "600")
    ip = h.ip_of("web", "lan-net")
    for i in range(8):
        r = h.cli("restart", "-t", "0", "web")
        assert r.returncode == 0, (i, r.stderr)
        assert h.ip_of("web", "lan-net") == ip
    mac = h.api.get("/containers/web/json")["NetworkSettings"]["Networks"]["lan-net"]["MacAddress"]
    assert lan_arp(lan, ip) == mac
    assert ip in h.ok("exec", "probe", "nslookup", "web")


def test_a_connect_that_fails_half_way_is_taken_back(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.65.0.0/24", "one")
    h.ok("network", "create", "--subnet", "10.66.0.0/24", "two")
    h.ok("run", "-d", "--name", "cc", "--network", "one", "busybox", "sleep", "600")
    cid = h.api.get("/containers/cc/json")["Id"]
    # The container's /etc/hosts cannot be rewritten (the endpoint is made first, the files
    # after it): a directory where the file was.
    hosts = os.path.join(h.root, "containers", cid, "hosts")
    os.rename(hosts, hosts + ".away")
    os.mkdir(hosts)
    try:
        r = h.cli("network", "connect", "two", "cc")
    finally:
        os.rmdir(hosts)
        os.rename(hosts + ".away", hosts)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    # Nothing of the half-made endpoint is left: not in inspect, not in the kernel, not in
    # the store; the network can go.
    nets = h.api.get("/containers/cc/json")["NetworkSettings"]["Networks"]
    assert list(nets) == ["one"]
    assert h.in_sandbox("cc", "ip -o link show eth1", check=False).returncode != 0
    two = h.inspect_network("two")["Id"]
    assert [a for a in h.allocations() if a[0] == two and a[2] != "gateway"] == []
    assert len(h.veths()) == 1
    h.ok("network", "rm", "two")
    # ...and a connect that works still does.
    h.ok("network", "create", "--subnet", "10.67.0.0/24", "three")
    h.ok("network", "connect", "three", "cc")
    assert "10.67.0.2" in h.ok("exec", "cc", "cat", "/etc/hosts")
