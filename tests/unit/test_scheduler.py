"""The scheduler's decisions (pure): spread, replacement, scaling, global mode, history,
rolling updates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tether.cluster.scheduler import (
    HISTORY,
    MSG_PAUSED,
    Plan,
    ServiceView,
    TaskView,
    UpdateConfig,
    UpdateStatus,
    eligible,
    parse_constraint,
    plan,
)

NODES = ["n1", "n2", "n3"]


def apply(
    tasks: list[TaskView],
    services: list[ServiceView],
    nodes: list[str],
    now: float,
    p: Plan | None = None,
) -> list[TaskView]:
    """Run plan once (or take `p`) and apply it the way the leader and the agents would."""
    p = p if p is not None else plan(services, tasks, nodes, now)
    by_id = {t.id: t for t in tasks}
    for tid in p.orphan:
        by_id[tid].desired, by_id[tid].state = "shutdown", "orphaned"
    for tid in p.shutdown:
        by_id[tid].desired = "shutdown"
        if by_id[tid].state not in ("complete", "failed", "orphaned"):
            by_id[tid].state = "shutdown"
            by_id[tid].since = now
    for tid in p.remove:
        by_id.pop(tid, None)
    for t in p.create:
        t.state = "running"
        t.started = t.since = now
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
    for step in range(4):  # a new version replaces every task (one at a time, the default)
        tasks = apply(tasks, [not3], NODES, 2 + step)
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


# -- rolling updates (swarm's UpdateConfig) ----------------------------------------------------


class Cluster:
    """The leader and the agents, simulated: plan, apply (agents act at once unless told
    otherwise), and keep the service's UpdateStatus as the leader stores it."""

    def __init__(self, svc: ServiceView, nodes: list[str] = NODES) -> None:
        self.svc = svc
        self.nodes = nodes
        self.tasks: list[TaskView] = []
        self.now = 0.0
        self.wake = 0.0
        self.fail_new = False  # new tasks of the current version exit at once

    def step(self, dt: float = 0.1) -> None:
        self.now += dt
        p = plan([self.svc], self.tasks, self.nodes, self.now)
        if self.svc.id in p.status:
            self.svc = replace(self.svc, status=p.status[self.svc.id])
        self.wake = p.wake
        self.tasks = apply(self.tasks, [self.svc], self.nodes, self.now, p)
        if self.fail_new:
            for t in p.create:
                t.state, t.since = "failed", self.now

    def update(self, **kw: object) -> None:
        self.svc = replace(self.svc, version=self.svc.version + 1, **kw)  # type: ignore[arg-type]

    def versions(self) -> list[int]:
        return sorted(t.version for t in live(self.tasks))

    @property
    def state(self) -> str:
        return self.svc.status.state if self.svc.status else ""


def test_default_update_replaces_one_task_at_a_time_stop_first_then_completes() -> None:
    c = Cluster(ServiceView("s1", "web", replicas=3))
    c.step()
    assert c.versions() == [0, 0, 0] and c.svc.status is None  # creating is no update
    c.update()
    seen = []
    for _ in range(12):
        c.step()
        seen.append(c.versions())
        # stop-first, parallelism 1: never more than one slot away from running
        assert len(live(c.tasks)) >= 2
        assert len(live(c.tasks)) <= 3
    assert c.versions() == [1, 1, 1]
    assert [0, 0] in seen and [0, 0, 1] in seen and [0, 1, 1] in seen  # one by one
    assert c.state == "updating" and c.svc.status is not None
    assert c.svc.status.message == "update in progress"
    # Completed once the last new task has run for the monitor period (5 s by default).
    assert c.wake > c.now
    c.step(c.wake - c.now)
    assert c.state == "completed" and c.svc.status.message == "update completed"
    assert c.svc.status.completed == c.now
    assert plan([c.svc], c.tasks, NODES, c.now + 1).empty()


def test_parallelism_zero_replaces_all_at_once_and_start_first_overlaps() -> None:
    c = Cluster(ServiceView("s1", "web", replicas=3, update=UpdateConfig(parallelism=0)))
    c.step()
    c.update()
    c.step()  # all three old tasks stopped in one pass (stop-first)
    assert live(c.tasks) == []
    c.step()
    assert c.versions() == [1, 1, 1]

    s = Cluster(ServiceView("s2", "api", replicas=2, update=UpdateConfig(order="start-first")))
    s.step()
    s.update()
    s.step()  # the new task of one slot starts while the old one still runs
    assert s.versions() == [0, 0, 1]
    s.step()  # it runs: the old one of that slot stops, the next slot begins
    assert sorted(t.slot for t in live(s.tasks)) == [1, 2, 2] or s.versions() == [0, 1, 1]
    for _ in range(4):
        s.step()
    assert s.versions() == [1, 1]


def test_delay_between_batches_is_honoured_and_wakes_the_leader() -> None:
    c = Cluster(ServiceView("s1", "web", replicas=2, update=UpdateConfig(delay=10.0, monitor=1.0)))
    c.step()
    c.update()
    c.step()
    c.step()
    assert c.versions() == [0, 1]
    for _ in range(5):  # within the delay: nothing moves
        c.step(1.0)
        assert c.versions() == [0, 1]
    assert c.wake == pytest.approx(10.3)  # the new task of slot 1 ran at 0.3; delay 10 s
    c.step(c.wake - c.now)
    c.step()
    assert c.versions() == [1, 1]


def test_a_failing_new_version_pauses_the_update_with_swarms_message() -> None:
    c = Cluster(ServiceView("s1", "web", replicas=3))
    c.step()
    c.update()
    c.fail_new = True
    for _ in range(6):
        c.step()
    assert c.state == "paused"
    assert c.svc.status is not None
    failed = [t for t in c.tasks if t.state == "failed" and t.version == 1]
    assert c.svc.status.message == MSG_PAUSED.format(failed[0].id)
    assert c.svc.status.message.startswith(
        "update paused due to failure or early termination of task "
    )
    # Paused: the other two slots keep their old tasks; nothing else is replaced.
    before = c.versions()
    for _ in range(5):
        c.step()
    assert c.versions().count(0) == 2 and c.versions() == before
    # A new update (a fixed image) resumes and completes.
    c.fail_new = False
    c.update()
    for _ in range(12):
        c.step()
    assert c.versions() == [2, 2, 2]


def test_failure_action_continue_and_max_failure_ratio() -> None:
    cont = Cluster(
        ServiceView("s1", "web", replicas=2, update=UpdateConfig(failure_action="continue"))
    )
    cont.step()
    cont.update()
    cont.fail_new = True
    for _ in range(8):
        cont.step()
    assert cont.state == "updating"  # never paused
    assert all(t.version == 1 for t in cont.tasks if t.desired == "running")
    # One failure of 4 slots is 25%: within a ratio of 0.5 the update goes on.
    ratio = Cluster(
        ServiceView("s2", "api", replicas=4, update=UpdateConfig(max_failure_ratio=0.5))
    )
    ratio.step()
    ratio.update()
    ratio.fail_new = True
    ratio.step()
    ratio.step()
    ratio.fail_new = False
    for _ in range(12):
        ratio.step()
    assert ratio.state == "updating" and ratio.versions() == [1, 1, 1, 1]


def test_a_failure_after_the_monitor_period_does_not_count() -> None:
    c = Cluster(ServiceView("s1", "web", replicas=1, update=UpdateConfig(monitor=2.0)))
    c.step()
    c.update()
    c.step()
    c.step()
    assert c.versions() == [1]
    c.step(3.0)  # past the monitor period: completed
    assert c.state == "completed"
    t = live(c.tasks)[0]
    t.state, t.since = "failed", c.now
    c.step()
    assert c.state == "completed" and c.versions() == [1]  # replaced, not paused


def test_global_services_roll_node_by_node() -> None:
    c = Cluster(ServiceView("g", "mon", mode="global"))
    c.step()
    assert c.versions() == [0, 0, 0]
    c.update()
    c.step()
    assert c.versions() == [0, 0]
    c.step()
    assert c.versions() == [0, 0, 1]
    for _ in range(6):
        c.step()
    assert c.versions() == [1, 1, 1]
    assert sorted(t.node for t in live(c.tasks)) == NODES


def test_a_stopping_old_task_holds_its_successor_back() -> None:
    """stop-first: the new task of a slot is created only once the old one has stopped."""
    svc = ServiceView("s1", "web", replicas=1, version=1, status=UpdateStatus("updating", 1))
    old = TaskView("t0", "s1", 1, "n1", desired="shutdown", state="running", version=0)
    assert plan([svc], [old], NODES, 5.0).create == []
    old.state = "shutdown"
    assert len(plan([svc], [old], NODES, 5.1).create) == 1
