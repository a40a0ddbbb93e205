"""tether stack deploy|ls|services|ps|rm: compose files as services on the cluster, client-side
as docker's stack commands are (a stack is what carries its label: com.docker.stack.namespace).
"""

from __future__ import annotations

import sys
import time

from tether.cli.context import CliError, Context
from tether.cli.flags import Command, Flag
from tether.cli.output import natural_key, parse_filters, render_table_template
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

NAMESPACE = "com.docker.stack.namespace"
NETWORK_GONE_WAIT = 30.0  # seconds `stack rm` waits for a network's task endpoints to go


def _q(text: str) -> str:
    from tether.client import quote

    return quote(text)


def _api(exc: ApiError) -> CliError:
    return CliError(f"Error response from daemon: {exc.message}")


def stack_services(ctx: Context, name: str) -> list[dict[str, Any]]:
    try:
        services: list[dict[str, Any]] = ctx.call(
            "GET",
            "/services",
            query={"status": "true", "filters": {"label": [f"{NAMESPACE}={name}"]}},
        )
    except ApiError as exc:
        raise _api(exc) from None
    return services


def stack_networks(ctx: Context, name: str) -> list[dict[str, Any]]:
    try:
        nets: list[dict[str, Any]] = ctx.call(
            "GET", "/networks", query={"filters": {"label": [f"{NAMESPACE}={name}"]}}
        )
    except ApiError as exc:
        raise _api(exc) from None
    return nets


# -- deploy ---------------------------------------------------------------------------------------


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Would an update change anything?  (What swarm stores: the spec the daemon checked.)"""
    keys = ("Labels", "TaskTemplate", "Mode", "UpdateConfig", "EndpointSpec")
    o = {k: old.get(k) for k in keys}
    n = {k: new.get(k) for k in keys}
    # The daemon fills in defaults and network ids: compare what the file says.
    for d in (o, n):
        tmpl = dict(d.get("TaskTemplate") or {})
        tmpl["Networks"] = [{"Aliases": a.get("Aliases") or []} for a in tmpl.get("Networks") or []]
        tmpl.pop("ForceUpdate", None)
        tmpl.pop("Runtime", None)
        cs = {
            k: v
            for k, v in (tmpl.get("ContainerSpec") or {}).items()
            if v not in (None, [], {}, "")
        }
        tmpl["ContainerSpec"] = cs
        tmpl = {k: v for k, v in tmpl.items() if v not in (None, [], {})}
        d["TaskTemplate"] = tmpl
        ep = dict(d.get("EndpointSpec") or {})
        ep["Ports"] = sorted(
            (
                {
                    "Protocol": p.get("Protocol") or "tcp",
                    "TargetPort": p.get("TargetPort"),
                    "PublishedPort": p.get("PublishedPort") or 0,
                    "PublishMode": p.get("PublishMode") or "ingress",
                }
                for p in ep.get("Ports") or []
            ),
            key=lambda p: (p["Protocol"], p["TargetPort"], p["PublishedPort"]),
        )
        ep.setdefault("Mode", "vip")
        d["EndpointSpec"] = ep
        u = dict(d.get("UpdateConfig") or {})
        u = {k: v for k, v in u.items() if v not in (None, 0, "")}
        d["UpdateConfig"] = u
    return o == n


def run_deploy(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.compose import stack as stackmod
    from tether.compose.model import ComposeError

    name = args[0]
    if not o["compose_file"]:
        raise CliError("Please specify only one compose file (with --compose-file).")
    try:
        st = stackmod.load(o["compose_file"], name)
    except ComposeError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(str(exc)) from None
    for note in st.notes:
        sys.stderr.write(note + "\n")
    if o["with_registry_auth"]:
        sys.stderr.write(
            "WARNING: --with-registry-auth: tether does not send registry credentials to the "
            "nodes; each node pulls with its own (tether login on that node)\n"
        )
    if o["resolve_image"] not in ("always", "changed", "never"):
        raise CliError(f"Invalid option {o['resolve_image']} for flag --resolve-image", 125)
    try:
        existing_nets = {n["Name"]: n for n in ctx.call("GET", "/networks")}
    except ApiError as exc:
        raise _api(exc) from None
    for net in st.networks:
        if net.external:
            found = existing_nets.get(net.name)
            if found is None or found.get("Scope") not in ("swarm", "global"):
                raise CliError(
                    f'network "{net.name}" is declared as external, but could not be found. '
                    "You need to create a swarm-scoped network before the stack is deployed"
                )
    current = {s["Spec"]["Name"]: s for s in stack_services(ctx, name)}
    if o["prune"]:
        for svc_name in sorted(set(current) - set(st.services)):
            sys.stdout.write(f"Removing service {svc_name}\n")
            try:
                ctx.call("DELETE", f"/services/{current[svc_name]['ID']}")
            except ApiError as exc:
                raise _api(exc) from None
    for net in st.networks:
        if net.external or net.name in existing_nets:
            continue
        sys.stdout.write(f"Creating network {net.name}\n")
        try:
            ctx.call("POST", "/networks/create", body=net.body)
        except ApiError as exc:
            raise CliError(f"failed to create network {net.name}: {_api(exc).message}") from None
    for svc_name, spec in st.services.items():
        old = current.get(svc_name)
        try:
            if old is None:
                sys.stdout.write(f"Creating service {svc_name}\n")
                ctx.call("POST", "/services/create", body=spec)
            elif not _same(old["Spec"], spec):
                sys.stdout.write(f"Updating service {svc_name} (id: {old['ID']})\n")
                # A `service update --force` made since is kept, not undone by the file.
                spec["TaskTemplate"]["ForceUpdate"] = old["Spec"]["TaskTemplate"].get(
                    "ForceUpdate", 0
                )
                ctx.call(
                    "POST",
                    f"/services/{old['ID']}/update",
                    query={"version": old["Version"]["Index"]},
                    body=spec,
                )
        except ApiError as exc:
            verb = "create" if old is None else "update"
            raise CliError(f"failed to {verb} service {svc_name}: {_api(exc).message}") from None
    if not o["detach"]:
        from tether.cli.service import wait_converged

        for svc in stack_services(ctx, name):
            wait_converged(ctx, svc["ID"], o["quiet"])
    return 0


# -- ls / services / ps ---------------------------------------------------------------------------


def run_ls(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    try:
        services = ctx.call("GET", "/services")
    except ApiError as exc:
        raise _api(exc) from None
    counts: dict[str, int] = {}
    for s in services:
        ns = (s["Spec"].get("Labels") or {}).get(NAMESPACE)
        if ns:
            counts[ns] = counts.get(ns, 0) + 1
    rows = [{"Name": n, "Services": str(counts[n])} for n in sorted(counts, key=natural_key)]
    fmt = o["format"] or "table {{.Name}}\t{{.Services}}"
    if fmt == "json":
        fmt = "{{json .}}"
    sys.stdout.write(render_table_template(fmt, rows, {"Name": "NAME", "Services": "SERVICES"}))
    return 0


def run_services(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli import svcopts
    from tether.cli.service import LS_FORMAT, LS_HEADERS

    name = args[0]
    filters = parse_filters(o["filter"])
    services = stack_services(ctx, name)
    if not services:
        sys.stderr.write(f"Nothing found in stack: {name}\n")
        return 0
    for key, values in filters.items():
        if key == "name":
            services = [s for s in services if any(s["Spec"]["Name"].startswith(v) for v in values)]
        elif key == "id":
            services = [s for s in services if any(s["ID"].startswith(v) for v in values)]
        elif key == "mode":
            services = [
                s
                for s in services
                if ("global" if "Global" in s["Spec"]["Mode"] else "replicated") in values
            ]
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
                "Mode": "global" if "Global" in s["Spec"]["Mode"] else "replicated",
                "Replicas": f"{st.get('RunningTasks', 0)}/{st.get('DesiredTasks', 0)}",
                "Image": svcopts.trim_image(s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]),
                "Ports": svcopts.ports_text((s.get("Endpoint") or {}).get("Ports") or []),
            }
        )
    fmt = o["format"] or LS_FORMAT
    if fmt == "json":
        fmt = "{{json .}}"
    sys.stdout.write(render_table_template(fmt, rows, LS_HEADERS))
    return 0


def run_ps(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.service import PS_FORMAT, PS_HEADERS, task_rows

    name = args[0]
    services = stack_services(ctx, name)
    if not services:
        raise CliError(f"nothing found in stack: {name}")
    names = {s["ID"]: s["Spec"]["Name"] for s in services}
    filters = parse_filters(o["filter"])
    tasks: list[dict[str, Any]] = []
    for sid in names:
        try:
            tasks += ctx.call("GET", "/tasks", query={"filters": {**filters, "service": [sid]}})
        except ApiError as exc:
            raise _api(exc) from None
    fmt = o["format"] or PS_FORMAT
    rows = task_rows(tasks, names, not o["no_trunc"], fmt.startswith("table"))
    if o["quiet"]:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    if fmt == "json":
        fmt = "{{json .}}"
    sys.stdout.write(render_table_template(fmt, rows, PS_HEADERS))
    return 0


# -- rm -----------------------------------------------------------------------------------------


def run_rm(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    failed = False
    for name in args:
        services = stack_services(ctx, name)
        nets = stack_networks(ctx, name)
        if not services and not nets:
            sys.stderr.write(f"Nothing found in stack: {name}\n")
            continue
        for s in sorted(services, key=lambda s: s["Spec"]["Name"]):
            sys.stdout.write(f"Removing service {s['Spec']['Name']}\n")
            try:
                ctx.call("DELETE", f"/services/{s['ID']}")
            except ApiError as exc:
                sys.stderr.write(f"Failed to remove service {s['ID']}: {exc.message}\n")
                failed = True
        for n in sorted(nets, key=lambda n: n["Name"]):
            sys.stdout.write(f"Removing network {n['Name']}\n")
            # The tasks' containers leave the network as their nodes stop them: wait for
            # that (docker stack rm does not, and leaves networks behind with an error).
            deadline = time.monotonic() + NETWORK_GONE_WAIT
            while True:
                try:
                    ctx.call("DELETE", f"/networks/{n['Id']}")
                    break
                except ApiError as exc:
                    if exc.status == 404:
                        break
                    if "active endpoints" in exc.message and time.monotonic() < deadline:
                        time.sleep(0.2)
                        continue
                    sys.stderr.write(f"Failed to remove network {n['Id']}: {exc.message}\n")
                    failed = True
                    break
    if failed:
        raise CliError("Failed to remove some resources from stack: " + ", ".join(args))
    return 0


DEPLOY = Command(
    "stack deploy",
    "[OPTIONS] STACK",
    "Deploy a new stack or update an existing stack",
    [
        Flag(
            "compose-file",
            "c",
            kind="list",
            metavar="strings",
            help='Path to a Compose file, or "-" to read from stdin',
        ),
        Flag(
            "detach",
            "d",
            kind="bool",
            default=True,
            help="Exit immediately instead of waiting for the stack services to converge (default true)",
        ),
        Flag("prune", kind="bool", help="Prune services that are no longer referenced"),
        Flag("quiet", "q", kind="bool", help="Suppress progress output"),
        Flag(
            "resolve-image",
            default="always",
            help='Query the registry to resolve image digest and supported platforms ("always", "changed", "never") (default "always")',
        ),
        Flag(
            "with-registry-auth",
            kind="bool",
            help="Send registry authentication details to Swarm agents (not done by tether: warns)",
        ),
    ],
    min_args=1,
    max_args=1,
    handler=run_deploy,
    aliases=("stack deploy", "stack up"),
)

LS = Command(
    "stack ls",
    "[OPTIONS]",
    "List stacks",
    [Flag("format", help="Format output using a custom template")],
    max_args=0,
    handler=run_ls,
    aliases=("stack ls", "stack list"),
)

SERVICES = Command(
    "stack services",
    "[OPTIONS] STACK",
    "List the services in the stack",
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
    min_args=1,
    max_args=1,
    handler=run_services,
)

PS = Command(
    "stack ps",
    "[OPTIONS] STACK",
    "List the tasks in the stack",
    [
        Flag(
            "filter",
            "f",
            kind="list",
            metavar="filter",
            help="Filter output based on conditions provided",
        ),
        Flag("format", help="Format output using a custom template"),
        Flag("no-resolve", kind="bool", help="Do not map IDs to Names"),
        Flag("no-trunc", kind="bool", help="Do not truncate output"),
        Flag("quiet", "q", kind="bool", help="Only display task IDs"),
    ],
    min_args=1,
    max_args=1,
    handler=run_ps,
)

RM = Command(
    "stack rm",
    "[OPTIONS] STACK [STACK...]",
    "Remove one or more stacks",
    [
        Flag(
            "detach",
            "d",
            kind="bool",
            default=True,
            help="Do not wait for stack removal (default true)",
        )
    ],
    min_args=1,
    handler=run_rm,
    aliases=("stack rm", "stack remove", "stack down"),
)

COMMANDS = {
    "deploy": DEPLOY,
    "up": DEPLOY,
    "ls": LS,
    "list": LS,
    "services": SERVICES,
    "ps": PS,
    "rm": RM,
    "remove": RM,
    "down": RM,
}
