"""No option accepted and then ignored: every network -o option is acted on or refused by
name, the bridge's host_binding_ipv4 is honoured as Docker honours it, and the drivers'
reconcilers touch only links that carry their own alias."""

from __future__ import annotations

import os
import time

import pytest

from nshost import NamespaceHost, sh

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]


def state(h: NamespaceHost) -> tuple[str, list[str], list[str]]:
    nets = h.ok("network", "ls", "--format", "{{.Name}} {{.Driver}}")
    return nets, sorted(h.links()), h.netns_files()


def test_unknown_and_unsupported_network_options_are_refused(host: NamespaceHost) -> None:
    h = host
    h.sh("ip link add lan0 type veth peer name lan0p")
    before = state(h)
    cases = [
        (["-o", "com.docker.network.bridge.enable_icc_typo=false", "x1"],
         "the bridge driver has no option 'com.docker.network.bridge.enable_icc_typo'"),
        (["-o", "parent=lan0", "x2"], "the bridge driver has no option 'parent'"),
        (["-o", "com.docker.network.bridge.gateway_mode_ipv4=routed", "x3"],
         "option com.docker.network.bridge.gateway_mode_ipv4 is not supported by tether yet"),
        (["-d", "macvlan", "-o", "parent=lan0", "-o", "com.docker.network.bridge.name=b",
          "x4"], "the macvlan driver has no option 'com.docker.network.bridge.name'"),
        (["-o", "com.docker.network.bridge.name=tm-flap", "x5"],
         "invalid bridge name: tm-flap: names starting with tb-, tz-, tm-, tv, ov-, vx- are "
         "tether's own"),
        (["-o", "com.docker.network.bridge.name=tb-mine", "x6"], "invalid bridge name: tb-mine"),
        (["-o", "com.docker.network.bridge.host_binding_ipv4=nope", "x7"],
         "failed to parse com.docker.network.bridge.host_binding_ipv4 value: nope (nil ip)"),
    ]  # fmt: skip
    for args, message in cases:
        r = h.cli("network", "create", *args)
        assert r.returncode != 0, args
        assert message in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    # EnableIPv4: false (API only): refused rather than a network that has IPv4 anyway.
    r = h.api.open("POST", "/networks/create", body={"Name": "v6only", "EnableIPv4": False})
    assert r.status == 400, r.status
    assert b"tether does not support IPv6-only networks yet" in r.read()
    r.close()
    assert state(h) == before


def test_host_binding_ipv4_is_the_default_host_address_of_p(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()  # another machine, routed to this host's 10.250.0.1
    h.ok("network", "create", "-o", "com.docker.network.bridge.host_binding_ipv4=127.0.0.1",
         "local")  # fmt: skip
    h.ok("network", "create", "open")
    h.ok("run", "-d", "--name", "quiet", "--network", "local", "-p", "8091:80", "busybox", *WEB)
    h.ok("run", "-d", "--name", "loud", "--network", "open", "-p", "8092:80", "busybox", *WEB)
    # Docker's `docker port`: the network's default host address, IPv4 only.
    assert h.ok("port", "quiet") == "80/tcp -> 127.0.0.1:8091\n"
    assert "80/tcp -> [::]:8092" in h.ok("port", "loud")
    # An explicit address still wins.
    h.ok("run", "-d", "--name", "wide", "--network", "local", "-p", "0.0.0.0:8093:80",
         "busybox", *WEB)  # fmt: skip
    assert h.ok("port", "wide") == "80/tcp -> 0.0.0.0:8093\n"

    def get(where: str, url: str) -> str:
        r = sh(f"ip netns exec {where} timeout 2 busybox wget -qO- {url}", check=False)
        return r.stdout if r.returncode == 0 else ""

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not get(h.netns, "http://127.0.0.1:8091/"):
        time.sleep(0.1)
    assert get(h.netns, "http://127.0.0.1:8091/").startswith("hello-")
    assert get(lan, "http://10.250.0.1:8092/").startswith("hello-")  # the LAN reaches 0.0.0.0
    assert get(lan, "http://10.250.0.1:8093/").startswith("hello-")
    assert get(lan, "http://10.250.0.1:8091/") == ""  # ...but not what the network keeps local
    assert get(h.netns, "http://[::1]:8091/") == ""


def test_reconcilers_leave_bridges_without_their_alias_alone(host: NamespaceHost) -> None:
    h = host
    # Bridges someone else made with names like tether's: not tether's to delete.
    for name in ("tb-mine", "tm-mine", "tz-mine"):
        h.sh(f"ip link add {name} type bridge")
    # Strays of tether's own (a crash left them): they carry the alias, and go.
    h.sh("ip link add tz-0123456789ab type bridge")
    h.sh("ip link set tz-0123456789ab alias tether:net:" + "0123456789ab" * 5 + "0123")
    h.sh("ip link add tm-0123456789ab type bridge")
    h.sh("ip link set tm-0123456789ab alias tether:macvlan:" + "0123456789ab" * 5 + "0123")
    h.restart()  # reconcile runs at every start
    links = h.links()
    assert {"tb-mine", "tm-mine", "tz-mine"} <= set(links)
    assert "tz-0123456789ab" not in links and "tm-0123456789ab" not in links
    # And the networks' own bridges (alias set) are still repaired and removed as ever.
    h.ok("network", "create", "-d", "macvlan", "--internal", "priv")
    h.ok("network", "create", "br")
    net = h.inspect_network("priv")["Id"]
    assert f"tm-{net[:12]}" in h.links()
    h.sh(f"ip link del tm-{net[:12]}")
    h.restart()
    assert f"tm-{net[:12]}" in h.links()
    h.ok("network", "rm", "priv", "br")
    assert not [n for n in h.links() if n.endswith(net[:12])]
    for name in ("tb-mine", "tm-mine", "tz-mine"):
        h.sh(f"ip link del {name}")


def test_host_gateway_is_the_default_bridges_gateway(bhost: NamespaceHost) -> None:
    h = bhost
    # The default bridge's gateway: the host's address on tether0.
    (gw,) = [a["local"] for a in h.links()["tether0"]["addr_info"] if a["family"] == "inet"]
    h.ok("network", "create", "app")
    for net in ("bridge", "app"):
        name = f"hg-{net}"
        h.ok("run", "-d", "--name", name, "--network", net, "--add-host",
             "host.docker.internal:host-gateway", "busybox", "sleep", "600")  # fmt: skip
        hosts = h.ok("exec", name, "cat", "/etc/hosts")
        assert f"{gw}\thost.docker.internal\n" in hosts, hosts
        assert "host-gateway" not in hosts
        # It is the host: the container reaches it by that name.
        assert h.cli("exec", name, "ping", "-c1", "-W2", "host.docker.internal").returncode == 0


def test_settings_tether_cannot_enforce_are_refused_by_name(bhost: NamespaceHost) -> None:
    h = bhost
    before = h.kernel_snapshot()
    # (-u/--user and --read-only are honoured since 8e6e811: test_docker_clients.py.)
    cases = [
        (
            ["--pids-limit", "100"],
            "tether does not support PidsLimit (--pids-limit) yet: containers have no process limit",
        ),
        (
            ["-m", "512m"],
            "tether does not support Memory (--memory) yet: containers have no memory limit",
        ),
    ]
    for args, message in cases:
        for command in (["run", "-d"], ["create"]):
            r = h.cli(*command, *args, "busybox", "sleep", "600")
            assert r.returncode == 125, (args, r.returncode, r.stderr)
            assert f"Error response from daemon: {message}" in r.stderr, (args, r.stderr)
            assert "Traceback" not in r.stderr
    r = h.cli("run", "-d", "-m", "lots", "busybox", "true")
    assert (
        r.returncode != 0
        and 'invalid argument "lots" for "-m, --memory" flag: invalid size: \'lots\'' in r.stderr
    )
    resp = h.api.open(
        "POST", "/containers/create", body={"Image": "busybox", "HostConfig": {"Memory": 1 << 29}}
    )
    assert resp.status == 400 and b"tether does not support Memory (--memory) yet" in resp.read()
    resp.close()
    assert h.api.get("/containers/json", {"all": 1}) == []
    assert h.kernel_snapshot() == before
    # What runs as Docker's defaults would is accepted.
    h.ok("run", "-d", "--name", "dflt", "-u", "root", "--pids-limit", "-1", "-m", "0",
         "busybox", "sleep", "600")  # fmt: skip
    h.ok("run", "-d", "--name", "zero", "-u", "0:0", "busybox", "sleep", "600")
    assert h.ok("exec", "-u", "root", "dflt", "id", "-u") == "0\n"
    assert h.ok("exec", "-u", "nobody", "dflt", "id", "-u") == "65534\n"


def test_compose_refuses_the_same_settings_before_creating_anything(bhost: NamespaceHost) -> None:
    h = bhost
    cases = [
        ("pids_limit: 50", "services.web.pids_limit: tether does not support PidsLimit"),
        ("mem_limit: 256m", "services.web.mem_limit: tether does not support Memory"),
    ]
    for i, (line, message) in enumerate(cases):
        d = os.path.join(h.dir, f"proj{i}")
        os.makedirs(d)
        with open(os.path.join(d, "compose.yaml"), "w") as f:
            f.write(
                "services:\n  web:\n    image: busybox\n    command: sleep 600\n"
                f"    networks: [back]\n    {line}\nnetworks:\n  back: {{}}\n"
            )
        r = h.cli("compose", "-f", os.path.join(d, "compose.yaml"), "up", "-d")
        assert r.returncode != 0 and message in r.stderr, (line, r.stderr)
        assert "is not supported by tether yet and is ignored" not in r.stderr
    assert h.api.get("/containers/json", {"all": 1}) == []
    assert sorted(n["Name"] for n in h.api.get("/networks")) == ["bridge", "host", "none"]


def test_compose_user_read_only_and_logging_take_effect(bhost: NamespaceHost) -> None:
    h = bhost
    d = os.path.join(h.dir, "honoured")
    os.makedirs(d)
    path = os.path.join(d, "compose.yaml")
    with open(path, "w") as f:
        f.write(
            "services:\n  web:\n    image: busybox\n    command: sleep 600\n"
            "    user: '1234:55'\n    read_only: true\n"
            "    logging:\n      options: {max-size: 1k, max-file: '2'}\n"
        )
    r = h.cli("compose", "-f", path, "up", "-d")
    assert r.returncode == 0, r.stderr
    assert "ignored" not in r.stderr, r.stderr
    assert h.ok("compose", "-f", path, "exec", "-T", "web", "id", "-u") == "1234\n"
    r = h.cli("compose", "-f", path, "exec", "-T", "web", "touch", "/x")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    log_config = h.api.get("/containers/honoured-web-1/json")["HostConfig"]["LogConfig"]
    assert log_config == {"Type": "json-file", "Config": {"max-size": "1k", "max-file": "2"}}
    h.ok("compose", "-f", path, "down")
