"""Networks on a real kernel: each test on its own namespace-host, checking the bridges too."""

from __future__ import annotations

import json
import threading

import pytest

from nshost import NamespaceHost, namespace_host

pytestmark = pytest.mark.integration


def bridge_addrs(host: NamespaceHost, name: str) -> set[str]:
    link = host.links()[name]
    return {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["scope"] != "link"}


def test_default_networks_and_the_default_bridge(host: NamespaceHost) -> None:
    out = host.ok("network", "ls")
    lines = out.splitlines()
    assert lines[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
    rows = [line.split() for line in lines[1:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("bridge", "bridge", "local"),
        ("host", "host", "local"),
        ("none", "null", "local"),
    ]
    assert all(len(r[0]) == 12 for r in rows)
    bridge = json.loads(host.ok("network", "inspect", "bridge"))[0]
    assert len(bridge["Id"]) == 64
    assert bridge["IPAM"] == {
        "Driver": "default",
        "Options": None,
        "Config": [{"Subnet": "172.17.0.0/16"}],
    }
    assert bridge["Options"]["com.docker.network.bridge.name"] == "tether0"
    assert bridge_addrs(host, "tether0") == {"172.17.0.1/16"}


def test_default_bridge_avoids_a_route_the_host_already_has() -> None:
    from nshost import NamespaceHost

    h = NamespaceHost()
    try:
        # The host already routes 172.17.0.0/16 (say, Docker's docker0): take the next pool.
        h.sh("ip addr add 172.17.0.5/16 dev lo")
        h.start()
        cfg = h.inspect_network("bridge")["IPAM"]["Config"]
        assert cfg == [{"Subnet": "172.18.0.0/16"}]
        assert bridge_addrs(h, "tether0") == {"172.18.0.1/16"}
        # ...and the next user network goes on from there.
        h.ok("network", "create", "n1")
        assert h.inspect_network("n1")["IPAM"]["Config"] == [
            {"Subnet": "172.19.0.0/16", "Gateway": "172.19.0.1"}
        ]
    finally:
        h.cleanup()


def test_create_with_every_option_builds_the_bridge(host: NamespaceHost) -> None:
    net_id = host.ok(
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        "10.123.0.0/16",
        "--gateway",
        "10.123.0.254",
        "--ip-range",
        "10.123.5.0/24",
        "--aux-address",
        "reserved1=10.123.5.7",
        "--opt",
        "com.docker.network.driver.mtu=1450",
        "--internal",
        "--label",
        "tier=test",
        "--label",
        "owner=anchors",
        "anc-custom",
    ).strip()
    assert len(net_id) == 64 and all(c in "0123456789abcdef" for c in net_id)
    info = json.loads(host.ok("network", "inspect", "anc-custom"))[0]
    assert info["Id"] == net_id and info["Internal"] is True and info["EnableIPv6"] is False
    assert info["IPAM"] == {
        "Driver": "default",
        "Options": {},
        "Config": [
            {
                "Subnet": "10.123.0.0/16",
                "IPRange": "10.123.5.0/24",
                "Gateway": "10.123.0.254",
                "AuxiliaryAddresses": {"reserved1": "10.123.5.7"},
            }
        ],
    }
    assert info["Options"] == {"com.docker.network.driver.mtu": "1450"}
    assert info["Labels"] == {"owner": "anchors", "tier": "test"}
    assert info["ConfigFrom"] == {"Network": ""} and info["Containers"] == {}
    # The kernel: a bridge named from the id, with the gateway and the MTU.
    link = host.links()[f"tb-{net_id[:12]}"]
    assert link["linkinfo"]["info_kind"] == "bridge"
    assert link["mtu"] == 1450
    assert bridge_addrs(host, f"tb-{net_id[:12]}") == {"10.123.0.254/16"}
    host.ok("network", "rm", "anc-custom")
    assert f"tb-{net_id[:12]}" not in host.links()


def test_custom_bridge_name_and_ipv6(host: NamespaceHost) -> None:
    host.ok(
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.30.0.0/24",
        "--subnet",
        "fd00:30::/64",
        "-o",
        "com.docker.network.bridge.name=br-six",
        "six",
    )
    assert bridge_addrs(host, "br-six") == {"10.30.0.1/24", "fd00:30::1/64"}
    info = host.inspect_network("six")
    assert info["EnableIPv6"] is True
    assert info["Options"] == {"com.docker.network.bridge.name": "br-six"}
    host.ok("network", "rm", "six")
    assert "br-six" not in host.links()


def test_a_bridge_the_user_made_is_used_and_kept(host: NamespaceHost) -> None:
    host.sh("ip link add mybr0 type bridge")
    host.ok(
        "network",
        "create",
        "--subnet",
        "10.40.0.0/24",
        "-o",
        "com.docker.network.bridge.name=mybr0",
        "mine",
    )
    assert bridge_addrs(host, "mybr0") == {"10.40.0.1/24"}
    host.ok("network", "rm", "mine")
    assert "mybr0" in host.links() and bridge_addrs(host, "mybr0") == set()
    host.sh("ip link del mybr0")


def test_default_pools_follow_dockers_cursor(host: NamespaceHost) -> None:
    for i in range(1, 4):
        host.ok("network", "create", f"p{i}")
    subnets = {
        n: host.inspect_network(n)["IPAM"]["Config"][0]["Subnet"] for n in ("p1", "p2", "p3")
    }
    assert subnets == {"p1": "172.18.0.0/16", "p2": "172.19.0.0/16", "p3": "172.20.0.0/16"}
    host.ok("network", "rm", "p2")
    host.ok("network", "create", "p4")
    assert host.inspect_network("p4")["IPAM"]["Config"][0]["Subnet"] == "172.21.0.0/16"


def test_configured_default_address_pool() -> None:
    with namespace_host(["--default-address-pool", "base=10.77.0.0/16,size=24"]) as h:
        assert h.inspect_network("bridge")["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24"}]
        h.ok("network", "create", "a")
        assert h.inspect_network("a")["IPAM"]["Config"] == [
            {"Subnet": "10.77.1.0/24", "Gateway": "10.77.1.1"}
        ]


BAD_CREATES = [
    (
        ["--subnet", "10.150.5.0/24", "x"],
        "Error response from daemon: Pool overlaps with other one on this address space",
    ),
    (
        ["--subnet", "172.17.5.0/24", "x"],
        "Error response from daemon: Pool overlaps with other one on this address space",
    ),
    (
        ["--subnet", "10.151.0.0/24", "--gateway", "10.152.0.1", "x"],
        "no matching subnet for gateway 10.152.0.1",
    ),
    (
        ["--subnet", "10.153.0.0/24", "--ip-range", "10.154.0.0/25", "x"],
        "no matching subnet for range 10.154.0.0/25",
    ),
    (
        ["--subnet", "10.157.0.0/24", "--aux-address", "x=10.158.0.1", "x"],
        "no matching subnet for aux-address 10.158.0.1",
    ),
    (
        ["--gateway", "10.159.0.1", "x"],
        "every ip-range or gateway must have a corresponding subnet",
    ),
    (
        ["--subnet", "10.155.0.0/33", "x"],
        "Error response from daemon: Invalid subnet 10.155.0.0/33 : invalid CIDR address: 10.155.0.0/33",
    ),
    (
        ["--subnet", "notacidr", "x"],
        "Error response from daemon: Invalid subnet notacidr : invalid CIDR address: notacidr",
    ),
    (["n1"], "Error response from daemon: network with name n1 already exists"),
    (
        ["--subnet", "10.1.0.0/24", "--subnet", "10.2.0.0/24", "x"],
        "Error response from daemon: bridge driver doesn't support multiple subnets",
    ),
    (
        ["-o", "com.docker.network.driver.mtu=abc", "x"],
        'Error response from daemon: failed to parse com.docker.network.driver.mtu value: abc (strconv.Atoi: parsing "abc": invalid syntax)',
    ),
    (
        ["-o", "com.docker.network.driver.mtu=99999", "x"],
        "Error response from daemon: invalid MTU number: 99999",
    ),
    (["-d", "nosuchdriver", "x"], 'Error response from daemon: plugin "nosuchdriver" not found'),
    (
        ["--ipv6", "--subnet", "fe80::/80", "x"],
        "Error response from daemon: 'fe80::/80' clashes with the Link-Local prefix 'fe80::/64'",
    ),
]


def test_bad_input_is_refused_and_changes_nothing(host: NamespaceHost) -> None:
    host.ok("network", "create", "--subnet", "10.150.0.0/16", "n1")
    before_nets = host.ok("network", "ls", "--no-trunc")
    before_links = sorted(host.links())
    for args, message in BAD_CREATES:
        r = host.cli("network", "create", *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == message, args
        assert r.stdout == ""
    assert host.ok("network", "ls", "--no-trunc") == before_nets
    assert sorted(host.links()) == before_links
    # Removing predefined or unknown networks.
    for name in ("bridge", "host", "none"):
        r = host.cli("network", "rm", name)
        assert r.returncode == 1
        assert (
            r.stderr.splitlines()[0]
            == f"Error response from daemon: {name} is a pre-defined network and cannot be removed"
        )
    r = host.cli("network", "rm", "nosuchnet")
    assert (
        r.returncode == 1
        and r.stderr.splitlines()[0] == "Error response from daemon: network nosuchnet not found"
    )
    r = host.cli("network", "inspect", "nosuchnet")
    assert r.returncode == 1 and r.stdout.strip() == "[]"
    assert r.stderr.strip() == "Error response from daemon: network nosuchnet not found"
    assert host.ok("network", "ls", "--no-trunc") == before_nets


def test_rm_several_ls_filters_formats_and_prune(host: NamespaceHost) -> None:
    for name, label in (
        ("front", "tier=web"),
        ("back", "tier=db"),
        ("spare1", "x=1"),
        ("spare2", "x=2"),
    ):
        host.ok("network", "create", "--label", label, name)
    assert (
        host.ok("network", "ls", "--filter", "label=tier=web", "--format", "{{.Name}}") == "front\n"
    )
    assert (
        host.ok("network", "ls", "--filter", "name=spare", "--format", '{{.Name}} {{.Label "x"}}')
        == "spare1 1\nspare2 2\n"
    )
    assert (
        host.ok("network", "ls", "--filter", "type=builtin", "--format", "{{.Name}}")
        == "bridge\nhost\nnone\n"
    )
    assert (
        host.ok("network", "ls", "--filter", "driver=null", "-q").strip()
        == host.inspect_network("none")["Id"][:12]
    )
    full = host.ok("network", "ls", "--no-trunc", "-q").split()
    assert all(len(i) == 64 for i in full) and len(full) == 7
    assert (
        host.ok("network", "inspect", "--format", "{{.Name}}:{{json .Labels}}", "front", "back")
        == 'front:{"tier":"web"}\nback:{"tier":"db"}\n'
    )
    assert host.ok("network", "rm", "spare1", "spare2") == "spare1\nspare2\n"
    out = host.ok("network", "prune", "-f")
    assert out == "Deleted Networks:\nback\nfront\n" or out == "Deleted Networks:\nfront\nback\n"
    assert host.ok("network", "ls", "--format", "{{.Name}}") == "bridge\nhost\nnone\n"
    assert not [name for name in host.links() if name.startswith("tb-")]


def test_state_survives_a_restart(host: NamespaceHost) -> None:
    host.ok("network", "create", "--subnet", "10.60.0.0/24", "keep")
    before = host.inspect_network("keep")
    ids_before = host.ok("network", "ls", "-q", "--no-trunc")
    host.restart()
    assert host.inspect_network("keep") == before
    assert host.ok("network", "ls", "-q", "--no-trunc") == ids_before
    host.ok("network", "create", "next")  # the cursor survived too
    assert host.inspect_network("next")["IPAM"]["Config"][0]["Subnet"] == "172.18.0.0/16"


def test_reconciler_rebuilds_missing_and_removes_strays(host: NamespaceHost) -> None:
    net_id = host.ok("network", "create", "--subnet", "10.61.0.0/24", "r1").strip()
    bridge = f"tb-{net_id[:12]}"
    host.stop()
    host.sh(f"ip link del {bridge}")
    # A bridge tether made for a network that is gone (its alias says whose it was): removed.
    host.sh("ip link add tb-0123456789ab type bridge")
    host.sh(f"ip link set tb-0123456789ab alias tether:net:{'0' * 64}")
    # A tether-looking name without tether's alias is someone else's: it stays.
    host.sh("ip link add tb-00000000000a type bridge")
    host.sh("ip link add keepme type bridge")  # not ours: must stay
    host.start()
    links = host.links()
    assert bridge in links and bridge_addrs(host, bridge) == {"10.61.0.1/24"}
    assert "tb-0123456789ab" not in links and "keepme" in links
    assert "tb-00000000000a" in links
    host.sh("ip link del tb-00000000000a")
    # While running: a bridge deleted by hand comes back within seconds.
    host.sh(f"ip link del {bridge}")
    host.sh(
        f"for i in $(seq 100); do ip link show {bridge} >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1",
        timeout=20,
    )
    host.sh("ip link del keepme")


def test_concurrent_creates_never_share_a_subnet(host: NamespaceHost) -> None:
    errors: list[Exception] = []

    def create(i: int) -> None:
        try:
            host.api.post("/networks/create", {"Name": f"c{i}"})
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    subnets = [
        n["IPAM"]["Config"][0]["Subnet"]
        for n in host.api.get("/networks")
        if n["Name"].startswith("c")
    ]
    assert len(subnets) == 20 and len(set(subnets)) == 20
    bridges = [n for n in host.links() if n.startswith("tb-")]
    assert len(bridges) == 20
