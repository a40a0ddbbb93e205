"""tether debug CONTAINER [COMMAND [ARG...]]: the host's tools inside a container's network.

What netshoot gives Docker users, without an image and without touching the container: this
process enters the container's network namespace only, so ip, ss, nft, tcpdump, dig, ping,
curl and iperf3 are the host's own, and sees the container's /etc/resolv.conf and /etc/hosts
through bind mounts in a private mount namespace of its own (as `ip netns exec` does for
/etc/netns/NAME), with /sys mounted again so /sys/class/net lists the container's
interfaces.  The mount namespace goes away with the shell: nothing is left on the host, and
nothing is written into the container.

Runs in the CLI process, which then execs the shell or the command: its exit code is the
command's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def container_address(info: dict[str, Any]) -> str:
    """The address a prompt shows: the default-route network's, else the first one."""
    nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
    first = ""
    for ep in nets.values():
        addr = ep.get("IPAddress") or ep.get("GlobalIPv6Address") or ""
        if addr and ep.get("Gateway") and not first:
            return str(addr)
        first = first or str(addr)
    return first


def running_container(ctx: Context, name: str) -> dict[str, Any]:
    """inspect, with exec's refusal of a container that is not running (Docker's words)."""
    from tether.client import quote

    try:
        info: dict[str, Any] = ctx.call("GET", f"/containers/{quote(name)}/json")
    except ApiError as exc:
        raise api_error(exc) from None
    if not (info.get("State") or {}).get("Running"):
        raise CliError(f"Error response from daemon: container {info['Id']} is not running")
    if not info["NetworkSettings"].get("SandboxKey"):
        mode = info["HostConfig"].get("NetworkMode") or ""
        raise CliError(
            f"tether: container {info['Name'].lstrip('/')} has no network of its own (network mode {mode})"
        )
    return info


def enter(info: dict[str, Any]) -> None:
    """Join the container's network namespace, with its resolv.conf and hosts in view."""
    from tether.kernel import libc

    if os.geteuid() != 0:
        raise CliError("tether: debug needs root (it enters the container's network namespace)")
    key = info["NetworkSettings"]["SandboxKey"]
    try:
        fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CliError(
            f"tether: cannot open the container's network namespace {key}: {exc.strerror}"
        ) from None
    try:
        libc.unshare(libc.CLONE_NEWNS)
        # Private from here on: nothing mounted below reaches the host's mount namespace.
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE, None)
        libc.setns(fd, libc.CLONE_NEWNET)
    except OSError as exc:
        raise CliError(f"tether: cannot enter the container's network namespace: {exc}") from None
    finally:
        os.close(fd)
    for src, dst in (
        (info.get("ResolvConfPath"), "/etc/resolv.conf"),
        (info.get("HostsPath"), "/etc/hosts"),
    ):
        if not src or not os.path.exists(src):
            continue
        try:
            # A symlinked /etc/resolv.conf (systemd-resolved) is followed to its target.
            libc.mount(src, os.path.realpath(dst), None, libc.MS_BIND, None)
        except OSError as exc:
            sys.stderr.write(f"tether: warning: {dst} is the host's ({exc})\n")
    try:
        libc.mount("sysfs", "/sys", "sysfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC, None)
    except OSError:
        pass  # /sys/class/net keeps showing the host's devices; netlink tools are unaffected


def _shell(prompt: str) -> list[str]:
    """The interactive shell, with the prompt set after the user's own bashrc ran."""
    bash = shutil.which("bash")
    if bash is None:
        os.environ["PS1"] = prompt
        return [shutil.which("sh") or "/bin/sh", "-i"]
    # The rc file lives in memory (a memfd), so there is no file to clean up afterwards.
    rc = os.memfd_create("tether-debug-bashrc", 0)
    os.write(
        rc,
        (
            "[ -f /etc/bash.bashrc ] && . /etc/bash.bashrc\n[ -f ~/.bashrc ] && . ~/.bashrc\n"
            f"PS1={shlex.quote(prompt)}\n"
        ).encode(),
    )
    return [bash, "--rcfile", f"/proc/self/fd/{rc}", "-i"]


def run(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    info = running_container(ctx, args[0])
    name = info["Name"].lstrip("/")
    addr = container_address(info)
    prompt = f"[debug {name}{' ' + addr if addr else ''}] # "
    enter(info)
    os.environ["TETHER_DEBUG"] = name
    argv = args[1:] or _shell(prompt)
    if not args[1:]:
        sys.stderr.write(
            f"tether: a shell in {name}'s network namespace, with the host's tools "
            "(ip, ss, nft, tcpdump, dig, ping, curl); exit to leave\n"
        )
        sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise CliError(
            f'tether: exec: "{argv[0]}": executable file not found in $PATH', 127
        ) from None
    except PermissionError:
        raise CliError(f'tether: exec: "{argv[0]}": permission denied', 126) from None
    return 0  # not reached: exec replaced this process


DEBUG = Command(
    "debug",
    "CONTAINER [COMMAND] [ARG...]",
    "Run a shell or a command with the host's tools in a container's network namespace",
    [],
    min_args=1,
    interspersed=False,
    handler=run,
)
