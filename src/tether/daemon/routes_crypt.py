"""API routes of encrypted overlay networks (crypt/): rotating a network's key now.

    POST /networks/{id}/rotate-key   -> {"Epoch": N}   (tether network rotate-key NAME)

What a node holds and its data path's counters are in `GET /networks/{id}` under
"Encryption" (routes_networks.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.daemon.http import Request, Response, Router, json_response
from tether.errors import Forbidden

if TYPE_CHECKING:
    from tether.daemon.app import Daemon


def register(router: Router, daemon: Daemon) -> None:
    async def rotate(req: Request) -> Response:
        net = daemon.networks.find(req.params["id"])
        if daemon.encryption is None:
            raise Forbidden(f"network {net.name} is not encrypted (-o encrypted)")
        epoch = await daemon.encryption.rotate(net)
        return json_response({"Epoch": epoch})

    router.add("POST", "/networks/{id}/rotate-key", rotate)
