"""tetherd's cluster flags (pure parsing)."""

from __future__ import annotations

import pytest

from tether.cluster.config import build, parse_duration, resolve_advertise
from tether.errors import InvalidParameter

IFACES = {"eth0": "10.99.0.11", "lo": "127.0.0.1"}


def test_advertise_takes_an_ip_or_an_interface_and_a_port() -> None:
    assert resolve_advertise("10.99.0.11", IFACES) == ("10.99.0.11", 0)
    assert resolve_advertise("eth0:2376", IFACES) == ("10.99.0.11", 2376)
    assert resolve_advertise("10.99.0.11:2376", IFACES) == ("10.99.0.11", 2376)
    for bad in ("eth9", "127.0.0.1", "0.0.0.0", "10.99.0.11:99999", "eth0:x", "lo"):
        with pytest.raises(InvalidParameter):
            resolve_advertise(bad, IFACES)


def test_store_opts_tls_prefix_and_ttl() -> None:
    opts = build(
        "etcd://10.99.0.11:2379,10.99.0.12:2379",
        "eth0",
        "n1",
        [
            "kv.cacertfile=/c/ca.pem",
            "kv.certfile=/c/cert.pem",
            "kv.keyfile=/c/key.pem",
            "kv.path=/clusters/blue/",
            "discovery.ttl=15s",
        ],
        4789,
        IFACES,
    )
    assert (opts.advertise, opts.node_name, opts.prefix, opts.ttl) == (
        "10.99.0.11",
        "n1",
        "/clusters/blue",
        15,
    )
    assert (opts.cacert, opts.cert, opts.key) == ("/c/ca.pem", "/c/cert.pem", "/c/key.pem")
    defaults = build("etcd://h:2379", "10.99.0.11", "n1", [], 4789, IFACES)
    assert (defaults.prefix, defaults.ttl, defaults.vxlan_port) == ("/tether", 10, 4789)


@pytest.mark.parametrize(
    ("advertise", "opts", "port", "message"),
    [
        ("", [], 4789, "needs --cluster-advertise"),
        ("eth0", ["kv.certfile=/x"], 4789, "go together"),
        ("eth0", ["kv.bogus=1"], 4789, "unknown --cluster-store-opt"),
        ("eth0", ["kv.path"], 4789, "want key=value"),
        ("eth0", ["kv.path=relative"], 4789, "absolute key prefix"),
        ("eth0", ["discovery.ttl=1s"], 4789, "at least 2s"),
        ("eth0", ["discovery.ttl=soon"], 4789, "invalid duration"),
        ("eth0", [], 0, "--data-path-port"),
    ],
)
def test_bad_cluster_flags_are_refused(
    advertise: str, opts: list[str], port: int, message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        build("etcd://h:2379", advertise, "n1", opts, port, IFACES)


def test_durations() -> None:
    assert [parse_duration(x) for x in ("10", "10s", "2m", "1h")] == [10, 10, 120, 3600]


def test_the_prefix_in_the_store_url_is_used_and_must_agree_with_kv_path() -> None:
    opts = build("etcd://10.0.0.1:2379/team-a", "10.0.0.2", "n1", [], 4789, {})
    assert opts.prefix == "/team-a"
    same = build("etcd://10.0.0.1:2379/team-a", "10.0.0.2", "n1", ["kv.path=/team-a"], 4789, {})
    assert same.prefix == "/team-a"
    with pytest.raises(InvalidParameter, match="differ"):
        build("etcd://10.0.0.1:2379/team-a", "10.0.0.2", "n1", ["kv.path=/b"], 4789, {})
    assert build("etcd://10.0.0.1:2379", "10.0.0.2", "n1", [], 4789, {}).prefix == "/tether"
