"""Compose files -> a stack: swarm service specs and overlay networks, as `docker stack deploy`
makes them (pure: nothing here talks to the daemon).

Names and labels are docker stack's: networks `STACK_net` (driver overlay, label
com.docker.stack.namespace=STACK), services `STACK_svc` with the labels
com.docker.stack.namespace and com.docker.stack.image, the service's key as an alias on each
of its networks (so `api` finds `db` by its short name), a service without `networks:` on
`STACK_default`.

What a stack file may say and tether cannot honour is refused by name, with the file and the
service, before anything is created (deploy.resources, restart policies other than
condition any, secrets, configs, volumes, ...).  The keys docker stack itself ignores are
reported the way it reports them ("Ignoring unsupported options: build").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.compose import model, schema
from tether.compose.interpolate import InterpolationError, interpolate, parse_env_file
from tether.compose.loader import environment, merge, read_yaml
from tether.compose.model import ComposeError

NAMESPACE = "com.docker.stack.namespace"
IMAGE = "com.docker.stack.image"

# Service keys a stack acts on.
HONOURED = {
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "hostname",
    "working_dir",
    "labels",
    "networks",
    "ports",
    "deploy",
}
# What docker stack deploy itself ignores, in its words (cli/compose/loader).
DOCKER_IGNORES = {
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
    # not in docker's list, but a stack has no start order either: said, not dropped silently
    "depends_on",
}
DOCKER_DEPRECATED = {
    "container_name": "Setting the container name is not supported.",
    "expose": "Exposing ports is unnecessary - services on the same network can access each "
    "other's containers on any port.",
}
DEPLOY = {"replicas", "mode", "placement", "endpoint_mode", "labels", "update_config",
          "restart_policy"}  # fmt: skip
UPDATE_CONFIG = {"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"}
PLACEMENT = {"constraints"}
NETWORK = {"name", "driver", "attachable", "internal", "labels", "external", "ipam"}
PORT = {"target", "published", "protocol", "mode"}
ATTACHMENT = {"aliases"}


@dataclass
class StackNetwork:
    key: str
    name: str
    external: bool = False
    body: dict[str, Any] = field(default_factory=dict)  # the /networks/create request


@dataclass
class Stack:
    name: str
    services: dict[str, dict[str, Any]]  # full service name -> ServiceSpec
    networks: list[StackNetwork]
    notes: list[str] = field(default_factory=list)  # "Ignoring unsupported options: ..."


def _refuse(where: str, what: str) -> ComposeError:
    return ComposeError(f"{where}: {what}")


def _extra(node: Any, allowed: set[str]) -> list[str]:
    if not isinstance(node, dict):
        return []
    return [str(k) for k in node if k not in allowed and not str(k).startswith("x-")]


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def load(
    files: list[str],
    stack: str,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Stack:
    """The stack `stack` from compose files, checked; the daemon is not asked anything."""
    if not stack or not all(c.isalnum() or c in "_-" for c in stack):
        raise ComposeError(f'invalid stack name "{stack}": letters, digits, "-" and "_" only')
    environ = dict(os.environ if environ is None else environ)
    cwd = cwd or os.getcwd()
    paths = [os.path.abspath(os.path.join(cwd, f)) for f in files]
    working_dir = os.path.dirname(paths[0])
    env = environment(working_dir, [], environ)
    document: dict[str, Any] = {}
    for path in paths:
        document = merge(document, read_yaml(path))
    shown = os.path.relpath(paths[0], cwd) if len(paths) == 1 else ", ".join(paths)
    warnings: list[str] = []
    try:
        document = interpolate(document, env, warnings.append)
    except InterpolationError as exc:
        raise ComposeError(str(exc)) from None
    schema.validate(document, shown)
    return convert(document, stack, shown, working_dir, env, warnings)


def convert(
    document: dict[str, Any],
    stack: str,
    shown: str,
    working_dir: str,
    env: Mapping[str, str],
    notes: list[str] | None = None,
) -> Stack:
    notes = list(notes or [])
    for top in ("volumes", "secrets", "configs"):
        if document.get(top):
            raise _refuse(f"{shown}: {top}", f"tether's stacks do not support {top}")
    services_raw: dict[str, Any] = document.get("services") or {}
    networks_raw: dict[str, Any] = dict(document.get("networks") or {})
    ignored: set[str] = set()
    deprecated: dict[str, str] = {}
    used_default = False
    specs: dict[str, dict[str, Any]] = {}
    for key, raw in services_raw.items():
        raw = raw or {}
        where = f"{shown}: services.{key}"
        for k in raw:
            k = str(k)
            if k in HONOURED or k.startswith("x-"):
                continue
            if k in DOCKER_IGNORES:
                ignored.add(k)
            elif k in DOCKER_DEPRECATED:
                deprecated[k] = DOCKER_DEPRECATED[k]
            else:
                raise _refuse(f"{where}.{k}", "not supported by tether's stacks")
        spec, on_default = _service(stack, str(key), raw, where, working_dir, env)
        used_default = used_default or on_default
        specs[f"{stack}_{key}"] = spec
    if ignored:
        notes.append("Ignoring unsupported options: " + ", ".join(sorted(ignored)))
    if deprecated:
        notes.append(
            "Ignoring deprecated options:\n\n"
            + "\n\n".join(f"{k}: {v}" for k, v in sorted(deprecated.items()))
        )
    if used_default and "default" not in networks_raw:
        networks_raw["default"] = None
    nets = [_network(stack, str(k), v, f"{shown}: networks.{k}") for k, v in networks_raw.items()]
    known = {n.key for n in nets}
    for name, spec in specs.items():
        for att in spec["TaskTemplate"]["Networks"]:
            if att["Target"] not in known:
                raise ComposeError(
                    f"{shown}: service {name.removeprefix(stack + '_')} refers to undefined "
                    f"network {att['Target']}: invalid compose project"
                )
            att["Target"] = next(n.name for n in nets if n.key == att["Target"])
    # Networks no service uses are not created (docker stack does the same).
    used = {a["Target"] for s in specs.values() for a in s["TaskTemplate"]["Networks"]}
    return Stack(stack, specs, [n for n in nets if n.name in used], notes)


def _network(stack: str, key: str, raw: Any, where: str) -> StackNetwork:
    raw = raw or {}
    bad = _extra(raw, NETWORK)
    if bad:
        raise _refuse(f"{where}.{bad[0]}", "not supported by tether's stacks")
    external = raw.get("external")
    if isinstance(external, dict):
        return StackNetwork(key, str(external.get("name") or raw.get("name") or key), True)
    if model.go_bool(external, f"{where}.external") if external is not None else False:
        return StackNetwork(key, str(raw.get("name") or key), True)
    driver = str(raw.get("driver") or "overlay")
    if driver != "overlay":
        raise _refuse(
            f"{where}.driver",
            f"{driver}: a stack's networks span the cluster's nodes, so they are overlay networks",
        )
    labels = {k: v or "" for k, v in model._list_or_dict(raw.get("labels")).items()}
    labels[NAMESPACE] = stack
    name = str(raw.get("name") or f"{stack}_{key}")
    configs = []
    ipam = raw.get("ipam") or {}
    bad = _extra(ipam, {"config"})
    if bad:
        raise _refuse(f"{where}.ipam.{bad[0]}", "not supported by tether's stacks")
    for i, cfg in enumerate(ipam.get("config") or []):
        bad = _extra(cfg, {"subnet", "gateway", "ip_range"})
        if bad:
            raise _refuse(f"{where}.ipam.config.{i}.{bad[0]}", "not supported by tether's stacks")
        configs.append(
            {
                {"subnet": "Subnet", "gateway": "Gateway", "ip_range": "IPRange"}[k]: str(v)
                for k, v in cfg.items()
            }
        )
    body = {
        "Name": name,
        "CheckDuplicate": True,
        "Driver": "overlay",
        "Attachable": model.go_bool(raw.get("attachable"), f"{where}.attachable"),
        "Internal": model.go_bool(raw.get("internal"), f"{where}.internal"),
        "Labels": labels,
        "IPAM": {"Driver": "default", "Config": configs, "Options": {}},
        "Options": {},
    }
    return StackNetwork(key, name, False, body)


def _service(
    stack: str,
    key: str,
    raw: dict[str, Any],
    where: str,
    working_dir: str,
    env: Mapping[str, str],
) -> tuple[dict[str, Any], bool]:
    image = str(raw.get("image") or "")
    if not image:
        raise _refuse(where, "a stack's service needs an image (stacks do not build)")
    environment: dict[str, str | None] = {}
    env_files = raw.get("env_file")
    for item in env_files if isinstance(env_files, list) else [env_files] if env_files else []:
        path = item if isinstance(item, str) else item["path"]
        try:
            with open(os.path.join(working_dir, str(path)), encoding="utf-8") as f:
                environment.update(parse_env_file(f.read(), env))
        except FileNotFoundError:
            raise ComposeError(f"{where}.env_file: {path} not found") from None
    environment.update(model._list_or_dict(raw.get("environment")))
    env_list = []
    for k, v in environment.items():
        if v is None:
            if k in env:
                env_list.append(f"{k}={env[k]}")
        else:
            env_list.append(f"{k}={v}")
    clabels = {k: v or "" for k, v in model._list_or_dict(raw.get("labels")).items()}
    clabels[NAMESPACE] = stack
    cs: dict[str, Any] = {"Image": image, "Labels": clabels}
    command = model._command(raw.get("command"), f"{where}.command")
    if command is not None:
        cs["Args"] = command
    entrypoint = model._command(raw.get("entrypoint"), f"{where}.entrypoint")
    if entrypoint is not None:
        cs["Command"] = entrypoint
    if env_list:
        cs["Env"] = env_list
    if raw.get("hostname"):
        cs["Hostname"] = str(raw["hostname"])
    if raw.get("working_dir"):
        cs["Dir"] = str(raw["working_dir"])
    # Networks: the service's key is an alias on each (docker stack's convert.Networks).
    on_default = raw.get("networks") is None
    nets_raw = raw.get("networks")
    attachments: list[dict[str, Any]] = []
    if on_default:
        attachments.append({"Target": "default", "Aliases": [key]})
    elif isinstance(nets_raw, list):
        attachments = [{"Target": str(n), "Aliases": [key]} for n in nets_raw]
    else:
        for net, cfg in (nets_raw or {}).items():
            bad = _extra(cfg, ATTACHMENT)
            if bad:
                raise _refuse(
                    f"{where}.networks.{net}.{bad[0]}", "not supported by tether's stacks"
                )
            aliases = [key, *model._string_list((cfg or {}).get("aliases"))]
            attachments.append({"Target": str(net), "Aliases": aliases})
    attachments.sort(key=lambda a: a["Target"])
    deploy = raw.get("deploy") or {}
    bad = _extra(deploy, DEPLOY)
    if bad:
        raise _refuse(f"{where}.deploy.{bad[0]}", "not supported by tether's stacks")
    mode = str(deploy.get("mode") or "replicated")
    if mode not in ("replicated", "global"):
        raise _refuse(f"{where}.deploy.mode", f"{mode}: tether's services are replicated or global")
    spec_mode: dict[str, Any]
    if mode == "global":
        if deploy.get("replicas") is not None:
            raise _refuse(
                f"{where}.deploy.replicas", "replicas can only be used with replicated mode"
            )
        spec_mode = {"Global": {}}
    else:
        n = model.as_int(deploy.get("replicas", 1), f"{where}.deploy.replicas")
        if n < 0:
            raise _refuse(f"{where}.deploy.replicas", f"must be 0 or more, got {n}")
        spec_mode = {"Replicated": {"Replicas": n}}
    placement = deploy.get("placement") or {}
    bad = _extra(placement, PLACEMENT)
    if bad:
        raise _refuse(f"{where}.deploy.placement.{bad[0]}", "not supported by tether's stacks")
    restart = deploy.get("restart_policy") or {}
    bad = _extra(restart, {"condition"})
    if bad:
        raise _refuse(
            f"{where}.deploy.restart_policy.{bad[0]}",
            "tether restarts a task's replacement at once, always",
        )
    if restart.get("condition") not in (None, "any"):
        raise _refuse(
            f"{where}.deploy.restart_policy.condition",
            f"{restart['condition']}: tether's services restart tasks on any exit (any)",
        )
    update = deploy.get("update_config") or {}
    bad = _extra(update, UPDATE_CONFIG)
    if bad:
        raise _refuse(f"{where}.deploy.update_config.{bad[0]}", "not supported by tether's stacks")
    uc: dict[str, Any] = {
        "Parallelism": model.as_int(
            update.get("parallelism", 1), f"{where}.deploy.update_config.parallelism"
        ),
        "FailureAction": str(update.get("failure_action") or "pause"),
        "Monitor": _ns(
            model.duration_seconds(update["monitor"], f"{where}.deploy.update_config.monitor")
        )
        if update.get("monitor") is not None
        else 5_000_000_000,
        "MaxFailureRatio": float(update.get("max_failure_ratio") or 0),
        "Order": str(update.get("order") or "stop-first"),
    }
    if update.get("delay") is not None:
        uc["Delay"] = _ns(
            model.duration_seconds(update["delay"], f"{where}.deploy.update_config.delay")
        )
    labels = {k: v or "" for k, v in model._list_or_dict(deploy.get("labels")).items()}
    labels[NAMESPACE] = stack
    labels[IMAGE] = image
    ports = []
    for i, p in enumerate(raw.get("ports") or []):
        if isinstance(p, dict):
            bad = _extra(p, PORT)
            if bad:
                raise _refuse(f"{where}.ports.{i}.{bad[0]}", "not supported by tether's stacks")
        for ps in model._ports([p], f"{where}.ports"):
            if ps.host_ip:
                raise _refuse(f"{where}.ports.{i}", "a host IP is not supported by swarm services")
            lo, _, hi = ps.published.partition("-")
            if hi and hi != lo:
                raise _refuse(f"{where}.ports.{i}", "published port ranges are not supported")
            ports.append(
                {
                    "Protocol": ps.protocol,
                    "TargetPort": ps.target,
                    "PublishedPort": int(lo) if lo else 0,
                    "PublishMode": ps.mode or "ingress",
                }
            )
    tmpl: dict[str, Any] = {"ContainerSpec": cs, "Networks": attachments, "ForceUpdate": 0}
    if placement.get("constraints"):
        tmpl["Placement"] = {"Constraints": [str(c) for c in placement["constraints"]]}
    spec = {
        "Name": f"{stack}_{key}",
        "Labels": labels,
        "TaskTemplate": tmpl,
        "Mode": spec_mode,
        "UpdateConfig": uc,
        "EndpointSpec": {"Mode": str(deploy.get("endpoint_mode") or "vip"), "Ports": ports},
    }
    return spec, on_default
