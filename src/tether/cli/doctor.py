"""tether doctor [--repair]: what differs between what tether wants and what the kernel holds."""

from __future__ import annotations

import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def _problems(problems: list[dict[str, Any]]) -> str:
    out = []
    for i, p in enumerate(problems, 1):
        out.append(f"{i:3d}. [{p.get('Kind', '')}] {p.get('Object', '')}: {p.get('Text', '')}")
        if p.get("Repair"):
            out.append(f"       --repair: {p['Repair']}")
    return "".join(line + "\n" for line in out)


def _checked(resp: dict[str, Any]) -> str:
    c = resp.get("Checked") or {}
    parts = [
        f"{c.get('Networks', 0)} network(s)",
        f"{c.get('Sandboxes', 0)} sandbox(es)",
        "the nftables table",
        "the embedded DNS",
    ]
    if c.get("OverlayNetworks"):
        parts.append(f"{c['OverlayNetworks']} overlay FDB(s)")
    if c.get("Cluster"):
        parts.append("the cluster store")
    return f"checked {', '.join(parts)} in {resp.get('Seconds', 0):.2f} s"


def run_doctor(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    fmt = o["format"] or ""
    if fmt not in ("", "json"):
        raise CliError(f'invalid --format "{fmt}": doctor knows "json"')
    try:
        if o["repair"]:
            resp = ctx.call("POST", "/tether/doctor", query={"repair": "1"})
        else:
            resp = ctx.call("GET", "/tether/doctor")
    except ApiError as exc:
        raise api_error(exc) from None
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(resp, indent=2) + "\n")
        return 1 if resp.get("Problems") else 0
    out = sys.stdout
    if o["repair"]:
        found = resp.get("Found") or []
        if not found:
            out.write("nothing to repair: the kernel holds what tether wants\n")
        else:
            out.write(f"found {len(found)} problem(s):\n{_problems(found)}\nrepaired:\n")
            out.write("".join(f"  - {r}\n" for r in resp.get("Repaired") or []))
            out.write("\nafter the repair: ")
    problems = resp.get("Problems") or []
    if problems:
        out.write(f"{len(problems)} problem(s):\n{_problems(problems)}")
        if not o["repair"] and any(p.get("Repair") for p in problems):
            out.write("run `tether doctor --repair` to fix what can be fixed\n")
    else:
        out.write("no problems: the kernel and the cluster hold what tether wants\n")
    out.write(_checked(resp) + "\n")
    return 1 if problems else 0


DOCTOR = Command(
    "doctor",
    "[OPTIONS]",
    "Compare what tether wants with what the kernel and the cluster hold",
    [
        Flag("repair", kind="bool", help="Fix what doctor finds, then check again"),
        Flag("format", "f", help='Output format: "json" (the API\'s answer as it is)'),
    ],
    max_args=0,
    handler=run_doctor,
)
