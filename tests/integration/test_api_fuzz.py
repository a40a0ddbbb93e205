"""Fuzzing the create endpoints of a real daemon with hypothesis.

Bodies of right and wrong shapes for POST /containers/create and POST /networks/create:
Docker's fields with good values, bad values (ports out of range, addresses that do not
parse, text with newlines and NULs) and values of the wrong JSON type, or whole bodies of the
wrong shape.  Whatever comes in, the answer is never a 5xx and the daemon never logs a
traceback; a 2xx create is a record that lists and inspects (and is then removed).

Bounded for CI: a fixed number of examples, derandomized (the same inputs every run, so a
failure reproduces), no example database.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values of any JSON shape, small.
junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
# Text a careless or hostile client sends: newlines, NULs, blanks, unicode.
nasty = st.sampled_from(["", "a\nb", "x\x00y", "a b", "\t", "é", "x" * 70]) | st.text(max_size=10)


def maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right type, sometimes anything."""
    return st.one_of(good, good, junk)


port_key = st.sampled_from(
    [
        "80",
        "80/tcp",
        "53/udp",
        "7/sctp",
        "0/tcp",
        "70000/tcp",
        "80/icmp",
        "-1",
        "abc",
        "1-70000/tcp",
    ]
) | st.text(max_size=6)
host_ip = st.sampled_from(["", "127.0.0.1", "::1", "[::1]", "1.2.3.4.5", "fe80::1%eth0", "x\n"])
host_port = st.sampled_from(
    ["", "0", "18080", "-1", "70000", "abc", "1-70000", "19000-19001", "9-1"]
)
binding = st.fixed_dictionaries(
    {}, optional={"HostIp": maybe(host_ip), "HostPort": maybe(host_port)}
)
ip = st.sampled_from(["192.0.2.1", "2001:db8::1", "not-an-ip", "1.2.3.4\nnameserver 7.7.7.7", ""])
domain = st.sampled_from(["example.com", ".", "x\nnameserver 7.7.7.7", "-bad-", "a b"]) | nasty
extra_host = st.sampled_from(["db:192.0.2.9", "gw:host-gateway", "a\nb:1.2.3.4", "db", "db:nope"])

host_config = st.fixed_dictionaries(
    {},
    optional={
        "NetworkMode": maybe(
            st.sampled_from(["default", "bridge", "none", "host", "fuzz-net", "container:", "a\nb"])
        ),
        "PortBindings": maybe(
            st.dictionaries(port_key, maybe(st.lists(binding, max_size=2)), max_size=2)
        ),
        "PublishAllPorts": maybe(st.booleans()),
        "Dns": maybe(st.lists(ip, max_size=2)),
        "DnsSearch": maybe(st.lists(domain, max_size=2)),
        "DnsOptions": maybe(
            st.lists(st.sampled_from(["ndots:2", "rotate", "a b", "x\ny"]), max_size=2)
        ),
        "ExtraHosts": maybe(st.lists(extra_host, max_size=2)),
        "AutoRemove": maybe(st.booleans()),
        "RestartPolicy": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "Name": maybe(st.sampled_from(["", "no", "always", "on-failure", "bogus"])),
                    "MaximumRetryCount": maybe(st.integers(-2, 3)),
                },
            )
        ),
        "LogConfig": maybe(
            st.fixed_dictionaries(
                {}, optional={"Type": maybe(st.sampled_from(["", "json-file", "syslog"]))}
            )
        ),
        "Privileged": maybe(st.booleans()),
        "Links": maybe(st.lists(nasty, max_size=2)),
    },
)
endpoint = st.fixed_dictionaries(
    {},
    optional={
        "Aliases": maybe(st.lists(st.sampled_from(["web", "a b", "a\nb"]) | nasty, max_size=2)),
        "IPAMConfig": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "IPv4Address": maybe(st.sampled_from(["10.79.0.50", "1.2.3", "::1", ""])),
                    "IPv6Address": maybe(st.sampled_from(["fd00::5", "1.2.3.4", ""])),
                },
            )
        ),
        "MacAddress": maybe(st.sampled_from(["02:42:ac:11:00:09", "zz", ""])),
    },
)
container_body = (
    st.fixed_dictionaries(
        {},
        optional={
            "Image": maybe(st.sampled_from(["host", "host:latest", "nosuch"])),
            "Cmd": maybe(st.lists(nasty, max_size=3) | nasty),
            "Entrypoint": maybe(st.lists(nasty, max_size=2) | nasty | st.none()),
            "Env": maybe(
                st.lists(st.sampled_from(["A=1", "=x", "A\nB=1", "A=x\x00"]) | nasty, max_size=3)
            ),
            "Hostname": maybe(st.sampled_from(["web", "a\n6.6.6.6 web"]) | nasty),
            "Domainname": maybe(domain),
            "User": maybe(nasty),
            "WorkingDir": maybe(st.sampled_from(["/", "/tmp", "rel", "/a\nb"])),
            "Labels": maybe(st.dictionaries(nasty, nasty, max_size=2)),
            "ExposedPorts": maybe(st.dictionaries(port_key, st.just({}), max_size=2)),
            "MacAddress": maybe(st.sampled_from(["02:42:ac:11:00:02", "zz:zz"])),
            "StopSignal": maybe(st.sampled_from(["SIGTERM", "9", "SIGFOO", "99999"])),
            "StopTimeout": maybe(st.integers(-5, 100)),
            "Tty": maybe(st.booleans()),
            "HostConfig": maybe(host_config),
            "NetworkingConfig": maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "EndpointsConfig": maybe(
                            st.dictionaries(
                                st.sampled_from(["fuzz-net", "bridge", "x"]),
                                maybe(endpoint),
                                max_size=2,
                            )
                        )
                    },
                )
            ),
        },
    )
    | junk
)

subnet = st.sampled_from(
    [
        "10.200.0.0/24",
        "10.201.0.0/16",
        "10.202.0.0/31",
        "10.9.0.0/32",
        "224.0.0.0/24",
        "127.1.0.0/16",
        "0.0.0.0/0",
        "255.255.255.0/24",
        "fd00:10::/64",
        "ff00::/64",
        "fe80::/80",
        "notacidr",
        "10.0.0.0/33",
        "10.79.0.0/24",  # fuzz-net's: overlaps
    ]
)
network_body = (
    st.fixed_dictionaries(
        {},
        optional={
            "Name": maybe(st.sampled_from(["fz-a", "fz-b", "fuzz-net"]) | nasty),
            "Driver": maybe(st.sampled_from(["bridge", "host", "null", "overlay", "nosuch", ""])),
            "Internal": maybe(st.booleans()),
            "Attachable": maybe(st.booleans()),
            "EnableIPv6": maybe(st.booleans()),
            "IPAM": maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "Driver": maybe(st.sampled_from(["default", "other"])),
                        "Config": maybe(
                            st.lists(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "Subnet": maybe(subnet),
                                        "Gateway": maybe(
                                            st.sampled_from(["10.200.0.1", "10.99.0.1", "x"])
                                        ),
                                        "IPRange": maybe(
                                            st.sampled_from(["10.200.0.128/25", "bad"])
                                        ),
                                        "AuxiliaryAddresses": maybe(
                                            st.dictionaries(
                                                nasty,
                                                st.sampled_from(["10.200.0.5", "x"]),
                                                max_size=1,
                                            )
                                        ),
                                    },
                                ),
                                max_size=2,
                            )
                        ),
                        "Options": maybe(st.dictionaries(nasty, nasty, max_size=1)),
                    },
                )
            ),
            "Options": maybe(
                st.dictionaries(
                    st.sampled_from(
                        [
                            "com.docker.network.driver.mtu",
                            "com.docker.network.bridge.enable_icc",
                            "com.docker.network.bridge.enable_ip_masquerade",
                            "com.docker.network.bridge.name",
                        ]
                    )
                    | nasty,
                    st.sampled_from(["1400", "abc", "true", "false", "fz-br0", "br0\n", "x" * 20])
                    | nasty,
                    max_size=2,
                )
            ),
            "Labels": maybe(st.dictionaries(nasty, nasty, max_size=2)),
        },
    )
    | junk
)


def post(h: NamespaceHost, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    resp = h.api.open("POST", path, body=body)
    try:
        data = resp.read()
    finally:
        resp.close()
    return resp.status, json.loads(data) if data else {}


def check_answer(status: int, data: dict[str, Any]) -> None:
    assert status < 500, (status, data)
    if status >= 400:
        message = str(data.get("message", ""))
        assert message and "Traceback" not in message, data


def test_create_endpoints_never_fail_with_a_5xx(host: NamespaceHost) -> None:
    h = host
    h.ok("network", "create", "--subnet", "10.79.0.0/24", "fuzz-net")
    seen = {"containers": 0, "networks": 0}

    @FUZZ
    @given(body=container_body)
    def containers(body: Any) -> None:
        status, data = post(h, "/containers/create", body)
        check_answer(status, data)
        if status == 201:
            seen["containers"] += 1
            cid = data["Id"]
            assert cid in {c["Id"] for c in h.api.get("/containers/json", {"all": 1})}
            assert h.api.get(f"/containers/{cid}/json")["Id"] == cid
            h.api.delete(f"/containers/{cid}", {"force": 1})

    @FUZZ
    @given(body=network_body)
    def networks(body: Any) -> None:
        status, data = post(h, "/networks/create", body)
        check_answer(status, data)
        if status == 201:
            seen["networks"] += 1
            nid = data["Id"]
            assert nid in {n["Id"] for n in h.api.get("/networks")}
            assert h.api.get(f"/networks/{nid}")["Id"] == nid
            h.api.delete(f"/networks/{nid}")

    containers()
    networks()
    # Both kinds of answer were exercised, and nothing was left behind.
    assert seen["containers"] > 0 and seen["networks"] > 0, seen
    assert h.api.get("/containers/json", {"all": 1}) == []
    names = sorted(n["Name"] for n in h.api.get("/networks"))
    assert names == ["bridge", "fuzz-net", "host", "none"], names
    log = h.log()
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]
