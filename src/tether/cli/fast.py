"""The everyday commands' short way: a Python start-up, a few small modules and one request.

Why (issue 14, item 8): docker's Go CLI answers `docker ps` in about 25 ms here, while a bare
`python -S` takes 10-14 ms to start; the full CLI then spent 15-25 ms more before the
request: main.py, the command's module with every flag of every sibling command, the flag
parser, the context, the template engine and `re`.  This module recognises the plain forms
people type all day and runs them on the same client (tether/client.py), the same rows
(tether/cli/views.py) and the same printers (tether/cli/output.py) as the full commands:

    ps [-a] [-q] [--no-trunc]        (also container ls|ps|list)
    network ls [-q] [--no-trunc]     network inspect NETWORK...
    images [-a] [-q] [--no-trunc] [--digests]     (also image ls|list)
    volume ls [-q]                   inspect CONTAINER...     version
    logs CONTAINER                   exec CONTAINER COMMAND [ARG...]
    stop [-t N] CONTAINER...         rm [-f] CONTAINER...
    kill CONTAINER...                start CONTAINER...

One grammar: this is a recogniser of a few of its sentences, never a second parser.  Any
other token (a global flag, --format, -f, --help, `--`, an argument where none is taken)
hands the command to the full CLI (main.py) before anything is sent.  So does a daemon that
is not there (the full CLI starts one) and, for the read-only forms, any refusal from the
daemon: the full command asks again and words the error as it always does.  The forms that
change something (exec, stop, rm, kill, start) hand over only when their first connection
fails; their errors after that are worded here as container.py words them.

No `from __future__` and nothing but tether.client, views and output (which load _socket and
_json): every module is a few tenths of a millisecond of each `tether ps`.
"""

import sys

from tether.cli import output, views
from tether.client import (
    ApiError,
    Client,
    ConnectionLost,
    DaemonUnavailable,
    quote,
    socket_from_host,
)

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class _HandOver(Exception):
    """Not for this module: the full CLI runs the command (nothing was printed or changed)."""


class _Exit(Exception):
    """The command ends here with this exit code (its message is out)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _flags(
    args: "list[str]", allowed: "dict[str, str]", values: "dict[str, str] | None" = None
) -> "tuple[set[str], list[str]]":
    """Boolean flags as pflag takes them (`-a -q`, `-aq`, `--all`) and the arguments;
    `allowed` maps each spelling (-a, --all) to its name.  Anything else hands over."""
    seen, given, rest = _options(args, allowed, values or {})
    if given:
        raise _HandOver
    return seen, rest


def _options(
    args: "list[str]", allowed: "dict[str, str]", values: "dict[str, str]"
) -> "tuple[set[str], dict[str, list[str]], list[str]]":
    """_flags, and flags with a value (`values`: -f, --filter, --format -> name) given as
    `--format X`, `--format=X` or `-f X`, each value kept in order (a repeated string flag:
    the last wins, as pflag does; a list flag: all)."""
    seen: set[str] = set()
    given: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        name = allowed.get(a)
        if name is not None:
            seen.add(name)
            continue
        name = values.get(a)
        if name is not None:
            if i >= len(args):
                raise _HandOver  # pflag's "flag needs an argument": the full CLI's words
            given.setdefault(name, []).append(args[i])
            i += 1
            continue
        if a.startswith("--"):
            key, eq, value = a.partition("=")
            name = values.get(key)
            if name is None or not eq:
                raise _HandOver
            given.setdefault(name, []).append(value)
        elif a.startswith("-") and a != "-":
            for c in a[1:]:
                name = allowed.get("-" + c)
                if name is None:
                    raise _HandOver
                seen.add(name)
        elif a == "-":
            raise _HandOver
        else:
            rest.append(a)
    return seen, given, rest


def _last(given: "dict[str, list[str]]", name: str) -> "str | None":
    values = given.get(name)
    return values[-1] if values else None


def _filters(given: "dict[str, list[str]]") -> "dict[str, list[str]]":
    """--filter as output.parse_filters reads it; one without `=` hands over (the full
    command words the refusal)."""
    values = given.get("filter", [])
    if not all("=" in v for v in values):
        raise _HandOver
    return output.parse_filters(values)


def _get(client: Client, path: str, query: "dict[str, Any] | None" = None) -> "Any":
    try:
        return client.call("GET", path, query)
    except ApiError:
        raise _HandOver from None


_PS = {"-a": "all", "--all": "all", "-q": "quiet", "--quiet": "quiet", "--no-trunc": "no_trunc"}
_LISTING = {"--format": "format", "-f": "filter", "--filter": "filter"}


def _ps(client: Client, args: "list[str]") -> int:
    f, given, rest = _options(args, _PS, _LISTING)
    if rest:
        raise _HandOver
    filters = _filters(given)
    query = {"all": 1 if "all" in f else None, "filters": filters or None}
    items = _get(client, "/containers/json", query)
    rows = [views.ps_row(c, "no_trunc" in f) for c in items]
    if "quiet" in f:
        if _last(given, "format"):
            sys.stderr.write(views.PS_QUIET_WARNING)
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    fmt = _last(given, "format") or views.PS_DEFAULT
    if fmt == "json":
        fmt = "{{json .}}"
        rows = [{k: v for k, v in r.items() if k != "Label"} for r in rows]
    sys.stdout.write(output.render_table_template(fmt, rows, views.PS_HEADERS))
    return 0


_NETWORK_LS = {"-q": "quiet", "--quiet": "quiet", "--no-trunc": "no_trunc"}


def _network_ls(client: Client, args: "list[str]") -> int:
    f, given, rest = _options(args, _NETWORK_LS, _LISTING)
    if rest:
        raise _HandOver
    filters = _filters(given)
    nets = _get(client, "/networks", {"filters": filters} if filters else None)
    rows = views.network_rows(nets, "no_trunc" in f)
    o = {"quiet": "quiet" in f, "format": _last(given, "format")}
    output.print_listing(o, rows, views.NETWORK_HEADERS, views.NETWORK_DEFAULT, "ID")
    return 0


def _volume_ls(client: Client, args: "list[str]") -> int:
    f, given, rest = _options(args, {"-q": "quiet", "--quiet": "quiet"}, _LISTING)
    if rest:
        raise _HandOver
    filters = _filters(given)
    rows = views.volume_rows(_get(client, "/volumes", {"filters": filters} if filters else None))
    o = {"quiet": "quiet" in f, "format": _last(given, "format")}
    output.print_listing(o, rows, views.VOLUME_HEADERS, views.VOLUME_DEFAULT, "Name")
    return 0


_IMAGES = {
    "-a": "all",
    "--all": "all",
    "-q": "quiet",
    "--quiet": "quiet",
    "--no-trunc": "no_trunc",
    "--digests": "digests",
}


def _images(client: Client, args: "list[str]") -> int:
    # images' filters are its own (name=value into {name: {value: true}}): the full command's
    f, given, rest = _options(args, _IMAGES, {"--format": "format"})
    if rest:  # a REPOSITORY[:TAG] argument is a filter too
        raise _HandOver
    images = _get(client, "/images/json", {"all": 1} if "all" in f else None)
    rows = views.image_rows(images, "no_trunc" in f)
    if "quiet" in f:
        sys.stdout.write(views.image_ids(rows))
        return 0
    default = views.IMAGE_DIGESTS if "digests" in f else views.IMAGE_DEFAULT
    fmt = _last(given, "format") or default
    sys.stdout.write(output.render_table_template(fmt, rows, views.IMAGE_HEADERS))
    return 0


_FORMAT = {"-f": "format", "--format": "format"}


def _inspect_each(client: Client, names: "list[str]", path: str, fmt: str) -> int:
    if not names:
        raise _HandOver
    found = [_get(client, path.format(quote(name))) for name in names]
    output.print_inspected(fmt, found, [])
    return 0


def _inspect(client: Client, args: "list[str]") -> int:
    # Only containers: for a name that is an image or a network (404 here) the full
    # command looks further, as docker inspect does.
    _, given, names = _options(args, {}, _FORMAT)
    fmt = _last(given, "format") or ""
    return _inspect_each(client, names, "/containers/{}/json", fmt)


def _network_inspect(client: Client, args: "list[str]") -> int:
    _, given, names = _options(args, {}, _FORMAT)
    fmt = _last(given, "format") or ""
    return _inspect_each(client, names, "/networks/{}", "" if fmt == "json" else fmt)


def _version(client: Client, args: "list[str]") -> int:
    _, given, rest = _options(args, {}, _FORMAT)
    if rest:
        raise _HandOver
    server = _get(client, "/version")
    fmt = _last(given, "format")
    if fmt:
        sys.stdout.write(views.version_format(fmt, views.client_info(), server) + "\n")
        return 0
    sys.stdout.write(views.version_text(views.client_info(), server))
    return 0


def _logs(client: Client, args: "list[str]") -> int:
    _, names = _flags(args, {})
    if len(names) != 1:
        raise _HandOver
    resp = client.open("GET", f"/containers/{quote(names[0])}/logs", {"stdout": 1, "stderr": 1})
    if resp.status >= 400:
        resp.read()
        resp.close()
        raise _HandOver
    try:
        output.demux(resp)
    except KeyboardInterrupt:
        pass
    resp.close()
    return 0


def _exec(client: Client, args: "list[str]") -> int:
    """run_exec's path for `exec CONTAINER COMMAND...` with no flag (no stdin, no tty)."""
    if len(args) < 2 or args[0].startswith("-"):
        raise _HandOver
    from tether import wire

    body = {
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "Cmd": args[1:],
        "Env": [],
        "WorkingDir": "",
        "Privileged": False,
        "User": "",
    }
    try:
        ex = client.call("POST", f"/containers/{quote(args[0])}/exec", body=body)
    except ApiError as exc:
        return _error(f"Error response from daemon: {exc.message}")
    exec_id = ex["Id"]
    # From here on the exec exists: nothing hands over any more.
    try:
        resp = client.open(
            "POST",
            f"/exec/{exec_id}/start",
            body={"Detach": False, "Tty": False},
            headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        )
        if resp.status >= 400:
            data = resp.read()
            resp.close()
            return _error(f"Error response from daemon: {wire.loads(data).get('message')}")
        try:
            output.demux(resp)
        finally:
            resp.close()
        info = client.call("GET", f"/exec/{exec_id}/json")
    except DaemonUnavailable as exc:
        return _error(str(exc))
    except ApiError as exc:
        return _error(f"Error response from daemon: {exc.message}")
    code = info.get("ExitCode")
    return int(code) if code is not None else 0


def _each(
    client: Client, names: "list[str]", method: str, path: str, query: "dict[str, Any] | None"
) -> "list[str]":
    """container.py's _each: each name done is printed, each refusal goes to stderr and the
    rest still run; the refused names are returned.  Only a daemon that is not there at the
    first name hands over (nothing was sent)."""
    failed = []
    for i, name in enumerate(names):
        try:
            client.call(method, path.format(quote(name)), query)
        except ApiError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            failed.append(name)
            continue
        except DaemonUnavailable as exc:
            if i == 0:
                raise
            sys.stderr.write(f"{exc}\n")  # as the Context's CliError words it
            raise _Exit(1) from None
        print(name)
    return failed


def _names_after_time(args: "list[str]") -> "tuple[dict[str, Any] | None, list[str]]":
    """stop's arguments: -t N / --time N (N in decimal digits) and the names."""
    query = None
    names: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-t", "--time") and i + 1 < len(args) and args[i + 1].isdecimal():
            if not args[i + 1].isascii():
                raise _HandOver
            query = {"t": int(args[i + 1])}
            i += 2
            continue
        if a.startswith("-"):
            raise _HandOver
        names.append(a)
        i += 1
    if not names:
        raise _HandOver
    return query, names


def _stop(client: Client, args: "list[str]") -> int:
    query, names = _names_after_time(args)
    return 1 if _each(client, names, "POST", "/containers/{}/stop", query) else 0


def _rm(client: Client, args: "list[str]") -> int:
    f, names = _flags(args, {"-f": "force", "--force": "force"})
    if not names:
        raise _HandOver
    query = {"force": 1} if "force" in f else None
    return 1 if _each(client, names, "DELETE", "/containers/{}", query) else 0


def _kill(client: Client, args: "list[str]") -> int:
    _, names = _flags(args, {})
    if not names:
        raise _HandOver
    return 1 if _each(client, names, "POST", "/containers/{}/kill", None) else 0


def _start(client: Client, args: "list[str]") -> int:
    _, names = _flags(args, {})
    if not names:
        raise _HandOver
    failed = _each(client, names, "POST", "/containers/{}/start", None)
    if failed:
        return _error("Error: failed to start containers: " + ", ".join(failed))
    return 0


def _error(message: str) -> int:
    sys.stderr.write(message + "\n")
    return 1


TOP: "dict[str, Callable[[Client, list[str]], int]]" = {
    "ps": _ps,
    "images": _images,
    "inspect": _inspect,
    "version": _version,
    "logs": _logs,
    "exec": _exec,
    "stop": _stop,
    "rm": _rm,
    "kill": _kill,
    "start": _start,
}
GROUPS: "dict[tuple[str, str], Callable[[Client, list[str]], int]]" = {
    ("container", "ls"): _ps,
    ("container", "ps"): _ps,
    ("container", "list"): _ps,
    ("container", "inspect"): _inspect,
    ("container", "logs"): _logs,
    ("container", "exec"): _exec,
    ("container", "stop"): _stop,
    ("container", "rm"): _rm,
    ("container", "kill"): _kill,
    ("container", "start"): _start,
    ("network", "ls"): _network_ls,
    ("network", "list"): _network_ls,
    ("network", "inspect"): _network_inspect,
    ("image", "ls"): _images,
    ("image", "list"): _images,
    ("volume", "ls"): _volume_ls,
    ("volume", "list"): _volume_ls,
}


def attempt(argv: "list[str]") -> "int | None":
    """Run argv if it is one of the forms above and return its exit code; None when the
    full CLI must run it (then nothing was sent, or only a read the full command repeats)."""
    if not argv:
        return None
    form = TOP.get(argv[0])
    rest = argv[1:]
    if form is None and len(argv) > 1:
        form = GROUPS.get((argv[0], argv[1]))
        rest = argv[2:]
    if form is None:
        return None
    # The full CLI's Context reads TETHER_HOST from os.environ.  Until `os` is loaded (the
    # launcher never loads it) nothing can have changed that copy, and posix.environ holds
    # the same bytes, decoded as os.fsdecode does; importing os would cost more than the
    # rest of this module.
    os_module = sys.modules.get("os")
    if os_module is not None:
        host = os_module.environ.get("TETHER_HOST")
    else:
        import posix

        raw = posix.environ.get(b"TETHER_HOST")
        host = raw.decode("utf-8", "surrogateescape") if raw else None
    try:
        socket_path = socket_from_host(host)
    except ValueError:
        return None
    try:
        return form(Client(socket_path), rest)
    except (_HandOver, DaemonUnavailable):
        return None
    except _Exit as exc:
        return exc.code
    # What main._run does with the same exceptions from the full command.
    except ConnectionLost as exc:
        return _error(exc.message)
    except ValueError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        # A --format the engine refuses (CliError, from output.py or views.py): its message
        # and exit 1, as main._run prints it.  Imported here: only an error pays for it.
        from tether.cli.context import CliError

        if isinstance(exc, CliError):
            if exc.message:
                sys.stderr.write(exc.message + "\n")
            return exc.code
        raise


def main() -> int:
    """The launcher's entry (tether/cli/launcher.py): this module first, main.py only when
    it must run the command."""
    argv = sys.argv[1:]
    code = attempt(argv)
    if code is not None:
        # The interpreter's finalization (freeing every module and object) takes longer
        # than the request did; a form served here leaves nothing for it to do (no thread,
        # no atexit, its socket closed) once the output is out.
        import posix

        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:  # the reader left (tether ps | head -1): nothing to say
            pass
        posix._exit(code)
    from tether.cli.main import main as full

    return full(argv, fast=False)
