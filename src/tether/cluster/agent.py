"""A node's agent: it runs the containers of the tasks the leader assigned to this node.

Every change of services or tasks (from the cluster store's watch) wakes one loop that
compares the tasks assigned here with the containers here (found by swarm's labels), starts
what is missing, stops and removes what is no longer wanted, and reports each task's state
under the node's lease (`tstatus/<task>`).  A task container that exits is reported failed
(or complete, exit 0): the leader replaces it.  Task containers are ordinary containers
(`ps` shows them) named as swarm names them: `web.1.<task id>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from tether.api.containers import ContainerCreate
from tether.api.networks import EndpointSettings
from tether.cluster.services import Service, Services, Task
from tether.errors import TetherError
from tether.events import ContainerStopped, EventBus
from tether.model import Container
from tether.tasks import background

if TYPE_CHECKING:
    from tether.engine.containers import Containers
    from tether.engine.lifecycle import Lifecycle

log = logging.getLogger("tether.agent")

LABEL_SERVICE_ID = "com.docker.swarm.service.id"
LABEL_SERVICE_NAME = "com.docker.swarm.service.name"
LABEL_TASK_ID = "com.docker.swarm.task.id"
LABEL_TASK_NAME = "com.docker.swarm.task.name"
LABEL_NODE_ID = "com.docker.swarm.node.id"


def task_name(svc: Service, t: Task) -> str:
    """swarm's task (and container) name: web.1.<id>, or web.<node>.<id> in global mode."""
    return f"{svc.name}.{t.slot if t.slot else t.node}.{t.id}"


def attachments(
    svc: Service, networks: dict[str, str], ingress: str | None
) -> list[tuple[str, list[str]]]:
    """(network name, aliases) of a task's endpoints: the service's networks (swarm's
    aliases: tasks.<service>, the service's own name without a VIP), then the ingress network
    when the service publishes a port through the routing mesh (no names there)."""
    out: list[tuple[str, list[str]]] = []
    for att in svc.networks:
        target = str(att.get("Target") or "")
        name = next((n for n, i in networks.items() if target in (n, i)), target)
        aliases = [f"tasks.{svc.name}", *list(att.get("Aliases") or [])]
        if svc.endpoint_mode == "dnsrr":
            aliases.append(svc.name)  # no VIP: the name itself goes round the tasks
        out.append((name, aliases))
    if ingress and any(p.get("PublishMode") == "ingress" for p in svc.ports):
        out.append((ingress, []))
    return out


def container_body(
    svc: Service, t: Task, networks: dict[str, str], ingress: str | None = None
) -> dict[str, Any]:
    """The create request for a task's container.  `networks`: name -> id of the networks
    known here; `ingress`: the ingress network's name, if there is one.  The first
    attachment is the container's network mode; the agent connects the others."""
    tmpl = svc.spec.get("TaskTemplate") or {}
    cs = tmpl.get("ContainerSpec") or {}
    labels = dict(cs.get("Labels") or {})
    labels.update(
        {
            LABEL_SERVICE_ID: svc.id,
            LABEL_SERVICE_NAME: svc.name,
            LABEL_TASK_ID: t.id,
            LABEL_TASK_NAME: task_name(svc, t),
            LABEL_NODE_ID: t.node,
        }
    )
    for k, v in (svc.spec.get("Labels") or {}).items():
        if k.startswith("com.docker.stack."):
            labels[k] = v
    atts = attachments(svc, networks, ingress)
    first = atts[0][0] if atts else "none"
    host_config: dict[str, Any] = {"NetworkMode": first}
    # Host-mode ports: published on the node that runs the task only (a random host port
    # when none is given, as swarm's).
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in svc.ports:
        if p.get("PublishMode") == "host":
            key = f"{p['TargetPort']}/{p['Protocol']}"
            port = str(p["PublishedPort"]) if p.get("PublishedPort") else ""
            bindings.setdefault(key, []).append({"HostIp": "", "HostPort": port})
    if bindings:
        host_config["PortBindings"] = bindings
    dns = cs.get("DNSConfig") or {}
    if dns.get("Nameservers"):
        host_config["Dns"] = list(dns["Nameservers"])
    if dns.get("Search"):
        host_config["DnsSearch"] = list(dns["Search"])
    if dns.get("Options"):
        host_config["DnsOptions"] = list(dns["Options"])
    log_driver = tmpl.get("LogDriver") or {}
    if log_driver.get("Name") or log_driver.get("Options"):
        # --log-driver json-file --log-opt max-size=...: the task's log rotates as a
        # container's does (service logs reads the rotated files too: nodeapi.py).
        host_config["LogConfig"] = {
            "Type": log_driver.get("Name") or "json-file",
            "Config": {str(k): str(v) for k, v in (log_driver.get("Options") or {}).items()},
        }
    body: dict[str, Any] = {
        "Image": cs.get("Image") or "",
        "Env": list(cs.get("Env") or []),
        "Labels": labels,
        "Hostname": cs.get("Hostname") or "",
        "WorkingDir": cs.get("Dir") or "",
        "HostConfig": host_config,
        "NetworkingConfig": {
            "EndpointsConfig": {first: {"Aliases": atts[0][1]}} if atts else {}
        },
    }
    if bindings:
        body["ExposedPorts"] = {key: {} for key in bindings}
    if cs.get("StopGracePeriod"):
        # Nanoseconds in the spec; whole seconds for a container (rounded up).
        body["StopTimeout"] = -(-int(cs["StopGracePeriod"]) // 1_000_000_000)
    if cs.get("Command"):
        body["Entrypoint"] = list(cs["Command"])
    if cs.get("Args"):
        body["Cmd"] = list(cs["Args"])
    return body


class Agent:
    def __init__(
        self,
        services: Services,
        containers: Containers,
        lifecycle: Lifecycle,
        events: EventBus,
        network_ids: Any,
        ingress_name: Any = lambda: None,
        withdraw: Any = None,
    ) -> None:
        self.services = services
        self.containers = containers
        self.lifecycle = lifecycle
        self.node = services.cluster.node.name
        self._network_ids = network_ids  # () -> {name: id} of the networks known here
        self._ingress_name = ingress_name  # () -> the ingress network's name, or None
        # async (container) -> None: takes a task out of its service (names, VIP, mesh)
        # before it is stopped, so no new connection goes to a task on its way out.
        self._withdraw = withdraw
        self._leaving: dict[str, asyncio.Task[None]] = {}  # container id -> its removal
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        services.listeners.append(self._kick.set)
        events.subscribe(ContainerStopped, self._stopped)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._kick.set()

    async def stop(self) -> None:
        for leaving in list(self._leaving.values()):
            leaving.cancel()  # the next start finds what is left and removes it
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _local_tasks(self) -> dict[str, Container]:
        out = {}
        for c in self.containers.by_id.values():
            tid = (c.config.get("Labels") or {}).get(LABEL_TASK_ID)
            if tid:
                out[tid] = c
        return out

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                if self.services.cluster.connected.is_set():
                    await self._converge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("agent pass failed")
                await asyncio.sleep(0.5)
                self._kick.set()

    async def _converge(self) -> None:
        here = self._local_tasks()
        mine = {t.id: t for t in self.services.tasks.values() if t.node == self.node}
        for tid, t in mine.items():
            c = here.get(tid)
            svc = self.services.by_id.get(t.service)
            if t.desired == "running" and svc is not None:
                if c is None:
                    await self._start(svc, t)
                elif c.state.running and t.state != "running":
                    await self.services.report(tid, "running", ContainerID=c.id)
            elif c is not None:
                await self._leave(c, t)
        for tid, c in here.items():
            if tid not in mine:  # a task the leader no longer has (removed meanwhile)
                await self._leave(c, None)

    async def _leave(self, c: Container, t: Task | None) -> None:
        """Take a task out of its service now, and stop and remove its container in the
        background: a stop waits out the task's grace period (10 s by default), and tasks
        leaving together (a scale down, an update) must neither wait for each other nor hold
        up the tasks that start."""
        if c.id in self._leaving:
            return
        if c.state.running and self._withdraw is not None:
            try:
                await self._withdraw(c)
            except TetherError as exc:
                log.warning("task %s not withdrawn: %s", c.name, exc.message)
        self._leaving[c.id] = background(self._remove(c, t), f"removing task {c.name}")

        def done(_: object) -> None:
            self._leaving.pop(c.id, None)
            self._kick.set()

        self._leaving[c.id].add_done_callback(done)

    async def _start(self, svc: Service, t: Task) -> None:
        name = task_name(svc, t)
        networks = self._network_ids()
        ingress = self._ingress_name()
        body = container_body(svc, t, networks, ingress)
        try:
            req = msgspec.convert(body, ContainerCreate)
            c = self.containers.create(req, name)
            await self.containers.populate(c)
            # The other networks: connected before the start (recorded only).
            for net_name, aliases in attachments(svc, networks, ingress)[1:]:
                await self.lifecycle.connect(net_name, c.id, EndpointSettings(Aliases=aliases))
            await self.lifecycle.start(c.id)
        except TetherError as exc:
            log.warning("task %s not started: %s", name, exc.message)
            await self.services.report(t.id, "rejected", Err=exc.message)
            return
        except msgspec.ValidationError as exc:
            await self.services.report(t.id, "rejected", Err=str(exc))
            return
        await self.services.report(t.id, "running", ContainerID=c.id)
        log.info("task started name=%s container=%s", name, c.short_id)

    async def _remove(self, c: Container, t: Task | None) -> None:
        try:
            if c.state.running:
                await self.lifecycle.stop(c.id, None)
            await self.lifecycle.remove(c.id, True)
        except TetherError as exc:
            log.warning("task container %s not removed: %s", c.name, exc.message)
        if t is not None and t.state not in ("shutdown", "failed", "complete", "orphaned"):
            await self.services.report(t.id, "shutdown", ContainerID=c.id)

    def _stopped(self, ev: ContainerStopped) -> None:
        c = ev.container
        tid = (c.config.get("Labels") or {}).get(LABEL_TASK_ID)
        if not tid:
            return
        t = self.services.tasks.get(tid)
        if t is None or t.desired != "running":
            return
        state = "complete" if c.state.exit_code == 0 else "failed"
        background(self._report_exit(tid, state, c.id, c.state.exit_code), "task exit report")

    async def _report_exit(self, tid: str, state: str, cid: str, code: int) -> None:
        try:
            await self.services.report(
                tid,
                state,
                ContainerID=cid,
                ExitCode=code,
                Err=f"task: non-zero exit ({code})" if code else "",
            )
        except TetherError as exc:
            log.warning("task %s exit not reported: %s", tid, exc.message)
        self._kick.set()
