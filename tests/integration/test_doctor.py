"""tether doctor: each kind of drift injected by hand is named with its object, --repair fixes
it, a second run is clean, and the traffic that the drift broke flows again."""

from __future__ import annotations

import json
import time

import pytest

from nshost import NamespaceHost, sh

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]


def doctor(h: NamespaceHost, *flags: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = h.cli("doctor", "--format", "json", *flags)
    return r.returncode, json.loads(r.stdout)


def named(report: dict, kind: str, obj: str, text: str) -> bool:  # type: ignore[type-arg]
    return any(
        p["Kind"] == kind and obj in p["Object"] and text in p["Text"] for p in report["Problems"]
    )


def found_then_repaired(h: NamespaceHost, *problems: tuple[str, str, str]) -> None:
    """doctor names each (kind, object, text) problem and exits 1; --repair mends them all."""
    code, report = doctor(h)
    assert code == 1
    for problem in problems:
        assert named(report, *problem)
    code, report = doctor(h, "--repair")
    assert code == 0 and report["Problems"] == [], report


def reach(h: NamespaceHost, client: str, target: str) -> bool:
    r = h.cli("exec", client, "timeout", "3", "wget", "-qO-", f"http://{target}/")
    return r.returncode == 0 and r.stdout.startswith("hello-")


def test_drift_is_named_repaired_and_gone(bhost: NamespaceHost) -> None:
    h = bhost
    lan = h.add_lan()
    h.ok("network", "create", "--subnet", "10.91.0.0/24", "app")
    h.ok("run", "-d", "--name", "web", "--network", "app", "-p", "8080:80", "busybox", *WEB)
    h.ok("run", "-d", "--name", "api", "--network", "app", "busybox", *WEB)
    h.ok("run", "-d", "--name", "client", "--network", "app", "busybox", "sleep", "600")
    h.ok("run", "-d", "--name", "db", "--network", "app", "busybox", *WEB)
    r = h.cli("doctor")
    assert r.returncode == 0 and r.stdout.startswith("no problems"), r.stdout
    assert reach(h, "client", "web") and reach(h, "client", "api") and reach(h, "client", "db")
    # The user's own rules are theirs: never drift.
    h.sh("nft add rule inet tether user ip daddr 192.0.2.1 drop")
    assert doctor(h)[0] == 0

    def key(name: str) -> str:
        return str(h.api.get(f"/containers/{name}/json")["NetworkSettings"]["SandboxKey"])

    api_ep = h.api.get("/containers/api/json")["NetworkSettings"]["Networks"]["app"]["EndpointID"]
    veth = f"tv{api_ep[:12]}"
    # 1. a veth deleted; 2. a published port's DNAT element deleted; 3. the default route
    # of a sandbox deleted; 4. the DNS redirect inside a sandbox deleted.
    h.sh(f"ip link del {veth}")
    h.sh("nft delete element inet tether pub4 '{ tcp . 8080 }'")
    sh(f"nsenter --net={key('client')} ip route del default")
    sh(f"nsenter --net={key('web')} nft delete table ip tether_dns")
    # 5. the address of a sandbox's interface deleted.
    db_ip = h.ip_of("db", "app")
    sh(f"nsenter --net={key('db')} ip addr del {db_ip}/24 dev eth0")
    time.sleep(6)  # a periodic reconcile passes: none of this is what it repairs
    assert not reach(h, "client", "api") and not reach(h, "client", db_ip)
    assert (
        sh(
            f"ip netns exec {lan} timeout 2 busybox wget -qO- http://10.250.0.1:8080/", check=False
        ).returncode
        != 0
    )
    code, report = doctor(h)
    assert code == 1
    assert named(report, "link", "container api (network app)", f"its veth {veth} is missing")
    assert named(report, "nft", "container web (published port 8080/tcp", "pub4 lacks element")
    assert named(report, "route", "container client", "default route should be via 10.91.0.1")
    assert named(report, "dns", "container web", "table ip tether_dns")
    assert named(report, "address", "container db", f"eth0 lacks its address {db_ip}/24")
    assert all(p["Repair"] for p in report["Problems"])
    r = h.cli("doctor")
    assert r.returncode == 1 and "run `tether doctor --repair`" in r.stdout
    # Repair, then a second run finds nothing, and the traffic flows again.
    r = h.cli("doctor", "--repair")
    assert r.returncode == 0, r.stdout
    assert "after the repair: no problems" in r.stdout
    assert "container api: endpoints rebuilt" in r.stdout
    code, report = doctor(h)
    assert code == 0 and report["Problems"] == []
    assert reach(h, "client", "api") and reach(h, "client", "web") and reach(h, "client", "db")
    assert reach(h, "web", "api")  # its names resolve again
    assert sh(
        f"ip netns exec {lan} timeout 3 busybox wget -qO- http://10.250.0.1:8080/"
    ).stdout.startswith("hello-")
    assert "192.0.2.1" in h.sh("nft list chain inet tether user").stdout


def test_stray_objects_and_a_rewritten_chain(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "app")
    net = h.api.get("/networks/app")["Id"]
    h.ok("run", "-d", "--name", "one", "--network", "app", "busybox", "sleep", "600")
    # A veth with tether's name that no container has; a rule added to tether's own chain.
    h.sh("ip link add tv0123456789ab type veth peer name tq-peer")
    h.sh(f"nft add rule inet tether net_{net[:12]}_out tcp dport 22 drop")
    found_then_repaired(
        h,
        ("link", "veth tv0123456789ab", "no container has"),
        ("nft", "network app", "rule tether did not render: `tcp dport 22 drop`"),
    )
    assert "tv0123456789ab" not in h.links()
    assert "dport 22" not in h.sh(f"nft list chain inet tether net_{net[:12]}_out").stdout


def test_kernel_view_of_inspect_verbose(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.92.0.0/24", "app")
    h.ok("run", "-d", "--name", "web", "--network", "app", "-p", "8081:80", "busybox", *WEB)
    h.ok("run", "-d", "--name", "client", "--network", "app", "busybox", "sleep", "600")
    assert reach(h, "client", "web")
    net = json.loads(h.ok("network", "inspect", "--verbose", "app"))[0]
    k = net["Kernel"]
    bridge = k["Devices"][0]
    assert bridge["Role"] == "bridge" and bridge["State"] == "up" and bridge["MTU"] == 1500
    assert bridge["Addresses"] == ["10.92.0.1/24"] and bridge["Statistics"]["TxPackets"] > 0
    eps = {e["Container"]: e for e in k["Endpoints"]}
    web = eps["web"]
    assert web["HostSide"]["Kind"] == "veth" and web["HostSide"]["State"] == "up"
    assert web["ContainerSide"]["Name"] == "eth0"
    assert web["ContainerSide"]["Addresses"] == ["10.92.0.2/24"]
    chain = k["Nftables"]["Chains"][f"net_{net['Id'][:12]}_out"]
    listing = h.sh("nft -a list table inet tether").stdout
    assert all(f"# handle {r['Handle']}" in listing for r in chain)
    assert chain[0]["Rule"].startswith('oifname "tb-')
    assert "tcp . 8081 : 10.92.0.2 . 80" in k["Nftables"]["Elements"]["pub4"]
    counters = k["Nftables"].get("Counters") or {}
    assert not counters or sum(c["Packets"] for c in counters.values()) > 0
    # The plain inspect has none of it (Docker's shape stays as it is).
    assert "Kernel" not in json.loads(h.ok("network", "inspect", "app"))[0]
    ctr = json.loads(h.ok("inspect", "--verbose", "web"))[0]["Kernel"]
    eth0 = next(i for i in ctr["Interfaces"] if i["Name"] == "eth0")
    assert eth0["Network"] == "app" and eth0["HostPeer"]["Bridge"].startswith("tb-")
    assert "default via 10.92.0.1 dev eth0 proto static" in ctr["Routes"]
    assert "[::]:80/tcp" in ctr["Listening"] or "0.0.0.0:80/tcp" in ctr["Listening"]
    assert "ip tether_dns" in ctr["Nftables"]["Sandbox"]
    assert "tcp . 8081 : 10.92.0.2 . 80" in ctr["Nftables"]["Host"]["Elements"]["pub4"]
    assert "Kernel" not in json.loads(h.ok("inspect", "web"))[0]


def test_kernel_view_of_a_macvlan_network(bhost: NamespaceHost) -> None:
    """macvlan: the parent device, each container's macvlan child with its mode as the kernel
    reports it, the sandbox's routes; and no nft rule, said so (none applies)."""
    h = bhost
    h.ok("network", "create", "-d", "macvlan", "--subnet", "10.93.0.0/24", "lan")
    h.ok("run", "-d", "--name", "m1", "--network", "lan", "busybox", *WEB)
    net = json.loads(h.ok("network", "inspect", "--verbose", "lan"))[0]
    k = net["Kernel"]
    parent = k["Devices"][0]
    assert parent["Role"] == "macvlan parent" and parent["MTU"] == 1500
    assert parent["Name"] in h.links()
    ep = k["Endpoints"][0]
    assert ep["Container"] == "m1" and "HostSide" not in ep
    child = ep["ContainerSide"]
    assert child["Kind"] == "macvlan" and child["State"] == "up"
    assert child["Addresses"] == ["10.93.0.2/24"]
    key = h.api.get("/containers/m1/json")["NetworkSettings"]["SandboxKey"]
    detail = sh(f"nsenter --net={key} ip -d link show eth0").stdout
    assert f"macvlan mode {child['Details']['Mode']}" in detail
    assert f"link/ether {child['MacAddress']}" in detail
    assert "no rule of tether's applies" in k["Nftables"]["Note"]
    ctr = json.loads(h.ok("inspect", "--verbose", "m1"))[0]["Kernel"]
    eth0 = next(i for i in ctr["Interfaces"] if i["Name"] == "eth0")
    assert eth0["Network"] == "lan" and eth0["Kind"] == "macvlan"
    assert "default via 10.93.0.1 dev eth0 proto static" in ctr["Routes"]
    assert "0.0.0.0:80/tcp" in ctr["Listening"] or "[::]:80/tcp" in ctr["Listening"]


def test_fdb_cluster_records_and_service_vips_on_an_overlay(host: NamespaceHost) -> None:
    """Two nodes, one overlay: an FDB entry and this node's endpoint record in etcd deleted
    by hand are named (with the remote container and its node) and put back; a service's
    VIP is explained through the table that balances it, and that table, deleted, too."""
    from test_overlay import three_nodes, wait_for

    del host
    with three_nodes(2) as c:
        a, b = c.hosts
        a.ok("network", "create", "-d", "overlay", "--attachable", "ov")
        wait_for("the network on node 2", lambda: "ov" in b.ok("network", "ls"))
        a.ok("run", "-d", "--name", "w1", "--network", "ov", "busybox", *WEB)
        b.ok("run", "-d", "--name", "w2", "--network", "ov", "busybox", *WEB)
        assert reach(a, "w1", "w2")
        for h in (a, b):
            code, report = doctor(h)
            assert code == 0, json.dumps(report["Problems"], indent=1)
        net = a.api.get("/networks/ov")["Id"]
        vx = f"vx-{net[:12]}"
        mac2 = b.api.get("/containers/w2/json")["NetworkSettings"]["Networks"]["ov"]["MacAddress"]
        kernel = json.loads(a.ok("network", "inspect", "--verbose", "ov"))[0]["Kernel"]
        assert {"MacAddress": mac2, "Vtep": "10.99.0.12", "State": "permanent"} in kernel["FDB"]
        assert [d["Role"] for d in kernel["Devices"]] == ["bridge", "vxlan"]
        assert kernel["Devices"][1]["Details"]["VNI"] == "4096"
        # explain across nodes: the overlay, the remote node and its VTEP; a probe agrees.
        x = a.api.post("/tether/explain", {"From": "w1", "To": "w2", "Port": "80", "Probe": True})
        assert x["Reachable"] and x["Probe"] is True and not x["Contradiction"], x
        path = next(r for r in x["Reasons"] if r["Step"] == "path")["Text"]
        assert "w2 runs on node node2 (VTEP 10.99.0.12)" in path and "(VNI 4096)" in path
        a.sh(f"bridge fdb del {mac2} dev {vx} dst 10.99.0.12")
        assert not reach(a, "w1", h_ip(b, "w2"))
        x = a.api.post("/tether/explain", {"From": "w1", "To": "w2", "Port": "80"})
        assert not x["Reachable"] and "no entry sending" in x["Reasons"][1]["Text"]
        found_then_repaired(
            a, ("fdb", "container w2 on node node2 (network ov)", f"sending {mac2}")
        )
        assert f"{mac2} dst 10.99.0.12 self permanent" in a.sh(f"bridge fdb show dev {vx}").stdout
        assert reach(a, "w1", "w2")
        # The VXLAN device's neighbour entry for w2 (what answers w1's ARP), deleted.
        ip2 = h_ip(b, "w2")
        a.sh(f"ip neigh del {ip2} dev {vx}")
        x = a.api.post("/tether/explain", {"From": "w1", "To": "w2", "Port": "80"})
        assert not x["Reachable"] and f"no neighbour entry for {ip2}" in x["Reasons"][1]["Text"]
        found_then_repaired(
            a, ("neighbour", "container w2 on node node2", f"no neighbour entry {ip2}")
        )
        assert f"{ip2} lladdr {mac2} PERMANENT" in a.sh(f"ip neigh show dev {vx}").stdout
        assert reach(a, "w1", "w2")
        # This node's endpoint record, deleted from etcd by hand.
        ep = b.api.get("/containers/w2/json")["NetworkSettings"]["Networks"]["ov"]["EndpointID"]
        c.cluster.delete_prefix(f"/tether/endpoints/{net}/{ep}")
        code, report = doctor(b)
        assert code == 1
        assert named(report, "cluster", "container w2 (network ov)", "not in the cluster store")
        code, report = doctor(b, "--repair")
        assert code == 0, report
        wait_for("node 1 learns w2 again", lambda: reach(a, "w1", "w2"), 15)
        # A service's VIP, balanced in w1's own namespace: explained, checked, repaired.
        from test_services import running, service_spec

        a.api.post("/services/create", service_spec("websvc", "ov", replicas=2))
        wait_for("2 running tasks", lambda: len(running(a, "websvc")) == 2, 30)
        vip = a.api.get("/services/websvc")["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
        wait_for("the VIP answers", lambda: reach(a, "w1", vip), 15)
        x = a.api.post("/tether/explain", {"From": "w1", "To": "websvc", "Port": "80"})
        assert x["Reachable"] and x["Target"] == f"{vip}:80", x
        policy = next(r for r in x["Reasons"] if r["Step"] == "policy")
        assert "one of 2 task(s)" in policy["Text"] and "tether_svc" in policy["Object"]
        code, report = doctor(a)
        assert code == 0, json.dumps(report["Problems"], indent=1)
        key = a.api.get("/containers/w1/json")["NetworkSettings"]["SandboxKey"]
        sh(f"nsenter --net={key} nft delete table ip tether_svc")
        assert not reach(a, "w1", vip)
        code, report = doctor(a)
        assert code == 1 and named(report, "vip", "container w1", "tether_svc is missing")
        code, report = doctor(a, "--repair")
        assert code == 0, json.dumps(report, indent=1)
        assert reach(a, "w1", vip)


def h_ip(h: NamespaceHost, name: str) -> str:
    nets = h.api.get(f"/containers/{name}/json")["NetworkSettings"]["Networks"]
    return str(next(iter(nets.values()))["IPAddress"])
