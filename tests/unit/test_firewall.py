"""The ruleset renderer and port specs: pure functions, checked without a kernel."""

from __future__ import annotations

import pytest

from tether.firewall.publish import specs_for
from tether.firewall.render import FirewallState, NetRule, PortRule, port_elements, render
from tether.model import Container
from tether.portspec import parse_publish

NETS = [
    NetRule("aaaa", "tb-aaaa", ("172.18.0.0/16",)),
    NetRule("bbbb", "tb-bbbb", ("10.1.0.0/24",), internal=True),
    NetRule("cccc", "tb-cccc", ("10.2.0.0/24",), icc=False, masquerade=False),
]


def rules_of(text: str, chain: str) -> list[str]:
    prefix = f"add rule inet tether {chain} "
    return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


def test_user_chain_is_declared_but_never_flushed() -> None:
    text = render(FirewallState(NETS))
    assert "add chain inet tether user\n" in text
    assert "flush chain inet tether user" not in text
    # (the per-network counters come first: they count, they decide nothing)
    forward = [r for r in rules_of(text, "forward") if not r.startswith("counter name")]
    # iptables' DOCKER-USER first: what it ACCEPTed (SEEN without RETURNED) is accepted,
    # the marks cleared either way (firewall/dockeruser.py), then our own user chain.
    assert forward[:3] == [
        "meta mark & 0x03000000 == 0x01000000 meta mark set meta mark & 0xfcffffff accept",
        "meta mark & 0x03000000 != 0 meta mark set meta mark & 0xfcffffff",
        "jump user",
    ]
    assert "type filter hook forward priority filter + 10;" in text
    # (internal networks' drops come next, then published ports: test_policy.py)
    assert forward[3:5] == ['iifname "tb-bbbb" oifname != "tb-bbbb" drop', "ct status dnat accept"]


def test_isolation_icc_and_internal_verdicts() -> None:
    text = render(FirewallState(NETS))
    assert rules_of(text, "net_aaaa_out") == [
        'oifname "tb-aaaa" accept',
        "oifname @bridges drop",
        "accept",
    ]
    assert rules_of(text, "net_aaaa_in") == ["ct state established,related accept", "drop"]
    assert rules_of(text, "net_bbbb_out") == ['oifname "tb-bbbb" accept', "drop"]
    assert rules_of(text, "net_bbbb_in") == ["drop"]
    assert rules_of(text, "net_cccc_out")[0] == 'oifname "tb-cccc" drop'
    assert (
        'add element inet tether leaving { "tb-aaaa" : jump net_aaaa_out, "tb-bbbb" : jump net_bbbb_out, "tb-cccc" : jump net_cccc_out }'
        in text
    )


def test_masquerade_only_where_enabled_and_not_internal() -> None:
    post = rules_of(render(FirewallState(NETS)), "postrouting")
    assert 'ip saddr 172.18.0.0/16 oifname != "tb-aaaa" masquerade' in post
    assert not any(r.startswith("ip saddr 10.1.0.0/24") for r in post)
    assert not any(r.startswith("ip saddr 10.2.0.0/24") for r in post)
    assert (
        'ct status dnat ip saddr 10.2.0.0/24 oifname "tb-cccc" masquerade' in post
    )  # hairpin still
    assert "ct status dnat ip saddr 127.0.0.0/8 masquerade" in post


def test_ports_are_map_elements_and_stale_chains_go() -> None:
    ports = [
        PortRule("tcp", "", 8080, "172.18.0.2", 80),
        PortRule("udp", "127.0.0.1", 53, "172.18.0.3", 53),
    ]
    text = render(FirewallState(NETS, ports), stale_chains={"net_dead_out", "user", "forward"})
    assert "add element inet tether pub4 { tcp . 8080 : 172.18.0.2 . 80 }" in text
    assert "add element inet tether pub4ip { 127.0.0.1 . udp . 53 : 172.18.0.3 . 53 }" in text
    assert "delete chain inet tether net_dead_out" in text
    assert (
        "delete chain inet tether user" not in text
        and "delete chain inet tether forward" not in text
    )
    # Adding or removing ports is element changes only, whatever the number of ports.
    assert (
        port_elements(ports[:1], "add")
        == "add element inet tether pub4 { tcp . 8080 : 172.18.0.2 . 80 }\n"
    )
    assert port_elements(ports[:1], "delete") == "delete element inet tether pub4 { tcp . 8080 }\n"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("99999:80", "invalid hostPort: 99999"),
        ("abc:80", "invalid hostPort: abc"),
        ("8082:80/sctpx", "invalid proto: sctpx"),
        (
            "8083-8085:80-81",
            "invalid ranges specified for container and host Ports: 80-81 and 8083-8085",
        ),
        ("1.2.3.4.5:8087:80", "invalid IP address: 1.2.3.4.5"),
    ],
)
def test_publish_flag_errors_in_dockers_words(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_publish([spec], [])


def test_publish_flag_forms() -> None:
    exposed, bindings = parse_publish(
        [
            "8080:80",
            "127.0.0.1:8081:80",
            "[::1]:8082:80",
            "80",
            "53:53/udp",
            "5000-5001:5000-5001",
            "127.0.0.1::90",
            "8088:0",
        ],
        ["7000-7001", "9/udp"],
    )
    assert bindings["80/tcp"] == [
        {"HostIp": "", "HostPort": "8080"},
        {"HostIp": "127.0.0.1", "HostPort": "8081"},
        {"HostIp": "::1", "HostPort": "8082"},
        {"HostIp": "", "HostPort": ""},
    ]
    assert bindings["53/udp"] == [{"HostIp": "", "HostPort": "53"}]
    assert bindings["5001/tcp"] == [{"HostIp": "", "HostPort": "5001"}]
    assert bindings["90/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": ""}]
    assert bindings["0/tcp"] == [{"HostIp": "", "HostPort": "8088"}]
    assert {"7000/tcp", "7001/tcp", "9/udp", "80/tcp"} <= set(exposed)


def test_specs_expand_host_addresses_and_publish_all() -> None:
    c = Container(
        "x" * 64,
        "c",
        "",
        "busybox",
        "",
        "sh",
        [],
        {"ExposedPorts": {"7000/tcp": {}}},
        {
            "PortBindings": {
                "80/tcp": [
                    {"HostIp": "", "HostPort": "8080"},
                    {"HostIp": "::1", "HostPort": "8082"},
                ]
            },
            "PublishAllPorts": True,
        },
    )
    specs = specs_for(c)
    assert [(s.proto, s.ips, s.host_port, s.container_port) for s in specs] == [
        ("tcp", ["0.0.0.0", "::"], "8080", 80),
        ("tcp", ["::1"], "8082", 80),
        ("tcp", ["0.0.0.0", "::"], "", 7000),
    ]


def test_loopback_destinations_are_dropped_off_lo_before_any_nat() -> None:
    text = render(FirewallState(NETS))
    assert "type filter hook prerouting priority raw" in text  # before conntrack and DNAT
    assert rules_of(text, "guard") == [
        'iifname != "lo" ip daddr 127.0.0.0/8 drop',
        'iifname != "lo" ip6 daddr ::1 drop',
    ]


def test_internal_networks_reach_only_their_gateway_on_the_host() -> None:
    nets = [
        NetRule("aaaa", "tb-aaaa", ("172.18.0.0/16",), gateways4=("172.18.0.1",)),
        NetRule(
            "bbbb",
            "tb-bbbb",
            ("10.1.0.0/24",),
            ("fd00:1::/64",),
            internal=True,
            gateways4=("10.1.0.1",),
            gateways6=("fd00:1::1",),
        ),
    ]
    text = render(FirewallState(nets))
    assert "type filter hook input priority filter" in text
    assert rules_of(text, "input") == ["iifname vmap @hostbound"]
    assert 'add element inet tether hostbound { "tb-bbbb" : jump net_bbbb_host }' in text
    assert rules_of(text, "net_bbbb_host") == [
        "ct state established,related accept",
        "ip daddr { 10.1.0.1 } accept",
        "ip6 daddr { fd00:1::1, fe80::/10, ff00::/8 } accept",
        "meta pkttype { broadcast, multicast } accept",
        "drop",
    ]
    assert "net_aaaa_host" not in text  # a normal network may reach the host as in Docker
    # The chain of a network that is gone is deleted with the rest of its chains.
    again = render(FirewallState(nets[:1]), stale_chains={"net_bbbb_host", "net_bbbb_out"})
    assert "delete chain inet tether net_bbbb_host" in again
