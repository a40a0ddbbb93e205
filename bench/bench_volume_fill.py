"""A new volume filled from the image at create (issue 14, item 4): tetherd against dockerd
20.10, same run, the docker CLI for both.

Each round, per daemon: `docker create -v NEW:/etc busybox` (the image's /etc copied into the
new volume), the same with `:nocopy` (nothing copied), and `-v NEW:/data` (the image has no
/data: nothing to copy); then `docker rm -v` of the container and the volume (not timed).
Wall-clock ms of the client process; medians; the order of the daemons turns each round.
Then tetherd's share alone: 30 POST /containers/create of each kind on one client.

    .venv/bin/python bench/bench_volume_fill.py 15
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench_clients import DOCKER, Dockerd, run_timed
from common import host, save, stats

from nshost import busybox_tar


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    h = host()
    d = Dockerd()
    cleanup: dict[str, object] = {}
    try:
        h.import_busybox()
        d.start()
        d.docker("import", "--change", 'CMD ["sh"]', busybox_tar(), "busybox")
        envs = {
            "tetherd": {
                **os.environ,
                "DOCKER_HOST": f"unix://{h.socket}",
                "DOCKER_CONFIG": os.path.join(h.dir, "cli"),
            },
            "dockerd": d.env(),
        }
        cases = {
            "create -v new:/etc (filled)": "/etc",
            "create -v new:/etc:nocopy": "/etc:nocopy",
            "create -v new:/data (nothing to copy)": "/data",
        }
        times: dict[str, dict[str, list[float]]] = {c: {n: [] for n in envs} for c in cases}
        serial = 0
        for case, dst in cases.items():
            for i in range(-1, rounds):  # round -1: warm-up, not counted
                names = list(envs)
                for name in names[i % 2 :] + names[: i % 2]:
                    env = envs[name]
                    serial += 1
                    vol = f"bv{serial}"
                    ms = run_timed(
                        [DOCKER, "create", "--name", vol, "-v", f"{vol}:{dst}", "busybox"], env
                    )
                    if name == "tetherd" and dst == "/etc":
                        have = set(os.listdir(h.api.get(f"/volumes/{vol}")["Mountpoint"]))
                        assert {"group", "passwd"} <= have, have  # really filled
                    run_timed([DOCKER, "rm", "-v", vol], env)
                    run_timed([DOCKER, "volume", "rm", vol], env)
                    if i >= 0:
                        times[case][name].append(ms)
            print(case, {n: stats(times[case][n])["median"] for n in envs}, flush=True)
        # The daemon's share: POST /containers/create alone (tether's client, one socket),
        # where the copy is not lost among the CLI's start-up and dockerd's noise.
        api: dict[str, list[float]] = {"fill /etc": [], "nocopy /etc": [], "/data": []}
        binds = {"fill /etc": "/etc", "nocopy /etc": "/etc:nocopy", "/data": "/data"}
        for i in range(-1, 30):
            for label, dst in binds.items():
                serial += 1
                body = {"Image": "busybox", "HostConfig": {"Binds": [f"bv{serial}:{dst}"]}}
                t = time.perf_counter()
                cid = h.api.post("/containers/create", body)["Id"]
                ms = (time.perf_counter() - t) * 1000
                h.api.delete(f"/containers/{cid}")
                h.api.delete(f"/volumes/bv{serial}")
                if i >= 0:
                    api[label].append(ms)
        api_med = {label: stats(v) for label, v in api.items()}
        print("tetherd API create", {k: v["median"] for k, v in api_med.items()}, flush=True)
        med = {c: {n: stats(v) for n, v in per.items()} for c, per in times.items()}
        ratios = {
            c: round(m["tetherd"]["median"] / m["dockerd"]["median"], 3) for c, m in med.items()
        }
        version = subprocess.run(["dockerd", "--version"], capture_output=True, text=True)
        for c, r in ratios.items():
            print(f"{c}: tetherd / dockerd = {r}")
        cleanup = d.stop()
        path = save(
            "volume_fill",
            {
                "rounds": rounds,
                "dockerd": version.stdout.strip(),
                "ms (docker CLI wall clock)": med,
                "tetherd / dockerd (median)": ratios,
                "tetherd POST /containers/create alone, ms": api_med,
                "dockerd cleanup": cleanup,
            },
        )
        print(path)
    finally:
        if not cleanup:
            d.stop()
        h.cleanup()


if __name__ == "__main__":
    main()
