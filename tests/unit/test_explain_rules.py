"""explain's pure parts: following a packet through nft's JSON, texts, element forms."""

from __future__ import annotations

import json

import pytest

from tether.cli.explain import render as render_answer
from tether.explain.doctor import _json_elem, _norm_elem, _rendered
from tether.explain.model import parse_port
from tether.explain.nftrules import Packet, Ruleset, counters, normalized, rule_texts
from tether.firewall.policy import Net
from tether.firewall.render import FirewallState, PortRule

BR_A, BR_B = "tb-aaaa", "tb-bbbb"


def _rule(chain: str, handle: int, *expr: object) -> dict[str, object]:
    return {
        "rule": {
            "family": "inet",
            "table": "tether",
            "chain": chain,
            "handle": handle,
            "expr": list(expr),
        }
    }


def _match(left: object, right: object, op: str = "==") -> dict[str, object]:
    return {"match": {"op": op, "left": left, "right": right}}


IP_SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
IP_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
TCP_DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
IIF = {"meta": {"key": "iifname"}}
OIF = {"meta": {"key": "oifname"}}

# tether's table as `nft -j list table inet tether` shows it (abridged from a real one):
# network A (tb-aaaa) with ICC on, network B (tb-bbbb) with ICC off, two user rules.
TABLE = {
    "nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"set": {"name": "bridges", "type": "ifname", "elem": [BR_A, BR_B]}},
        {
            "map": {
                "name": "leaving",
                "type": "ifname",
                "map": "verdict",
                "elem": [
                    [BR_A, {"jump": {"target": "net_aaaa_out"}}],
                    [BR_B, {"jump": {"target": "net_bbbb_out"}}],
                ],
            }
        },
        {"chain": {"name": "user", "handle": 1}},
        _rule(
            "user",
            40,
            _match(IP_SADDR, "10.1.0.2"),
            _match(IP_DADDR, {"set": [{"prefix": {"addr": "10.1.0.0", "len": 28}}, "10.9.9.9"]}),
            _match(TCP_DPORT, {"range": [80, 89]}),
            {"counter": {"packets": 3, "bytes": 180}},
            {"drop": None},
        ),
        _rule(
            "user",
            41,
            _match({"payload": {"protocol": "tcp", "field": "sport"}}, 1234),
            {"accept": None},
        ),
        _rule("forward", 10, {"counter": {"map": {"key": IIF, "data": "@net_tx"}}}),
        _rule("forward", 11, {"jump": {"target": "user"}}),
        _rule("forward", 12, _match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None}),
        _rule("forward", 13, {"vmap": {"key": IIF, "data": "@leaving"}}),
        _rule("net_aaaa_out", 20, _match(OIF, BR_A), {"accept": None}),
        _rule("net_aaaa_out", 21, _match(OIF, "@bridges"), {"drop": None}),
        _rule("net_aaaa_out", 22, {"accept": None}),
        _rule(
            "net_bbbb_out",
            30,
            _match({"ct": {"key": "state"}}, ["established", "related"], "in"),
            {"accept": None},
        ),
        _rule("net_bbbb_out", 31, _match(OIF, BR_B), {"drop": None}),
    ]
}


def pkt(src: str, dst: str, iif: str, oif: str, port: int | None = 80, **kw: object) -> Packet:
    return Packet(4, src, dst, "tcp" if port else "icmp", port, None, iif, oif, **kw)  # type: ignore[arg-type]


def test_a_user_rule_decides_with_its_handle_and_counter() -> None:
    rs = Ruleset(TABLE, {40: "ip saddr 10.1.0.2 ... drop"})
    out = rs.evaluate("forward", pkt("10.1.0.2", "10.1.0.3", BR_A, BR_A, 85))
    assert out.verdict == "drop" and out.rule is not None and out.rule.handle == 40
    assert out.rule.text.startswith("ip saddr") and counters(out.rule) == (3, 180)
    # Outside the rule's port range, its set, or another protocol: tether's own rules decide.
    for p in (
        pkt("10.1.0.2", "10.1.0.3", BR_A, BR_A, 90),
        pkt("10.1.0.2", "10.1.0.30", BR_A, BR_A, 80),
        pkt("10.1.0.2", "10.1.0.3", BR_A, BR_A, None),
    ):
        out = rs.evaluate("forward", p)
        assert out.verdict == "accept" and out.rule is not None and out.rule.handle == 20
    assert rs.evaluate("forward", pkt("10.1.0.2", "10.9.9.9", BR_A, "eth0")).rule.handle == 40  # type: ignore[union-attr]


def test_isolation_icc_and_replies_follow_the_chains() -> None:
    rs = Ruleset(json.dumps(TABLE))
    across = rs.evaluate("forward", pkt("10.1.0.5", "10.2.0.5", BR_A, BR_B))
    assert (across.verdict, across.rule and across.rule.handle) == ("drop", 21)
    assert [r.handle for r in across.met] == [11, 13]  # the jump to user, the vmap
    out = rs.evaluate("forward", pkt("10.1.0.5", "8.8.8.8", BR_A, "eth0"))
    assert (out.verdict, out.rule and out.rule.handle) == ("accept", 22)
    icc = rs.evaluate("forward", pkt("10.2.0.5", "10.2.0.6", BR_B, BR_B))
    assert (icc.verdict, icc.rule and icc.rule.handle) == ("drop", 31)
    reply = rs.evaluate("forward", pkt("10.2.0.5", "10.2.0.6", BR_B, BR_B, ct_state="established"))
    assert (reply.verdict, reply.rule and reply.rule.handle) == ("accept", 30)
    dnat = rs.evaluate(
        "forward", pkt("10.2.0.5", "10.1.0.9", BR_B, BR_A, ct_status=frozenset(["dnat"]))
    )
    assert (dnat.verdict, dnat.rule and dnat.rule.handle) == ("accept", 12)


def test_what_cannot_be_known_is_a_maybe_never_a_verdict() -> None:
    rs = Ruleset(TABLE)
    out = rs.evaluate("user", pkt("10.1.0.5", "10.1.0.6", BR_A, BR_A))
    assert out.verdict == "continue" and [r.handle for r in out.maybe] == [41]  # tcp sport


def test_rule_texts_and_normal_forms() -> None:
    listing = (
        "table inet tether { # handle 1\n\tchain user { # handle 1\n"
        "\t\tip saddr 10.1.0.2 counter packets 5 bytes 300 drop # handle 40\n\t}\n"
        "\tset bridges { # handle 2\n\t\ttype ifname\n\t}\n}\n"
    )
    assert rule_texts(listing) == {40: "ip saddr 10.1.0.2 counter packets 5 bytes 300 drop"}
    assert normalized("ip daddr { 172.18.0.1 } accept") == "ip daddr 172.18.0.1 accept"
    assert (
        normalized("ip6 daddr { fe80::/10, ff00::/8 } accept")
        == "ip6 daddr { fe80::/10, ff00::/8 } accept"
    )
    assert normalized("counter packets 5 bytes 300 drop") == "counter drop"
    # nft prints a masked mark as wide as its mask; tether may write it shorter.
    printed = "meta mark & 0x03000000 != 0x00000000 meta mark set meta mark & 0xfcffffff"
    written = "meta mark & 0x03000000 != 0 meta mark set meta mark & 0xfcffffff"
    assert normalized(printed) == normalized(written)
    assert normalized("meta mark 0x00000001 drop") != normalized("meta mark 0x00000002 drop")
    assert (
        normalized("ether daddr 02:42:0a:00:00:0a accept") == "ether daddr 02:42:0a:00:00:0a accept"
    )


def test_doctor_reads_elements_in_the_form_render_writes_them() -> None:
    a = Net("aaaa", BR_A, ("10.1.0.0/24",), name="a")
    state = FirewallState([a], [PortRule("tcp", "", 8080, "10.1.0.2", 80)])
    chains, elems = _rendered(state)
    assert chains["net_aaaa_out"] == ['oifname "tb-aaaa" accept', "oifname @bridges drop", "accept"]
    assert "user" in chains and chains["user"] == []
    live = {
        "pub4": [[{"concat": ["tcp", 8080]}, {"concat": ["10.1.0.2", 80]}]],
        "leaving": [[BR_A, {"jump": {"target": "net_aaaa_out"}}]],
        "subnets4": [{"prefix": {"addr": "10.1.0.0", "len": 24}}],
        "bridges": [BR_A],
    }
    for name, items in live.items():
        assert {_norm_elem(_json_elem(e)) for e in items} == elems[name], name


@pytest.mark.parametrize(
    ("text", "want"),
    [("80", (80, "tcp")), ("53/udp", (53, "udp")), ("8080/TCP", (8080, "tcp")), ("", None)],
)
def test_ports(text: str, want: tuple[int, str] | None) -> None:
    assert parse_port(text) == want


@pytest.mark.parametrize("text", ["0", "65536", "http", "80/icmp", "80/"])
def test_bad_ports(text: str) -> None:
    if text == "80/":
        assert parse_port(text) == (80, "tcp")
        return
    with pytest.raises(ValueError):
        parse_port(text)


def test_the_answer_for_people() -> None:
    text = render_answer(
        {
            "From": "web",
            "To": "api",
            "Port": "80/tcp",
            "Reachable": False,
            "Target": "10.1.0.3:80",
            "Reasons": [
                {"Step": "names", "Ok": True, "Object": "api", "Text": "resolves", "Fix": ""},
                {
                    "Step": "policy",
                    "Ok": False,
                    "Object": "nft rule inet tether user handle 40",
                    "Text": "rule drops it",
                    "Fix": "nft delete rule inet tether user handle 40",
                },
            ],
        }
    )
    lines = text.splitlines()
    assert lines[0] == "NOT REACHABLE: web cannot reach api on 80/tcp (10.1.0.3:80)"
    assert " 1. [ok] names: resolves" in lines
    assert " 2. [NO] policy: rule drops it" in lines
    assert "         fix: nft delete rule inet tether user handle 40" in lines


def test_vip_backends_in_the_three_layouts_of_tether_svc() -> None:
    from tether.explain.nftrules import vip_backends, vip_entries

    # A plain set per task count, each matched by one rule of chain `out`.
    by_set = {
        "nftables": [
            {"set": {"name": "vips_n2", "elem": ["10.0.1.2"]}},
            {"set": {"name": "vips_n0", "elem": ["10.0.1.9"]}},
            {"set": {"name": "vips_n3"}},
            {
                "map": {
                    "name": "backends",
                    "elem": [
                        [{"concat": ["10.0.1.2", 1]}, "10.0.1.7"],
                        [{"concat": ["10.0.1.2", 0]}, "10.0.1.5"],
                    ],
                }
            },
            _rule("out", 4, {"match": {"op": "==", "left": {}, "right": "@vips_n2"}}),
            _rule("out", 5, {"match": {"op": "==", "left": {}, "right": "@vips_n0"}}),
        ]
    }
    rs = Ruleset(by_set)
    assert vip_backends(rs) == {"10.0.1.2": ["10.0.1.5", "10.0.1.7"], "10.0.1.9": []}
    entries = vip_entries(rs)
    assert {v: (w, r.handle if r else None) for v, (w, r) in entries.items()} == {
        "10.0.1.2": ("vips_n2", 4),
        "10.0.1.9": ("vips_n0", 5),
    }

    counted = {
        "nftables": [
            {
                "map": {
                    "name": "vips",
                    "elem": [
                        ["10.0.1.2", {"jump": {"target": "n2"}}],
                        ["10.0.1.9", {"jump": {"target": "n0"}}],
                    ],
                }
            },
            {
                "map": {
                    "name": "backends",
                    "elem": [
                        [{"concat": ["10.0.1.2", 1]}, "10.0.1.7"],
                        [{"concat": ["10.0.1.2", 0]}, "10.0.1.5"],
                    ],
                }
            },
            _rule("n0", 5, {"drop": None}),
        ]
    }
    assert vip_backends(Ruleset(counted)) == {"10.0.1.2": ["10.0.1.5", "10.0.1.7"], "10.0.1.9": []}
    numgen = {
        "dnat": {
            "addr": {
                "map": {
                    "key": {"numgen": {"mode": "random", "mod": 2}},
                    "data": {"set": [[0, "10.0.1.5"], [1, "10.0.1.7"]]},
                }
            }
        }
    }
    per_service = {
        "nftables": [
            {"map": {"name": "vips", "elem": [["10.0.1.2", {"jump": {"target": "s_web"}}]]}},
            _rule("s_web", 7, numgen),
        ]
    }
    assert vip_backends(Ruleset(per_service)) == {"10.0.1.2": ["10.0.1.5", "10.0.1.7"]}
