"""The embedded DNS under dnsperf, with baselines measured in the same run.

    .venv/bin/python bench/bench_dns.py [SECONDS] [SANDBOXES]   (defaults: 10 s, 200)

Docker 20.10's embedded DNS here (../shared/reference/perf-anchors.md): 56,110 queries/s with
dnsperf's defaults (max latency 18.4 ms), 51,371 with -c 4 -q 20; aardvark-dns 52,942 /
56,059.  On 2 vCPUs dnsperf itself takes one core, so the ceiling moves with the machine:
this script also measures, in the same namespace and the same run, a minimal C responder
(the most dnsperf can drive) and a bare Python recvfrom/sendto loop.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

from common import REPO, host, rss_kib, save

from nshost import sh

C_RESPONDER = r"""
#include <arpa/inet.h>
#include <sys/socket.h>
#include <netinet/in.h>
int main(void){
  int s=socket(AF_INET,SOCK_DGRAM,0); struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_port=htons(53);
  inet_pton(AF_INET,"127.0.0.12",&a.sin_addr); bind(s,(void*)&a,sizeof a); char b[4096]; struct sockaddr_in c; socklen_t l;
  for(;;){ l=sizeof c; int n=recvfrom(s,b,sizeof b,0,(void*)&c,&l); if(n<12) continue; b[2]|=0x80; b[3]|=0x80; sendto(s,b,n,0,(void*)&c,l);} }
"""
PY_RESPONDER = """
import socket, dns.message
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.13", 53)); cache = {}
while True:
    d, a = s.recvfrom(4096)
    h = cache.get(d[2:])
    if h is None:
        h = cache[d[2:]] = dns.message.make_response(dns.message.from_wire(d)).to_wire()[2:]
    s.sendto(d[:2] + h, a)
"""


def dnsperf(
    netns_path: str, server: str, qfile: str, secs: int, extra: list[str]
) -> dict[str, float]:
    out = sh(
        f"nsenter --net={netns_path} dnsperf -s {server} -d {qfile} -l {secs} {' '.join(extra)}",
        timeout=secs + 30,
    ).stdout
    qps = float(re.search(r"Queries per second:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"Average Latency \(s\):\s+([0-9.]+) \(min ([0-9.]+), max ([0-9.]+)\)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    return {
        "qps": round(qps),
        "avg_ms": round(float(lat.group(1)) * 1000, 3) if lat else -1,
        "max_ms": round(float(lat.group(3)) * 1000, 3) if lat else -1,
        "lost": int(lost.group(1)) if lost else -1,
    }


def main() -> None:
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    results: dict[str, object] = {"seconds": secs, "sandboxes": count}
    h = host()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = tempfile.mkdtemp(prefix="tether-bench-dns-")
    try:
        h.import_busybox()
        h.sh("ip addr add 198.18.53.53/32 dev lo")
        procs.append(
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    h.netns,
                    sys.executable,
                    os.path.join(REPO, "tests", "dnsupstream.py"),
                    "198.18.53.53",
                    "53",
                    "/dev/null",
                    "3600",
                ]
            )
        )
        h.ok("network", "create", "--subnet", "10.230.0.0/16", "dnsnet")
        h.ok(
            "run",
            "-d",
            "--name",
            "pf-dns-target",
            "--network",
            "dnsnet",
            "busybox",
            "sleep",
            "36000",
        )
        h.ok(
            "run",
            "-d",
            "--name",
            "client",
            "--network",
            "dnsnet",
            "--dns",
            "198.18.53.53",
            "busybox",
            "sleep",
            "36000",
        )
        key = h.api.get("/containers/client/json")["NetworkSettings"]["SandboxKey"]
        internal, forwarded = os.path.join(tmp, "internal"), os.path.join(tmp, "forwarded")
        with open(internal, "w") as f:
            f.write("pf-dns-target A\n")
        with open(forwarded, "w") as f:
            f.write("fwd.anchor.test A\n")
        # Baselines in the same namespace: the C ceiling and a bare Python loop.
        csrc = os.path.join(tmp, "c.c")
        with open(csrc, "w") as f:
            f.write(C_RESPONDER)
        sh(f"cc -O2 -o {tmp}/cresp {csrc}")
        procs.append(subprocess.Popen(["nsenter", f"--net={key}", f"{tmp}/cresp"]))
        procs.append(
            subprocess.Popen(["nsenter", f"--net={key}", sys.executable, "-c", PY_RESPONDER])
        )
        time.sleep(1)
        runs: dict[str, dict[str, float]] = {}
        for label, extra in (("defaults", []), ("-c 4 -q 20", ["-c", "4", "-q", "20"])):
            runs[f"tether, internal name, {label}"] = dnsperf(
                key, "127.0.0.11", internal, secs, extra
            )
            runs[f"C responder (ceiling), {label}"] = dnsperf(
                key, "127.0.0.12", internal, secs, extra
            )
            runs[f"bare Python loop, {label}"] = dnsperf(key, "127.0.0.13", internal, secs, extra)
            runs[f"tether, forwarded name, {label}"] = dnsperf(
                key, "127.0.0.11", forwarded, secs, extra
            )
        results["dnsperf"] = runs
        # Memory per sandbox served: containers on the default bridge (no DNS) against the
        # same number on a user network (one DNS sandbox each).
        with open(os.path.join(h.root, "tetherd.lock")) as f:
            pid = int(f.read().split()[0])

        def grow(network: str, prefix: str) -> float:
            before = rss_kib(pid)
            for i in range(count):
                h.api.post(
                    "/containers/create",
                    {
                        "Image": "busybox",
                        "Cmd": ["sleep", "36000"],
                        "HostConfig": {"NetworkMode": network},
                    },
                    query={"name": f"{prefix}{i}"},
                )
                h.api.post(f"/containers/{prefix}{i}/start")
            after = rss_kib(pid)
            return (after - before) / count

        plain = grow("bridge", "nodns")
        with_dns = grow("dnsnet", "withdns")
        results["memory"] = {
            "tetherd RSS per container, default bridge (KiB)": round(plain, 2),
            "tetherd RSS per container, user network with DNS (KiB)": round(with_dns, 2),
            "DNS cost per sandbox (KiB)": round(with_dns - plain, 2),
        }
        d = runs["tether, internal name, defaults"]["qps"]
        results["ratios"] = {
            "tether / C ceiling (defaults)": round(
                d / runs["C responder (ceiling), defaults"]["qps"], 3
            ),
            "tether / bare Python (defaults)": round(
                d / runs["bare Python loop, defaults"]["qps"], 3
            ),
            "tether / Docker's 56,110 (reference figure, another day)": round(d / 56110, 3),
            "tether / C ceiling (-c 4 -q 20)": round(
                runs["tether, internal name, -c 4 -q 20"]["qps"]
                / runs["C responder (ceiling), -c 4 -q 20"]["qps"],
                3,
            ),
        }
    finally:
        for p in procs:
            p.kill()
            p.wait()
        h.cleanup()
        sh(f"rm -rf {tmp}", check=False)
    print(save("dns", results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
