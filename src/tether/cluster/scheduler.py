"""The scheduler's decisions: which tasks should exist where (pure).

The leader (one node at a time, elected on a lease) runs `plan` whenever services, tasks,
task statuses or nodes change, and writes what it returns to the cluster store; every node's
agent starts and stops the containers of the tasks assigned to it.  Swarm's rules, as users
see them with `service ps`:

- a replicated service has slots 1..N, each with at most one live task; a missing or dead
  task (its container exited, its node's lease expired) is replaced by a new task in the same
  slot, on the eligible node with the fewest live tasks of the service (then of any service);
- scaling down shuts the highest slots down;
- a global service has one task per ready node that matches its constraints, including nodes
  that join later;
- `--constraint node.hostname==X` / `!=X` limits where tasks go;
- history: a slot keeps its last few dead tasks (5, as swarm's task history limit) for
  `service ps`; older ones are removed.

Rolling updates (swarm's UpdateConfig): when a service's task template changes, the tasks of
the older version are replaced `parallelism` at a time (0: all at once), a batch starting
only when the previous one runs and `delay` has passed since; `stop-first` stops a slot's old
task before its new one starts, `start-first` starts the new one and stops the old one once
the new one runs.  A new task that fails within `monitor` of starting (or before running)
counts as a failure; past `max_failure_ratio` of the service's slots, `pause` stops the
update (UpdateStatus "paused", swarm's message) and `continue` carries on.  The update is
"completed" once no old task is left and the last batch has run for `monitor`.  Everything is
derived from the tasks and the stored UpdateStatus, so a new leader carries on where the old
one was; `Plan.wake` says when the leader must look again (a delay or a monitor period
ending with nothing else happening).
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field, replace

HISTORY = 5  # dead tasks kept per slot (swarm's TaskHistoryRetentionLimit)
TERMINAL = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned"})
FAILED = frozenset({"complete", "failed", "rejected"})  # swarm: "failure or early termination"
_ID_ALPHABET = string.ascii_lowercase + string.digits

UPDATING = "updating"
PAUSED = "paused"
COMPLETED = "completed"
MSG_UPDATING = "update in progress"
MSG_COMPLETED = "update completed"
MSG_PAUSED = "update paused due to failure or early termination of task {}"


def new_task_id() -> str:
    """Swarm's 25-character lower-case ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(25))


@dataclass(frozen=True)
class UpdateConfig:
    """swarm's UpdateConfig; the defaults are swarmkit's (and what docker's CLI sends)."""

    parallelism: int = 1  # 0: every task at once
    delay: float = 0.0  # seconds between batches
    order: str = "stop-first"  # stop-first | start-first
    failure_action: str = "pause"  # pause | continue
    monitor: float = 5.0  # seconds a new task is watched for failure
    max_failure_ratio: float = 0.0


@dataclass(frozen=True)
class UpdateStatus:
    """swarm's Service.UpdateStatus, plus the task version the update rolls out."""

    state: str  # updating | paused | completed
    version: int
    started: float = 0.0
    completed: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class ServiceView:
    id: str
    name: str
    mode: str = "replicated"  # replicated | global
    replicas: int = 1
    constraints: tuple[str, ...] = ()
    version: int = 0  # bumped by `service update`: tasks of older versions are replaced
    update: UpdateConfig = UpdateConfig()
    status: UpdateStatus | None = None


@dataclass
class TaskView:
    id: str
    service: str  # service id
    slot: int  # replicated: 1..N; global: 0 (the node is the slot)
    node: str
    desired: str = "running"  # running | shutdown
    state: str = "new"  # new | running | complete | failed | shutdown | orphaned ...
    version: int = 0
    created: float = 0.0
    started: float = 0.0  # when it was first seen running (0: never, or not known)
    since: float = 0.0  # when it reached its current state


@dataclass
class Plan:
    create: list[TaskView] = field(default_factory=list)
    shutdown: list[str] = field(default_factory=list)  # task ids to set desired=shutdown
    orphan: list[str] = field(default_factory=list)  # tasks whose node died: mark orphaned
    remove: list[str] = field(default_factory=list)  # task ids to delete (history cleanup)
    status: dict[str, UpdateStatus] = field(default_factory=dict)  # service id -> new status
    wake: float = 0.0  # run plan again at this time even if nothing changes (0: no need)

    def empty(self) -> bool:
        return not (self.create or self.shutdown or self.orphan or self.remove or self.status)

    def wake_at(self, when: float) -> None:
        if when > 0 and (not self.wake or when < self.wake):
            self.wake = when


def eligible(svc: ServiceView, node: str) -> bool:
    """Does `node` satisfy the service's constraints?  (node.hostname ==/!= only.)"""
    for c in svc.constraints:
        key, op, value = parse_constraint(c)
        have = node if key in ("node.hostname", "node.id") else ""
        if (op == "==") != (have == value):
            return False
    return True


def parse_constraint(text: str) -> tuple[str, str, str]:
    """`node.hostname==X` -> ("node.hostname", "==", "X"); refuses what tether cannot
    evaluate (swarm's labels, roles, platform), never ignoring it."""
    for op in ("==", "!="):
        if op in text:
            key, _, value = text.partition(op)
            key, value = key.strip(), value.strip()
            if key not in ("node.hostname", "node.id"):
                raise ValueError(
                    f"constraint {text!r}: tether places tasks by node.hostname (or node.id, "
                    "the same here) only"
                )
            if not value:
                raise ValueError(f"constraint {text!r}: no value")
            return key, op, value
    raise ValueError(f"invalid constraint {text!r}: want node.hostname==NAME or !=NAME")


def _live(t: TaskView, ready: set[str]) -> bool:
    return t.desired == "running" and t.node in ready and t.state not in TERMINAL


def plan(
    services: list[ServiceView], tasks: list[TaskView], ready_nodes: list[str], now: float
) -> Plan:
    """What must change for the tasks to match the services on the nodes that are ready."""
    out = Plan()
    ready = set(ready_nodes)
    by_service: dict[str, list[TaskView]] = {}
    for t in tasks:
        by_service.setdefault(t.service, []).append(t)
    known = {s.id for s in services}
    # Load per node (live tasks of every service): new tasks go where there are fewest.
    load: dict[str, int] = {n: 0 for n in ready}
    for t in tasks:
        if _live(t, ready):
            load[t.node] = load.get(t.node, 0) + 1

    for t in tasks:
        if t.desired == "running" and t.node not in ready and t.state not in TERMINAL:
            out.orphan.append(t.id)  # its node is gone: the slot gets a new task below
        elif t.desired == "running" and (t.service not in known or t.state in TERMINAL):
            out.shutdown.append(t.id)  # its service went, or its container exited

    for svc in sorted(services, key=lambda s: s.name):
        _plan_service(out, svc, by_service.get(svc.id, []), ready, now, load)

    # Tasks of removed services: once shut down, they go.
    for t in tasks:
        if t.service not in known and t.state in TERMINAL and t.desired == "shutdown":
            out.remove.append(t.id)
    out.shutdown = sorted(set(out.shutdown))
    return out


def _plan_service(
    out: Plan,
    svc: ServiceView,
    mine: list[TaskView],
    ready: set[str],
    now: float,
    load: dict[str, int],
) -> None:
    glob = svc.mode == "global"

    def unit(t: TaskView) -> int | str:
        return t.node if glob else t.slot

    wanted: list[int | str] = (
        [n for n in sorted(ready) if eligible(svc, n)] if glob else list(range(1, svc.replicas + 1))
    )
    wanted_set = set(wanted)
    live = [t for t in mine if _live(t, ready)]

    def stale(t: TaskView) -> bool:
        return t.version != svc.version or not eligible(svc, t.node)

    units: dict[int | str, list[TaskView]] = {}
    for t in live:
        units.setdefault(unit(t), []).append(t)
    # Slots beyond the replica count (scaling down), nodes no longer eligible (global).
    for k, ts in units.items():
        if k not in wanted_set:
            out.shutdown.extend(t.id for t in ts)
    # A slot's old task told to stop and still running (stop-first): its successor waits.
    stopping = {
        unit(t)
        for t in mine
        if t.desired == "shutdown" and t.state == "running" and t.node in ready
    }

    st = svc.status if svc.status is not None and svc.status.version == svc.version else None
    dirty: list[int | str] = []  # units whose only live task is of an older version
    in_flight = 0  # units being updated: the new task not running yet, or the old one stopping
    empty: list[int | str] = []
    for k in wanted:
        ts = sorted(units.get(k, []), key=lambda t: t.created)
        cur = [t for t in ts if not stale(t)]
        old = [t for t in ts if stale(t)]
        if len(cur) > 1:  # one live task per unit: the oldest stays
            out.shutdown.extend(t.id for t in cur[1:])
            cur = cur[:1]
        if cur and old:  # start-first under way (or a unit that had two tasks)
            if cur[0].state == "running":
                out.shutdown.extend(t.id for t in old)
            else:
                in_flight += 1
        elif old:
            if not eligible(svc, old[0].node):
                # Its node may no longer run it: that is no update, it just moves.
                out.shutdown.extend(t.id for t in old)
                empty.append(k)
            else:
                dirty.append(k)
                if len(old) > 1:
                    out.shutdown.extend(t.id for t in old[1:])
        elif cur:
            if cur[0].state != "running" and st is not None and st.state == UPDATING:
                in_flight += 1
        elif k in stopping and st is not None:
            in_flight += 1  # stop-first: the new task starts once the old one has stopped
        else:
            empty.append(k)

    # Rolling update bookkeeping.
    cfg = svc.update
    if dirty and (st is None or st.state == COMPLETED):
        st = UpdateStatus(UPDATING, svc.version, started=now, message=MSG_UPDATING)
        out.status[svc.id] = st
    failures: list[TaskView] = []
    if st is not None and st.state in (UPDATING, PAUSED):
        failures = [
            t
            for t in mine
            if t.version == svc.version
            and t.created >= st.started
            and t.state in FAILED
            and (not t.started or t.since - t.started <= cfg.monitor)
        ]
        if (
            st.state == UPDATING
            and failures
            and cfg.failure_action == "pause"
            and len(failures) / max(len(wanted), 1) > cfg.max_failure_ratio
        ):
            first = min(failures, key=lambda t: (t.since, t.id))
            st = replace(st, state=PAUSED, message=MSG_PAUSED.format(first.id))
            out.status[svc.id] = st

    # New tasks for empty units (replacements, scaling up, new nodes): not running yet,
    # so during an update they hold the next batch back as well, except where the unit's
    # new task already failed (swarm's updater moves on once a task is running or past it).
    failed_units = {unit(t) for t in failures}
    for k in empty:
        _create(out, svc, k, glob, ready, live, load, now)
        if st is not None and k not in failed_units:
            in_flight += 1

    if st is not None and st.state == UPDATING:
        running_new = [
            t.started or t.since
            for t in live
            if not stale(t) and t.state == "running" and t.created >= st.started
        ]
        batch_done = max(running_new, default=0.0)
        if dirty and in_flight == 0:
            if batch_done and now < batch_done + cfg.delay:
                out.wake_at(batch_done + cfg.delay)
            else:
                n = len(dirty) if cfg.parallelism <= 0 else cfg.parallelism
                for k in dirty[:n]:
                    old = [t for t in units[k] if stale(t)]
                    if cfg.order == "start-first":
                        _create(out, svc, k, glob, ready, live, load, now, prefer=old[0].node)
                    else:
                        out.shutdown.extend(t.id for t in old)
        elif not dirty and in_flight == 0:
            if now >= batch_done + cfg.monitor:
                out.status[svc.id] = replace(
                    st, state=COMPLETED, completed=now, message=MSG_COMPLETED
                )
            else:
                out.wake_at(batch_done + cfg.monitor)

    # History: dead tasks beyond the last HISTORY of a slot go.
    dead: dict[int | str, list[TaskView]] = {}
    going = set(out.shutdown)
    for t in mine:
        if (t.desired == "shutdown" or t.id in going) and t.state in TERMINAL:
            dead.setdefault(unit(t), []).append(t)
    for ts in dead.values():
        ts.sort(key=lambda t: t.created, reverse=True)
        out.remove.extend(t.id for t in ts[HISTORY:])


def _create(
    out: Plan,
    svc: ServiceView,
    k: int | str,
    glob: bool,
    ready: set[str],
    live: list[TaskView],
    load: dict[str, int],
    now: float,
    prefer: str = "",
) -> None:
    """A new task for unit k: on its node (global), else on the eligible node with the
    fewest tasks of the service (then of any), `prefer` first when it is among those."""
    if glob:
        _add(out, svc, 0, str(k), now, load)
        return
    going = set(out.shutdown)
    counts = {n: 0 for n in ready if eligible(svc, n)}
    if not counts:
        return  # no node may run it now: it waits (service ps: pending)
    for t in live:
        if t.node in counts and t.id not in going:
            counts[t.node] += 1
    for t in out.create:
        if t.service == svc.id and t.node in counts:
            counts[t.node] += 1
    node = min(counts, key=lambda n: (counts[n], load.get(n, 0), n != prefer, n))
    _add(out, svc, int(k), node, now, load)


def _add(
    out: Plan, svc: ServiceView, slot: int, node: str, now: float, load: dict[str, int]
) -> None:
    out.create.append(
        TaskView(
            id=new_task_id(),
            service=svc.id,
            slot=slot,
            node=node,
            version=svc.version,
            created=now,
        )
    )
    load[node] = load.get(node, 0) + 1
