"""The cluster store client (tether.store.etcd) against a real three-member etcd cluster.

    .venv/bin/python bench/bench_etcd_client.py [ROUNDS]   (default 300)

The cluster is tests/cluster.py's (three node namespaces on an underlay bridge, Debian's
etcd 3.4, data on tmpfs); the client runs in the underlay namespace, as a fourth machine.
Measured: what importing the client adds to tetherd's start (against tetherd's own imports,
same run), a put+get round trip, a compare-and-set create, how long after a put (on one
member) a watch (on another) delivers the event, and how long a watch takes to resume after
kill -9 of its member.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time

from common import PY, REPO, save

from cluster import etcd_cluster

IMPORT_PROBE = """
import sys, time
t = time.perf_counter()
import tether.daemon.app, tether.daemon.logs, tether.ipam.pools
base = time.perf_counter() - t
t = time.perf_counter()
import tether.store.etcd
print(base * 1000, (time.perf_counter() - t) * 1000)
"""


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * q))], 2)


def summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "max": round(max(xs), 2)}


def import_cost(rounds: int = 7) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    base, extra = [], []
    for _ in range(rounds):
        out = subprocess.run(
            [PY, "-c", IMPORT_PROBE], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        base.append(float(out[0]))
        extra.append(float(out[1]))
    return {
        "tetherd_imports_ms_median": round(statistics.median(base), 1),
        "etcd_client_import_ms_median": round(statistics.median(extra), 1),
    }


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    from tether.store.etcd import EtcdClient

    results: dict[str, object] = {"rounds": rounds, "import": import_cost()}
    with etcd_cluster(nodes=3, members=3) as c:

        async def run() -> None:
            async with (
                EtcdClient(c.endpoints_from(0), prefix="bench/") as a,
                EtcdClient(c.endpoints_from(1), prefix="bench/") as b,
            ):
                await a.put("warm", "x")
                await b.get("warm")
                rt, cas = [], []
                for i in range(rounds):
                    t = time.perf_counter()
                    await a.put("k", str(i))
                    await a.get("k")
                    rt.append((time.perf_counter() - t) * 1000)
                for i in range(rounds):
                    t = time.perf_counter()
                    assert await a.create(f"cas/{i}", "x")
                    cas.append((time.perf_counter() - t) * 1000)
                results["put_get_ms"] = summary(rt)
                results["cas_create_ms"] = summary(cas)

                # Watch latency: put through member 1, the watch streams from member 2.
                w = b.watch_prefix("w/")
                await w.wait_started()
                lat = []
                for i in range(rounds):
                    t = time.perf_counter()
                    await a.put("w/k", str(i))
                    events = await asyncio.wait_for(w.__anext__(), 5)
                    assert events[-1].kv.value == str(i).encode()
                    lat.append((time.perf_counter() - t) * 1000)
                results["put_to_watch_event_ms"] = summary(lat)
                await w.cancel()

                # kill -9 of the member a watch streams from (a follower, then the leader),
                # then a put through another member: how long the put takes, and how long
                # after it the resumed watch delivers the event.
                for role in ("follower", "leader"):
                    await asyncio.to_thread(c.ensure_all_running)
                    lead = await asyncio.to_thread(c.leader)
                    victim = lead if role == "leader" else (lead + 1) % 3
                    other = (victim + 1) % 3
                    async with (
                        EtcdClient(c.endpoints_from(victim), prefix="bench/") as watcher,
                        EtcdClient(c.endpoints_from(other), prefix="bench/") as writer,
                    ):
                        w = watcher.watch_prefix("r/")
                        await w.wait_started()
                        await asyncio.to_thread(c.kill_member, victim)
                        t = time.perf_counter()
                        await writer.put("r/k", "1")
                        put_ms = (time.perf_counter() - t) * 1000
                        await asyncio.wait_for(w.__anext__(), 10)
                        total_ms = (time.perf_counter() - t) * 1000
                        t = time.perf_counter()
                        await watcher.get("r/k")  # its pool still points at the dead member
                        first_ms = (time.perf_counter() - t) * 1000
                        results[f"kill_{role}"] = {
                            "put_ms": round(put_ms, 1),
                            "event_after_put_ms": round(total_ms - put_ms, 1),
                            "watcher_first_get_ms": round(first_ms, 1),
                        }
                        await w.cancel()
                        await writer.delete_prefix("")

        c.arun(run, timeout=600)
    path = save("etcd_client", results)
    for k, v in results.items():
        print(f"{k}: {v}")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
