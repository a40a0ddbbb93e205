"""A service create/update request (Docker's ServiceSpec), checked before anything is
written (pure).  Fields tether cannot honour are refused by name, never stored and ignored.
"""

from __future__ import annotations

import re
from typing import Any

from tether.cluster.scheduler import parse_constraint
from tether.errors import InvalidParameter

# swarm's: letters and digits, inner runs of - and _ (stacks name services STACK_SVC).
NAME_RE = re.compile(r"[a-zA-Z0-9](?:[-_]*[a-zA-Z0-9]+)*")
PUBLISH_MODES = ("ingress", "host")
PROTOCOLS = ("tcp", "udp", "sctp")
# Keys of a ServiceSpec's parts that tether acts on; any other key with a value is refused.
# UpdateConfig is honoured (cluster/scheduler.py: rolling updates).  RollbackConfig is
# accepted and inert: the docker CLI always sends it, and tether never rolls back (a
# FailureAction of rollback is refused, and so is `service rollback`).
CONTAINER_SPEC = {
    "Image",
    "Command",
    "Args",
    "Env",
    "Dir",
    "Labels",
    "Hostname",
    "Init",
    "StopGracePeriod",
    "DNSConfig",
}
TASK_TEMPLATE = {
    "ContainerSpec",
    "Placement",
    "Networks",
    "ForceUpdate",
    "Runtime",
    "RestartPolicy",
    "LogDriver",
}
SPEC = {
    "Name",
    "Labels",
    "TaskTemplate",
    "Mode",
    "EndpointSpec",
    "Networks",
    "UpdateConfig",
    "RollbackConfig",
}


UPDATE_CONFIG = {"Parallelism", "Delay", "FailureAction", "Monitor", "MaxFailureRatio", "Order"}
ORDERS = ("stop-first", "start-first")
FAILURE_ACTIONS = ("pause", "continue")


def _empty(value: Any) -> bool:
    return value in (None, "", 0, False, [], {}) or (
        isinstance(value, dict) and all(_empty(v) for v in value.values())
    )


def _refuse_unknown(part: dict[str, Any], known: set[str], where: str) -> None:
    for key, value in part.items():
        if key not in known and not _empty(value):
            raise InvalidParameter(f"{where}.{key} is not supported by tether's services")


def check(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec, checked and normalized (Docker's defaults filled in)."""
    if not isinstance(spec, dict):
        raise InvalidParameter("invalid service spec: not a JSON object")
    _refuse_unknown(spec, SPEC, "Spec")
    name = str(spec.get("Name") or "")
    if not name or len(name) > 63 or not NAME_RE.fullmatch(name):
        raise InvalidParameter(
            f"rpc error: code = InvalidArgument desc = name must be valid as a DNS name "
            f"component: {name!r}"
        )
    tmpl = dict(spec.get("TaskTemplate") or {})
    _refuse_unknown(tmpl, TASK_TEMPLATE, "TaskTemplate")
    cs = dict(tmpl.get("ContainerSpec") or {})
    if cs.get("Isolation") in ("default", ""):
        cs.pop("Isolation")  # the docker CLI always sends it; Linux has one isolation
    _refuse_unknown(cs, CONTAINER_SPEC, "TaskTemplate.ContainerSpec")
    if cs.get("Init"):
        raise InvalidParameter("TaskTemplate.ContainerSpec.Init is not supported by tether")
    if not cs.get("Image"):
        raise InvalidParameter(
            "rpc error: code = InvalidArgument desc = ContainerSpec: image reference must be "
            "provided"
        )
    for key in ("Command", "Args", "Env"):
        value = cs.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(x, str) for x in value)
        ):
            raise InvalidParameter(f"TaskTemplate.ContainerSpec.{key} must be a list of strings")
    if tmpl.get("Runtime") not in (None, "", "container"):
        raise InvalidParameter(f"TaskTemplate.Runtime {tmpl['Runtime']!r}: containers only")
    restart = tmpl.get("RestartPolicy") or {}
    if restart.get("Condition") not in (None, "", "any"):
        raise InvalidParameter(
            "TaskTemplate.RestartPolicy.Condition: tether restarts tasks on any exit ('any')"
        )
    log_driver = (tmpl.get("LogDriver") or {}).get("Name")
    if log_driver not in (None, "", "json-file"):
        raise InvalidParameter(f"log driver {log_driver!r} is not supported (json-file only)")
    log_opts = (tmpl.get("LogDriver") or {}).get("Options")
    if log_opts:
        # Checked as a container's --log-opt (max-size, max-file): the tasks' containers
        # get them (agent.container_body), and a bad one is refused here, not per task.
        from tether.api.containers import HostConfig, LogConfig

        if not isinstance(log_opts, dict):
            raise InvalidParameter("TaskTemplate.LogDriver.Options must be a map of strings")
        opts = {str(k): str(v) for k, v in log_opts.items()}
        HostConfig(LogConfig=LogConfig(Type="json-file", Config=opts))._check_log_config()
    placement = tmpl.get("Placement") or {}
    _refuse_unknown(placement, {"Constraints"}, "TaskTemplate.Placement")
    for c in placement.get("Constraints") or []:
        try:
            parse_constraint(str(c))
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
    mode = dict(spec.get("Mode") or {"Replicated": {"Replicas": 1}})
    if set(mode) - {"Replicated", "Global"} or len(mode) != 1:
        raise InvalidParameter("Mode: replicated or global (jobs are not supported)")
    if "Replicated" in mode:
        replicas = (mode["Replicated"] or {}).get("Replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise InvalidParameter(f"invalid replicas value {replicas!r}")
        mode = {"Replicated": {"Replicas": replicas}}
    ep = dict(spec.get("EndpointSpec") or {})
    ep_mode = ep.get("Mode") or "vip"
    if ep_mode not in ("vip", "dnsrr"):
        raise InvalidParameter(f"invalid endpoint mode {ep_mode!r} (vip or dnsrr)")
    ports = []
    for p in ep.get("Ports") or []:
        proto = p.get("Protocol") or "tcp"
        target = p.get("TargetPort")
        published = p.get("PublishedPort") or 0
        publish_mode = p.get("PublishMode") or "ingress"
        if proto not in PROTOCOLS:
            raise InvalidParameter(f"invalid protocol {proto!r}")
        if publish_mode not in PUBLISH_MODES:
            raise InvalidParameter(f"invalid publish mode {publish_mode!r} (ingress or host)")
        for port in (target, published):
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                raise InvalidParameter(f"invalid port {port!r}")
        if not target:
            raise InvalidParameter("a published port needs a TargetPort")
        if ep_mode == "dnsrr" and publish_mode == "ingress":
            raise InvalidParameter(
                "rpc error: code = InvalidArgument desc = EndpointSpec: port published with "
                "ingress mode can't be used with dnsrr mode"
            )
        ports.append(
            {
                "Protocol": proto,
                "TargetPort": target,
                "PublishedPort": published,
                "PublishMode": publish_mode,
            }
        )
    update = spec.get("UpdateConfig")
    if update is not None:
        spec = {**spec, "UpdateConfig": check_update_config(update, "UpdateConfig")}
    rollback = spec.get("RollbackConfig")
    if rollback is not None and not isinstance(rollback, dict):
        raise InvalidParameter("RollbackConfig must be an object")
    networks = list(tmpl.get("Networks") or spec.get("Networks") or [])
    for n in networks:
        if not isinstance(n, dict) or not n.get("Target"):
            raise InvalidParameter("TaskTemplate.Networks: each needs a Target")
        _refuse_unknown(n, {"Target", "Aliases", "DriverOpts"}, "TaskTemplate.Networks[]")
    tmpl["ContainerSpec"] = cs
    tmpl["Networks"] = networks
    out = dict(spec)
    out.pop("Networks", None)
    out["TaskTemplate"] = tmpl
    out["Mode"] = mode
    out["EndpointSpec"] = {"Mode": ep_mode, "Ports": ports}
    out.setdefault("Labels", {})
    return out


def _nonneg_int(value: Any, where: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidParameter(f"{where}: invalid value {value!r} (a non-negative integer)")
    return value


def check_update_config(u: Any, where: str) -> dict[str, Any]:
    """swarm's UpdateConfig, checked: what the scheduler honours, the rest refused."""
    if not isinstance(u, dict):
        raise InvalidParameter(f"{where} must be an object")
    _refuse_unknown(u, UPDATE_CONFIG, where)
    out: dict[str, Any] = {
        "Parallelism": _nonneg_int(u.get("Parallelism"), f"{where}.Parallelism"),
        "Delay": _nonneg_int(u.get("Delay"), f"{where}.Delay"),
    }
    action = u.get("FailureAction") or "pause"
    if action == "rollback":
        raise InvalidParameter(
            f"{where}.FailureAction rollback is not supported by tether: it does not roll "
            "services back (use pause or continue)"
        )
    if action not in FAILURE_ACTIONS:
        raise InvalidParameter(f"{where}.FailureAction: invalid value {action!r}")
    out["FailureAction"] = action
    if u.get("Monitor") is not None:
        out["Monitor"] = _nonneg_int(u.get("Monitor"), f"{where}.Monitor")
    ratio = u.get("MaxFailureRatio") or 0
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
        raise InvalidParameter(f"{where}.MaxFailureRatio: invalid value {ratio!r} (0 to 1)")
    out["MaxFailureRatio"] = ratio
    order = u.get("Order") or "stop-first"
    if order not in ORDERS:
        raise InvalidParameter(
            f"{where}.Order: invalid value {order!r} (stop-first or start-first)"
        )
    out["Order"] = order
    return out
