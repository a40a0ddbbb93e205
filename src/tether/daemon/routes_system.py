"""API routes for /_ping, /version and /info."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from tether import API_VERSION, __version__
from tether.daemon.http import Request, Response, Router, json_response

if TYPE_CHECKING:
    from tether.daemon.app import Daemon


def register(router: Router, daemon: Daemon) -> None:
    async def ping(req: Request) -> Response:
        return Response(200, b"OK", "text/plain; charset=utf-8")

    async def version(req: Request) -> Response:
        uname = os.uname()
        return json_response(
            {
                "Platform": {"Name": "tether"},
                "Components": [
                    {
                        "Name": "Engine",
                        "Version": __version__,
                        "Details": {"ApiVersion": API_VERSION},
                    }
                ],
                "Version": __version__,
                "ApiVersion": API_VERSION,
                "MinAPIVersion": "1.24",
                "GitCommit": "",
                "GoVersion": "python" + platform.python_version(),
                "Os": "linux",
                "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine),
                "KernelVersion": uname.release,
                "BuildTime": "",
            }
        )

    async def info(req: Request) -> Response:
        return json_response(daemon.info())

    router.add("GET", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
