"""tether doctor on a host with many containers (issue 15: within 5 s with 500), and explain.

    .venv/bin/python bench/bench_doctor.py [CONTAINERS] [ROUNDS]    (defaults: 500, 5)

One namespace-host, CONTAINERS busybox containers spread over 4 user networks (every 10th
with a published port, every 7th on a second network), then ROUNDS full `tether doctor`
runs through the CLI (wall time, and the daemon's own figure), the same with five kinds of
drift injected and `--repair`, and `tether explain` between two of the containers.  The floor
it is compared with: reading every sandbox's links, addresses and routes and nothing else,
in one process (what no check of the sandboxes can do without).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from common import host, launcher, save, stats, timed


def kernel_floor(paths: list[str]) -> float:
    """Seconds to open every sandbox and dump its links, addresses and routes."""
    from tether.kernel.observe import View

    t = time.perf_counter()
    for p in paths:
        with View(p) as v:
            v.links()
            v.addresses()
            v.routes()
    return time.perf_counter() - t


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    h = host()
    try:
        h.import_busybox()
        cli = [launcher(), "-H", f"unix://{h.socket}"]
        nets = [f"bd{i}" for i in range(4)]
        for i, name in enumerate(nets):
            h.api.post(
                "/networks/create",
                {"Name": name, "IPAM": {"Config": [{"Subnet": f"10.{100 + i}.0.0/20"}]}},
            )
        started = time.perf_counter()
        for i in range(n):
            body: dict[str, object] = {
                "Image": "busybox",
                "Cmd": ["sleep", "36000"],
                "HostConfig": {"NetworkMode": nets[i % 4]},
            }
            if i % 10 == 0:
                body["ExposedPorts"] = {"80/tcp": {}}
                body["HostConfig"] = {
                    "NetworkMode": nets[i % 4],
                    "PortBindings": {"80/tcp": [{"HostPort": str(20000 + i)}]},
                }
            cid = h.api.post("/containers/create", body, {"name": f"bd-{i}"})["Id"]
            h.api.post(f"/containers/{cid}/start")
            if i % 7 == 0:
                h.api.post(f"/networks/{nets[(i + 1) % 4]}/connect", {"Container": cid})
        setup_s = time.perf_counter() - started
        keys = [
            h.api.get(f"/containers/bd-{i}/json")["NetworkSettings"]["SandboxKey"] for i in range(n)
        ]
        floor = [kernel_floor(keys) for _ in range(3)]

        def doctor(*flags: str) -> tuple[float, dict[str, object]]:
            """`tether doctor` (exit 1 means it found problems, not that it failed)."""
            t = time.perf_counter()
            r = subprocess.run([*cli, "doctor", "--format", "json", *flags], capture_output=True)
            took = time.perf_counter() - t
            if r.returncode not in (0, 1):
                raise RuntimeError(f"tether doctor failed: {r.stderr.decode()}")
            return took, json.loads(r.stdout)

        wall, daemon_s, problems = [], [], []
        for _ in range(rounds):
            w, rep = doctor()
            wall.append(w)
            daemon_s.append(float(rep["Seconds"]))  # type: ignore[arg-type]
            problems.append(len(rep["Problems"]))  # type: ignore[arg-type]
        # Drift: a veth, a DNAT element, a default route, a DNS redirect, a rule of tether's.
        ep = h.api.get("/containers/bd-3/json")["NetworkSettings"]["Networks"]["bd3"]["EndpointID"]
        h.sh(f"ip link del tv{ep[:12]}")
        h.sh("nft delete element inet tether pub4 '{ tcp . 20010 }'")
        os.system(f"nsenter --net={keys[5]} ip route del default")
        os.system(f"nsenter --net={keys[6]} nft delete table ip tether_dns")
        net_id = h.api.get("/networks/bd2")["Id"][:12]
        h.sh(f"nft add rule inet tether net_{net_id}_out tcp dport 22 drop")
        w, rep = doctor()
        found = len(rep["Problems"])  # type: ignore[arg-type]
        repair_s, after = doctor("--repair")
        explain = [
            timed(
                lambda: h.api.post("/tether/explain", {"From": "bd-1", "To": "bd-5", "Port": "80"})
            )
            for _ in range(20)
        ]
        results = {
            "containers": n,
            "networks": len(nets),
            "published ports": len(range(0, n, 10)),
            "setup seconds (API create+start)": round(setup_s, 1),
            "doctor, CLI wall seconds": stats(wall),
            "doctor, daemon seconds": stats(daemon_s),
            "problems on a clean host": sorted(set(problems)),
            "kernel floor seconds (links, addresses, routes of every sandbox)": stats(floor),
            "doctor / floor (medians)": round(
                statistics.median(wall) / statistics.median(floor), 1
            ),
            "with drift: problems found": found,
            "with drift: doctor seconds": round(w, 2),
            "doctor --repair seconds (check, repair, check)": round(repair_s, 2),
            "after --repair: problems": len(after["Problems"]),  # type: ignore[arg-type]
            "explain over the API at this scale, ms": stats(explain),
        }
        print(json.dumps(results, indent=2))
        print("saved", save("doctor", results))
    finally:
        h.cleanup()


if __name__ == "__main__":
    main()
