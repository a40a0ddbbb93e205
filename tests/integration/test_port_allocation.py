"""Host port allocations stay exactly what is published: a binding that fails part-way gives
back what it took itself, never what earlier bindings of the same container hold."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]


def port_rows(h: NamespaceHost) -> set[tuple[str, str, int]]:
    db = sqlite3.connect(f"file:{os.path.join(h.root, 'tether.db')}?mode=ro", uri=True)
    try:
        return {
            (r[0], r[1], int(r[2])) for r in db.execute("SELECT proto, host_ip, port FROM ports")
        }
    finally:
        db.close()


def hold_v6_port(h: NamespaceHost, port: int) -> subprocess.Popen[bytes]:
    """A host process (in the namespace-host) listening on [::]:port, IPv6 only."""
    code = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n"
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
        f"s.bind(('::', {port})); s.listen(1); print('ready', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", h.netns, sys.executable, "-c", code], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def test_a_range_that_fails_part_way_keeps_the_other_bindings(bhost: NamespaceHost) -> None:
    h = bhost
    holder = hold_v6_port(h, 9000)
    try:
        # 80 takes 8080 on both families; 81's range tries 9000 (0.0.0.0 binds, [::] is
        # taken by the host process), gives back what it took there, and takes 9001.
        h.ok("run", "-d", "--name", "web", "-p", "8080:80", "-p", "9000-9001:81", "busybox", *WEB)
    finally:
        holder.kill()
        holder.wait()
    ports = h.ok("port", "web").split("\n")
    assert "80/tcp -> 0.0.0.0:8080" in ports and "81/tcp -> 0.0.0.0:9001" in ports, ports
    rows = port_rows(h)
    assert rows == {
        ("tcp", "0.0.0.0", 8080),
        ("tcp", "::", 8080),
        ("tcp", "0.0.0.0", 9001),
        ("tcp", "::", 9001),
    }, rows
    # So another container is told the port is taken, in Docker's words.
    r = h.cli("run", "-d", "--name", "other", "-p", "8080:80", "busybox", "sleep", "600")
    assert r.returncode != 0 and "port is already allocated" in r.stderr, r.stderr
    # And the 8080 the first container holds still leads to it.
    deadline = time.monotonic() + 5
    got = ""
    while time.monotonic() < deadline and not got.startswith("hello-"):
        got = h.sh("timeout 2 busybox wget -qO- http://127.0.0.1:8080/", check=False).stdout
    assert got.startswith("hello-"), got
    h.ok("rm", "-f", "web")
    assert port_rows(h) == set()
