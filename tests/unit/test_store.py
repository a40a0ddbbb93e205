"""The store: transactions roll back whole, and an address can never be held twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tether.errors import Conflict
from tether.store.sqlite import Store


def test_transaction_rolls_back_everything(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "t.db"))
    with pytest.raises(RuntimeError), s.transaction():
        s.put("network", "a", "n", {"id": "a"})
        s.reserve_address("a", "10.0.0.1", "gateway")
        raise RuntimeError("boom")
    assert s.load("network") == [] and s.addresses() == []


def test_names_and_addresses_are_unique(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "t.db"))
    with s.transaction():
        s.put("network", "a", "same", {"id": "a"})
    with pytest.raises(Conflict), s.transaction():
        s.put("network", "b", "same", {"id": "b"})
    with s.transaction():
        s.reserve_address("a", "10.0.0.2", "ep1")
    with pytest.raises(Conflict, match="Address already in use"), s.transaction():
        s.reserve_address("a", "10.0.0.2", "ep2")


def test_concurrent_writers_never_duplicate(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    Store(path).close()
    won: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        s = Store(path)
        for i in range(50):
            try:
                with s.transaction():
                    s.reserve_address("net", f"10.0.0.{i}", f"w{n}")
                with lock:
                    won.append(f"10.0.0.{i}")
            except Conflict:
                pass
        s.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(f"10.0.0.{i}" for i in range(50))
    assert len(Store(path).addresses()) == 50


def test_networks_stored_before_drivers_owned_their_state_still_load() -> None:
    """A record written by an earlier tether (bridge fields at the top level) loads with its
    fields in the bridge driver's state."""
    from tether.drivers.bridge import BridgeState
    from tether.store import records

    doc = {
        "id": "a" * 64,
        "name": "old",
        "driver": "bridge",
        "created": "2026-11-28T00:00:00Z",
        "pools": [{"subnet": "10.9.0.0/16", "gateway": "10.9.0.1"}],
        "bridge_name": "tb-aaaaaaaaaaaa",
        "bridge_external": False,
        "mtu": 1450,
        "icc": False,
        "masquerade": True,
    }
    net = records.network(doc)
    assert BridgeState.of(net) == BridgeState("tb-aaaaaaaaaaaa", False, 1450, False, True)
