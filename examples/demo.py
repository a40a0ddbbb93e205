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

NETNS = "tether-demo"
ROOT = "/var/lib/tether-demo"
EXEC_ROOT = "/run/tether-demo"
SOCKET = f"{EXEC_ROOT}/tether.sock"
PY = sys.executable
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"


def run(
    cmd: list[str], check: bool = True, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.stderr.write(f"{RED}failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}{RESET}")
        raise SystemExit(1)
    return r


def tether(*args: str, show: bool = True, check: bool = True) -> str:
    """Run and print `tether ...` as a user would type it."""
    if show:
        print(f"{BOLD}$ tether {' '.join(_q(a) for a in args)}{RESET}")
    r = run([PY, "-m", "tether.cli.main", "-H", f"unix://{SOCKET}", *args], check=check)
    out = r.stdout + (r.stderr if r.returncode else "")
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

    def start(self) -> None:
        self.cleanup()
        run(["ip", "netns", "add", NETNS])
        run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"])
        os.makedirs(ROOT, exist_ok=True)
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
                return
            time.sleep(0.05)
        raise SystemExit(f"tetherd did not start; see {ROOT}/tetherd.log")

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
        subprocess.run(["umount", "-l", f"{EXEC_ROOT}/netns"], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        shutil.rmtree(ROOT, ignore_errors=True)
        shutil.rmtree(EXEC_ROOT, ignore_errors=True)


def scenario() -> None:
    section("The networks every tetherd starts with")
    tether("network", "ls")

    section("Two user-defined networks: a frontend, and an internal backend with static addressing")
    tether("network", "create", "frontend")
    tether(
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.90.0.0/24",
        "--gateway",
        "10.90.0.254",
        "--ip-range",
        "10.90.0.128/25",
        "--aux-address",
        "db-reserved=10.90.0.200",
        "backend",
    )
    tether("network", "ls", "--filter", "type=custom")
    tether(
        "network",
        "inspect",
        "backend",
        "--format",
        "{{.Name}}: internal={{.Internal}} {{json .IPAM.Config}}",
    )

    section("What that did in the kernel: one Linux bridge per network, carrying the gateway")
    on_host("ip -br -c addr show type bridge")

    section("Bad input gets Docker's words and changes nothing")
    tether("network", "create", "--subnet", "10.90.0.0/25", "overlapping", check=False)
    tether(
        "network",
        "create",
        "--subnet",
        "10.91.0.0/24",
        "--gateway",
        "10.92.0.1",
        "badgw",
        check=False,
    )
    tether("network", "rm", "bridge", check=False)

    section("Clean up")
    tether("network", "rm", "frontend", "backend")


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
