"""Port allocation against the store's key: an allocation that loses a race is refused, and
what a failed publish gives back is only what it took (real SQLite, real sockets on
127.0.0.1; the relay and the firewall are recorders, as they need root and a daemon)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tether.firewall.publish import Publisher, PublishError
from tether.model import Container
from tether.store.sqlite import Store


class Recorder:
    """Stands in for the nftables firewall and the port relay: records what it is given."""

    sock = None

    def __init__(self) -> None:
        self.added: list[Any] = []
        self.on_lost = None

    def add_ports(self, rules: list[Any]) -> None:
        self.added += rules

    def remove_ports(self, rules: list[Any]) -> None:
        pass

    def add(self, items: list[Any]) -> None:
        self.added += [key for key, _tgt, _sock in items]

    def remove(self, keys: list[Any]) -> None:
        pass

    def quit(self) -> None:
        pass


class RacingStore(Store):
    """Another container's allocation of `port` lands between the check and the insert."""

    def __init__(self, port: int) -> None:
        super().__init__(":memory:")
        self.port = port

    def reserve_port(self, proto: str, host_ip: str, port: int, owner: str) -> bool:
        if port == self.port:
            super().reserve_port(proto, host_ip, port, "someone-else")
        return super().reserve_port(proto, host_ip, port, owner)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_pair() -> int:
    """A port that is free, with the next one free too."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free ports in a row")


def container(bindings: dict[str, list[dict[str, str]]]) -> Container:
    return Container("c" * 64, "web", "", "busybox", "", "sh", [], {}, {"PortBindings": bindings})


def publisher(store: Store) -> Publisher:
    rec = Recorder()
    return Publisher(store, rec, rec)  # type: ignore[arg-type]


def test_a_fixed_port_allocated_meanwhile_is_refused_and_nothing_is_kept() -> None:
    taken, other = free_port(), free_port()
    store = RacingStore(taken)
    c = container(
        {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(other)}],
            "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(taken)}],
        }
    )
    with pytest.raises(PublishError, match=f"127.0.0.1:{taken} failed: port is already allocated"):
        publisher(store).publish(c, "10.0.0.2", "e" * 64)
    # The other owner keeps its row; this container holds nothing, and its sockets are closed.
    assert store.ports() == [("tcp", "127.0.0.1", taken, "someone-else")]
    for port in (taken, other):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_range_port_allocated_meanwhile_moves_on_to_the_next() -> None:
    first = free_pair()
    store = RacingStore(first)
    c = container({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": f"{first}-{first + 1}"}]})
    done = publisher(store).publish(c, "10.0.0.2", "e" * 64)
    assert [(b.host_ip, b.host_port) for b in done] == [("127.0.0.1", first + 1)]
    assert sorted(store.ports()) == [
        ("tcp", "127.0.0.1", first, "someone-else"),
        ("tcp", "127.0.0.1", first + 1, "c" * 64),
    ]
