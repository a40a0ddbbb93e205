"""Containers on networks, on namespace-hosts: real processes, real veths, real traffic."""

from __future__ import annotations

import json
import time

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]


def run(host: NamespaceHost, *args: str) -> str:
    return host.ok("run", "-d", *args).strip()


def fetch(host: NamespaceHost, client: str, target: str, timeout: int = 3) -> tuple[int, str]:
    # Not `wget -T`: Debian's busybox 1.35 wget segfaults with it (the reference saw it too).
    r = host.cli("exec", client, "timeout", str(timeout), "wget", "-qO-", f"http://{target}/")
    return r.returncode, r.stdout


def test_two_containers_talk_over_a_user_network(bhost: NamespaceHost) -> None:
    h = bhost
    net_id = h.ok("network", "create", "my-net").strip()
    web_id = run(h, "--name", "web", "--network", "my-net", "busybox", *WEB)
    run(h, "--name", "client", "--network", "my-net", "busybox", "sleep", "600")
    ip = h.ip_of("web", "my-net")
    assert ip == "172.18.0.2"
    code, out = fetch(h, "client", ip)
    assert code == 0 and out == f"hello-{web_id[:12]}\n"
    # The kernel: web's sandbox has eth0 with the address and Docker's MAC, a default route
    # via the gateway, and its veth's host end sits on the network's bridge.
    info = h.api.get("/containers/web/json")
    ep = info["NetworkSettings"]["Networks"]["my-net"]
    assert ep["MacAddress"] == "02:42:ac:12:00:02" and ep["Gateway"] == "172.18.0.1"
    assert ep["Aliases"] == [web_id[:12]] and ep["NetworkID"] == net_id
    addr = json.loads(h.in_sandbox("web", "ip -j addr show eth0").stdout)[0]
    assert addr["address"] == "02:42:ac:12:00:02"
    assert {(a["local"], a["prefixlen"]) for a in addr["addr_info"] if a["family"] == "inet"} == {
        ("172.18.0.2", 16)
    }
    assert "default via 172.18.0.1 dev eth0" in h.in_sandbox("web", "ip route").stdout
    links = h.links()
    bridge = links[f"tb-{net_id[:12]}"]
    veth = links["tv" + ep["EndpointID"][:12]]
    assert veth["master"] == bridge["ifname"]
    # network inspect lists both containers.
    members = h.inspect_network("my-net")["Containers"]
    assert {m["Name"]: m["IPv4Address"] for m in members.values()} == {
        "web": "172.18.0.2/16",
        "client": "172.18.0.3/16",
    }


def test_run_attached_output_exit_code_and_rm(bhost: NamespaceHost) -> None:
    h = bhost
    r = h.cli(
        "run",
        "--rm",
        "--name",
        "once",
        "busybox",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
    )
    assert r.returncode == 3
    assert r.stdout == "to-out\n" and r.stderr == "to-err\n"
    assert h.ok("ps", "-a", "--format", "{{.Names}}") == ""
    assert h.veths() == [] and h.netns_files() == []
    r = h.cli("run", "--name", "kept", "busybox", "true")
    assert r.returncode == 0
    assert h.ok("ps", "-a", "--format", "{{.Names}} {{.Status}}").startswith("kept Exited (0)")


def test_exec_passes_io_and_exit_codes(bhost: NamespaceHost) -> None:
    h = bhost
    run(h, "--name", "box", "busybox", "sleep", "600")
    r = h.cli("exec", "box", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    r = h.cli("exec", "-i", "box", "sh", "-c", "tr a-z A-Z", input="piped in\n")
    assert r.returncode == 0 and r.stdout == "PIPED IN\n"
    r = h.cli(
        "exec",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "box",
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(hostname)",
    )
    assert r.stdout.split()[:2] == ["hi", "/tmp"]
    r = h.cli("exec", "box", "nosuchcommand")
    assert r.returncode == 127
    assert 'exec: "nosuchcommand": executable file not found in $PATH' in r.stderr
    # The exec'd process is in the container's pid namespace.
    rows = [line.split() for line in h.cli("exec", "box", "ps").stdout.splitlines()[1:]]
    assert rows[0] == ["1", "root", "sleep", "600"] and rows[-1][2] == "ps"


def test_files_hostname_and_dns_settings(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "n1")
    run(
        h,
        "--name",
        "ca",
        "--network",
        "n1",
        "--hostname",
        "h3",
        "--domainname",
        "dom.test",
        "--add-host",
        "extra.test:198.18.0.9",
        "--dns",
        "198.18.53.53",
        "--dns-search",
        "corp.test",
        "--dns-option",
        "ndots:2",
        "busybox",
        "sleep",
        "600",
    )
    hosts = h.ok("exec", "ca", "cat", "/etc/hosts")
    assert hosts.splitlines()[:6] == [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    assert hosts.splitlines()[6:] == ["198.18.0.9\textra.test", "172.18.0.2\th3.dom.test h3"]
    assert (
        h.ok("exec", "ca", "cat", "/etc/resolv.conf")
        == "search corp.test\nnameserver 127.0.0.11\noptions ndots:2\n"
    )
    assert h.ok("exec", "ca", "hostname") == "h3\n"
    assert h.ok("exec", "ca", "cat", "/etc/hostname") == "h3\n"
    # The default bridge has no embedded DNS: the upstream goes in the file itself.
    cid = run(h, "--name", "cb", "--dns", "198.18.53.53", "busybox", "sleep", "600")
    assert h.ok("exec", "cb", "cat", "/etc/resolv.conf") == "nameserver 198.18.53.53\n"
    assert h.ok("exec", "cb", "tail", "-n1", "/etc/hosts") == f"172.17.0.2\t{cid[:12]}\n"
    info = h.api.get("/containers/cb/json")
    assert info["NetworkSettings"]["Networks"]["bridge"]["Aliases"] is None
    assert info["NetworkSettings"]["IPAddress"] == "172.17.0.2"  # legacy top-level fields


def test_static_addresses_mac_and_mtu(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok(
        "network",
        "create",
        "--subnet",
        "10.140.0.0/24",
        "--ip-range",
        "10.140.0.128/25",
        "--aux-address",
        "a1=10.140.0.200",
        "-o",
        "com.docker.network.driver.mtu=1450",
        "s1",
    )
    run(h, "--name", "fixed", "--network", "s1", "--ip", "10.140.0.10", "busybox", "sleep", "600")
    run(h, "--name", "auto", "--network", "s1", "busybox", "sleep", "600")
    run(
        h,
        "--name",
        "mac",
        "--network",
        "s1",
        "--mac-address",
        "02:aa:bb:cc:dd:ee",
        "busybox",
        "sleep",
        "600",
    )
    assert h.ip_of("fixed", "s1") == "10.140.0.10"
    assert h.ip_of("auto", "s1") == "10.140.0.129"  # the gateway took .128
    fixed = h.api.get("/containers/fixed/json")["NetworkSettings"]["Networks"]["s1"]
    assert fixed["IPAMConfig"] == {"IPv4Address": "10.140.0.10"}
    assert (
        h.api.get("/containers/mac/json")["NetworkSettings"]["Networks"]["s1"]["MacAddress"]
        == "02:aa:bb:cc:dd:ee"
    )
    link = json.loads(h.in_sandbox("mac", "ip -j link show eth0").stdout)[0]
    assert link["address"] == "02:aa:bb:cc:dd:ee" and link["mtu"] == 1450
    ep = h.api.get("/containers/auto/json")["NetworkSettings"]["Networks"]["s1"]
    assert h.links()["tv" + ep["EndpointID"][:12]]["mtu"] == 1450


BAD_RUNS = [
    (["--network", "s1", "--ip", "10.140.0.10"], "Address already in use"),
    (
        ["--network", "s1", "--ip", "10.141.0.10"],
        "Invalid address 10.141.0.10: It does not belong to any of this network's subnets",
    ),
    (["--network", "s1", "--ip", "10.140.0.200"], "Address already in use"),
    (["--network", "s1", "--ip", "10.140.0.255"], "Address already in use"),
    (
        ["--network", "auto-net", "--ip", "172.18.0.10"],
        "user specified IP address is supported only when connecting to networks with user configured subnets",
    ),
    (
        ["--ip", "172.17.0.50"],
        "user specified IP address is supported on user defined networks only",
    ),
]


def test_bad_runs_leave_nothing_half_made(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok(
        "network",
        "create",
        "--subnet",
        "10.140.0.0/24",
        "--ip-range",
        "10.140.0.128/25",
        "--aux-address",
        "a1=10.140.0.200",
        "s1",
    )
    h.ok("network", "create", "auto-net")
    run(h, "--name", "holder", "--network", "s1", "--ip", "10.140.0.10", "busybox", "sleep", "600")
    before = h.kernel_snapshot()
    for i, (args, message) in enumerate(BAD_RUNS):
        r = h.cli("run", "-d", "--name", f"bad{i}", *args, "busybox", "sleep", "1")
        assert r.returncode == 125, (args, r.stderr)
        assert r.stderr.splitlines()[0] == f"tether: Error response from daemon: {message}", args
        assert h.kernel_snapshot() == before, args
        # As in Docker, the container exists, never started.
        assert h.api.get(f"/containers/bad{i}/json")["State"]["Status"] == "created"
    # A missing network: refused at create, nothing left (dockerd 25+; 20.10 left it Created).
    r = h.cli("run", "-d", "--name", "badnet", "--network", "nosuchnet", "busybox", "true")
    assert r.returncode == 125
    assert r.stderr.splitlines()[0] == (
        "tether: Error response from daemon: network nosuchnet not found"
    )
    assert h.kernel_snapshot() == before
    assert "badnet" not in h.ok("ps", "-a", "--format", "{{.Names}}")
    checks = [
        (
            ["run", "--pull", "never", "busybox-nosuch"],
            "tether: Error response from daemon: No such image: busybox-nosuch:latest",
            125,
        ),
        (
            ["run", "--name", "holder", "busybox", "true"],
            'tether: Error response from daemon: Conflict. The container name "/holder" is already in use',
            125,
        ),
        (
            ["run", "--network", "host", "--network-alias", "x", "busybox", "true"],
            "tether: network-scoped aliases are only supported for user-defined networks",
            125,
        ),
        (
            ["run", "--network", "none", "--network-alias", "x", "busybox", "true"],
            "tether: network-scoped aliases are only supported for user-defined networks",
            125,
        ),
        (
            ["run", "--network-alias", "x", "busybox", "true"],
            "tether: network-scoped aliases are only supported for user-defined networks",
            125,
        ),
        (
            ["run", "--mac-address", "zz:zz", "busybox", "true"],
            "tether: zz:zz is not a valid mac address",
            125,
        ),
        (
            ["run", "--network", "s1", "--ip", "not-an-ip", "busybox", "true"],
            "tether: Error response from daemon: invalid IPv4 address: not-an-ip",
            125,
        ),
        (
            ["run", "--network", "s1", "--network", "auto-net", "busybox", "true"],
            "tether: Error response from daemon: Container cannot be connected to network endpoints: s1, auto-net",
            125,
        ),
        (
            ["run", "busybox", "nosuchcmd"],
            'exec: "nosuchcmd": executable file not found in $PATH',
            127,
        ),
    ]
    for args, message, code in checks:
        r = h.cli(*args)
        assert r.returncode == code, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert h.kernel_snapshot() == before, args
    r = h.cli("run", "--network", "host", "-p", "8085:80", "--name", "hostweb", "busybox", "true")
    assert (
        r.returncode == 0
        and "WARNING: Published ports are discarded when using host network mode" in r.stderr
    )


def test_connect_disconnect_names_routes_and_errors(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "anc-net1")
    h.ok("network", "create", "--subnet", "10.190.0.0/24", "anc-net3")
    cid = run(h, "--name", "s1", "--network", "anc-net1", "busybox", "sleep", "600")
    run(h, "--name", "peer", "--network", "anc-net3", "busybox", "sleep", "600")
    h.ok(
        "network",
        "connect",
        "--ip",
        "10.190.0.50",
        "--alias",
        "svc",
        "--alias",
        "svc2",
        "anc-net3",
        "s1",
    )
    assert "eth1" in h.in_sandbox("s1", "ip -o -4 addr show eth1").stdout
    assert "10.190.0.50/24" in h.in_sandbox("s1", "ip -o -4 addr show eth1").stdout
    assert "default via 172.18.0.1 dev eth0" in h.in_sandbox("s1", "ip route").stdout
    ep = h.api.get("/containers/s1/json")["NetworkSettings"]["Networks"]["anc-net3"]
    assert ep["Aliases"] == ["svc", "svc2", cid[:12]] and ep["IPAMConfig"] == {
        "IPv4Address": "10.190.0.50"
    }
    fetch(h, "peer", "10.190.0.50")  # nothing listens: refused, but the packet arrived
    assert h.cli("exec", "peer", "ping", "-c1", "-W2", "10.190.0.50").returncode == 0
    # Disconnect, reconnect: a new name (eth2), the old --ip and aliases are not remembered.
    h.ok("network", "disconnect", "anc-net3", "s1")
    assert h.in_sandbox("s1", "ip link show eth1", check=False).returncode != 0
    h.ok("network", "connect", "anc-net3", "s1")
    assert "eth2" in h.in_sandbox("s1", "ip -o link").stdout
    assert h.ip_of("s1", "anc-net3") == "10.190.0.3"
    # Leaving the first network moves the default route to the remaining one.
    h.ok("network", "disconnect", "anc-net1", "s1")
    assert "default via 10.190.0.1 dev eth2" in h.in_sandbox("s1", "ip route").stdout
    h.ok("network", "disconnect", "anc-net3", "s1")
    assert [
        line.split(": ")[1] for line in h.in_sandbox("s1", "ip -o link").stdout.splitlines()
    ] == ["lo"]
    assert h.api.get("/containers/s1/json")["NetworkSettings"]["Networks"] == {}
    # Errors, in Docker's words.
    run(h, "--name", "hostmode", "--network", "host", "busybox", "sleep", "600")
    run(h, "--name", "nonemode", "--network", "none", "busybox", "sleep", "600")
    h.ok("network", "connect", "anc-net1", "s1")
    before = h.kernel_snapshot()
    for args, message in [
        (["connect", "nosuchnet", "s1"], "network nosuchnet not found"),
        (["connect", "anc-net1", "nosuchcontainer"], "No such container: nosuchcontainer"),
        (["connect", "anc-net1", "s1"], "endpoint with name s1 already exists in network anc-net1"),
        (["disconnect", "anc-net3", "s1"], f"container {cid} is not connected to network anc-net3"),
        (
            ["connect", "--alias", "a1", "bridge", "s1"],
            "network-scoped alias is supported only for containers in user defined networks",
        ),
        (
            ["connect", "--ip", "172.17.0.99", "bridge", "s1"],
            "user specified IP address is supported on user defined networks only",
        ),
        (
            ["connect", "anc-net1", "hostmode"],
            "container sharing network namespace with another container or host cannot be connected to any other network",
        ),
        (
            ["connect", "anc-net1", "nonemode"],
            "container cannot be connected to multiple networks with one of the networks in private (none) mode",
        ),
    ]:
        r = h.cli("network", *args)
        assert r.returncode == 1, args
        assert r.stderr.strip() == f"Error response from daemon: {message}", args
        assert h.kernel_snapshot() == before, args
    r = h.cli("network", "rm", "anc-net1")
    assert "has active endpoints" in r.stderr


def test_network_modes_host_none_default(bhost: NamespaceHost) -> None:
    h = bhost
    run(h, "--name", "hm", "--network", "host", "busybox", "sleep", "600")
    run(h, "--name", "nm", "--network", "none", "busybox", "sleep", "600")
    run(h, "--name", "dm", "busybox", "sleep", "600")
    host_links = sorted(h.links())
    inside = h.ok("exec", "hm", "ip", "-o", "link")
    assert sorted(line.split(": ")[1].split("@")[0] for line in inside.splitlines()) == host_links
    assert [
        line.split(": ")[1] for line in h.ok("exec", "nm", "ip", "-o", "link").splitlines()
    ] == ["lo"]
    assert (
        h.api.get("/containers/nm/json")["NetworkSettings"]["Networks"]["none"]["IPAddress"] == ""
    )
    assert h.ip_of("dm", "bridge") == "172.17.0.2"
    assert "hm" in [c["Name"] for c in h.inspect_network("host")["Containers"].values()]


def test_stop_start_kill_wait_logs_restart(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "n")
    script = "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    run(h, "--name", "svc", "--network", "n", "busybox", "sh", "-c", script)
    time.sleep(0.3)
    assert h.ok("logs", "svc") == "up\n"
    assert h.ok("stop", "svc") == "svc\n"
    info = h.api.get("/containers/svc/json")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 0
    assert info["NetworkSettings"]["Networks"]["n"]["IPAddress"] == ""
    assert (
        h.veths() == []
        and h.netns_files() == []
        and [a for a in h.allocations() if a[2] not in ("gateway",)] == []
    )
    assert h.ok("logs", "svc") == "up\nbye\n"
    assert h.ok("start", "svc") == "svc\n"
    assert h.ip_of("svc", "n") == "172.18.0.2"
    h.ok("kill", "-s", "KILL", "svc")
    assert h.ok("wait", "svc") == "137\n"
    h.ok("restart", "svc")
    assert h.api.get("/containers/svc/json")["State"]["Running"] is True
    h.ok("rm", "-f", "svc")
    # logs -f follows until the container ends; --tail and -t work on lines.
    run(
        h,
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "echo one; sleep 0.5; echo two >&2; sleep 0.2; echo three",
    )
    r = h.cli("logs", "-f", "talker", timeout=10)
    assert (r.stdout, r.stderr) == ("one\nthree\n", "two\n")
    assert h.ok("logs", "--tail", "1", "talker") == "three\n"
    stamped = h.ok("logs", "-t", "talker").splitlines()[0]
    assert stamped.endswith("Z one") and stamped[4] == "-" and stamped[10] == "T"
    assert h.veths() == [] and h.netns_files() == []


def test_images_import_list_remove(bhost: NamespaceHost) -> None:
    h = bhost
    out = h.ok("images")
    assert out.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"busybox", "host"}
    run(h, "--name", "user", "busybox", "sleep", "600")
    r = h.cli("image", "rm", "busybox")
    assert r.returncode == 1 and "(must force) - container " in r.stderr
    assert "is using its referenced image" in r.stderr
    h.ok("rm", "-f", "user")
    assert "Deleted: sha256:" in h.ok("image", "rm", "busybox")
    assert "busybox" not in h.ok("images")
    # The built-in host image: the host's own filesystem, with the container's own files.
    r = h.cli(
        "run",
        "--rm",
        "--hostname",
        "hosty",
        "host",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; test -x /usr/bin/python3",
    )
    assert r.returncode == 0 and r.stdout == "hosty\nhosty\n"
