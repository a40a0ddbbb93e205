"""tether version | info."""

from __future__ import annotations

import os
import platform
import sys

from tether import API_VERSION, __version__
from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def _client_info() -> dict[str, Any]:
    machine = os.uname().machine
    return {
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "PythonVersion": platform.python_version(),
        "Os": "linux",
        "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine),
    }


def run_version(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    client = _client_info()
    server: dict[str, Any] | None = None
    error: str | None = None
    try:
        server = ctx.call("GET", "/version")
    except ApiError as exc:
        error = api_error(exc).message
    except CliError as exc:
        error = exc.message
    if o["format"]:
        from tether.cli.gotemplate import Template

        sys.stdout.write(Template(o["format"]).render({"Client": client, "Server": server}) + "\n")
        return 0 if error is None else 1
    out = [
        "Client:",
        f" Version:           {client['Version']}",
        f" API version:       {client['ApiVersion']}",
        f" Python version:    {client['PythonVersion']}",
        f" OS/Arch:           {client['Os']}/{client['Arch']}",
        "",
    ]
    if server is not None:
        out += [
            "Server: tether",
            " Engine:",
            f"  Version:          {server['Version']}",
            f"  API version:      {server['ApiVersion']} (minimum version {server['MinAPIVersion']})",
            f"  Python version:   {server['GoVersion'].removeprefix('python')}",
            f"  OS/Arch:          {server['Os']}/{server['Arch']}",
            f"  Kernel version:   {server['KernelVersion']}",
        ]
    sys.stdout.write("\n".join(out) + "\n")
    if error:
        raise CliError(error)
    return 0


def run_info(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    try:
        info = ctx.call("GET", "/info")
    except ApiError as exc:
        raise api_error(exc) from None
    if o["format"]:
        from tether.cli.gotemplate import Template

        sys.stdout.write(Template(o["format"]).render(info) + "\n")
        return 0
    for k in sorted(info):
        sys.stdout.write(f"{k}: {info[k]}\n")
    return 0


VERSION = Command(
    "version",
    "[OPTIONS]",
    "Show the tether version information",
    [Flag("format", "f", help="Format output using a custom template")],
    max_args=0,
    handler=run_version,
)
INFO = Command(
    "info",
    "[OPTIONS]",
    "Display system-wide information",
    [Flag("format", "f", help="Format output using a custom template")],
    max_args=0,
    handler=run_info,
)
