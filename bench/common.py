"""Shared benchmark helpers: a namespace-host to measure against, timers, result files.

Benchmarks report medians and ratios against a baseline measured in the same run (the
machine's speed varies from run to run; ratios travel better than milliseconds).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from nshost import NamespaceHost  # noqa: E402

PY = sys.executable


def stats(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "min": round(min(xs), 2),
        "median": round(statistics.median(xs), 2),
        "max": round(max(xs), 2),
    }


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def run_quiet(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return r


def launcher() -> str:
    """The fast `tether` launcher, as ./run install writes it, in a temp file.

    Byte-compiles first, as ./run install does: with PYTHONDONTWRITEBYTECODE set, a module
    changed since the last compile would be recompiled on every CLI call and skew the numbers.
    """
    import compileall

    from tether.cli import launcher as mod

    compileall.compile_dir(os.path.join(REPO, "src", "tether"), quiet=1)

    path = os.path.join(tempfile.mkdtemp(prefix="tether-bench-"), "tether")
    mod.write(path)
    return path


def save(name: str, data: dict[str, Any]) -> str:
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"{name}.json")
    data = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return path


def host(extra: list[str] | None = None) -> NamespaceHost:
    h = NamespaceHost(extra)
    h.start()
    return h


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0
