"""tether capture CONTAINER|NETWORK [-i IFACE] [-w FILE] [-c N] [--duration S] [FILTER...]

tcpdump on the right interface, found for the user: a container's eth* inside its network
namespace, or a network's device (bridge, VXLAN device, macvlan parent) in the namespace the
daemon runs in, which may not be the caller's (the daemon's pid comes from the API socket's
peer credentials).  Text to stdout, or pcap with -w FILE (-w - for stdout).  Always bounded:
--duration defaults to 60 seconds, -c stops after N packets; only --duration 0 runs until
interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.client import ApiError, quote

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

DEFAULT_DURATION = 60.0


def daemon_netns(ctx: Context) -> str:
    """/proc/<tetherd's pid>/ns/net, from the peer credentials of its API socket."""
    ctx.call("GET", "/_ping")  # (starts the default daemon if none answers)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(ctx.socket_path)
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as exc:
        raise CliError(
            f"tether: cannot reach the daemon at unix://{ctx.socket_path}: {exc.strerror}"
        ) from None
    finally:
        s.close()
    pid = struct.unpack("3i", creds)[0]
    return f"/proc/{pid}/ns/net"


def _parse_duration(text: str | None) -> float:
    if text is None:
        return DEFAULT_DURATION
    t = text.strip()
    scale = 1.0
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], mult
            break
    try:
        value = float(t) * scale
    except ValueError:
        raise CliError(
            f'tether: invalid argument "{text}" for "--duration" flag: time: invalid duration "{text}"\n'
            "See 'tether capture --help'.",
            125,
        ) from None
    if value < 0:
        raise CliError("tether: --duration cannot be negative\nSee 'tether capture --help'.", 125)
    return value


def target(ctx: Context, name: str, iface: str) -> tuple[str, str, str]:
    """(network namespace path, interface, what it is) for a container or a network."""
    try:
        topo: dict[str, Any] = ctx.call("GET", "/tether/topology")
    except ApiError as exc:
        raise api_error(exc) from None
    try:
        info = ctx.call("GET", f"/containers/{quote(name)}/json")
    except ApiError as exc:
        if exc.status != 404:
            raise api_error(exc) from None
        info = None
    if info is not None:
        from tether.cli.debug import running_container

        info = running_container(ctx, name)
        cname = info["Name"].lstrip("/")
        entry = next((c for c in topo["Containers"] if c["Id"] == info["Id"]), None)
        eps = [ep for ep in (entry or {}).get("Endpoints", []) if ep["Interface"]]
        if iface:
            # A network's name picks the container's interface on it.
            ep = next((e for e in eps if iface in (e["Network"], e["NetworkID"])), None)
            chosen = ep["Interface"] if ep else iface
        elif len(eps) == 1:
            chosen = eps[0]["Interface"]
        elif eps:
            chosen = "any"
        else:
            raise CliError(f"tether: container {cname} has no network interface to capture on")
        return info["NetworkSettings"]["SandboxKey"], chosen, f"container {cname}"
    # Docker's network lookup (exact name, full id, unique id prefix) over the topology.
    nets = topo["Networks"]
    found = [n for n in nets if n["Name"] == name] or [n for n in nets if n["Id"] == name]
    found = found or [n for n in nets if n["Id"].startswith(name)]
    if len(found) != 1:
        raise CliError(f"Error response from daemon: No such container or network: {name}")
    net = found[0]
    devices = net["Devices"]
    if iface:
        dev = next((d for d in devices if iface in (d["Name"], d["Kind"])), None)
        if dev is None:
            names = ", ".join(f"{d['Name']} ({d['Kind']})" for d in devices) or "none"
            raise CliError(
                f"tether: network {net['Name']} has no device {iface!r} (its devices: {names})"
            )
        chosen = dev["Name"]
    elif devices:
        chosen = devices[0]["Name"]
    else:
        raise CliError(
            f"tether: network {net['Name']} ({net['Driver']}) has no host device to capture on; "
            "capture on one of its containers instead"
        )
    return daemon_netns(ctx), chosen, f"network {net['Name']}"


def run(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    duration = _parse_duration(o["duration"])
    count = o["count"]
    if count is not None and count <= 0:
        raise CliError(
            "tether: -c must be a positive number of packets\nSee 'tether capture --help'.", 125
        )
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise CliError("tether: tcpdump is not installed (apt-get install tcpdump)")
    if os.geteuid() != 0:
        raise CliError("tether: capture needs root (it enters a network namespace)")
    netns, iface, what = target(ctx, args[0], o["interface"] or "")
    # --immediate-mode: packets are handed over as they come, not a ring block at a time,
    # so a capture ended by time or Ctrl-C has every packet it saw.  -Z root: the file is
    # written as the caller, wherever the caller may write.
    cmd = ["nsenter", f"--net={netns}", "--", tcpdump, "-i", iface, "-n", "--immediate-mode"]
    cmd += ["-Z", "root"]
    out = o["write"] or ""
    if out:
        # -U: every packet reaches the file at once, so a capture cut short keeps them all.
        cmd += ["-U", "-w", out]
    else:
        cmd += ["-l"]
    if count is not None:
        cmd += ["-c", str(count)]
    cmd += args[1:]
    bound = f"{count} packets" if count is not None else ""
    if duration:
        bound += (" or " if bound else "") + f"{duration:g}s"
    sys.stderr.write(
        f"tether: capturing on {iface} of {what}"
        + (f", stopping after {bound}" if bound else "")
        + (f", writing {out}" if out and out != "-" else "")
        + "\n"
    )
    sys.stderr.flush()
    proc = subprocess.Popen(cmd)
    try:
        try:
            return proc.wait(timeout=duration or None)
        except subprocess.TimeoutExpired:
            # tcpdump ends cleanly on SIGINT: the pcap is complete and it prints its counts.
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
            return 0
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0


CAPTURE = Command(
    "capture",
    "[OPTIONS] CONTAINER|NETWORK [FILTER...]",
    "Capture packets on a container's interface or a network's device (tcpdump)",
    [
        Flag(
            "interface", "i", help="Interface (a container's ethN or network, a network's device)"
        ),
        Flag("write", "w", help="Write packets to a pcap file ('-' for stdout)", metavar="FILE"),
        Flag("count", "c", kind="int", help="Stop after this many packets"),
        Flag("duration", help="Stop after this long (default 60s; 0 runs until interrupted)"),
    ],
    min_args=1,
    handler=run,
)
