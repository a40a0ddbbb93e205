"""tether service create|ls|ps|inspect|scale|update|logs|rm, with docker's flags and output.

Services exist on cluster nodes only (tetherd --cluster-store): the daemon answers the
Engine API's /services and /tasks, and this module is a client of it, as docker's CLI is.
Flags docker has that tether cannot honour are parsed (hidden from `--help`) and refused by
name when given, never accepted and dropped.
"""

from __future__ import annotations

import os
import sys
import time

from tether.cli import svcopts
from tether.cli.context import CliError, Context
from tether.cli.flags import Command, Flag
from tether.cli.output import natural_key, parse_filters, render_table_template
from tether.client import ApiError
from tether.humanize import human_duration

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

POLL = 0.2  # seconds between looks at a converging service (docker's progress polls too)
DEFAULT_MONITOR = 5.0  # seconds: docker's "verify" wait when UpdateConfig.Monitor is unset

LS_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Mode": "MODE",
    "Replicas": "REPLICAS",
    "Image": "IMAGE",
    "Ports": "PORTS",
}
PS_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Image": "IMAGE",
    "Node": "NODE",
    "DesiredState": "DESIRED STATE",
    "CurrentState": "CURRENT STATE",
    "Error": "ERROR",
    "Ports": "PORTS",
}
LS_FORMAT = "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}"
PS_FORMAT = (
    "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}"
    "\t{{.Error}}\t{{.Ports}}"
)
MAX_ERR = 30  # docker's maxErrLength in `service ps`

# docker's flags tether cannot honour, with the reason shown when one is given.
REFUSED: dict[str, str] = {
    "cap-add": "capabilities of service tasks",
    "cap-drop": "capabilities of service tasks",
    "config": "swarm configs",
    "credential-spec": "credential specs (Windows)",
    "dns": "per-service DNS settings",
    "dns-option": "per-service DNS settings",
    "dns-search": "per-service DNS settings",
    "generic-resource": "generic resources",
    "group": "supplementary groups",
    "health-cmd": "healthchecks",
    "health-interval": "healthchecks",
    "health-retries": "healthchecks",
    "health-start-interval": "healthchecks",
    "health-start-period": "healthchecks",
    "health-timeout": "healthchecks",
    "no-healthcheck": "healthchecks",
    "host": "extra /etc/hosts entries of tasks",
    "init": "an init process in tasks",
    "isolation": "isolation technologies",
    "limit-cpu": "resource limits",
    "limit-memory": "resource limits",
    "limit-pids": "resource limits",
    "reserve-cpu": "resource reservations",
    "reserve-memory": "resource reservations",
    "max-concurrent": "jobs",
    "mount": "mounts in tasks",
    "oom-score-adj": "OOM score adjustments",
    "placement-pref": "placement preferences",
    "read-only": "read-only root filesystems",
    "replicas-max-per-node": "a maximum of replicas per node",
    "restart-delay": "restart delays",
    "restart-max-attempts": "restart attempt limits",
    "restart-window": "restart windows",
    "rollback-delay": "rollbacks",
    "rollback-failure-action": "rollbacks",
    "rollback-max-failure-ratio": "rollbacks",
    "rollback-monitor": "rollbacks",
    "rollback-order": "rollbacks",
    "rollback-parallelism": "rollbacks",
    "secret": "swarm secrets",
    "stop-grace-period": "stop grace periods of tasks",
    "stop-signal": "stop signals of tasks",
    "sysctl": "sysctls of tasks",
    "tty": "TTYs for tasks",
    "ulimit": "ulimits",
    "user": "a user for tasks",
    "no-resolve-image": "",  # accepted: tether never queries a registry for a digest
}
REFUSED_SHORT = {"tty": "t", "user": "u"}
# `service update` has --X-add/--X-rm for these (and plain flags for the rest).
UPDATE_PAIRS = {
    "config",
    "secret",
    "mount",
    "dns",
    "dns-option",
    "dns-search",
    "host",
    "group",
    "generic-resource",
    "placement-pref",
    "ulimit",
    "sysctl",
}


def _refused_flags(update: bool = False) -> list[Flag]:
    out = []
    for name in sorted(REFUSED):
        if name == "no-resolve-image":
            out.append(
                Flag(
                    name,
                    kind="bool",
                    help="Do not query the registry to resolve image digest and supported platforms",
                )
            )
            continue
        kind = "bool" if name in ("init", "no-healthcheck", "read-only", "tty") else "list"
        long = name
        if update and name in UPDATE_PAIRS:
            for suffix in ("-add", "-rm"):
                out.append(
                    Flag(
                        name + suffix,
                        kind="list",
                        help=f"(not supported by tether: {REFUSED[name]})",
                        hidden=True,
                    )
                )
            continue
        out.append(
            Flag(
                long,
                REFUSED_SHORT.get(name, ""),
                kind=kind,
                help=f"(not supported by tether: {REFUSED[name]})",
                hidden=True,
            )
        )
    return out


def check_refused(o: dict[str, Any]) -> None:
    for key, value in o.items():
        name = key.replace("_", "-")
        base = name if name in REFUSED else name.removesuffix("-add").removesuffix("-rm")
        if base in REFUSED and base != "no-resolve-image" and value not in (None, False, []):
            raise CliError(f"--{name}: tether's services do not support {REFUSED[base]}", 125)


def _uint(value: str) -> str:
    if not value.isdigit():
        raise ValueError(f'strconv.ParseUint: parsing "{value}": invalid syntax')
    return value


def _duration(value: str) -> str:
    svcopts.parse_duration_ns(value)
    return value


def _float(value: str) -> str:
    try:
        float(value)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{value}": invalid syntax') from None
    return value


def _q(text: str) -> str:
    from tether.client import quote

    return quote(text)


def _error(exc: ApiError, name: str = "", kind: str = "service") -> CliError:
    """docker's client words: a 404 for a named object is "Error: No such service: X"."""
    if exc.status == 404 and name:
        return CliError(f"Error: No such {kind}: {name}")
    return CliError(f"Error response from daemon: {exc.message}")


def get_service(ctx: Context, name: str) -> dict[str, Any]:
    try:
        svc: dict[str, Any] = ctx.call("GET", f"/services/{_q(name)}")
    except ApiError as exc:
        raise _error(exc, name) from None
    return svc


# -- create -------------------------------------------------------------------------------


def _env(o: dict[str, Any]) -> list[str]:
    env: list[str] = []
    for path in o.get("env_file") or []:
        try:
            env += svcopts.read_env_file(path, dict(os.environ))
        except ValueError as exc:
            raise CliError(str(exc)) from None
    for e in o.get("env") or []:
        if "=" not in e:
            if e in os.environ:
                env.append(f"{e}={os.environ[e]}")
            continue
        env.append(e)
    return env


def _labels(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        k, _, val = v.partition("=")
        out[k] = val
    return out


def _ports(values: list[str], flag: str = "publish") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for v in values:
        try:
            out += svcopts.parse_publish(v)
        except ValueError as exc:
            raise CliError(f'invalid argument "{v}" for "-p, --{flag}" flag: {exc}', 125) from None
    return out


def _networks(values: list[str], flag: str = "network") -> list[dict[str, Any]]:
    out = []
    for v in values:
        try:
            out.append(svcopts.parse_network(v))
        except ValueError as exc:
            raise CliError(f'invalid argument "{v}" for "--{flag}" flag: {exc}', 125) from None
    return out


def _update_config(o: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """UpdateConfig from the --update-* flags over `base` (docker's defaults on create)."""
    u = dict(
        base
        or {
            "Parallelism": 1,
            "FailureAction": "pause",
            "Monitor": 5_000_000_000,
            "MaxFailureRatio": 0,
            "Order": "stop-first",
        }
    )
    if o.get("update_parallelism") is not None:
        u["Parallelism"] = int(o["update_parallelism"])
    if o.get("update_delay") is not None:
        u["Delay"] = svcopts.parse_duration_ns(o["update_delay"])
    if o.get("update_monitor") is not None:
        u["Monitor"] = svcopts.parse_duration_ns(o["update_monitor"])
    if o.get("update_failure_action") is not None:
        u["FailureAction"] = o["update_failure_action"]
    if o.get("update_max_failure_ratio") is not None:
        u["MaxFailureRatio"] = float(o["update_max_failure_ratio"])
    if o.get("update_order") is not None:
        u["Order"] = o["update_order"]
    return u


def _entrypoint(text: str) -> list[str]:
    import shlex

    try:
        return shlex.split(text)
    except ValueError as exc:
        raise CliError(f'invalid argument "{text}" for "--entrypoint" flag: {exc}', 125) from None


def build_spec(o: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """The ServiceSpec `service create` sends (docker's shape)."""
    check_refused(o)
    mode = o["mode"] or "replicated"
    if mode not in ("replicated", "global"):
        if mode in ("replicated-job", "global-job"):
            raise CliError(f"{mode}: tether's services do not support jobs", 125)
        raise CliError(f"unknown mode: {mode}, only replicated and global supported", 125)
    if mode == "global" and o["replicas"] is not None:
        raise CliError("replicas can only be used with replicated or replicated-job mode", 125)
    cs: dict[str, Any] = {"Image": args[0]}
    if len(args) > 1:
        cs["Args"] = args[1:]
    if o["entrypoint"]:
        cs["Command"] = _entrypoint(o["entrypoint"])
    env = _env(o)
    if env:
        cs["Env"] = env
    if o["container_label"]:
        cs["Labels"] = _labels(o["container_label"])
    if o["hostname"]:
        cs["Hostname"] = o["hostname"]
    if o["workdir"]:
        cs["Dir"] = o["workdir"]
    tmpl: dict[str, Any] = {"ContainerSpec": cs, "ForceUpdate": 0, "Runtime": "container"}
    if o["constraint"]:
        tmpl["Placement"] = {"Constraints": list(o["constraint"])}
    if o["restart_condition"] not in (None, "", "any"):
        raise CliError(
            f"--restart-condition {o['restart_condition']}: tether's services restart tasks "
            "on any exit (any)",
            125,
        )
    if o["network"]:
        tmpl["Networks"] = _networks(o["network"])
    log_driver = _log_driver(o)
    if log_driver is not None:
        tmpl["LogDriver"] = log_driver
    spec: dict[str, Any] = {
        "Name": o["name"] or "",
        "Labels": _labels(o["label"]),
        "TaskTemplate": tmpl,
        "Mode": (
            {"Global": {}}
            if mode == "global"
            else {"Replicated": {"Replicas": int(o["replicas"]) if o["replicas"] else 1}}
        ),
        "UpdateConfig": _update_config(o),
        "EndpointSpec": {"Mode": o["endpoint_mode"] or "vip", "Ports": _ports(o["publish"])},
    }
    return spec


def _log_driver(o: dict[str, Any], current: dict[str, Any] | None = None) -> Any:
    """TaskTemplate.LogDriver from --log-driver and --log-opt (None: neither given).  docker's
    CLI drops --log-opt given without --log-driver; tether keeps it, for the driver the
    service has (json-file, the only one its tasks take: the daemon refuses others)."""
    if not o.get("log_driver") and not o.get("log_opt"):
        return None
    name = o.get("log_driver") or (current or {}).get("Name") or "json-file"
    return {"Name": name, "Options": _labels(o.get("log_opt") or [])}


def run_create(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    spec = build_spec(o, args)
    if o["with_registry_auth"]:
        sys.stderr.write(
            "WARNING: --with-registry-auth: tether does not send registry credentials to the "
            "nodes; each node pulls with its own (tether login on that node)\n"
        )
    try:
        resp = ctx.call("POST", "/services/create", body=spec)
    except ApiError as exc:
        raise _error(exc) from None
    for w in resp.get("Warnings") or []:
        sys.stderr.write(f"{w}\n")
    sys.stdout.write(resp["ID"] + "\n")
    if not o["detach"]:
        wait_converged(ctx, resp["ID"], o["quiet"])
    return 0


# -- convergence progress (without -d) ---------------------------------------------------------


def _state_of(ctx: Context, sid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    svc = get_service(ctx, sid)
    try:
        tasks = ctx.call("GET", "/tasks", query={"filters": {"service": [sid]}})
    except ApiError as exc:
        raise _error(exc) from None
    return svc, tasks


def _slots(svc: dict[str, Any], tasks: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(unit names, state of each) the way docker's progress counts: one unit per replica
    slot (or per node, global), the newest task wanted running in it, of the current
    version of the task template."""
    version = svc.get("TaskVersion", 0)
    wanted = [t for t in tasks if t["DesiredState"] == "running"]
    if "Global" in svc["Spec"]["Mode"]:
        units: list[Any] = sorted({t["NodeID"] for t in wanted})
        key = "NodeID"
    else:
        units = list(range(1, svc["Spec"]["Mode"]["Replicated"]["Replicas"] + 1))
        key = "Slot"
    states = []
    for u in units:
        mine = sorted((t for t in wanted if t[key] == u), key=lambda t: t["CreatedAt"])
        if not mine:
            states.append("new")
            continue
        t = mine[-1]
        state = t["Status"]["State"]
        if (t.get("SpecVersion") or {}).get("Index", version) != version and state == "running":
            state = "updating"
        states.append(state)
    return [str(u) for u in units], states


def wait_converged(ctx: Context, sid: str, quiet: bool, shown: str = "") -> None:
    """docker's progress without a terminal: a line each time something changes, then
    "verify: Service NAME converged" (docker 28's words) once every task has run for the
    monitor period.  `shown`: the service as the user named it (the id by default)."""
    out = sys.stdout

    def say(text: str) -> None:
        if not quiet:
            out.write(text + "\n")
            out.flush()

    last_overall = ""
    last_states: dict[str, str] = {}
    converged_at = 0.0
    last_wait = -1
    try:
        while True:
            svc, tasks = _state_of(ctx, sid)
            us = svc.get("UpdateStatus") or {}
            if us.get("State") == "paused":
                raise CliError(f"service update paused: {us.get('Message', '')}")
            units, states = _slots(svc, tasks)
            running = sum(1 for s in states if s == "running")
            overall = f"overall progress: {running} out of {len(units)} tasks"
            if overall != last_overall:
                say(overall)
                last_overall = overall
            n = len(units)
            for i, (u, s) in enumerate(zip(units, states, strict=True)):
                label = f"{u}/{n}" if "Global" not in svc["Spec"]["Mode"] else u
                del i
                if last_states.get(u) != s:
                    say(f"{label}: {s}")
                    last_states[u] = s
            done = running == n and us.get("State") != "updating"
            monitor = (svc["Spec"].get("UpdateConfig") or {}).get("Monitor")
            wait = monitor / 1e9 if monitor else DEFAULT_MONITOR
            if not done:
                converged_at, last_wait = 0.0, -1
            else:
                now = time.monotonic()
                if not converged_at:
                    converged_at = now
                left = int(wait - (now - converged_at) + 0.999)
                if left <= 0:
                    say(f"verify: Service {shown or sid} converged")
                    return
                if left != last_wait:
                    say(f"verify: Waiting {left} seconds to verify that tasks are stable...")
                    last_wait = left
            time.sleep(POLL)
    except KeyboardInterrupt:
        # docker: Ctrl-C only stops watching; the service goes on converging.
        sys.stderr.write("Operation continuing in background.\n")


# -- ls -----------------------------------------------------------------------------------------


def _mode(spec: dict[str, Any]) -> str:
    return "global" if "Global" in (spec.get("Mode") or {}) else "replicated"


def run_ls(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    filters = parse_filters(o["filter"])
    query: dict[str, Any] = {"status": "true"}
    if filters:
        query["filters"] = filters
    try:
        services = ctx.call("GET", "/services", query=query)
    except ApiError as exc:
        raise _error(exc) from None
    services.sort(key=lambda s: natural_key(s["Spec"]["Name"]))
    if o["quiet"]:
        sys.stdout.write("".join(s["ID"] + "\n" for s in services))
        return 0
    rows = []
    for s in services:
        st = s.get("ServiceStatus") or {}
        rows.append(
            {
                "ID": s["ID"][:12],
                "Name": s["Spec"]["Name"],
                "Mode": _mode(s["Spec"]),
                "Replicas": f"{st.get('RunningTasks', 0)}/{st.get('DesiredTasks', 0)}",
                "Image": svcopts.trim_image(
                    s["Spec"]["TaskTemplate"]["ContainerSpec"].get("Image", "")
                ),
                "Ports": svcopts.ports_text((s.get("Endpoint") or {}).get("Ports") or []),
            }
        )
    fmt = o["format"] or LS_FORMAT
    if fmt == "json":
        fmt = "{{json .}}"
    sys.stdout.write(render_table_template(fmt, rows, LS_HEADERS))
    return 0


# -- ps -----------------------------------------------------------------------------------------


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def task_rows(
    tasks: list[dict[str, Any]], names: dict[str, str], trunc: bool, table: bool
) -> list[dict[str, Any]]:
    """docker's task table: grouped by slot, newest first, older ones as `\\_ web.1`."""

    for t in tasks:
        svc = names.get(t["ServiceID"], t["ServiceID"])
        t["_name"] = f"{svc}.{t['Slot']}" if t["Slot"] else f"{svc}.{t['NodeID']}"
    tasks = sorted(tasks, key=lambda t: t["CreatedAt"], reverse=True)
    tasks.sort(key=lambda t: natural_key(t["_name"]))
    rows = []
    prev = ""
    now = time.time()
    for t in tasks:
        name = t["_name"]
        shown = (" \\_ " if table else "") + name if name == prev else name
        prev = name
        status = t["Status"]
        try:
            since = now - parse_iso(status.get("Timestamp") or t["CreatedAt"])
        except ValueError:
            since = 0.0
        err = status.get("Err") or ""
        if trunc:
            err = _ellipsis(err, MAX_ERR)
        ports = [
            f"*:{p['PublishedPort']}->{p['TargetPort']}/{p.get('Protocol', 'tcp')}"
            for p in (status.get("PortStatus") or {}).get("Ports") or []
        ]
        image = (t.get("Spec") or {}).get("ContainerSpec", {}).get("Image", "")
        rows.append(
            {
                "ID": t["ID"][:12] if trunc else t["ID"],
                "Name": shown,
                "Image": svcopts.trim_image(image) if trunc else image,
                "Node": t["NodeID"],
                "DesiredState": t["DesiredState"].capitalize(),
                "CurrentState": (
                    f"{status['State'].capitalize()} {human_duration(since).lower()} ago"
                ),
                "Error": f'"{err}"' if err else "",
                "Ports": ",".join(ports),
            }
        )
    return rows


def run_ps(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    filters = parse_filters(o["filter"])
    names: dict[str, str] = {}
    ids = []
    missing = []
    for a in args:
        try:
            svc = ctx.call("GET", f"/services/{_q(a)}")
        except ApiError as exc:
            if exc.status == 404:
                missing.append(f"no such service: {a}")
                continue
            raise _error(exc) from None
        names[svc["ID"]] = svc["Spec"]["Name"]
        ids.append(svc["ID"])
    if missing:
        raise CliError("\n".join(missing))
    tasks: list[dict[str, Any]] = []
    for sid in ids:
        try:
            tasks += ctx.call("GET", "/tasks", query={"filters": {**filters, "service": [sid]}})
        except ApiError as exc:
            raise _error(exc) from None
    if "name" in filters:
        tasks = [
            t
            for t in tasks
            if any(
                f"{names.get(t['ServiceID'], '')}.{t['Slot'] or t['NodeID']}".startswith(v)
                for v in filters["name"]
            )
        ]
    fmt = o["format"] or PS_FORMAT
    rows = task_rows(tasks, names, not o["no_trunc"], fmt.startswith("table"))
    if o["quiet"]:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    if fmt == "json":
        fmt = "{{json .}}"
    sys.stdout.write(render_table_template(fmt, rows, PS_HEADERS))
    return 0


# -- inspect ------------------------------------------------------------------------------------


def pretty(svc: dict[str, Any], net_names: dict[str, str]) -> str:
    """docker's `service inspect --pretty`."""

    spec = svc["Spec"]
    tmpl = spec.get("TaskTemplate") or {}
    cs = tmpl.get("ContainerSpec") or {}
    lines = ["", f"ID:\t\t{svc['ID']}", f"Name:\t\t{spec['Name']}"]
    if spec.get("Labels"):
        lines.append("Labels:")
        for k, v in sorted(spec["Labels"].items()):
            lines.append(f" {k}={v}" if v else f" {k}")
    if "Global" in spec["Mode"]:
        lines.append("Service Mode:\tGlobal")
    else:
        lines.append("Service Mode:\tReplicated")
        lines.append(f" Replicas:\t{spec['Mode']['Replicated']['Replicas']}")
    us = svc.get("UpdateStatus") or {}
    if us.get("State"):
        lines.append("UpdateStatus:")
        lines.append(f" State:\t\t{us['State']}")
        now = time.time()
        if us.get("StartedAt"):
            ago = human_duration(now - parse_iso(us["StartedAt"]))
            lines.append(f" Started:\t{ago} ago")
        if us["State"] == "completed" and us.get("CompletedAt"):
            ago = human_duration(now - parse_iso(us["CompletedAt"]))
            lines.append(f" Completed:\t{ago} ago")
        lines.append(f" Message:\t{us.get('Message', '')}")
    lines.append("Placement:")
    constraints = (tmpl.get("Placement") or {}).get("Constraints") or []
    if constraints:
        lines.append(f" Constraints:\t[{' '.join(constraints)}]")
    u = spec.get("UpdateConfig")
    if u is not None:
        lines.append("UpdateConfig:")
        lines.append(f" Parallelism:\t{u.get('Parallelism', 0)}")
        if u.get("Delay"):
            lines.append(f" Delay:\t\t{svcopts.format_duration(u['Delay'])}")
        lines.append(f" On failure:\t{u.get('FailureAction', '')}")
        if u.get("Monitor"):
            lines.append(f" Monitoring Period: {svcopts.format_duration(u['Monitor'])}")
        lines.append(f" Max failure ratio: {u.get('MaxFailureRatio', 0):g}")
        lines.append(f" Update order:      {u.get('Order', '')}")
    lines.append("ContainerSpec:")
    lines.append(f" Image:\t\t{cs.get('Image', '')}")
    if cs.get("Args"):
        lines.append(" Args:\t\t" + "".join(f"{a} " for a in cs["Args"]))
    if cs.get("Env"):
        lines.append(" Env:\t\t" + "".join(f"{e} " for e in cs["Env"]))
    if cs.get("Dir"):
        lines.append(f" Dir:\t\t{cs['Dir']}")
    log_driver = tmpl.get("LogDriver")
    if log_driver is not None:  # docker's template, its blank line after the options too
        lines.append("Log Driver:")
        if log_driver.get("Name"):
            lines.append(f" Name:\t\t{log_driver['Name']}")
        if log_driver.get("Options"):
            lines.append(" LogOpts:")
            for k, v in sorted(log_driver["Options"].items()):
                lines.append(f"  {k}:       {v}" if v else f"  {k}")
        lines.append("")
    nets = [net_names.get(n["Target"], n["Target"]) for n in tmpl.get("Networks") or []]
    if nets:
        lines.append("Networks:" + "".join(f" {n}" for n in nets) + " ")
    lines.append(f"Endpoint Mode:\t{(spec.get('EndpointSpec') or {}).get('Mode', '')}")
    ports = (svc.get("Endpoint") or {}).get("Ports") or []
    if ports:
        lines.append("Ports:")
        for p in ports:
            lines.append(f" PublishedPort = {p.get('PublishedPort', 0)}")
            lines.append(f"  Protocol = {p.get('Protocol', 'tcp')}")
            lines.append(f"  TargetPort = {p['TargetPort']}")
            lines.append(f"  PublishMode = {p.get('PublishMode', 'ingress')}")
        lines[-1] += " "
    return _tabs("\n".join(lines)) + "\n"


def _tabs(text: str) -> str:
    """docker renders --pretty through a tabwriter: cells padded to a common column."""
    from tether.cli.output import tabwrite

    out = []
    block: list[list[str]] = []
    for line in text.split("\n"):
        if "\t" in line:
            cells = [c for c in line.split("\t")]
            head = cells[0]
            rest = "".join(c for c in cells[1:] if c)
            block.append([head, rest])
            continue
        if block:
            out.append(tabwrite(block, minwidth=0, padding=1).rstrip("\n"))
            block = []
        out.append(line)
    if block:
        out.append(tabwrite(block, minwidth=0, padding=1).rstrip("\n"))
    return "\n".join(out)


def run_inspect(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.output import print_inspected

    found: list[dict[str, Any]] = []
    errors: list[str] = []
    for name in args:
        try:
            found.append(ctx.call("GET", f"/services/{_q(name)}"))
        except ApiError as exc:
            if exc.status == 404:
                errors.append(f"Error: no such service: {name}")
            else:
                errors.append(f"Error response from daemon: {exc.message}")
    if o["pretty"] and not o["format"]:
        nets: dict[str, str] = {}
        try:
            for n in ctx.call("GET", "/networks"):
                nets[n["Id"]] = n["Name"]
        except ApiError:
            pass
        sys.stdout.write("".join(pretty(s, nets) for s in found))
        if errors:
            raise CliError("\n".join(errors))
        return 0
    print_inspected(o["format"] or "", found, errors)
    return 0


# -- scale / update -----------------------------------------------------------------------------


def _post_update(ctx: Context, svc: dict[str, Any], spec: dict[str, Any], name: str) -> None:
    try:
        resp = ctx.call(
            "POST",
            f"/services/{svc['ID']}/update",
            query={"version": svc["Version"]["Index"]},
            body=spec,
        )
    except ApiError as exc:
        raise _error(exc, name) from None
    for w in (resp or {}).get("Warnings") or []:
        sys.stderr.write(f"{w}\n")


def run_scale(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    pairs = []
    for a in args:
        k, sep, v = a.partition("=")
        if not sep or not k or not v:
            raise CliError(
                f"Invalid scale specifier '{a}'.\nSee 'tether service scale --help'.\n\n"
                f"Usage:  tether service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]\n\n"
                "Scale one or multiple replicated services"
            )
        if not v.isdigit():
            raise CliError(
                f'invalid replicas value {v}: strconv.ParseUint: parsing "{v}": invalid syntax'
            )
        pairs.append((k, int(v)))
    errors = []
    scaled = []
    for name, n in pairs:
        try:
            svc = get_service(ctx, name)
            spec = svc["Spec"]
            if "Replicated" not in spec["Mode"]:
                raise CliError("scale can only be used with replicated or replicated-job mode")
            spec["Mode"]["Replicated"]["Replicas"] = n
            _post_update(ctx, svc, spec, name)
        except CliError as exc:
            errors.append(exc.message)
            continue
        sys.stdout.write(f"{name} scaled to {n}\n")
        scaled.append((svc["ID"], name))
    if not o["detach"]:
        for sid, shown in scaled:
            wait_converged(ctx, sid, False, shown)
    if errors:
        raise CliError("\n".join(errors))
    return 0


def _remove_env(env: list[str], names: list[str]) -> list[str]:
    drop = set(names)
    return [e for e in env if e.partition("=")[0] not in drop and e not in drop]


def _target_of(value: str) -> tuple[int, str]:
    """--publish-rm: the target port (and protocol) a value names."""
    try:
        ports = svcopts.parse_publish(value)
    except ValueError as exc:
        raise CliError(f'invalid argument "{value}" for "--publish-rm" flag: {exc}', 125) from None
    p = ports[0]
    return int(p["TargetPort"]), str(p.get("Protocol") or "tcp")


def run_update(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    check_refused(o)
    name = args[0]
    svc = get_service(ctx, name)
    spec = svc["Spec"]
    tmpl = spec.setdefault("TaskTemplate", {})
    cs = tmpl.setdefault("ContainerSpec", {})
    if o["replicas"] is not None:
        if "Replicated" not in spec["Mode"]:
            raise CliError("replicas can only be used with replicated or replicated-job mode")
        spec["Mode"]["Replicated"]["Replicas"] = int(o["replicas"])
    if o["image"]:
        cs["Image"] = o["image"]
    if o["args"] is not None:
        import shlex

        cs["Args"] = shlex.split(o["args"])
    if o["entrypoint"] is not None:
        cs["Command"] = _entrypoint(o["entrypoint"])
    if o["hostname"] is not None:
        cs["Hostname"] = o["hostname"]
    if o["workdir"] is not None:
        cs["Dir"] = o["workdir"]
    log_driver = _log_driver(o, tmpl.get("LogDriver"))
    if log_driver is not None:
        tmpl["LogDriver"] = log_driver  # as docker's: the options given replace the old ones
    if o["env_rm"] or o["env_add"]:
        env = _remove_env(list(cs.get("Env") or []), o["env_rm"])
        added = _env({"env": o["env_add"]})
        env = _remove_env(env, [e.partition("=")[0] for e in added]) + added
        cs["Env"] = env
    if o["label_rm"] or o["label_add"]:
        labels = dict(spec.get("Labels") or {})
        for k in o["label_rm"]:
            labels.pop(k, None)
        labels.update(_labels(o["label_add"]))
        spec["Labels"] = labels
    if o["container_label_rm"] or o["container_label_add"]:
        labels = dict(cs.get("Labels") or {})
        for k in o["container_label_rm"]:
            labels.pop(k, None)
        labels.update(_labels(o["container_label_add"]))
        cs["Labels"] = labels
    if o["constraint_rm"] or o["constraint_add"]:
        placement = tmpl.setdefault("Placement", {})
        cons = [c for c in placement.get("Constraints") or [] if c not in o["constraint_rm"]]
        cons += [c for c in o["constraint_add"] if c not in cons]
        placement["Constraints"] = cons
    if o["publish_rm"] or o["publish_add"]:
        ep = spec.setdefault("EndpointSpec", {"Mode": "vip"})
        gone = {_target_of(v) for v in o["publish_rm"]}
        ports = [
            p
            for p in ep.get("Ports") or []
            if (p["TargetPort"], p.get("Protocol") or "tcp") not in gone
        ]
        for p in _ports(o["publish_add"], "publish-add"):
            ports = [
                q
                for q in ports
                if not (
                    q.get("PublishedPort") == p["PublishedPort"]
                    and q.get("Protocol") == p["Protocol"]
                    and p["PublishedPort"]
                )
            ]
            ports.append(p)
        ep["Ports"] = ports
    if o["endpoint_mode"]:
        spec.setdefault("EndpointSpec", {})["Mode"] = o["endpoint_mode"]
    if o["network_add"] or o["network_rm"]:
        nets = [n for n in tmpl.get("Networks") or [] if n["Target"] not in o["network_rm"]]
        tmpl["Networks"] = nets + _networks(o["network_add"], "network-add")
    if o["restart_condition"] not in (None, "", "any"):
        raise CliError(
            f"--restart-condition {o['restart_condition']}: tether's services restart tasks "
            "on any exit (any)",
            125,
        )
    if any(
        o.get(k) is not None
        for k in (
            "update_parallelism",
            "update_delay",
            "update_monitor",
            "update_failure_action",
            "update_max_failure_ratio",
            "update_order",
        )
    ):
        spec["UpdateConfig"] = _update_config(o, spec.get("UpdateConfig"))
    if o["force"]:
        tmpl["ForceUpdate"] = int(tmpl.get("ForceUpdate") or 0) + 1
    if o["with_registry_auth"]:
        sys.stderr.write(
            "WARNING: --with-registry-auth: tether does not send registry credentials to the "
            "nodes; each node pulls with its own (tether login on that node)\n"
        )
    _post_update(ctx, svc, spec, name)
    sys.stdout.write(f"{name}\n")
    if not o["detach"]:
        wait_converged(ctx, svc["ID"], o["quiet"], name)
    return 0


# -- logs ---------------------------------------------------------------------------------------


def run_logs(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from urllib.parse import unquote

    target = args[0]
    pad = 1
    try:
        svc = ctx.call("GET", f"/services/{_q(target)}")
        path = f"/services/{_q(target)}/logs"
        replicas = ((svc["Spec"]["Mode"].get("Replicated") or {}).get("Replicas")) or 0
        pad = len(str(replicas)) if replicas else 1
    except ApiError as exc:
        if exc.status != 404:
            raise _error(exc) from None
        try:
            task = ctx.call("GET", f"/tasks/{_q(target)}")
        except ApiError as exc2:
            if exc2.status == 404:
                raise CliError(f"no such task or service: {target}") from None
            raise _error(exc2) from None
        path = f"/tasks/{_q(target)}/logs"
        pad = len(str(task["Slot"]))
    query: dict[str, Any] = {
        "stdout": 1,
        "stderr": 1,
        "details": 1 if (o["details"] or not o["raw"]) else None,
        "follow": 1 if o["follow"] else None,
        "timestamps": 1 if o["timestamps"] else None,
    }
    if o["tail"] and o["tail"] != "all":
        query["tail"] = o["tail"]
    if o["since"]:
        query["since"] = o["since"]
    resp = ctx.open("GET", path, query=query)
    if resp.status >= 400:
        from tether import wire

        data = resp.read()
        resp.close()
        raise CliError(f"Error response from daemon: {wire.loads(data).get('message')}")
    cache: dict[tuple[str, str, str], str] = {}
    names: dict[str, str] = {}

    def context_of(node: str, sid: str, tid: str) -> str:
        key = (node, sid, tid)
        if key not in cache:
            if sid not in names:
                try:
                    names[sid] = (
                        sid
                        if o["no_resolve"]
                        else ctx.call("GET", f"/services/{sid}")["Spec"]["Name"]
                    )
                except ApiError:
                    names[sid] = sid
            try:
                slot = ctx.call("GET", f"/tasks/{tid}")["Slot"]
            except ApiError:
                slot = 0
            name = f"{names[sid]}.{slot}"
            if not o["no_task_ids"]:
                name += f".{tid if o['no_trunc'] else tid[:12]}"
            cache[key] = name + "@" + node + " " * max(0, pad - len(str(slot)))
        return cache[key]

    try:
        for stream, data in resp.frames():
            sink = sys.stdout if stream == 1 else sys.stderr
            if o["raw"] and not o["details"]:
                sink.write(data.decode(errors="replace"))
                sink.flush()
                continue
            text = data.decode(errors="replace")
            stamp = ""
            if o["timestamps"]:
                stamp, _, text = text.partition(" ")
            detail, _, msg = text.partition(" ")
            attrs = {}
            for pair in detail.split(","):
                k, _, v = pair.partition("=")
                if k:
                    attrs[unquote(k)] = unquote(v)
            node = attrs.pop("com.docker.swarm.node.id", "")
            sid = attrs.pop("com.docker.swarm.service.id", "")
            tid = attrs.pop("com.docker.swarm.task.id", "")
            if not (node and sid and tid):
                # not a task's line (a node that could not be reached says so on stderr)
                sink.write(text if text.endswith("\n") else text + "\n")
                continue
            line = (stamp + " " if stamp else "") + context_of(node, sid, tid) + "    | "
            if o["details"] and attrs:
                line += ",".join(sorted(f"{k}={v}" for k, v in attrs.items())) + " "
            sink.write(line + msg)
            sink.flush()
    except KeyboardInterrupt:
        pass
    finally:
        resp.close()
    return 0


# -- rm -----------------------------------------------------------------------------------------


def run_rm(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    errors = []
    for name in args:
        try:
            ctx.call("DELETE", f"/services/{_q(name)}")
        except ApiError as exc:
            errors.append(_error(exc, name).message)
            continue
        sys.stdout.write(name + "\n")
    if errors:
        raise CliError("\n".join(errors))
    return 0


# -- the commands -------------------------------------------------------------------------------

UPDATE_FLAGS = [
    Flag(
        "update-delay",
        metavar="duration",
        help="Delay between updates (ns|us|ms|s|m|h) (default 0s)",
        check=_duration,
    ),
    Flag("update-failure-action", help='Action on update failure ("pause", "continue")'),
    Flag(
        "update-max-failure-ratio",
        metavar="float",
        help="Failure rate to tolerate during an update",
        check=_float,
    ),
    Flag(
        "update-monitor",
        metavar="duration",
        help="Duration after each task update to monitor for failure (ns|us|ms|s|m|h) (default 5s)",
        check=_duration,
    ),
    Flag("update-order", help='Update order ("start-first", "stop-first")'),
    Flag(
        "update-parallelism",
        help="Maximum number of tasks updated simultaneously (0 to update all at once) (default 1)",
        metavar="uint",
        check=_uint,
    ),
]

LOG_FLAGS = [
    Flag("log-driver", help="Logging driver for service (json-file)"),
    Flag("log-opt", kind="list", metavar="list", help="Logging driver options"),
]

CREATE = Command(
    "service create",
    "[OPTIONS] IMAGE [COMMAND] [ARG...]",
    "Create a new service",
    [
        Flag("constraint", kind="list", metavar="list", help="Placement constraints"),
        Flag("container-label", kind="list", metavar="list", help="Container labels"),
        Flag(
            "detach",
            "d",
            kind="bool",
            help="Exit immediately instead of waiting for the service to converge",
        ),
        Flag("endpoint-mode", default="vip", help='Endpoint mode (vip or dnsrr) (default "vip")'),
        Flag("entrypoint", metavar="command", help="Overwrite the default ENTRYPOINT of the image"),
        Flag("env", "e", kind="list", metavar="list", help="Set environment variables"),
        Flag(
            "env-file", kind="list", metavar="list", help="Read in a file of environment variables"
        ),
        Flag("hostname", help="Container hostname"),
        Flag("label", "l", kind="list", metavar="list", help="Service labels"),
        Flag(
            "mode",
            default="replicated",
            help='Service mode ("replicated", "global") (default "replicated")',
        ),
        Flag("name", help="Service name"),
        Flag("network", kind="list", metavar="network", help="Network attachments"),
        Flag("publish", "p", kind="list", metavar="port", help="Publish a port as a node port"),
        Flag("quiet", "q", kind="bool", help="Suppress progress output"),
        Flag("replicas", metavar="uint", help="Number of tasks", check=_uint),
        Flag("restart-condition", help='Restart when condition is met ("any" only)'),
        *UPDATE_FLAGS,
        *LOG_FLAGS,
        Flag(
            "with-registry-auth",
            kind="bool",
            help="Send registry authentication details to swarm agents (not done by tether: warns)",
        ),
        Flag("workdir", "w", help="Working directory inside the container"),
        *_refused_flags(),
    ],
    min_args=1,
    interspersed=False,
    handler=run_create,
)

LS = Command(
    "service ls",
    "[OPTIONS]",
    "List services",
    [
        Flag(
            "filter",
            "f",
            kind="list",
            metavar="filter",
            help="Filter output based on conditions provided",
        ),
        Flag("format", help="Format output using a custom template"),
        Flag("quiet", "q", kind="bool", help="Only display IDs"),
    ],
    max_args=0,
    handler=run_ls,
    aliases=("service ls", "service list"),
)

PS = Command(
    "service ps",
    "[OPTIONS] SERVICE [SERVICE...]",
    "List the tasks of one or more services",
    [
        Flag(
            "filter",
            "f",
            kind="list",
            metavar="filter",
            help="Filter output based on conditions provided",
        ),
        Flag("format", help="Pretty-print tasks using a Go template"),
        Flag("no-resolve", kind="bool", help="Do not map IDs to Names"),
        Flag("no-trunc", kind="bool", help="Do not truncate output"),
        Flag("quiet", "q", kind="bool", help="Only display task IDs"),
    ],
    min_args=1,
    handler=run_ps,
)

INSPECT = Command(
    "service inspect",
    "[OPTIONS] SERVICE [SERVICE...]",
    "Display detailed information on one or more services",
    [
        Flag("format", "f", help="Format output using a custom template"),
        Flag("pretty", kind="bool", help="Print the information in a human friendly format"),
    ],
    min_args=1,
    handler=run_inspect,
)

SCALE = Command(
    "service scale",
    "SERVICE=REPLICAS [SERVICE=REPLICAS...]",
    "Scale one or multiple replicated services",
    [
        Flag(
            "detach",
            "d",
            kind="bool",
            help="Exit immediately instead of waiting for the service to converge",
        )
    ],
    min_args=1,
    handler=run_scale,
)

UPDATE = Command(
    "service update",
    "[OPTIONS] SERVICE",
    "Update a service",
    [
        Flag("args", metavar="command", help="Service command args"),
        Flag(
            "constraint-add",
            kind="list",
            metavar="list",
            help="Add or update a placement constraint",
        ),
        Flag("constraint-rm", kind="list", metavar="list", help="Remove a constraint"),
        Flag(
            "container-label-add",
            kind="list",
            metavar="list",
            help="Add or update a container label",
        ),
        Flag(
            "container-label-rm",
            kind="list",
            metavar="list",
            help="Remove a container label by its key",
        ),
        Flag(
            "detach",
            "d",
            kind="bool",
            help="Exit immediately instead of waiting for the service to converge",
        ),
        Flag("endpoint-mode", help="Endpoint mode (vip or dnsrr)"),
        Flag("entrypoint", metavar="command", help="Overwrite the default ENTRYPOINT of the image"),
        Flag("env-add", kind="list", metavar="list", help="Add or update an environment variable"),
        Flag("env-rm", kind="list", metavar="list", help="Remove an environment variable"),
        Flag("force", kind="bool", help="Force update even if no changes require it"),
        Flag("hostname", help="Container hostname"),
        Flag("image", help="Service image tag"),
        Flag("label-add", kind="list", metavar="list", help="Add or update a service label"),
        Flag("label-rm", kind="list", metavar="list", help="Remove a label by its key"),
        Flag("network-add", kind="list", metavar="network", help="Add a network"),
        Flag("network-rm", kind="list", metavar="list", help="Remove a network"),
        Flag("publish-add", kind="list", metavar="port", help="Add or update a published port"),
        Flag(
            "publish-rm",
            kind="list",
            metavar="port",
            help="Remove a published port by its target port",
        ),
        Flag("quiet", "q", kind="bool", help="Suppress progress output"),
        Flag("replicas", metavar="uint", help="Number of tasks", check=_uint),
        Flag("restart-condition", help='Restart when condition is met ("any" only)'),
        *UPDATE_FLAGS,
        *LOG_FLAGS,
        Flag(
            "with-registry-auth",
            kind="bool",
            help="Send registry authentication details to swarm agents (not done by tether: warns)",
        ),
        Flag("workdir", "w", help="Working directory inside the container"),
        *_refused_flags(update=True),
    ],
    min_args=1,
    max_args=1,
    handler=run_update,
)

LOGS = Command(
    "service logs",
    "[OPTIONS] SERVICE|TASK",
    "Fetch the logs of a service or task",
    [
        Flag("details", kind="bool", help="Show extra details provided to logs"),
        Flag("follow", "f", kind="bool", help="Follow log output"),
        Flag("no-resolve", kind="bool", help="Do not map IDs to Names in output"),
        Flag("no-task-ids", kind="bool", help="Do not include task IDs in output"),
        Flag("no-trunc", kind="bool", help="Do not truncate output"),
        Flag("raw", kind="bool", help="Do not neatly format logs"),
        Flag(
            "since",
            help='Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)',
        ),
        Flag(
            "tail",
            "n",
            default="all",
            help='Number of lines to show from the end of the logs (default "all")',
        ),
        Flag("timestamps", "t", kind="bool", help="Show timestamps"),
    ],
    min_args=1,
    max_args=1,
    handler=run_logs,
)

RM = Command(
    "service rm",
    "SERVICE [SERVICE...]",
    "Remove one or more services",
    [],
    min_args=1,
    handler=run_rm,
    aliases=("service rm", "service remove"),
)


def run_rollback(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    raise CliError(
        "tether: service rollback is not supported: tether keeps no previous spec; "
        "run service update with the settings you want"
    )


ROLLBACK = Command(
    "service rollback",
    "[OPTIONS] SERVICE",
    "Revert changes to a service's configuration (not supported by tether)",
    [
        Flag(
            "detach",
            "d",
            kind="bool",
            help="Exit immediately instead of waiting for the service to converge",
        ),
        Flag("quiet", "q", kind="bool", help="Suppress progress output"),
    ],
    min_args=1,
    max_args=1,
    handler=run_rollback,
)

COMMANDS = {
    "create": CREATE,
    "inspect": INSPECT,
    "logs": LOGS,
    "ls": LS,
    "list": LS,
    "ps": PS,
    "rm": RM,
    "remove": RM,
    "rollback": ROLLBACK,
    "scale": SCALE,
    "update": UPDATE,
}


def parse_iso(text: str) -> float:
    """Docker's RFC 3339 times (nanoseconds, Z or an offset) as epoch seconds."""
    from datetime import datetime

    main, dot, frac = text.partition(".")
    tz = ""
    if dot:
        digits = ""
        for i, ch in enumerate(frac):
            if not ch.isdigit():
                tz = frac[i:]
                break
            digits += ch
        main = main + "." + (digits[:6] or "0")
    else:
        for sign in ("Z", "+", "-"):
            idx = main.rfind(sign)
            if idx > 10:
                main, tz = main[:idx], main[idx:]
                break
    return datetime.fromisoformat(main + ("+00:00" if tz in ("Z", "") else tz)).timestamp()
