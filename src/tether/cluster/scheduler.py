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
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

HISTORY = 5  # dead tasks kept per slot (swarm's TaskHistoryRetentionLimit)
TERMINAL = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned"})
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_task_id() -> str:
    """Swarm's 25-character lower-case ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(25))


@dataclass(frozen=True)
class ServiceView:
    id: str
    name: str
    mode: str = "replicated"  # replicated | global
    replicas: int = 1
    constraints: tuple[str, ...] = ()
    version: int = 0  # bumped by `service update`: tasks of older versions are replaced


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


@dataclass
class Plan:
    create: list[TaskView] = field(default_factory=list)
    shutdown: list[str] = field(default_factory=list)  # task ids to set desired=shutdown
    orphan: list[str] = field(default_factory=list)  # tasks whose node died: mark orphaned
    remove: list[str] = field(default_factory=list)  # task ids to delete (history cleanup)

    def empty(self) -> bool:
        return not (self.create or self.shutdown or self.orphan or self.remove)


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
        mine = by_service.get(svc.id, [])
        live = [t for t in mine if _live(t, ready)]
        stale = [t for t in live if t.version != svc.version or not eligible(svc, t.node)]
        for t in stale:
            out.shutdown.append(t.id)
        live = [t for t in live if t not in stale]
        if svc.mode == "global":
            covered = {t.node for t in live}
            for node in sorted(ready):
                if node not in covered and eligible(svc, node):
                    _add(out, svc, 0, node, now, load)
        else:
            by_slot: dict[int, list[TaskView]] = {}
            for t in live:
                by_slot.setdefault(t.slot, []).append(t)
            for slot, ts in by_slot.items():
                extra = sorted(ts, key=lambda t: t.created)[1:]  # one live task per slot
                out.shutdown.extend(t.id for t in extra)
                if slot > svc.replicas:
                    out.shutdown.extend(t.id for t in ts[:1])
            for slot in range(1, svc.replicas + 1):
                if slot not in by_slot:
                    counts = {n: 0 for n in ready if eligible(svc, n)}
                    for t in live:
                        if t.node in counts and t.id not in out.shutdown:
                            counts[t.node] += 1
                    for t in out.create:
                        if t.service == svc.id and t.node in counts:
                            counts[t.node] += 1
                    if not counts:
                        continue  # no node may run it now: it waits (service ps: pending)
                    node = min(counts, key=lambda n: (counts[n], load.get(n, 0), n))
                    _add(out, svc, slot, node, now, load)
        # History: dead tasks beyond the last HISTORY of a slot go.
        dead: dict[tuple[int, str], list[TaskView]] = {}
        going = set(out.shutdown)
        for t in mine:
            if (t.desired == "shutdown" or t.id in going) and t.state in TERMINAL:
                dead.setdefault((t.slot, t.node if svc.mode == "global" else ""), []).append(t)
        for ts in dead.values():
            ts.sort(key=lambda t: t.created, reverse=True)
            out.remove.extend(t.id for t in ts[HISTORY:])

    # Tasks of removed services: once shut down, they go.
    for t in tasks:
        if t.service not in known and t.state in TERMINAL and t.desired == "shutdown":
            out.remove.append(t.id)
    out.shutdown = sorted(set(out.shutdown))
    return out


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
