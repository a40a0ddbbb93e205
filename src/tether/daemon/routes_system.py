"""API routes for /_ping, /version and /info."""

from __future__ import annotations

import asyncio
import os
import platform
from typing import TYPE_CHECKING

from tether import API_VERSION, MIN_API_VERSION, __version__
from tether.daemon.http import Request, Response, Router, json_response
from tether.errors import NotFound

if TYPE_CHECKING:
    from tether.daemon.app import Daemon


def register(router: Router, daemon: Daemon) -> None:
    async def ping(req: Request) -> Response | None:
        # dockerd's headers: clients negotiate their version from Api-Version, and docker's
        # CLI enables its `service` and `stack` commands from Swarm (every tether cluster
        # node schedules and answers them: a manager).
        headers = [
            ("Builder-Version", "1"),
            ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Pragma", "no-cache"),
            ("Swarm", "active/manager" if daemon.cluster is not None else "inactive"),
        ]
        return Response(200, b"OK", "text/plain; charset=utf-8", headers)

    async def version(req: Request) -> Response:
        uname = os.uname()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine)
        go = "python" + platform.python_version()
        details = {
            "ApiVersion": API_VERSION,
            "Arch": arch,
            "BuildTime": "",
            "Experimental": "false",
            "GitCommit": "",
            "GoVersion": go,
            "KernelVersion": uname.release,
            "MinAPIVersion": MIN_API_VERSION,
            "Os": "linux",
        }
        return json_response(
            {
                "Platform": {"Name": "tether"},
                "Components": [
                    {"Name": "Engine", "Version": __version__, "Details": details},
                    {
                        "Name": "tether-shim",
                        "Version": __version__,
                        "Details": {"GitCommit": ""},
                    },
                ],
                "Version": __version__,
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "GitCommit": "",
                "GoVersion": go,
                "Os": "linux",
                "Arch": arch,
                "KernelVersion": uname.release,
                "BuildTime": "",
            }
        )

    async def not_a_swarm(req: Request) -> Response:
        # A daemon without a cluster store answers as a dockerd outside a swarm does.
        if daemon.cluster is not None:
            raise NotFound("tether clusters are not swarms: see `tether node ls`")
        return json_response(
            {
                "message": 'This node is not part of a swarm. Use "docker swarm init" or '
                '"docker swarm join" to connect this node to swarm and try again.'
            },
            503,
        )

    async def info(req: Request) -> Response:
        mine = daemon.info()
        base = full_info(daemon)
        plugins = {**base["Plugins"], **mine.get("Plugins", {})}  # type: ignore[dict-item]
        return json_response({**base, **mine, "Plugins": plugins, "Swarm": swarm_info(daemon)})

    router.add("GET", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
    for method, path in (
        ("GET", "/swarm"),
        ("POST", "/swarm/init"),
        ("POST", "/swarm/join"),
        ("POST", "/swarm/leave"),
        ("POST", "/swarm/update"),
        ("GET", "/swarm/unlockkey"),
        ("POST", "/swarm/unlock"),
    ):
        router.add(method, path, not_a_swarm)


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


def full_info(daemon: Daemon) -> dict[str, object]:
    """The keys of dockerd's /info that tether's own info() does not set, with tether's
    values (counts, limits it does not enforce as false, the host's CPUs and memory)."""
    cs = list(daemon.containers.by_id.values())
    running = sum(1 for c in cs if c.state.running and not c.state.paused)
    paused = sum(1 for c in cs if c.state.running and c.state.paused)
    uname = os.uname()
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        mem = 0
    try:
        nfd = len(os.listdir("/proc/self/fd"))
    except OSError:
        nfd = 0
    import hashlib
    import time

    host_id = hashlib.sha256(daemon.root.encode()).hexdigest()[:36].upper()
    return {
        "ID": ":".join(host_id[i : i + 4] for i in range(0, 36, 4))[:47],
        "Containers": len(cs),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(cs) - running - paused,
        "Images": len(daemon.images.by_id),
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
        "Plugins": {
            "Volume": ["local"],
            "Network": daemon.drivers.names(),
            "Authorization": None,
            "Log": ["json-file", "none"],
        },
        "MemoryLimit": False,
        "SwapLimit": False,
        "KernelMemory": False,
        "KernelMemoryTCP": False,
        "CpuCfsPeriod": False,
        "CpuCfsQuota": False,
        "CPUShares": False,
        "CPUSet": False,
        "PidsLimit": False,
        "IPv4Forwarding": True,
        "BridgeNfIptables": True,
        "BridgeNfIp6tables": True,
        "Debug": daemon.opts.debug,
        "NFd": nfd,
        "OomKillDisable": False,
        "NGoroutines": len(asyncio.all_tasks()),
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2",
        "NEventsListener": 0,
        "KernelVersion": uname.release,
        "OperatingSystem": "tether",
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": uname.machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "NCPU": os.cpu_count() or 1,
        "MemTotal": mem,
        "GenericResources": None,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Labels": [],
        "ExperimentalBuild": False,
        "Runtimes": {"runc": {"path": "tether-shim"}},
        "DefaultRuntime": "runc",
        "LiveRestoreEnabled": True,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
        "Warnings": None,
    }
