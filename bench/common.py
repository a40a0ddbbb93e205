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


def loadavg() -> list[float]:
    """The machine's load average (1, 5, 15 min), as `uptime` prints it: results record it
    because other work on this 2-vCPU VM moves absolute figures (ratios less so)."""
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def save(name: str, data: dict[str, Any]) -> str:
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"{name}.json")
    data = {
        "benchmark": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load average at the end (1, 5, 15 min)": loadavg(),
        **data,
    }
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


# -- two commits in one run ------------------------------------------------------------------

TREE_LAUNCHER = """#!{python} -S
import sys
sys.path[0:0] = {paths!r}
from tether.cli.main import main
sys.exit(main())
"""


class Tree:
    """One commit of tether, exported (git archive) into a temporary tree, with a namespace-host
    of its own (a tetherd of that commit: PYTHONPATH points the daemon's interpreter at the
    tree), the fast CLI launcher for it, and the busybox image imported.  Benchmarks that
    compare two commits make one Tree each and alternate rounds between them, so that the
    machine's drift (and other work on it) hits both alike."""

    def __init__(self, commit: str) -> None:
        import compileall
        import shutil
        import sysconfig

        self.commit = commit
        self.sha = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short=7", commit],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.dir = tempfile.mkdtemp(prefix=f"tether-bench-{self.sha}-")
        try:
            archive = subprocess.run(
                ["git", "-C", REPO, "archive", commit], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", self.dir], input=archive, check=True)
            self.src = os.path.join(self.dir, "src")
            # With PYTHONDONTWRITEBYTECODE set every call would recompile the tree's modules.
            compileall.compile_dir(self.src, quiet=1)
            self.launcher = os.path.join(self.dir, "tether")
            with open(self.launcher, "w") as f:
                f.write(
                    TREE_LAUNCHER.format(
                        python=sys.executable, paths=[self.src, sysconfig.get_paths()["purelib"]]
                    )
                )
            os.chmod(self.launcher, 0o755)
            old = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = self.src  # the daemon's interpreter imports this tree
            try:
                # An older commit's tetherd may not know --block-registry (it never pulls).
                self.host = NamespaceHost(block_registries=False)
                self.host.start()
            finally:
                if old is None:
                    del os.environ["PYTHONPATH"]
                else:
                    os.environ["PYTHONPATH"] = old
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.cli = [self.launcher, "-H", f"unix://{self.host.socket}"]
        self.env = {**os.environ, "TETHER_HOST": f"unix://{self.host.socket}"}
        from nshost import busybox_tar

        self.run(["image", "import", "--change", 'CMD ["sh"]', busybox_tar(), "busybox"])

    def run(self, args: list[str]) -> str:
        """`tether ARGS` of this tree against its daemon; its stdout."""
        r = subprocess.run([*self.cli, *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{self.sha} tether {' '.join(args)}: {r.stderr}")
        return r.stdout

    def daemon_pid(self) -> int:
        with open(os.path.join(self.host.root, "tetherd.lock")) as f:
            return int(f.read().split()[0])

    def close(self) -> None:
        import shutil

        self.host.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
