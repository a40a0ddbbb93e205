"""tether explain A B [PORT[/PROTO]]: may A reach B, and why (the daemon answers)."""

from __future__ import annotations

import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def render(resp: dict[str, Any]) -> str:
    """The answer for people: one verdict line, then the numbered reasons with their fix."""
    src, dst, port = resp.get("From", ""), resp.get("To", ""), resp.get("Port", "")
    what = f"{dst} on {port}" if port else dst
    target = resp.get("Target") or ""
    at = f" ({target})" if target and target not in (dst, f"{dst}:{port}") else ""
    if resp.get("Reachable"):
        line = f"{src} reaches {what}{at}"
        if not resp.get("ByName", True):
            line += ", by address only: the name does not resolve"
    else:
        line = f"{src} cannot reach {what}{at}"
    out = [("REACHABLE: " if resp.get("Reachable") else "NOT REACHABLE: ") + line]
    if resp.get("Contradiction"):
        out.append(
            "!!! the probe CONTRADICTS the static verdict (see the last reason): tether's "
            "picture of this path is wrong"
        )
    out.append("")
    for i, r in enumerate(resp.get("Reasons") or [], 1):
        mark = "ok" if r.get("Ok") else "NO"
        out.append(f"{i:2d}. [{mark}] {r.get('Step', '')}: {r.get('Text', '')}")
        if r.get("Object"):
            out.append(f"          at: {r['Object']}")
        if r.get("Fix"):
            out.append(f"         fix: {r['Fix']}")
    return "\n".join(out) + "\n"


def run_explain(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    if len(args) > 3:
        from tether.cli.flags import UsageError

        raise UsageError('"tether explain" requires at most 3 arguments.', EXPLAIN, True)
    body = {
        "From": args[0],
        "To": args[1],
        "Port": args[2] if len(args) > 2 else "",
        "Probe": bool(o["probe"]),
    }
    fmt = o["format"] or ""
    if fmt not in ("", "json"):
        raise CliError(f'invalid --format "{fmt}": explain knows "json"')
    try:
        resp = ctx.call("POST", "/tether/explain", body=body)
    except ApiError as exc:
        raise api_error(exc) from None
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(resp, indent=2) + "\n")
    else:
        sys.stdout.write(render(resp))
    return 0 if resp.get("Reachable") else 1


EXPLAIN = Command(
    "explain",
    "[OPTIONS] FROM TO [PORT[/PROTO]]",
    "Explain whether FROM can reach TO (containers, services, host, or addresses), and why",
    [
        Flag("probe", kind="bool", help="Also send one real packet from FROM's namespace"),
        Flag("format", "f", help='Output format: "json" (the API\'s answer as it is)'),
    ],
    min_args=2,  # and at most 3: checked in run_explain, so that too few says "at least"
    handler=run_explain,
)
