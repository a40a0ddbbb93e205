"""API routes for /services and /tasks, in Docker's shapes (a cluster node only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from tether.api.decode import check_depth
from tether.cluster.agent import task_name
from tether.cluster.services import Service, Task, new_service_id
from tether.cluster.servicespec import check
from tether.daemon.http import Request, Response, Router, json_response
from tether.daemon.routes_cluster import NO_CLUSTER, NotClustered
from tether.engine import filters as flt
from tether.engine.endpoints import lowest_free
from tether.errors import InvalidParameter, NotFound

if TYPE_CHECKING:
    from tether.cluster.state import ClusterStore
    from tether.engine.networks import Networks

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
    }


def register(router: Router, cluster: ClusterStore | None, networks: Networks) -> None:
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
        spec = check(json_body(req))
        nets = resolve_networks(spec)
        svc = Service(id=new_service_id(), spec=spec)
        if svc.endpoint_mode == "vip":
            for net in nets:
                pools = net.pools_of(4)
                if pools:
                    addr = await c.claim_vip(net, f"vip:{svc.id}", lowest_free(pools[0]))
                    svc.vips.append({"NetworkID": net.id, "Addr": f"{addr}/{pools[0].prefixlen}"})
        svc.ports = [
            {**p, "PublishedPort": p["PublishedPort"] or p["TargetPort"]}
            if p["PublishMode"] == "host"
            else p
            for p in spec["EndpointSpec"]["Ports"]
        ]
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
            out.append(svc.to_doc())
        return json_response(out)

    async def inspect(req: Request) -> Response:
        c = need()
        return json_response(c.services.find(req.params["id"]).to_doc())

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
            ports=svc.ports,
            task_version=svc.task_version,
        )
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
        return Response(200)

    async def list_tasks(req: Request) -> Response:
        c = need()
        filters = flt.parse(req.arg("filters"))
        flt.check_keys(filters, {"id", "name", "service", "node", "desired-state", "label"})
        out = []
        for t in c.services.tasks.values():
            svc = c.services.by_id.get(t.service)
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

    async def inspect_task(req: Request) -> Response:
        c = need()
        t = c.services.tasks.get(req.params["id"])
        if t is None:
            raise NotFound(f"task {req.params['id']} not found")
        return json_response(task_view(t, c.services.by_id.get(t.service)))

    router.add("POST", "/services/create", create)
    router.add("GET", "/services", list_services)
    router.add("GET", "/services/{id}", inspect)
    router.add("POST", "/services/{id}/update", update)
    router.add("DELETE", "/services/{id}", remove)
    router.add("GET", "/tasks", list_tasks)
    router.add("GET", "/tasks/{id}", inspect_task)
