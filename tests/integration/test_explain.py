"""tether explain against the kernel: its static verdict equals what real packets do, for every
ordered pair of containers of generated topologies (networks x internal x ICC x user-chain
rules x published ports); and each kind of reason names its object and its fix."""

from __future__ import annotations

import ctypes
import json
import os
import random
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

WEB = ["sh", "-c", "echo hello > /www/index.html && exec httpd -f -p 80 -h /www"]
LOCAL_WEB = ["sh", "-c", "echo hello > /www/index.html && exec httpd -f -p 127.0.0.1:80 -h /www"]
IDLE = ["sleep", "3600"]
PROBE_TIMEOUT = 1.0

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _in_netns(path: str, fn: Any) -> Any:
    """fn() in a thread that entered the network namespace at `path` (and ends with it)."""
    box: dict[str, Any] = {}

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        try:
            box["v"] = fn()
        except Exception as exc:
            box["e"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    if "e" in box:
        raise box["e"]
    return box.get("v")


def tcp_ok(netns: str, ip: str, port: int) -> bool:
    import socket

    def connect() -> bool:
        s = socket.socket()
        s.settimeout(PROBE_TIMEOUT)
        try:
            return s.connect_ex((ip, port)) == 0
        except OSError:
            return False
        finally:
            s.close()

    return bool(_in_netns(netns, connect))


def ping_ok(netns: str, ip: str) -> bool:
    r = subprocess.run(
        ["nsenter", f"--net={netns}", "busybox", "ping", "-c", "1", "-W", "1", ip],
        capture_output=True,
        timeout=10,
    )
    return r.returncode == 0


def reaches(netns: str, target: str, port: int | None) -> bool:
    """One real probe: TCP connect to ip:port, or one ICMP echo to ip."""
    if port is None:
        return ping_ok(netns, target)
    ip, _, p = target.rpartition(":")
    return tcp_ok(netns, ip, int(p))


def explain(
    h: NamespaceHost, a: str, b: str, port: str = "", probe: bool = False
) -> dict[str, Any]:
    data: dict[str, Any] = h.api.post(
        "/tether/explain", {"From": a, "To": b, "Port": port, "Probe": probe}
    )
    return data


def reasons(x: dict[str, Any], step: str) -> list[dict[str, Any]]:
    return [r for r in x["Reasons"] if r["Step"] == step]


# -- the generated topologies ------------------------------------------------------------------


class Topology:
    def __init__(self, h: NamespaceHost, seed: int) -> None:
        self.h = h
        self.rng = random.Random(seed)
        self.nets: dict[str, dict[str, Any]] = {}
        self.ctrs: dict[str, dict[str, Any]] = {}
        self.rules: list[str] = []
        self.seed = seed

    def build(self) -> None:
        h, rng = self.h, self.rng
        for i in range(3):
            name = f"n{i}"
            internal = i > 0 and rng.random() < 0.4
            icc = rng.random() < 0.65
            args = ["network", "create", "--subnet", f"10.{70 + i}.{self.seed}.0/24"]
            if internal:
                args.append("--internal")
            if not icc:
                args += ["-o", "com.docker.network.bridge.enable_icc=false"]
            h.ok(*args, name)
            self.nets[name] = {"internal": internal, "icc": icc}
        port = 18000
        for i in range(6):
            name = f"c{i}"
            nets = [f"n{rng.randrange(3)}"]
            if rng.random() < 0.45:
                nets.append(rng.choice([n for n in self.nets if n != nets[0]]))
            role = rng.choices(["web", "local", "idle"], [0.7, 0.12, 0.18])[0]
            cmd = {"web": WEB, "local": LOCAL_WEB, "idle": IDLE}[role]
            args = ["run", "-d", "--name", name, "--network", nets[0]]
            if not self.nets[nets[0]]["internal"] and rng.random() < 0.4:
                port += 1
                args += ["-p", f"{port}:80"]
            h.ok(*args, "busybox", *cmd)
            for extra in nets[1:]:
                h.ok("network", "connect", extra, name)
            self.ctrs[name] = {"nets": nets, "role": role}
        for name, c in self.ctrs.items():
            info = h.api.get(f"/containers/{name}/json")
            c["key"] = info["NetworkSettings"]["SandboxKey"]
            c["ips"] = {n: v["IPAddress"] for n, v in info["NetworkSettings"]["Networks"].items()}
            c["gw"] = {n: v["Gateway"] for n, v in info["NetworkSettings"]["Networks"].items()}
            c["ports"] = [
                int(b["HostPort"])
                for b in (info["NetworkSettings"]["Ports"] or {}).get("80/tcp") or []
                if b["HostIp"] == "0.0.0.0"
            ]
        self._user_rules()

    def _user_rules(self) -> None:
        rng, names = self.rng, list(self.ctrs)
        pairs = [
            (a, b, n)
            for a in names
            for b in names
            if a != b
            for n in self.ctrs[a]["ips"]
            if n in self.ctrs[b]["ips"]
        ]
        candidates = []
        if pairs:
            a, b, n = rng.choice(pairs)
            candidates.append(
                f"ip saddr {self.ctrs[a]['ips'][n]} ip daddr {self.ctrs[b]['ips'][n]} drop"
            )
        b = rng.choice(names)
        candidates.append(
            f"ip daddr {rng.choice(list(self.ctrs[b]['ips'].values()))} tcp dport 80 drop"
        )
        a, b = rng.sample(names, 2)
        candidates.append(
            f"ip saddr {rng.choice(list(self.ctrs[a]['ips'].values()))} "
            f"ip daddr {rng.choice(list(self.ctrs[b]['ips'].values()))} accept"
        )
        if rng.random() < 0.5:
            candidates.append("ct state established,related accept")
        rng.shuffle(candidates)
        self.rules = candidates[: rng.randint(1, len(candidates))]
        for rule in self.rules:
            self.h.sh(f"nft add rule inet tether user {rule}")

    def fallbacks(self, a: str, b: str, port: int | None) -> list[str]:
        """Every address at which A might reach B: B's addresses, and for a port, B's
        published ports at A's gateway address (what the host answers on)."""
        out = [f"{ip}:{port}" if port else ip for ip in self.ctrs[b]["ips"].values()]
        if port is not None:
            gws = [g for g in self.ctrs[a]["gw"].values() if g]
            for hp in self.ctrs[b]["ports"]:
                out += [f"{g}:{hp}" for g in gws]
        return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_static_verdicts_equal_real_packets(bhost: NamespaceHost, seed: int) -> None:
    h = bhost
    topo = Topology(h, seed)
    topo.build()
    names = list(topo.ctrs)
    questions = [(a, b, p) for a in names for b in names if a != b for p in (80, None)]
    answers = {q: explain(h, q[0], q[1], str(q[2]) if q[2] else "") for q in questions}
    for (a, b, p), x in answers.items():
        assert not any("MISMATCH" in r["Text"] for r in x["Reasons"]), (a, b, p, x)
    # The probes: the target explain followed when it says reachable; every address and
    # published port of B when it says not (none may answer).
    jobs: list[tuple[tuple[str, str, int | None], str]] = []
    for q, x in answers.items():
        targets = [x["Target"]] if x["Reachable"] else topo.fallbacks(*q)
        jobs += [(q, t) for t in targets]
    assert 60 <= len(jobs) <= 400  # a few hundred probes at most, each bounded
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda j: reaches(topo.ctrs[j[0][0]]["key"], j[1], j[0][2]), jobs))
    wrong = []
    for ((a, b, p), target), real in zip(jobs, results, strict=True):
        x = answers[(a, b, p)]
        if real != x["Reachable"]:
            wrong.append(
                f"{a} -> {b}:{p or 'icmp'} at {target}: explain says "
                f"{'reachable' if x['Reachable'] else 'not reachable'}, the probe "
                f"{'got through' if real else 'did not'}\n"
                + "\n".join(f"   {r['Step']} {r['Ok']}: {r['Text']}" for r in x["Reasons"])
            )
    context = (
        f"seed {seed}: networks {json.dumps(topo.nets)}\ncontainers "
        f"{json.dumps({n: {k: v for k, v in c.items() if k != 'key'} for n, c in topo.ctrs.items()})}"
        f"\nuser rules: {topo.rules}\n"
    )
    assert not wrong, context + "\n".join(wrong)
    # Both outcomes occur (a topology where everything or nothing gets through tests little).
    verdicts = {x["Reachable"] for x in answers.values()}
    assert verdicts == {True, False}, context
    # explain's own probe agrees with its static verdict.
    for q in questions[:: max(1, len(questions) // 8)]:
        x = explain(h, q[0], q[1], str(q[2]) if q[2] else "", probe=True)
        assert not x["Contradiction"], (q, x)
        assert x["Probe"] in (x["Static"], None), (q, x)


# -- each kind of reason ---------------------------------------------------------------------


def test_reasons_name_their_object_and_fix(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.81.0.0/24", "app")
    h.ok("network", "create", "--subnet", "10.82.0.0/24", "other")
    h.ok("run", "-d", "--name", "web", "--network", "app", "busybox", *WEB)
    h.ok("run", "-d", "--name", "client", "--network", "app", "busybox", *IDLE)
    h.ok("run", "-d", "--name", "far", "--network", "other", "busybox", *IDLE)
    # Reachable: every step says so, and the policy names tether's live rule by handle.
    x = explain(h, "client", "web", "80")
    assert x["Reachable"] and x["Target"] == f"{h.ip_of('web', 'app')}:80"
    assert [r["Step"] for r in x["Reasons"]] == ["names", "path", "policy", "port"]
    policy = reasons(x, "policy")[0]
    handle = int(policy["Object"].rsplit(" ", 1)[1])
    listing = h.sh("nft -a list table inet tether").stdout
    assert f"# handle {handle}" in listing and "ICC is on" in policy["Text"]
    # A typo: the closest name.
    x = explain(h, "client", "wbe", "80")
    assert not x["Reachable"] and 'did you mean "web"' in reasons(x, "names")[0]["Text"]
    # No shared network: isolation, with the connect that fixes it.
    x = explain(h, "far", "web", "80")
    assert not x["Reachable"]
    assert "share no network" in reasons(x, "path")[0]["Text"]
    assert reasons(x, "path")[0]["Fix"] == "tether network connect app far"
    assert "does not resolve" in reasons(x, "names")[0]["Text"]
    # A drop in the user chain: that rule, by handle, and how to delete it.
    client, web = h.ip_of("client", "app"), h.ip_of("web", "app")
    h.sh(f"nft add rule inet tether user ip saddr {client} ip daddr {web} tcp dport 80 drop")
    user = h.sh("nft -a list chain inet tether user").stdout
    rule_handle = int(user.split("# handle")[-1].split()[0])
    x = explain(h, "client", "web", "80", probe=True)
    assert not x["Reachable"] and not x["Contradiction"]
    p = reasons(x, "policy")[0]
    assert p["Object"] == f"nft rule inet tether user handle {rule_handle}" and not p["Ok"]
    assert p["Fix"] == f"nft delete rule inet tether user handle {rule_handle}"
    assert explain(h, "client", "web")["Reachable"]  # ICMP: the rule is for TCP 80 only
    h.sh(f"nft delete rule inet tether user handle {rule_handle}")
    # The CLI: one verdict line, numbered reasons, exit code 0 / 1.
    r = h.cli("explain", "client", "web", "80")
    assert r.returncode == 0 and r.stdout.startswith("REACHABLE: client reaches web on 80/tcp")
    assert " 3. [ok] policy: " in r.stdout
    r = h.cli("explain", "far", "web", "80")
    assert r.returncode == 1 and r.stdout.startswith("NOT REACHABLE: far cannot reach web")
    assert "fix: tether network connect app far" in r.stdout
    r = h.cli("explain", "--format", "json", "client", "web", "80")
    assert r.returncode == 0 and json.loads(r.stdout)["Reachable"] is True


def test_a_changed_table_is_a_mismatch_and_the_probe_a_contradiction(bhost: NamespaceHost) -> None:
    """Someone rewrote tether's own chain: explain says the kernel disagrees with the model,
    and its probe contradicts the static verdict, loudly."""
    h = bhost
    h.ok("network", "create", "--subnet", "10.83.0.0/24", "app")
    h.ok("run", "-d", "--name", "web", "--network", "app", "busybox", *WEB)
    h.ok("run", "-d", "--name", "client", "--network", "app", "busybox", *IDLE)
    key = h.api.get("/networks/app")["Id"][:12]
    h.sh(f"nft insert rule inet tether net_{key}_out drop")
    x = explain(h, "client", "web", "80", probe=True)
    assert x["Static"] is True and x["Probe"] is False and x["Contradiction"]
    assert any("MISMATCH" in r["Text"] for r in reasons(x, "policy"))
    assert "CONTRADICTION" in reasons(x, "probe")[0]["Text"]
    r = h.cli("explain", "--probe", "client", "web", "80")
    assert r.returncode == 1 and "CONTRADICTS" in r.stdout


def test_bad_questions_are_one_line_errors(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "one", "busybox", *IDLE)
    r = h.cli("explain", "nosuch", "one")
    assert r.returncode == 1
    assert r.stderr == "Error response from daemon: No such container: nosuch\n"
    r = h.cli("explain", "one", "one", "80/icmp")
    assert r.returncode == 1 and r.stderr == "Error response from daemon: invalid proto: icmp\n"
    r = h.cli("explain", "one", "one", "99999")
    assert r.stderr == "Error response from daemon: invalid port: 99999\n"
    r = h.cli("explain", "one")
    assert r.returncode == 1 and "requires at least 2 arguments" in r.stderr
    with pytest.raises(Exception, match="source and a destination"):
        h.api.post("/tether/explain", {"From": "", "To": "one"})


def test_macvlan_is_explained_without_the_host_firewall(bhost: NamespaceHost) -> None:
    """macvlan frames never cross the host's IP stack: explain says so, and that the host
    cannot reach its own macvlan containers; the probes agree."""
    h = bhost
    h.ok("network", "create", "-d", "macvlan", "--subnet", "10.84.0.0/24", "lan")
    h.ok("run", "-d", "--name", "m1", "--network", "lan", "busybox", *WEB)
    h.ok("run", "-d", "--name", "m2", "--network", "lan", "busybox", *IDLE)
    x = explain(h, "m2", "m1", "80", probe=True)
    assert x["Reachable"] and x["Probe"] is True and not x["Contradiction"], x
    assert "no nft rule of the host" in reasons(x, "policy")[0]["Text"]
    x = explain(h, "host", "m1", "80", probe=True)
    assert not x["Reachable"] and x["Probe"] is False, x
    assert "cannot reach its own macvlan containers" in reasons(x, "path")[0]["Text"]
