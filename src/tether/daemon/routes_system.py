"""API routes for /_ping, /version and /info."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from tether import API_VERSION, __version__
from tether.daemon.http import Request, Response, Router, head_bytes, json_response

if TYPE_CHECKING:
    from tether.daemon.app import Daemon


def register(router: Router, daemon: Daemon) -> None:
    async def ping(req: Request) -> Response | None:
        if daemon.cluster is None:
            return Response(200, b"OK", "text/plain; charset=utf-8")
        # A cluster node says it is a swarm manager (docker's CLI enables its `service` and
        # `stack` commands from this header): every tether node schedules and answers them.
        req.writer.write(
            head_bytes(
                200,
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", "2"),
                    ("Swarm", "active/manager"),
                    ("Connection", "close"),
                ],
            )
            + (b"" if req.method == "HEAD" else b"OK")
        )
        await req.writer.drain()
        return None

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
        return json_response({**daemon.info(), "Swarm": swarm_info(daemon)})

    router.add("GET", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)


def swarm_info(daemon: Daemon) -> dict[str, object]:
    """/info's Swarm: a cluster node is an active manager (the docker CLI's `service` and
    `stack` commands check ControlAvailable); a single-host daemon is inactive."""
    c = daemon.cluster
    if c is None:
        return {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        }
    nodes = [n for n in c.nodes.values() if n.status == "ready"]
    return {
        "NodeID": c.node.name,
        "NodeAddr": c.node.addr,
        "LocalNodeState": "active",
        "ControlAvailable": True,
        "Error": "" if c.connected.is_set() else f"cluster store {c.store_name} unreachable",
        "RemoteManagers": [{"NodeID": n.name, "Addr": n.addr} for n in nodes],
        "Nodes": len(nodes),
        "Managers": len(nodes),
        "Cluster": {"ID": c.opts.prefix, "Spec": {"Name": "default"}},
    }
