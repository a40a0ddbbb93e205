"""`tether compose config`: the resolved model, every short form in its long form."""

from __future__ import annotations

from typing import Any

from tether.compose.model import NetworkDef, Project, Service


def _service(svc: Service) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if svc.command is not None:
        out["command"] = svc.command
    if svc.container_name:
        out["container_name"] = svc.container_name
    if svc.depends_on:
        out["depends_on"] = {
            name: {"condition": d.condition, "required": d.required, "restart": d.restart}
            for name, d in svc.depends_on.items()
        }
    if svc.replicas_set:
        out["deploy"] = {"replicas": svc.replicas}
    for key in ("cap_add", "cap_drop", "dns", "dns_opt", "dns_search"):
        if getattr(svc, key):
            out[key] = getattr(svc, key)
    if svc.domainname:
        out["domainname"] = svc.domainname
    if svc.entrypoint is not None:
        out["entrypoint"] = svc.entrypoint
    if svc.environment:
        out["environment"] = dict(svc.environment)
    if svc.expose:
        out["expose"] = svc.expose
    if svc.extra_hosts:
        out["extra_hosts"] = svc.extra_hosts
    if svc.hostname:
        out["hostname"] = svc.hostname
    if svc.build is not None:
        from tether.compose import images

        out["build"] = images.render(svc)
    if svc.image_given:
        out["image"] = svc.image
    if svc.pull_policy:
        out["pull_policy"] = svc.pull_policy
    if svc.labels:
        out["labels"] = svc.labels
    if svc.mac_address:
        out["mac_address"] = svc.mac_address
    if svc.network_mode:
        out["network_mode"] = svc.network_mode
    if svc.networks:
        nets: dict[str, Any] = {}
        for a in svc.networks:
            cfg: dict[str, Any] = {}
            if a.aliases:
                cfg["aliases"] = a.aliases
            if a.ipv4_address:
                cfg["ipv4_address"] = a.ipv4_address
            if a.ipv6_address:
                cfg["ipv6_address"] = a.ipv6_address
            if a.priority:
                cfg["priority"] = a.priority
            nets[a.network] = cfg or None
        out["networks"] = nets
    if svc.privileged:
        out["privileged"] = True
    if svc.restart:
        out["restart"] = svc.restart
    if svc.tmpfs:
        out["tmpfs"] = svc.tmpfs
    if svc.volumes:
        from tether.compose.volumes import render_mounts

        out["volumes"] = render_mounts(svc)
    if svc.security_opt:
        out["security_opt"] = svc.security_opt
    if svc.ports:
        ports = []
        for p in svc.ports:
            entry: dict[str, Any] = {"mode": p.mode, "target": p.target}
            if p.host_ip:
                entry["host_ip"] = p.host_ip
            if p.published:
                entry["published"] = p.published
            entry["protocol"] = p.protocol
            ports.append(entry)
        out["ports"] = ports
    if svc.stop_grace_period is not None:
        out["stop_grace_period"] = f"{svc.stop_grace_period:g}s"
    if svc.stop_signal:
        out["stop_signal"] = svc.stop_signal
    if svc.working_dir:
        out["working_dir"] = svc.working_dir
    return out


def _network(net: NetworkDef) -> dict[str, Any]:
    out: dict[str, Any] = {"name": net.name}
    if net.external:
        out["external"] = True
        return out
    if net.attachable:
        out["attachable"] = True
    if net.driver:
        out["driver"] = net.driver
    if net.driver_opts:
        out["driver_opts"] = net.driver_opts
    if net.enable_ipv6:
        out["enable_ipv6"] = True
    if net.internal:
        out["internal"] = True
    ipam: dict[str, Any] = {}
    if net.ipam_driver:
        ipam["driver"] = net.ipam_driver
    if net.ipam_config:
        ipam["config"] = net.ipam_config
    if net.ipam_options:
        ipam["options"] = net.ipam_options
    if ipam:
        out["ipam"] = ipam
    if net.labels:
        out["labels"] = net.labels
    return out


def model_dict(project: Project) -> dict[str, Any]:
    return {
        "name": project.name,
        "services": {name: _service(svc) for name, svc in sorted(project.services.items())},
        "networks": {key: _network(net) for key, net in sorted(project.networks.items())},
        **_volumes(project),
    }


def _volumes(project: Project) -> dict[str, Any]:
    if not project.volumes:
        return {}
    from tether.compose.volumes import render_volume

    return {"volumes": {k: render_volume(v) for k, v in sorted(project.volumes.items())}}


def to_yaml(project: Project) -> str:
    import io

    from ruamel.yaml import YAML

    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    y.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buf = io.StringIO()
    y.dump(model_dict(project), buf)
    return buf.getvalue()
