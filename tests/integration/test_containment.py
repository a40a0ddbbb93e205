"""What must never cross from the host into a container, tried as an attacker would.

Each test here failed before its fix (issue 9's review): a netlink socket to the host's
nftables inherited by every container and exec, device nodes a container could make and open,
an exec entering whatever process had a reused pid, a relay socket anyone could talk to, a
sysctl left on a user's bridge, and the shim's leaks and limits.
"""

from __future__ import annotations

import os
import time

import pytest

from nshost import NamespaceHost
from tether.firewall.relayctl import relay_pids

pytestmark = pytest.mark.integration

O_CLOEXEC = 0o2000000


def fd_table(pid: int) -> dict[int, str]:
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
    return out


def inheritable_fds(pid: int) -> list[int]:
    """Descriptors of `pid` that a program it starts would get (not close-on-exec)."""
    out = []
    for fd in fd_table(pid):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
        except (OSError, StopIteration):
            continue
        if not flags & O_CLOEXEC:
            out.append(fd)
    return sorted(out)


def netlink_sockets(pid: int) -> list[str]:
    """The netlink sockets `pid` holds, as "fd:protocol" (12 is NETLINK_NETFILTER)."""
    with open(f"/proc/{pid}/net/netlink") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    protocol = {row[9]: row[1] for row in rows}
    return [
        f"{fd}:{protocol[target[8:-1]]}"
        for fd, target in fd_table(pid).items()
        if target.startswith("socket:[") and target[8:-1] in protocol
    ]


def wait_for_process(cmdline: bytes, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == cmdline:
                        return int(entry)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no process {cmdline!r}")


# -- S1: descriptors ------------------------------------------------------------------------


def test_nothing_but_stdio_reaches_containers_execs_and_the_relay(bhost: NamespaceHost) -> None:
    h = bhost
    assert h.proc is not None
    # tetherd itself: whatever it starts can inherit its stdio and nothing else (libnftables'
    # socket to the host's nftables was inheritable).
    assert inheritable_fds(h.proc.pid) == [0, 1, 2]
    h.ok("run", "-d", "--name", "fds", "-p", "[::1]:8081:80", "busybox", "sleep", "300")
    pid1 = int(h.api.get("/containers/fds/json")["State"]["Pid"])
    assert sorted(fd_table(pid1)) == [0, 1, 2], fd_table(pid1)
    # An exec, seen from inside as a user would look (`; true` keeps sh from exec'ing ls)...
    assert h.ok("exec", "fds", "sh", "-c", "ls /proc/$$/fd; true").split() == ["0", "1", "2"]
    # ... and from the host.
    h.ok("exec", "-d", "fds", "sleep", "31.5")
    sleeper = wait_for_process(b"sleep\x0031.5\x00")
    assert sorted(fd_table(sleeper)) == [0, 1, 2], fd_table(sleeper)
    # The port relay (started for the [::1] port) holds no netlink socket at all.
    relays = relay_pids(h.exec_root)
    assert relays
    for relay in relays:
        assert netlink_sockets(relay) == [], fd_table(relay)
    # With NET_ADMIN a container could use such a socket; it has none to use.
    h.ok("run", "-d", "--name", "admin", "--cap-add", "NET_ADMIN", "busybox", "sleep", "300")
    admin = int(h.api.get("/containers/admin/json")["State"]["Pid"])
    assert netlink_sockets(admin) == []
