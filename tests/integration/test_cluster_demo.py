"""The cluster demo (examples/cluster_demo.py, `./run demo --cluster`), run end to end.

The demo makes its own namespace-hosts (an underlay namespace and three node namespaces,
each node with its own tetherd and etcd member), so these tests take no `host` fixture: what
they check is what a user running the demo would, its printed reachability matrix, and that
it leaves nothing behind and changes nothing of the machine's own network.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cluster import live_etcd_processes

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "examples", "cluster_demo.py")


def root_network() -> dict[str, list[str]]:
    """The machine's own network, which the demo must not change."""

    def lines(cmd: list[str]) -> list[str]:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return sorted(line for line in r.stdout.splitlines() if line.strip())

    return {
        "links": lines(["ip", "-br", "link", "show"]),
        "addresses": lines(["ip", "-br", "addr", "show"]),  # (no lifetimes)
        "routes": lines(["ip", "route", "show", "table", "all"]),
    }


def leftovers(token: str) -> dict[str, list[str]]:
    """What one demo run (its random token is in every name it makes) would leave if it
    leaked: namespaces, processes (tetherds, shims, etcd members), files, mounts.  By token,
    so that another demo running at the same time (another test run) is not counted."""
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z":
            continue
        if f"demo-{token}-" in cmd:
            procs.append(cmd)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if f"demo-{token}-" in line]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return {
        "namespaces": [n for n in netns.stdout.split() if n.startswith(f"tcd-{token}-")],
        "processes": procs,
        "etcd members": list(live_etcd_processes(f"tether-etcd-demo-{token}-").values()),
        "files": glob.glob(f"/tmp/tether-cluster-demo-{token}-*")
        + glob.glob(f"/dev/shm/tether-etcd-demo-{token}-*"),
        "mounts": mounts,
    }


def token_of(out: str) -> str:
    m = re.search(r"run directory: /tmp/tether-cluster-demo-([0-9a-f]+)-", out)
    assert m is not None, out
    return m[1]


def assert_left_as_found(before: dict[str, list[str]], out: str) -> None:
    token = token_of(out)
    # The teardown is synchronous, but a killed container's veth peer can take a moment to
    # leave the kernel's lists: a bounded wait before comparing.
    deadline = time.monotonic() + 10
    while True:
        now = root_network()
        changed = {k: sorted(set(now[k]) ^ set(before[k])) for k in now}
        left = {**{k: v for k, v in changed.items() if v}, **leftovers(token)}
        left = {k: v for k, v in left.items() if v}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"the demo left or changed: {left}"


def demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, DEMO, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def matrix(out: str, title: str) -> dict[tuple[str, str], str]:
    """The demo's printed matrix under `title` ("by name", "by address"): (row, column) ->
    cell, for the cross-node pairs."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title))
    columns = lines[start].split()[len(title.split()) :]
    cells = {}
    for line in lines[start + 1 : start + 1 + len(columns)]:
        row, *values = line.split()
        assert len(values) == len(columns), line
        for col, v in zip(columns, values, strict=True):
            if v != "-":
                cells[row, col] = v
    return cells


def test_the_cluster_demo_reaches_every_pair_by_name_and_leaves_nothing() -> None:
    before = root_network()
    started = time.monotonic()
    r = demo()
    took = time.monotonic() - started
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    by_name = matrix(r.stdout, "by name")
    assert sorted(by_name) == [
        (a, b) for a in ("web1", "web2", "web3") for b in ("web1", "web2", "web3") if a != b
    ]
    assert set(by_name.values()) == {"ok"}, by_name
    by_address = matrix(r.stdout, "by address")
    assert len(by_address) == 6 and set(by_address.values()) == {"ok"}, by_address
    assert "6 of 6 cross-node pairs answered by name, 6 of 6 by address" in out
    # What it shows is what tether programmed: node2's and node3's containers behind their
    # nodes' VTEPs on node1, the keys in etcd, and all of those gone at the end.
    assert re.search(r"^\S+ dst 10\.99\.0\.12 self permanent", out, re.M), out
    assert re.search(r"^\S+ dst 10\.99\.0\.13 self permanent", out, re.M), out
    assert re.search(r"^10\.0\.0\.\d+ lladdr \S+ PERMANENT", out, re.M), out
    assert "node2     node2      Ready" in out
    assert "/tether/endpoints/" in out and "/tether/nodes/node3" in out
    assert "Traceback" not in out
    print(f"cluster demo: {took:.1f} s")  # (shown with pytest -s)
    assert_left_as_found(before, out)


def test_ctrl_c_in_the_middle_takes_everything_down() -> None:
    before = root_network()
    p = subprocess.Popen(
        [sys.executable, DEMO],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    seen = []
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 120
        # Interrupted once the containers run: daemons, etcd, containers and an overlay
        # network all exist then.
        for line in p.stdout:
            seen.append(line)
            if line.startswith("node1$ tether exec web1 nslookup") or time.monotonic() > deadline:
                break
        assert any("tether exec web1 nslookup" in s for s in seen), "".join(seen)
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest and "namespaces and files removed" in rest
    assert "Traceback" not in rest
    assert_left_as_found(before, "".join(seen))


def test_keep_leaves_a_working_cluster_and_down_removes_it() -> None:
    before = root_network()
    r = demo("--keep")
    # Only this run's cluster is taken down: another one a user kept stays up.
    run_dir = re.search(r"^  TETHER_HOST=unix://(/tmp/tether-cluster-demo-[^/]+)/", r.stdout, re.M)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        hosts = re.findall(r"^  TETHER_HOST=(unix://\S+) tether ps$", r.stdout, re.M)
        assert len(hosts) == 3, r.stdout
        # What the printed lines say works: node3's tetherd runs web3, and web3 still
        # reaches web1 on node1 by name.
        env = {**os.environ, "TETHER_HOST": hosts[2]}
        ps = subprocess.run(
            [sys.executable, "-m", "tether.cli.main", "ps", "--format", "{{.Names}}"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert ps.stdout.split() == ["web3"], ps.stdout + ps.stderr
        got = subprocess.run(
            [sys.executable, "-m", "tether.cli.main", "exec", "web3",
             "timeout", "3", "wget", "-qO-", "http://web1/"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert got.stdout.strip() == "web1 on node1", got.stdout + got.stderr
    finally:
        down = demo("--down", run_dir[1], timeout=120) if run_dir else None
    assert down is not None and down.returncode == 0, r.stdout
    assert "taking down the demo cluster" in down.stdout, down.stdout
    assert_left_as_found(before, r.stdout)
