"""The API edge against a real daemon: malformed requests, raw, over the unix socket.

One table of more than a hundred requests a careless or hostile client could send (wrong
types, values that would land in a container's /etc files or in an nftables rule, unusable
subnets, bad query parameters, broken HTTP framing).  Each must be answered 4xx with
Docker's message (a JSON body, never a dropped connection), must change nothing (the
container and network lists, the images, the address allocations, the nftables table and
the links in the host's namespace are compared after every request), and the daemon's log
must hold no traceback at the end.
"""

from __future__ import annotations

import _socket
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def request(
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw_body: bytes | None = None,
) -> bytes:
    """One HTTP/1.1 request as bytes; `body` is sent as JSON."""
    data = raw_body if raw_body is not None else b""
    hdrs = {"Host": "tether"}
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if data or method == "POST":
        hdrs["Content-Length"] = str(len(data))
    hdrs.update(headers or {})
    head = f"{method} /v1.41{path} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None)
    return head.encode() + b"\r\n" + data


def exchange(socket_path: str, data: bytes, shut: bool = False) -> tuple[int, dict[str, Any]]:
    """Send raw bytes, read one answer: (status, JSON body).  A dropped connection fails."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(socket_path)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early (413): the answer is still there to read
        if shut:
            s.shutdown(_socket.SHUT_WR)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"connection dropped without an answer (got {buf!r})"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = s.recv(65536)
            assert chunk, "connection dropped in the middle of the answer"
            rest += chunk
        assert headers.get("content-type", "").startswith("application/json"), headers
        return status, json.loads(rest[:length]) if length else {}
    finally:
        s.close()


@dataclass
class Case:
    name: str
    data: bytes
    status: int
    message: str  # Docker's text (the whole message, or the part that does not vary)
    shut: bool = False


def post(path: str, body: Any, **kw: Any) -> bytes:
    return request("POST", path, body, **kw)


def create(body: dict[str, Any], name: str | None = None) -> bytes:
    return post("/containers/create" + (f"?name={name}" if name else ""), body)


def hc(host_config: dict[str, Any]) -> bytes:
    return create({"Image": "busybox", "HostConfig": host_config})


def ep(settings: dict[str, Any]) -> bytes:
    return create(
        {
            "Image": "busybox",
            "HostConfig": {"NetworkMode": "edge-net"},
            "NetworkingConfig": {"EndpointsConfig": {"edge-net": settings}},
        }
    )


def net(body: dict[str, Any]) -> bytes:
    return post("/networks/create", {"Name": "edge-new", **body})


def subnet(s: str) -> bytes:
    return net({"IPAM": {"Config": [{"Subnet": s}]}})


GO = "invalid JSON: json: cannot unmarshal "


def cases(exec_id: str) -> list[Case]:
    # A table: one case per entry reads better than one argument per line.
    # fmt: off
    c = [
        # -- container create: types (dockerd's Go decoder texts) ------------------------------
        Case("cmd-number-in-list", create({"Image": "busybox", "Cmd": [5]}), 400,
             GO + "array into Go struct field CreateRequest.Cmd of type string"),
        Case("cmd-number", create({"Image": "busybox", "Cmd": 5}), 400,
             GO + "number into Go struct field CreateRequest.Cmd of type string"),
        Case("cmd-object", create({"Image": "busybox", "Cmd": {"a": 1}}), 400,
             GO + "object into Go struct field CreateRequest.Cmd of type string"),
        Case("entrypoint-bool", create({"Image": "busybox", "Entrypoint": [True]}), 400,
             GO + "array into Go struct field CreateRequest.Entrypoint of type string"),
        Case("env-string", create({"Image": "busybox", "Env": "A=1"}), 400,
             GO + "string into Go struct field CreateRequest.Env of type []string"),
        Case("env-number", create({"Image": "busybox", "Env": [1]}), 400,
             GO + "number into Go struct field CreateRequest.Env of type string"),
        Case("labels-list", create({"Image": "busybox", "Labels": ["a"]}), 400,
             GO + "array into Go struct field CreateRequest.Labels of type map[string]string"),
        Case("labels-number", create({"Image": "busybox", "Labels": {"a": 1}}), 400,
             GO + "number into Go struct field CreateRequest.Labels of type string"),
        Case("hostname-number", create({"Image": "busybox", "Hostname": 5}), 400,
             GO + "number into Go struct field CreateRequest.Hostname of type string"),
        Case("image-number", create({"Image": 5}), 400,
             GO + "number into Go struct field CreateRequest.Image of type string"),
        Case("stoptimeout-string", create({"Image": "busybox", "StopTimeout": "5"}), 400,
             GO + "string into Go struct field CreateRequest.StopTimeout of type int"),
        Case("stoptimeout-float", create({"Image": "busybox", "StopTimeout": 1.5}), 400,
             GO + "number into Go struct field CreateRequest.StopTimeout of type int"),
        Case("stopsignal-number", create({"Image": "busybox", "StopSignal": 9}), 400,
             GO + "number into Go struct field CreateRequest.StopSignal of type string"),
        Case("tty-string", create({"Image": "busybox", "Tty": "yes"}), 400,
             GO + "string into Go struct field CreateRequest.Tty of type bool"),
        Case("attach-string", create({"Image": "busybox", "AttachStdout": "true"}), 400,
             GO + "string into Go struct field CreateRequest.AttachStdout of type bool"),
        Case("exposed-list", create({"Image": "busybox", "ExposedPorts": ["80"]}), 400,
             GO + "array into Go struct field CreateRequest.ExposedPorts of type nat.PortSet"),
        Case("hostconfig-list", create({"Image": "busybox", "HostConfig": []}), 400,
             GO + "array into Go struct field CreateRequest.HostConfig of type container.HostConfig"),
        Case("body-array", post("/containers/create", [1]), 400,
             GO + "array into Go value of type container.CreateRequest"),
        Case("body-string", post("/containers/create", "x"), 400,
             GO + "string into Go value of type container.CreateRequest"),
        Case("body-empty", request("POST", "/containers/create", raw_body=b"",
             headers={"Content-Type": "application/json"}), 400,
             "invalid JSON: EOF"),
        Case("body-truncated-json", request("POST", "/containers/create",
             raw_body=b'{"Image": "busybox", ', headers={"Content-Type": "application/json"}),
             400, "invalid JSON: unexpected EOF"),
        Case("body-trailing-data", request("POST", "/containers/create",
             raw_body=b'{"Image": "busybox"} {"Image": "x"}',
             headers={"Content-Type": "application/json"}), 400, "unexpected content after JSON"),
        Case("body-not-utf8", request("POST", "/containers/create",
             raw_body=b'{"Image": "busy\xffbox"}', headers={"Content-Type": "application/json"}),
             400, "invalid JSON: the body is not valid UTF-8"),
        Case("body-deep", request("POST", "/containers/create",
             raw_body=b'{"Image": "busybox", "X": ' + b"[" * 5000 + b"]" * 5000 + b"}",
             headers={"Content-Type": "application/json"}), 400,
             "invalid JSON: nesting deeper than 64 levels is not accepted"),
        Case("body-no-config", create({}), 400,
             "config cannot be empty in order to create a container"),
        Case("body-no-image", create({"Cmd": ["true"]}), 400, "No image specified"),
        Case("image-unknown", create({"Image": "nosuch"}), 404, "No such image: nosuch:latest"),
        # -- container create: values that end up in a file, a rule or an argv -----------------
        Case("hostname-injection", create({"Image": "busybox", "Hostname": "a\n6.6.6.6 web"}),
             400, 'invalid hostname format: "a\\n6.6.6.6 web"'),
        Case("hostname-space", create({"Image": "busybox", "Hostname": "a b"}), 400,
             "invalid hostname format: a b"),
        Case("hostname-too-long", create({"Image": "busybox", "Hostname": "h" * 65}), 400,
             "invalid hostname format: " + "h" * 65),
        Case("domainname-newline", create({"Image": "busybox", "Domainname": "x\ny"}), 400,
             'invalid domainname format: "x\\ny"'),
        Case("env-empty-name", create({"Image": "busybox", "Env": ["=x"]}), 400,
             "invalid environment variable: =x"),
        Case("env-newline-name", create({"Image": "busybox", "Env": ["A\nB=1"]}), 400,
             'invalid environment variable: "A\\nB=1"'),
        Case("env-nul", create({"Image": "busybox", "Env": ["A=x\u0000y"]}), 400,
             'invalid environment variable: "A=x\\x00y"'),
        Case("label-newline", create({"Image": "busybox", "Labels": {"a\nb": "c"}}), 400,
             'invalid label "a\\nb=c": control characters are not allowed'),
        Case("label-value-nul", create({"Image": "busybox", "Labels": {"a": "c\u0000"}}), 400,
             'invalid label "a=c\\x00": control characters are not allowed'),
        Case("cmd-nul", create({"Image": "busybox", "Cmd": ["echo", "a\u0000b"]}), 400,
             'invalid argument "a\\x00b": NUL characters cannot be passed to a process'),
        Case("workdir-relative", create({"Image": "busybox", "WorkingDir": "tmp"}), 400,
             "the working directory 'tmp' is invalid, it needs to be an absolute path"),
        Case("mac-bad", create({"Image": "busybox", "MacAddress": "zz:zz"}), 400,
             "invalid MAC address: zz:zz"),
        Case("stopsignal-unknown", create({"Image": "busybox", "StopSignal": "SIGFOO"}), 400,
             "Invalid signal: SIGFOO"),
        Case("exposed-70000", create({"Image": "busybox", "ExposedPorts": {"70000/tcp": {}}}),
             400, 'invalid port specification: "70000"'),
        Case("exposed-icmp", create({"Image": "busybox", "ExposedPorts": {"80/icmp": {}}}), 400,
             "invalid proto: icmp"),
        Case("exposed-abc", create({"Image": "busybox", "ExposedPorts": {"abc/tcp": {}}}), 400,
             'invalid port specification: "abc"'),
        Case("name-newline", create({"Image": "busybox"}, "web%0A"), 400,
             'Invalid container name ("web\\n"), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'),
        Case("name-space", create({"Image": "busybox"}, "a%20b"), 400,
             "Invalid container name (a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        Case("name-taken", create({"Image": "busybox"}, "edge-c1"), 409,
             'Conflict. The container name "/edge-c1" is already in use by container '),
        # -- HostConfig ---------------------------------------------------------------------------
        Case("dns-string", hc({"Dns": "8.8.8.8"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.Dns of type []string"),
        Case("dns-not-ip", hc({"Dns": ["not-an-ip"]}), 400,
             'invalid JSON: ParseAddr("not-an-ip"): unable to parse IP'),
        Case("dns-injection", hc({"Dns": ["1.1.1.1\nnameserver 7.7.7.7"]}), 400,
             'invalid JSON: ParseAddr("1.1.1.1\\nnameserver 7.7.7.7"): unable to parse IP'),
        Case("dns-number", hc({"Dns": [5]}), 400,
             GO + "number into Go struct field HostConfig.HostConfig.Dns of type string"),
        Case("dnssearch-injection", hc({"DnsSearch": ["x\nnameserver 7.7.7.7"]}), 400,
             '"x\\nnameserver 7.7.7.7" is not a valid domain'),
        Case("dnssearch-space", hc({"DnsSearch": ["a b"]}), 400, "a b is not a valid domain"),
        Case("dnssearch-string", hc({"DnsSearch": "example.com"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.DnsSearch of type []string"),
        Case("dnsoption-injection", hc({"DnsOptions": ["ndots:1\nnameserver 6.6.6.6"]}), 400,
             'invalid DNS option: "ndots:1\\nnameserver 6.6.6.6"'),
        Case("dnsoption-space", hc({"DnsOptions": ["a b"]}), 400,
             'invalid DNS option: "a b"'),
        Case("extrahost-injection", hc({"ExtraHosts": ["a\n6.6.6.6 b:1.2.3.4"]}), 400,
             'bad format for add-host: "a\\n6.6.6.6 b:1.2.3.4"'),
        Case("extrahost-bad-ip", hc({"ExtraHosts": ["db:not-ip"]}), 400,
             'invalid IP address in add-host: "not-ip"'),
        Case("extrahost-no-ip", hc({"ExtraHosts": ["db"]}), 400,
             'bad format for add-host: "db"'),
        Case("extrahost-string", hc({"ExtraHosts": "db:1.2.3.4"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.ExtraHosts of type []string"),
        Case("hostport--1", hc({"PortBindings": {"80/tcp": [{"HostPort": "-1"}]}}), 400,
             'invalid port specification: "-1"'),
        Case("hostport-70000", hc({"PortBindings": {"80/tcp": [{"HostPort": "70000"}]}}), 400,
             'invalid port specification: "70000"'),
        Case("hostport-abc", hc({"PortBindings": {"80/tcp": [{"HostPort": "abc"}]}}), 400,
             'invalid port specification: "abc"'),
        Case("hostport-range-70000", hc({"PortBindings": {"80/tcp": [{"HostPort": "1-70000"}]}}),
             400, 'invalid port specification: "1-70000"'),
        Case("hostport-reversed", hc({"PortBindings": {"80/tcp": [{"HostPort": "90-80"}]}}), 400,
             'invalid port specification: "90-80"'),
        Case("hostport-number", hc({"PortBindings": {"80/tcp": [{"HostPort": 8080}]}}), 400,
             GO + "number into Go struct field PortBinding.HostConfig.PortBindings.HostPort of type string"),
        Case("hostip-bad", hc({"PortBindings": {"80/tcp": [{"HostIp": "1.2.3.4.5"}]}}), 400,
             "invalid IP address: 1.2.3.4.5"),
        Case("hostip-zone", hc({"PortBindings": {"80/tcp": [{"HostIp": "fe80::1%eth0"}]}}), 400,
             "invalid IP address: fe80::1%eth0"),
        Case("hostip-injection", hc({"PortBindings": {"80/tcp": [{"HostIp": "1.2.3.4\n"}]}}),
             400, 'invalid IP address: "1.2.3.4\\n"'),
        Case("portkey-70000", hc({"PortBindings": {"70000/tcp": []}}), 400,
             'invalid port specification: "70000"'),
        Case("portkey-icmp", hc({"PortBindings": {"80/icmp": []}}), 400, "invalid proto: icmp"),
        Case("portkey-negative", hc({"PortBindings": {"-1/tcp": []}}), 400,
             'invalid port specification: "-1"'),
        Case("portkey-range", hc({"PortBindings": {"1-70000/tcp": []}}), 400,
             'invalid port specification: "1-70000"'),
        Case("portbindings-list", hc({"PortBindings": []}), 400,
             GO + "array into Go struct field HostConfig.HostConfig.PortBindings of type nat.PortMap"),
        Case("portbinding-object", hc({"PortBindings": {"80/tcp": {"HostPort": "1"}}}), 400,
             GO + "object into Go struct field HostConfig.HostConfig.PortBindings of type []nat.PortBinding"),
        Case("restart-unknown", hc({"RestartPolicy": {"Name": "sometimes"}}), 400,
             "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
             "'on-failure', or 'unless-stopped'"),
        Case("restart-retries", hc({"RestartPolicy": {"Name": "no", "MaximumRetryCount": 3}}), 400,
             "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
        Case("restart-negative", hc({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}}),
             400, "invalid restart policy: maximum retry count cannot be negative"),
        Case("restart-string", hc({"RestartPolicy": "always"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.RestartPolicy of type container.RestartPolicy"),
        Case("autoremove-restart", hc({"AutoRemove": True, "RestartPolicy": {"Name": "always"}}),
             400, "can't create 'AutoRemove' container with restart policy"),
        Case("log-driver", hc({"LogConfig": {"Type": "gelf2"}}), 400,
             "logger: no log driver named 'gelf2' is registered"),
        Case("log-opt", hc({"LogConfig": {"Type": "json-file", "Config": {"bogus": "1"}}}), 400,
             "unknown log opt 'bogus' for json-file log driver"),
        Case("networkmode-number", hc({"NetworkMode": 5}), 400,
             GO + "number into Go struct field HostConfig.HostConfig.NetworkMode of type string"),
        Case("networkmode-container-empty", hc({"NetworkMode": "container:"}), 400,
             "Invalid network mode: invalid container format container:<name|id>"),
        Case("networkmode-newline", hc({"NetworkMode": "a\nb"}), 400,
             'invalid network mode: "a\\nb": control characters are not allowed'),
        Case("autoremove-string", hc({"AutoRemove": "yes"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.AutoRemove of type bool"),
        Case("privileged-string", hc({"Privileged": "yes"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.Privileged of type bool"),
        Case("capadd-number", hc({"CapAdd": [1]}), 400,
             GO + "array into Go struct field HostConfig.HostConfig.CapAdd of type string"),
        Case("securityopt-string", hc({"SecurityOpt": "x"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.SecurityOpt of type []string"),
        Case("shmsize-string", hc({"ShmSize": "1g"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.ShmSize of type int64"),
        Case("memory-string", hc({"Memory": "1g"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.Memory of type int64"),
        Case("links-string", hc({"Links": "a:b"}), 400,
             GO + "string into Go struct field HostConfig.HostConfig.Links of type []string"),
        Case("container-mode-ports", create({"Image": "busybox", "HostConfig": {
             "NetworkMode": "container:edge-c1", "PortBindings": {"80/tcp": [{"HostPort": "81"}]}}}),
             400, "conflicting options: port publishing and the container type network mode"),
        Case("container-mode-hostname", create({"Image": "busybox", "Hostname": "h",
             "HostConfig": {"NetworkMode": "container:edge-c1"}}), 400,
             "conflicting options: hostname and the network mode"),
        # -- NetworkingConfig --------------------------------------------------------------------
        Case("endpoints-list", create({"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": []}}),
             400, GO + "array into Go struct field NetworkingConfig.NetworkingConfig.EndpointsConfig "
             "of type map[string]*network.EndpointSettings"),
        Case("aliases-string", ep({"Aliases": "x"}), 400,
             GO + "string into Go struct field EndpointSettings.NetworkingConfig.EndpointsConfig.Aliases of type []string"),
        Case("alias-newline", ep({"Aliases": ["a\nb"]}), 400, 'invalid network alias: "a\\nb"'),
        Case("alias-space", ep({"Aliases": ["a b"]}), 400, 'invalid network alias: "a b"'),
        Case("ipv4-bad", ep({"IPAMConfig": {"IPv4Address": "1.2.3"}}), 400,
             "invalid IPv4 address: 1.2.3"),
        Case("ipv4-is-v6", ep({"IPAMConfig": {"IPv4Address": "::1"}}), 400,
             "invalid IPv4 address: ::1"),
        Case("ipv6-is-v4", ep({"IPAMConfig": {"IPv6Address": "1.2.3.4"}}), 400,
             "invalid IPv6 address: 1.2.3.4"),
        Case("endpoint-mac", ep({"MacAddress": "zz"}), 400, "invalid MAC address: zz"),
        Case("two-endpoints", create({"Image": "busybox", "HostConfig": {"NetworkMode": "edge-net"},
             "NetworkingConfig": {"EndpointsConfig": {"edge-net": {}, "bridge": {}}}}), 400,
             "Container cannot be connected to network endpoints: edge-net, bridge"),
        # -- network create ------------------------------------------------------------------------
        Case("net-name-number", post("/networks/create", {"Name": 5}), 400,
             GO + "number into Go struct field CreateRequest.Name of type string"),
        Case("net-name-missing", post("/networks/create", {}), 400, "network name can't be empty"),
        Case("net-body-empty", request("POST", "/networks/create"), 400,
             "network name can't be empty"),
        Case("disconnect-body-empty", request("POST", "/networks/edge-net/disconnect"), 404,
             "No such container: "),
        Case("net-name-newline", post("/networks/create", {"Name": "a\nb"}), 400,
             'invalid network name: "a\\nb": control characters are not allowed'),
        Case("net-name-taken", post("/networks/create", {"Name": "edge-net"}), 409,
             "network with name edge-net already exists"),
        Case("net-driver-number", net({"Driver": 5}), 400,
             GO + "number into Go struct field CreateRequest.Driver of type string"),
        Case("net-driver-unknown", net({"Driver": "nosuch"}), 404, 'plugin "nosuch" not found'),
        Case("net-ipam-string", net({"IPAM": "x"}), 400,
             GO + "string into Go struct field CreateRequest.IPAM of type network.IPAM"),
        Case("net-ipam-config-object", net({"IPAM": {"Config": {"Subnet": "10.1.0.0/24"}}}), 400,
             GO + "object into Go struct field IPAM.IPAM.Config of type []network.IPAMConfig"),
        Case("net-subnet-number", net({"IPAM": {"Config": [{"Subnet": 5}]}}), 400,
             GO + "number into Go struct field IPAMConfig.IPAM.Config.Subnet of type string"),
        Case("net-subnet-33", subnet("10.155.0.0/33"), 400,
             "Invalid subnet 10.155.0.0/33 : invalid CIDR address: 10.155.0.0/33"),
        Case("net-subnet-notacidr", subnet("notacidr"), 400,
             "Invalid subnet notacidr : invalid CIDR address: notacidr"),
        Case("net-subnet-32", subnet("10.9.0.0/32"), 400,
             "Invalid subnet 10.9.0.0/32 : no available addresses on this pool"),
        Case("net-subnet-multicast", subnet("224.1.0.0/16"), 400,
             "multicast subnet '224.1.0.0/16' is not allowed"),
        Case("net-subnet-loopback", subnet("127.9.0.0/16"), 400,
             "'127.9.0.0/16' clashes with the Loopback prefix '127.0.0.0/8'"),
        Case("net-subnet-zero", subnet("0.0.0.0/8"), 400,
             "'0.0.0.0/8' clashes with the reserved prefix '0.0.0.0/8'"),
        Case("net-subnet-broadcast", subnet("255.255.255.0/24"), 400,
             "'255.255.255.0/24' clashes with the broadcast address '255.255.255.255/32'"),
        Case("net-subnet6-multicast", net({"EnableIPv6": True, "IPAM": {"Config": [{"Subnet": "ff05::/64"}]}}),
             400, "multicast subnet 'ff05::/64' is not allowed"),
        Case("net-subnet6-linklocal", subnet("fe80::/80"), 400,
             "'fe80::/80' clashes with the Link-Local prefix 'fe80::/64'"),
        Case("net-subnet6-128", subnet("fd00:9::1/128"), 400,
             "Invalid subnet fd00:9::1/128 : no available addresses on this pool"),
        Case("net-subnet-injection", subnet("10.1.0.0/24\n"), 400,
             'invalid subnet: "10.1.0.0/24\\n": control characters are not allowed'),
        Case("net-gateway-outside", net({"IPAM": {"Config": [{"Subnet": "10.151.0.0/24", "Gateway": "10.152.0.1"}]}}),
             400, "no matching subnet for gateway 10.152.0.1"),
        Case("net-two-subnets", net({"IPAM": {"Config": [{"Subnet": "10.161.0.0/24"}, {"Subnet": "10.162.0.0/24"}]}}),
             403, "bridge driver doesn't support multiple subnets"),
        Case("net-mtu", net({"Options": {"com.docker.network.driver.mtu": "abc"}}), 400,
             'failed to parse com.docker.network.driver.mtu value: abc (strconv.Atoi: parsing "abc": invalid syntax)'),
        Case("net-bridge-name-newline", net({"Options": {"com.docker.network.bridge.name": "br0\n"}}),
             400, 'invalid driver option value: "br0\\n": control characters are not allowed'),
        Case("net-option-number", net({"Options": {"a": 5}}), 400,
             GO + "number into Go struct field CreateRequest.Options of type string"),
        Case("net-label-newline", net({"Labels": {"a": "b\nc"}}), 400,
             'invalid label "a=b\\nc": control characters are not allowed'),
        Case("net-ipv6-string", net({"EnableIPv6": "yes"}), 400,
             GO + "string into Go struct field CreateRequest.EnableIPv6 of type bool"),
        Case("net-internal-number", net({"Internal": 1}), 400,
             GO + "number into Go struct field CreateRequest.Internal of type bool"),
        # -- connect / disconnect -------------------------------------------------------------------
        Case("connect-body-list", post("/networks/edge-net/connect", []), 400,
             GO + "array into Go value of type network.ConnectOptions"),
        Case("connect-container-number", post("/networks/edge-net/connect", {"Container": 5}), 400,
             GO + "number into Go struct field ConnectOptions.Container of type string"),
        Case("connect-endpoint-string", post("/networks/bridge/connect",
             {"Container": "edge-c1", "EndpointConfig": "x"}), 400,
             GO + "string into Go struct field ConnectOptions.EndpointConfig of type network.EndpointSettings"),
        Case("connect-alias-newline", post("/networks/bridge/connect",
             {"Container": "edge-c1", "EndpointConfig": {"Aliases": ["a\nb"]}}), 400,
             'invalid network alias: "a\\nb"'),
        Case("connect-ip-bad", post("/networks/bridge/connect",
             {"Container": "edge-c1", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "bad"}}}), 400,
             "invalid IPv4 address: bad"),
        Case("connect-no-container", post("/networks/edge-net/connect", {"Container": "nosuch"}), 404,
             "No such container: nosuch"),
        Case("connect-no-network", post("/networks/nosuch/connect", {"Container": "edge-c1"}), 404,
             "network nosuch not found"),
        Case("connect-again", post("/networks/edge-net/connect", {"Container": "edge-c1"}), 403,
             "endpoint with name edge-c1 already exists in network edge-net"),
        Case("disconnect-force-string", post("/networks/edge-net/disconnect",
             {"Container": "edge-c1", "Force": "yes"}), 400,
             GO + "string into Go struct field DisconnectOptions.Force of type bool"),
        Case("disconnect-not-connected", post("/networks/bridge/disconnect", {"Container": "edge-c1"}),
             403, "is not connected to network bridge"),
        # -- exec -----------------------------------------------------------------------------------
        Case("exec-cmd-string", post("/containers/edge-c1/exec", {"Cmd": "ls"}), 400,
             GO + "string into Go struct field ExecOptions.Cmd of type []string"),
        Case("exec-cmd-number", post("/containers/edge-c1/exec", {"Cmd": [1]}), 400,
             GO + "number into Go struct field ExecOptions.Cmd of type string"),
        Case("exec-env-empty-name", post("/containers/edge-c1/exec", {"Cmd": ["ls"], "Env": ["=x"]}),
             400, "invalid environment variable: =x"),
        Case("exec-tty-string", post("/containers/edge-c1/exec", {"Cmd": ["ls"], "Tty": "yes"}), 400,
             GO + "string into Go struct field ExecOptions.Tty of type bool"),
        Case("exec-no-cmd", post("/containers/edge-c1/exec", {"Cmd": []}), 409,
             "No exec command specified"),
        Case("exec-no-container", post("/containers/nosuch/exec", {"Cmd": ["ls"]}), 404,
             "No such container: nosuch"),
        Case("exec-start-string", post(f"/exec/{exec_id}/start", "x"), 400,
             GO + "string into Go value of type container.ExecStartOptions"),
        Case("exec-start-detach-string", post(f"/exec/{exec_id}/start", {"Detach": "yes"}), 400,
             GO + "string into Go struct field ExecStartOptions.Detach of type bool"),
        Case("exec-start-unknown", post("/exec/nosuch/start", {}), 404,
             "No such exec instance: nosuch"),
        Case("exec-resize-abc", request("POST", f"/exec/{exec_id}/resize?h=abc&w=80"), 400,
             'strconv.Atoi: parsing "abc": invalid syntax'),
        Case("exec-resize-huge", request("POST", f"/exec/{exec_id}/resize?h=24&w=70000"), 400,
             'invalid value for "w": 70000 is not a terminal size (0 to 65535)'),
        # -- images ----------------------------------------------------------------------------------
        Case("image-create-url", request("POST", "/images/create?fromSrc=http%3A%2F%2Fx"), 400,
             "importing from a URL is not supported: send the tarball as the request body (fromSrc=-)"),
        Case("image-pull-upper", request("POST", "/images/create?fromImage=BusyBox"), 400,
             "invalid reference format: repository name (library/BusyBox) must be lowercase"),
        Case("image-pull-bad-tag", request("POST", "/images/create?fromImage=busybox&tag=a%20b"),
             400, 'invalid tag format: "a b"'),
        Case("image-repo-upper", request("POST", "/images/create?fromSrc=-&repo=BusyBox"), 400,
             "invalid reference format: repository name (BusyBox) must be lowercase"),
        Case("image-repo-space", request("POST", "/images/create?fromSrc=-&repo=a%20b"), 400,
             'invalid reference format: "a b"'),
        Case("image-tag-bad", request("POST", "/images/create?fromSrc=-&repo=a&tag=bad%0Atag"), 400,
             'invalid tag format: "bad\\ntag"'),
        Case("image-change-unknown", request("POST", "/images/create?fromSrc=-&changes=BOGUS%20x"),
             400, "BOGUS is not a valid change command"),
        Case("image-change-env", request("POST", "/images/create?fromSrc=-&changes=ENV%20%3Dx"), 400,
             "invalid environment variable: =x"),
        Case("image-change-expose", request("POST", "/images/create?fromSrc=-&changes=EXPOSE%2070000"),
             400, 'invalid port specification: "70000"'),
        Case("image-inspect-unknown", request("GET", "/images/nosuch/json"), 404,
             "No such image: nosuch:latest"),
        Case("image-delete-unknown", request("DELETE", "/images/nosuch"), 404,
             "No such image: nosuch:latest"),
        # -- query parameters -----------------------------------------------------------------------
        Case("stop-t-abc", request("POST", "/containers/edge-c1/stop?t=abc"), 400,
             'strconv.Atoi: parsing "abc": invalid syntax'),
        Case("restart-t-float", request("POST", "/containers/edge-c1/restart?t=1.5"), 400,
             'strconv.Atoi: parsing "1.5": invalid syntax'),
        Case("kill-signal-unknown", request("POST", "/containers/edge-c1/kill?signal=SIGFOO"), 400,
             "Invalid signal: SIGFOO"),
        Case("kill-signal-huge", request("POST", "/containers/edge-c1/kill?signal=99999"), 400,
             "Invalid signal: 99999"),
        Case("logs-tail-abc", request("GET", "/containers/edge-c1/logs?stdout=1&tail=abc"), 400,
             'invalid value for "tail": strconv.Atoi: parsing "abc": invalid syntax'),
        Case("logs-since-abc", request("GET", "/containers/edge-c1/logs?stdout=1&since=abc"), 400,
             'invalid value for "since": "abc"'),
        Case("wait-condition", request("POST", "/containers/edge-c1/wait?condition=bogus"), 400,
             "invalid condition: 'bogus'"),
        Case("ps-filters-json", request("GET", "/containers/json?filters=%7Bbad"), 400,
             "invalid filter '{bad'"),
        Case("ps-filters-key", request("GET", "/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D"),
             400, "invalid filter 'bogus'"),
        Case("networks-filters-list", request("GET", "/networks?filters=%5B1%5D"), 400,
             "invalid filter '[1]'"),
        # -- headers and framing ----------------------------------------------------------------------
        Case("content-length-negative", request("POST", "/containers/create", raw_body=b"{}",
             headers={"Content-Length": "-1", "Content-Type": "application/json"}), 400,
             'bad Content-Length "-1"'),
        Case("content-length-abc", request("POST", "/containers/create", raw_body=b"{}",
             headers={"Content-Length": "abc"}), 400, 'bad Content-Length "abc"'),
        Case("content-length-two", b"POST /v1.41/networks/create HTTP/1.1\r\nHost: t\r\n"
             b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400,
             "http: message cannot contain multiple Content-Length headers"),
        Case("content-length-huge", request("POST", "/containers/create",
             headers={"Content-Length": str(11 * MIB), "Content-Type": "application/json"}),
             413, f"request body too large: {11 * MIB} bytes (the limit is {10 * MIB})"),
        Case("body-over-limit", post("/networks/create", {"Name": "big", "Labels": {"x": "y" * (10 * MIB)}}),
             413, "request body too large: "),
        Case("chunked-bad-size", request("POST", "/networks/create", raw_body=b"zz\r\n{}\r\n0\r\n\r\n",
             headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"}),
             400, 'malformed chunked encoding: bad chunk size "zz"'),
        Case("chunked-truncated", request("POST", "/networks/create", raw_body=b"20\r\n{\"Name\":",
             headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"}),
             400, "unexpected EOF in the chunked request body", shut=True),
        Case("chunked-no-crlf", request("POST", "/networks/create", raw_body=b"2\r\n{}XX0\r\n\r\n",
             headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"}),
             400, "malformed chunked encoding: chunk not followed by CRLF"),
        Case("chunked-over-limit", request("POST", "/networks/create",
             raw_body=b"".join(b"100000\r\n" + b" " * 0x100000 + b"\r\n" for _ in range(11)) + b"0\r\n\r\n",
             headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"}),
             413, f"request body too large (the limit is {10 * MIB} bytes)"),
        Case("length-truncated", request("POST", "/networks/create", raw_body=b'{"Name": "x"',
             headers={"Content-Length": "100", "Content-Type": "application/json"}),
             400, "unexpected EOF in the request body", shut=True),
        Case("transfer-encoding-gzip", request("POST", "/networks/create", raw_body=b"{}",
             headers={"Transfer-Encoding": "gzip"}), 501, 'unsupported transfer encoding: "gzip"'),
        Case("request-line-garbage", b"GARBAGE\r\n\r\n", 400, 'malformed HTTP request "GARBAGE"'),
        Case("http-version", b"GET /_ping HTTP/2.0\r\n\r\n", 505,
             'unsupported protocol version "HTTP/2.0"'),
        Case("header-no-colon", b"GET /_ping HTTP/1.1\r\nNoColonHere\r\n\r\n", 400,
             'malformed MIME header line: "NoColonHere"'),
        Case("headers-too-large", b"GET /_ping HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n",
             431, "request headers larger than 65536 bytes"),
        Case("headers-truncated", b"GET /_ping HTTP/1.1\r\nHost: t\r\n", 400,
             "malformed HTTP request: unexpected EOF in the headers", shut=True),
        Case("content-type-text", request("POST", "/networks/create", raw_body=b'{"Name": "ct"}',
             headers={"Content-Type": "text/plain"}), 400,
             "unsupported Content-Type header (text/plain): must be 'application/json'"),
        Case("unknown-path", request("GET", "/nosuch"), 404, "page not found: GET /nosuch"),
        Case("wrong-method", request("PUT", "/containers/json"), 405, "method not allowed"),
    ]
    # fmt: on
    return c


def snapshot(h: NamespaceHost) -> dict[str, Any]:
    """What a refused request must not change (the Status column's "Up N seconds" aside)."""
    containers = h.api.get("/containers/json", {"all": 1})
    return {
        "containers": sorted(
            json.dumps(
                {k: v for k, v in c.items() if k not in ("Status", "Created")}, sort_keys=True
            )
            for c in containers
        ),
        "networks": sorted(json.dumps(n, sort_keys=True) for n in h.api.get("/networks")),
        "images": sorted(json.dumps(i, sort_keys=True) for i in h.api.get("/images/json")),
        "allocations": h.allocations(),
        "nft": h.sh("nft -s list table inet tether").stdout,
        # Operational state (UNKNOWN -> UP as a bridge port comes up) is the kernel's own.
        "links": re.sub(r" state \S+", "", h.sh("ip -o link show").stdout),
    }


def test_malformed_requests_get_dockers_4xx_and_change_nothing(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.77.0.0/24", "edge-net")
    h.ok("run", "-d", "--name", "edge-c1", "--network", "edge-net", "busybox", "sleep", "600")
    exec_id = h.api.post("/containers/edge-c1/exec", {"Cmd": ["true"]})["Id"]
    table = cases(exec_id)
    assert len(table) >= 100, len(table)
    assert len({c.name for c in table}) == len(table)
    # Let the new container's links settle (carrier, addresses) before comparing.
    before, deadline = snapshot(h), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again = snapshot(h)
        if again == before:
            break
        before = again
    failures: list[str] = []
    for case in table:
        status, body = exchange(h.socket, case.data, case.shut)
        message = str(body.get("message", ""))
        if status != case.status or case.message not in message:
            failures.append(
                f"{case.name}: got {status} {message!r}, want {case.status} {case.message!r}"
            )
        after = snapshot(h)
        changed = [k for k in before if before[k] != after[k]]
        if changed:
            failures.append(f"{case.name}: changed {changed}: {before} -> {after}")
            before = after
    assert not failures, "\n".join(failures)
    # The daemon still serves, and never wrote a traceback.
    assert h.api.get("/_ping") == "OK"
    assert h.api.get("/containers/edge-c1/json")["State"]["Running"]
    log = h.log()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
