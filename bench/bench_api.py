"""The API edge's cost: `run -d` before and after typed, validated requests, in the same run.

    .venv/bin/python bench/bench_api.py [N] [BEFORE] [AFTER]
        (defaults: 40 rounds; BEFORE 1fec903, the commit before the API edge; AFTER 901bc51,
        the API edge: the same code otherwise)

Both commits are checked out (git archive) into temporary trees; each gets a namespace-host
with a tetherd of its own and the fast CLI launcher, and the rounds alternate between the two
(the order flips every round) so that the machine's drift hits both alike.  Measured:
`tether run -d` on a user network (the whole CLI call, as bench_containers.py does), the
`POST /containers/create` request alone, and in-process the body's decoding (json.loads of
the dict the old handlers read, against the typed decode with its checks).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from common import Tree, save, stats, timed

# What `tether run -d --name X --network pf busybox sleep 3600` sends (cli/container.py).
BODY = {
    "Hostname": "",
    "Domainname": "",
    "Image": "busybox",
    "Env": [],
    "Labels": {},
    "ExposedPorts": {},
    "WorkingDir": "",
    "AttachStdout": False,
    "AttachStderr": False,
    "HostConfig": {
        "NetworkMode": "pf",
        "PortBindings": {},
        "PublishAllPorts": False,
        "Dns": [],
        "DnsSearch": [],
        "DnsOptions": [],
        "ExtraHosts": None,
        "AutoRemove": False,
    },
    "NetworkingConfig": {"EndpointsConfig": {"pf": {}}},
    "Cmd": ["sleep", "3600"],
}


def decode_cost(tree: Tree, n: int = 20000) -> dict[str, float]:
    """Microseconds per request: the old handlers' json.loads vs the typed decode."""
    code = f"""
import json, sys, time
sys.path.insert(0, {tree.src!r})
from tether.api.containers import ContainerCreate
from tether.api.decode import decode
body = json.dumps({BODY!r}).encode()
for fn, name in ((lambda: json.loads(body), "json.loads"), (lambda: decode(body, ContainerCreate), "typed")):
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range({n}):
            fn()
        best.append((time.perf_counter() - t) / {n} * 1e6)
    print(name, min(best))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {line.split()[0]: round(float(line.split()[1]), 2) for line in out.stdout.splitlines()}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    before_commit = sys.argv[2] if len(sys.argv) > 2 else "1fec903"
    after_commit = sys.argv[3] if len(sys.argv) > 3 else "901bc51"
    trees = {"before": Tree(before_commit), "after": Tree(after_commit)}
    runs: dict[str, list[float]] = {"before": [], "after": []}
    creates: dict[str, list[float]] = {"before": [], "after": []}
    try:
        for t in trees.values():
            t.run(["network", "create", "--subnet", "10.212.0.0/16", "pf"])
        for i in range(n):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            for key in order:
                t = trees[key]
                name = f"r{i}"
                runs[key].append(
                    timed(
                        lambda t=t, name=name: t.run(
                            [
                                "run",
                                "-d",
                                "--name",
                                name,
                                "--network",
                                "pf",
                                "busybox",
                                "sleep",
                                "3600",
                            ]
                        )
                    )
                )
                t.run(["rm", "-f", name])
                body = dict(BODY)
                creates[key].append(
                    timed(
                        lambda t=t, name=name, body=body: t.host.api.post(
                            "/containers/create", body, {"name": f"c{name}"}
                        )
                    )
                )
                t.run(["rm", "-f", f"c{name}"])
        results = {
            "rounds": n,
            "before": before_commit,
            "after": after_commit,
            "run -d (user network), ms": {k: stats(v) for k, v in runs.items()},
            "POST /containers/create alone, ms": {k: stats(v) for k, v in creates.items()},
            "decoding one run -d body in-process, us": decode_cost(trees["after"]),
            "ratios (after / before, medians)": {
                "run -d": round(
                    statistics.median(runs["after"]) / statistics.median(runs["before"]), 3
                ),
                "POST /containers/create": round(
                    statistics.median(creates["after"]) / statistics.median(creates["before"]), 3
                ),
            },
        }
    finally:
        for t in trees.values():
            t.close()
    print(save("api", results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"took {time.monotonic() - started:.0f} s")
