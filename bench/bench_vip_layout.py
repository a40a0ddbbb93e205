"""The kernel's cost of one VIP change by table layout: a verdict map vs a plain set per count.

    .venv/bin/python bench/bench_vip_layout.py [ROUNDS]    (default: 30)

cluster/lb.py's `ip tether_svc` as built at commit 391fa50 (a map `vips` of `VIP : jump n<N>`
elements) and as built now (a plain set `vips_n<N>` per task count, one rule each), each
loaded with 10 and with 10,000 VIPs x 2 tasks in a scratch namespace; then, per round, three
transactions each made by that version's own `lb.changes()` and applied as the balancer
applies them (`tether.kernel.nft.run_in_netns`): a VIP added with one task, the VIP given a
second task (it moves from the 1-task chain or set to the 2-task one), the VIP removed.  No
Python pass is timed, only the nft transactions: what the layout costs in the kernel and in
libnftables.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from types import ModuleType
from typing import Any

from clusterkit import summary
from common import loadavg, save

from nshost import delete_netns, make_netns
from tether.cluster import lb as lb_now
from tether.kernel.nft import run_in_netns

BEFORE = "391fa50"  # the last commit with the `vips` verdict map
SIZES = (10, 10000)


def lb_at(commit: str) -> ModuleType:
    """cluster/lb.py as it was at `commit`, imported under its own name."""
    text = subprocess.run(
        ["git", "show", f"{commit}:src/tether/cluster/lb.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="tether-bench-"), f"lb_{commit}.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location(f"lb_{commit}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def vip(i: int) -> str:
    return f"10.80.{i // 250}.{1 + i % 250}"


def tasks(i: int) -> tuple[str, str]:
    return f"10.81.{i // 250}.{1 + i % 250}", f"10.82.{i // 250}.{1 + i % 250}"


def measure(lb: Any, size: int, rounds: int) -> dict[str, Any]:
    ns = make_netns("tb")
    path = f"/run/netns/{ns}"
    try:
        made: set[str] = set()
        want = {vip(i): lb.entry(tasks(i)) for i in range(size)}
        run_in_netns(path, lb.create_table() + lb.changes({}, want, made))
        times: dict[str, list[float]] = {
            "add a VIP (1 task)": [],
            "a second task": [],
            "remove": [],
        }

        def timed(op: str, text: str) -> None:
            t = time.perf_counter()
            run_in_netns(path, text)
            times[op].append((time.perf_counter() - t) * 1000)

        for r in range(rounds):
            v = vip(30000 + r)
            one = {v: lb.entry(("10.83.0.1",))}
            two = {v: lb.entry(("10.83.0.1", "10.83.0.2"))}
            timed("add a VIP (1 task)", lb.changes({}, one, made))
            timed("a second task", lb.changes(one, two, made))
            timed("remove", lb.changes(two, {}, made))
        return {op: summary(xs) for op, xs in times.items()}
    finally:
        delete_netns(ns)


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    layouts = {
        f"before: map vips of `VIP : jump n<N>` (commit {BEFORE})": lb_at(BEFORE),
        "now: a plain set vips_n<N> per task count (src/tether/cluster/lb.py)": lb_now,
    }
    results: dict[str, Any] = {
        "command": f"bench/bench_vip_layout.py {rounds}",
        "load average at the start (1, 5, 15 min)": loadavg(),
    }
    # Sizes interleaved per layout pair so that the load drifts over both alike.
    for size in SIZES:
        for label, lb in layouts.items():
            key = f"{label}, {size} VIPs loaded (ms)"
            results[key] = measure(lb, size, rounds)
            print(key, {op: (s["p50"], s["p99"]) for op, s in results[key].items()}, flush=True)
    print(save("vip_layout", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
