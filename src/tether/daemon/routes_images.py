"""API routes for /images: list, import (POST /images/create?fromSrc=-), inspect, remove."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from tether import wire
from tether.api.images import ImageImport
from tether.daemon.http import Request, Response, Router, json_response
from tether.runtime.images import apply_changes

if TYPE_CHECKING:
    from tether.daemon.app import Daemon


def register(router: Router, daemon: Daemon) -> None:
    images = daemon.images

    async def list_(req: Request) -> Response:
        return json_response([images.list_view(i) for i in images.all()])

    async def create(req: Request) -> Response:
        spec = ImageImport.from_query(req.query)
        spec.check_config(apply_changes(spec.changes))
        # The tarball goes to disk as it arrives (it may be far larger than a JSON body).
        fd, tmp = tempfile.mkstemp(prefix="import-", dir=images.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in req.body_chunks():
                    f.write(chunk)
            img = await images.import_tar(
                tmp, req.arg("repo"), req.arg("tag"), apply_changes(spec.changes), ""
            )
        finally:
            os.unlink(tmp)
        return Response(200, wire.dumps({"status": img.id}).encode() + b"\n")

    async def inspect(req: Request) -> Response:
        return json_response(images.inspect_view(images.find(req.params["name"])))

    async def remove(req: Request) -> Response:
        using = [(c.id, c.image_id, c.state.running) for c in daemon.containers.by_id.values()]
        return json_response(images.remove(req.params["name"], using, req.flag("force")))

    router.add("GET", "/images/json", list_)
    router.add("POST", "/images/create", create, stream_body=True)
    router.add("GET", "/images/{name*}/json", inspect)
    router.add("DELETE", "/images/{name*}", remove)
