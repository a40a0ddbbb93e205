"""Shared fixtures, and the suite-wide check that nothing leaked.

The leak check compares the machine before and after the whole run: network namespaces,
links and nftables tables in the root namespace, mounts, tether processes and containers'
cgroups.  It runs once, in the controlling process, after every test (and every xdist worker)
is done.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster import ETCD_MARKER, live_etcd_processes
from nshost import NamespaceHost, namespace_host


def _snapshot() -> dict[str, set[str]]:
    def lines(cmd: str) -> set[str]:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        return {line.strip() for line in r.stdout.splitlines() if line.strip()}

    mounts = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mounts.add(f"{fields[4]} {fields[fields.index('-') + 1]}")
    return {
        "netns": lines("ip netns list | awk '{print $1}'"),
        "links": lines("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1"),
        "nft tables": lines("nft list tables 2>/dev/null"),
        "mounts": mounts,
        "processes": _live_tether_processes(),
        "etcd processes": {f"{pid} {cmd}" for pid, cmd in live_etcd_processes().items()},
        "etcd data dirs": set(glob.glob(f"/dev/shm/{ETCD_MARKER}*")),
        "cgroups": _container_cgroups(),
    }


def _container_cgroups() -> set[str]:
    """Containers' cgroups (runtime/cgroups.py): each goes with its container."""
    from tether.runtime import cgroups

    root = cgroups.cgroup2_mount()
    parent = os.path.join(root, cgroups.PARENT) if root else ""
    if not parent or not os.path.isdir(parent):
        return set()
    return {e for e in os.listdir(parent) if os.path.isdir(os.path.join(parent, e))}


def _live_tether_processes() -> set[str]:
    """tetherd, tether-shim, port relay (firewall/relay.py) and tether-crypt processes alive.

    Zombies are left out: a shim whose daemon was killed (the crash tests do that on purpose)
    is re-parented to PID 1, which reaps it in its own time; a zombie holds nothing but a pid.
    """
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        state = stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3]
        if state == b"Z":
            continue
        if any(
            m in cmdline
            for m in (
                "tether.daemon.main",
                "tether-shim",
                "tether/firewall/relay.py",
                "tether.crypt.datapath",
            )
        ):
            out.add(f"{pid} {cmdline}")
    return out


_BEFORE: dict[str, set[str]] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        if os.geteuid() == 0:
            # The first `ip netns add` on a machine makes /run/netns a shared bind mount that
            # stays for good (iproute2 does that, not tether): make it before the snapshot,
            # so a fresh machine does not count it as a leak of the suite.
            subprocess.run(
                "ip netns add tether-probe && ip netns del tether-probe",
                shell=True,
                capture_output=True,
            )
        _BEFORE.update(_snapshot())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput") or not _BEFORE:
        return
    if os.geteuid() != 0:
        return
    after = _snapshot()
    leaks = {k: sorted(after[k] - _BEFORE.get(k, set())) for k in after}
    leaks = {k: v for k, v in leaks.items() if v}
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        if reporter is not None:
            reporter.write_line("LEAK CHECK FAILED: the suite left these behind:", red=True)
            for k, v in leaks.items():
                reporter.write_line(f"  {k}: {v}", red=True)
        session.exitstatus = 1
    elif reporter is not None:
        reporter.write_line(
            "leak check: no netns, links, nft tables, mounts, processes, cgroups or etcd members "
            "left behind"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def host() -> Iterator[NamespaceHost]:
    with namespace_host() as h:
        yield h


@pytest.fixture
def bhost() -> Iterator[NamespaceHost]:
    """A namespace-host with the busybox image imported."""
    with namespace_host() as h:
        h.import_busybox()
        yield h
