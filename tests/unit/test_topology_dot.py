"""The topology's pure parts: the DOT text, ports, and the firewall's per-network counters."""

from __future__ import annotations

from typing import Any

from tether.firewall.render import FirewallState, NetRule, render
from tether.topology.dot import port_text
from tether.topology.dot import render as dot


def net(i: int, name: str, **kw: Any) -> dict[str, Any]:
    return {
        "Id": f"{i:02d}" + "a" * 62,
        "Name": name,
        "Driver": kw.get("driver", "bridge"),
        "Scope": "local",
        "Internal": kw.get("internal", False),
        "ICC": kw.get("icc", True),
        "Attachable": False,
        "Subnets": [f"10.{i}.0.0/24"],
        "Gateways": [f"10.{i}.0.1"],
        "Devices": [{"Name": f"tb-{i:02d}", "Kind": "bridge"}],
    }


def ctr(j: int, name: str, nets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "Id": f"{j:03d}" + "c" * 61,
        "Name": name,
        "Image": "busybox",
        "State": kw.get("state", "running"),
        "Node": kw.get("node", "h1"),
        "Local": kw.get("local", True),
        "Service": "",
        "NetworkMode": nets[0]["Name"] if nets else "none",
        "Endpoints": [
            {
                "NetworkID": n["Id"],
                "Network": n["Name"],
                "Interface": "eth0",
                "IPv4": f"10.{int(n['Id'][:2])}.0.{j + 2}",
                "IPv6": "",
                "MAC": "",
            }
            for n in nets
        ],
        "Ports": kw.get("ports", []),
    }


def topo(nets: list[dict[str, Any]], ctrs: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "Node": {"Name": "h1", "Addr": ""},
        "Nodes": kw.get("nodes", []),
        "Networks": nets,
        "Containers": ctrs,
        "Services": kw.get("services", []),
    }


def test_single_network_containers_are_rows_and_multi_homed_ones_are_boxes() -> None:
    front, back = net(1, "front"), net(2, "back", internal=True)
    text = dot(topo([front, back], [ctr(1, "web", [front]), ctr(2, "api", [front, back])]))
    assert text.startswith("digraph tether {")
    # web: a row of front's table, linkable; api: a node of its own with an edge per network.
    assert 'PORT="c_001ccccccccc" HREF="#c-001' in text
    assert "c_002ccccccccc [id=" in text
    assert 'c_002ccccccccc -> n_01aaaaaaaaaa:h [label="10.1.0.4"' in text
    assert 'c_002ccccccccc -> n_02aaaaaaaaaa:h [label="10.2.0.4"' in text
    assert "internal: no way out" in text
    assert "2 networks, 2 containers" in text


def test_user_text_is_escaped_for_graphviz() -> None:
    evil = net(1, 'n<b>"&')
    text = dot(topo([evil], [ctr(1, "x", [evil])]))
    assert "n&lt;b&gt;&quot;&amp;" in text
    assert 'n<b>"&' not in text


def test_remote_stopped_and_services() -> None:
    ov = net(3, "ov", driver="overlay")
    remote = ctr(1, "far", [ov], local=False, node="h2")
    stopped = ctr(2, "gone", [ov], state="exited")
    svc = {
        "Id": "s" * 25,
        "Name": "websvc",
        "Mode": "replicated",
        "Replicas": 2,
        "VIPs": [{"NetworkID": ov["Id"], "Network": "ov", "Addr": "10.3.0.100"}],
        "Ports": [],
        "Tasks": [
            {
                "Id": "t1",
                "Name": "websvc.1.t1",
                "Slot": 1,
                "Node": "h2",
                "State": "running",
                "Container": remote["Id"],
            }
        ],
    }
    nodes = [
        {"Name": "h1", "Addr": "192.0.2.1", "Status": "ready", "Self": True},
        {"Name": "h2", "Addr": "192.0.2.2", "Status": "down", "Self": False},
    ]
    text = dot(topo([ov], [remote, stopped], services=[svc], nodes=nodes))
    assert "far</B> @h2" in text
    assert '<FONT COLOR="#a0aec0">' in text  # the stopped one greyed
    assert 'label="VIP 10.3.0.100"' in text and "websvc\\nreplicated 1/2" in text
    assert (
        "s_sssssssssssss"[:14] in text and "-> n_03aaaaaaaaaa:c_001ccccccccc [style=dotted" in text
    )
    assert "(this node)" in text and ">down<" in text


def test_port_text() -> None:
    ports = [
        {"HostIP": "0.0.0.0", "HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"},
        {"HostIP": "::", "HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"},
        {"HostIP": "127.0.0.1", "HostPort": 53, "ContainerPort": 53, "Proto": "udp"},
    ]
    assert port_text(ports) == "8080→80/tcp, 127.0.0.1:53→53/udp"
    many = [
        {"HostIP": "", "HostPort": 9000 + i, "ContainerPort": i, "Proto": "tcp"} for i in range(5)
    ]
    assert port_text(many).endswith(", +2")


def test_network_counters_in_the_firewall() -> None:
    nets = [
        NetRule("aaaa", "tb-aaaa", ("10.0.0.0/24",)),
        NetRule("bbbb", "tb-bbbb", ("10.1.0.0/24",)),
    ]
    text = render(FirewallState(nets), stale_chains={"net_cccc_out", "net_cccc_in", "net_aaaa_out"})
    assert (
        "add counter inet tether tx_aaaa\n" in text and "add counter inet tether rx_bbbb\n" in text
    )
    assert 'add element inet tether net_tx { "tb-aaaa" : "tx_aaaa", "tb-bbbb" : "tx_bbbb" }' in text
    # A network gone: its counters go (declared first, so a missing one is no error).
    assert "add counter inet tether tx_cccc\ndelete counter inet tether tx_cccc\n" in text
    assert "delete counter inet tether tx_aaaa" not in text
    forward = [
        line for line in text.splitlines() if line.startswith("add rule inet tether forward ")
    ]
    assert forward[:2] == [
        "add rule inet tether forward counter name iifname map @net_tx",
        "add rule inet tether forward counter name oifname map @net_rx",
    ]
    # (then iptables' DOCKER-USER verdict, firewall/dockeruser.py, and the user chain)
    assert forward[4] == "add rule inet tether forward jump user"
