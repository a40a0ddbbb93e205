"""The API edge (tether.api): typed request objects, dockerd's messages, and the checks on
text that ends up in a file or a rule.  Pure: no daemon, no root."""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from tether import textcheck
from tether.api import query
from tether.api.containers import (
    ContainerCreate,
    exposed_ports,
    human_size,
    log_rotation,
    parse_signal,
    port_bindings,
)
from tether.api.decode import MAX_DEPTH, check_depth, decode
from tether.api.exec import ExecCreate, ExecStart
from tether.api.images import ImageImport
from tether.api.networks import NetworkConnect, NetworkCreate, check_subnet
from tether.errors import InvalidParameter
from tether.runtime import files
from tether.store import records


def refused(body: object, model: type = ContainerCreate) -> str:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidParameter) as info:
        decode(data, model)
    assert info.value.status == 400
    return info.value.message


# -- Go's json errors, as dockerd words them --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"Image": "b", "Cmd": [5]},
            "invalid JSON: json: cannot unmarshal array into Go struct field CreateRequest.Cmd of type string",
        ),
        (
            {"Image": "b", "Cmd": 5},
            "invalid JSON: json: cannot unmarshal number into Go struct field CreateRequest.Cmd of type string",
        ),
        (
            {"Env": "A=1"},
            "invalid JSON: json: cannot unmarshal string into Go struct field CreateRequest.Env of type []string",
        ),
        (
            {"HostConfig": {"Dns": "8.8.8.8"}},
            "invalid JSON: json: cannot unmarshal string into Go struct field HostConfig.HostConfig.Dns of type []string",
        ),
        (
            {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": 8080}]}}},
            "invalid JSON: json: cannot unmarshal number into Go struct field PortBinding.HostConfig.PortBindings.HostPort of type string",
        ),
        (
            {"HostConfig": {"ShmSize": "1g"}},
            "invalid JSON: json: cannot unmarshal string into Go struct field HostConfig.HostConfig.ShmSize of type int64",
        ),
        (
            {"Labels": {"a": 1}},
            "invalid JSON: json: cannot unmarshal number into Go struct field CreateRequest.Labels of type string",
        ),
        (
            {"StopTimeout": 1.5},
            "invalid JSON: json: cannot unmarshal number into Go struct field CreateRequest.StopTimeout of type int",
        ),
        (
            [1],
            "invalid JSON: json: cannot unmarshal array into Go value of type container.CreateRequest",
        ),
        (
            {"NetworkingConfig": {"EndpointsConfig": {"n": {"Aliases": "x"}}}},
            "invalid JSON: json: cannot unmarshal string into Go struct field EndpointSettings.NetworkingConfig.EndpointsConfig.Aliases of type []string",
        ),
    ],
)
def test_wrong_types_get_gos_message(body: object, message: str) -> None:
    assert refused(body) == message


def test_syntax_and_framing_of_the_json() -> None:
    assert refused(b'{"Image": "b"} {}') == "unexpected content after JSON"
    assert refused(b'{"Image": ') == "invalid JSON: unexpected EOF"
    assert refused(b"\xff\xfe").startswith("invalid JSON")
    assert refused(b'{"Image": "\xff"}') == "invalid JSON: the body is not valid UTF-8"
    assert refused(b"") == "invalid JSON: EOF"
    assert refused({}) == "config cannot be empty in order to create a container"
    assert refused({"HostConfig": {}}) == "config cannot be empty in order to create a container"
    # An empty body is the zero request where dockerd allows one (exec start).
    assert decode(b"", ExecStart, ExecStart()).Detach is None


def test_cmd_as_one_string_is_a_one_element_list_as_docker_takes_it() -> None:
    req = decode(b'{"Image": "b", "Cmd": "echo hi", "Entrypoint": "sh"}', ContainerCreate)
    assert req.cmd == ["echo hi"] and req.entrypoint == ["sh"]
    assert decode(b'{"Image": "b", "Cmd": null}', ContainerCreate).cmd is None


def test_unknown_fields_are_ignored_as_dockerd_does() -> None:
    req = decode(b'{"Image": "b", "SomethingNew": {"x": [1, 2]}}', ContainerCreate)
    assert req.Image == "b"


# -- checks of meaning ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Hostname": "a\n6.6.6.6 web"}, 'invalid hostname format: "a\\n6.6.6.6 web"'),
        ({"Hostname": "a" * 65}, "invalid hostname format: " + "a" * 65),
        ({"Domainname": "x y"}, "invalid domainname format: x y"),
        (
            {"HostConfig": {"DnsSearch": ["x\nnameserver 7.7.7.7"]}},
            '"x\\nnameserver 7.7.7.7" is not a valid domain',
        ),
        ({"HostConfig": {"DnsSearch": ["-bad-"]}}, "-bad- is not a valid domain"),
        (
            {"HostConfig": {"DnsOptions": ["ndots:1\nnameserver 1.1.1.1"]}},
            'invalid DNS option: "ndots:1\\nnameserver 1.1.1.1"',
        ),
        (
            {"HostConfig": {"Dns": ["not-an-ip"]}},
            'invalid JSON: ParseAddr("not-an-ip"): unable to parse IP',
        ),
        (
            {"HostConfig": {"ExtraHosts": ["a\nb:1.2.3.4"]}},
            'bad format for add-host: "a\\nb:1.2.3.4"',
        ),
        (
            {"HostConfig": {"ExtraHosts": ["web:300.1.1.1"]}},
            'invalid IP address in add-host: "300.1.1.1"',
        ),
        ({"Env": ["=x"]}, "invalid environment variable: =x"),
        ({"Env": ["A\nB=1"]}, 'invalid environment variable: "A\\nB=1"'),
        ({"Labels": {"a": "b\nc"}}, 'invalid label "a=b\\nc": control characters are not allowed'),
        ({"ExposedPorts": {"70000/tcp": {}}}, 'invalid port specification: "70000"'),
        ({"ExposedPorts": {"80/icmp": {}}}, "invalid proto: icmp"),
        ({"ExposedPorts": {"abc": {}}}, 'invalid port specification: "abc"'),
        (
            {"HostConfig": {"PortBindings": {"-1/tcp": []}}},
            'invalid port specification: "-1"',
        ),
        (
            {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "1-70000"}]}}},
            'invalid port specification: "1-70000"',
        ),
        (
            {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "abc"}]}}},
            'invalid port specification: "abc"',
        ),
        (
            {"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "1.2.3.4.5"}]}}},
            "invalid IP address: 1.2.3.4.5",
        ),
        (
            {"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "fe80::1%eth0"}]}}},
            "invalid IP address: fe80::1%eth0",
        ),
        (
            {"HostConfig": {"RestartPolicy": {"Name": "sometimes"}}},
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
            "'on-failure', or 'unless-stopped'",
        ),
        (
            {"HostConfig": {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 2}}},
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
        (
            {"HostConfig": {"LogConfig": {"Type": "syslog"}}},
            "tether does not support the syslog log driver: use json-file or none",
        ),
        (
            {"HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"bogus": "1"}}}},
            "unknown log opt 'bogus' for json-file log driver",
        ),
        (
            {"HostConfig": {"LogConfig": {"Config": {"max-size": "ten"}}}},
            "invalid size: 'ten'",
        ),
        (
            {"HostConfig": {"LogConfig": {"Config": {"max-size": "0"}}}},
            "max-size must be a positive number",
        ),
        (
            {"HostConfig": {"LogConfig": {"Config": {"max-size": "1m", "max-file": "0"}}}},
            "max-file cannot be less than 1",
        ),
        (
            {"HostConfig": {"LogConfig": {"Config": {"max-size": "1m", "max-file": "x"}}}},
            'strconv.Atoi: parsing "x": invalid syntax',
        ),
        (
            {"HostConfig": {"LogConfig": {"Config": {"compress": "true"}}}},
            "tether does not support the log opt 'compress'",
        ),
        (
            {"HostConfig": {"LogConfig": {"Config": {"tag": "{{.Name}}"}}}},
            "tether does not support the log opt 'tag'",
        ),
        (
            {"HostConfig": {"LogConfig": {"Type": "none", "Config": {"max-size": "1m"}}}},
            "unknown log opt 'max-size' for none log driver",
        ),
        (
            {"WorkingDir": "relative"},
            "the working directory 'relative' is invalid, it needs to be an absolute path",
        ),
        ({"StopSignal": "SIGFOO"}, "Invalid signal: SIGFOO"),
        ({"MacAddress": "zz:zz"}, "invalid MAC address: zz:zz"),
        (
            {"Hostname": "h", "HostConfig": {"NetworkMode": "container:other"}},
            "conflicting options: hostname and the network mode",
        ),
        (
            {"NetworkingConfig": {"EndpointsConfig": {"n": {"Aliases": ["a\nb"]}}}},
            'invalid network alias: "a\\nb"',
        ),
        (
            {
                "NetworkingConfig": {
                    "EndpointsConfig": {"n": {"IPAMConfig": {"IPv4Address": "::1"}}}
                }
            },
            "invalid IPv4 address: ::1",
        ),
        (
            {"Cmd": ["a\u0000b"]},
            'invalid argument "a\\x00b": NUL characters cannot be passed to a process',
        ),
    ],
)
def test_values_that_would_land_in_a_file_or_rule_are_refused(body: dict, message: str) -> None:
    assert refused({"Image": "b", **body}) == message


def test_a_valid_request_passes_and_converts_to_canonical_ports() -> None:
    req = decode(
        json.dumps(
            {
                "Image": "busybox",
                "Hostname": "web",
                "Env": ["A=multi\nline value"],  # values may hold newlines, as in docker
                "ExposedPorts": {"80": {}, "53/UDP": {}},
                "HostConfig": {
                    "Dns": ["192.0.2.53", "2001:db8::53"],
                    "DnsSearch": ["example.com", "."],
                    "DnsOptions": ["ndots:2"],
                    "ExtraHosts": ["db:10.0.0.5", "gw:host-gateway"],
                    "PortBindings": {"80/tcp": [{"HostIp": "[::1]", "HostPort": "8080-8090"}]},
                    "RestartPolicy": {"Name": "no"},
                    "LogConfig": {"Type": "json-file", "Config": {}},
                },
            }
        ).encode(),
        ContainerCreate,
    )
    assert exposed_ports(req.ExposedPorts) == {"80/tcp": {}, "53/udp": {}}
    assert port_bindings(req.host.PortBindings) == {
        "80/tcp": [{"HostIp": "[::1]", "HostPort": "8080-8090"}]
    }


def test_json_file_rotation_options_as_dockerd_reads_them() -> None:
    # go-units' FromHumanSize: decimal units, optional i/b, a space allowed.
    assert human_size("10m") == 10_000_000
    assert human_size("1.5k") == 1500
    assert human_size("2 GiB") == 2_000_000_000
    assert human_size("512") == 512
    assert log_rotation({}) == (0, 1)
    assert log_rotation({"max-size": "10m", "max-file": "3"}) == (10_000_000, 3)
    assert log_rotation({"max-file": "3"}) == (0, 3)  # dockerd: accepted, never rotated
    # A number Go's ParseFloat refuses: its words, a 400 (not a 500).
    assert (
        refused({"Image": "b", "HostConfig": {"LogConfig": {"Config": {"max-size": "1.2.3m"}}}})
        == 'strconv.ParseFloat: parsing "1.2.3": invalid syntax'
    )
    req = decode(
        json.dumps(
            {
                "Image": "b",
                "HostConfig": {
                    "LogConfig": {
                        "Type": "json-file",
                        "Config": {"max-size": "10m", "max-file": "3", "compress": "false"},
                    }
                },
            }
        ).encode(),
        ContainerCreate,
    )
    assert req.host.LogConfig is not None


def test_signals() -> None:
    assert parse_signal("TERM") == 15 and parse_signal("SIGKILL") == 9 and parse_signal("2") == 2
    for bad in ("SIGFOO", "0", "99999", "-1"):
        with pytest.raises(InvalidParameter):
            parse_signal(bad)


# -- networks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("10.9.0.1/32", "Invalid subnet 10.9.0.1/32 : no available addresses on this pool"),
        ("fd00::1/128", "Invalid subnet fd00::1/128 : no available addresses on this pool"),
        ("224.1.0.0/16", "multicast subnet '224.1.0.0/16' is not allowed"),
        ("ff02::/64", "multicast subnet 'ff02::/64' is not allowed"),
        ("127.9.0.0/16", "'127.9.0.0/16' clashes with the Loopback prefix '127.0.0.0/8'"),
        ("0.1.0.0/16", "'0.1.0.0/16' clashes with the reserved prefix '0.0.0.0/8'"),
        (
            "255.255.255.0/24",
            "'255.255.255.0/24' clashes with the broadcast address '255.255.255.255/32'",
        ),
        ("fe80::/80", "'fe80::/80' clashes with the Link-Local prefix 'fe80::/64'"),
        ("::ffff:10.0.0.0/120", "'::ffff:10.0.0.0/120' is not a valid IPv6 subnet"),
        ("10.155.0.0/33", "Invalid subnet 10.155.0.0/33 : invalid CIDR address: 10.155.0.0/33"),
        (
            "10.70.0.5/24",
            "invalid network config:\ninvalid subnet 10.70.0.5/24: it should be 10.70.0.0/24",
        ),
        (
            "fd00:1::5/64",
            "invalid network config:\ninvalid subnet fd00:1::5/64: it should be fd00:1::/64",
        ),
    ],
)
def test_unusable_subnets(subnet: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        check_subnet(subnet)
    assert info.value.message == message
    assert (
        refused({"Name": "n", "IPAM": {"Config": [{"Subnet": subnet}]}}, NetworkCreate) == message
    )


@pytest.mark.parametrize(
    "subnet", ["10.9.0.0/31", "172.30.0.0/16", "169.254.0.0/16", "fd00:1::/64", "fe80::/64"]
)
def test_usable_subnets(subnet: str) -> None:
    check_subnet(subnet)


def test_network_requests() -> None:
    assert refused({"Name": "a\nb"}, NetworkCreate).startswith('invalid network name: "a\\nb"')
    assert (
        refused(
            {"Name": "n", "Options": {"com.docker.network.bridge.name": "br0\n"}}, NetworkCreate
        )
        == 'invalid driver option value: "br0\\n": control characters are not allowed'
    )
    assert refused({"Name": "n", "IPAM": {"Config": {"Subnet": "1"}}}, NetworkCreate) == (
        "invalid JSON: json: cannot unmarshal object into Go struct field IPAM.IPAM.Config of type []network.IPAMConfig"
    )
    req = decode(b'{"Name": "n", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}]}}', NetworkCreate)
    assert req.to_body() == {"Name": "n", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}]}}
    assert refused({"Container": "c", "EndpointConfig": {"Aliases": ["a b"]}}, NetworkConnect) == (
        'invalid network alias: "a b"'
    )


def test_exec_requests() -> None:
    assert refused({"Cmd": "ls"}, ExecCreate) == (
        "invalid JSON: json: cannot unmarshal string into Go struct field ExecOptions.Cmd of type []string"
    )
    assert refused({"Cmd": ["ls"], "Env": ["=x"]}, ExecCreate) == "invalid environment variable: =x"


# -- nesting ----------------------------------------------------------------------------------


def test_deep_nesting_is_refused_cheaply() -> None:
    deep = b'{"Image": "b", "X": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    started = time.perf_counter()
    assert refused(deep) == f"invalid JSON: nesting deeper than {MAX_DEPTH} levels is not accepted"
    assert time.perf_counter() - started < 1.0
    ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    check_depth(ok)
    with pytest.raises(InvalidParameter):
        check_depth(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    # Brackets inside strings do not count; many shallow ones are fine.
    check_depth(json.dumps({"k": "[" * 10_000, "l": [[] for _ in range(10_000)]}).encode())


# -- query parameters and image imports ---------------------------------------------------------


def test_query_parameters() -> None:
    assert query.atoi("10") == 10 and query.atoi("") is None and query.atoi(None) is None
    for bad, msg in (
        ("abc", 'strconv.Atoi: parsing "abc": invalid syntax'),
        ("1.5", 'strconv.Atoi: parsing "1.5": invalid syntax'),
        (
            "99999999999999999999",
            'strconv.Atoi: parsing "99999999999999999999": value out of range',
        ),
    ):
        with pytest.raises(InvalidParameter) as info:
            query.atoi(bad)
        assert info.value.message == msg
    assert query.tail("all") is None and query.tail("5") == 5
    with pytest.raises(InvalidParameter):
        query.tail("abc")
    with pytest.raises(InvalidParameter):
        query.timestamp("since", "yesterday")
    assert query.timestamp("since", "1700000000.5") == 1700000000.5
    with pytest.raises(InvalidParameter):
        query.size("h", "70000", 24)
    assert query.container_name("/web-1") == "web-1"
    for bad in ("a\nb", "web\n", "c", "-x", "a b"):
        with pytest.raises(InvalidParameter):
            query.container_name(bad)


def test_image_import_requests() -> None:
    ok = ImageImport.from_query({"fromSrc": ["-"], "repo": ["busybox"], "tag": ["1.36"]})
    assert ok.repo == "busybox"
    for q, msg in (
        ({"fromSrc": ["http://x"]}, "importing from a URL is not supported"),
        ({"fromSrc": ["-"], "repo": ["BusyBox"]}, "must be lowercase"),
        ({"fromSrc": ["-"], "repo": ["a b"]}, "invalid reference format"),
        ({"fromSrc": ["-"], "repo": ["a"], "tag": ["bad tag"]}, "invalid tag format"),
    ):
        with pytest.raises(InvalidParameter) as info:
            ImageImport.from_query(q)
        assert msg in info.value.message
    spec = ImageImport.from_query({"fromSrc": ["-"]})
    for config, msg in (
        ({"Env": ["=x"]}, "invalid environment variable"),
        ({"ExposedPorts": {"70000/tcp": {}}}, "invalid port specification"),
        ({"WorkingDir": "rel"}, "needs to be an absolute path"),
        ({"StopSignal": "SIGFOO"}, "Invalid signal"),
        ({"Labels": {"a": "b\nc"}}, "control characters"),
    ):
        with pytest.raises(InvalidParameter) as info:
            spec.check_config(config)
        assert msg in info.value.message


# -- the CLI's checks (docker's client-side validators) --------------------------------------------


def test_cli_validators() -> None:
    assert textcheck.check_ip(" 192.0.2.1 ") == "192.0.2.1"
    with pytest.raises(ValueError, match="IP address is not correctly formatted: not-an-ip"):
        textcheck.check_ip("not-an-ip")
    assert textcheck.check_dns_search("example.com") == "example.com"
    assert textcheck.check_dns_search("example.com\n") == "example.com"  # docker trims
    assert textcheck.check_dns_search(".") == "."
    for bad in ("x\nnameserver 7.7.7.7", "1.2.3.4", "-a.com", "a..b", "a b"):
        with pytest.raises(ValueError, match="is not a valid domain"):
            textcheck.check_dns_search(bad)
    assert textcheck.check_extra_host_arg("db=[::1]") == "db:::1"
    with pytest.raises(ValueError, match="bad format for add-host"):
        textcheck.check_extra_host_arg("a\nb:1.2.3.4")
    with pytest.raises(ValueError, match="contains whitespaces"):
        textcheck.check_label_arg("a b=c")
    with pytest.raises(ValueError, match="empty name"):
        textcheck.check_label_arg("=c")


# -- the files a container gets never take an injected line ------------------------------------


def test_hosts_and_resolv_conf_never_take_an_injected_line() -> None:
    hosts = files.hosts(
        "a\n6.6.6.6 web", "", ["172.18.0.2"], [("x\n7.7.7.7 evil", "1.2.3.4"), ("ok", "1.2.3.5")]
    )
    assert "6.6.6.6" not in hosts and "7.7.7.7" not in hosts and "1.2.3.5\tok\n" in hosts
    text, _ = files.resolv_conf(
        "nameserver 192.0.2.53\n",
        ["192.0.2.1", "8.8.8.8\nnameserver 7.7.7.7"],
        ["x\nnameserver 7.7.7.7", "good.example"],
        ["ndots:1\nnameserver 6.6.6.6", "rotate"],
        embedded=False,
    )
    assert "7.7.7.7" not in text and "6.6.6.6" not in text
    assert text == "search good.example\nnameserver 192.0.2.1\noptions rotate\n"


# -- stored records -----------------------------------------------------------------------------


def test_stored_records_that_no_longer_parse_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    good = {
        "id": "a" * 64,
        "name": "good",
        "created": "2026-01-01T00:00:00Z",
        "image": "busybox",
        "image_id": "sha256:x",
        "path": "sh",
        "args": [],
        "config": {"Cmd": ["sh"]},
        "host_config": {"NetworkMode": "default"},
    }
    bad_cmd = {**good, "id": "b" * 64, "name": "bad", "config": {"Cmd": [5]}}
    bad_args = {**good, "id": "c" * 64, "name": "bad2", "args": [5]}
    missing = {"id": "d" * 64}
    loaded = records.parse_all("container", [good, bad_cmd, bad_args, missing], records.container)
    assert [c.name for c in loaded] == ["good"]
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 3 and "b" * 64 in skipped[0] and "c" * 64 in skipped[1]
    with pytest.raises(msgspec.ValidationError):
        records.network({"id": "n", "name": "n", "driver": "bridge", "created": "", "pools": "x"})


def test_settings_tether_cannot_enforce_are_refused_unless_default() -> None:
    from tether import unsupported

    hc = {"Image": "b", "HostConfig": {}}
    assert refused({**hc, "HostConfig": {"PidsLimit": 10}}) == unsupported.PIDS_LIMIT
    assert refused({**hc, "HostConfig": {"Memory": 1 << 20}}) == unsupported.MEMORY
    # Docker's defaults (what docker's own CLI sends) pass.
    for body in (
        {"Image": "b", "User": ""},
        {"Image": "b", "User": "root"},
        {"Image": "b", "User": "0:0"},
        {**hc, "HostConfig": {"ReadonlyRootfs": False, "PidsLimit": 0, "Memory": 0}},
        {**hc, "HostConfig": {"PidsLimit": -1}},
        {**hc, "HostConfig": {"PidsLimit": None}},
    ):
        decode(json.dumps(body).encode(), ContainerCreate)
    decode(b'{"Cmd": ["id"], "User": "root"}', ExecCreate)
