"""tether attach: docker attach (cli/command/container/attach.go) on the attach stream that
`tether run` already relays (container.py's _attach and _stream)."""

from __future__ import annotations

import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.client import ApiError, quote

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def _check_state(ctx: Context, name: str) -> dict[str, Any]:
    """docker's inspectContainerAndCheckState."""
    try:
        c: dict[str, Any] = ctx.call("GET", f"/containers/{quote(name)}/json")
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(f"Error: No such container: {name}") from None
        raise api_error(exc) from None
    state = c.get("State") or {}
    if not state.get("Running"):
        raise CliError("You cannot attach to a stopped container, start it first")
    if state.get("Paused"):
        raise CliError("You cannot attach to a paused container, unpause it first")
    if state.get("Restarting"):
        raise CliError("You cannot attach to a restarting container, wait until it is restarted")
    return c


def run_attach(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.container import _attach, _detach_bytes, _stream, _wait_status

    name = args[0]
    keys = o["detach_keys"] or None
    if keys:
        _detach_bytes(keys)  # a bad sequence is refused before anything else
    c = _check_state(ctx, name)
    cid = str(c["Id"])
    config = c.get("Config") or {}
    tty = bool(config.get("Tty"))
    stdin = not o["no_stdin"] and bool(config.get("OpenStdin"))
    if tty and stdin and not sys.stdin.isatty():
        raise CliError("the input device is not a TTY")
    # As docker: the wait is asked for first, so that an exit during the attach is not missed.
    waiting = ctx.open("POST", f"/containers/{cid}/wait")
    try:
        stream = _attach(ctx, cid, stdin, keys)
    except CliError:
        waiting.close()
        raise
    try:
        _check_state(ctx, name)  # it may have stopped since: the stream would never end
    except CliError:
        stream.close()
        waiting.close()
        raise
    detached = _stream(ctx, cid, stream, tty, stdin, keys, sig_proxy=o["sig_proxy"] and not tty)
    if detached:
        waiting.close()
        # docker attach returns the escape as its error: one line and status 1.
        sys.stderr.write("read escape sequence\n")
        return 1
    if stdin and not _answered(waiting, 2.0):
        # The stream also ends when our stdin does (the daemon closes the session then, as
        # dockerd does); docker's CLI would then block until the container exits.  A
        # container still running a moment later is left to run: nothing to report.
        try:
            still = ctx.call("GET", f"/containers/{cid}/json")
        except ApiError:
            still = {}
        if (still.get("State") or {}).get("Running"):
            waiting.close()
            return 0
    return _wait_status(waiting)


def _answered(resp: Any, timeout: float) -> bool:
    """Whether the wait's answer has arrived (or arrives within `timeout` seconds)."""
    import select

    if getattr(resp, "_buf", b""):
        return True
    readable, _, _ = select.select([resp.sock], [], [], timeout)
    return bool(readable)


def run_start_attached(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    """docker start -a|-i (start.go): attached before the start, the wait asked for, then
    the start; the container's exit code is ours, a detach leaves it running (0)."""
    from tether.cli.container import _detach_bytes, start_attached

    if len(args) > 1:
        raise CliError("you cannot start and attach multiple containers at once")
    keys = o["detach_keys"] or None
    if keys:
        _detach_bytes(keys)
    try:
        c: dict[str, Any] = ctx.call("GET", f"/containers/{quote(args[0])}/json")
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(f"Error: No such container: {args[0]}") from None
        raise api_error(exc) from None
    cid = str(c["Id"])
    config = c.get("Config") or {}
    tty = bool(config.get("Tty"))
    stdin = bool(o["interactive"]) and bool(config.get("OpenStdin"))
    if tty and stdin and not sys.stdin.isatty():
        raise CliError("the input device is not a TTY")
    return start_attached(
        ctx,
        cid,
        tty=tty,
        stdin=stdin,
        keys=keys,
        removed=bool((c.get("HostConfig") or {}).get("AutoRemove")),
        start_error=api_error,
        sig_proxy=not tty,
    )


ATTACH = Command(
    "attach",
    "[OPTIONS] CONTAINER",
    "Attach local standard input, output, and error streams to a running container",
    [
        Flag("detach-keys", help="Override the key sequence for detaching a container"),
        Flag("no-stdin", kind="bool", help="Do not attach STDIN"),
        Flag(
            "sig-proxy",
            kind="bool",
            default=True,
            help="Proxy all received signals to the process (default true)",
        ),
    ],
    min_args=1,
    max_args=1,
    handler=run_attach,
)
