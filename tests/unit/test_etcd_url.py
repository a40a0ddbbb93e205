"""--cluster-store values and the client's key arithmetic (no etcd needed)."""

from __future__ import annotations

import pytest

from tether.errors import InvalidParameter
from tether.store.etcd import EtcdClient, TLSFiles, _prefix_end, parse_store_url


def test_members_ports_and_schemes() -> None:
    u = parse_store_url("etcd://10.99.0.11:2379,10.99.0.12,[fd00::1]:32379")
    assert u.members == ("10.99.0.11:2379", "10.99.0.12:2379", "[fd00::1]:32379")
    assert u.base_urls(tls=False)[0] == "http://10.99.0.11:2379"
    assert u.base_urls(tls=True)[2] == "https://[fd00::1]:32379"
    assert u.display == "etcd://10.99.0.11:2379,10.99.0.12:2379,[fd00::1]:32379"
    # An explicit scheme wins over the TLS files' presence; repeating it per member is fine.
    u = parse_store_url("http://a:1,http://b:2")
    assert u.base_urls(tls=True) == ["http://a:1", "http://b:2"]
    assert parse_store_url("https://etcd.example:2379").base_urls(tls=False) == [
        "https://etcd.example:2379"
    ]


def test_a_path_is_the_key_prefix() -> None:
    u = parse_store_url("etcd://a:2379,b:2379/clusters/blue/")
    assert u.path == "clusters/blue"
    assert EtcdClient(u).prefix == "clusters/blue/"
    assert EtcdClient(u, prefix="other/").prefix == "other/"
    assert EtcdClient("etcd://a:2379").prefix == ""


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("10.0.0.1:2379", "expected etcd://HOST:PORT"),
        ("consul://a:8500", "unsupported scheme 'consul'"),
        ("etcd://a:2379,,b:2379", "empty member address"),
        ("etcd://a:notaport", "invalid port 'notaport'"),
        ("etcd://a:70000", "invalid port '70000'"),
        ("etcd://[fd00::zz]:2379", "invalid IPv6 address"),
        ("etcd://a:2379,http://b:2379", "same scheme"),
        ("etcd://user@a:2379", "invalid member address"),
    ],
)
def test_bad_store_urls_are_refused_with_the_reason(spec: str, why: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        parse_store_url(spec)
    assert err.value.message.startswith(f"invalid cluster store {spec!r}: ")
    assert why in err.value.message


def test_tls_files_must_exist_and_come_in_pairs() -> None:
    with pytest.raises(InvalidParameter, match=r"both kv\.certfile and kv\.keyfile"):
        TLSFiles(certfile="/x.crt").context()
    with pytest.raises(InvalidParameter, match="no such file"):
        TLSFiles(cafile="/nonexistent/ca.pem").context()


def test_prefix_end() -> None:
    assert _prefix_end(b"tether/") == b"tether0"
    assert _prefix_end(b"a\xff") == b"b"
    assert _prefix_end(b"\xff\xff") == b"\0"
    assert _prefix_end(b"") == b"\0"
