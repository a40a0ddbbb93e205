"""Container specs: from a checked `POST /containers/create` request to a Container (pure).

Everything `create` decides happens here, before anything is stored: the command line after
the image's Entrypoint/Cmd, the environment, Docker's Config and HostConfig shapes, the one
network the container starts on.  Nothing here touches the kernel or the store.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from tether.api import version as api_version
from tether.api.containers import ContainerCreate, exposed_ports, parse_signal, port_bindings
from tether.api.networks import EndpointSettings
from tether.errors import InvalidParameter, NotFound
from tether.model import Container, EndpointConfig, Network
from tether.netmodes import (
    DEFAULT_NETWORK,
    is_container,
    is_host,
    is_none,
    is_user_defined,
    normalize,
)
from tether.runtime.images import DEFAULT_PATH, Image
from tether.timefmt import now_iso


def msgspec_to_builtins(obj: object) -> object:
    import msgspec

    return msgspec.to_builtins(obj)


# dockerd's runconfig errors for networks a container cannot join together (the same words
# as `network connect`: Lifecycle.connect).
SHARED_NETWORK = (
    "container sharing network namespace with another container or host cannot be connected"
    " to any other network"
)
HOST_NETWORK = "container cannot be disconnected from host network or connected to host network"
NO_NETWORK = (
    "container cannot be connected to multiple networks with one of the networks in private"
    " (none) mode"
)


def build(
    req: ContainerCreate,
    name: str,
    img: Image,
    find_network: Callable[[str], Network],
    security_fields: dict[str, Any],
) -> Container:
    """The container `req` asks for, named `name` (already checked and free).

    `req` was checked at the API edge (tether.api); `security_fields` are the Privileged,
    CapAdd, CapDrop, SecurityOpt, MaskedPaths and ReadonlyPaths Docker records, as the
    confiner resolved them (runtime/security.py).
    """
    image_ref = req.Image or ""
    hc = req.host
    endpoints_cfg = req.endpoints
    mode = hc.NetworkMode or "default"
    if len(endpoints_cfg) > 1 and not api_version.at_least(1, 44):
        raise InvalidParameter(
            "Container cannot be connected to network endpoints: " + ", ".join(endpoints_cfg)
        )
    extras = [k for k in endpoints_cfg if k not in (mode, normalize(mode), "default")]
    if extras and (is_host(mode) or is_container(mode)):
        # dockerd 25+ takes them and fails at start (updateNetworkSettings); refused here,
        # where nothing is made yet, in its words (runconfig.ErrConflictSharedNetwork).
        raise InvalidParameter(SHARED_NETWORK)
    if extras and is_none(mode):
        raise InvalidParameter(NO_NETWORK)
    if is_container(mode) and (hc.PortBindings or hc.PublishAllPorts):
        raise InvalidParameter(
            "conflicting options: port publishing and the container type network mode"
        )
    if is_container(mode) and req.ExposedPorts:
        raise InvalidParameter(
            "conflicting options: port exposing and the container type network mode"
        )

    entrypoint = req.entrypoint
    cmd = req.cmd
    if entrypoint is None:
        entrypoint = img.config.get("Entrypoint")
        if not cmd:
            cmd = img.config.get("Cmd")
    argv = [*(entrypoint or []), *(cmd or [])]
    if not argv:
        raise InvalidParameter("No command specified")

    env = merge_env(img.config.get("Env") or [], req.Env or [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    mac = req.MacAddress or ""

    cid = secrets.token_hex(32)
    exposed = dict(img.config.get("ExposedPorts") or {})
    exposed.update(exposed_ports(req.ExposedPorts))
    config = {
        "Hostname": req.Hostname or cid[:12],
        "Domainname": req.Domainname or "",
        "User": req.User or "",
        "AttachStdin": bool(req.AttachStdin),
        "AttachStdout": req.AttachStdout is not False,
        "AttachStderr": req.AttachStderr is not False,
        "ExposedPorts": exposed or None,
        "Tty": bool(req.Tty),
        "OpenStdin": bool(req.OpenStdin),
        "StdinOnce": bool(req.StdinOnce),
        "Env": env,
        "Cmd": cmd,
        "Image": image_ref,
        "Volumes": dict(req.Volumes) if req.Volumes else None,
        "WorkingDir": req.WorkingDir or img.config.get("WorkingDir") or "",
        "Entrypoint": entrypoint,
        "OnBuild": None,
        "Labels": dict(req.Labels or {}),
    }
    if mac:
        config["MacAddress"] = mac
    if req.StopTimeout is not None:
        config["StopTimeout"] = req.StopTimeout
    stop_signal = req.StopSignal or img.config.get("StopSignal")
    if stop_signal:
        parse_signal(stop_signal)
        config["StopSignal"] = stop_signal
    host_config = {
        "NetworkMode": mode,
        "PortBindings": port_bindings(hc.PortBindings),
        "PublishAllPorts": bool(hc.PublishAllPorts),
        "Dns": list(hc.Dns or []),
        "DnsOptions": list(hc.DnsOptions or []),
        "DnsSearch": list(hc.DnsSearch or []),
        "ExtraHosts": list(hc.ExtraHosts or []) or None,
        "AutoRemove": bool(hc.AutoRemove),
        "RestartPolicy": {
            "Name": (hc.RestartPolicy.Name if hc.RestartPolicy else "") or "no",
            "MaximumRetryCount": (hc.RestartPolicy.MaximumRetryCount if hc.RestartPolicy else 0)
            or 0,
        },
        "Links": hc.Links,
        "LogConfig": {
            "Type": (hc.LogConfig.Type if hc.LogConfig else "") or "json-file",
            "Config": dict((hc.LogConfig.Config if hc.LogConfig else None) or {}),
        },
        "Binds": list(hc.Binds) if hc.Binds else None,
        "VolumesFrom": list(hc.VolumesFrom) if hc.VolumesFrom else None,
        "GroupAdd": list(hc.GroupAdd) if hc.GroupAdd else None,
        "ReadonlyRootfs": bool(hc.ReadonlyRootfs),
        "ShmSize": hc.ShmSize or 64 * 1024 * 1024,
        "ConsoleSize": list(hc.ConsoleSize or [0, 0]),
        "IpcMode": hc.IpcMode or "private",
        "CgroupnsMode": hc.CgroupnsMode or "private",
        "Runtime": "runc",
        **security_fields,
    }
    if hc.Tmpfs:
        host_config["Tmpfs"] = dict(hc.Tmpfs)
    if hc.Mounts:
        host_config["Mounts"] = [msgspec_to_builtins(m) for m in hc.Mounts]
    if hc.Annotations:
        host_config["Annotations"] = dict(hc.Annotations)

    c = Container(
        id=cid,
        name=name,
        created=now_iso(),
        image=image_ref,
        image_id=img.id,
        path=argv[0],
        args=argv[1:],
        config=config,
        host_config=host_config,
    )
    # The one network the container starts on.
    none = EndpointSettings()
    if normalize(mode) == DEFAULT_NETWORK:
        target = DEFAULT_NETWORK
        ecfg = endpoints_cfg.get(DEFAULT_NETWORK) or endpoints_cfg.get("default") or none
    elif is_container(mode):
        target, ecfg = "", none
    else:
        target = mode
        ecfg = endpoints_cfg.get(mode) or next(iter(endpoints_cfg.values()), none)
    if target:
        cfg = endpoint_config(ecfg, mac)
        if cfg.aliases and not is_user_defined(target):
            raise InvalidParameter(
                "network-scoped alias is supported only for containers in user defined networks"
            )
        try:
            net = find_network(target)
        except NotFound:
            # dockerd 25+: refused at create, nothing is left (20.10 left it Created); a
            # 400, not a 404, which docker's CLI would take for a missing image to pull.
            raise InvalidParameter(f"network {target} not found") from None
        cfg.network_id = net.id
        given = target
        target = net.name
        c.networks[target] = cfg
        # API 1.44+: every network of `docker run --network a --network b` at create.
        for key, extra in endpoints_cfg.items():
            if key in (given, target, "default") or is_container(mode):
                continue
            try:
                other = find_network(key)
            except NotFound:
                raise InvalidParameter(f"network {key} not found") from None
            # dockerd's updateNetworkSettings, for the extras of a private container.
            if other.driver == "host":
                raise InvalidParameter(HOST_NETWORK)
            if is_none(other.name):
                raise InvalidParameter(NO_NETWORK)
            ecfg2 = endpoint_config(extra, "")
            if ecfg2.aliases and not is_user_defined(other.name):
                raise InvalidParameter(
                    "network-scoped alias is supported only for containers in user defined networks"
                )
            ecfg2.network_id = other.id
            c.networks[other.name] = ecfg2
    return c


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    out: dict[str, str] = {}
    for e in [*base, *extra]:
        key = e.split("=", 1)[0]
        out[key] = e
    return list(out.values())


def endpoint_config(ep: EndpointSettings, mac: str) -> EndpointConfig:
    """What one network attachment asks for; its values were checked at the API edge."""
    ipam = ep.IPAMConfig
    return EndpointConfig(
        aliases=list(ep.Aliases or []),
        ipv4=(ipam.IPv4Address or "") if ipam else "",
        ipv6=(ipam.IPv6Address or "") if ipam else "",
        mac=(ep.MacAddress or mac or "").lower(),
        driver_opts=dict(ep.DriverOpts or {}),
        links=list(ep.Links or []),
    )
