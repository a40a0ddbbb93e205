"""Network create + rm through the CLI, per-create cost at 1 vs 200 networks, CLI start-up.

    .venv/bin/python bench/bench_networks.py [N]      (N = iterations, default 50)

Docker 20.10 on this kind of machine (../shared/reference/perf-anchors.md): create + rm
median 255.9 ms; `docker network ls` 14 ms.  Targets: create + rm <= 85 ms (a third of
Docker's), flat from 1 to 200 networks, CLI start-up under 40 ms.
"""

from __future__ import annotations

import sys

from common import PY, host, launcher, run_quiet, save, stats, timed

DOCKER_CREATE_RM_MS = 255.9


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    tether = launcher()
    results: dict[str, object] = {"iterations": n}

    # CLI start-up, no daemon call, against bare interpreter starts in the same run.
    startup = {
        "python -S -c pass": stats(
            [timed(lambda: run_quiet([PY, "-S", "-c", "pass"])) for _ in range(n)]
        ),
        "python -c pass": stats([timed(lambda: run_quiet([PY, "-c", "pass"])) for _ in range(n)]),
        "tether --version (launcher)": stats(
            [timed(lambda: run_quiet([tether, "--version"])) for _ in range(n)]
        ),
        "tether --version (pip console script)": stats(
            [timed(lambda: run_quiet([sys.prefix + "/bin/tether", "--version"])) for _ in range(n)]
        ),
    }
    results["startup_ms"] = startup

    h = host()
    try:
        cli = [tether, "-H", f"unix://{h.socket}"]
        startup["tether network ls (launcher, daemon call)"] = stats(
            [timed(lambda: run_quiet([*cli, "network", "ls"])) for _ in range(n)]
        )
        create, rm, both = [], [], []
        for i in range(n):
            c = timed(
                lambda i=i: run_quiet(
                    [*cli, "network", "create", "--subnet", f"10.200.{i}.0/24", f"pf-net{i}"]
                )
            )
            r = timed(lambda i=i: run_quiet([*cli, "network", "rm", f"pf-net{i}"]))
            create.append(c)
            rm.append(r)
            both.append(c + r)
        results["cli_ms"] = {"create": stats(create), "rm": stats(rm), "create+rm": stats(both)}

        # Per-create cost with few and with many networks (through the API: the daemon's part).
        def per_create(prefix: str, count: int) -> list[float]:
            xs = []
            for i in range(count):
                xs.append(
                    timed(lambda i=i: h.api.post("/networks/create", {"Name": f"{prefix}{i}"}))
                )
            for i in range(count):
                h.api.delete(f"/networks/{prefix}{i}")
            return xs

        at_1 = per_create("few", 20)
        for i in range(200):
            h.api.post(
                "/networks/create",
                {
                    "Name": f"bulk{i}",
                    "IPAM": {"Config": [{"Subnet": f"10.{100 + i // 250}.{i % 250}.0/24"}]},
                },
            )
        at_200 = per_create("many", 20)
        cli_at_200 = []
        for i in range(n):
            c = timed(
                lambda i=i: run_quiet(
                    [*cli, "network", "create", "--subnet", f"10.210.{i}.0/24", f"pf200-{i}"]
                )
            )
            r = timed(lambda i=i: run_quiet([*cli, "network", "rm", f"pf200-{i}"]))
            cli_at_200.append(c + r)
        results["scaling_ms"] = {
            "api create, 1 user network": stats(at_1),
            "api create, 200 user networks": stats(at_200),
            "cli create+rm, 200 user networks": stats(cli_at_200),
        }
        ratio_scale = stats(at_200)["median"] / stats(at_1)["median"]
        results["ratios"] = {
            "create+rm vs Docker 255.9 ms": round(stats(both)["median"] / DOCKER_CREATE_RM_MS, 3),
            "create at 200 / create at 1": round(ratio_scale, 3),
            "cli startup / python -c pass": round(
                startup["tether --version (launcher)"]["median"]
                / startup["python -c pass"]["median"],
                3,
            ),
        }
    finally:
        h.cleanup()
    print(save("networks", results))
    import json

    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
