"""The overlay follower's incremental path, without the kernel: which FDB/neighbour entries a
change of the store hands the driver (an add, a change of MAC, a removal, a relist)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from tether.cluster.follower import Follower, delta, remotes_of
from tether.drivers.overlay import Remote
from tether.events import ClusterEndpoints, EventBus
from tether.model import RemoteEndpoint

ME = "n1"


def ep(n: int, node: str = "n2", mac: str = "", v6: bool = False) -> RemoteEndpoint:
    return RemoteEndpoint(
        id=f"ep{n}",
        network="net",
        node=node,
        vtep=f"192.0.2.{2 if node == 'n2' else 3}",
        container=f"c{n}",
        name=f"c{n}",
        ipv4=f"10.0.0.{n}",
        ipv6=f"fd00::{n}" if v6 else "",
        mac=mac or f"02:42:0a:00:00:{n:02x}",
    )


def test_add_gives_only_the_new_endpoints_entries() -> None:
    live = {f"ep{n}": ep(n) for n in range(2, 50)}
    applied = {k: remotes_of(e) for k, e in live.items()}
    live["ep60"] = ep(60, v6=True)
    drop, put = delta(applied, live, {"ep60"}, ME)
    mac = "02:42:0a:00:00:3c"
    assert drop == []
    assert put == [Remote("10.0.0.60", mac, "192.0.2.2"), Remote("fd00::60", mac, "192.0.2.2")]
    assert len(applied) == 49 and applied["ep60"] == tuple(put)


def test_mac_change_puts_the_new_entries_and_drops_nothing() -> None:
    live = {"ep2": ep(2, v6=True), "ep3": ep(3)}
    applied = {k: remotes_of(e) for k, e in live.items()}
    live["ep2"] = ep(2, mac="02:42:aa:bb:cc:dd", v6=True)
    drop, put = delta(applied, live, {"ep2"}, ME)
    # Same addresses: the driver replaces them (and withdraws the old MAC's FDB entries).
    assert drop == []
    assert {(r.ip, r.mac) for r in put} == {
        ("10.0.0.2", "02:42:aa:bb:cc:dd"),
        ("fd00::2", "02:42:aa:bb:cc:dd"),
    }


def test_removal_drops_what_the_endpoint_had() -> None:
    live = {"ep2": ep(2, v6=True), "ep3": ep(3)}
    applied = {k: remotes_of(e) for k, e in live.items()}
    del live["ep2"]
    drop, put = delta(applied, live, {"ep2"}, ME)
    assert sorted(drop) == ["10.0.0.2", "fd00::2"] and put == []
    assert list(applied) == ["ep3"]


def test_an_address_dropped_by_a_change_and_own_endpoints_skipped() -> None:
    live = {"ep2": ep(2, v6=True)}
    applied = {"ep2": remotes_of(live["ep2"])}
    live["ep2"] = ep(2)  # lost its IPv6 address
    live["ep9"] = ep(9, node=ME)  # this node's own: never programmed
    drop, put = delta(applied, live, {"ep2", "ep9"}, ME)
    assert drop == ["fd00::2"]
    assert put == [Remote("10.0.0.2", "02:42:0a:00:00:02", "192.0.2.2")]
    assert "ep9" not in applied


class Recorder:
    """The driver's two entry points, recorded (the kernel side is tested in
    tests/integration/test_overlay.py)."""

    name = "overlay"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def relearn(self, net: Any) -> None:
        pass

    async def program(self, net: Any, remotes: list[Remote]) -> int:
        self.calls.append(("program", sorted(r.ip for r in remotes)))
        return len(remotes)

    async def patch(self, net: Any, drop: list[str], put: list[Remote]) -> int:
        self.calls.append(("patch", (sorted(drop), sorted(r.ip for r in put))))
        return len(drop) + len(put)


class Net:
    id = "net"
    name = "big"
    driver = "overlay"


class Nets:
    by_id = {"net": Net()}


def test_follower_programs_whole_after_a_relist_and_only_changes_otherwise() -> None:
    async def main() -> list[tuple[str, Any]]:
        bus = EventBus()
        rec = Recorder()
        follower = Follower(bus, Nets(), rec)  # type: ignore[arg-type]
        follower.start()
        live = {f"ep{n}": ep(n) for n in (2, 3)}
        live["ep4"] = ep(4, node=ME)

        async def settle() -> None:
            for _ in range(50):
                await asyncio.sleep(0)

        bus.publish(ClusterEndpoints("net", live, ME))  # the first listing: whole
        await settle()
        live["ep5"] = ep(5)
        bus.publish(ClusterEndpoints("net", live, ME, frozenset({"ep5"})))
        await settle()
        del live["ep2"]
        live["ep3"] = replace(live["ep3"], mac="02:42:aa:bb:cc:dd")
        # Two watch batches before the worker runs: merged into one pass.
        bus.publish(ClusterEndpoints("net", live, ME, frozenset({"ep2"})))
        bus.publish(ClusterEndpoints("net", live, ME, frozenset({"ep3"})))
        await settle()
        relisted = {"ep3": live["ep3"], "ep7": ep(7)}
        bus.publish(ClusterEndpoints("net", relisted, ME))  # a relist: whole again
        await settle()
        await follower.stop()
        return rec.calls

    calls = asyncio.run(main())
    assert calls == [
        ("program", ["10.0.0.2", "10.0.0.3"]),
        ("patch", ([], ["10.0.0.5"])),
        ("patch", (["10.0.0.2"], ["10.0.0.3"])),
        ("program", ["10.0.0.3", "10.0.0.7"]),
    ]
