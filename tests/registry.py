"""A real registry for the image tests: Debian's docker-registry (distribution/registry v2),
in a network namespace of its own, with htpasswd or token auth when asked.

    reg = Registry(auth="htpasswd", users={"alice": "secret"})
    reg.start()
    reg.connect(host)              # a veth from the registry's bridge into a namespace-host
    host.ok("push", f"{reg.addr}/busybox")
    reg.stop()

Topology: the registry's namespace has a bridge (10.251.0.1/24) and listens on
10.251.0.1:5000; every connected namespace-host gets 10.251.0.N on a veth into that bridge,
so every host names the same image `10.251.0.1:5000/x`.  Nothing is routed anywhere else.
A token server (tests/tokenserver.py) runs beside the registry on :5001 when auth="token".
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from nshost import NETNS_DIR, NamespaceHost, delete_netns, make_netns, sh

HERE = os.path.dirname(os.path.abspath(__file__))
SUBNET = "10.251.0"
REGISTRY_IP = f"{SUBNET}.1"


class Registry:
    def __init__(
        self,
        auth: str = "",  # "" | "htpasswd" | "token"
        users: dict[str, str] | None = None,
        tls: bool = False,
        port: int = 5000,
    ) -> None:
        self.auth = auth
        self.users = dict(users or {})
        self.tls = tls
        self.port = port
        self.netns = make_netns("tr")
        self.dir = tempfile.mkdtemp(prefix=f"tether-{self.netns}-", dir="/tmp")
        self.data = os.path.join(self.dir, "data")
        self.proc: subprocess.Popen[bytes] | None = None
        self.token_proc: subprocess.Popen[bytes] | None = None
        self.next_ip = 2
        self.peers: list[str] = []
        sh(
            f"ip netns exec {self.netns} sh -c 'ip link add br0 type bridge && "
            f"ip addr add {REGISTRY_IP}/24 dev br0 && ip link set br0 up'"
        )

    @property
    def addr(self) -> str:
        return f"{REGISTRY_IP}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.addr}"

    def blob_path(self, digest: str) -> str:
        hexpart = digest.removeprefix("sha256:")
        return os.path.join(
            self.data, "docker/registry/v2/blobs/sha256", hexpart[:2], hexpart, "data"
        )

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.data}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {REGISTRY_IP}:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.tls:
            self.cert, self.key = _self_signed(self.dir, "registry", REGISTRY_IP)
            lines += ["  tls:", f"    certificate: {self.cert}", f"    key: {self.key}"]
        if self.auth == "htpasswd":
            path = os.path.join(self.dir, "htpasswd")
            with open(path, "w") as f:
                for user, password in self.users.items():
                    r = sh(f"htpasswd -Bbn {user} {password}")
                    f.write(r.stdout.strip() + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: tether-test", f"    path: {path}"]
        elif self.auth == "token":
            self.token_cert, self.token_key = _self_signed(self.dir, "token", "token-issuer")
            lines += [
                "auth:",
                "  token:",
                f"    realm: http://{REGISTRY_IP}:5001/token",
                "    service: tether-test-registry",
                "    issuer: tether-test-issuer",
                f"    rootcertbundle: {self.token_cert}",
            ]
        path = os.path.join(self.dir, "config.yml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, wait: float = 15) -> None:
        config = self._config()
        log = open(os.path.join(self.dir, "registry.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net={NETNS_DIR}/{self.netns}",
                "--",
                "docker-registry",
                "serve",
                config,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        if self.auth == "token":
            users = ",".join(f"{u}:{p}" for u, p in self.users.items())
            tlog = open(os.path.join(self.dir, "token.log"), "ab")  # noqa: SIM115
            self.token_proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net={NETNS_DIR}/{self.netns}",
                    "--",
                    sys.executable,
                    os.path.join(HERE, "tokenserver.py"),
                    REGISTRY_IP,
                    "5001",
                    self.token_key,
                    self.token_cert,
                    users,
                    "600",
                ],
                stdout=tlog,
                stderr=tlog,
                start_new_session=True,
            )
            tlog.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited:\n{self.log()}")
            scheme = "https" if self.tls else "http"
            r = sh(
                f"ip netns exec {self.netns} curl -sk -o /dev/null -w '%{{http_code}}' "
                f"--max-time 2 {scheme}://{self.addr}/v2/",
                check=False,
            )
            token_ok = (
                self.auth != "token"
                or sh(
                    f"ip netns exec {self.netns} curl -s -o /dev/null --max-time 2 "
                    f"http://{REGISTRY_IP}:5001/ready",
                    check=False,
                ).returncode
                == 0
            )
            if r.stdout in ("200", "401") and token_ok:
                return
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start:\n{self.log()}")

    def log(self) -> str:
        with contextlib.suppress(OSError), open(os.path.join(self.dir, "registry.log")) as f:
            return f.read()[-4000:]
        return ""

    def connect(self, host: NamespaceHost) -> str:
        """A veth from the registry's bridge into `host`'s namespace; the host's address."""
        ip = f"{SUBNET}.{self.next_ip}"
        self.next_ip += 1
        a, b = f"rg{secrets.token_hex(3)}", f"rh{secrets.token_hex(3)}"
        sh(f"ip link add {a} netns {self.netns} type veth peer name {b} netns {host.netns}")
        sh(f"ip netns exec {self.netns} sh -c 'ip link set {a} master br0 && ip link set {a} up'")
        host.sh(f"ip addr add {ip}/24 dev {b} && ip link set {b} up")
        self.peers.append(host.netns)
        return ip

    def stop(self) -> None:
        for p in (self.proc, self.token_proc):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.proc = self.token_proc = None
        delete_netns(self.netns)
        shutil.rmtree(self.dir, ignore_errors=True)


def _self_signed(d: str, name: str, cn: str) -> tuple[str, str]:
    cert, key = os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")
    san = f"IP:{cn}" if cn[0].isdigit() else f"DNS:{cn}"
    sh(
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={cn} "
        f"-addext subjectAltName={san} -keyout {key} -out {cert}"
    )
    return cert, key


@contextlib.contextmanager
def registry(**kw: Any) -> Any:
    reg = Registry(**kw)
    try:
        reg.start()
        yield reg
    except BaseException:
        sys.stderr.write(f"\n--- registry log ---\n{reg.log()}\n")
        raise
    finally:
        reg.stop()
