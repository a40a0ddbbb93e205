"""Who can reach whom in a compose project: by name (DNS), then by address (routing, firewall).

Used by the demo (examples/demo.py) and by the tests that check the examples, so both print
and assert the same thing.  Every probe runs inside the source container with busybox tools:

    nslookup NAME                  does the embedded DNS at 127.0.0.11 know the name?
    nc -w 2 ADDRESS PORT           does a connection get through, and what answers?

A name that does not resolve is then tried by address, to tell "no DNS record" apart from
"blocked": on Docker's networks the two usually go together, and seeing both is the lesson.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
HTTP_GET = r"printf 'GET / HTTP/1.0\r\n\r\n'"


@dataclass(frozen=True)
class Target:
    service: str
    port: int
    http: bool = True


@dataclass
class Cell:
    resolved: str  # the address the name resolved to, "" when it did not
    reached: bool  # the connection got an answer from the service
    answer: str  # first line of the body (by name, or by address when the name failed)
    by_address: str = ""  # "", or what happened when the address was tried instead

    @property
    def summary(self) -> str:
        if self.resolved and self.reached:
            return f"ok  {self.answer}"
        if self.resolved:
            return f"no  resolves to {self.resolved}, then {self.answer}"
        return f"no  no DNS record; by address: {self.by_address}"


def _exec(
    cli: Cli, compose: Sequence[str], service: str, script: str
) -> subprocess.CompletedProcess[str]:
    return cli("compose", *compose, "exec", "-T", service, "sh", "-c", script)


def _resolve(cli: Cli, compose: Sequence[str], src: str, name: str) -> str:
    r = _exec(cli, compose, src, f"nslookup {name} 2>/dev/null")
    seen_name = False
    for line in r.stdout.splitlines():
        if line.startswith("Name:"):
            seen_name = True
        elif seen_name and line.startswith("Address:"):
            return line.split()[-1]
    return ""


def _connect(cli: Cli, compose: Sequence[str], src: str, addr: str, t: Target) -> tuple[bool, str]:
    send = HTTP_GET if t.http else "true"
    r = _exec(cli, compose, src, f"{send} | nc -w 2 {addr} {t.port} 2>&1")
    lines = [line.strip() for line in r.stdout.splitlines() if line.strip()]
    if any("timed out" in line for line in lines):
        return False, "timed out (dropped)"
    if any("refused" in line.lower() for line in lines):
        return False, "connection refused"
    if any("network is unreachable" in line.lower() for line in lines):
        # No route at all: a container only on internal networks has no default route.
        return False, "no route (unreachable)"
    body = lines[-1] if lines else ""
    return bool(body), body or "no answer"


def address_of(cli: Cli, container: str) -> str:
    """Any address the container has (for the by-address probe)."""
    r = cli(
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        container,
    )
    return (r.stdout.split() or [""])[0]


def probe(cli: Cli, compose: Sequence[str], project: str, src: str, t: Target) -> Cell:
    addr = _resolve(cli, compose, src, t.service)
    if addr:
        reached, answer = _connect(cli, compose, src, addr, t)
        return Cell(addr, reached, answer)
    target_addr = address_of(cli, f"{project}-{t.service}-1")
    reached, answer = _connect(cli, compose, src, target_addr, t)
    return Cell("", False, answer, f"{target_addr} {'answers' if reached else answer}")


def matrix(
    cli: Cli,
    compose: Sequence[str],
    project: str,
    sources: Sequence[str],
    targets: Sequence[Target],
) -> dict[tuple[str, str], Cell]:
    return {
        (src, t.service): probe(cli, compose, project, src, t)
        for src in sources
        for t in targets
        if src != t.service
    }


def render(
    cells: dict[tuple[str, str], Cell], sources: Sequence[str], targets: Sequence[Target]
) -> str:
    width = max(len(s) for s in sources) + 2
    out = []
    for src in sources:
        for t in targets:
            cell = cells.get((src, t.service))
            if cell is None:
                continue
            arrow = f"{src} -> {t.service}:{t.port}"
            out.append(f"  {arrow:<{width + 12}} {cell.summary}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
