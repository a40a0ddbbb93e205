"""Containers as the Docker Engine API shows them: inspect, list entries, network settings."""

from __future__ import annotations

import time

from tether.api import version as api_version
from tether.humanize import human_duration
from tether.netmodes import DEFAULT_NETWORK

# `tether ps` imports this module for human_duration: the model (~20 ms), typing and
# datetime stay out of its start-up (tether/cli/flags.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from tether.model import Container, Endpoint, EndpointConfig, Network

ZERO_TIME = "0001-01-01T00:00:00Z"


def epoch(ts: str) -> float:
    if not ts or ts.startswith("0001-"):
        return 0.0
    try:
        from datetime import datetime

        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return 0.0


def status_text(c: Container, now: float | None = None) -> str:
    now = time.time() if now is None else now
    st = c.state
    if st.paused and st.status == "running":
        return "Up " + human_duration(now - epoch(st.started_at)) + " (Paused)"
    if st.status == "running":
        return "Up " + human_duration(now - epoch(st.started_at))
    if st.status == "exited":
        return f"Exited ({st.exit_code}) {human_duration(now - epoch(st.finished_at))} ago"
    if st.status == "restarting":
        return f"Restarting ({st.exit_code}) {human_duration(now - epoch(st.finished_at))} ago"
    if st.status == "removing":
        return "Removal In Progress"
    if st.status == "dead":
        return "Dead"
    return "Created"


def aliases(c: Container, cfg: EndpointConfig, net: Network | None) -> list[str] | None:
    # Docker lists aliases on user-defined networks only, with the short id before API 1.44
    # (dockerd 25+ moved it to DNSNames).
    if net is None or net.predefined:
        return None
    if api_version.at_least(1, 44):
        return list(cfg.aliases) or None
    return [*cfg.aliases, c.short_id]


def endpoint_settings(
    c: Container, cfg: EndpointConfig, ep: Endpoint | None, net: Network | None
) -> dict[str, Any]:
    """The 13 keys Docker's engine returns per network (API 1.41)."""
    ipam = {}
    if cfg.ipv4:
        ipam["IPv4Address"] = cfg.ipv4
    if cfg.ipv6:
        ipam["IPv6Address"] = cfg.ipv6
    v4, _, len4 = (ep.ipv4 if ep else "").partition("/")
    v6, _, len6 = (ep.ipv6 if ep else "").partition("/")
    return {
        "IPAMConfig": ipam or None,
        "Links": cfg.links or None,
        "Aliases": aliases(c, cfg, net),
        "NetworkID": cfg.network_id,
        "EndpointID": ep.id if ep else "",
        "Gateway": ep.gateway4 if ep else "",
        "IPAddress": v4,
        "IPPrefixLen": int(len4) if len4 else 0,
        "IPv6Gateway": ep.gateway6 if ep else "",
        "GlobalIPv6Address": v6,
        "GlobalIPv6PrefixLen": int(len6) if len6 else 0,
        "MacAddress": ep.mac if ep else (cfg.mac or ""),
        "DriverOpts": cfg.driver_opts or None,
        **(
            {
                "DNSNames": [c.name, *cfg.aliases, c.short_id]
                if net is not None and not net.predefined
                else None
            }
            if api_version.at_least(1, 44)
            else {}
        ),
    }


def networks_view(c: Container, network_of: Callable[[str], Network | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cfg in c.networks.items():
        net = network_of(cfg.network_id) if cfg.network_id else None
        out[name] = endpoint_settings(c, cfg, c.endpoints.get(name), net)
    return out


def network_settings(
    c: Container,
    network_of: Callable[[str], Network | None],
    sandbox_id: str,
    ports: dict[str, Any] | None,
) -> dict[str, Any]:
    nets = networks_view(c, network_of)
    # The top-level fields are Docker's legacy view of the default bridge endpoint only.
    default = nets.get(DEFAULT_NETWORK) if c.network_mode == DEFAULT_NETWORK else None
    return {
        "Bridge": "",
        "SandboxID": sandbox_id if c.state.running else "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports if ports is not None else {},
        "SandboxKey": c.sandbox_key if c.state.running else "",
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": default["EndpointID"] if default else "",
        "Gateway": default["Gateway"] if default else "",
        "GlobalIPv6Address": default["GlobalIPv6Address"] if default else "",
        "GlobalIPv6PrefixLen": default["GlobalIPv6PrefixLen"] if default else 0,
        "IPAddress": default["IPAddress"] if default else "",
        "IPPrefixLen": default["IPPrefixLen"] if default else 0,
        "IPv6Gateway": default["IPv6Gateway"] if default else "",
        "MacAddress": default["MacAddress"] if default else "",
        "Networks": nets,
    }


def inspect(
    c: Container,
    network_of: Callable[[str], Network | None],
    paths: dict[str, str],
    ports: dict[str, Any] | None,
    exec_ids: list[str],
) -> dict[str, Any]:
    st = c.state
    return {
        "Id": c.id,
        "Created": c.created,
        "Path": c.path,
        "Args": list(c.args),
        "State": {
            "Status": "paused" if st.paused and st.running else st.status,
            "Running": st.running or st.status == "restarting",
            "Paused": st.paused and st.running,
            "Restarting": st.status == "restarting",
            "OOMKilled": st.oom_killed,
            "Dead": st.status == "dead",
            "Pid": st.pid if st.running else 0,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": st.started_at,
            "FinishedAt": st.finished_at,
        },
        "Image": c.image_id,
        "ResolvConfPath": paths["resolv"],
        "HostnamePath": paths["hostname"],
        "HostsPath": paths["hosts"],
        "LogPath": paths["log"],
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": exec_ids or None,
        "HostConfig": {**HOST_CONFIG_DEFAULTS, **c.host_config},
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "Mounts": mounts_view(c),
        "Config": {**CONFIG_DEFAULTS, **c.config},
        "NetworkSettings": network_settings(c, network_of, c.id, ports),
    }


def list_entry(
    c: Container, network_of: Callable[[str], Network | None], ports: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": " ".join([c.path, *c.args]),
        "Created": int(epoch(c.created)),
        "Ports": ports,
        "Labels": c.config.get("Labels") or {},
        "State": c.state.status,
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode") or "default"},
        "NetworkSettings": {"Networks": networks_view(c, network_of)},
        "Mounts": mounts_view(c),
    }


def mounts_view(c: Container) -> list[dict[str, Any]]:
    return [dict(m) for m in c.mounts]


# What dockerd 20.10 returns in HostConfig and Config for a container that set none of them
# (older records lack some; every key is there in inspect, as docker's clients expect).
HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None,
    "ContainerIDFile": "",
    "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "default",
    "PortBindings": {},
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "VolumeDriver": "",
    "VolumesFrom": None,
    "ConsoleSize": [0, 0],
    "CapAdd": None,
    "CapDrop": None,
    "CgroupnsMode": "private",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "Runtime": "runc",
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 0,
    "NanoCpus": 0,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "BlkioWeightDevice": [],
    "BlkioDeviceReadBps": [],
    "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [],
    "BlkioDeviceWriteIOps": [],
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": [],
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "KernelMemory": 0,
    "KernelMemoryTCP": 0,
    "MemoryReservation": 0,
    "MemorySwap": 0,
    "MemorySwappiness": None,
    "OomKillDisable": False,
    "PidsLimit": None,
    "Ulimits": None,
    "CpuCount": 0,
    "CpuPercent": 0,
    "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
    "MaskedPaths": None,
    "ReadonlyPaths": None,
}
CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": {},
}
