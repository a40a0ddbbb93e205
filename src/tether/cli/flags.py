"""Command-line flags the way docker (cobra + pflag) parses them.

--name=value, --name value, -n value, -nvalue, -abc (booleans), --bool=false, `--` ends
flags; docker's error texts.  Kept free of argparse and re: the CLI must start in a few
milliseconds, and both modules cost more to import than this whole file.
"""

from __future__ import annotations

import sys

from tether.textcheck import go_quote

# Annotation-only imports: `typing` alone costs ~18 ms of start-up.  mypy is configured to
# treat TYPE_CHECKING as true (always_true in pyproject.toml).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


PROG = "tether"


class UsageError(Exception):
    """A command-line mistake: message, then "See 'tether X --help'."."""

    def __init__(
        self, message: str, command: Command | None = None, show_usage: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command = command
        self.show_usage = show_usage


class Flag:
    def __init__(
        self,
        long: str,
        short: str = "",
        kind: str = "str",  # str | bool | list | int
        default: Any = None,
        help: str = "",
        metavar: str = "",
        hidden: bool = False,
        check: Callable[[str], str] | None = None,
    ) -> None:
        self.long = long
        self.short = short
        self.kind = kind
        self.default = default
        self.help = help
        self.metavar = metavar
        self.hidden = hidden
        # Docker's per-flag validator (pflag Value.Set): the value, normalized, or ValueError.
        self.check = check

    @property
    def shown(self) -> str:
        """The flag as pflag names it in an error: "-h, --hostname" or "--dns"."""
        return f"-{self.short}, --{self.long}" if self.short else f"--{self.long}"

    @property
    def dest(self) -> str:
        return self.long.replace("-", "_")

    def initial(self) -> Any:
        if self.kind == "list":
            return list(self.default or [])
        if self.kind == "bool":
            return bool(self.default)
        return self.default


class Command:
    def __init__(
        self,
        path: str,  # "network create"
        usage: str,  # "[OPTIONS] NETWORK"
        summary: str,
        flags: list[Flag] | None = None,
        min_args: int = 0,
        max_args: int | None = None,
        interspersed: bool = True,
        handler: Callable[..., int] | None = None,
        aliases: tuple[str, ...] = (),
        epilog: str = "",
    ) -> None:
        self.path = path
        self.usage = usage
        self.summary = summary
        self.flags = flags or []
        self.min_args = min_args
        self.max_args = max_args
        self.interspersed = interspersed
        self.handler = handler
        self.aliases = aliases
        self.epilog = epilog  # e.g. a group's list of subcommands

    def arg_error(self, got: int) -> UsageError:
        if self.max_args == self.min_args:
            want = f"exactly {self.min_args} argument" + ("s" if self.min_args != 1 else "")
        elif self.max_args is None:
            want = f"at least {self.min_args} argument" + ("s" if self.min_args != 1 else "")
        else:
            want = f"at most {self.max_args} argument" + ("s" if self.max_args != 1 else "")
        return UsageError(f'"{PROG} {self.path}" requires {want}.', self, show_usage=True)


HELP = Flag("help", kind="bool", help="Print usage")


def parse(cmd: Command, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    flags = [*cmd.flags, HELP]
    by_long = {f.long: f for f in flags}
    by_short = {f.short: f for f in flags if f.short}
    opts: dict[str, Any] = {f.dest: f.initial() for f in flags}
    args: list[str] = []

    def store(f: Flag, value: str, shown: str) -> None:
        if f.check is not None:
            try:
                value = f.check(value)
            except ValueError as exc:
                raise UsageError(
                    f"invalid argument {go_quote(value)} for {go_quote(f.shown)} flag: {exc}",
                    cmd,
                ) from None
        if f.kind == "bool":
            low = value.lower()
            if low in ("1", "t", "true"):
                opts[f.dest] = True
            elif low in ("0", "f", "false"):
                opts[f.dest] = False
            else:
                raise UsageError(
                    f'invalid argument "{value}" for "{shown}" flag: strconv.ParseBool: parsing "{value}": invalid syntax',
                    cmd,
                )
        elif f.kind == "list":
            opts[f.dest].append(value)
        elif f.kind == "int":
            try:
                opts[f.dest] = int(value)
            except ValueError:
                raise UsageError(
                    f'invalid argument "{value}" for "{shown}" flag: strconv.ParseInt: parsing "{value}": invalid syntax',
                    cmd,
                ) from None
        else:
            opts[f.dest] = value

    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            args.extend(argv[i:])
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            f = by_long.get(name)
            if f is None:
                raise UsageError(f"unknown flag: --{name}", cmd)
            if f.kind == "bool":
                store(f, value if eq else "true", f"--{name}")
            elif eq:
                store(f, value, f"--{name}")
            elif i < len(argv):
                store(f, argv[i], f"--{name}")
                i += 1
            else:
                raise UsageError(f"flag needs an argument: --{name}", cmd)
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                c = a[j]
                f = by_short.get(c)
                if f is None:
                    raise UsageError(f"unknown shorthand flag: '{c}' in {a}", cmd)
                rest = a[j + 1 :]
                if f.kind == "bool":
                    if rest.startswith("="):
                        store(f, rest[1:], f"-{c}")
                        break
                    store(f, "true", f"-{c}")
                    j += 1
                    continue
                if rest:
                    store(f, rest[1:] if rest.startswith("=") else rest, f"-{c}")
                elif i < len(argv):
                    store(f, argv[i], f"-{c}")
                    i += 1
                else:
                    raise UsageError(f"flag needs an argument: '{c}' in -{c}", cmd)
                break
        else:
            args.append(a)
            if not cmd.interspersed:
                args.extend(argv[i:])
                break
    if opts["help"]:
        return opts, args
    if len(args) < cmd.min_args or (cmd.max_args is not None and len(args) > cmd.max_args):
        raise cmd.arg_error(len(args))
    return opts, args


def usage_text(cmd: Command) -> str:
    lines = ["", f"Usage:  {PROG} {cmd.path} {cmd.usage}".rstrip(), "", cmd.summary]
    if cmd.aliases:
        lines += ["", "Aliases:", "  " + ", ".join(f"{PROG} {a}" for a in cmd.aliases)]
    shown = [f for f in [*cmd.flags] if not f.hidden]
    if shown:
        lines += ["", "Options:"]
        rows = []
        for f in shown:
            left = f"  -{f.short}, --{f.long}" if f.short else f"      --{f.long}"
            if f.kind != "bool":
                left += " " + (f.metavar or {"list": "list", "int": "int"}.get(f.kind, "string"))
            rows.append((left, f.help))
        width = max(len(r[0]) for r in rows) + 3
        lines += [r[0].ljust(width) + r[1] for r in rows]
    if cmd.epilog:
        lines += ["", cmd.epilog]
    return "\n".join(lines) + "\n"


def print_usage_error(err: UsageError) -> int:
    out = sys.stderr
    if err.command is not None and err.show_usage:
        out.write(f"{err.message}\nSee '{PROG} {err.command.path} --help'.\n\n")
        out.write(
            f"Usage:  {PROG} {err.command.path} {err.command.usage}\n\n{err.command.summary}\n"
        )
        return 1
    if err.command is not None:
        out.write(f"{err.message}\nSee '{PROG} {err.command.path} --help'.\n")
    else:
        out.write(f"{err.message}\nSee '{PROG} --help'.\n")
    return 125
