"""API routes for the troubleshooting views: GET /tether/topology and Docker's GET /events.

`/tether/topology` is a tether extension (the `/tether/` prefix keeps it out of Docker's
namespace): the whole picture as one JSON document (topology/model.py), read by `tether
topology` and `tether ui`.  `/events` is Docker's event stream: one JSON message per line,
chunked, for as long as the client stays, made from the engine's event bus.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import TYPE_CHECKING, Any

from tether.daemon.http import (
    Request,
    Response,
    Router,
    end_stream,
    json_response,
    start_stream,
    write_chunk,
)
from tether.errors import InvalidParameter
from tether.events import (
    ClusterEndpoints,
    ClusterNetwork,
    ClusterNode,
    ContainerCreated,
    ContainerDestroyed,
    ContainerStarted,
    ContainerStopped,
    EndpointJoined,
    EndpointLeft,
    Event,
    NetworkCreated,
    NetworkRemoved,
    SandboxReady,
    SandboxRemoving,
)
from tether.model import Container
from tether.topology import model

if TYPE_CHECKING:
    from tether.daemon.app import Daemon

# A client that does not read its events is cut off rather than buffered without bound.
QUEUE_MAX = 10_000
EVENT_FILTERS = ("type", "event", "container", "network")


def topology(daemon: Daemon) -> dict[str, Any]:
    cluster = daemon.cluster
    node = {"Name": os.uname().nodename, "Addr": ""}
    services: list[dict[str, Any]] = []
    if cluster is not None:
        node = {"Name": cluster.node.name, "Addr": cluster.node.addr}
        services = _services(daemon)
    return model.build(
        node,
        daemon.networks.by_id.values(),
        daemon.containers.by_id.values(),
        cluster.nodes.values() if cluster is not None else (),
        cluster.endpoints if cluster is not None else None,
        services,
        driver_of=lambda net: daemon.drivers.by_name.get(net.driver),
    )


def _services(daemon: Daemon) -> list[dict[str, Any]]:
    assert daemon.cluster is not None
    from tether.cluster.agent import task_name

    svcs = daemon.cluster.services
    out = []
    for svc in sorted(svcs.by_id.values(), key=lambda s: s.name):
        tasks = [t for t in svcs.tasks.values() if t.service == svc.id]
        out.append(
            {
                "Id": svc.id,
                "Name": svc.name,
                "Mode": svc.mode,
                "Replicas": svc.replicas,
                "VIPs": [
                    {
                        "NetworkID": v["NetworkID"],
                        "Network": _net_name(daemon, v["NetworkID"]),
                        "Addr": v["Addr"].split("/")[0],
                    }
                    for v in svc.vips
                ],
                "Ports": list(svc.ports),
                "Tasks": [
                    {
                        "Id": t.id,
                        "Name": task_name(svc, t),
                        "Slot": t.slot,
                        "Node": t.node,
                        "State": t.state or "assigned",
                        "Container": t.container,
                    }
                    for t in sorted(tasks, key=lambda t: (t.slot, t.node, t.id))
                ],
            }
        )
    return out


def _net_name(daemon: Daemon, net_id: str) -> str:
    net = daemon.networks.by_id.get(net_id)
    return net.name if net is not None else net_id[:12]


# -- /events --------------------------------------------------------------------------------


def _message(
    kind: str, action: str, actor: str, attrs: dict[str, str], scope: str
) -> dict[str, Any]:
    now = time.time_ns()
    msg: dict[str, Any] = {
        "Type": kind,
        "Action": action,
        "Actor": {"ID": actor, "Attributes": attrs},
        "scope": scope,
        "time": now // 1_000_000_000,
        "timeNano": now,
    }
    if kind == "container":  # Docker's older fields, still sent for containers
        msg.update({"status": action, "id": actor, "from": attrs.get("image", "")})
    return msg


def _container_attrs(c: Container) -> dict[str, str]:
    attrs = {str(k): str(v) for k, v in (c.config.get("Labels") or {}).items()}
    attrs.update({"image": c.image, "name": c.name})
    return attrs


def messages(ev: Event, network_name: Any) -> list[dict[str, Any]]:
    """Docker's event messages for one engine event (none for the internal ones)."""
    if isinstance(ev, ContainerCreated):
        return [
            _message(
                "container", "create", ev.container.id, _container_attrs(ev.container), "local"
            )
        ]
    if isinstance(ev, ContainerStarted):
        return [
            _message("container", "start", ev.container.id, _container_attrs(ev.container), "local")
        ]
    if isinstance(ev, ContainerStopped):
        attrs = _container_attrs(ev.container)
        attrs["exitCode"] = str(ev.container.state.exit_code)
        return [_message("container", "die", ev.container.id, attrs, "local")]
    if isinstance(ev, ContainerDestroyed):
        return [
            _message(
                "container", "destroy", ev.container.id, _container_attrs(ev.container), "local"
            )
        ]
    if isinstance(ev, (SandboxReady, SandboxRemoving)):
        # Docker reports a container's networks joined at start and left at stop.
        action = "connect" if isinstance(ev, SandboxReady) else "disconnect"
        return [
            _message(
                "network",
                action,
                ep.network_id,
                {"container": ev.container.id, "name": name, "type": network_name(ep.network_id)},
                "local",
            )
            for name, ep in ev.container.endpoints.items()
        ]
    if isinstance(ev, (EndpointJoined, EndpointLeft)):
        net = ev.network
        action = "connect" if isinstance(ev, EndpointJoined) else "disconnect"
        net_id = net.id if net is not None else (ev.endpoint.network_id if ev.endpoint else "")
        attrs = {
            "container": ev.container.id,
            "name": net.name if net else "",
            "type": net.driver if net else "",
        }
        return [_message("network", action, net_id, attrs, "local")]
    if isinstance(ev, (NetworkCreated, NetworkRemoved)):
        net = ev.network
        action = "create" if isinstance(ev, NetworkCreated) else "destroy"
        return [
            _message("network", action, net.id, {"name": net.name, "type": net.driver}, net.scope)
        ]
    if isinstance(ev, ClusterNetwork):
        action = "destroy" if ev.removed else "update"
        net = ev.network
        return [
            _message("network", action, net.id, {"name": net.name, "type": net.driver}, "swarm")
        ]
    if isinstance(ev, ClusterEndpoints):
        return [
            _message(
                "network", "update", ev.network_id, {"endpoints": str(len(ev.endpoints))}, "swarm"
            )
        ]
    if isinstance(ev, ClusterNode):
        n = ev.node
        return [
            _message(
                "node",
                "update",
                n.name,
                {"name": n.name, "state": n.status, "addr": n.addr},
                "swarm",
            )
        ]
    return []


def _parse_filters(text: str | None) -> dict[str, set[str]]:
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raise InvalidParameter(f"invalid filter '{text}'") from None
    if not isinstance(raw, dict):
        raise InvalidParameter(f"invalid filter '{text}'")
    out: dict[str, set[str]] = {}
    for key, vals in raw.items():
        if key not in EVENT_FILTERS:
            raise InvalidParameter(f"invalid filter '{key}'")
        # Docker accepts both {"k": ["v"]} and the older {"k": {"v": true}}.
        values = vals if isinstance(vals, list) else list(vals) if isinstance(vals, dict) else None
        if values is None:
            raise InvalidParameter(f"invalid filter '{key}'")
        out[key] = {str(v) for v in values}
    return out


def _matches(msg: dict[str, Any], filters: dict[str, set[str]]) -> bool:
    if "type" in filters and msg["Type"] not in filters["type"]:
        return False
    if "event" in filters and msg["Action"] not in filters["event"]:
        return False
    actor = msg["Actor"]
    if "container" in filters:
        ids = (
            {actor["ID"]}
            if msg["Type"] == "container"
            else {actor["Attributes"].get("container", "")}
        )
        names = {actor["Attributes"].get("name", "")} if msg["Type"] == "container" else set()
        wanted = filters["container"]
        if not any(i and any(i.startswith(w) for w in wanted) for i in ids) and not names & wanted:
            return False
    if "network" in filters:
        if msg["Type"] != "network":
            return False
        wanted = filters["network"]
        if actor["ID"] not in wanted and actor["Attributes"].get("name", "") not in wanted:
            return False
    return True


def register(router: Router, daemon: Daemon) -> None:
    async def get_topology(req: Request) -> Response:
        return json_response(topology(daemon))

    async def events(req: Request) -> Response | None:
        if req.arg("since"):
            # Nothing is kept to replay: refused rather than silently starting from now.
            raise InvalidParameter("since is not supported: tether keeps no history of events")
        filters = _parse_filters(req.arg("filters"))
        until = req.arg("until")
        deadline = None
        if until:
            try:
                deadline = float(until)
            except ValueError:
                raise InvalidParameter(f"invalid value for until: {until}") from None
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_MAX)
        overflow: list[bool] = []

        def net_driver(net_id: str) -> str:
            net = daemon.networks.by_id.get(net_id)
            return net.driver if net is not None else ""

        def on_event(ev: Event) -> None:
            for msg in messages(ev, net_driver):
                if _matches(msg, filters):
                    try:
                        queue.put_nowait(json.dumps(msg).encode() + b"\n")
                    except asyncio.QueueFull:
                        overflow.append(True)  # the stream ends once the queue is read

        def on_services() -> None:
            msg = _message("service", "update", "", {}, "swarm")
            if _matches(msg, filters):
                try:
                    queue.put_nowait(json.dumps(msg).encode() + b"\n")
                except asyncio.QueueFull:
                    pass

        unsubscribe = daemon.events.subscribe_all(on_event)
        svc_listeners = daemon.cluster.services.listeners if daemon.cluster is not None else None
        if svc_listeners is not None:
            svc_listeners.append(on_services)
        closed = asyncio.ensure_future(req.reader.read(1))  # the client hanging up
        try:
            await start_stream(req, "application/json")
            while True:
                timeout = None if deadline is None else deadline - time.time()
                if timeout is not None and timeout <= 0:
                    break
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {get, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if get not in done:
                    get.cancel()
                    if closed in done:
                        return None
                    continue
                await write_chunk(req, get.result())
                if overflow and queue.empty():
                    break
            await end_stream(req)
        finally:
            unsubscribe()
            if svc_listeners is not None and on_services in svc_listeners:
                svc_listeners.remove(on_services)
            closed.cancel()
        return None

    router.add("GET", "/tether/topology", get_topology)
    router.add("GET", "/events", events)
