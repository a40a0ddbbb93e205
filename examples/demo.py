"""The demo: a multi-network scenario on a tetherd of its own, with what it did shown.

It runs on a "demo host": a network namespace of its own with its own tetherd (state in
/var/lib/tether-demo, socket in /run/tether-demo), so it never changes the machine's real
network, and it removes everything it made when it ends (--keep leaves it running).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NETNS = "tether-demo"
ROOT = "/var/lib/tether-demo"
EXEC_ROOT = "/run/tether-demo"
SOCKET = f"{EXEC_ROOT}/tether.sock"
PY = sys.executable
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"


def run(
    cmd: list[str], check: bool = True, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if check and r.returncode != 0:
        sys.stderr.write(f"{RED}failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}{RESET}")
        raise SystemExit(1)
    return r


def tether(*args: str, show: bool = True, check: bool = True) -> str:
    """Run and print `tether ...` as a user would type it."""
    if show:
        print(f"{BOLD}$ tether {' '.join(_q(a) for a in args)}{RESET}")
    r = run([PY, "-m", "tether.cli.main", "-H", f"unix://{SOCKET}", *args], check=check)
    out = r.stdout + r.stderr  # compose reports its progress on stderr
    if show and out:
        print(out, end="" if out.endswith("\n") else "\n")
    return r.stdout


def on_host(cmd: str) -> str:
    """A command on the demo host (its network namespace), printed like a shell line."""
    print(f"{BOLD}# {cmd}{RESET}   {DIM}(in the demo host's network namespace){RESET}")
    r = run(["nsenter", f"--net=/run/netns/{NETNS}", "sh", "-c", cmd])
    print(r.stdout, end="")
    return r.stdout


def _q(a: str) -> str:
    return a if a and all(c.isalnum() or c in "-_./:=,@" for c in a) else "'" + a + "'"


def section(title: str) -> None:
    print(f"\n{BOLD}{GREEN}== {title}{RESET}")


class DemoHost:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.upstream: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.cleanup()
        run(["ip", "netns", "add", NETNS])
        run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"])
        os.makedirs(ROOT, exist_ok=True)
        # Names no network knows are forwarded upstream.  The demo never asks the machine's
        # own resolver: a stand-in on the demo host's loopback answers NXDOMAIN at once.
        resolv = os.path.join(ROOT, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver 127.0.0.53\n")
        self.upstream = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                NETNS,
                PY,
                os.path.join(REPO, "tests", "dnsupstream.py"),
                "127.0.0.53",
                "53",
                os.path.join(ROOT, "upstream.log"),
                "900",
            ]
        )
        with open(os.path.join(ROOT, "tetherd.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{NETNS}",
                    PY,
                    "-m",
                    "tether.daemon.main",
                    "--root",
                    ROOT,
                    "--exec-root",
                    EXEC_ROOT,
                    "--resolv-conf",
                    resolv,
                    # The demo uses the busybox it imports; a typo'd image name must not
                    # send it looking on Docker Hub.
                    "--block-registry",
                    "docker.io",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        for _ in range(300):
            if (
                run(
                    [PY, "-m", "tether.cli.main", "-H", f"unix://{SOCKET}", "version"], check=False
                ).returncode
                == 0
            ):
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"tetherd did not start; see {ROOT}/tetherd.log")
        tar = os.path.join(ROOT, "busybox.tar")
        run([PY, "-m", "tether.runtime.busybox", tar])
        run(
            [
                PY,
                "-m",
                "tether.cli.main",
                "-H",
                f"unix://{SOCKET}",
                "import",
                "--change",
                'CMD ["sh"]',
                tar,
                "busybox",
            ]
        )
        os.unlink(tar)

    def cleanup(self) -> None:
        if os.path.exists(SOCKET):
            r = run(
                [PY, "-m", "tether.cli.main", "-H", f"unix://{SOCKET}", "ps", "-aq"], check=False
            )
            for cid in r.stdout.split():
                run(
                    [PY, "-m", "tether.cli.main", "-H", f"unix://{SOCKET}", "rm", "-f", cid],
                    check=False,
                )
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None
        else:
            lock = os.path.join(ROOT, "tetherd.lock")
            if os.path.exists(lock):
                with open(lock) as f:
                    pid = f.read().strip()
                if pid.isdigit():
                    subprocess.run(["kill", "-TERM", pid], capture_output=True)
                    time.sleep(0.5)
        if self.upstream is not None:
            self.upstream.kill()
            self.upstream.wait()
            self.upstream = None
        subprocess.run(["umount", "-l", f"{EXEC_ROOT}/netns"], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        shutil.rmtree(ROOT, ignore_errors=True)
        shutil.rmtree(EXEC_ROOT, ignore_errors=True)


# Relative to the repository, where every command runs: what a reader would type.
THREE_TIER = ["-f", "examples/three-tier/compose.yaml"]
BROKEN = ["-f", "examples/broken-db/compose.yaml"]
FIXED = [*BROKEN, "-f", "examples/broken-db/compose.fix.yaml"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """tether against the demo host, quietly (for the probes)."""
    return subprocess.run(
        [PY, "-m", "tether.cli.main", "-H", f"unix://{SOCKET}", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def scenario() -> None:
    import reachability as rch

    section("The three-tier application: web (frontend), api (both), db (internal backend)")
    print(f"{DIM}examples/three-tier/compose.yaml{RESET}")
    with open(os.path.join(HERE, "three-tier", "compose.yaml")) as f:
        body = [line for line in f.read().splitlines() if line and not line.startswith("#")]
    print("\n".join("  " + line for line in body))

    section("Bring it up: networks first, then containers in depends_on order")
    tether("compose", *THREE_TIER, "up", "-d")
    tether("compose", *THREE_TIER, "ps")
    tether("network", "ls", "--filter", "label=com.docker.compose.project=three-tier")

    section("What that made in the kernel")
    on_host("ip -br addr show type bridge")
    tether("compose", *THREE_TIER, "exec", "api", "ip", "-4", "addr")
    tether("compose", *THREE_TIER, "exec", "api", "ip", "route")

    section("Reachability: by name (embedded DNS at 127.0.0.11), then by address")
    services = ["web", "api", "db"]
    targets = [rch.Target("web", 80), rch.Target("api", 80), rch.Target("db", 5432, http=False)]
    cells = rch.matrix(cli, THREE_TIER, "three-tier", services, targets)
    print(rch.render(cells, services, targets), end="")
    print(
        f"{DIM}  (web and db share no network: no DNS record; by address, the internal backend "
        f"drops web's packets, and db has no route out at all){RESET}"
    )
    on_host("busybox wget -qO- http://127.0.0.1:8080/   # web, published on the host")

    section("Troubleshooting: api on the wrong network cannot resolve db")
    tether("compose", *BROKEN, "up", "-d")
    tether("compose", *BROKEN, "exec", "api", "nslookup", "db", check=False)
    tether("compose", *BROKEN, "exec", "api", "nc", "-w", "2", "db", "5432", check=False)
    print(f"{DIM}  the fix puts api on the backend too; `up` recreates api only{RESET}")
    tether("compose", *FIXED, "up", "-d")
    tether("compose", *FIXED, "exec", "api", "nc", "-w", "2", "db", "5432")
    tether("compose", *FIXED, "down")

    section("Take it down: the project's containers and networks, nothing else")
    tether("compose", *THREE_TIER, "down")
    tether("network", "ls")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--keep", action="store_true", help="leave the demo host running at the end")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("the demo needs root", file=sys.stderr)
        return 1
    host = DemoHost()
    host.start()
    try:
        scenario()
    finally:
        if args.keep:
            print(
                f"\nThe demo host is still running: TETHER_HOST=unix://{SOCKET} tether network ls"
            )
        else:
            host.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
