"""tether topology [-o FILE.svg|.png|.dot] [--format json]: the networks drawn with Graphviz.

The daemon gives the model (GET /tether/topology); topology/dot.py turns it into a graph;
Graphviz's `dot` lays it out.  Without -o the DOT text goes to stdout (pipe it into `dot`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}


def fetch(ctx: Context) -> dict[str, Any]:
    try:
        topo: dict[str, Any] = ctx.call("GET", "/tether/topology")
    except ApiError as exc:
        raise api_error(exc) from None
    return topo


def render_file(dot_text: str, fmt: str, path: str) -> None:
    """Lay `dot_text` out into `path` (svg or png) with Graphviz, or write it as is (dot)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        if fmt == "dot":
            with open(tmp, "w") as f:
                f.write(dot_text)
        else:
            dot = shutil.which("dot")
            if dot is None:
                raise CliError(
                    "tether: Graphviz is not installed (apt-get install graphviz); "
                    "-o FILE.dot writes the graph without it"
                )
            r = subprocess.run(
                [dot, f"-T{fmt}", "-o", tmp], input=dot_text.encode(), capture_output=True
            )
            if r.returncode != 0:
                raise CliError(f"tether: dot failed: {r.stderr.decode(errors='replace').strip()}")
        os.replace(tmp, path)
    except OSError as exc:
        raise CliError(f"tether: cannot write {path}: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def svg(dot_text: str) -> bytes:
    """The graph as SVG (for the live page)."""
    dot = shutil.which("dot")
    if dot is None:
        raise CliError("tether: Graphviz is not installed (apt-get install graphviz)")
    r = subprocess.run([dot, "-Tsvg"], input=dot_text.encode(), capture_output=True, timeout=60)
    if r.returncode != 0:
        raise CliError(f"tether: dot failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def run(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.topology.dot import render

    out = o["output"] or ""
    fmt = ""
    if out:
        fmt = FORMATS.get(os.path.splitext(out)[1].lower(), "")
        if not fmt:
            raise CliError(
                f"tether: unsupported output format {os.path.splitext(out)[1] or out!r}: "
                "use FILE.svg, FILE.png or FILE.dot\nSee 'tether topology --help'.",
                125,
            )
    if (o["format"] or "") not in ("", "json", "dot"):
        raise CliError(
            f"tether: unsupported --format {o['format']!r}: use json or dot\n"
            "See 'tether topology --help'.",
            125,
        )
    topo = fetch(ctx)
    if o["format"] == "json":
        from tether.cli.output import print_json

        print_json(topo)
        return 0
    dot_text = render(topo)
    if not out:
        sys.stdout.write(dot_text)
        return 0
    render_file(dot_text, fmt, out)
    nets, ctrs = len(topo["Networks"]), len(topo["Containers"])
    sys.stderr.write(f"wrote {out}: {nets} networks, {ctrs} containers\n")
    return 0


TOPOLOGY = Command(
    "topology",
    "[OPTIONS]",
    "Draw the networks, containers, ports and services (Graphviz)",
    [
        Flag("output", "o", help="Write the picture to FILE.svg, FILE.png or FILE.dot"),
        Flag("format", help="Print the model as json, or the graph as dot (the default)"),
    ],
    max_args=0,
    handler=run,
)
