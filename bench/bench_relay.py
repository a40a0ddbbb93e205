"""The port relay (firewall/relay.py): its memory, its start, and the IPv6 data path through it.

    .venv/bin/python bench/bench_relay.py [ROUNDS]   (default 5)

One relay per daemon holds every published port's reservation socket and relays ports on
IPv6 host addresses (docker-proxy: two processes per port, ~3.2 MiB each, perf-anchors.md).
Measured: the relay's RSS and PSS with a few ports and with 1,000 more; what its start adds to
the first `run -d -p` of a daemon (against later ones and a plain `run -d`, same run);
iperf3 through it on [::1] against kernel NAT on 127.0.0.1 to the same container, interleaved,
with the relay's CPU time; connections per second through it against kernel NAT.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from common import PY, host, launcher, pss_kib, rss_kib, run_quiet, save, stats, timed

from nshost import NamespaceHost

RELAY = "tether/firewall/relay.py"


def relay_pid(h: NamespaceHost, wait: float = 0.0) -> int:
    deadline = time.monotonic() + wait
    while True:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if RELAY.encode() in cmdline and h.exec_root.encode() in cmdline:
                return int(pid)
        if time.monotonic() >= deadline:
            return 0
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CONNECT = (
    "import socket, sys, time\n"
    "addr = (sys.argv[1], int(sys.argv[2])); n = 0; t = time.perf_counter()\n"
    "while time.perf_counter() - t < 2:\n"
    "    s = socket.create_connection(addr); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
    "    while s.recv(65536): pass\n"
    "    s.close(); n += 1\n"
    "print(n / (time.perf_counter() - t))\n"
)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    tether = launcher()
    results: dict[str, object] = {"rounds": rounds}
    h = host()
    try:
        h.import_busybox()
        cli = [tether, "-H", f"unix://{h.socket}"]
        web = ["busybox", "httpd", "-f", "-p", "80"]

        # What the relay's start adds to a daemon's first published port.
        first: list[float] = []
        later: list[float] = []
        plain: list[float] = []

        def run(name: str, *args: str) -> float:
            return timed(lambda: run_quiet([*cli, "run", "-d", "--name", name, *args, *web]))

        for i in range(rounds):
            first.append(run(f"f{i}", "-p", "8080:80"))
            later.append(run(f"l{i}", "-p", "8081:80"))
            plain.append(run(f"p{i}"))
            run_quiet([*cli, "rm", "-f", f"f{i}", f"l{i}", f"p{i}"])
            deadline = time.monotonic() + 20  # the relay ends 5 s after the last port goes
            while relay_pid(h) and time.monotonic() < deadline:
                time.sleep(0.2)
        results["run_ms"] = {
            "run -d -p, the daemon's first port (relay starts)": stats(first),
            "run -d -p, relay running": stats(later),
            "run -d, no port": stats(plain),
            "relay start share (median difference)": round(
                statistics.median(first) - statistics.median(later), 1
            ),
        }

        # Memory with a few ports, then with 1,000 more reservation sockets (500 tcp ports,
        # each on 0.0.0.0 and ::).
        h.ok(
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "[::1]:5201:5201",
            "-p",
            "127.0.0.1:5202:5201",
            "-p",
            "8080:80",
            "host",
            "sh",
            "-c",
            "iperf3 -s -D; exec busybox httpd -f -p 80 -h /tmp",
        )
        pid = relay_pid(h, wait=5)
        few = (rss_kib(pid), pss_kib(pid), len(os.listdir(f"/proc/{pid}/fd")))
        h.ok(
            "run",
            "-d",
            "--name",
            "many",
            "-p",
            "20000-20499:20000-20499",
            "busybox",
            "sleep",
            "3600",
        )
        many = (rss_kib(pid), pss_kib(pid), len(os.listdir(f"/proc/{pid}/fd")))
        results["memory"] = {
            "relay RSS KiB, 4 ports (6 sockets)": few[0],
            "relay PSS KiB, 4 ports": few[1],
            "relay RSS KiB, +500 ports (+1,000 sockets)": many[0],
            "relay PSS KiB, +500 ports": many[1],
            "RSS per reservation socket (KiB)": round((many[0] - few[0]) / 1000, 2),
            "descriptors": [few[2], many[2]],
            "processes for all of them": 1,
        }
        h.ok("rm", "-f", "many")

        # Throughput: IPv6 through the relay against kernel NAT, to the same iperf3 server.
        time.sleep(1)
        paths = {
            "[::1]:5201 (relay)": "::1 -p 5201",
            "127.0.0.1:5202 (kernel NAT)": "127.0.0.1 -p 5202",
        }
        gbit: dict[str, list[float]] = {k: [] for k in paths}
        relay_cpu: list[float] = []
        for _ in range(rounds):
            for name, target in paths.items():
                c0 = cpu_seconds(pid)
                out = h.sh(f"iperf3 -c {target} -t 3 -J", timeout=60).stdout
                bps = float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
                gbit[name].append(bps / 1e9)
                if "relay" in name:
                    relay_cpu.append((cpu_seconds(pid) - c0) / 3)
        results["iperf3_gbit"] = {k: stats(v) for k, v in gbit.items()}
        results["relay_cpu_share_while_relaying"] = stats(relay_cpu)
        results["relay/NAT"] = round(
            statistics.median(gbit["[::1]:5201 (relay)"])
            / statistics.median(gbit["127.0.0.1:5202 (kernel NAT)"]),
            2,
        )

        # New connections per second, one client, HTTP/1.0 to busybox httpd, interleaved.
        rates: dict[str, list[float]] = {
            "[::1]:8080 (relay)": [],
            "127.0.0.1:8080 (kernel NAT)": [],
        }
        per_conn_us: list[float] = []
        for _ in range(rounds):
            for name in rates:
                addr = "::1" if "relay" in name else "127.0.0.1"
                c0 = cpu_seconds(pid)
                r = subprocess.run(
                    ["ip", "netns", "exec", h.netns, PY, "-c", CONNECT, addr, "8080"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                rates[name].append(float(r.stdout))
                if "relay" in name:  # CONNECT runs for 2 s
                    per_conn_us.append((cpu_seconds(pid) - c0) / (float(r.stdout) * 2) * 1e6)
        rate: dict[str, object] = {k: stats(v) for k, v in rates.items()}
        rate["relay CPU per connection (us)"] = stats(per_conn_us)
        results["connections_per_second"] = rate
        h.ok("rm", "-f", "web")
    finally:
        h.cleanup()
    print(json.dumps(results, indent=2))
    print("saved", save("relay", results))


if __name__ == "__main__":
    main()
