"""The tether command: global flags, then one command (group) whose module is imported lazily.

Start-up matters (a user runs dozens of these in a tutorial; scripts run hundreds), so this
module imports nothing heavy, and each command's module is loaded only when it runs.
"""

from __future__ import annotations

import sys

from tether import __version__

# group -> (module, one-line summary); a module exposes COMMANDS {name: Command}.
GROUPS: dict[str, tuple[str, str]] = {
    "network": ("tether.cli.network", "Manage networks"),
    "image": ("tether.cli.image", "Manage images"),
    "builder": ("tether.cli.build", "Manage builds"),
    "container": ("tether.cli.container", "Manage containers"),
    "volume": ("tether.cli.volume", "Manage volumes"),
    "node": ("tether.cli.node", "Manage the nodes of a cluster"),
    "service": ("tether.cli.service", "Manage services of a cluster"),
    "stack": ("tether.cli.stack", "Manage stacks of services"),
}
# top-level command -> (module, attribute, summary)
TOP: dict[str, tuple[str, str, str]] = {
    "run": ("tether.cli.container", "RUN", "Create and run a new container from an image"),
    "exec": ("tether.cli.container", "EXEC", "Execute a command in a running container"),
    "ps": ("tether.cli.container", "PS", "List containers"),
    "create": ("tether.cli.container", "CREATE", "Create a new container"),
    "start": ("tether.cli.container", "START", "Start one or more stopped containers"),
    "stop": ("tether.cli.container", "STOP", "Stop one or more running containers"),
    "restart": ("tether.cli.container", "RESTART", "Restart one or more containers"),
    "kill": ("tether.cli.container", "KILL", "Kill one or more running containers"),
    "rm": ("tether.cli.container", "RM", "Remove one or more containers"),
    "wait": (
        "tether.cli.container",
        "WAIT",
        "Block until one or more containers stop, then print their exit codes",
    ),
    "logs": ("tether.cli.container", "LOGS", "Fetch the logs of a container"),
    "inspect": (
        "tether.cli.container",
        "INSPECT",
        "Return low-level information on tether objects",
    ),
    "port": (
        "tether.cli.container",
        "PORT",
        "List port mappings or a specific mapping for the container",
    ),
    "pause": (
        "tether.cli.container_ops",
        "PAUSE",
        "Pause all processes within one or more containers",
    ),
    "unpause": (
        "tether.cli.container_ops",
        "UNPAUSE",
        "Unpause all processes within one or more containers",
    ),
    "rename": ("tether.cli.container_ops", "RENAME", "Rename a container"),
    "top": (
        "tether.cli.container_ops",
        "TOP",
        "Display the running processes of a container",
    ),
    "update": (
        "tether.cli.container_ops",
        "UPDATE",
        "Update configuration of one or more containers",
    ),
    "attach": (
        "tether.cli.attach",
        "ATTACH",
        "Attach local standard input, output, and error streams to a running container",
    ),
    "cp": (
        "tether.cli.cp",
        "CP",
        "Copy files/folders between a container and the local filesystem",
    ),
    "diff": (
        "tether.cli.container_ops",
        "DIFF",
        "Inspect changes to files or directories on a container's filesystem",
    ),
    "stats": (
        "tether.cli.stats",
        "STATS",
        "Display a live stream of container(s) resource usage statistics",
    ),
    "images": ("tether.cli.image", "LS", "List images"),
    "pull": ("tether.cli.image", "PULL", "Download an image from a registry"),
    "push": ("tether.cli.image", "PUSH", "Upload an image to a registry"),
    "build": ("tether.cli.build", "BUILD", "Build an image from a Dockerfile"),
    "login": ("tether.cli.image", "LOGIN", "Authenticate to a registry"),
    "logout": ("tether.cli.image", "LOGOUT", "Log out from a registry"),
    "tag": ("tether.cli.image", "TAG", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "rmi": ("tether.cli.image", "RMI", "Remove one or more images"),
    "history": ("tether.cli.image", "HISTORY", "Show the history of an image"),
    "save": ("tether.cli.image", "SAVE", "Save one or more images to a tar archive"),
    "load": ("tether.cli.image", "LOAD", "Load an image from a tar archive or STDIN"),
    "import": (
        "tether.cli.image",
        "IMPORT",
        "Import the contents from a tarball to create a filesystem image",
    ),
    "version": ("tether.cli.system", "VERSION", "Show the tether version information"),
    "info": ("tether.cli.system", "INFO", "Display system-wide information"),
    "compose": (
        "tether.cli.compose",
        "COMPOSE",
        "Define and run multi-container applications",
    ),
    "explain": (
        "tether.cli.explain",
        "EXPLAIN",
        "Explain whether one container can reach another, and why",
    ),
    "doctor": (
        "tether.cli.doctor",
        "DOCTOR",
        "Compare what tether wants with what the kernel holds (--repair fixes it)",
    ),
    "debug": (
        "tether.cli.debug",
        "DEBUG",
        "Run a shell with the host's tools in a container's network namespace",
    ),
    "capture": ("tether.cli.capture", "CAPTURE", "Capture packets of a container or a network"),
    "topology": ("tether.cli.topology", "TOPOLOGY", "Draw the networks and their containers"),
    "ui": ("tether.cli.ui", "UI", "Serve a live picture of the networks on 127.0.0.1"),
}

USAGE = """
Usage:  tether [OPTIONS] COMMAND

Docker's container networking on the real Linux kernel

Options:
  -D, --debug          Enable debug mode
  -H, --host string    Daemon socket to connect to (unix:///run/tether/tether.sock)
  -v, --version        Print version information and quit

Commands:
{top}
Management Commands:
{groups}
Run 'tether COMMAND --help' for more information on a command.
"""


def _usage() -> str:
    top = "".join(f"  {k:<10} {v[2]}\n" for k, v in TOP.items())
    groups = "".join(f"  {k:<10} {v[1]}\n" for k, v in GROUPS.items())
    return USAGE.format(top=top, groups=groups)


def _group_usage(group: str, commands: dict[str, object]) -> str:
    summary = GROUPS[group][1]
    seen: list[str] = []
    lines = []
    for name, cmd in commands.items():
        if cmd in seen:
            continue
        seen.append(cmd)  # type: ignore[arg-type]
        lines.append(f"  {name:<11} {cmd.summary}")  # type: ignore[attr-defined]
    return (
        f"\nUsage:  tether {group} COMMAND\n\n{summary}\n\nCommands:\n"
        + "\n".join(lines)
        + f"\n\nRun 'tether {group} COMMAND --help' for more information on a command.\n"
    )


def main(argv: list[str] | None = None, fast: bool = True) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if fast:
        # The everyday plain forms (ps, network ls, ...) without this module's machinery;
        # None for everything else (tether/cli/fast.py).
        from tether.cli.fast import attempt

        code = attempt(argv)
        if code is not None:
            return code
    host: str | None = None
    debug = False
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        if a in ("-v", "--version"):
            print(f"tether version {__version__}")
            return 0
        if a in ("-h", "--help"):
            sys.stdout.write(_usage())
            return 0
        if a in ("-D", "--debug"):
            debug = True
        elif a in ("-H", "--host"):
            if i + 1 >= len(argv):
                sys.stderr.write("flag needs an argument: 'H' in -H\nSee 'tether --help'.\n")
                return 125
            host = argv[i + 1]
            i += 1
        elif a.startswith("--host="):
            host = a.split("=", 1)[1]
        elif a.startswith("-H") and len(a) > 2:
            host = a[2:]
        else:
            sys.stderr.write(f"unknown flag: {a}\nSee 'tether --help'.\n")
            return 125
        i += 1
    rest = argv[i:]
    if not rest:
        sys.stdout.write(_usage())
        return 0
    name, rest = rest[0], rest[1:]

    import importlib

    if name in GROUPS:
        module = importlib.import_module(GROUPS[name][0])
        commands = module.COMMANDS
        if not rest or rest[0] in ("-h", "--help"):
            sys.stdout.write(_group_usage(name, commands))
            return 0
        cmd = commands.get(rest[0])
        if cmd is None:
            sys.stderr.write(
                f"tether: '{name} {rest[0]}' is not a tether command.\nSee 'tether {name} --help'\n"
            )
            return 1
        return _run(cmd, rest[1:], host, debug)
    if name in TOP:
        module_name, attr, _ = TOP[name]
        module = importlib.import_module(module_name)
        return _run(getattr(module, attr), rest, host, debug)
    sys.stderr.write(f"tether: '{name}' is not a tether command.\nSee 'tether --help'\n")
    return 1


def _run(cmd: object, argv: list[str], host: str | None, debug: bool) -> int:
    from tether.cli.context import CliError, Context
    from tether.cli.flags import Command, UsageError, parse, print_usage_error, usage_text
    from tether.client import ConnectionLost

    assert isinstance(cmd, Command) and cmd.handler is not None
    try:
        opts, args = parse(cmd, argv)
    except UsageError as exc:
        return print_usage_error(exc)
    if opts["help"]:
        sys.stdout.write(usage_text(cmd))
        return 0
    try:
        ctx = Context(host, debug)
        return int(cmd.handler(ctx, opts, args))
    except CliError as exc:
        if exc.message:
            sys.stderr.write(exc.message + "\n")
        return exc.code
    except UsageError as exc:
        return print_usage_error(exc)
    except ConnectionLost as exc:
        # The daemon went away mid-request: one line, as docker's "error during connect".
        sys.stderr.write(exc.message + "\n")
        return 1
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
