"""The lesson's troubleshooting walk: six broken setups, what `tether explain` says of each,
the fix it names, and explain again once the fix is in.

    python3 examples/troubleshooting/walk.py [--keep] [--name NAME]

Runs on a host of its own (a network namespace NAME, default tether-trouble, with its own
tetherd, state in /var/lib/NAME and /run/NAME) and an "outside" namespace NAME-out at
198.51.100.10 standing in for the internet, so it never touches the machine's network; it
removes everything it made when it ends (--keep leaves it up).  Exit status 0 when every
broken case is explained as unreachable and every fixed one as reachable.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
OUTSIDE = "198.51.100.10"
WEB = "echo hello from $(hostname) > /www/index.html; exec httpd -f -p 80 -h /www"
LOCAL_WEB = "echo hello > /www/index.html; exec httpd -f -p 127.0.0.1:80 -h /www"


class Host:
    def __init__(self, name: str) -> None:
        self.name = name
        self.out = f"{name}-out"
        self.root = f"/var/lib/{name}"
        self.exec_root = f"/run/{name}"
        self.socket = f"{self.exec_root}/tether.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.outside: subprocess.Popen[bytes] | None = None

    def sh(self, cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=REPO)
        if check and r.returncode != 0:
            raise SystemExit(f"{RED}failed: {cmd}\n{r.stdout}{r.stderr}{RESET}")
        return r

    def tether(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [PY, "-m", "tether.cli.main", "-H", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if check and r.returncode != 0:
            raise SystemExit(f"{RED}failed: tether {' '.join(args)}\n{r.stdout}{r.stderr}{RESET}")
        return r

    def start(self) -> None:
        self.cleanup()
        self.sh(f"ip netns add {self.name} && ip netns exec {self.name} ip link set lo up")
        # The outside world: one machine on the host's "LAN", serving a page.
        self.sh(f"ip netns add {self.out} && ip netns exec {self.out} ip link set lo up")
        self.sh(f"ip link add lan0 netns {self.name} type veth peer name lan0 netns {self.out}")
        self.sh(
            f"ip netns exec {self.name} sh -c 'ip addr add 198.51.100.1/24 dev lan0 && "
            "ip link set lan0 up'"
        )
        self.sh(
            f"ip netns exec {self.out} sh -c 'ip addr add {OUTSIDE}/24 dev lan0 && "
            "ip link set lan0 up && ip route add default via 198.51.100.1'"
        )
        os.makedirs(f"{self.root}/www", exist_ok=True)
        with open(f"{self.root}/www/index.html", "w") as f:
            f.write("hello from outside\n")
        self.outside = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.out,
                "busybox",
                "httpd",
                "-f",
                "-p",
                "80",
                "-h",
                f"{self.root}/www",
            ]
        )
        # Names nobody knows go upstream: here an address nothing answers (never the
        # machine's own resolver).
        with open(f"{self.root}/resolv.conf", "w") as f:
            f.write("nameserver 192.0.2.53\n")
        with open(f"{self.root}/tetherd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{self.name}",
                    PY,
                    "-m",
                    "tether.daemon.main",
                    "--root",
                    self.root,
                    "--exec-root",
                    self.exec_root,
                    "--resolv-conf",
                    f"{self.root}/resolv.conf",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        for _ in range(400):
            if self.tether("version", check=False).returncode == 0:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"tetherd did not start; see {self.root}/tetherd.log")
        tar = f"{self.root}/busybox.tar"
        self.sh(f"{PY} -m tether.runtime.busybox {tar}")
        self.tether("import", "--change", 'CMD ["sh"]', tar, "busybox")
        os.unlink(tar)

    def cleanup(self) -> None:
        if os.path.exists(self.socket):
            for cid in self.tether("ps", "-aq", check=False).stdout.split():
                self.tether("rm", "-f", cid, check=False)
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None
        elif os.path.exists(f"{self.root}/tetherd.lock"):
            with open(f"{self.root}/tetherd.lock") as f:
                pid = f.read().strip()
            if pid.isdigit():
                subprocess.run(["kill", "-TERM", pid], capture_output=True)
                time.sleep(0.5)
        if self.outside is not None:
            self.outside.kill()
            self.outside.wait()
            self.outside = None
        else:
            subprocess.run(
                ["pkill", "-f", f"busybox httpd -f -p 80 -h {self.root}/www"], capture_output=True
            )
        subprocess.run(["umount", "-l", f"{self.exec_root}/netns"], capture_output=True)
        for ns in (self.name, self.out):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.exec_root, ignore_errors=True)


class Walk:
    def __init__(self, host: Host, fix: bool) -> None:
        self.h = host
        self.fix = fix
        self.failures: list[str] = []

    def say(self, title: str, text: str) -> None:
        print(f"\n{BOLD}{GREEN}== {title}{RESET}\n{DIM}{text}{RESET}")

    def run(self, *args: str) -> str:
        print(f"{BOLD}$ tether {' '.join(shlex.quote(a) for a in args)}{RESET}")
        r = self.h.tether(*args)
        if r.stdout.strip():
            print(r.stdout, end="")
        return r.stdout

    def on_host(self, cmd: str) -> str:
        print(f"{BOLD}# {cmd}{RESET}   {DIM}(on the host){RESET}")
        return self.h.sh(f"ip netns exec {self.h.name} sh -c '{cmd}'").stdout

    def explain(self, src: str, dst: str, port: str, want: bool, probe: bool = False) -> str:
        args = ["explain", *(["--probe"] if probe else []), src, dst, *([port] if port else [])]
        print(f"{BOLD}$ tether {' '.join(args)}{RESET}")
        r = self.h.tether(*args, check=False)
        print(r.stdout, end="")
        if r.returncode not in (0, 1):
            raise SystemExit(f"{RED}tether explain failed: {r.stderr}{RESET}")
        if (r.returncode == 0) != want:
            self.failures.append(
                f"explain {src} {dst} {port}: expected {'reachable' if want else 'not'}"
            )
        return r.stdout

    def setup(self) -> None:
        self.say("The setup", "four networks, nine containers, one machine outside")
        t = self.h.tether
        t("network", "create", "--subnet", "10.61.0.0/24", "front")
        t("network", "create", "--subnet", "10.62.0.0/24", "back")
        t("network", "create", "--internal", "--subnet", "10.63.0.0/24", "jobs")
        t(
            "network", "create", "--subnet", "10.64.0.0/24",
            "-o", "com.docker.network.bridge.enable_icc=false", "quiet",
        )  # fmt: skip
        for name, net, cmd in (
            ("client", "front", "sleep 36000"),
            ("web", "front", WEB),
            ("api", "front", WEB),
            ("db", "back", WEB),
            ("worker", "jobs", "sleep 36000"),
            ("alpha", "quiet", WEB),
            ("beta", "quiet", "sleep 36000"),
            ("cache", "front", LOCAL_WEB),
            ("app", "front", "sleep 36000"),
        ):
            t("run", "-d", "--name", name, "--network", net, "busybox", "sh", "-c", cmd)
        self.run("ps", "--format", "{{.Names}}\t{{.Networks}}")

    def case_wrong_network(self) -> None:
        self.say("1. The wrong network", "api is on front, db on back: api cannot even resolve db")
        self.explain("api", "db", "80", False)
        if self.fix:
            self.run("network", "connect", "back", "api")
            self.explain("api", "db", "80", True, probe=True)

    def case_internal(self) -> None:
        self.say(
            "2. An internal network and the outside",
            f"worker is only on jobs (--internal); {OUTSIDE} is a web server outside",
        )
        self.explain("worker", OUTSIDE, "80", False)
        if self.fix:
            self.run("network", "connect", "front", "worker")
            self.explain("worker", OUTSIDE, "80", True, probe=True)

    def case_icc(self) -> None:
        self.say("3. ICC off", "alpha and beta share quiet, created with enable_icc=false")
        self.explain("beta", "alpha", "80", False)
        if self.fix:
            self.run("rm", "-f", "alpha", "beta")
            self.run("network", "rm", "quiet")
            self.run("network", "create", "--subnet", "10.64.0.0/24", "quiet")
            self.h.tether(
                "run", "-d", "--name", "alpha", "--network", "quiet", "busybox", "sh", "-c", WEB
            )
            self.h.tether(
                "run", "-d", "--name", "beta", "--network", "quiet", "busybox", "sleep", "36000"
            )
            self.explain("beta", "alpha", "80", True, probe=True)

    def case_user_chain(self) -> None:
        self.say(
            "4. A drop in your own chain",
            "a rule in `user` (DOCKER-USER's twin) drops client -> web:80",
        )
        ip = {
            n: self.h.tether(
                "inspect", "-f", '{{(index .NetworkSettings.Networks "front").IPAddress}}', n
            ).stdout.strip()
            for n in ("client", "web")
        }
        self.on_host(
            f"nft add rule inet tether user ip saddr {ip['client']} ip daddr {ip['web']} "
            "tcp dport 80 drop"
        )
        out = self.explain("client", "web", "80", False)
        if self.fix:
            fix = next(
                line.split("fix: ", 1)[1]
                for line in out.splitlines()
                if "fix: nft delete rule" in line
            )
            self.on_host(fix)
            self.explain("client", "web", "80", True, probe=True)

    def case_loopback(self) -> None:
        self.say(
            "5. Bound to 127.0.0.1", "cache's server listens on 127.0.0.1:80 inside its container"
        )
        self.explain("client", "cache", "80", False)
        if self.fix:
            self.run("rm", "-f", "cache")
            self.h.tether(
                "run", "-d", "--name", "cache", "--network", "front", "busybox", "sh", "-c", WEB
            )
            self.explain("client", "cache", "80", True, probe=True)

    def case_not_listening(self) -> None:
        self.say("6. Nothing listening", "app runs, but its server was never started")
        self.explain("client", "app", "80", False)
        if self.fix:
            self.run("exec", "-d", "app", "sh", "-c", WEB)
            for _ in range(50):  # the server takes a moment to bind
                if (
                    "listens on"
                    in self.h.tether("explain", "client", "app", "80", check=False).stdout
                ):
                    break
                time.sleep(0.1)
            self.explain("client", "app", "80", True, probe=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--keep", action="store_true", help="leave the host running at the end")
    p.add_argument("--name", default="tether-trouble", help="the host's namespace name")
    p.add_argument("--no-fix", action="store_true", help="only explain, fix nothing")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("the walk needs root", file=sys.stderr)
        return 1
    host = Host(args.name)
    host.start()
    walk = Walk(host, fix=not args.no_fix)
    try:
        walk.setup()
        walk.case_wrong_network()
        walk.case_internal()
        walk.case_icc()
        walk.case_user_chain()
        walk.case_loopback()
        walk.case_not_listening()
    finally:
        if args.keep:
            print(f"\nThe host is still running: TETHER_HOST=unix://{host.socket} tether ps")
        else:
            host.cleanup()
    if walk.failures:
        print(f"\n{RED}unexpected verdicts:{RESET}\n" + "\n".join(walk.failures))
        return 1
    print(f"\n{GREEN}every case explained, every fix confirmed by a real packet{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
