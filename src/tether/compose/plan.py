"""Project -> Engine API request bodies, names and docker compose's labels.  Pure."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from tether import __version__
from tether.compose.checks import container_name
from tether.compose.model import Attachment, NetworkDef, Project, Service
from tether.netmodes import DEFAULT_DRIVER

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
NETWORK = "com.docker.compose.network"
HASH = "com.docker.compose.config-hash"
ONEOFF = "com.docker.compose.oneoff"
VERSION = "com.docker.compose.version"


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def service_hash(svc: Service, image_id: str) -> str:
    """Changes when the container must be recreated; the replica count is not part of it."""
    doc = dataclasses.asdict(svc)
    for k in ("replicas", "replicas_set", "has_build", "security"):
        doc.pop(k)
    # How the image is made is not the container's configuration (the image id is).
    for k in ("build", "pull_policy", "image_given"):
        doc.pop(k, None)
    for k in (
        "privileged",
        "cap_add",
        "cap_drop",
        "security_opt",
        "user",
        "read_only",
        "log_driver",
        "log_options",
        "volumes",
        "tmpfs",
        "restart",
    ):
        if not doc[k]:
            doc.pop(k)  # absent as before these keys were supported: the hash stays
    for mount in doc.get("volumes") or []:
        if not mount["options"]:
            mount.pop("options")  # as before short-syntax options were kept: the hash stays
    doc["image_id"] = image_id
    return _digest(doc)


def network_hash(net: NetworkDef) -> str:
    return _digest(dataclasses.asdict(net))


def network_body(project: Project, net: NetworkDef) -> dict[str, Any]:
    labels = {
        **net.labels,
        PROJECT: project.name,
        NETWORK: net.key,
        HASH: network_hash(net),
        VERSION: __version__,
    }
    configs = [
        {
            k: v
            for k, v in (
                ("Subnet", c.get("subnet")),
                ("IPRange", c.get("ip_range")),
                ("Gateway", c.get("gateway")),
                ("AuxiliaryAddresses", c.get("aux_addresses")),
            )
            if v
        }
        for c in net.ipam_config
    ]
    return {
        "Name": net.name,
        "CheckDuplicate": True,
        "Driver": net.driver or DEFAULT_DRIVER,
        "Options": dict(net.driver_opts),
        "IPAM": {
            "Driver": net.ipam_driver or "default",
            "Config": configs,
            "Options": dict(net.ipam_options),
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "EnableIPv6": net.enable_ipv6,
        "Labels": labels,
    }


def endpoint_config(project: Project, svc: Service, att: Attachment, number: int) -> dict[str, Any]:
    """Aliases as compose sets them: the container name, the service name, then the user's."""
    name = container_name(project.name, svc, number)
    aliases = [name, svc.name, *[a for a in att.aliases if a not in (name, svc.name)]]
    ep: dict[str, Any] = {"Aliases": aliases}
    ipam = {
        k: v for k, v in (("IPv4Address", att.ipv4_address), ("IPv6Address", att.ipv6_address)) if v
    }
    if ipam:
        ep["IPAMConfig"] = ipam
    return ep


def network_mode(project: Project, svc: Service, resolve_service: Any = None) -> str:
    """The HostConfig.NetworkMode: the first network by priority, or network_mode as given."""
    mode = svc.network_mode
    if mode.startswith("service:") and resolve_service is not None:
        return f"container:{resolve_service(mode.partition(':')[2])}"
    if mode:
        return mode
    return project.networks[svc.networks[0].network].name


def container_body(
    project: Project, svc: Service, number: int, image_id: str, resolve_service: Any = None
) -> dict[str, Any]:
    from tether import portspec

    # The model's ports are parsed already (long form); only `expose` is still text.
    exposed, bindings = portspec.parse_publish([], svc.expose)
    for p in svc.ports:
        key = f"{p.target}/{p.protocol}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": p.host_ip, "HostPort": p.published})
    depends = ",".join(
        f"{name}:{dep.condition}:{'true' if dep.restart else 'false'}"
        for name, dep in svc.depends_on.items()
    )
    labels = {
        **svc.labels,
        PROJECT: project.name,
        SERVICE: svc.name,
        NUMBER: str(number),
        ONEOFF: "False",
        HASH: service_hash(svc, image_id),
        VERSION: __version__,
        "com.docker.compose.project.config_files": ",".join(project.config_files),
        "com.docker.compose.project.working_dir": project.working_dir,
        "com.docker.compose.depends_on": depends,
        "com.docker.compose.image": image_id,
    }
    mode = network_mode(project, svc, resolve_service)
    body: dict[str, Any] = {
        "Image": svc.image,
        "Hostname": svc.hostname,
        "Domainname": svc.domainname,
        "Env": [f"{k}={v}" for k, v in svc.environment.items()],
        "Labels": labels,
        "ExposedPorts": exposed,
        "WorkingDir": svc.working_dir,
        "AttachStdout": False,
        "AttachStderr": False,
        "HostConfig": {
            "NetworkMode": mode,
            "PortBindings": bindings,
            "Dns": svc.dns,
            "DnsSearch": svc.dns_search,
            "DnsOptions": svc.dns_opt,
            "ExtraHosts": svc.extra_hosts or None,
            **svc.security,
        },
        "NetworkingConfig": {"EndpointsConfig": {}},
    }
    if svc.command is not None:
        body["Cmd"] = svc.command
    if svc.entrypoint is not None:
        body["Entrypoint"] = svc.entrypoint
    if svc.mac_address:
        body["MacAddress"] = svc.mac_address
    if svc.stop_signal:
        body["StopSignal"] = svc.stop_signal
    if svc.stop_grace_period is not None:
        body["StopTimeout"] = int(svc.stop_grace_period)
    if svc.user:
        body["User"] = svc.user
    if svc.read_only:
        body["HostConfig"]["ReadonlyRootfs"] = True
    if svc.volumes or svc.tmpfs or svc.restart:
        from tether.compose.volumes import host_config

        body["HostConfig"].update(host_config(svc, project.volumes))
    if svc.log_driver or svc.log_options:
        # Checked by the daemon (json-file's max-size/max-file, none; others refused).
        body["HostConfig"]["LogConfig"] = {"Type": svc.log_driver, "Config": svc.log_options}
    if svc.networks:
        first = svc.networks[0]
        body["NetworkingConfig"]["EndpointsConfig"][mode] = endpoint_config(
            project, svc, first, number
        )
    return body
