"""tether version | info."""

from __future__ import annotations

import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.cli.views import client_info, version_format, version_text
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def run_version(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    client = client_info()
    server: dict[str, Any] | None = None
    error: str | None = None
    try:
        server = ctx.call("GET", "/version")
    except ApiError as exc:
        error = api_error(exc).message
    except CliError as exc:
        error = exc.message
    if o["format"]:
        sys.stdout.write(version_format(o["format"], client, server) + "\n")
        return 0 if error is None else 1
    sys.stdout.write(version_text(client, server))
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
    sys.stdout.write(info_text(info))
    return 0


def _bytes(n: Any) -> str:
    """go-units' BytesSize: binary units, four significant digits (3.842GiB)."""
    size = float(n or 0)
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.4g}{units[i]}"


def info_text(info: dict[str, Any]) -> str:
    """`docker info`'s Server section, from the same /info document."""
    g = info.get
    swarm = g("Swarm") or {}
    plugins = g("Plugins") or {}
    security = [str(x) for x in g("SecurityOptions") or []]
    lines = [
        "Server:",
        f" Containers: {g('Containers', 0)}",
        f"  Running: {g('ContainersRunning', 0)}",
        f"  Paused: {g('ContainersPaused', 0)}",
        f"  Stopped: {g('ContainersStopped', 0)}",
        f" Images: {g('Images', 0)}",
        f" Server Version: {g('ServerVersion', '')}",
        f" Storage Driver: {g('Driver', '')}",
        f" Logging Driver: {g('LoggingDriver', '')}",
        f" Cgroup Driver: {g('CgroupDriver', '')}",
        f" Cgroup Version: {g('CgroupVersion', '')}",
        " Plugins:",
        *(
            f"  {kind}: {' '.join(plugins.get(kind) or [])}"
            for kind in ("Volume", "Network", "Log")
        ),
        f" Swarm: {swarm.get('LocalNodeState', 'inactive')}",
        f" Runtimes: {' '.join(sorted(g('Runtimes') or {}))}",
        f" Default Runtime: {g('DefaultRuntime', '')}",
        " Security Options:",
        *(f"  {opt.split(',')[0].removeprefix('name=')}" for opt in security),
        f" Kernel Version: {g('KernelVersion', '')}",
        f" Operating System: {g('OperatingSystem', '')}",
        f" OSType: {g('OSType', '')}",
        f" Architecture: {g('Architecture', '')}",
        f" CPUs: {g('NCPU', 0)}",
        f" Total Memory: {_bytes(g('MemTotal'))}",
        f" Name: {g('Name', '')}",
        f" ID: {g('ID', '')}",
        f" Docker Root Dir: {g('DockerRootDir', '')}",
        f" Debug Mode: {str(bool(g('Debug'))).lower()}",
        f" Experimental: {str(bool(g('ExperimentalBuild'))).lower()}",
        " Insecure Registries:",
        *(f"  {cidr}" for cidr in (g("RegistryConfig") or {}).get("InsecureRegistryCIDRs") or []),
        f" Live Restore Enabled: {str(bool(g('LiveRestoreEnabled'))).lower()}",
    ]
    warnings = [str(w) for w in g("Warnings") or []]
    return "\n".join(lines) + "\n" + "".join(f"{w}\n" for w in warnings)


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
