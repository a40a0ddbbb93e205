"""Containers: connect/disconnect vs the kernel floor, run -d / rm -f, 500 containers.

    .venv/bin/python bench/bench_containers.py [N] [SCALE]    (defaults: 50 iterations, 500 containers)

Docker 20.10 here (../shared/reference/perf-anchors.md): connect + disconnect 89.4 ms through
the CLI; run -d 272.3 ms; rm -f 104.8 ms; last-10/first-10 run latency at 200 containers 1.11;
a containerd-shim of ~13 MB per container.  Targets: API connect + disconnect within 1.5x of
the kernel floor, CLI below 89 ms; run -d <= 91 ms; last/first <= 1.1; tetherd < 150 MB with
500 containers; < 2 MB per container outside its workload.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time

from common import host, launcher, pss_kib, rss_kib, run_quiet, save, stats, timed


def kernel_floor(n: int) -> dict[str, object]:
    """One process, no helpers: netns + veth born in it on a bridge + address + up + route, then
    teardown; the same steps as ../shared/reference/scripts/kernel_floor_setns.py, measured in
    this run with tether's own netns and rtnetlink code paths."""
    from tether.kernel import netns
    from tether.kernel.rtnl import Rtnl

    async def go() -> dict[str, object]:
        ipr = Rtnl.open()
        br = await ipr.add_bridge("bfloor0")
        await ipr.add_address(br, "10.94.0.1/24")
        await ipr.up(br)
        os.makedirs("/run/tether-bench", exist_ok=True)
        path = "/run/tether-bench/floor"
        setup, teardown = [], []
        for _ in range(n):
            t = time.perf_counter()
            netns.create(path)
            fd = os.open(path, os.O_RDONLY)
            host_idx = await ipr.add_veth("vfloor0", "eth0", peer_netns_fd=fd, master=br)
            os.close(fd)
            await ipr.up(host_idx)
            inner = Rtnl.open(path)
            idx = await inner.index("eth0")
            assert idx is not None
            await inner.add_address(idx, "10.94.0.2/24")
            await inner.up(idx)
            await inner.up(1)
            await inner.add_default_route("10.94.0.1")
            t1 = time.perf_counter()
            inner.close()
            await ipr.delete(host_idx)
            netns.delete(path)
            t2 = time.perf_counter()
            setup.append((t1 - t) * 1000)
            teardown.append((t2 - t1) * 1000)
        await ipr.delete(br)
        ipr.close()
        return {
            "setup": stats(setup),
            "teardown": stats(teardown),
            "setup+teardown": stats([a + b for a, b in zip(setup, teardown, strict=True)]),
        }

    return asyncio.run(go())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    tether = launcher()
    results: dict[str, object] = {"iterations": n, "scale": scale}
    h = host()
    try:
        h.import_busybox()
        cli = [tether, "-H", f"unix://{h.socket}"]
        h.ok("network", "create", "--subnet", "10.210.0.0/16", "pf-x")
        h.ok("network", "create", "--subnet", "10.211.0.0/16", "pf-b")
        h.ok("run", "-d", "--name", "pf-c", "--network", "pf-x", "busybox", "sleep", "36000")

        # connect + disconnect of a running container, API and CLI, and the kernel floor.
        api_c, api_d = [], []
        for _ in range(n):
            api_c.append(timed(lambda: h.api.post("/networks/pf-b/connect", {"Container": "pf-c"})))
            api_d.append(
                timed(lambda: h.api.post("/networks/pf-b/disconnect", {"Container": "pf-c"}))
            )
        cli_c, cli_d = [], []
        for _ in range(n):
            cli_c.append(timed(lambda: run_quiet([*cli, "network", "connect", "pf-b", "pf-c"])))
            cli_d.append(timed(lambda: run_quiet([*cli, "network", "disconnect", "pf-b", "pf-c"])))
        floor = h_floor = kernel_floor(n)
        api_both = [a + b for a, b in zip(api_c, api_d, strict=True)]
        cli_both = [a + b for a, b in zip(cli_c, cli_d, strict=True)]
        results["connect_ms"] = {
            "api connect": stats(api_c),
            "api disconnect": stats(api_d),
            "api connect+disconnect": stats(api_both),
            "cli connect": stats(cli_c),
            "cli disconnect": stats(cli_d),
            "cli connect+disconnect": stats(cli_both),
            "kernel floor": floor,
        }

        # run -d to running, rm -f.
        def run_rm(prefix: str, network: str) -> tuple[list[float], list[float]]:
            runs, rms = [], []
            for i in range(n):
                name = f"{prefix}{i}"
                argv = [*cli, "run", "-d", "--name", name, "--network", network, "busybox"]
                runs.append(timed(lambda argv=argv: run_quiet([*argv, "sleep", "3600"])))
                rms.append(timed(lambda name=name: run_quiet([*cli, "rm", "-f", name])))
            return runs, rms

        runs, rms = run_rm("pf-r", "pf-x")
        none_runs, none_rms = run_rm("pf-n", "none")
        results["run_ms"] = {
            "run -d (user network)": stats(runs),
            "rm -f (user network)": stats(rms),
            "run -d (--network none)": stats(none_runs),
            "rm -f (--network none)": stats(none_rms),
        }

        # Scale: `scale` containers on one network.
        with open(os.path.join(h.root, "tetherd.lock")) as f:
            daemon_pid = int(f.read().split()[0])
        rss_before = rss_kib(daemon_pid)
        mem_before = _mem_available_kib()
        lat = []
        for i in range(scale):
            lat.append(
                timed(
                    lambda i=i: run_quiet(
                        [
                            *cli,
                            "run",
                            "-d",
                            "--name",
                            f"pf-s{i}",
                            "--network",
                            "pf-x",
                            "busybox",
                            "sleep",
                            "36000",
                        ]
                    )
                )
            )
        rss_after = rss_kib(daemon_pid)
        mem_after = _mem_available_kib()
        infos = h.api.get("/containers/json")
        shim_rss, shim_pss, work_rss = [], [], []
        for c in infos:
            if not c["Names"][0].startswith("/pf-s"):
                continue
            st = h.api.get(f"/containers/{c['Id']}/json")["State"]
            pid = st["Pid"]
            shim = _parent(pid)
            shim_rss.append(rss_kib(shim))
            shim_pss.append(pss_kib(shim))
            work_rss.append(rss_kib(pid))
        first10, last10 = statistics.median(lat[:10]), statistics.median(lat[-10:])
        first50, last50 = statistics.median(lat[:50]), statistics.median(lat[-50:])
        conn_at_scale = [
            timed(lambda: h.api.post("/networks/pf-b/connect", {"Container": "pf-s0"}))
            + timed(lambda: h.api.post("/networks/pf-b/disconnect", {"Container": "pf-s0"}))
            for _ in range(20)
        ]
        rm_lat = [
            timed(lambda i=i: run_quiet([*cli, "rm", "-f", f"pf-s{i}"])) for i in range(scale)
        ]
        results["scale"] = {
            "containers": scale,
            "run latency first 10 (median ms)": round(first10, 2),
            "run latency last 10 (median ms)": round(last10, 2),
            "run latency first 50 (median ms)": round(first50, 2),
            "run latency last 50 (median ms)": round(last50, 2),
            "run latency all": stats(lat),
            "api connect+disconnect at scale": stats(conn_at_scale),
            "rm -f latency all": stats(rm_lat),
            "tetherd RSS before (MiB)": round(rss_before / 1024, 1),
            "tetherd RSS with containers (MiB)": round(rss_after / 1024, 1),
            "tetherd RSS per container (KiB)": round((rss_after - rss_before) / scale, 1),
            "shim RSS per container (KiB, median)": statistics.median(shim_rss),
            "shim PSS per container (KiB, median)": statistics.median(shim_pss),
            "workload RSS per container (KiB, median, busybox sleep)": statistics.median(work_rss),
            "host MemAvailable drop per container (KiB)": round(
                (mem_before - mem_after) / scale, 1
            ),
        }
        floor_both = h_floor["setup+teardown"]["median"]  # type: ignore[index]
        results["ratios"] = {
            "api connect+disconnect / kernel floor": round(
                stats(api_both)["median"] / floor_both, 3
            ),
            "cli connect+disconnect / Docker 89.4 ms": round(stats(cli_both)["median"] / 89.4, 3),
            "run -d / Docker 272.3 ms": round(stats(runs)["median"] / 272.3, 3),
            "rm -f / Docker 104.8 ms": round(stats(rms)["median"] / 104.8, 3),
            "run latency last 10 / first 10": round(last10 / first10, 3),
            "run latency last 50 / first 50": round(last50 / first50, 3),
        }
    finally:
        h.cleanup()
    print(save("containers", results))
    print(json.dumps(results, indent=2))


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2 :].split()[1])


def _mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
