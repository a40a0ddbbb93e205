"""Services: desired state in etcd, one leader that schedules, and the records in Docker's shapes.

Keys (under the cluster's prefix, beside cluster/keys.py's):

    services/<id>          the service (Docker's Service object: Spec, Version, Endpoint)
    snames/<name>          its id (a transaction claims the name)
    tasks/<id>             a task as the leader decided it: service, slot, node, desired state
    tstatus/<id>           the task as its node's agent sees it (state, container), on the
                           node's lease: a dead node's statuses vanish with it
    ustatus/<id>           the service's rolling update (swarm's UpdateStatus), written by
                           the leader only
    leader                 the name of the node that schedules, on that node's lease

A service's virtual IPs are addresses of its networks claimed like endpoints' (ipam keys,
owner "vip:<service id>"), permanent until the service goes.  The leader runs the pure
scheduler (cluster/scheduler.py) on every change and writes the tasks; each node's agent
(cluster/agent.py) makes the containers of its tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.cluster import keys
from tether.cluster.scheduler import (
    ServiceView,
    TaskView,
    UpdateConfig,
    UpdateStatus,
    plan,
)
from tether.errors import Conflict, InvalidParameter, NotFound
from tether.store.etcd import Compare, Op, StoreError
from tether.timefmt import now_iso

if TYPE_CHECKING:
    from tether.cluster.state import ClusterStore

log = logging.getLogger("tether.services")

SERVICES = "services/"
SNAMES = "snames/"
TASKS = "tasks/"
TSTATUS = "tstatus/"
USTATUS = "ustatus/"
LEADER = "leader"
SCHEDULE_DEBOUNCE = 0.02  # seconds: changes that arrive together are scheduled together
_ID = string.ascii_lowercase + string.digits


INGRESS_RANGE = (30000, 32767)  # swarm's dynamic published ports


def port_claim(proto: str, port: int) -> str:
    """The cluster-wide claim of a routing mesh port (claims/port/tcp/8080)."""
    return f"port/{proto}/{port}"


def ingress_claims(svc: Service) -> list[str]:
    return [
        port_claim(p["Protocol"], p["PublishedPort"])
        for p in svc.ports
        if p.get("PublishMode") == "ingress" and p.get("PublishedPort")
    ]


def new_service_id() -> str:
    return "".join(secrets.choice(_ID) for _ in range(25))


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


@dataclass
class Service:
    """Docker's Service object, as stored (the API returns it as is)."""

    id: str
    spec: dict[str, Any]  # Docker's ServiceSpec
    version: int = 1
    created: str = ""
    updated: str = ""
    # Endpoint: the spec's EndpointSpec, and the VIPs per network: [{NetworkID, Addr}]
    vips: list[dict[str, str]] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)
    # Bumped when the task template changes: tasks of older versions are replaced.
    task_version: int = 0

    @property
    def name(self) -> str:
        return str(self.spec.get("Name") or "")

    @property
    def mode(self) -> str:
        return "global" if "Global" in (self.spec.get("Mode") or {}) else "replicated"

    @property
    def replicas(self) -> int:
        mode = self.spec.get("Mode") or {}
        return int((mode.get("Replicated") or {}).get("Replicas", 1) or 0)

    @property
    def endpoint_mode(self) -> str:
        return str((self.spec.get("EndpointSpec") or {}).get("Mode") or "vip")

    @property
    def networks(self) -> list[dict[str, Any]]:
        """[{Target, Aliases}] (TaskTemplate.Networks, or the deprecated Spec.Networks)."""
        tmpl = self.spec.get("TaskTemplate") or {}
        return list(tmpl.get("Networks") or self.spec.get("Networks") or [])

    @property
    def constraints(self) -> tuple[str, ...]:
        tmpl = self.spec.get("TaskTemplate") or {}
        return tuple((tmpl.get("Placement") or {}).get("Constraints") or [])

    @property
    def update_config(self) -> UpdateConfig:
        """The spec's UpdateConfig (nanoseconds in the API), swarmkit's defaults for what
        it leaves out."""
        u = self.spec.get("UpdateConfig") or {}
        d = UpdateConfig()
        return UpdateConfig(
            parallelism=int(u.get("Parallelism", d.parallelism) or 0),
            delay=int(u.get("Delay") or 0) / 1e9,
            order=str(u.get("Order") or d.order),
            failure_action=str(u.get("FailureAction") or d.failure_action),
            monitor=int(u["Monitor"]) / 1e9 if u.get("Monitor") else d.monitor,
            max_failure_ratio=float(u.get("MaxFailureRatio") or 0.0),
        )

    def view(self, status: UpdateStatus | None = None) -> ServiceView:
        return ServiceView(
            self.id,
            self.name,
            self.mode,
            self.replicas,
            self.constraints,
            self.task_version,
            self.update_config,
            status,
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Version": {"Index": self.version},
            "CreatedAt": self.created,
            "UpdatedAt": self.updated,
            "Spec": self.spec,
            "Endpoint": {
                "Spec": self.spec.get("EndpointSpec") or {"Mode": "vip"},
                "Ports": self.ports,
                "VirtualIPs": self.vips,
            },
            "TaskVersion": self.task_version,
        }

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Service:
        ep = d.get("Endpoint") or {}
        return cls(
            id=d["ID"],
            spec=d.get("Spec") or {},
            version=int((d.get("Version") or {}).get("Index") or 1),
            created=str(d.get("CreatedAt") or ""),
            updated=str(d.get("UpdatedAt") or ""),
            vips=list(ep.get("VirtualIPs") or []),
            ports=list(ep.get("Ports") or []),
            task_version=int(d.get("TaskVersion") or 0),
        )


@dataclass
class Task:
    """One task: what the leader decided (tasks/<id>) and what its node reports (tstatus)."""

    id: str
    service: str
    slot: int
    node: str
    desired: str = "running"
    version: int = 0
    created: str = ""
    orphaned: bool = False
    # From tstatus/<id> (absent: the node has not reported, or its lease expired).
    state: str = ""
    container: str = ""
    exit_code: int = 0
    error: str = ""
    updated: str = ""
    started: str = ""  # when it was first reported running (this node's cache only)

    def decided(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "ServiceID": self.service,
            "Slot": self.slot,
            "NodeID": self.node,
            "DesiredState": self.desired,
            "TaskVersion": self.version,
            "CreatedAt": self.created,
            "Orphaned": self.orphaned,
        }

    @classmethod
    def from_decided(cls, d: dict[str, Any]) -> Task:
        return cls(
            id=d["ID"],
            service=d["ServiceID"],
            slot=int(d.get("Slot") or 0),
            node=str(d.get("NodeID") or ""),
            desired=str(d.get("DesiredState") or "running"),
            version=int(d.get("TaskVersion") or 0),
            created=str(d.get("CreatedAt") or ""),
            orphaned=bool(d.get("Orphaned")),
        )


class Services:
    """The services and tasks of the cluster: caches fed by the cluster store's watch,
    operations as transactions, and, on the node that holds the lease on `leader`, the
    scheduler loop."""

    def __init__(self, cluster: ClusterStore) -> None:
        self.cluster = cluster
        self.by_id: dict[str, Service] = {}
        self.tasks: dict[str, Task] = {}
        self.leader = ""
        # service id -> its rolling update, as the leader last wrote it (ustatus/).
        self.update_status: dict[str, UpdateStatus] = {}
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.TimerHandle | None = None
        # Called (synchronously) when services or tasks change: the agent, the balancer,
        # the DNS follow these.
        self.listeners: list[Any] = []
        # Sets a follower (the balancer) registers and drains: the ids of the services put
        # or deleted since, "*" for all of them (a relist), so that its pass costs what
        # changed rather than a walk over every service.
        self.change_logs: list[set[str]] = []

    # -- the watch's side --------------------------------------------------------------

    def apply(self, kind: str, key: str, data: Any) -> None:
        """One put (data) or delete (None) of a services/tasks/tstatus/leader key."""
        if kind == "services":
            self._logged(key)
            if data is None:
                self.by_id.pop(key, None)
            else:
                self.by_id[key] = Service.from_doc(data)
        elif kind == "tasks":
            if data is None:
                self.tasks.pop(key, None)
            else:
                old = self.tasks.get(key)
                t = Task.from_decided(data)
                if old is not None:  # keep what the node reported
                    t.state, t.container, t.exit_code = old.state, old.container, old.exit_code
                    t.error, t.updated, t.started = old.error, old.updated, old.started
                self.tasks[key] = t
        elif kind == "tstatus":
            reported = self.tasks.get(key)
            if reported is not None:
                if data is None:
                    reported.state = ""
                else:
                    reported.state = str(data.get("State") or "")
                    reported.container = str(data.get("ContainerID") or "")
                    reported.exit_code = int(data.get("ExitCode") or 0)
                    reported.error = str(data.get("Err") or "")
                    reported.updated = str(data.get("Timestamp") or "")
                    if reported.state == "running" and not reported.started:
                        reported.started = reported.updated
        elif kind == "ustatus":
            if data is None:
                self.update_status.pop(key, None)
            else:
                self.update_status[key] = status_from_doc(data)
        elif kind == "leader":
            self.leader = str(data or "")
        self._kick.set()
        for fn in self.listeners:
            try:
                fn()
            except Exception:
                log.exception("services listener failed")

    def _logged(self, sid: str) -> None:
        for changed in self.change_logs:
            changed.add(sid)

    def relisted(self) -> None:
        self._logged("*")
        self._kick.set()
        for fn in self.listeners:
            fn()

    def find(self, term: str) -> Service:
        svc = self.by_id.get(term)
        if svc is not None:
            return svc
        named = [s for s in self.by_id.values() if s.name == term]
        if named:
            return named[0]
        prefixed = [s for s in self.by_id.values() if s.id.startswith(term)]
        if len(prefixed) == 1:
            return prefixed[0]
        raise NotFound(f"service {term} not found")

    # -- operations ------------------------------------------------------------------------

    def assign_ports(self, svc: Service) -> None:
        """Ingress-mode ports without a published port get one from swarm's range
        (30000-32767), the lowest the cluster has not claimed."""
        claimed = self.cluster.claimed()
        for p in svc.ports:
            if p["PublishMode"] != "ingress" or p["PublishedPort"]:
                continue
            port = next(
                (
                    n
                    for n in range(INGRESS_RANGE[0], INGRESS_RANGE[1] + 1)
                    if port_claim(p["Protocol"], n) not in claimed
                    and not any(
                        q is not p and q["PublishedPort"] == n and q["Protocol"] == p["Protocol"]
                        for q in svc.ports
                    )
                ),
                0,
            )
            if not port:
                raise InvalidParameter(
                    "rpc error: code = ResourceExhausted desc = no dynamic ingress ports left"
                )
            p["PublishedPort"] = port

    async def _port_in_use(self, svc: Service, claims: list[str]) -> None:
        """After a transaction lost on a port claim: Docker's error naming the holder."""
        for claim in claims:
            kv = await self.cluster.client.get(keys.claim(claim))
            if kv is None or kv.value.decode() == svc.id:
                continue
            holder = self.by_id.get(kv.value.decode())
            name = holder.name if holder else kv.value.decode()
            raise InvalidParameter(
                f"rpc error: code = InvalidArgument desc = port '{claim.rsplit('/', 1)[-1]}' "
                f"is already in use by service '{name}' ({kv.value.decode()}) as an ingress port"
            )

    async def create(self, svc: Service) -> Service:
        c = self.cluster
        c.require()
        now = now_iso()
        svc.created = svc.updated = now
        claims = ingress_claims(svc)
        result = await c.client.txn(
            [Compare.absent(SNAMES + svc.name), *(Compare.absent(keys.claim(x)) for x in claims)],
            [
                Op.put(SNAMES + svc.name, svc.id),
                Op.put(SERVICES + svc.id, _json(svc.to_doc())),
                *(Op.put(keys.claim(x), svc.id) for x in claims),
            ],
        )
        if not result.succeeded:
            await self._port_in_use(svc, claims)
            raise Conflict(
                f"rpc error: code = AlreadyExists desc = name conflicts with an existing object: "
                f"service {svc.name} already exists"
            )
        self.by_id[svc.id] = svc
        self._logged(svc.id)
        return svc

    async def update(self, svc: Service, version: int) -> Service:
        """Write a new spec if nobody changed the service since `version` (Docker's
        optimistic `?version=`)."""
        c = self.cluster
        c.require()
        key = SERVICES + svc.id
        current = await c.client.get(key)
        if current is None:
            raise NotFound(f"service {svc.id} not found")
        doc = json.loads(current.value)
        if int((doc.get("Version") or {}).get("Index") or 0) != version:
            raise InvalidParameter("rpc error: code = Unknown desc = update out of sequence")
        svc.version = version + 1
        svc.updated = now_iso()
        # Published ports that change: the new ones claimed, the old ones given back, with
        # the service's document in one transaction.
        old_claims = set(ingress_claims(Service.from_doc(doc)))
        new_claims = set(ingress_claims(svc))
        added = sorted(new_claims - old_claims)
        result = await c.client.txn(
            [
                Compare.mod_revision(key, "=", current.mod_revision),
                *(Compare.absent(keys.claim(x)) for x in added),
            ],
            [
                Op.put(key, _json(svc.to_doc())),
                *(Op.put(keys.claim(x), svc.id) for x in added),
                *(Op.delete(keys.claim(x)) for x in sorted(old_claims - new_claims)),
            ],
        )
        if not result.succeeded:
            await self._port_in_use(svc, added)
            raise InvalidParameter("rpc error: code = Unknown desc = update out of sequence")
        self.by_id[svc.id] = svc
        self._logged(svc.id)
        return svc

    async def remove(self, svc: Service) -> None:
        c = self.cluster
        c.require()
        ops = [
            Op.delete(SERVICES + svc.id),
            Op.delete(SNAMES + svc.name),
            Op.delete(USTATUS + svc.id),
            *(Op.delete(keys.claim(x)) for x in ingress_claims(svc)),
        ]
        for vip in svc.vips:
            ops.append(Op.delete(keys.address(vip["NetworkID"], vip["Addr"].split("/")[0])))
        await c.client.txn([], ops)
        self.by_id.pop(svc.id, None)
        self._logged(svc.id)
        self.update_status.pop(svc.id, None)

    async def report(self, task_id: str, state: str, **fields: Any) -> None:
        """A node's agent: the state of one of its tasks, on the node's lease."""
        c = self.cluster
        doc = {"State": state, "Timestamp": now_iso(), **fields}
        await c.client.put(TSTATUS + task_id, _json(doc), lease=c.lease_id())

    # -- the leader ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def is_leader(self) -> bool:
        return self.leader == self.cluster.node.name

    async def _run(self) -> None:
        """Campaign for the lead whenever nobody holds it; schedule while holding it."""
        while True:
            await self._kick.wait()
            await asyncio.sleep(SCHEDULE_DEBOUNCE)
            self._kick.clear()
            try:
                if not self.cluster.connected.is_set():
                    continue
                if not self.leader:
                    await self._campaign()
                if self.is_leader:
                    await self._schedule()
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                log.warning("scheduling deferred: %s", exc.message)
                await asyncio.sleep(0.5)
                self._kick.set()
            except Exception:
                log.exception("scheduling failed")
                await asyncio.sleep(0.5)
                self._kick.set()

    async def _campaign(self) -> None:
        c = self.cluster
        won = await c.client.create(LEADER, c.node.name, lease=c.lease_id())
        if won:
            self.leader = c.node.name
            log.info("this node leads the scheduling now node=%s", c.node.name)

    async def _schedule(self) -> None:
        c = self.cluster
        ready = [n.name for n in c.nodes.values() if n.status == "ready"]
        views = [s.view(self.update_status.get(s.id)) for s in self.by_id.values()]
        tasks = [
            TaskView(
                id=t.id,
                service=t.service,
                slot=t.slot,
                node=t.node,
                desired=t.desired,
                state="orphaned" if t.orphaned else (t.state or "assigned"),
                version=t.version,
                created=_epoch(t.created),
                started=_epoch(t.started) if t.started else 0.0,
                since=_epoch(t.updated) if t.updated else 0.0,
            )
            for t in self.tasks.values()
        ]
        p = plan(views, tasks, ready, time.time())
        self._wake_at(p.wake)
        if p.empty():
            return
        ops: list[Op] = []
        now = now_iso()
        for tid in p.orphan:
            t = self.tasks[tid]
            t.desired, t.orphaned = "shutdown", True
            ops.append(Op.put(TASKS + tid, _json(t.decided())))
        for tid in p.shutdown:
            t = self.tasks[tid]
            t.desired = "shutdown"
            ops.append(Op.put(TASKS + tid, _json(t.decided())))
        for tid in p.remove:
            ops.append(Op.delete(TASKS + tid))
            ops.append(Op.delete(TSTATUS + tid))
        for tv in p.create:
            t = Task(tv.id, tv.service, tv.slot, tv.node, version=tv.version, created=now)
            self.tasks[t.id] = t
            ops.append(Op.put(TASKS + t.id, _json(t.decided())))
        for sid, st in p.status.items():
            self.update_status[sid] = st
            ops.append(Op.put(USTATUS + sid, _json(status_doc(st))))
        # Only while we still lead (the lease on `leader` is ours): a deposed leader's
        # writes never land.
        guard = [Compare.value(LEADER, "=", c.node.name)]
        for i in range(0, len(ops), 100):  # etcd's default limit: 128 operations a txn
            result = await c.client.txn(guard, ops[i : i + 100])
            if not result.succeeded:
                self.leader = ""
                log.info("lost the lead while scheduling")
                return
        log.info(
            "scheduled create=%d shutdown=%d orphaned=%d removed=%d updates=%s",
            len(p.create),
            len(p.shutdown),
            len(p.orphan),
            len(p.remove),
            ",".join(f"{sid[:10]}:{st.state}" for sid, st in p.status.items()) or "-",
        )

    def _wake_at(self, when: float) -> None:
        """Schedule again at `when` (a rolling update's delay or monitor period ending with
        nothing else happening meanwhile)."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if when > 0:
            loop = asyncio.get_running_loop()
            delay = max(0.0, when - time.time()) + 0.01
            self._wake = loop.call_later(delay, self._kick.set)


def status_doc(st: UpdateStatus) -> dict[str, Any]:
    """swarm's UpdateStatus as the API shows it (and as ustatus/ keeps it)."""
    doc: dict[str, Any] = {"State": st.state, "Message": st.message, "Version": st.version}
    if st.started:
        doc["StartedAt"] = iso_of(st.started)
    if st.completed:
        doc["CompletedAt"] = iso_of(st.completed)
    return doc


def status_from_doc(d: dict[str, Any]) -> UpdateStatus:
    return UpdateStatus(
        state=str(d.get("State") or ""),
        version=int(d.get("Version") or 0),
        started=_epoch(str(d.get("StartedAt") or "")) if d.get("StartedAt") else 0.0,
        completed=_epoch(str(d.get("CompletedAt") or "")) if d.get("CompletedAt") else 0.0,
        message=str(d.get("Message") or ""),
    )


def iso_of(epoch: float) -> str:
    """An epoch time in Docker's RFC 3339 form (UTC, nanoseconds)."""
    secs = int(epoch)
    micros = int((epoch - secs) * 1e6)  # down: a task created after it compares later
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}000Z"


def _epoch(iso: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0
