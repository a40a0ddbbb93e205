"""Container specs: from a `POST /containers/create` body to a Container record (pure).

Everything `create` decides happens here, before anything is stored: the command line after
the image's Entrypoint/Cmd, the environment, Docker's Config and HostConfig shapes, the one
network the container starts on.  Nothing here touches the kernel or the store.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import signal
from collections.abc import Callable
from typing import Any

from tether.errors import InvalidParameter, NotFound
from tether.model import Container, EndpointConfig, Network
from tether.netmodes import DEFAULT_NETWORK, is_container, is_user_defined, normalize
from tether.runtime.images import DEFAULT_PATH, Image
from tether.timefmt import now_iso

MAC_RE = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
SIGNALS = {s.name: s.value for s in signal.Signals}


def parse_signal(value: str | int | None, default: int = signal.SIGKILL) -> int:
    if value is None or value == "":
        return int(default)
    text = str(value).upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    if text not in SIGNALS:
        raise InvalidParameter(f"Invalid signal: {value}")
    return int(SIGNALS[text])


def build(
    body: dict[str, Any],
    name: str,
    img: Image,
    find_network: Callable[[str], Network],
) -> Container:
    """The container `body` asks for, named `name` (already checked and free)."""
    image_ref = str(body.get("Image") or "")
    hc: dict[str, Any] = dict(body.get("HostConfig") or {})
    endpoints_cfg: dict[str, Any] = dict(
        (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    )
    mode = str(hc.get("NetworkMode") or "default")
    if len(endpoints_cfg) > 1:
        raise InvalidParameter(
            "Container cannot be connected to network endpoints: " + ", ".join(endpoints_cfg)
        )
    if is_container(mode) and (hc.get("PortBindings") or hc.get("PublishAllPorts")):
        raise InvalidParameter(
            "conflicting options: port publishing and the container type network mode"
        )
    if is_container(mode) and body.get("ExposedPorts"):
        raise InvalidParameter(
            "conflicting options: port exposing and the container type network mode"
        )

    entrypoint = body.get("Entrypoint")
    cmd = body.get("Cmd")
    if entrypoint is None:
        entrypoint = img.config.get("Entrypoint")
        if not cmd:
            cmd = img.config.get("Cmd")
    argv = [*(entrypoint or []), *(cmd or [])]
    if not argv:
        raise InvalidParameter("No command specified")

    env = merge_env(img.config.get("Env") or [], body.get("Env") or [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    mac = str(body.get("MacAddress") or "")
    if mac and not MAC_RE.match(mac):
        raise InvalidParameter(f"invalid MAC address: {mac}")
    for h in hc.get("ExtraHosts") or []:
        host, sep, ip = str(h).partition(":")
        if not sep or not host or (ip != "host-gateway" and ip_or_none(ip) is None):
            raise InvalidParameter(f'invalid IP address in add-host: "{ip if sep else h}"')

    cid = secrets.token_hex(32)
    exposed = dict(img.config.get("ExposedPorts") or {})
    exposed.update(body.get("ExposedPorts") or {})
    config = {
        "Hostname": str(body.get("Hostname") or cid[:12]),
        "Domainname": str(body.get("Domainname") or ""),
        "User": str(body.get("User") or ""),
        "AttachStdin": bool(body.get("AttachStdin")),
        "AttachStdout": bool(body.get("AttachStdout", True)),
        "AttachStderr": bool(body.get("AttachStderr", True)),
        "ExposedPorts": exposed or None,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": env,
        "Cmd": cmd,
        "Image": image_ref,
        "Volumes": None,
        "WorkingDir": str(body.get("WorkingDir") or img.config.get("WorkingDir") or ""),
        "Entrypoint": entrypoint,
        "OnBuild": None,
        "Labels": dict(body.get("Labels") or {}),
    }
    if mac:
        config["MacAddress"] = mac
    if body.get("StopTimeout") is not None:
        config["StopTimeout"] = int(body["StopTimeout"])
    stop_signal = body.get("StopSignal") or img.config.get("StopSignal")
    if stop_signal:
        parse_signal(stop_signal)
        config["StopSignal"] = stop_signal
    host_config = {
        "NetworkMode": mode,
        "PortBindings": hc.get("PortBindings") or {},
        "PublishAllPorts": bool(hc.get("PublishAllPorts")),
        "Dns": list(hc.get("Dns") or []),
        "DnsOptions": list(hc.get("DnsOptions") or []),
        "DnsSearch": list(hc.get("DnsSearch") or []),
        "ExtraHosts": list(hc.get("ExtraHosts") or []) or None,
        "AutoRemove": bool(hc.get("AutoRemove")),
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "Privileged": True,
        "Links": hc.get("Links"),
    }

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
    if normalize(mode) == DEFAULT_NETWORK:
        target = DEFAULT_NETWORK
        ecfg = endpoints_cfg.get(DEFAULT_NETWORK) or endpoints_cfg.get("default") or {}
    elif is_container(mode):
        target, ecfg = "", {}
    else:
        target, ecfg = mode, endpoints_cfg.get(mode) or next(iter(endpoints_cfg.values()), {})
    if target:
        cfg = endpoint_config(ecfg, mac)
        if cfg.aliases and not is_user_defined(target):
            raise InvalidParameter(
                "network-scoped alias is supported only for containers in user defined networks"
            )
        try:
            net = find_network(target)
            cfg.network_id = net.id
            target = net.name
        except NotFound:
            pass  # checked at start, as Docker does: the container stays Created
        c.networks[target] = cfg
    return c


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    out: dict[str, str] = {}
    for e in [*base, *extra]:
        key = e.split("=", 1)[0]
        out[key] = e
    return list(out.values())


def ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def endpoint_config(body: dict[str, Any], mac: str) -> EndpointConfig:
    """One entry of NetworkingConfig.EndpointsConfig (or a connect body), checked."""
    ipam = body.get("IPAMConfig") or {}
    v4 = str(ipam.get("IPv4Address") or "")
    v6 = str(ipam.get("IPv6Address") or "")
    if v4:
        parsed = ip_or_none(v4)
        if parsed is None or parsed.version != 4:
            raise InvalidParameter(f"invalid IPv4 address: {v4}")
    if v6:
        parsed = ip_or_none(v6)
        if parsed is None or parsed.version != 6:
            raise InvalidParameter(f"invalid IPv6 address: {v6}")
    endpoint_mac = str(body.get("MacAddress") or mac or "")
    if endpoint_mac and not MAC_RE.match(endpoint_mac):
        raise InvalidParameter(f"invalid MAC address: {endpoint_mac}")
    return EndpointConfig(
        aliases=[str(a) for a in body.get("Aliases") or []],
        ipv4=v4,
        ipv6=v6,
        mac=endpoint_mac.lower(),
        driver_opts={str(k): str(v) for k, v in (body.get("DriverOpts") or {}).items()},
        links=[str(x) for x in body.get("Links") or []],
    )


def random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)
