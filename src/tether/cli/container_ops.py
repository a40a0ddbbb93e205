"""tether pause|unpause|rename|top|update|diff: docker's flags and output on routes tetherd
already serves (the docker CLI used them first)."""

from __future__ import annotations

import sys

from tether.cli.context import CliError, Context
from tether.cli.flags import Command, Flag
from tether.cli.output import for_each_name
from tether.client import ApiError, quote

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def _each(ctx: Context, names: list[str], action: str) -> int:
    return for_each_name(
        names, lambda name: ctx.call("POST", f"/containers/{quote(name)}/{action}")
    )


def run_pause(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    return _each(ctx, args, "pause")


def run_unpause(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    return _each(ctx, args, "unpause")


def run_rename(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    old, new = args[0].strip(), args[1].strip()
    if not old or not new:
        raise CliError("Error: Neither old nor new names may be empty")
    try:
        ctx.call("POST", f"/containers/{quote(old)}/rename", query={"name": new})
    except ApiError as exc:
        sys.stderr.write(f"Error response from daemon: {exc.message}\n")
        raise CliError(f"Error: failed to rename container named {old}") from None
    return 0


def run_top(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.output import tabwrite

    query = {"ps_args": " ".join(args[1:])} if len(args) > 1 else None
    try:
        top = ctx.call("GET", f"/containers/{quote(args[0])}/top", query=query)
    except ApiError as exc:
        raise CliError(f"Error response from daemon: {exc.message}") from None
    # docker: tabwriter.NewWriter(out, 20, 1, 3, ' ', 0)
    sys.stdout.write(tabwrite([top["Titles"], *top["Processes"]], minwidth=20))
    return 0


def run_update(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.mounts import parse_restart

    if not o["restart"]:
        raise CliError("you must provide one or more flags when using this command")
    try:
        policy = parse_restart(o["restart"])
    except ValueError as exc:
        raise CliError(str(exc)) from None

    def update(name: str) -> None:
        resp = ctx.call("POST", f"/containers/{quote(name)}/update", body={"RestartPolicy": policy})
        for warning in (resp or {}).get("Warnings") or []:
            sys.stderr.write(f"{warning}\n")

    return for_each_name(args, update)


def run_diff(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    try:
        changes = ctx.call("GET", f"/containers/{quote(args[0])}/changes")
    except ApiError as exc:
        raise CliError(f"Error response from daemon: {exc.message}") from None
    # docker's container.ChangeType: 0 modified, 1 added, 2 deleted.
    kinds = {0: "C", 1: "A", 2: "D"}
    sys.stdout.write(
        "".join(f"{kinds.get(ch.get('Kind'), '?')} {ch.get('Path')}\n" for ch in changes or [])
    )
    return 0


PAUSE = Command(
    "pause",
    "CONTAINER [CONTAINER...]",
    "Pause all processes within one or more containers",
    [],
    min_args=1,
    handler=run_pause,
)
UNPAUSE = Command(
    "unpause",
    "CONTAINER [CONTAINER...]",
    "Unpause all processes within one or more containers",
    [],
    min_args=1,
    handler=run_unpause,
)
RENAME = Command(
    "rename",
    "CONTAINER NEW_NAME",
    "Rename a container",
    [],
    min_args=2,
    max_args=2,
    handler=run_rename,
)
TOP = Command(
    "top",
    "CONTAINER [ps OPTIONS]",
    "Display the running processes of a container",
    [],
    min_args=1,
    interspersed=False,
    handler=run_top,
)
UPDATE = Command(
    "update",
    "[OPTIONS] CONTAINER [CONTAINER...]",
    "Update configuration of one or more containers",
    [Flag("restart", help="Restart policy to apply when a container exits")],
    min_args=1,
    handler=run_update,
)
DIFF = Command(
    "diff",
    "CONTAINER",
    "Inspect changes to files or directories on a container's filesystem",
    [],
    min_args=1,
    max_args=1,
    handler=run_diff,
)
