"""tether node ls|inspect: the nodes of the cluster this daemon belongs to."""

from __future__ import annotations

import sys

from tether.cli.context import Context, api_error
from tether.cli.flags import Command, Flag
from tether.cli.output import inspect_each, render_table_template
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

LS_HEADERS = {
    "ID": "ID",
    "Hostname": "HOSTNAME",
    "Status": "STATUS",
    "Availability": "AVAILABILITY",
    "ManagerStatus": "MANAGER STATUS",
    "EngineVersion": "ENGINE VERSION",
    "Address": "ADDRESS",
}


def manager_status(n: dict[str, Any]) -> str:
    """docker node ls's MANAGER STATUS: Leader, Reachable, Unreachable."""
    ms = n.get("ManagerStatus") or {}
    if ms.get("Leader"):
        return "Leader"
    return str(ms.get("Reachability") or "").capitalize()


def run_ls(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    try:
        nodes = ctx.call("GET", "/nodes")
    except ApiError as exc:
        raise api_error(exc) from None
    rows = [
        {
            "ID": n["ID"] + (" *" if n.get("Self") else ""),
            "Hostname": n["Description"]["Hostname"],
            "Status": n["Status"]["State"].capitalize(),
            "Availability": n["Spec"]["Availability"].capitalize(),
            "ManagerStatus": manager_status(n),
            "EngineVersion": n["Description"]["Engine"]["EngineVersion"],
            "Address": n["Status"]["Addr"],
        }
        for n in nodes
    ]
    if o["quiet"]:
        sys.stdout.write("".join(n["ID"] + "\n" for n in nodes))
        return 0
    fmt = o["format"] or (
        "table {{.ID}}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}"
        "\t{{.EngineVersion}}\t{{.Address}}"
    )
    sys.stdout.write(render_table_template(fmt, rows, LS_HEADERS))
    return 0


def run_inspect(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    # No json alias here: docker's node inspect takes --format json as a template.
    inspect_each(o["format"] or "", args, lambda name: ctx.call("GET", f"/nodes/{name}"))
    return 0


LS = Command(
    "node ls",
    "[OPTIONS]",
    "List nodes in the cluster",
    [
        Flag("format", help="Format output using a custom template"),
        Flag("quiet", "q", kind="bool", help="Only display IDs"),
    ],
    max_args=0,
    handler=run_ls,
)

INSPECT = Command(
    "node inspect",
    "[OPTIONS] self|NODE [NODE...]",
    "Display detailed information on one or more nodes",
    [Flag("format", "f", help="Format output using a custom template")],
    min_args=1,
    handler=run_inspect,
)

COMMANDS = {"ls": LS, "list": LS, "inspect": INSPECT}
