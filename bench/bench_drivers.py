"""Drivers: `run -d` on a macvlan network vs a bridge network, and start latency at scale.

    .venv/bin/python bench/bench_drivers.py [N] [SCALE]    (defaults: 40 rounds, 1000 containers)

1. macvlan vs bridge, same run: N rounds, each a `run -d` + `rm -f` on one network then on the
   other (interleaved, so drift hits both alike).  Goal: macvlan / bridge within 1.1.
2. scale: SCALE containers on one bridge network, one `run -d` after another; the median run
   latency of the last 50 over the first 50 (goal <= 1.05; Docker 20.10 here: 1.11 for the
   last/first 10 at 200) and tetherd's memory per container.  The same from the daemon's
   own timing of each start (its debug log).  And, because other work on the machine can
   change its speed between the first and the last minutes: the last 50 starts alternate
   with the first 50 of a fresh daemon (same machine, same minutes), whose ratio shows what
   grows inside tetherd; what grows host-wide (the kernel's mount table, which every new
   mount namespace copies, holds one netns file per container) slows both alike.
"""

from __future__ import annotations

import os
import re
import statistics
import sys

from common import host, launcher, loadavg, rss_kib, run_quiet, save, stats, timed

from nshost import NamespaceHost, make_netns, sh


def start_times(log: str) -> list[float]:
    """The daemon's time for each `POST /containers/{id}/start`, in order (debug log)."""
    rx = r"api POST /containers/[^/ ]+/start -> \d+ in ([0-9.]+) ms"
    return [float(x) for x in re.findall(rx, log)]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    tether = launcher()
    results: dict[str, object] = {"rounds": n, "scale": scale}
    load: dict[str, list[float]] = {"start": loadavg()}
    results["load average (1, 5, 15 min)"] = load
    h = host()
    fresh: NamespaceHost | None = None
    lan = make_netns("tl")
    h.lan_peers.append(lan)
    try:
        h.import_busybox()
        cli = [tether, "-H", f"unix://{h.socket}"]
        sh(f"ip link add lan0 netns {h.netns} type veth peer name lan0 netns {lan}")
        h.sh("ip link set lan0 up")
        sh(f"ip netns exec {lan} ip link set lan0 up")
        h.ok("network", "create", "--subnet", "10.212.0.0/16", "br-net")
        h.ok(
            "network", "create", "-d", "macvlan", "--subnet", "10.213.0.0/16",
            "-o", "parent=lan0", "mv-net",
        )  # fmt: skip

        def one(network: str, name: str) -> tuple[float, float]:
            argv = [*cli, "run", "-d", "--name", name, "--network", network, "busybox"]
            run = timed(lambda: run_quiet([*argv, "sleep", "3600"]))
            rm = timed(lambda: run_quiet([*cli, "rm", "-f", name]))
            return run, rm

        one("br-net", "warm-b")
        one("mv-net", "warm-m")
        runs: dict[str, list[float]] = {"br-net": [], "mv-net": []}
        rms: dict[str, list[float]] = {"br-net": [], "mv-net": []}
        for i in range(n):
            for net in ("br-net", "mv-net") if i % 2 == 0 else ("mv-net", "br-net"):
                run, rm = one(net, f"d{i}-{net}")
                runs[net].append(run)
                rms[net].append(rm)
        load["after macvlan vs bridge"] = loadavg()
        results["run_ms"] = {
            "run -d (bridge)": stats(runs["br-net"]),
            "run -d (macvlan)": stats(runs["mv-net"]),
            "rm -f (bridge)": stats(rms["br-net"]),
            "rm -f (macvlan)": stats(rms["mv-net"]),
        }

        with open(os.path.join(h.root, "tetherd.lock")) as f:
            daemon_pid = int(f.read().split()[0])
        rss_before = rss_kib(daemon_pid)
        skip = len(start_times(h.log()))
        lat: list[float] = []
        fresh_lat: list[float] = []
        for i in range(scale):
            argv = [*cli, "run", "-d", "--name", f"s{i}", "--network", "br-net"]
            argv += ["busybox", "sleep", "36000"]
            if i < scale - 50:
                lat.append(timed(lambda argv=argv: run_quiet(argv)))
                continue
            if fresh is None:
                # The last 50 starts alternate with the first 50 of a fresh daemon, so that
                # the two are compared under the same load from other work on the machine.
                fresh = host()
                fresh.import_busybox()
                fresh.ok("network", "create", "--subnet", "10.214.0.0/16", "br-net")
            fargv = [tether, "-H", f"unix://{fresh.socket}", "run", "-d", "--name", f"f{i}"]
            fargv += ["--network", "br-net", "busybox", "sleep", "36000"]
            pair = [(argv, lat), (fargv, fresh_lat)]
            for cmd, xs in pair if i % 2 == 0 else pair[::-1]:
                xs.append(timed(lambda cmd=cmd: run_quiet(cmd)))
        assert fresh is not None, "SCALE must be at least 50"
        rss_after = rss_kib(daemon_pid)
        load["after the scale run"] = loadavg()
        first50, last50 = statistics.median(lat[:50]), statistics.median(lat[-50:])
        first10, last10 = statistics.median(lat[:10]), statistics.median(lat[-10:])
        deciles = [
            round(statistics.median(lat[k : k + scale // 10]), 2)
            for k in range(0, scale, scale // 10)
        ]
        # The daemon's own time for each start (its debug log): without the CLI's process
        # start, which other work on the machine moves the most.
        starts = start_times(h.log())[skip:]
        daemon_deciles = [
            round(statistics.median(starts[k : k + scale // 10]), 2)
            for k in range(0, len(starts), scale // 10)
        ]
        results["scale"] = {
            "containers": scale,
            "run latency first 50 (median ms)": round(first50, 2),
            "run latency last 50 (median ms)": round(last50, 2),
            "run latency first 10 (median ms)": round(first10, 2),
            "run latency last 10 (median ms)": round(last10, 2),
            "run latency median per tenth (ms)": deciles,
            "daemon's start request, median per tenth (ms)": daemon_deciles,
            "daemon's start request, last 50 / first 50": round(
                statistics.median(starts[-50:]) / statistics.median(starts[:50]), 3
            ),
            "fresh daemon's first 50, interleaved with the last 50 (median ms)": round(
                statistics.median(fresh_lat), 2
            ),
            "fresh daemon's start request, first 50 (median ms)": round(
                statistics.median(start_times(fresh.log())), 2
            ),
            "tetherd RSS before (MiB)": round(rss_before / 1024, 1),
            "tetherd RSS with containers (MiB)": round(rss_after / 1024, 1),
            "tetherd RSS per container (KiB)": round((rss_after - rss_before) / scale, 1),
            "run latency, every start in order (ms)": [round(x, 1) for x in lat],
        }
        for i in range(scale):
            run_quiet([*cli, "rm", "-f", f"s{i}"])
        results["ratios"] = {
            "run -d macvlan / bridge": round(
                statistics.median(runs["mv-net"]) / statistics.median(runs["br-net"]), 3
            ),
            "run latency last 50 / first 50": round(last50 / first50, 3),
            "run latency last 10 / first 10": round(last10 / first10, 3),
            "run latency last 50 / a fresh daemon's first 50, interleaved": round(
                last50 / statistics.median(fresh_lat), 3
            ),
            "daemon's start request, last 50 / a fresh daemon's first 50": round(
                statistics.median(starts[-50:]) / statistics.median(start_times(fresh.log())), 3
            ),
        }
    finally:
        keep = os.environ.get("TETHER_BENCH_KEEP_LOG")
        if keep:  # the daemon's debug log (per-request timings) for a look afterwards
            with open(keep, "w") as f:
                f.write(h.log())
        if fresh is not None:
            fresh.cleanup()
        h.cleanup()
    print(save("drivers", results))
    import json

    print(json.dumps(results["ratios"], indent=2))


if __name__ == "__main__":
    main()
