"""The troubleshooting walk (examples/troubleshooting/walk.py), run end to end: each broken
case explained with its cause and its fix, each fix confirmed by a real packet, nothing left."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALK = os.path.join(REPO, "examples", "troubleshooting", "walk.py")


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_the_walk_names_each_cause_and_fix_and_leaves_nothing() -> None:
    name = f"tt-walk-{secrets.token_hex(3)}"
    r = subprocess.run(
        [sys.executable, WALK, "--name", name], capture_output=True, text=True, timeout=600
    )
    out = _plain(r.stdout)
    assert r.returncode == 0, out + r.stderr
    cases = out.split("\n== ")[1:]
    assert [c.split("\n", 1)[0] for c in cases] == [
        "The setup",
        "1. The wrong network",
        "2. An internal network and the outside",
        "3. ICC off",
        "4. A drop in your own chain",
        "5. Bound to 127.0.0.1",
        "6. Nothing listening",
    ]
    wrong, internal, icc, user, loopback, idle = cases[1:]
    # 1: the name, the missing shared network, the isolation rule; the connect that fixes it.
    assert '"db" does not resolve from api' in wrong
    assert "api and db share no network" in wrong
    assert "fix: tether network connect back api" in wrong
    assert re.search(r"at: nft rule inet tether net_\w+_out handle \d+", wrong)
    # 2: no way out of an internal network.
    assert "worker has no default route: its networks are --internal (jobs)" in internal
    assert "fix: connect the container to a second, non-internal network" in internal
    # 3: ICC off, its rule.
    assert "quiet: ICC is off" in icc and 'oifname "tb-' in icc
    assert "fix: recreate the network without enable_icc=false" in icc
    # 4: the user's own rule, by handle, and how to delete it.
    handle = re.search(r"at: nft rule inet tether user handle (\d+)", user)
    assert handle is not None
    assert f"fix: nft delete rule inet tether user handle {handle.group(1)}" in user
    # 5 and 6: what listens inside the container.
    assert "cache listens on 127.0.0.1:80/tcp only" in loopback
    assert "make the server listen on 0.0.0.0:80" in loopback
    assert "nothing in app listens on 80/tcp" in idle
    # Each fix, confirmed by a real packet.
    for case in cases[1:]:
        assert case.count("NOT REACHABLE:") == 1 and case.count("REACHABLE:") == 2
        assert "confirms the verdict" in case and "CONTRADICTION" not in case
    assert "every case explained, every fix confirmed by a real packet" in out
    # Nothing left: its namespaces, state and daemon are gone.
    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    assert not os.path.exists(f"/var/lib/{name}") and not os.path.exists(f"/run/{name}")
