"""macvlan networks on a real "LAN": a namespace on the far side of the parent link.

The namespace-host's `lan0` is the parent; its veth peer lives in another namespace that plays
every other machine of the LAN (a router at .1).  Containers must appear there as stations of
their own: their own IPs, their own MACs in the LAN's neighbour table.
"""

from __future__ import annotations

import json
import time

import pytest

from nshost import NamespaceHost, make_netns, namespace_host, sh

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
LAN_GW = "192.168.77.1"


def make_lan(h: NamespaceHost) -> str:
    """A LAN behind the host's lan0 (which carries no address of its own, like a NIC given
    to macvlan).  Returns the LAN namespace's name."""
    lan = make_netns("tl")
    h.lan_peers.append(lan)
    sh(f"ip link add lan0 netns {h.netns} type veth peer name lan0 netns {lan}")
    h.sh("ip link set lan0 up")
    sh(f"ip netns exec {lan} sh -c 'ip addr add {LAN_GW}/24 dev lan0 && ip link set lan0 up'")
    return lan


def lan_sh(lan: str, cmd: str, check: bool = False) -> str:
    r = sh(f"ip netns exec {lan} sh -c '{cmd}'", check=check)
    return r.stdout if r.returncode == 0 else ""


def lan_ping(lan: str, ip: str) -> bool:
    return sh(f"ip netns exec {lan} busybox ping -c1 -W1 {ip}", check=False).returncode == 0


def ping(h: NamespaceHost, container: str, ip: str) -> bool:
    return h.cli("exec", container, "ping", "-c1", "-W1", ip).returncode == 0


def state(h: NamespaceHost) -> tuple[str, list[str], str]:
    """What a refused command must leave as it was: networks, host links, the nft table."""
    nets = h.ok("network", "ls", "--format", "{{.Name}} {{.Driver}}")
    links = sorted(h.links())
    table = h.sh("nft list table inet tether", check=False).stdout
    return nets, links, table


def test_macvlan_containers_are_stations_on_the_lan(bhost: NamespaceHost) -> None:
    h = bhost
    lan = make_lan(h)
    h.ok(
        "network", "create", "-d", "macvlan", "--subnet", "192.168.77.0/24",
        "--gateway", LAN_GW, "-o", "parent=lan0", "lan-net",
    )  # fmt: skip
    info = h.inspect_network("lan-net")
    assert info["Driver"] == "macvlan"
    assert info["Options"] == {"parent": "lan0"}
    assert info["IPAM"]["Config"] == [{"Subnet": "192.168.77.0/24", "Gateway": LAN_GW}]
    h.ok("run", "-d", "--name", "web", "--network", "lan-net", "busybox", *WEB)
    h.ok("run", "-d", "--name", "cli", "--network", "lan-net", "--ip", "192.168.77.50",
         "busybox", "sleep", "600")  # fmt: skip
    web = h.ip_of("web", "lan-net")
    assert web == "192.168.77.2"  # .1 is the gateway, a router on the LAN
    mac = h.api.get("/containers/web/json")["NetworkSettings"]["Networks"]["lan-net"]["MacAddress"]
    assert mac == "02:42:c0:a8:4d:02"
    # The interface is a macvlan port of lan0, with the container's own MAC.
    link = json.loads(h.in_sandbox("web", "ip -j -d link show eth0").stdout)[0]
    assert link["linkinfo"]["info_kind"] == "macvlan"
    assert link["linkinfo"]["info_data"]["mode"] == "bridge"
    assert link["address"] == mac
    # The LAN reaches the container by its own address, and learns its own MAC for it.
    assert lan_ping(lan, web)
    neigh = lan_sh(lan, f"ip neigh show {web}")
    assert mac in neigh, neigh
    got = lan_sh(lan, f"timeout 3 busybox wget -qO- http://{web}/")
    assert got.startswith("hello-")
    # ...and the container reaches the LAN through its default route via the LAN's router.
    assert f"default via {LAN_GW} dev eth0" in h.ok("exec", "web", "ip", "route")
    assert ping(h, "web", LAN_GW)
    # Bridge mode: ports of one parent reach each other; names resolve through 127.0.0.11.
    assert ping(h, "cli", web)
    assert web in h.ok("exec", "cli", "nslookup", "web")
    assert h.ok("exec", "cli", "cat", "/etc/resolv.conf").startswith("nameserver 127.0.0.11")
    # Nothing of the network lives on the host but the parent: no bridge, no veth.
    assert not h.veths()
    assert not any(n.startswith(("tb-", "tm-")) for n in h.links())
    h.ok("rm", "-f", "web", "cli")
    h.ok("network", "rm", "lan-net")
    assert "lan0" in h.links()


def test_private_mode_keeps_ports_apart_but_not_from_the_lan(bhost: NamespaceHost) -> None:
    h = bhost
    lan = make_lan(h)
    h.ok("network", "create", "-d", "macvlan", "--subnet", "192.168.77.0/24", "--gateway",
         LAN_GW, "-o", "parent=lan0", "-o", "macvlan_mode=private", "priv")  # fmt: skip
    h.ok("run", "-d", "--name", "pa", "--network", "priv", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "pb", "--network", "priv", "busybox", "sleep", "600")
    assert (
        json.loads(h.in_sandbox("pa", "ip -j -d link show eth0").stdout)[0]["linkinfo"][
            "info_data"
        ]["mode"]
        == "private"
    )
    assert lan_ping(lan, h.ip_of("pa", "priv"))
    assert lan_ping(lan, h.ip_of("pb", "priv"))
    assert not ping(h, "pa", h.ip_of("pb", "priv"))


def test_internal_macvlan_has_no_parent_link(bhost: NamespaceHost) -> None:
    h = bhost
    lan = make_lan(h)
    h.ok("network", "create", "-d", "macvlan", "--internal", "--subnet", "192.168.77.0/24",
         "-o", "parent=lan0", "inside")  # fmt: skip
    net_id = h.inspect_network("inside")["Id"]
    private = f"tm-{net_id[:12]}"
    assert private in h.links()  # the stand-in for Docker's dummy parent
    h.ok("run", "-d", "--name", "i1", "--network", "inside", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "i2", "--network", "inside", "busybox", "sleep", "600")
    link = json.loads(h.in_sandbox("i1", "ip -j -d link show eth0").stdout)[0]
    assert link["linkinfo"]["info_kind"] == "macvlan"
    assert "default" not in h.ok("exec", "i1", "ip", "route")
    assert ping(h, "i1", h.ip_of("i2", "inside"))
    assert not lan_ping(lan, h.ip_of("i1", "inside"))
    assert not ping(h, "i1", LAN_GW)
    h.ok("rm", "-f", "i1", "i2")
    h.ok("network", "rm", "inside")
    deadline = time.monotonic() + 5
    while private in h.links() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert private not in h.links()


def test_macvlan_ipv6_dual_stack(bhost: NamespaceHost) -> None:
    h = bhost
    lan = make_lan(h)
    sh(f"ip netns exec {lan} ip addr add fd77::1/64 dev lan0 nodad")
    h.ok("network", "create", "-d", "macvlan", "--subnet", "192.168.77.0/24", "--gateway", LAN_GW,
         "--ipv6", "--subnet", "fd77::/64", "--gateway", "fd77::1", "-o", "parent=lan0", "v6lan")  # fmt: skip
    h.ok("run", "-d", "--name", "d1", "--network", "v6lan", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "d2", "--network", "v6lan", "busybox", "sleep", "600")
    nets = h.api.get("/containers/d1/json")["NetworkSettings"]["Networks"]["v6lan"]
    v6 = nets["GlobalIPv6Address"]
    assert v6.startswith("fd77::")
    assert sh(f"ip netns exec {lan} busybox ping -c1 -W2 {v6}", check=False).returncode == 0
    assert v6 in h.ok("exec", "d2", "nslookup", "-type=AAAA", "d1")


def test_macvlan_refusals_change_nothing(bhost: NamespaceHost) -> None:
    h = bhost
    lan = make_lan(h)
    # A second link to the LAN, given whole to one passthru network.
    sh(f"ip link add lan1 netns {h.netns} type veth peer name lan1 netns {lan}")
    h.sh("ip link set lan1 up")
    h.ok("network", "create", "-d", "macvlan", "--subnet", "10.76.0.0/24", "-o",
         "parent=lan1", "-o", "macvlan_mode=passthru", "pt")  # fmt: skip
    h.ok("network", "create", "-d", "macvlan", "--subnet", "192.168.77.0/24", "-o",
         "parent=lan0", "base")  # fmt: skip
    before = state(h)
    cases = [
        (["-d", "macvlan", "--subnet", "10.77.0.0/24", "-o", "parent=lan0.20", "x1"],
         "802.1q"),
        (["-d", "macvlan", "--subnet", "10.77.0.0/24", "-o", "parent=nosuchif", "x2"],
         "invalid subinterface vlan name nosuchif, example formatting is eth0.10"),
        (["-d", "macvlan", "-o", "parent=lan0", "-o", "macvlan_mode=loud", "x3"],
         "requested macvlan mode 'loud' is not valid, 'bridge' mode is the macvlan driver default"),
        (["-d", "macvlan", "-o", "parent=lo", "x4"],
         "loopback interface is not a valid macvlan parent link"),
        (["-d", "macvlan", "--subnet", "10.78.0.0/24", "-o", "parent=lan1", "x5"],
         "is already using parent interface lan1 in mode passthru"),
        (["-d", "macvlan", "--subnet", "10.78.0.0/24", "-o", "parent=lan0", "-o",
          "macvlan_mode=passthru", "x15"],
         "cannot use mode passthru, macvlan network"),
        (["-d", "macvlan", "--subnet", "192.168.77.128/25", "-o", "parent=lan0", "x6"],
         "Pool overlaps with other one on this address space"),
        (["-d", "ipvlan", "--subnet", "10.79.0.0/24", "x7"], "this kernel lacks ipvlan"),
        (["-d", "overlay", "x8"], "--cluster-store"),
        (["-d", "brigde", "x9"], 'plugin "brigde" not found'),
        (["--ingress", "x10"], "ingress"),
        (["--scope", "swarm", "x11"], "swarm"),
        (["-o", "encrypted", "x12"], "encrypted"),
        (["-d", "macvlan", "-o", "parent=lan0", "-o", "encrypted", "--subnet", "10.80.0.0/24",
          "x13"], "encrypted"),
        (["-d", "macvlan", "-o", "parent=lan0", "-o", "com.docker.network.driver.mtu=9000",
          "--subnet", "10.81.0.0/24", "x14"], "MTU"),
    ]  # fmt: skip
    for args, message in cases:
        r = h.cli("network", "create", *args)
        assert r.returncode != 0, args
        assert message in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr  # one line
        assert "Traceback" not in r.stderr
    assert state(h) == before


def test_ipv6_without_a_subnet_takes_a_ula_64(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--ipv6", "six")
    configs = h.inspect_network("six")["IPAM"]["Config"]
    v6 = [c for c in configs if ":" in c["Subnet"]]
    assert len(v6) == 1
    subnet = v6[0]["Subnet"]
    assert subnet.startswith("fd") and subnet.endswith("::/64"), subnet
    # A second network gets the next /64 of the same /48.
    h.ok("network", "create", "--ipv6", "seven")
    other = [c for c in h.inspect_network("seven")["IPAM"]["Config"] if ":" in c["Subnet"]]
    assert other[0]["Subnet"] != subnet
    assert other[0]["Subnet"].split(":")[:3] == subnet.split(":")[:3]
    h.ok("run", "-d", "--name", "w6", "--network", "six", "-p", "8086:80", "busybox", *WEB)
    h.ok("run", "-d", "--name", "c6", "--network", "six", "busybox", "sleep", "600")
    w6 = h.api.get("/containers/w6/json")["NetworkSettings"]["Networks"]["six"]
    assert w6["IPAddress"] and w6["GlobalIPv6Address"]
    assert w6["GlobalIPv6Address"] in h.ok("exec", "c6", "nslookup", "-type=AAAA", "w6")
    ptr = ".".join(reversed(_nibbles(w6["GlobalIPv6Address"]))) + ".ip6.arpa"
    assert "w6.six" in h.ok("exec", "c6", "nslookup", "-type=PTR", ptr)
    got = h.ok("exec", "c6", "timeout", "3", "wget", "-qO-", f"http://[{w6['GlobalIPv6Address']}]/")
    assert got.startswith("hello-")
    # The published port answers on the host's IPv6 loopback too.
    r = h.sh("timeout 3 busybox wget -qO- http://[::1]:8086/", check=False)
    assert r.stdout.startswith("hello-"), r.stderr


def test_ipv6_default_pool_is_configurable() -> None:
    """dockerd's --default-address-pool with an IPv6 base replaces the host's ULA /48 (the
    flag replaces every default pool, as dockerd's does: an IPv4 one is given too)."""
    pool = ["--default-address-pool", "base=10.79.0.0/16,size=24"]
    pool += ["--default-address-pool", "base=fd55:1::/56,size=64"]
    with namespace_host(pool) as h:
        h.ok("network", "create", "--ipv6", "cfg6")
        v6 = [c for c in h.inspect_network("cfg6")["IPAM"]["Config"] if ":" in c["Subnet"]]
        assert [c["Subnet"] for c in v6] == ["fd55:1::/64"]
        h.ok("network", "create", "--ipv6", "cfg6b")
        v6 = [c for c in h.inspect_network("cfg6b")["IPAM"]["Config"] if ":" in c["Subnet"]]
        assert [c["Subnet"] for c in v6] == ["fd55:1:0:1::/64"]
        h.import_busybox()
        h.ok("run", "-d", "--name", "p6", "--network", "cfg6", "busybox", "sleep", "600")
        nets = h.api.get("/containers/p6/json")["NetworkSettings"]["Networks"]["cfg6"]
        assert nets["GlobalIPv6Address"].startswith("fd55:1::"), nets


def _nibbles(addr: str) -> list[str]:
    import ipaddress

    return list(ipaddress.IPv6Address(addr).exploded.replace(":", ""))


def test_host_reaches_its_macvlan_containers_through_the_documented_shim(
    bhost: NamespaceHost,
) -> None:
    """docs/macvlan.md's recipe, as written there, on this host's LAN."""
    h = bhost
    make_lan(h)
    h.ok("network", "create", "-d", "macvlan", "--subnet", "192.168.77.0/24", "--gateway",
         LAN_GW, "--ip-range", "192.168.77.128/25", "--aux-address", "host=192.168.77.250",
         "-o", "parent=lan0", "lan-net")  # fmt: skip
    h.ok("run", "-d", "--name", "web", "--network", "lan-net", "busybox", *WEB)
    web = h.ip_of("web", "lan-net")
    assert web == "192.168.77.128"
    # The macvlan limitation: the host itself cannot reach the container through lan0.
    assert h.sh(f"busybox ping -c1 -W1 {web}", check=False).returncode != 0
    h.sh("ip link add lan-shim link lan0 type macvlan mode bridge")
    h.sh("ip addr add 192.168.77.250/32 dev lan-shim && ip link set lan-shim up")
    h.sh("ip route add 192.168.77.128/25 dev lan-shim")
    assert h.sh(f"busybox ping -c1 -W2 {web}", check=False).returncode == 0
    got = h.sh(f"timeout 3 busybox wget -qO- http://{web}/", check=False).stdout
    assert got.startswith("hello-")
    h.sh("ip link del lan-shim")
