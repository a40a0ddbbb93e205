"""tether compose: docker compose's commands over tether's API.

    tether compose [-f FILE]... [-p NAME] [--project-directory DIR] [--env-file FILE] COMMAND

The file work (YAML, interpolation, schema, checks) is in tether.compose and runs before the
daemon is asked for anything; a bad file changes nothing.
"""

from __future__ import annotations

import sys

from tether.cli.context import CliError, Context
from tether.cli.flags import Command, Flag, UsageError, parse, print_usage_error, usage_text

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

    from tether.compose.model import Project
    from tether.compose.runner import Existing, Runner


def _project(o: dict[str, Any]) -> Project:
    from tether.compose import loader

    project = loader.load(
        o["file"],
        project_name=o["project_name"],
        project_dir=o["project_directory"],
        env_files=o["env_file"],
    )
    for w in project.warnings:
        sys.stderr.write(f"WARN[0000] {w}\n")
    return project


def _runner(ctx: Context, o: dict[str, Any]) -> Runner:
    from tether.compose.runner import Runner

    return Runner(ctx, _project(o))


def _timeout(o: dict[str, Any]) -> float | None:
    return float(o["timeout"]) if o.get("timeout") is not None else None


def run_up(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    r = _runner(ctx, g)
    for item in o["scale"]:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise CliError(f'invalid --scale "{item}": expected SERVICE=NUM')
        if name not in r.project.services:
            raise CliError(f"no such service: {name}")
        r.project.services[name].replicas = int(count)
    if o["detach"] and o["abort_on_container_exit"]:
        raise CliError("--abort-on-container-exit and --detach are incompatible")
    if o["build"] and o["no_build"]:
        raise CliError("--build and --no-build are incompatible")
    r.build_policy = "always" if o["build"] else "never" if o["no_build"] else ""
    started = r.up(
        args,
        force_recreate=o["force_recreate"],
        no_recreate=o["no_recreate"],
        remove_orphans=o["remove_orphans"],
        timeout=_timeout(o),
    )
    if o["detach"]:
        return 0
    return r.attach(started, o["abort_on_container_exit"], _timeout(o))


def run_build(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.build import build_args
    from tether.compose import images

    return images.build_all(
        _runner(ctx, g), args, build_args(o["build_arg"]), o["no_cache"], o["pull"], o["quiet"]
    )


def run_pull(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    from tether.compose import images

    return images.pull_all(
        _runner(ctx, g), args, o["quiet"], o["ignore_pull_failures"], o["ignore_buildable"]
    )


IMAGES_HEADERS = {
    "ContainerName": "CONTAINER",
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "ID": "IMAGE ID",
    "Size": "SIZE",
}
IMAGES_DEFAULT = "table {{.ContainerName}}\t{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Size}}"


def run_images(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    """docker compose images: the image of each of the project's containers."""
    from tether.cli.image import human_size
    from tether.cli.output import render_table_template
    from tether.client import ApiError, quote
    from tether.compose import plan
    from tether.compose.runner import label_filter

    r = _runner(ctx, g)
    _known(r, args)
    items = ctx.call(
        "GET", "/containers/json", query={"all": 1, "filters": label_filter(r.project.name)}
    )
    rows: list[dict[str, Any]] = []
    inspected: dict[str, Any] = {}
    for c in items:
        if args and (c.get("Labels") or {}).get(plan.SERVICE) not in args:
            continue
        ident = str(c.get("ImageID") or "")
        if ident not in inspected:
            try:
                inspected[ident] = ctx.call("GET", f"/images/{quote(ident)}/json")
            except ApiError:
                inspected[ident] = {"Id": ident, "RepoTags": [], "Size": 0}
        img = inspected[ident]
        tags = list(img.get("RepoTags") or [])
        # The tag the container was made from when the image has several, else the first.
        used = str(c.get("Image") or "")
        tag = next((t for t in tags if t in (used, f"{used}:latest")), tags[0] if tags else "")
        repo, _, version = tag.rpartition(":") if tag else ("<none>", "", "<none>")
        rows.append(
            {
                "ContainerName": (c.get("Names") or ["/"])[0].lstrip("/"),
                "Repository": repo,
                "Tag": version,
                "ID": ident.removeprefix("sha256:")[:12],
                "FullID": ident,
                "Size": human_size(img.get("Size") or 0),
            }
        )
    rows.sort(key=lambda row: row["ContainerName"])
    if o["quiet"]:
        seen: list[str] = []
        for row in rows:
            if row["FullID"] not in seen:
                seen.append(row["FullID"])
        sys.stdout.write("".join(i + "\n" for i in seen))
        return 0
    fmt = o["format"] or "table"
    if fmt == "json":
        import json

        keep = ("ContainerName", "Repository", "Tag", "ID", "Size")
        sys.stdout.write(
            json.dumps([{k: row[k] for k in keep} | {"ID": row["FullID"]} for row in rows]) + "\n"
        )
        return 0
    if fmt != "table":
        raise CliError(f"unsupported format type: {fmt}")
    sys.stdout.write(render_table_template(IMAGES_DEFAULT, rows, IMAGES_HEADERS))
    return 0


def run_down(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    return _runner(ctx, g).down(o["remove_orphans"], _timeout(o), o["volumes"])


def _known(r: Runner, names: list[str]) -> None:
    for name in names:
        if name not in r.project.services:
            raise CliError(f"no such service: {name}")


def _chosen(r: Runner, args: list[str]) -> list[Existing]:
    _known(r, args)
    return r.containers(args or None)


def run_stop(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    r = _runner(ctx, g)
    r.stop(_chosen(r, args), _timeout(o))
    return 0


def run_start(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    r = _runner(ctx, g)
    items = _chosen(r, args)
    if not items:
        raise CliError("service(s) not created: run `tether compose up` first")
    for level in r.project.order:
        for e in items:
            if e.service in level and not e.running:
                ctx.call("POST", f"/containers/{e.id}/start")
                r.progress("Container", e.name, "Started")
    return 0


PS_HEADERS = {
    "Name": "NAME",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "Service": "SERVICE",
    "RunningFor": "CREATED",
    "Status": "STATUS",
    "Ports": "PORTS",
    "State": "STATE",
    "ID": "CONTAINER ID",
    "Networks": "NETWORKS",
}
PS_DEFAULT = "table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}"


def run_ps(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.output import render_table_template
    from tether.cli.views import ps_row as _ps_row
    from tether.compose import plan
    from tether.compose.runner import label_filter

    r = _runner(ctx, g)
    if o["services"]:
        names = args or list(r.project.services)
        sys.stdout.write("".join(f"{n}\n" for n in names if n in r.project.services))
        return 0
    _known(r, args)
    items = ctx.call(
        "GET",
        "/containers/json",
        query={"all": 1 if o["all"] else None, "filters": label_filter(r.project.name)},
    )
    rows = []
    for c in items:
        labels = c.get("Labels") or {}
        if args and labels.get(plan.SERVICE) not in args:
            continue
        row = _ps_row(c, no_trunc=o["no_trunc"])
        row["Name"] = row["Names"]
        row["Service"] = labels.get(plan.SERVICE, "")
        row["ID"] = c["Id"] if o["no_trunc"] else c["Id"][:12]
        rows.append(row)
    rows.sort(key=lambda row: row["Name"])
    if o["quiet"]:
        sys.stdout.write("".join(row["ID"] + "\n" for row in rows))
        return 0
    fmt = o["format"] or PS_DEFAULT
    if fmt == "table":
        fmt = PS_DEFAULT
    if fmt == "json":
        fmt = "{{json .}}"
        rows = [{k: v for k, v in row.items() if k != "Label"} for row in rows]
    sys.stdout.write(render_table_template(fmt, rows, PS_HEADERS))
    return 0


def run_logs(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    import threading

    r = _runner(ctx, g)
    items = _chosen(r, args)
    width = max((len(r.prefix(e)) for e in items), default=0)
    lock = threading.Lock()
    query: dict[str, Any] = {
        "stdout": 1,
        "stderr": 1,
        "follow": 1 if o["follow"] else None,
        "timestamps": 1 if o["timestamps"] else None,
    }
    if o["tail"] and o["tail"] != "all":
        query["tail"] = o["tail"]

    def show(e: Existing) -> None:
        label = "" if o["no_log_prefix"] else r.prefix(e).ljust(width) + "  | "
        r.print_output(e, query, label, lock)

    if not o["follow"]:
        for e in items:
            show(e)
        return 0
    threads = [threading.Thread(target=show, args=(e,), daemon=True) for e in items]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        return 130
    return 0


def run_exec(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    from tether.cli import container

    r = _runner(ctx, g)
    service, cmd = args[0], args[1:]
    _known(r, [service])
    index = o["index"] or 1
    found = [e for e in r.containers([service]) if e.number == index and e.running]
    if not found:
        raise CliError(f'service "{service}" is not running container #{index}')
    tty = not o["no_TTY"] and sys.stdin.isatty() and sys.stdout.isatty()
    opts = {
        "detach": o["detach"],
        "env": o["env"],
        "interactive": not o["detach"] and sys.stdin.isatty(),
        "tty": tty,
        "workdir": o["workdir"],
        "user": o["user"],
        "privileged": o["privileged"],
    }
    return container.run_exec(ctx, opts, [found[0].id, *cmd])


def run_config(ctx: Context, g: dict[str, Any], o: dict[str, Any], args: list[str]) -> int:
    from tether.compose import render

    project = _project(g)
    if o["quiet"]:
        return 0
    if o["services"]:
        sys.stdout.write("".join(f"{n}\n" for n in project.services))
        return 0
    if o["networks"]:
        sys.stdout.write("".join(f"{n}\n" for n in project.networks))
        return 0
    if o["format"] == "json":
        import json

        sys.stdout.write(json.dumps(render.model_dict(project), indent=2) + "\n")
        return 0
    if o["format"] not in (None, "", "yaml"):
        raise CliError(f"unsupported format {o['format']!r}: use yaml or json")
    sys.stdout.write(render.to_yaml(project))
    return 0


TIMEOUT = Flag("timeout", "t", kind="int", help="Specify a shutdown timeout in seconds")
SUB: dict[str, Command] = {
    "up": Command(
        "compose up",
        "[OPTIONS] [SERVICE...]",
        "Create and start containers",
        [
            Flag(
                "abort-on-container-exit",
                kind="bool",
                help="Stops all containers if any container was stopped",
            ),
            Flag("build", kind="bool", help="Build images before starting containers"),
            Flag(
                "detach", "d", kind="bool", help="Detached mode: Run containers in the background"
            ),
            Flag(
                "force-recreate",
                kind="bool",
                help="Recreate containers even if their configuration hasn't changed",
            ),
            Flag("no-build", kind="bool", help="Don't build an image, even if it's policy"),
            Flag(
                "no-recreate", kind="bool", help="If containers already exist, don't recreate them"
            ),
            Flag(
                "remove-orphans",
                kind="bool",
                help="Remove containers for services not defined in the Compose file",
            ),
            Flag(
                "scale",
                kind="list",
                metavar="scale",
                help="Scale SERVICE to NUM instances (SERVICE=NUM)",
            ),
            TIMEOUT,
        ],
        handler=run_up,
    ),
    "down": Command(
        "compose down",
        "[OPTIONS]",
        "Stop and remove containers, networks",
        [
            Flag(
                "remove-orphans",
                kind="bool",
                help="Remove containers for services not defined in the Compose file",
            ),
            TIMEOUT,
            Flag(
                "volumes",
                "v",
                kind="bool",
                help='Remove named volumes declared in the "volumes" section of the Compose file',
            ),
        ],
        max_args=0,
        handler=run_down,
    ),
    "ps": Command(
        "compose ps",
        "[OPTIONS] [SERVICE...]",
        "List containers",
        [
            Flag("all", "a", kind="bool", help="Show all stopped containers"),
            Flag(
                "format",
                help="Format output using a custom template: 'table', 'json' or a Go template",
            ),
            Flag("no-trunc", kind="bool", help="Don't truncate output"),
            Flag("quiet", "q", kind="bool", help="Only display IDs"),
            Flag("services", kind="bool", help="Display services"),
        ],
        handler=run_ps,
    ),
    "images": Command(
        "compose images",
        "[OPTIONS] [SERVICE...]",
        "List images used by the created containers",
        [
            Flag(
                "format",
                default="table",
                help='Format the output. Values: [table | json] (default "table")',
            ),
            Flag("quiet", "q", kind="bool", help="Only display IDs"),
        ],
        handler=run_images,
    ),
    "logs": Command(
        "compose logs",
        "[OPTIONS] [SERVICE...]",
        "View output from containers",
        [
            Flag("follow", "f", kind="bool", help="Follow log output"),
            Flag("no-log-prefix", kind="bool", help="Don't print prefix in logs"),
            Flag(
                "tail", "n", default="all", help="Number of lines to show from the end of the logs"
            ),
            Flag("timestamps", "t", kind="bool", help="Show timestamps"),
        ],
        handler=run_logs,
    ),
    "exec": Command(
        "compose exec",
        "[OPTIONS] SERVICE COMMAND [ARGS...]",
        "Execute a command in a running container",
        [
            Flag("detach", "d", kind="bool", help="Detached mode: Run command in the background"),
            Flag("env", "e", kind="list", metavar="stringArray", help="Set environment variables"),
            Flag(
                "index",
                kind="int",
                default=1,
                help="Index of the container if service has multiple replicas",
            ),
            Flag("no-TTY", "T", kind="bool", help="Disable pseudo-TTY allocation"),
            Flag("privileged", kind="bool", help="Give extended privileges to the process"),
            Flag("interactive", "i", kind="bool", default=True, hidden=True),
            Flag("tty", "t", kind="bool", default=True, hidden=True),
            Flag("user", "u", help="Run the command as this user"),
            Flag("workdir", "w", help="Path to workdir directory for this command"),
        ],
        min_args=2,
        interspersed=False,
        handler=run_exec,
    ),
    "config": Command(
        "compose config",
        "[OPTIONS]",
        "Parse, resolve and render compose file in canonical format",
        [
            Flag("format", help="Format the output. Values: [yaml | json]"),
            Flag("networks", kind="bool", help="Print the network names, one per line"),
            Flag(
                "quiet",
                "q",
                kind="bool",
                help="Only validate the configuration, don't print anything",
            ),
            Flag("services", kind="bool", help="Print the service names, one per line"),
        ],
        max_args=0,
        handler=run_config,
    ),
    "stop": Command(
        "compose stop",
        "[OPTIONS] [SERVICE...]",
        "Stop services",
        [TIMEOUT],
        handler=run_stop,
    ),
    "start": Command("compose start", "[SERVICE...]", "Start services", [], handler=run_start),
    "build": Command(
        "compose build",
        "[OPTIONS] [SERVICE...]",
        "Build or rebuild services",
        [
            Flag(
                "build-arg",
                kind="list",
                metavar="stringArray",
                help="Set build-time variables for services",
            ),
            Flag("no-cache", kind="bool", help="Do not use cache when building the image"),
            Flag("pull", kind="bool", help="Always attempt to pull a newer version of the image"),
            Flag("quiet", "q", kind="bool", help="Don't print anything to STDOUT"),
        ],
        handler=run_build,
    ),
    "pull": Command(
        "compose pull",
        "[OPTIONS] [SERVICE...]",
        "Pull service images",
        [
            Flag("ignore-buildable", kind="bool", help="Ignore images that can be built"),
            Flag(
                "ignore-pull-failures",
                kind="bool",
                help="Pull what it can and ignores images with pull failures",
            ),
            Flag("quiet", "q", kind="bool", help="Pull without printing progress information"),
        ],
        handler=run_pull,
    ),
}


def _usage() -> str:
    return usage_text(COMPOSE)


def run_compose(ctx: Context, g: dict[str, Any], args: list[str]) -> int:
    from tether.client import ApiError
    from tether.compose.model import ComposeError

    if not args:
        sys.stdout.write(_usage())
        return 0
    sub = SUB.get(args[0])
    if sub is None:
        raise CliError(
            f"unknown docker command: \"compose {args[0]}\"\nSee 'tether compose --help'"
        )
    try:
        o, rest = parse(sub, args[1:])
    except UsageError as exc:
        return print_usage_error(exc)
    if o["help"]:
        sys.stdout.write(usage_text(sub))
        return 0
    assert sub.handler is not None
    try:
        return int(sub.handler(ctx, g, o, rest))
    except ComposeError as exc:
        raise CliError(str(exc)) from None
    except ApiError as exc:
        raise CliError(f"Error response from daemon: {exc.message}") from None


COMPOSE = Command(
    "compose",
    "[OPTIONS] COMMAND",
    "Define and run multi-container applications",
    [
        Flag(
            "env-file",
            kind="list",
            metavar="stringArray",
            help="Specify an alternate environment file",
        ),
        Flag("file", "f", kind="list", metavar="stringArray", help="Compose configuration files"),
        Flag(
            "project-directory",
            help="Specify an alternate working directory (default: the path of the first Compose file)",
        ),
        Flag("project-name", "p", help="Project name"),
    ],
    interspersed=False,
)


def _main(ctx: Context, g: dict[str, Any], args: list[str]) -> int:
    if g["help"]:
        sys.stdout.write(_usage())
        return 0
    return run_compose(ctx, g, args)


COMPOSE.handler = _main
COMPOSE.epilog = (
    "Commands:\n"
    + "\n".join(f"  {name:<10} {cmd.summary}" for name, cmd in SUB.items())
    + "\n\nRun 'tether compose COMMAND --help' for more information on a command."
)
