"""The VIP and mesh tables' transactions (pure): elements of plain sets, never a verdict
element; a VIP or port whose task count changes moves between two sets in one transaction;
the services cache's change log (what makes a balancer pass cost what changed)."""

from __future__ import annotations

from tether.cluster import lb
from tether.cluster.services import Services
from tether.firewall.render import FirewallState, IngressPort, ingress_changes, render

VIP = "10.0.1.2"


def test_a_vip_moves_between_count_sets_in_one_transaction() -> None:
    made: set[str] = set()
    three = {VIP: lb.entry(("10.0.1.5", "10.0.1.6", "10.0.1.7"))}
    first = lb.changes({}, three, made)
    assert "add set ip tether_svc vips_n3 { type ipv4_addr; }" in first
    assert "add rule ip tether_svc out ip daddr @vips_n3 dnat to" in first
    assert f"add element ip tether_svc vips_n3 {{ {VIP} }}" in first
    assert "verdict" not in first and "jump" not in first
    assert made == {"vips_n3"}
    two = {VIP: lb.entry(("10.0.1.5", "10.0.1.7"))}
    text = lb.changes(three, two, made).splitlines()
    assert text == [
        f"delete element ip tether_svc vips_n3 {{ {VIP} }}",
        f"delete element ip tether_svc backends {{ {VIP} . 0, {VIP} . 1, {VIP} . 2 }}",
        "add set ip tether_svc vips_n2 { type ipv4_addr; }",
        "add rule ip tether_svc out ip daddr @vips_n2 dnat to ip daddr . numgen random mod 2 "
        "map @backends",
        f"add element ip tether_svc backends {{ {VIP} . 0 : 10.0.1.5, {VIP} . 1 : 10.0.1.7 }}",
        f"add element ip tether_svc vips_n2 {{ {VIP} }}",
    ]
    # A count the table has already: elements only.  No task: the drop set.
    again = lb.changes(two, three, made)
    assert "add set" not in again and "add rule" not in again
    assert lb.changes(three, {VIP: lb.entry(())}, made).endswith(
        "add rule ip tether_svc out ip daddr @vips_n0 drop\n"
        f"add element ip tether_svc vips_n0 {{ {VIP} }}\n"
    )


def test_a_mesh_port_moves_between_count_sets_and_render_has_no_verdict_map() -> None:
    three = IngressPort("tcp", 8080, (("10.1.0.2", 80), ("10.1.0.3", 80), ("10.1.0.4", 80)))
    two = IngressPort("tcp", 8080, (("10.1.0.2", 80), ("10.1.0.3", 80)))
    made = {("tcp", 3), ("tcp", 2)}
    text = ingress_changes([three], [two], made).splitlines()
    assert text == [
        "delete element inet tether ing_tcp_n3 { 8080 }",
        "delete element inet tether ingress_tcp { 8080 . 0, 8080 . 1, 8080 . 2 }",
        "add element inet tether ingress_tcp { 8080 . 0 : 10.1.0.2 . 80, 8080 . 1 : 10.1.0.3 . 80 }",
        "add element inet tether ing_tcp_n2 { 8080 }",
    ]
    # A count the table has no set for: made (emptied) before its first element.
    fresh = ingress_changes([], [two], set())
    assert fresh.index("flush set inet tether ing_tcp_n2") < fresh.index(
        "add element inet tether ing_tcp_n2"
    )
    whole = render(FirewallState(ingress=[two]))
    assert "add map inet tether ingress " not in whole  # the verdict map of the layout before
    # ... which a render over a table that has one (stale chains given) deletes.
    over_old = render(FirewallState(ingress=[two]), {"ing_tcp_n2", "forward"})
    assert "delete map inet tether ingress\n" in over_old
    assert "delete chain inet tether ing_tcp_n2\n" in over_old
    assert over_old.index("delete map inet tether ingress") < over_old.index(
        "delete chain inet tether ing_tcp_n2"
    )
    assert "add rule inet tether mesh tcp dport @ing_tcp_n2 dnat ip to" in whole
    assert "add rule inet tether prerouting fib daddr type local jump mesh" in whole


def test_the_services_cache_logs_what_changed() -> None:
    services = Services(None)  # type: ignore[arg-type]
    log: set[str] = set()
    services.change_logs.append(log)
    services.apply("services", "s1", None)
    services.apply("tasks", "t1", None)  # a task is not a service change
    assert log == {"s1"}
    log.clear()
    services.relisted()
    assert log == {"*"} and lb.EVERY == "*"
