"""The kernel's share of start latency at scale: a bridge port on a full bridge vs an empty one.

    .venv/bin/python bench/bench_bridge_ports.py [PORTS] [ROUNDS]    (defaults: 900, 200)

What a container's join asks of the kernel on a bridge network (a veth pair, its host end made
a port of the network's bridge and set up), timed in one process with pyroute2 in a scratch
namespace, on a bridge that already has PORTS ports and on an empty one, interleaved round by
round (each pair deleted again, untimed).  IPv6 is off in the namespace, as tether gives its
veths no link-local address.  bench_drivers.py compares the 1,000th start with a fresh
daemon's first: this is the part of that difference that no daemon can avoid (a Linux bridge
holds at most 1,023 ports, BR_MAX_PORTS).
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from common import loadavg, save, stats, timed
from pyroute2 import NetNS

from nshost import delete_netns, make_netns


def main() -> None:
    ports = int(sys.argv[1]) if len(sys.argv) > 1 else 900
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    load = {"start": loadavg()}
    ns_name = make_netns("tb")
    try:
        subprocess.run(
            ["ip", "netns", "exec", ns_name, "sysctl", "-qw",
             "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
            check=True,
        )  # fmt: skip
        batch = "link add full type bridge\nlink add empty type bridge\n"
        batch += "link set full up\nlink set empty up\n"
        batch += "".join(
            f"link add p{i} type veth peer name q{i}\nlink set p{i} master full\nlink set p{i} up\n"
            for i in range(ports)
        )
        subprocess.run(["ip", "-n", ns_name, "-batch", "-"], input=batch.encode(), check=True)
        ns = NetNS(ns_name)
        try:
            bridge = {b: ns.link_lookup(ifname=b)[0] for b in ("full", "empty")}
            times: dict[str, list[float]] = {"full": [], "empty": []}
            for r in range(rounds):
                for br in ("full", "empty") if r % 2 == 0 else ("empty", "full"):
                    name, peer = f"x{r}{br[0]}", f"y{r}{br[0]}"

                    def join(name: str = name, peer: str = peer, br: str = br) -> None:
                        ns.link("add", ifname=name, kind="veth", peer=peer)
                        index = ns.link_lookup(ifname=name)[0]
                        ns.link("set", index=index, master=bridge[br], state="up")

                    times[br].append(timed(join))
                    ns.link("del", index=ns.link_lookup(ifname=name)[0])
        finally:
            ns.close()
    finally:
        delete_netns(ns_name)
    load["end"] = loadavg()
    full, empty = statistics.median(times["full"]), statistics.median(times["empty"])
    results = {
        "ports on the full bridge": ports,
        "rounds": rounds,
        "load average (1, 5, 15 min)": load,
        "veth pair + bridge port + up (ms)": {
            f"bridge with {ports} ports": stats(times["full"]),
            "empty bridge": stats(times["empty"]),
        },
        "extra per join on the full bridge (ms, medians)": round(full - empty, 3),
        "ratio full / empty": round(full / empty, 3),
    }
    print(save("bridge_ports", results))
    print(f"full {full:.2f} ms, empty {empty:.2f} ms, ratio {full / empty:.3f}")


if __name__ == "__main__":
    main()
