"""API routes for /services and /tasks, in Docker's shapes (a cluster node only)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from tether.api import query
from tether.api.decode import check_depth
from tether.cluster.agent import task_name
from tether.cluster.ingress import ensure_network
from tether.cluster.services import Service, Services, Task, new_service_id, status_doc
from tether.cluster.servicespec import check
from tether.daemon.http import (
    Request,
    Response,
    Router,
    end_stream,
    json_response,
    start_stream,
    write_chunk,
)
from tether.daemon.routes_cluster import NO_CLUSTER, NotClustered
from tether.engine import filters as flt
from tether.engine.endpoints import lowest_free
from tether.errors import InvalidParameter, NotFound
from tether.runtime import logs as logfile

if TYPE_CHECKING:
    from tether.cluster.nodeapi import NodeApi
    from tether.cluster.state import ClusterStore
    from tether.engine.networks import Networks

log = logging.getLogger("tether.services")
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
FOLLOW_POLL = 0.25  # seconds: how often `logs -f` looks for tasks started since
REMOVE_WAIT = 15.0  # seconds `service rm` waits for the service's tasks to stop
# swarmkit's defaults (api/defaults): what a spec without UpdateConfig gets.
DEFAULT_UPDATE_CONFIG = {
    "Parallelism": 1,
    "FailureAction": "pause",
    "Monitor": 5_000_000_000,
    "MaxFailureRatio": 0,
    "Order": "stop-first",
}

NOT_SWARM = "This node is not part of a swarm"


def json_body(req: Request) -> Any:
    """The body as plain JSON (servicespec.check types it), or Docker's 400."""
    if not req.body.strip():
        raise InvalidParameter("invalid JSON: EOF")
    check_depth(req.body)
    try:
        return msgspec.json.decode(req.body)
    except msgspec.DecodeError as exc:
        raise InvalidParameter(f"invalid JSON: {exc}") from None


def task_view(t: Task, svc: Service | None) -> dict[str, Any]:
    """Docker's Task object."""
    state = "orphaned" if t.orphaned and not t.state else (t.state or "assigned")
    spec = (svc.spec.get("TaskTemplate") if svc else None) or {}
    return {
        "ID": t.id,
        "Version": {"Index": 1},
        "CreatedAt": t.created,
        "UpdatedAt": t.updated or t.created,
        "Name": task_name(svc, t) if svc else t.id,
        "Labels": {},
        "Spec": spec,
        "ServiceID": t.service,
        "Slot": t.slot,
        "NodeID": t.node,
        "Status": {
            "Timestamp": t.updated or t.created,
            "State": state,
            "Message": state,
            "Err": t.error,
            "ContainerStatus": {"ContainerID": t.container, "ExitCode": t.exit_code},
        },
        "DesiredState": t.desired,
        # The version of the service's task template it was made from (TaskVersion).
        "SpecVersion": {"Index": t.version},
    }


def ports_of(spec: dict[str, Any], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The service's Endpoint.Ports from its spec.  An ingress port without a published
    port keeps the one swarm's range gave it before (an update leaves it where clients know
    it); a new one gets one at create (Services.assign_ports).  A host-mode port without
    one takes a random port on each node that runs a task, as swarm's."""
    out: list[dict[str, Any]] = []
    for p in spec["EndpointSpec"]["Ports"]:
        p = dict(p)
        if p["PublishMode"] == "ingress" and not p["PublishedPort"]:
            same = (p["Protocol"], p["TargetPort"], "ingress")
            prior = next(
                (
                    q["PublishedPort"]
                    for q in old
                    if (q["Protocol"], q["TargetPort"], q["PublishMode"]) == same
                    and not any(x["PublishedPort"] == q["PublishedPort"] for x in out)
                ),
                0,
            )
            p["PublishedPort"] = prior
        out.append(p)
    return out


def service_doc(svc: Service, services: Services, status: bool = False) -> dict[str, Any]:
    """Docker's Service object: the stored one, its UpdateStatus, and (?status=true) the
    ServiceStatus counts `service ls` shows as REPLICAS."""
    doc = svc.to_doc()  # (with tether's TaskVersion: tasks' SpecVersion compares to it)
    st = services.update_status.get(svc.id)
    if st is not None and st.state:
        doc["UpdateStatus"] = {k: v for k, v in status_doc(st).items() if k != "Version"}
    if status:
        mine = [t for t in services.tasks.values() if t.service == svc.id]
        running = sum(1 for t in mine if t.desired == "running" and t.state == "running")
        if svc.mode == "global":
            desired = sum(1 for t in mine if t.desired == "running")
        else:
            desired = svc.replicas
        doc["ServiceStatus"] = {
            "RunningTasks": running,
            "DesiredTasks": desired,
            "CompletedTasks": 0,
        }
    return doc


def up_nodes(c: ClusterStore) -> set[str]:
    return {n.name for n in c.nodes.values() if n.status == "ready"} | {c.node.name}


def details(t: Task) -> bytes:
    """Docker's `details=1` attributes of a task's log line (sorted, values escaped)."""
    attrs = {
        "com.docker.swarm.node.id": t.node,
        "com.docker.swarm.service.id": t.service,
        "com.docker.swarm.task.id": t.id,
    }
    return ",".join(f"{k}={quote(v, safe='')}" for k, v in sorted(attrs.items())).encode()


def register(
    router: Router,
    cluster: ClusterStore | None,
    networks: Networks,
    nodeapi: NodeApi | None = None,
) -> None:
    def need() -> ClusterStore:
        if cluster is None:
            raise NotClustered(f"{NOT_SWARM}: {NO_CLUSTER}")
        return cluster

    def resolve_networks(spec: dict[str, Any]) -> list[Any]:
        nets = []
        for att in spec["TaskTemplate"]["Networks"]:
            net = networks.find(str(att["Target"]))
            if net.scope != "global":
                raise InvalidParameter(
                    f"network {net.name} is local to this node: a service's tasks run on any "
                    "node, so its networks must be overlay networks"
                )
            att["Target"] = net.id
            nets.append(net)
        return nets

    async def create(req: Request) -> Response:
        c = need()
        c.require()
        body = json_body(req)
        if isinstance(body, dict) and not body.get("Name"):
            # swarm names an unnamed service as docker names containers (adjective_name)
            from tether.engine import names

            body["Name"] = names.generate({s.name for s in c.services.by_id.values()})
        spec = check(body)
        nets = resolve_networks(spec)
        svc = Service(id=new_service_id(), spec=spec)
        if svc.endpoint_mode == "vip":
            for net in nets:
                pools = net.pools_of(4)
                if pools:
                    addr = await c.claim_vip(net, f"vip:{svc.id}", lowest_free(pools[0]))
                    svc.vips.append({"NetworkID": net.id, "Addr": f"{addr}/{pools[0].prefixlen}"})
        svc.ports = ports_of(spec, [])
        if any(p["PublishMode"] == "ingress" for p in svc.ports):
            await ensure_network(networks)  # the routing mesh's network, on first need
        c.services.assign_ports(svc)
        try:
            await c.services.create(svc)
        except Exception:
            await c.services.remove(svc)  # gives the VIPs back
            raise
        return json_response({"ID": svc.id, "Warnings": []}, 201)

    async def list_services(req: Request) -> Response:
        c = need()
        filters = flt.parse(req.arg("filters"))
        flt.check_keys(filters, {"id", "name", "label", "mode"})
        out = []
        for svc in sorted(c.services.by_id.values(), key=lambda s: s.name):
            if "name" in filters and not any(svc.name.startswith(v) for v in filters["name"]):
                continue
            if "id" in filters and not any(svc.id.startswith(v) for v in filters["id"]):
                continue
            if "label" in filters and not flt.label_match(
                filters["label"], svc.spec.get("Labels") or {}
            ):
                continue
            if "mode" in filters and svc.mode not in filters["mode"]:
                continue
            out.append(service_doc(svc, c.services, req.flag("status")))
        return json_response(out)

    async def inspect(req: Request) -> Response:
        c = need()
        doc = service_doc(c.services.find(req.params["id"]), c.services)
        if req.flag("insertDefaults"):
            # What swarm fills in for a spec that left them out (docker's inspect asks).
            spec = doc["Spec"] = dict(doc["Spec"])
            for key in ("UpdateConfig", "RollbackConfig"):
                spec.setdefault(key, dict(DEFAULT_UPDATE_CONFIG))
        return json_response(doc)

    async def update(req: Request) -> Response:
        c = need()
        svc = c.services.find(req.params["id"])
        version = req.arg("version")
        if version is None or not version.isdigit():
            raise InvalidParameter("invalid service version: a ?version= is required")
        spec = check(json_body(req))
        if spec["Name"] != svc.name:
            raise InvalidParameter(
                "rpc error: code = Unimplemented desc = renaming services is not supported"
            )
        resolve_networks(spec)
        old_tmpl = svc.spec.get("TaskTemplate") or {}
        new = Service(
            id=svc.id,
            spec=spec,
            version=svc.version,
            created=svc.created,
            vips=svc.vips,
            ports=ports_of(spec, svc.ports),
            task_version=svc.task_version,
        )
        if any(p["PublishMode"] == "ingress" for p in new.ports):
            await ensure_network(networks)
        c.services.assign_ports(new)
        if spec["TaskTemplate"] != old_tmpl:
            new.task_version += 1  # new tasks replace the old ones
        if [v["NetworkID"] for v in svc.vips] != [
            n["Target"] for n in spec["TaskTemplate"]["Networks"]
        ] and svc.endpoint_mode == "vip":
            raise InvalidParameter(
                "changing a service's networks is not supported: remove and create it again"
            )
        await c.services.update(new, int(version))
        return json_response({"Warnings": []})

    async def remove(req: Request) -> Response:
        c = need()
        svc = c.services.find(req.params["id"])
        await c.services.remove(svc)
        # Swarm lets go of a removed service's networks at once (its managers delete
        # networks in raft and nodes clean up later); a tether overlay network can go only
        # when no endpoint is left on it.  So the answer waits (bounded) for the tasks to
        # stop, and `stack rm` (docker's too) can remove the networks right after.
        deadline = time.monotonic() + REMOVE_WAIT
        while time.monotonic() < deadline and any(
            t.service == svc.id and t.state == "running" and t.node in up_nodes(c)
            for t in c.services.tasks.values()
        ):
            await asyncio.sleep(0.05)
        return Response(200)

    async def list_tasks(req: Request) -> Response:
        c = need()
        filters = flt.parse(req.arg("filters"))
        flt.check_keys(
            filters, {"id", "name", "service", "node", "desired-state", "label", "_up-to-date"}
        )
        out = []
        for t in c.services.tasks.values():
            svc = c.services.by_id.get(t.service)
            # docker's convergence progress asks for the tasks of the current spec only.
            if "_up-to-date" in filters and (svc is None or t.version != svc.task_version):
                continue
            if "service" in filters and not any(
                v in (t.service, svc.name if svc else "") for v in filters["service"]
            ):
                continue
            if "node" in filters and t.node not in filters["node"]:
                continue
            if "desired-state" in filters and t.desired not in filters["desired-state"]:
                continue
            if "id" in filters and not any(t.id.startswith(v) for v in filters["id"]):
                continue
            out.append(task_view(t, svc))
        out.sort(key=lambda v: (v["Slot"], v["NodeID"], v["CreatedAt"]))
        return json_response(out)

    def find_task(c: ClusterStore, term: str) -> Task:
        """A task by id or unique id prefix (swarm's lookup)."""
        t = c.services.tasks.get(term)
        if t is None and term:
            found = [x for x in c.services.tasks.values() if x.id.startswith(term)]
            t = found[0] if len(found) == 1 else None
        if t is None:
            raise NotFound(f"task {term} not found")
        return t

    async def inspect_task(req: Request) -> Response:
        c = need()
        t = find_task(c, req.params["id"])
        return json_response(task_view(t, c.services.by_id.get(t.service)))

    async def task_stream(
        t: Task, follow: bool, tail: int | None, since: float
    ) -> AsyncIterator[list[logfile.Frame]]:
        """One task's log lines, from this node's container or through its node's
        listener (cluster/nodeapi.py)."""
        assert cluster is not None and nodeapi is not None
        if t.node == cluster.node.name:
            ctr = nodeapi.local_container(t.id)
            if ctr is not None:
                async for frames in nodeapi.local_frames(ctr, follow, tail, since):
                    yield frames
            return
        async for frames in nodeapi.remote_frames(t.node, t.id, follow, tail, since):
            yield frames

    async def stream_logs(req: Request, pick: Any) -> None:
        """Docker's multiplexed log stream of the tasks `pick()` returns (called again
        while following, so tasks started meanwhile join in)."""
        want = {1: req.flag("stdout"), 2: req.flag("stderr")}
        if not want[1] and not want[2]:
            want = {1: True, 2: True}
        follow = req.flag("follow")
        stamps = req.flag("timestamps")
        with_details = req.flag("details")
        tail = query.tail(req.arg("tail"))
        since = query.timestamp("since", req.arg("since"))
        queue: asyncio.Queue[tuple[Task, list[logfile.Frame]] | None] = asyncio.Queue(64)
        pumps: dict[str, asyncio.Task[None]] = {}

        def line(t: Task, f: logfile.Frame) -> bytes:
            data = f.data
            if with_details:
                data = details(t) + b" " + data
            if stamps:
                data = logfile.rfc3339_nano(f.time_ns).encode() + b" " + data
            return logfile.docker_frame(f.stream, data)

        async def pump(t: Task, first: bool) -> None:
            # A task that starts while we follow shows all its lines (its first ones were
            # written before we saw it); --tail counts for the tasks there at the start.
            try:
                async for frames in task_stream(t, follow, tail if first else None, since):
                    await queue.put((t, frames))
            except Exception as exc:  # one node's trouble must not end the others' logs
                msg = getattr(exc, "args", [str(exc)])[0]
                log.warning("logs of task %s unavailable: %s", t.id, msg)
                err = f"error from node {t.node}: {msg}\n".encode()
                await queue.put((t, [logfile.Frame(2, 0, err)]))
            finally:
                await queue.put(None)

        def start_new(first: bool = False) -> None:
            for t in pick():
                if t.id not in pumps:
                    pumps[t.id] = asyncio.get_running_loop().create_task(pump(t, first))

        start_new(first=True)
        await start_stream(req, MULTIPLEXED)
        done = 0
        try:
            if not follow:
                # Everything there is, each task's lines in order, the tasks merged by time.
                got: list[tuple[int, int, bytes]] = []
                while done < len(pumps):
                    item = await queue.get()
                    if item is None:
                        done += 1
                        continue
                    t, frames = item
                    got.extend(
                        (f.time_ns, len(got), line(t, f)) for f in frames if want.get(f.stream)
                    )
                got.sort()
                for i in range(0, len(got), 256):
                    await write_chunk(req, b"".join(g[2] for g in got[i : i + 256]))
            else:
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), FOLLOW_POLL)
                    except TimeoutError:
                        start_new()
                        continue
                    if item is None:
                        done += 1
                        continue
                    t, frames = item
                    out = b"".join(line(t, f) for f in frames if want.get(f.stream))
                    await write_chunk(req, out)
            await end_stream(req)
        finally:
            for p in pumps.values():
                p.cancel()
            for p in pumps.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await p
        return None

    def need_logs() -> ClusterStore:
        c = need()
        if nodeapi is None:
            raise NotClustered(f"{NOT_SWARM}: {NO_CLUSTER}")
        return c

    async def service_logs(req: Request) -> Response | None:
        c = need_logs()
        svc = c.services.find(req.params["id"])

        def pick() -> list[Task]:
            up = up_nodes(c)
            return sorted(
                (
                    t
                    for t in c.services.tasks.values()
                    if t.service == svc.id and t.container and t.node in up
                ),
                key=lambda t: (t.slot, t.node, t.created),
            )

        await stream_logs(req, pick)
        return None

    async def task_logs(req: Request) -> Response | None:
        c = need_logs()
        t = find_task(c, req.params["id"])
        await stream_logs(req, lambda: [t])
        return None

    async def none_of_these(req: Request) -> Response:
        """Swarm secrets and configs: tether has none (docker's `stack rm` lists them)."""
        need()
        return json_response([])

    async def refuse_these(req: Request) -> Response:
        need()
        kind = "configs" if "/configs/" in req.path else "secrets"
        raise InvalidParameter(f"tether's services do not support swarm {kind}")

    router.add("GET", "/secrets", none_of_these)
    router.add("GET", "/configs", none_of_these)
    router.add("POST", "/secrets/create", refuse_these)
    router.add("POST", "/configs/create", refuse_these)
    router.add("POST", "/services/create", create)
    router.add("GET", "/services", list_services)
    router.add("GET", "/services/{id}", inspect)
    router.add("POST", "/services/{id}/update", update)
    router.add("DELETE", "/services/{id}", remove)
    router.add("GET", "/tasks", list_tasks)
    router.add("GET", "/tasks/{id}", inspect_task)
    router.add("GET", "/services/{id}/logs", service_logs)
    router.add("GET", "/tasks/{id}/logs", task_logs)
