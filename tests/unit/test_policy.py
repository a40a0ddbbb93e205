"""The reachability model: one set of decisions for the firewall and for explanations."""

from __future__ import annotations

from tether.firewall.policy import Net, Where, allowed, decide, path
from tether.firewall.render import FirewallState, render

A = Net("aaaa", "tb-aaaa", ("172.18.0.0/16",), name="front", gateways4=("172.18.0.1",))
B = Net("bbbb", "tb-bbbb", ("10.1.0.0/24",), internal=True, name="back", gateways4=("10.1.0.1",))
C = Net("cccc", "tb-cccc", ("10.2.0.0/24",), icc=False, name="quiet")
POLICY = decide([A, B, C])


def on(*keys: str) -> Where:
    return Where("container", keys)


def test_verdicts_follow_docker_semantics() -> None:
    assert allowed(path(POLICY, on("aaaa"), on("aaaa")))  # same network
    assert not allowed(path(POLICY, on("cccc"), on("cccc")))  # ICC off
    assert not allowed(path(POLICY, on("aaaa"), on("cccc")))  # isolation
    assert not allowed(path(POLICY, on("aaaa", "cccc"), on("cccc", "bbbb")))  # shared, ICC off
    assert allowed(path(POLICY, on("aaaa", "bbbb"), on("bbbb")))  # shared internal network
    assert allowed(path(POLICY, on("aaaa"), Where("outside")))
    assert not allowed(path(POLICY, on("bbbb"), Where("outside")))  # internal
    assert allowed(path(POLICY, on("bbbb", "aaaa"), Where("outside")))  # the other way out
    assert not allowed(path(POLICY, Where("outside"), on("aaaa")))  # nothing comes in...
    assert allowed(path(POLICY, Where("outside"), on("aaaa"), published=True))  # ...but -p
    assert allowed(path(POLICY, on("cccc"), on("aaaa"), published=True))
    assert not allowed(path(POLICY, on("bbbb"), Where("host")))  # internal: gateway only
    assert allowed(path(POLICY, on("aaaa"), Where("host")))


def test_every_decision_has_a_reason_and_blocked_paths_a_fix() -> None:
    for d in POLICY.decisions:
        assert d.reason
    icc = path(POLICY, on("cccc"), on("cccc"))[-1]
    assert icc.verdict == "drop" and "ICC is off" in icc.reason and "enable_icc" in icc.fix
    iso = path(POLICY, on("aaaa"), on("cccc"))[-1]
    assert "isolated" in iso.reason and "network connect" in iso.fix
    # The user's chain is always the first word, wherever the packet goes.
    assert path(POLICY, on("aaaa"), Where("outside"))[0].scope == "user"


def test_the_ruleset_is_rendered_from_the_decisions() -> None:
    """Turning ICC off changes exactly the decision and the rule that renders it."""
    text = render(FirewallState([A, B, C]))
    assert 'add rule inet tether net_aaaa_out oifname "tb-aaaa" accept' in text
    assert 'add rule inet tether net_cccc_out oifname "tb-cccc" drop' in text
    quiet_a = Net("aaaa", "tb-aaaa", ("172.18.0.0/16",), icc=False, name="front")
    changed = render(FirewallState([quiet_a, B, C]))
    assert 'add rule inet tether net_aaaa_out oifname "tb-aaaa" drop' in changed
    diff = set(text.splitlines()) ^ set(changed.splitlines())
    assert diff == {
        'add rule inet tether net_aaaa_out oifname "tb-aaaa" accept',
        'add rule inet tether net_aaaa_out oifname "tb-aaaa" drop',
    }


def test_internal_networks_reach_no_published_port_of_another_network() -> None:
    """A container on an internal network may not use the host's address and a published
    port to reach a container elsewhere (the DNAT accept must not come first)."""
    assert not allowed(path(POLICY, on("bbbb"), on("aaaa"), published=True))
    assert allowed(path(POLICY, on("bbbb", "aaaa"), on("cccc"), published=True))
    text = render(FirewallState([A, B, C]))
    forward = [line for line in text.splitlines() if " forward " in line]
    drop = 'add rule inet tether forward iifname "tb-bbbb" oifname != "tb-bbbb" drop'
    assert forward.index(drop) < forward.index("add rule inet tether forward ct status dnat accept")
