"""Requests that race: each pair fired at the same moment, many times; whichever wins, the
other must see it (a 4xx), and nothing may run that no record owns.

Bounded: each round is two API calls on the namespace-host's own socket.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from nshost import NamespaceHost
from tether.client import ApiError

pytestmark = pytest.mark.integration

ROUNDS = 12


def together(*calls: Any) -> list[int]:
    """Run the calls at once (one thread each); their HTTP statuses, in order."""
    barrier = threading.Barrier(len(calls))
    out = [0] * len(calls)

    def run(i: int, call: Any) -> None:
        barrier.wait()
        try:
            call()
            out[i] = 204
        except ApiError as exc:
            out[i] = exc.status

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def container_pids(h: NamespaceHost) -> set[int]:
    """tether-shim processes of this host (each holds one container), and their children."""
    marker = h.dir.encode()
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"tether-shim" in cmdline and marker in cmdline:
            pids.add(int(pid))
    return pids


def test_start_racing_rm_never_leaves_a_container_running_unlisted(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.62.0.0/24", "app")
    outcomes = set()
    for i in range(ROUNDS):
        name = f"r{i}"
        h.ok("create", "--name", name, "--network", "app", "busybox", "sleep", "600")
        start, rm = together(
            lambda n=name: h.api.post(f"/containers/{n}/start"),
            lambda n=name: h.api.delete(f"/containers/{n}"),
        )
        outcomes.add((start, rm))
        listed = {c["Names"][0].lstrip("/") for c in h.api.get("/containers/json", {"all": 1})}
        if rm == 204:
            # Removed: nothing of it may run on, and its start was refused.
            assert name not in listed
            assert start in (404, 409), (start, rm)
        else:
            # The start won: the remove was refused, and the container runs, listed.
            assert rm == 409 and start == 204, (start, rm)
            assert name in listed
            h.ok("rm", "-f", name)
        assert not container_pids(h), (i, start, rm)
        assert h.netns_files() == [], (i, start, rm)
    # Every address given back (the networks' gateways are all that is held).
    assert all(owner == "gateway" for _net, _addr, owner in h.allocations()), outcomes


def test_force_rm_racing_start_kills_what_the_start_made(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.63.0.0/24", "app")
    for i in range(ROUNDS // 2):
        name = f"f{i}"
        h.ok("create", "--name", name, "--network", "app", "busybox", "sleep", "600")
        together(
            lambda n=name: h.api.post(f"/containers/{n}/start"),
            lambda n=name: h.api.delete(f"/containers/{n}", {"force": 1}),
        )
        listed = {c["Names"][0].lstrip("/") for c in h.api.get("/containers/json", {"all": 1})}
        assert name not in listed
        assert not container_pids(h), i
        assert h.netns_files() == [], i


def test_start_racing_network_rm_never_runs_on_a_deleted_network(bhost: NamespaceHost) -> None:
    h = bhost
    for i in range(ROUNDS):
        net, name = f"n{i}", f"c{i}"
        h.ok("network", "create", "--subnet", f"10.64.{i}.0/24", net)
        h.ok("create", "--name", name, "--network", net, "busybox", "sleep", "600")
        start, rm = together(
            lambda n=name: h.api.post(f"/containers/{n}/start"),
            lambda n=net: h.api.delete(f"/networks/{n}"),
        )
        nets = {n["Name"] for n in h.api.get("/networks")}
        info = h.api.get(f"/containers/{name}/json")
        if rm == 204:
            # The network went first: the start found it gone and nothing runs.
            assert net not in nets
            assert start == 404, (start, rm)
            assert not info["State"]["Running"]
        else:
            # The start went first: the network stays, with the container's address on it.
            assert rm == 403 and start == 204, (start, rm)
            assert net in nets
            ip = info["NetworkSettings"]["Networks"][net]["IPAddress"]
            assert ip and any(a[1] == ip for a in h.allocations())
            assert h.inspect_network(net)["Containers"]
        h.ok("rm", "-f", name)
    assert not container_pids(h)
