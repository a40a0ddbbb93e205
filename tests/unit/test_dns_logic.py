"""The DNS decisions, without sockets: records, answers, truncation, and a fuzz."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.dns.answer import Shuffled, View, decide, error_response, question_end, truncated
from tether.dns.records import Member, Zone

ZONE = Zone.build(
    [
        Member("app", "web", "aaaaaaaaaaaa", "webhost", ("front",), "172.18.0.2"),
        Member("app", "web2", "bbbbbbbbbbbb", "", ("front",), "172.18.0.3", "fd00::3"),
        Member("db", "pg", "cccccccccccc", "", (), "10.5.0.2"),
    ],
    1,
)
APP = View(("app",), ("198.18.53.53",))


def query(name: str, rdtype: str = "A", **edns: int) -> bytes:
    q = dns.message.make_query(name, rdtype)
    if edns:
        q.use_edns(0, payload=edns["payload"])
    return q.to_wire()


def test_lookup_scopes_names_to_the_askers_networks() -> None:
    assert ZONE.lookup(("app",), "WEB.") == [("172.18.0.2", "")]
    assert ZONE.lookup(("app",), "web.app.") == [("172.18.0.2", "")]
    assert ZONE.lookup(("app",), "webhost.") == [("172.18.0.2", "")]
    assert ZONE.lookup(("app",), "pg.") is None
    assert ZONE.lookup(("app", "db"), "pg.db.") == [("10.5.0.2", "")]
    assert sorted(ZONE.lookup(("app",), "front.") or []) == [
        ("172.18.0.2", ""),
        ("172.18.0.3", "fd00::3"),
    ]
    assert ZONE.reverse(("app",), "2.0.18.172.in-addr.arpa.") == "web.app."


def test_answers_nodata_and_forwarding() -> None:
    d = decide(query("web"), ZONE, APP)
    m = dns.message.from_wire(d.wire)
    assert d.kind == "answer" and m.answer[0].ttl == 600 and not m.flags & dns.flags.AA
    assert isinstance(d.cache, bytes) and d.cache == d.wire[2:]
    d = decide(query("web", "AAAA"), ZONE, APP)
    assert d.kind == "answer" and dns.message.from_wire(d.wire).answer == []
    assert decide(query("web2", "AAAA"), ZONE, APP).kind == "answer"
    assert decide(query("pg"), ZONE, APP).kind == "forward"
    assert decide(query("web", "MX"), ZONE, APP).kind == "forward"
    assert decide(query("single"), ZONE, View(("app",), (), ndots_set=True)).kind == "answer"
    assert decide(query("two.labels"), ZONE, View(("app",), (), ndots_set=True)).kind == "forward"


def test_round_robin_cache_entry_reorders_whole_records() -> None:
    d = decide(query("front"), ZONE, APP)
    assert isinstance(d.cache, Shuffled) and len(d.cache.chunks) == 2
    orders = set()
    for _ in range(50):
        wire = b"\x12\x34" + d.cache.render()
        m = dns.message.from_wire(wire)
        ips = [r.to_text() for r in m.answer[0]]
        assert sorted(ips) == ["172.18.0.2", "172.18.0.3"]
        orders.add(tuple(ips))
    assert len(orders) == 2


def test_truncation_and_error_replies_echo_id_and_question() -> None:
    members = [
        Member("app", f"c{i}", f"{i:012x}", "", ("many",), f"172.18.1.{i}") for i in range(60)
    ]
    zone = Zone.build(members, 1)
    d = decide(query("many"), zone, APP)
    m = dns.message.from_wire(d.wire)
    assert m.flags & dns.flags.TC and m.answer == []
    assert (
        len(dns.message.from_wire(decide(query("many", payload=4096), zone, APP).wire).answer[0])
        == 60
    )
    assert (
        len(dns.message.from_wire(decide(query("many"), zone, APP, over_tcp=True).wire).answer[0])
        == 60
    )
    q = query("whatever")
    for wire in (error_response(q, dns.rcode.SERVFAIL), truncated(q)):
        m = dns.message.from_wire(wire)
        assert (
            m.id == dns.message.from_wire(q).id and m.question == dns.message.from_wire(q).question
        )
    assert question_end(b"\x00" * 5) == -1


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=700))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    d = decide(data, ZONE, APP)
    assert d.kind in ("answer", "forward", "drop")
    if d.kind == "answer":
        assert d.wire[:2] == data[:2]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)), max_size=8), st.integers(0, 60))
def test_fuzz_mutated_queries_never_raise(flips: list[tuple[int, int]], cut: int) -> None:
    wire = bytearray(query("front.app", "A", payload=1232))
    for pos, val in flips:
        if pos < len(wire):
            wire[pos] = val
    data = bytes(wire[: len(wire) - cut])
    d = decide(data, ZONE, APP)
    assert d.kind in ("answer", "forward", "drop")


def test_incremental_zone_equals_a_rebuild() -> None:
    """Zone.apply (what one container's change costs) gives what a rebuild from scratch
    gives, for any sequence of containers coming and going, and never edits the old zone."""
    import random

    from tether.dns.records import Member, Zone

    rng = random.Random(7)
    pool = [
        Member(
            network=rng.choice(["n1", "n2"]),
            name=f"c{i}",
            short_id=f"{i:012x}",
            hostname=rng.choice(["", f"h{i}", "shared"]),
            aliases=tuple(rng.sample(["web", "db", "api"], rng.randint(0, 2))),
            ipv4=f"10.0.{i // 250}.{i % 250 + 2}",
            ipv6=rng.choice(["", f"fd00::{i + 2:x}"]),
        )
        for i in range(60)
    ]
    live: list[Member] = []
    zone = Zone()
    for step in range(400):
        before = (
            {n: {k: list(v) for k, v in d.items()} for n, d in zone.names.items()},
            {n: dict(d) for n, d in zone.ptr.items()},
        )
        old = zone
        if live and rng.random() < 0.45:
            gone = rng.choice(live)
            live.remove(gone)
            zone = zone.apply([gone], [], step)
        else:
            fresh = rng.choice([m for m in pool if m not in live] or pool[:1])
            if fresh not in live:
                live.append(fresh)
                zone = zone.apply([], [fresh], step)
        assert (
            {n: {k: list(v) for k, v in d.items()} for n, d in old.names.items()},
            {n: dict(d) for n, d in old.ptr.items()},
        ) == before
        want = Zone.build(live, step)
        got = {n: {k: sorted(v) for k, v in d.items()} for n, d in zone.names.items()}
        assert got == {n: {k: sorted(v) for k, v in d.items()} for n, d in want.names.items()}
        assert zone.ptr == want.ptr
