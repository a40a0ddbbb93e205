"""tether volume create|ls|inspect|rm|prune: docker's flags and output, on tetherd's /volumes."""

from __future__ import annotations

import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.cli.output import (
    for_each_name,
    human_size,
    inspect_each,
    parse_filters,
    print_listing,
)
from tether.cli.views import VOLUME_DEFAULT, VOLUME_HEADERS, volume_rows
from tether.client import ApiError
from tether.textcheck import check_label_arg

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def _q(text: str) -> str:
    from tether.client import quote

    return quote(text)


def _map(values: list[str]) -> dict[str, str]:
    return dict(v.partition("=")[::2] for v in values)


def run_create(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    if o["name"] and args:
        raise CliError(
            "Conflicting options: either specify --name or provide positional arg, not both"
        )
    body = {
        "Name": args[0] if args else o["name"] or "",
        "Driver": o["driver"],
        "DriverOpts": _map(o["opt"]),
        "Labels": _map(o["label"]),
    }
    try:
        vol = ctx.call("POST", "/volumes/create", body=body)
    except ApiError as exc:
        raise api_error(exc) from None
    print(vol["Name"])
    return 0


def run_ls(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    filters = parse_filters(o["filter"])
    try:
        resp = ctx.call("GET", "/volumes", query={"filters": filters} if filters else None)
    except ApiError as exc:
        raise api_error(exc) from None
    print_listing(o, volume_rows(resp), VOLUME_HEADERS, VOLUME_DEFAULT, "Name")
    return 0


def run_inspect(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    fmt = o["format"] or ""
    inspect_each(
        "" if fmt == "json" else fmt, args, lambda name: ctx.call("GET", f"/volumes/{_q(name)}")
    )
    return 0


def run_rm(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    query = {"force": "1"} if o["force"] else None
    return for_each_name(args, lambda name: ctx.call("DELETE", f"/volumes/{_q(name)}", query=query))


def run_prune(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    filters = parse_filters(o["filter"])
    if o["all"]:
        if "all" in filters:
            raise CliError("conflicting options: cannot specify both --all and --filter all=1")
        filters["all"] = ["true"]
    if not o["force"]:
        what = "all local volumes" if o["all"] else "anonymous local volumes"
        sys.stdout.write(
            f"WARNING! This will remove {what} not used by at least one container.\n"
            "Are you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    try:
        # As docker's CLI: API 1.42+, where prune takes anonymous volumes unless all=true.
        report = ctx.call(
            "POST", "/v1.47/volumes/prune", query={"filters": filters} if filters else None
        )
    except ApiError as exc:
        raise api_error(exc) from None
    deleted = report.get("VolumesDeleted") or []
    if deleted:
        sys.stdout.write("Deleted Volumes:\n" + "".join(n + "\n" for n in deleted) + "\n")
    print(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}")
    return 0


CREATE = Command(
    "volume create",
    "[OPTIONS] [VOLUME]",
    "Create a volume",
    [
        Flag("driver", "d", default="local", help='Specify volume driver name (default "local")'),
        Flag(
            "label",
            kind="list",
            metavar="list",
            help="Set metadata for a volume",
            check=check_label_arg,
        ),
        Flag("name", hidden=True, help="Specify volume name"),
        Flag("opt", "o", kind="list", metavar="map", help="Set driver specific options"),
    ],
    max_args=1,
    handler=run_create,
)

LS = Command(
    "volume ls",
    "[OPTIONS]",
    "List volumes",
    [
        Flag(
            "filter",
            "f",
            kind="list",
            metavar="filter",
            help="Provide filter values (e.g. 'dangling=true')",
        ),
        Flag("format", help="Format output using a custom template"),
        Flag("quiet", "q", kind="bool", help="Only display volume names"),
    ],
    max_args=0,
    handler=run_ls,
)

INSPECT = Command(
    "volume inspect",
    "[OPTIONS] VOLUME [VOLUME...]",
    "Display detailed information on one or more volumes",
    [Flag("format", "f", help="Format output using a custom template")],
    min_args=1,
    handler=run_inspect,
)

RM = Command(
    "volume rm",
    "[OPTIONS] VOLUME [VOLUME...]",
    "Remove one or more volumes",
    [Flag("force", "f", kind="bool", help="Force the removal of one or more volumes")],
    min_args=1,
    handler=run_rm,
)

PRUNE = Command(
    "volume prune",
    "[OPTIONS]",
    "Remove unused local volumes",
    [
        Flag("all", "a", kind="bool", help="Remove all unused volumes, not just anonymous ones"),
        Flag(
            "filter",
            kind="list",
            metavar="filter",
            help="Provide filter values (e.g. 'label=<label>')",
        ),
        Flag("force", "f", kind="bool", help="Do not prompt for confirmation"),
    ],
    max_args=0,
    handler=run_prune,
)

COMMANDS = {
    "create": CREATE,
    "ls": LS,
    "list": LS,
    "inspect": INSPECT,
    "rm": RM,
    "remove": RM,
    "prune": PRUNE,
}
