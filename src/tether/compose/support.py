"""Which compose keys tether acts on, and a warning for every valid key it does not.

A key the specification allows but tether ignores must never pass in silence: the user
would believe it took effect.  Extension keys (x-*) are ignored, as in compose.
"""

from __future__ import annotations

from typing import Any

TOP = {"version", "name", "services", "networks", "volumes"}
SERVICE = {
    "image",
    "build",
    "pull_policy",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "hostname",
    "domainname",
    "container_name",
    "working_dir",
    "labels",
    "networks",
    "network_mode",
    "ports",
    "expose",
    "depends_on",
    "dns",
    "dns_search",
    "dns_opt",
    "extra_hosts",
    "deploy",
    "scale",
    "mac_address",
    "stop_signal",
    "stop_grace_period",
    "privileged",
    "cap_add",
    "cap_drop",
    "security_opt",
    "user",
    "read_only",
    "logging",
    "volumes",
    "tmpfs",
    "restart",
    # Refused unless they ask for the default (compose/model.py, tether.unsupported).
    "pids_limit",
    "mem_limit",
}
DEPLOY = {"replicas"}
BUILD = {
    "context",
    "dockerfile",
    "dockerfile_inline",
    "args",
    "target",
    "network",
    "labels",
    "no_cache",
    "pull",
}
ATTACHMENT = {"aliases", "ipv4_address", "ipv6_address", "priority"}
PORT = {"target", "published", "protocol", "host_ip", "mode"}
DEPENDENCY = {"condition", "required", "restart"}
NETWORK = {
    "name",
    "driver",
    "driver_opts",
    "ipam",
    "internal",
    "attachable",
    "enable_ipv6",
    "external",
    "labels",
}
IPAM = {"driver", "config", "options"}
# A service's volume in the long syntax, and a top-level volume (compose/volumes.py).
SERVICE_VOLUME = {"type", "source", "target", "read_only", "bind", "volume", "tmpfs"}
VOLUME = {"name", "driver", "driver_opts", "external", "labels"}
IPAM_CONFIG = {"subnet", "gateway", "ip_range", "aux_addresses"}


def _extra(node: Any, allowed: set[str], where: str) -> list[str]:
    if not isinstance(node, dict):
        return []
    return [
        f"{where}.{k}" if where else str(k)
        for k in node
        if k not in allowed and not str(k).startswith("x-")
    ]


def unsupported(document: dict[str, Any]) -> list[str]:
    """Dotted paths of the keys in a valid document that tether does not implement."""
    out = _extra(document, TOP, "")
    for name, svc in (document.get("services") or {}).items():
        at = f"services.{name}"
        out += _extra(svc, SERVICE, at)
        if not isinstance(svc, dict):
            continue
        out += _extra(svc.get("deploy"), DEPLOY, f"{at}.deploy")
        out += _extra(svc.get("build"), BUILD, f"{at}.build")
        nets = svc.get("networks")
        if isinstance(nets, dict):
            for key, cfg in nets.items():
                out += _extra(cfg, ATTACHMENT, f"{at}.networks.{key}")
        for i, port in enumerate(svc.get("ports") or []):
            out += _extra(port, PORT, f"{at}.ports.{i}")
        for i, vol in enumerate(svc.get("volumes") or []):
            out += _extra(vol, SERVICE_VOLUME, f"{at}.volumes.{i}")
            if isinstance(vol, dict):
                out += _extra(
                    vol.get("bind"), {"create_host_path", "propagation"}, f"{at}.volumes.{i}.bind"
                )
                out += _extra(vol.get("volume"), {"nocopy"}, f"{at}.volumes.{i}.volume")
                out += _extra(vol.get("tmpfs"), {"size"}, f"{at}.volumes.{i}.tmpfs")
        deps = svc.get("depends_on")
        if isinstance(deps, dict):
            for dep, cfg in deps.items():
                if isinstance(cfg, dict) and cfg.get("restart") in (True, "true"):
                    out.append(f"{at}.depends_on.{dep}.restart")
                out += _extra(cfg, DEPENDENCY, f"{at}.depends_on.{dep}")
    for key, vol in (document.get("volumes") or {}).items():
        out += _extra(vol, VOLUME, f"volumes.{key}")
    for key, net in (document.get("networks") or {}).items():
        at = f"networks.{key}"
        out += _extra(net, NETWORK, at)
        if isinstance(net, dict):
            ipam = net.get("ipam")
            out += _extra(ipam, IPAM, f"{at}.ipam")
            if isinstance(ipam, dict):
                for i, cfg in enumerate(ipam.get("config") or []):
                    out += _extra(cfg, IPAM_CONFIG, f"{at}.ipam.config.{i}")
    return out


def special_cases(document: dict[str, Any]) -> list[str]:
    """Supported keys with values tether cannot honour yet: a warning each."""
    out: list[str] = []
    for name, svc in (document.get("services") or {}).items():
        if not isinstance(svc, dict):
            continue
        at = f"services.{name}"
        deps = svc.get("depends_on")
        for dep, cfg in deps.items() if isinstance(deps, dict) else []:
            if isinstance(cfg, dict) and cfg.get("condition") == "service_healthy":
                out.append(
                    f"{at}.depends_on.{dep}.condition: service_healthy needs a healthcheck, "
                    "which tether does not support yet; waiting for service_started instead"
                )
    return out
