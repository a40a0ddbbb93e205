"""examples/encrypted-overlay/exercise5.py (the lesson's exercise 5), run end to end.

Like the cluster demo it builds its own three nodes, so this takes no `host` fixture; it
checks what the exercise shows a user (the marker never on the underlay over the encrypted
network, in the clear over the plain one), and that it leaves nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_cluster_demo import REPO, assert_left_as_found, root_network

pytestmark = pytest.mark.integration

EXERCISE = os.path.join(REPO, "examples", "encrypted-overlay", "exercise5.py")


def test_exercise_5_shows_only_ciphertext_on_the_underlay_and_leaves_nothing() -> None:
    before = root_network()
    r = subprocess.run(
        [sys.executable, EXERCISE], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    line = next(x for x in out.splitlines() if "marker seen on the underlay" in x)
    assert "secure-net no" in line and "plain-net yes" in line, line
    # Sealed traffic did cross (it is not "no" for want of packets), and the rotation worked.
    assert "secure-net no (0 packets)" not in line
    assert "secure-net: key epoch 2" in out
    assert "Traceback" not in out
    assert_left_as_found(before, out)
