"""API routes for /networks, in the Docker Engine API's shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.api.networks import EndpointSettings, NetworkConnect, NetworkCreate, NetworkDisconnect
from tether.daemon.http import Request, Response, Router, json_response
from tether.engine import filters as flt

if TYPE_CHECKING:
    from tether.daemon.app import Daemon


def register(router: Router, daemon: Daemon) -> None:
    nets = daemon.networks

    async def list_networks(req: Request) -> Response:
        return json_response(nets.query(flt.parse(req.arg("filters"))))

    async def inspect(req: Request) -> Response:
        net = nets.find(req.params["id"])
        data = nets.inspect(net)
        if req.flag("verbose"):  # what tether made in the kernel for it (tether's addition)
            from tether.explain.kernelview import network_view

            data["Kernel"] = network_view(daemon, net)
        if daemon.encryption is not None and net.driver_state.get("encrypted"):
            # This node's view: key epochs, and what its data path sealed, opened, dropped.
            data["Encryption"] = daemon.encryption.status(net)
        return json_response(data)

    async def create(req: Request) -> Response:
        net = await nets.create(req.decode(NetworkCreate, NetworkCreate()))
        return json_response({"Id": net.id, "Warning": ""}, 201)

    async def remove(req: Request) -> Response:
        await nets.remove(req.params["id"])
        return Response(204)

    async def prune(req: Request) -> Response:
        deleted = await nets.prune(flt.parse(req.arg("filters")))
        return json_response({"NetworksDeleted": deleted})

    async def connect(req: Request) -> Response:
        body = req.decode(NetworkConnect, NetworkConnect())
        await daemon.lifecycle.connect(
            req.params["id"], body.Container or "", body.EndpointConfig or EndpointSettings()
        )
        return Response(200)

    async def disconnect(req: Request) -> Response:
        body = req.decode(NetworkDisconnect, NetworkDisconnect())
        await daemon.lifecycle.disconnect(req.params["id"], body.Container or "", bool(body.Force))
        return Response(200)

    router.add("POST", "/networks/{id}/connect", connect)
    router.add("POST", "/networks/{id}/disconnect", disconnect)
    router.add("GET", "/networks", list_networks)
    router.add("POST", "/networks/create", create)
    router.add("POST", "/networks/prune", prune)
    router.add("GET", "/networks/{id}", inspect)
    router.add("DELETE", "/networks/{id}", remove)
