"""Finding tetherd's helper processes (the port relay, tether-crypt) by their command line.

Both outlive a tetherd restart on purpose and are adopted by the next one, which finds them
by the module they run and the exec-root they serve, whatever their control socket says.
"""

from __future__ import annotations

import os


def helper_pids(marker: str, exec_root: str) -> list[int]:
    """Live processes whose command line holds `marker` and `--exec-root EXEC_ROOT`."""
    want = f"--exec-root\0{exec_root}\0".encode()
    mark = marker.encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if mark in cmdline and want in cmdline:
            out.append(int(entry))
    return out
