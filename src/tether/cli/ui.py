"""tether ui [--port N]: the topology as a live page on 127.0.0.1 (tether/ui/server.py)."""

from __future__ import annotations

import sys

from tether.cli.context import CliError, Context
from tether.cli.flags import Command, Flag

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def run(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    import asyncio
    import shutil

    port = o["port"] or 0
    if not 0 <= port < 65536:
        raise CliError(f"tether: invalid port {port}\nSee 'tether ui --help'.", 125)
    if shutil.which("dot") is None:
        raise CliError("tether: Graphviz is not installed (apt-get install graphviz)")
    ctx.call("GET", "/_ping")  # starts the default daemon if none answers, as other commands

    from tether.ui.server import DaemonError, serve

    def ready(ui: Any) -> None:
        sys.stdout.write(f"tether ui: open {ui.url}\n(only this machine can; Ctrl-C stops it)\n")
        sys.stdout.flush()

    try:
        asyncio.run(serve(ctx.socket_path, port, ready))
    except KeyboardInterrupt:
        return 0
    except DaemonError as exc:
        raise CliError(f"Error response from daemon: {exc.message}") from None
    except OSError as exc:
        raise CliError(
            f"tether: cannot serve the page on 127.0.0.1:{port}: {exc.strerror}"
        ) from None
    return 0


UI = Command(
    "ui",
    "[OPTIONS]",
    "Serve a live picture of the networks on 127.0.0.1 (a token in the URL it prints)",
    [Flag("port", "p", kind="int", help="Port on 127.0.0.1 (default: a free one)")],
    max_args=0,
    handler=run,
)
