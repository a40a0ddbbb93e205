"""iptables' DOCKER-USER chain, for the commands Docker's documentation and lessons give
(`iptables -I DOCKER-USER -i eth0 ! -s 192.0.2.0/24 -j DROP`).

Where an `iptables` command exists (iptables-nft or legacy; ip6tables likewise), tetherd
makes in its network namespace what dockerd makes: a DOCKER-USER chain in the filter table
that FORWARD jumps to first, plus two MARK rules around that jump:

    -A FORWARD -j MARK --set-xmark SEEN/SEEN
    -A FORWARD -j DOCKER-USER
    -A FORWARD -j MARK --set-xmark RETURNED/RETURNED

iptables' FORWARD runs before tether's forward chain (render.FORWARD_PRIORITY), so a DROP
there is final as in Docker, and a packet that comes to tether with SEEN alone was ACCEPTed
by DOCKER-USER, which tether's forward chain then accepts without its isolation rules, as
Docker's FORWARD does.  RETURN, or no verdict, goes on to tether's rules.  Without the
chain, or once someone flushed FORWARD, no packet carries SEEN and nothing changes: the
marks can widen what passes only while the user's own chain is consulted.  The chain and
the user's rules in it are never flushed; the jump and the marks are put back at the top of
FORWARD at start when missing.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from tether.firewall.render import DOCKER_USER_RETURNED, DOCKER_USER_SEEN

log = logging.getLogger("tether.firewall")

CHAIN = "DOCKER-USER"


def _mark(bit: int) -> list[str]:
    return ["-j", "MARK", "--set-xmark", f"0x{bit:x}/0x{bit:x}"]


# The three rules, in the order they must head FORWARD.
RULES = [_mark(DOCKER_USER_SEEN), ["-j", CHAIN], _mark(DOCKER_USER_RETURNED)]


def ensure(commands: tuple[str, ...] = ("iptables", "ip6tables")) -> list[str]:
    """Make DOCKER-USER and FORWARD's three rules for each command present; returns the
    commands that were set up (nothing when no iptables is installed)."""
    done = []
    for name in commands:
        exe = shutil.which(name)
        if exe is None:
            continue
        try:
            _ensure(exe)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s: DOCKER-USER not set up: %s", name, exc)
            continue
        done.append(name)
    return done


def _run(exe: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, "-w", "5", "-t", "filter", *args], capture_output=True, text=True, timeout=15
    )


def _ensure(exe: str) -> None:
    if _run(exe, "-S", CHAIN).returncode != 0:
        r = _run(exe, "-N", CHAIN)
        if r.returncode != 0:
            raise OSError(r.stderr.strip())
    # dockerd ends an empty DOCKER-USER with RETURN; an explicit one changes nothing.
    if _run(exe, "-C", CHAIN, "-j", "RETURN").returncode != 0:
        _run(exe, "-A", CHAIN, "-j", "RETURN")
    listed = _run(exe, "-S", "FORWARD").stdout.splitlines()
    want = [f"-A FORWARD {' '.join(rule)}" for rule in RULES]
    head = [line for line in listed if line.startswith("-A FORWARD")][: len(want)]
    if head == want:
        return
    for rule in RULES:  # wherever they are, then at the top in order
        while _run(exe, "-C", "FORWARD", *rule).returncode == 0:
            _run(exe, "-D", "FORWARD", *rule)
    for i, rule in enumerate(RULES, start=1):
        r = _run(exe, "-I", "FORWARD", str(i), *rule)
        if r.returncode != 0:
            raise OSError(r.stderr.strip())
