"""The scheduler's decisions (pure): spread, replacement, scaling, global mode, history."""

from __future__ import annotations

import pytest

from tether.cluster.scheduler import (
    HISTORY,
    ServiceView,
    TaskView,
    eligible,
    parse_constraint,
    plan,
)

NODES = ["n1", "n2", "n3"]


def apply(
    tasks: list[TaskView], services: list[ServiceView], nodes: list[str], now: float
) -> list[TaskView]:
    """Run plan once and apply it the way the leader and the agents would."""
    p = plan(services, tasks, nodes, now)
    by_id = {t.id: t for t in tasks}
    for tid in p.orphan:
        by_id[tid].desired, by_id[tid].state = "shutdown", "orphaned"
    for tid in p.shutdown:
        by_id[tid].desired = "shutdown"
        if by_id[tid].state not in ("complete", "failed", "orphaned"):
            by_id[tid].state = "shutdown"
    for tid in p.remove:
        by_id.pop(tid, None)
    for t in p.create:
        t.state = "running"
        by_id[t.id] = t
    return list(by_id.values())


def live(tasks: list[TaskView]) -> list[TaskView]:
    return [t for t in tasks if t.desired == "running" and t.state == "running"]


def test_replicas_spread_over_nodes_and_hold_when_a_node_dies() -> None:
    web = ServiceView("s1", "web", replicas=3)
    tasks = apply([], [web], NODES, 1)
    assert sorted(t.node for t in live(tasks)) == NODES
    assert sorted(t.slot for t in live(tasks)) == [1, 2, 3]
    assert plan([web], tasks, NODES, 2).empty()  # converged: nothing to do
    tasks = apply(tasks, [web], ["n1", "n2"], 3)  # n3's lease expired
    assert sorted(t.slot for t in live(tasks)) == [1, 2, 3]
    assert {t.node for t in live(tasks)} == {"n1", "n2"}
    assert [t.state for t in tasks if t.node == "n3"] == ["orphaned"]


def test_an_exited_task_is_replaced_in_its_slot() -> None:
    web = ServiceView("s1", "web", replicas=2)
    tasks = apply([], [web], NODES, 1)
    dead = live(tasks)[0]
    dead.state = "failed"
    tasks = apply(tasks, [web], NODES, 2)
    assert sorted(t.slot for t in live(tasks)) == [1, 2]
    assert dead.desired == "shutdown" and dead.id in {t.id for t in tasks}  # history


def test_scaling_up_and_down_and_history_limit() -> None:
    web = ServiceView("s1", "web", replicas=3)
    tasks = apply([], [web], NODES, 1)
    web6 = ServiceView("s1", "web", replicas=6)
    tasks = apply(tasks, [web6], NODES, 2)
    assert len(live(tasks)) == 6
    assert sorted(sum(1 for t in live(tasks) if t.node == n) for n in NODES) == [2, 2, 2]
    web1 = ServiceView("s1", "web", replicas=1)
    tasks = apply(tasks, [web1], NODES, 3)
    assert [t.slot for t in live(tasks)] == [1]
    # A slot keeps at most HISTORY dead tasks.
    for i in range(10):
        for t in live(tasks):
            t.state = "failed"
        tasks = apply(tasks, [web1], NODES, 10 + i)
    assert len([t for t in tasks if t.slot == 1 and t.desired == "shutdown"]) == HISTORY


def test_global_mode_one_task_per_ready_node_including_new_ones() -> None:
    mon = ServiceView("s2", "mon", mode="global")
    tasks = apply([], [mon], ["n1", "n2"], 1)
    assert sorted(t.node for t in live(tasks)) == ["n1", "n2"]
    tasks = apply(tasks, [mon], NODES, 2)
    assert sorted(t.node for t in live(tasks)) == NODES


def test_constraints_and_updates_and_removal() -> None:
    only = ServiceView("s3", "db", replicas=2, constraints=("node.hostname==n2",))
    tasks = apply([], [only], NODES, 1)
    assert {t.node for t in live(tasks)} == {"n2"}
    not3 = ServiceView("s3", "db", replicas=2, constraints=("node.hostname!=n3",), version=1)
    tasks = apply(tasks, [not3], NODES, 2)  # a new version replaces every task
    assert {t.version for t in live(tasks)} == {1} and all(t.node != "n3" for t in live(tasks))
    tasks = apply(tasks, [], NODES, 3)  # service removed
    assert live(tasks) == []
    tasks = apply(tasks, [], NODES, 4)
    assert tasks == []  # and its dead tasks cleaned up
    assert eligible(ServiceView("x", "x", constraints=("node.hostname!=a",)), "b")


def test_constraints_tether_cannot_evaluate_are_refused() -> None:
    assert parse_constraint("node.hostname == n1") == ("node.hostname", "==", "n1")
    for bad in ("node.labels.zone==a", "node.role==manager", "engine.labels.x==1", "nonsense"):
        with pytest.raises(ValueError):
            parse_constraint(bad)
