"""The driver restructuring's cost: the existing benchmarks' headline figures, before vs after.

    .venv/bin/python bench/bench_restructure.py [N] [DNS_ROUNDS] [SCALE] [BEFORE] [AFTER]
        (defaults: 30 rounds; 10 dnsperf rounds of 3 s (0: none); SCALE 0; BEFORE 02ef95b, the last
        commit of main before the restructuring was merged, issue 9's work included; AFTER
        HEAD)

Both commits are exported into temporary trees (common.Tree: a tetherd of each on its own
namespace-host, each with its own CLI launcher).  Every round runs each measure on both, one
after the other, the order flipping every round, so that the machine's drift and other work
on it hit both alike:

- `network create --subnet` + `network rm` through the CLI (bench_networks.py's headline);
- `run -d` on a user network, `rm -f` (bench_containers.py);
- `network connect` + `disconnect` of a running container, CLI and API (bench_containers.py);
- `run -d -p` with the port relay already running (bench_ports.py);
- `compose up -d` of the three-tier example from nothing, and `compose down` (bench_compose.py);
- then DNS_ROUNDS dnsperf runs per tree (defaults, 3 s, an internal name from a container's
  sandbox against 127.0.0.11; bench_dns.py), alternating.

With SCALE > 0, SCALE more containers are started on each tree, alternating one by one, and
the start latency's growth is compared (whole CLI call, and the daemon's own time for
`POST /containers/{id}/start` from its debug log).

Ratios are after / before of the medians; "paired" is the median of the per-round ratios
with its quartiles (each round's two figures were taken seconds apart), which says whether a
difference of the medians stands out of the noise.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from common import Tree, loadavg, rss_kib, run_quiet, save, stats, timed

from nshost import sh

KEYS = ("before", "after")


def paired(before: list[float], after: list[float]) -> dict[str, float]:
    """The per-round ratios after / before: median and quartiles."""
    rs = sorted(a / b for a, b in zip(after, before, strict=True))
    q = statistics.quantiles(rs, n=4) if len(rs) > 1 else [rs[0]] * 3
    return {"median": round(q[1], 3), "p25": round(q[0], 3), "p75": round(q[2], 3)}


def daemon_times(tree: Tree, pattern: str) -> list[float]:
    """The daemon's own time for each request matching PATTERN, in order (its debug log)."""
    rx = re.compile(r"api (\S+ \S+) -> \d+ in ([0-9.]+) ms")
    out = []
    for m in rx.finditer(tree.host.log()):
        if re.fullmatch(pattern, m.group(1)):
            out.append(float(m.group(2)))
    return out


def dnsperf_qps(netns_path: str, qfile: str, secs: int) -> float:
    out = sh(
        f"nsenter --net={netns_path} dnsperf -s 127.0.0.11 -d {qfile} -l {secs}",
        timeout=secs + 30,
    ).stdout
    m = re.search(r"Queries per second:\s+([0-9.]+)", out)
    if m is None:
        raise RuntimeError(f"dnsperf said:\n{out}")
    return float(m.group(1))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    dns_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    scale = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    before_commit = sys.argv[4] if len(sys.argv) > 4 else "02ef95b"
    after_commit = sys.argv[5] if len(sys.argv) > 5 else "HEAD"
    load: dict[str, list[float]] = {"start": loadavg()}
    trees: dict[str, Tree] = {}
    tmp = tempfile.mkdtemp(prefix="tether-bench-restructure-")
    try:
        trees["before"] = Tree(before_commit)
        trees["after"] = Tree(after_commit)
        results: dict[str, object] = {
            "rounds": n,
            "dnsperf rounds (3 s each)": dns_rounds,
            "before": f"{before_commit} ({trees['before'].sha})",
            "after": f"{after_commit} ({trees['after'].sha})",
            "load average (1, 5, 15 min)": load,
        }
        for t in trees.values():
            t.run(["network", "create", "--subnet", "10.210.0.0/16", "pf"])
            t.run(["network", "create", "--subnet", "10.211.0.0/16", "pf-b"])
            t.run(["run", "-d", "--name", "pf-c", "--network", "pf", "busybox", "sleep", "36000"])
            # A published port first: the port relay's start (+57 ms once) stays out of run -p.
            t.run(
                [
                    "run",
                    "-d",
                    "--name",
                    "base",
                    "--network",
                    "pf",
                    "-p",
                    "20000:80",
                    "busybox",
                    "sleep",
                    "1d",
                ]
            )
        # What each tree's restructuring-sensitive paths look like to a user: the plugin
        # list names macvlan after, not before (a check that each daemon runs its own tree).
        results["network plugins (GET /info)"] = {
            k: t.host.api.get("/info")["Plugins"]["Network"] for k, t in trees.items()
        }

        compose_file = {
            k: os.path.join(t.dir, "examples", "three-tier", "compose.yaml")
            for k, t in trees.items()
        }

        def compose(key: str, *args: str) -> None:
            t = trees[key]
            subprocess.run(
                [t.launcher, "compose", "-f", compose_file[key], *args],
                env=t.env,
                capture_output=True,
                check=True,
            )

        # Warm-up: the compose file's schema check is remembered by hash after the first.
        for k, t in trees.items():
            compose(k, "up", "-d")
            compose(k, "down")
            t.run(["run", "-d", "--name", "warm", "--network", "pf", "busybox", "sleep", "1"])
            t.run(["rm", "-f", "warm"])

        measures = (
            "network create + rm (CLI)",
            "run -d (user network)",
            "rm -f (user network)",
            "network connect + disconnect (CLI)",
            "network connect + disconnect (API)",
            "run -d -p (relay running)",
            "compose up -d (three-tier, from nothing)",
            "compose down",
        )
        ms: dict[str, dict[str, list[float]]] = {m: {k: [] for k in KEYS} for m in measures}

        def net_create_rm(key: str, i: int) -> None:
            t = trees[key]
            ms["network create + rm (CLI)"][key].append(
                timed(lambda: t.run(["network", "create", "--subnet", f"10.200.{i}.0/24", "nx"]))
                + timed(lambda: t.run(["network", "rm", "nx"]))
            )

        def run_rm(key: str, i: int) -> None:
            t = trees[key]
            argv = ["run", "-d", "--name", f"r{i}", "--network", "pf", "busybox", "sleep", "3600"]
            ms["run -d (user network)"][key].append(timed(lambda: t.run(argv)))
            ms["rm -f (user network)"][key].append(timed(lambda: t.run(["rm", "-f", f"r{i}"])))

        def connect_cli(key: str, i: int) -> None:
            t = trees[key]
            ms["network connect + disconnect (CLI)"][key].append(
                timed(lambda: t.run(["network", "connect", "pf-b", "pf-c"]))
                + timed(lambda: t.run(["network", "disconnect", "pf-b", "pf-c"]))
            )

        def connect_api(key: str, i: int) -> None:
            api = trees[key].host.api
            ms["network connect + disconnect (API)"][key].append(
                timed(lambda: api.post("/networks/pf-b/connect", {"Container": "pf-c"}))
                + timed(lambda: api.post("/networks/pf-b/disconnect", {"Container": "pf-c"}))
            )

        def run_p(key: str, i: int) -> None:
            t = trees[key]
            argv = ["run", "-d", "--name", f"p{i}", "--network", "pf", "-p", f"{40000 + i}:80"]
            ms["run -d -p (relay running)"][key].append(
                timed(lambda: t.run([*argv, "busybox", "sleep", "3600"]))
            )
            t.run(["rm", "-f", f"p{i}"])

        def compose_up_down(key: str, i: int) -> None:
            ms["compose up -d (three-tier, from nothing)"][key].append(
                timed(lambda: compose(key, "up", "-d"))
            )
            ms["compose down"][key].append(timed(lambda: compose(key, "down")))

        steps: list[Callable[[str, int], None]] = [
            net_create_rm,
            run_rm,
            connect_cli,
            connect_api,
            run_p,
            compose_up_down,
        ]
        for i in range(n):
            order = KEYS if i % 2 == 0 else KEYS[::-1]
            for step in steps:
                for key in order:
                    step(key, i)
        load["after the rounds"] = loadavg()

        # dnsperf: a target and a client container on a user network of each tree.
        qfile = os.path.join(tmp, "queries")
        with open(qfile, "w") as f:
            f.write("pf-dns-target A\n")
        sandbox = {}
        for k, t in trees.items():
            t.run(
                [
                    "run",
                    "-d",
                    "--name",
                    "pf-dns-target",
                    "--network",
                    "pf",
                    "busybox",
                    "sleep",
                    "1d",
                ]
            )
            t.run(["run", "-d", "--name", "client", "--network", "pf", "busybox", "sleep", "36000"])
            sandbox[k] = t.host.api.get("/containers/client/json")["NetworkSettings"]["SandboxKey"]
        qps: dict[str, list[float]] = {k: [] for k in KEYS}
        for i in range(dns_rounds):
            for key in KEYS if i % 2 == 0 else KEYS[::-1]:
                qps[key].append(dnsperf_qps(sandbox[key], qfile, 3))
        load["after dnsperf"] = loadavg()

        all_ms = {m: v for m, v in ms.items() if v["before"]}
        if qps["before"]:
            all_ms["dnsperf queries/s (defaults, 3 s)"] = qps
        results["figures (ms; dnsperf: queries/s)"] = {
            m: {k: stats(v[k]) for k in KEYS} for m, v in all_ms.items()
        }
        results["ratios (after / before)"] = {
            m: {
                "medians": round(statistics.median(v["after"]) / statistics.median(v["before"]), 3),
                "paired": paired(v["before"], v["after"]),
            }
            for m, v in all_ms.items()
        }

        if scale:
            results["scale"] = at_scale(trees, scale)
            load["after the scale run"] = loadavg()
    finally:
        for t in trees.values():
            t.close()
        sh(f"rm -rf {tmp}", check=False)
    # One file per pair of commits (a scale run keeps its own: it is usually made alone).
    name = f"restructure-{trees['before'].sha}-{trees['after'].sha}" + ("-scale" if scale else "")
    print(save(name, results))
    print(json.dumps(results["ratios (after / before)"], indent=2))
    if "scale" in results:
        scale_view = {
            k: {kk: vv for kk, vv in v.items() if "every" not in kk}
            for k, v in results["scale"].items()  # type: ignore[attr-defined]
        }
        print(json.dumps(scale_view, indent=2))


def at_scale(trees: dict[str, Tree], scale: int) -> dict[str, dict[str, object]]:
    """SCALE containers on one network of each tree, started alternately."""
    lat: dict[str, list[float]] = {k: [] for k in KEYS}
    rss0 = {k: rss_kib(t.daemon_pid()) for k, t in trees.items()}
    skip = {k: len(daemon_times(t, r"POST /containers/[^/]+/start")) for k, t in trees.items()}
    for i in range(scale):
        for key in KEYS if i % 2 == 0 else KEYS[::-1]:
            argv = [*trees[key].cli, "run", "-d", "--name", f"s{i}", "--network", "pf"]
            lat[key].append(
                timed(lambda argv=argv: run_quiet([*argv, "busybox", "sleep", "36000"]))
            )
    out: dict[str, dict[str, object]] = {}
    for k, t in trees.items():
        starts = daemon_times(t, r"POST /containers/[^/]+/start")[skip[k] :]
        tenth = max(scale // 10, 1)
        out[k] = {
            "containers": scale,
            "run latency first 50 / last 50 (median ms)": [
                round(statistics.median(lat[k][:50]), 2),
                round(statistics.median(lat[k][-50:]), 2),
            ],
            "run latency last 50 / first 50": round(
                statistics.median(lat[k][-50:]) / statistics.median(lat[k][:50]), 3
            ),
            "run latency median per tenth (ms)": [
                round(statistics.median(lat[k][j : j + tenth]), 1) for j in range(0, scale, tenth)
            ],
            "daemon's start request, median per tenth (ms)": [
                round(statistics.median(starts[j : j + tenth]), 1)
                for j in range(0, len(starts), tenth)
            ],
            "daemon's start, last 50 / first 50": round(
                statistics.median(starts[-50:]) / statistics.median(starts[:50]), 3
            ),
            "tetherd RSS per container (KiB)": round(
                (rss_kib(t.daemon_pid()) - rss0[k]) / scale, 1
            ),
            "run latency, every start in order (ms)": [round(x, 1) for x in lat[k]],
        }
    return out


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"took {time.monotonic() - started:.0f} s")
