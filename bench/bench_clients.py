"""The docker CLI against tetherd and against dockerd 20.10, same run (issue 14, item 8).

    .venv/bin/python bench/bench_clients.py [ROUNDS]

Two daemons, each in a network namespace of its own: a tetherd (a namespace-host, as the
tests use) and Debian's dockerd 20.10 (apt docker.io) started with `nsenter --net=` and its
own --data-root/--exec-root in a temporary directory, with busybox imported into both from
the same rootfs tarball.  Measured, round by round in alternation so that the machine's load
falls on both alike:

- the same docker CLI binary against each daemon: network create+rm, run -d, run --rm true,
  ps, network ls;
- each project's own CLI against its own daemon: `tether` (the launcher ./run install
  writes) against tetherd, `docker` against dockerd; the same operations and the everyday
  reads besides: ps -a, network inspect, inspect, images, volume ls, version, logs of a
  short container, exec CONTAINER true, stop -t 0 + rm;
- the daemons alone: one GET /containers/json and one GET /networks on a fresh unix-socket
  connection from this process (no client start-up), 200 each, against both daemons.

Everything of dockerd is removed at the end: its containers, its processes (dockerd,
containerd, shims: everything whose command line names the temporary directory), the mounts
under that directory, the directory, and the namespace with its docker0 bridge and its
iptables tables; what was left, if anything, is written into the results.  Never part of the
tests: dockerd runs only here.
"""

from __future__ import annotations

import _socket
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO

from common import host, launcher, save, stats

from nshost import busybox_tar, delete_netns, make_netns

DOCKER = shutil.which("docker") or "docker"
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"


class Dockerd:
    """dockerd 20.10 in a namespace and a directory of its own."""

    def __init__(self) -> None:
        self.ns = make_netns("tbd")
        self.dir = tempfile.mkdtemp(prefix="tether-bench-dockerd-")
        self.socket = os.path.join(self.dir, "docker.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": os.path.join(self.dir, "cli"),
        }

    def start(self) -> None:
        with open(os.path.join(self.dir, "dockerd.log"), "wb") as log:
            self._spawn(log)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited:\n{self.log()[-3000:]}")
            r = subprocess.run([DOCKER, "version"], env=self.env(), capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"dockerd did not answer:\n{self.log()[-3000:]}")

    def _spawn(self, log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.ns}",
                DOCKERD,
                "--data-root",
                os.path.join(self.dir, "data"),
                "--exec-root",
                os.path.join(self.dir, "exec"),
                "--pidfile",
                os.path.join(self.dir, "dockerd.pid"),
                "-H",
                f"unix://{self.socket}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        with open(os.path.join(self.dir, "dockerd.log"), errors="replace") as f:
            return f.read()

    def docker(self, *args: str) -> str:
        r = subprocess.run([DOCKER, *args], env=self.env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {r.stderr}")
        return r.stdout

    def ours(self) -> list[int]:
        """Every process whose command line names our directory (dockerd, its containerd
        and shims), and the containers' processes under those shims."""
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if self.dir.encode() in cmd:
                out.append(int(pid))
        return out

    def mounts(self) -> list[str]:
        with open("/proc/self/mounts") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(self.dir)]

    def stop(self) -> dict[str, object]:
        """Remove everything; what could not be removed is returned (and must be empty)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                ids = self.docker("ps", "-aq").split()
                if ids:
                    self.docker("rm", "-f", *ids)
            except RuntimeError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for _ in range(20):
            pids = self.ours()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        for m in sorted(self.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        bridges = subprocess.run(
            ["ip", "-n", self.ns, "-o", "link", "show", "type", "bridge"],
            capture_output=True,
            text=True,
        ).stdout
        delete_netns(self.ns)
        host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        left = {
            "processes": self.ours(),
            "mounts": self.mounts(),
            "directory": os.path.exists(self.dir),
            "namespace": os.path.exists(f"/run/netns/{self.ns}"),
            "docker0 in the machine's namespace": " docker0:" in host_links,
        }
        return {"bridges dockerd made in its namespace": bridges.count("\n"), "left": left}


def run_timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    ms = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.returncode} {r.stderr}")
    return ms


def raw_get(socket_path: str, path: str) -> float:
    """One request on a fresh connection, read to the end: the daemon's share of a `ps`."""
    t = time.perf_counter()
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(socket_path)
        s.sendall(f"GET /v1.41{path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    ms = (time.perf_counter() - t) * 1000
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path}: {data[:200]!r}")
    return ms


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    tether_cli = launcher()
    version = subprocess.run([DOCKER, "--version"], capture_output=True, text=True).stdout
    dockerd_version = subprocess.run([DOCKERD, "--version"], capture_output=True, text=True)
    h = host()
    d = Dockerd()
    cleanup: dict[str, object] = {}
    try:
        h.import_busybox()
        d.start()
        d.docker("import", "--change", 'CMD ["sh"]', busybox_tar(), "busybox")
        t_env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{h.socket}",
            "DOCKER_CONFIG": os.path.join(h.dir, "cli"),
        }
        t_own = {**os.environ, "TETHER_HOST": f"unix://{h.socket}"}
        d_env = d.env()
        # A few containers running on each, so that ps has something to list.
        for i in range(3):
            for env in (t_env, d_env):
                run_timed(
                    [DOCKER, "run", "-d", "--name", f"bg{i}", "busybox", "sleep", "3600"], env
                )
        for env in (t_env, d_env):
            # A short container's logs: what `logs` reads.
            run_timed([DOCKER, "run", "--name", "short", "busybox", "echo", "hello"], env)
        # (label, argv prefix, env) per client/daemon pair.
        pairs = {
            "docker CLI -> tetherd": ([DOCKER], t_env),
            "docker CLI -> dockerd": ([DOCKER], d_env),
            "tether CLI -> tetherd": ([tether_cli], t_own),
        }
        ops: dict[str, Callable[[list[str], dict[str, str], int], float]] = {}

        def net_create_rm(cli: list[str], env: dict[str, str], i: int) -> float:
            return run_timed([*cli, "network", "create", f"bn{i}"], env) + run_timed(
                [*cli, "network", "rm", f"bn{i}"], env
            )

        def run_d(cli: list[str], env: dict[str, str], i: int) -> float:
            ms = run_timed([*cli, "run", "-d", "--name", f"rd{i}", "busybox", "sleep", "60"], env)
            run_timed([*cli, "rm", "-f", f"rd{i}"], env)
            return ms

        def run_rm(cli: list[str], env: dict[str, str], i: int) -> float:
            return run_timed([*cli, "run", "--rm", "busybox", "true"], env)

        def ps(cli: list[str], env: dict[str, str], i: int) -> float:
            return run_timed([*cli, "ps"], env)

        def network_ls(cli: list[str], env: dict[str, str], i: int) -> float:
            return run_timed([*cli, "network", "ls"], env)

        def read(*argv: str) -> Callable[[list[str], dict[str, str], int], float]:
            return lambda cli, env, i: run_timed([*cli, *argv], env)

        def stop_rm(cli: list[str], env: dict[str, str], i: int) -> float:
            run_timed([*cli, "run", "-d", "--name", f"st{i}", "busybox", "sleep", "60"], env)
            return run_timed([*cli, "stop", "-t", "0", f"st{i}"], env) + run_timed(
                [*cli, "rm", f"st{i}"], env
            )

        ops = {
            "network create+rm": net_create_rm,
            "run -d": run_d,
            "run --rm true": run_rm,
            "ps": ps,
            "network ls": network_ls,
            "ps -a": read("ps", "-a"),
            "network inspect bridge": read("network", "inspect", "bridge"),
            "inspect CONTAINER": read("inspect", "bg0"),
            "images": read("images"),
            "volume ls": read("volume", "ls"),
            "version": read("version"),
            "logs (short container)": read("logs", "short"),
            "exec CONTAINER true": read("exec", "bg0", "true"),
            "stop -t 0 + rm": stop_rm,
        }
        times: dict[str, dict[str, list[float]]] = {op: {p: [] for p in pairs} for op in ops}
        for op, fn in ops.items():
            for cli, env in pairs.values():
                fn(cli, env, 9999)  # warm-up, not counted
            labels = list(pairs)
            for i in range(rounds):
                # The order turns each round: whatever runs right after dockerd's work (its
                # containerd and shims settling) would otherwise always be the same pair.
                for label in labels[i % 3 :] + labels[: i % 3]:
                    cli, env = pairs[label]
                    times[op][label].append(fn(cli, env, i))
            print(
                op,
                {label: stats(times[op][label])["median"] for label in pairs},
                flush=True,
            )
        daemons = {"tetherd": h.socket, "dockerd": d.socket}
        raw: dict[str, dict[str, list[float]]] = {}
        for path in ("/containers/json", "/networks"):
            raw[path] = {name: [] for name in daemons}
            for _ in range(200):
                for name, sock in daemons.items():
                    raw[path][name].append(raw_get(sock, path))
            print(path, {n: stats(xs)["median"] for n, xs in raw[path].items()}, flush=True)
    finally:
        cleanup = d.stop()
        h.cleanup()
    results = {}
    for op, by in times.items():
        med = {label: stats(xs) for label, xs in by.items()}
        tetherd = med["docker CLI -> tetherd"]["median"]
        dockerd = med["docker CLI -> dockerd"]["median"]
        own = med["tether CLI -> tetherd"]["median"]
        results[op] = {
            "ms": med,
            "docker CLI: tetherd / dockerd": round(tetherd / dockerd, 3),
            "own CLIs: tether / docker": round(own / dockerd, 3),
        }
    out = save(
        "clients",
        {
            "command": f".venv/bin/python bench/bench_clients.py {rounds}",
            "docker CLI": version.strip(),
            "dockerd": dockerd_version.stdout.strip(),
            "rounds": rounds,
            "how": (
                "each round runs the operation once per pair (docker CLI -> tetherd, docker "
                "CLI -> dockerd, tether CLI -> tetherd), the order turning each round, after "
                "one uncounted warm-up; "
                "3 busybox sleep containers run on each daemon; times are wall-clock ms of "
                "the client process, start-up included"
            ),
            "results": results,
            "one request, no client (GET on a fresh connection from the bench, ms)": {
                path: {name: stats(xs) for name, xs in by.items()} for path, by in raw.items()
            },
            "dockerd cleanup": cleanup,
        },
    )
    print(out)


if __name__ == "__main__":
    main()
