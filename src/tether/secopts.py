"""`--security-opt` on the client side, as docker's CLI (and docker compose) read it.

A seccomp profile named by file is read here and sent as its compacted JSON text
(`seccomp={...}`), because the daemon cannot read the client's files; `systempaths=unconfined`
becomes empty MaskedPaths and ReadonlyPaths and is not sent.  docker/cli
cli/command/container/opts.go parseSecurityOpts and parseSystemPaths, with their messages.
Shared by the CLI and compose; kept light (the CLI's start-up time matters).
"""

from __future__ import annotations

from tether import wire

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class SecurityOptError(ValueError):
    pass


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def resolve(opts: list[str], read: Callable[[str], str | bytes] = _read) -> tuple[list[str], bool]:
    """(the options to send, whether systempaths=unconfined was given).

    `read` reads a profile file (compose passes its own, relative to the project)."""
    out: list[str] = []
    unconfined = False
    for opt in opts:
        if opt == "systempaths=unconfined":
            unconfined = True
            continue
        key, sep, value = opt.partition("=")
        if not sep and key != "no-new-privileges":
            key, sep, value = opt.partition(":")
        if (not sep or not value) and key != "no-new-privileges":
            # "no-new-privileges" is the only option that does not require a value.
            raise SecurityOptError(f"invalid --security-opt: {wire.dumps(opt)}")
        if key == "seccomp" and value not in ("builtin", "unconfined"):
            try:
                data = read(value)
            except OSError as exc:
                raise SecurityOptError(
                    f"opening seccomp profile ({value}) failed: open {value}: "
                    f"{(exc.strerror or str(exc)).lower()}"
                ) from None
            import json  # only here: the CLI's start-up does not pay for it otherwise

            try:
                profile: Any = json.loads(data)
            except ValueError as exc:
                raise SecurityOptError(
                    f"compacting json for seccomp profile ({value}) failed: {exc}"
                ) from None
            opt = "seccomp=" + json.dumps(profile, separators=(",", ":"), ensure_ascii=False)
        out.append(opt)
    return out, unconfined


def host_config(
    privileged: bool,
    cap_add: list[str],
    cap_drop: list[str],
    security_opt: list[str],
    read: Callable[[str], str | bytes] = _read,
) -> dict[str, Any]:
    """The HostConfig fields of these settings (raises SecurityOptError)."""
    opts, unconfined = resolve(security_opt, read)
    out: dict[str, Any] = {
        "Privileged": privileged,
        "CapAdd": list(cap_add) or None,
        "CapDrop": list(cap_drop) or None,
        "SecurityOpt": opts or None,
    }
    if unconfined:
        out["MaskedPaths"] = []
        out["ReadonlyPaths"] = []
    return out
