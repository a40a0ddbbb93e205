"""Run every benchmark in turn (./run bench).  Each writes bench/results/<name>.json."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = [
    "bench_networks.py",
    "bench_containers.py",
    "bench_ports.py",
    "bench_relay.py",
    "bench_dns.py",
    "bench_compose.py",
    "bench_security.py",
    "bench_images.py",
    "bench_encrypted.py",
    "bench_clients.py",
]


def main() -> int:
    rc = 0
    for name in BENCHES:
        print(f"== {name}", flush=True)
        r = subprocess.run([sys.executable, os.path.join(HERE, name), *sys.argv[1:]], cwd=HERE)
        rc = rc or r.returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
