"""Each container's cgroup: where Docker's device rules are enforced (tether-shim attaches them).

On cgroup2 the device controller is a BPF program attached to a cgroup; tether-shim makes the
container's cgroup, `<cgroup2 mount>/tether/<container id>` (as Docker's cgroupfs driver makes
`/docker/<id>`), attaches runc's default device allow-list to it unless the container is
privileged, and puts the container's pid 1 and every exec in it (shim.c, "Devices").  The shim
removes it when the container ends; tetherd removes what a killed shim left.

A host with no cgroup2 hierarchy at all cannot confine devices as Docker does; containers are
then refused (privileged ones excepted, shim.start), never run with the host's devices open.
"""

from __future__ import annotations

import functools
import os

PARENT = "tether"


@functools.cache
def cgroup2_mount() -> str | None:
    """Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a hybrid
    host), or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                fstype = fields[fields.index("-") + 1]
                if fstype == "cgroup2":
                    return fields[4]
    except (OSError, ValueError, IndexError):
        pass
    return None


def path_for(container_id: str) -> str | None:
    """The container's cgroup directory (it may not exist), or None without cgroup2."""
    root = cgroup2_mount()
    return os.path.join(root, PARENT, container_id) if root else None


def existing(container_id: str) -> str | None:
    """The container's cgroup if it has one now (containers started before tether made one
    have none)."""
    path = path_for(container_id)
    return path if path is not None and os.path.isdir(path) else None


def remove(container_id: str) -> None:
    """Remove the container's cgroup if it is there and empty (its shim normally has)."""
    path = path_for(container_id)
    if path is None:
        return
    try:
        os.rmdir(path)
    except OSError:  # gone already, or its last processes are still being reaped
        pass
