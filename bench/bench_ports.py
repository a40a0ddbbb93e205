"""Published ports and the data path: publish cost at 1/100/1,000 ports, cost per port, throughput.

    .venv/bin/python bench/bench_ports.py [N] [ROUNDS]   (defaults: 20 samples, 9 iperf rounds)

Docker 20.10 here (../shared/reference/perf-anchors.md): 3 rules per published port, 2
docker-proxy processes per port (~3.2 MiB each); container-to-container iperf3 over its bridge
16.47 Gbit/s against 17.59 over a bare veth pair (0.936).  Targets: publishing the 1,000th port
costs what the first did; no process per port; published-port throughput >= 0.9 of the
container's own address; bridge >= 0.95 of a bare veth pair.  iperf3 numbers on this 2-vCPU VM
swing by +-30 % run to run, so the paths are measured interleaved, round after round, and
compared by their medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from common import host, launcher, rss_kib, run_quiet, save, stats, timed

from nshost import delete_netns, make_netns, sh


def iperf(server_ns: str, client_ns: str, target: str, port: int, secs: int = 3) -> float:
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    try:
        out = sh(
            f"ip netns exec {client_ns} iperf3 -c {target} -p {port} -t {secs} -J", timeout=60
        ).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        srv.wait(timeout=30)


def relay_pid(exec_root: str) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"tether/firewall/relay.py" in cmdline and exec_root.encode() in cmdline:
            return int(pid)
    raise RuntimeError("no port relay")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    tether = launcher()
    results: dict[str, object] = {"samples": n, "iperf_rounds": rounds}
    h = host()
    veth_a = veth_b = ""
    try:
        h.import_busybox()
        lan = h.add_lan()
        cli = [tether, "-H", f"unix://{h.socket}"]
        h.ok("network", "create", "--subnet", "10.220.0.0/16", "pf")
        with open(os.path.join(h.root, "tetherd.lock")) as f:
            daemon_pid = int(f.read().split()[0])

        def publish_cost(level: str) -> dict[str, object]:
            plain, published = [], []
            for i in range(n):
                plain.append(
                    timed(
                        lambda i=i: run_quiet(
                            [
                                *cli,
                                "run",
                                "-d",
                                "--name",
                                f"pl-{level}-{i}",
                                "--network",
                                "pf",
                                "busybox",
                                "sleep",
                                "3600",
                            ]
                        )
                    )
                )
                published.append(
                    timed(
                        lambda i=i: run_quiet(
                            [
                                *cli,
                                "run",
                                "-d",
                                "--name",
                                f"pp-{level}-{i}",
                                "--network",
                                "pf",
                                "-p",
                                f"{40000 + i}:80",
                                "busybox",
                                "sleep",
                                "3600",
                            ]
                        )
                    )
                )
            for i in range(n):
                run_quiet([*cli, "rm", "-f", f"pl-{level}-{i}", f"pp-{level}-{i}"])
            return {
                "run -d": stats(plain),
                "run -d -p": stats(published),
                "publish share (median difference)": round(
                    statistics.median(published) - statistics.median(plain), 2
                ),
            }

        # 1 port already published.
        h.ok(
            "run",
            "-d",
            "--name",
            "base",
            "--network",
            "pf",
            "-p",
            "20000:80",
            "busybox",
            "sleep",
            "3600",
        )
        at = {"1": publish_cost("1")}
        procs_before = int(sh("ps -e --no-headers | wc -l").stdout)
        # The reservation sockets and the IPv6 listeners live in the port relay, one process
        # per daemon (firewall/relay.py): count its memory with tetherd's.
        relay = relay_pid(h.exec_root)
        rss_before = rss_kib(daemon_pid) + rss_kib(relay)
        h.ok(
            "run",
            "-d",
            "--name",
            "many1",
            "--network",
            "pf",
            "-p",
            "20001-20099:20001-20099",
            "busybox",
            "sleep",
            "3600",
        )
        procs_after = int(sh("ps -e --no-headers | wc -l").stdout)
        rss_after = rss_kib(daemon_pid) + rss_kib(relay)
        at["100"] = publish_cost("100")
        h.ok(
            "run",
            "-d",
            "--name",
            "many2",
            "--network",
            "pf",
            "-p",
            "21000-21899:21000-21899",
            "busybox",
            "sleep",
            "3600",
        )
        at["1000"] = publish_cost("1000")
        published_total = len(h.sh("nft list map inet tether pub4").stdout.split(" : ")) - 1
        results["publish_ms"] = at
        results["per_port"] = {
            "ports published by the 99-port container": 99,
            "new processes (the container's shim and workload: 2)": procs_after - procs_before,
            "tetherd + relay RSS per published port (KiB, v4 NAT + v6 listener)": round(
                (rss_after - rss_before) / 99, 2
            ),
            "nft map elements at the end": published_total,
            "nft ruleset lines at the end": len(h.sh("nft list ruleset").stdout.splitlines()),
        }
        for name in ("many1", "many2", "base"):
            h.ok("rm", "-f", name)

        # Throughput: published port vs the container's own address (both from the LAN peer;
        # a user-chain rule lets the peer reach the container directly for the comparison).
        h.ok(
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "pf",
            "-p",
            "5201:5201",
            "host",
            "sleep",
            "3600",
        )
        h.ok("run", "-d", "--name", "cli", "--network", "pf", "host", "sleep", "3600")
        srv_ip = h.ip_of("srv", "pf")
        h.sh(f"nft add rule inet tether user ip daddr {srv_ip} tcp dport 5201 accept")
        srv_ns = h.api.get("/containers/srv/json")["NetworkSettings"]["SandboxKey"]
        cli_ns = h.api.get("/containers/cli/json")["NetworkSettings"]["SandboxKey"]
        for path, alias in ((srv_ns, "tb-srv"), (cli_ns, "tb-cli")):
            os.makedirs("/run/netns", exist_ok=True)
            open(f"/run/netns/{alias}", "w").close()
            sh(f"mount --bind {path} /run/netns/{alias}")
        veth_a, veth_b = make_netns("tva"), make_netns("tvb")
        sh(f"ip link add v0 netns {veth_a} type veth peer name v0 netns {veth_b}")
        sh(f"ip netns exec {veth_a} sh -c 'ip addr add 10.99.0.1/24 dev v0; ip link set v0 up'")
        sh(f"ip netns exec {veth_b} sh -c 'ip addr add 10.99.0.2/24 dev v0; ip link set v0 up'")
        paths: dict[str, list[float]] = {
            "published port (LAN -> host:5201 -> container)": [],
            "container address (LAN -> container:5201)": [],
            "container -> container, tether bridge": [],
            "bare veth pair, two namespaces": [],
        }
        keys = list(paths)
        for _ in range(rounds):
            paths[keys[0]].append(iperf("tb-srv", lan, "10.250.0.1", 5201))
            paths[keys[1]].append(iperf("tb-srv", lan, srv_ip, 5201))
            paths[keys[2]].append(iperf("tb-srv", "tb-cli", srv_ip, 5202))
            paths[keys[3]].append(iperf(veth_a, veth_b, "10.99.0.1", 5203))
        results["throughput_gbit"] = {
            k: {"median": round(statistics.median(v), 2), "all": [round(x, 2) for x in v]}
            for k, v in paths.items()
        }
        med = {k: statistics.median(v) for k, v in paths.items()}
        results["ratios"] = {
            "publish share at 1000 ports / at 1 port": round(
                at["1000"]["publish share (median difference)"]
                / max(at["1"]["publish share (median difference)"], 0.01),
                3,
            ),  # type: ignore[index]
            "run -d -p at 1000 ports / at 1 port": round(
                at["1000"]["run -d -p"]["median"] / at["1"]["run -d -p"]["median"], 3
            ),  # type: ignore[index]
            "published port / container address": round(med[keys[0]] / med[keys[1]], 3),
            "tether bridge / bare veth": round(med[keys[2]] / med[keys[3]], 3),
        }
    finally:
        for alias in ("tb-srv", "tb-cli"):
            sh(f"umount /run/netns/{alias}", check=False)
            sh(f"rm -f /run/netns/{alias}", check=False)
        for ns in (veth_a, veth_b):
            if ns:
                delete_netns(ns)
        h.cleanup()
    print(save("ports", results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
