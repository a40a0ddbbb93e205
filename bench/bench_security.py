"""What Docker's default confinement costs a container start: `run -d` confined vs --privileged.

    .venv/bin/python bench/bench_security.py [N]      (default: 50 rounds)

A default container gets the capability set, the seccomp filter (compiled once by libseccomp,
then read from ROOT/seccomp), the masked and read-only /proc and /sys paths and the mknod'ed
/dev; a --privileged one gets none of the first three (its caps stay, no filter, no masks).
Both are started in the same run, interleaved round by round (which goes first alternates),
through the CLI (`run -d`, as a user types it) and through the API (create + start, without
the CLI's interpreter start-up).  Target (issue 9): confined / privileged <= 1.05.  Also: the
one-off compilation of Docker's profile, a cached lookup, and the host image's view.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from common import host, launcher, run_quiet, save, stats, timed


def one_offs() -> dict[str, float]:
    """In-process costs of the daemon's side, in ms."""
    from tether.runtime import confine, images

    root = tempfile.mkdtemp(prefix="tether-bench-sec-")
    try:
        t = time.perf_counter()
        c = confine.Confiner(root)
        fields = c.check({})
        first = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        for _ in range(1000):
            c.shim_security(fields)
        lookup = (time.perf_counter() - t) * 1000 / 1000
        again = confine.Confiner(root)  # a restarted tetherd: the BPF file is there already
        t = time.perf_counter()
        again.shim_security(again.check({}))
        restart = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        for _ in range(20):
            images.host_view("/nonexistent", [root])
        view = (time.perf_counter() - t) * 1000 / 20
        return {
            "first check + compile of Docker's profile (ms)": round(first, 2),
            "settings -> shim arguments, remembered (ms)": round(lookup, 4),
            "after a restart, BPF read from the cache (ms)": round(restart, 2),
            "host image view (walk of /etc) (ms)": round(view, 2),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def shim_only(n: int) -> dict[str, object]:
    """tether-shim alone, spawn to "ok" (the command executing), no daemon and no network:
    a busybox overlay root, confined as by default vs --privileged vs no confinement at all."""
    import asyncio
    import signal
    import subprocess

    from tether.runtime import busybox, cgroups, confine, shim

    d = tempfile.mkdtemp(prefix="tether-bench-shim-")
    try:
        tar = os.path.join(d, "busybox.tar")
        busybox.build(tar)
        image = os.path.join(d, "image")
        os.makedirs(image)
        subprocess.run(["tar", "-xf", tar, "-C", image], check=True)
        path = shim.ensure_built()
        conf = confine.Confiner(d)
        files = []
        for name in ("hosts", "resolv.conf", "hostname"):
            files.append(os.path.join(d, name))
            with open(files[-1], "w") as f:
                f.write("x\n")
        kinds = {
            "default (confined)": conf.shim_security(conf.check({})),
            "--privileged": conf.shim_security(conf.check({"Privileged": True})),
            "no confinement at all": shim.Security(all_devices=True),
        }

        async def start(i: int, sec: shim.Security) -> float:
            c = os.path.join(d, f"c{i}")
            for sub in ("upper", "work", "rootfs"):
                os.makedirs(os.path.join(c, sub))
            spec = shim.RunSpec(
                log=os.path.join(c, "log"),
                exit_file=os.path.join(c, "exit"),
                netns=None,
                hostname="bench",
                rootfs=os.path.join(c, "rootfs"),
                overlay=(image, os.path.join(c, "upper"), os.path.join(c, "work")),
                binds=[(f, "/etc/" + os.path.basename(f)) for f in files],
                cwd="/",
                env=["PATH=/bin"],
                argv=["sleep", "100"],
                security=sec,
                cgroup=cgroups.path_for(f"bench-{os.getpid()}-{i}"),
            )
            t = time.perf_counter()
            shim_pid, pid = await shim.start(path, spec)
            ms = (time.perf_counter() - t) * 1000
            os.kill(pid, signal.SIGKILL)
            os.waitpid(shim_pid, 0)
            return ms

        async def rounds() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {k: [] for k in kinds}
            i = 0
            for _ in range(n):
                for k, sec in kinds.items():
                    i += 1
                    out[k].append(await start(i, sec))
            return out

        got = asyncio.run(rounds())
        med = {k: statistics.median(v) for k, v in got.items()}
        return {
            "ms": {k: stats(v) for k, v in got.items()},
            "confined - privileged, median (ms)": round(
                med["default (confined)"] - med["--privileged"], 2
            ),
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    tether = launcher()
    results: dict[str, object] = {"rounds": n}
    h = host()
    try:
        h.import_busybox()
        cli = [tether, "-H", f"unix://{h.socket}"]
        modes: dict[str, list[str]] = {"default (confined)": [], "--privileged": ["--privileged"]}
        # Warm up: the shim build, the profile's compilation, the page cache.
        for args in modes.values():
            run_quiet([*cli, "run", "-d", "--name", "warm", *args, "busybox", "sleep", "3600"])
            run_quiet([*cli, "rm", "-f", "warm"])
        cli_ms: dict[str, list[float]] = {k: [] for k in modes}
        api_ms: dict[str, list[float]] = {k: [] for k in modes}
        names = list(modes)
        for i in range(n):
            order = names if i % 2 == 0 else names[::-1]
            for mode in order:
                name = f"sec{i}{'p' if mode == '--privileged' else 'd'}"
                argv = [*cli, "run", "-d", "--name", name, *modes[mode], "busybox", "sleep", "3600"]
                cli_ms[mode].append(timed(lambda argv=argv: run_quiet(argv)))
                run_quiet([*cli, "rm", "-f", name])
            for mode in order:
                body = {
                    "Image": "busybox",
                    "Cmd": ["sleep", "3600"],
                    "HostConfig": {"Privileged": mode == "--privileged"},
                }

                created: list[str] = []

                def create_start(body: dict[str, object] = body, out: list[str] = created) -> None:
                    cid = h.api.post("/containers/create", body)["Id"]
                    h.api.post(f"/containers/{cid}/start")
                    out.append(cid)

                api_ms[mode].append(timed(create_start))
                h.api.delete(f"/containers/{created[0]}", {"force": 1})
        results["cli run -d (ms)"] = {k: stats(v) for k, v in cli_ms.items()}
        results["api create+start (ms)"] = {k: stats(v) for k, v in api_ms.items()}
        med = {k: statistics.median(v) for k, v in cli_ms.items()}
        api_med = {k: statistics.median(v) for k, v in api_ms.items()}
        results["ratios"] = {
            "cli run -d, confined / privileged": round(
                med["default (confined)"] / med["--privileged"], 3
            ),
            "api create+start, confined / privileged": round(
                api_med["default (confined)"] / api_med["--privileged"], 3
            ),
        }
        results["one-off costs"] = one_offs()
        results["tether-shim alone, spawn to exec"] = shim_only(2 * n)
    finally:
        h.cleanup()
    print(save("security", results))
    print(json.dumps(results, indent=2))
    os.remove(tether)


if __name__ == "__main__":
    main()
