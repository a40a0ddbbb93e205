"""API routes for /volumes, in the Docker Engine API's shapes (engine/volumes.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.api.decode import Model
from tether.daemon.http import Request, Response, Router, json_response
from tether.engine import filters as flt

if TYPE_CHECKING:
    from tether.daemon.app import Daemon
    from tether.model import Container


class VolumeCreate(Model):
    go_name = "volume.CreateOptions"
    Name: str | None = None
    Driver: str | None = None
    DriverOpts: dict[str, str] | None = None
    Labels: dict[str, str] | None = None


def register(router: Router, daemon: Daemon) -> None:
    volumes = daemon.containers.volumes

    def containers() -> list[Container]:
        return list(daemon.containers.by_id.values())

    async def create(req: Request) -> Response:
        body = req.decode(VolumeCreate, VolumeCreate())
        vol = volumes.create(body.Name, body.Driver, body.DriverOpts, body.Labels)
        return json_response(vol, 201)

    async def list_(req: Request) -> Response:
        found = volumes.query(flt.parse(req.arg("filters")), containers())
        return json_response({"Volumes": found, "Warnings": None})

    async def inspect(req: Request) -> Response:
        return json_response(volumes.view(volumes.find(req.params["name"])))

    async def remove(req: Request) -> Response:
        volumes.remove(req.params["name"], containers(), req.flag("force"))
        return Response(204)

    async def prune(req: Request) -> Response:
        # API 1.42+ prunes anonymous volumes unless the filter all=true says otherwise.
        deleted, space = volumes.prune(
            flt.parse(req.arg("filters")), containers(), anonymous_only=req.at_least("1.42")
        )
        return json_response({"VolumesDeleted": deleted or None, "SpaceReclaimed": space})

    router.add("POST", "/volumes/create", create)
    router.add("GET", "/volumes", list_)
    router.add("POST", "/volumes/prune", prune)
    router.add("GET", "/volumes/{name}", inspect)
    router.add("DELETE", "/volumes/{name}", remove)
