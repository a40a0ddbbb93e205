"""tether compose: the three-tier example's up, no-op up, down, and the cost of compose itself.

    .venv/bin/python bench/bench_compose.py [N]   (default: 10 rounds)

Baseline, same run: the same application made with plain CLI calls, one per step (2 network
creates, 3 runs, 1 connect; then rm -f and network rm), which is what compose saves a user
from typing.  compose's overhead is the ratio of the two.  docker compose is not on CI
machines; ../shared/reference has no compose figure, so there is no Docker ratio here.
"""

from __future__ import annotations

import os
import subprocess
import sys

from common import REPO, host, launcher, run_quiet, save, stats, timed

FILE = os.path.join(REPO, "examples", "three-tier", "compose.yaml")
HTTPD = "mkdir -p /www && echo {0} > /www/index.html && exec httpd -f -p 80 -h /www"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    tether = launcher()
    h = host()
    try:
        h.import_busybox()
        env = {**os.environ, "TETHER_HOST": f"unix://{h.socket}"}
        compose = [tether, "compose", "-f", FILE]

        def cli(*args: str) -> None:
            run_quiet([tether, "-H", f"unix://{h.socket}", *args])

        def up() -> None:
            subprocess.run([*compose, "up", "-d"], env=env, capture_output=True, check=True)

        def down() -> None:
            subprocess.run([*compose, "down"], env=env, capture_output=True, check=True)

        def plain_up() -> None:
            cli("network", "create", "p_front")
            cli("network", "create", "--internal", "p_back")
            kill = ["--stop-signal", "SIGKILL"]
            cli(
                "run",
                "-d",
                "--name",
                "p-db",
                "--network",
                "p_back",
                *kill,
                "busybox",
                "nc",
                "-ll",
                "-p",
                "5432",
                "-e",
                "echo",
                "db",
            )
            cli(
                "create",
                "--name",
                "p-api",
                "--network",
                "p_back",
                *kill,
                "busybox",
                "sh",
                "-c",
                HTTPD.format("api"),
            )
            cli("network", "connect", "p_front", "p-api")
            cli("start", "p-api")
            cli(
                "run",
                "-d",
                "--name",
                "p-web",
                "--network",
                "p_front",
                "-p",
                "8080:80",
                *kill,
                "busybox",
                "sh",
                "-c",
                HTTPD.format("web"),
            )

        def plain_down() -> None:
            cli("rm", "-f", "p-web", "p-api", "p-db")
            cli("network", "rm", "p_front", "p_back")

        # The first validation of the file is cached (see compose/schema.py); warm it.
        up()
        down()
        times: dict[str, list[float]] = {
            k: [] for k in ("up", "up again", "down", "plain up", "plain down", "config")
        }
        for _ in range(n):
            times["up"].append(timed(up))
            times["up again"].append(timed(up))
            times["down"].append(timed(down))
            times["plain up"].append(timed(plain_up))
            times["plain down"].append(timed(plain_down))
            times["config"].append(
                timed(lambda: subprocess.run([*compose, "config", "-q"], env=env, check=True))
            )
        s = {k: stats(v) for k, v in times.items()}
        results = {
            "rounds": n,
            "ms": s,
            "ratios": {
                "compose up / plain CLI up": round(s["up"]["median"] / s["plain up"]["median"], 3),
                "compose down / plain CLI down": round(
                    s["down"]["median"] / s["plain down"]["median"], 3
                ),
            },
        }
        print(save("compose", results))
        for k, v in s.items():
            print(f"  {k:<12} median {v['median']:8.1f} ms  (min {v['min']}, max {v['max']})")
        print(results["ratios"])
    finally:
        h.cleanup()


if __name__ == "__main__":
    main()
