"""iptables' DOCKER-USER chain, edited with the commands Docker's documentation gives
(issue 14 item 6): DROP, ACCEPT and RETURN with Docker's meaning, before tether's isolation,
with real traffic between containers, on a namespace-host's tetherd."""

from __future__ import annotations

import shutil

import pytest

from nshost import NamespaceHost

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("iptables") is None, reason="no iptables (apt iptables)"),
]

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]


def reach(h: NamespaceHost, client: str, ip: str) -> bool:
    r = h.cli("exec", client, "timeout", "2", "wget", "-qO-", f"http://{ip}:80/")
    return r.returncode == 0 and r.stdout.startswith("hello-")


def ipt(h: NamespaceHost, rule: str) -> str:
    return h.sh(f"iptables -w 5 {rule}").stdout


def test_docker_user_drop_accept_return(bhost: NamespaceHost) -> None:
    h = bhost
    # As dockerd leaves it: an empty DOCKER-USER ending in RETURN, jumped to from FORWARD.
    assert ipt(h, "-S DOCKER-USER").splitlines() == ["-N DOCKER-USER", "-A DOCKER-USER -j RETURN"]
    assert "-A FORWARD -j DOCKER-USER" in ipt(h, "-S FORWARD")
    h.ok("network", "create", "--subnet", "10.81.0.0/24", "du1")
    h.ok("network", "create", "--subnet", "10.82.0.0/24", "du2")
    h.ok("run", "-d", "--name", "web1", "--network", "du1", "busybox", *WEB)
    h.ok("run", "-d", "--name", "web2", "--network", "du2", "busybox", *WEB)
    h.ok("run", "-d", "--name", "c1", "--network", "du1", "busybox", "sleep", "600")
    ip1, ip2, ipc = h.ip_of("web1", "du1"), h.ip_of("web2", "du2"), h.ip_of("c1", "du1")
    assert reach(h, "c1", ip1) and not reach(h, "c1", ip2)
    # DROP: final, even within one network.
    ipt(h, f"-I DOCKER-USER -s {ipc} -d {ip1} -j DROP")
    assert not reach(h, "c1", ip1)
    ipt(h, f"-D DOCKER-USER -s {ipc} -d {ip1} -j DROP")
    assert reach(h, "c1", ip1)
    # ACCEPT both ways: the two networks talk, past tether's isolation (Docker's meaning).
    ipt(h, "-I DOCKER-USER -s 10.81.0.0/24 -d 10.82.0.0/24 -j ACCEPT")
    ipt(h, "-I DOCKER-USER -s 10.82.0.0/24 -d 10.81.0.0/24 -j ACCEPT")
    assert reach(h, "c1", ip2)
    # RETURN first: back to tether's rules, isolated again.
    ipt(h, "-I DOCKER-USER -j RETURN")
    assert not reach(h, "c1", ip2)
    ipt(h, "-D DOCKER-USER 1")
    assert reach(h, "c1", ip2)
    # A restarted tetherd keeps the user's rules and does not add its own twice; a table
    # whose forward chain an older tetherd made (priority filter) is made again after ours.
    h.stop()
    h.sh(
        "nft 'flush chain inet tether forward; delete chain inet tether forward; "
        "add chain inet tether forward { type filter hook forward priority filter; }'"
    )
    h.start()
    assert "priority filter + 10;" in h.sh("nft list chain inet tether forward").stdout
    forward = ipt(h, "-S FORWARD")
    assert forward.count("-j DOCKER-USER") == 1 and forward.count("-j MARK") == 2, forward
    assert ipt(h, "-S DOCKER-USER").count("-j ACCEPT") == 2
    assert reach(h, "c1", ip2)
    ipt(h, "-F DOCKER-USER")
    assert not reach(h, "c1", ip2) and reach(h, "c1", ip1)
    # FORWARD flushed by hand: no marks, tether's isolation as before (it never widens).
    ipt(h, "-I DOCKER-USER -s 10.81.0.0/24 -d 10.82.0.0/24 -j ACCEPT")
    ipt(h, "-F FORWARD")
    assert not reach(h, "c1", ip2) and reach(h, "c1", ip1)
