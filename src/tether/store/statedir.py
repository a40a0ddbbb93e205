"""Who may read tetherd's state: root only.

`--root` holds the store (every container's environment, secrets included), logs and exit
files, image trees and the containers' writable layers.  It is 0700 and what tetherd makes in
it is 0700 (directories) or 0600 (files), as Docker keeps /var/lib/docker 0710 and its
container directories 0710.  State left by an earlier version (tether.db was 0644) is
tightened at every start.

Three files are 0644 on purpose: the hosts, resolv.conf and hostname files that are bound
into each container.  A container sees them through a bind mount, by inode, so its processes
need no way into --root; but a process in the container running as another user must still
be able to read /etc/hosts, as in Docker, where they are 0644 too.  Their directory is 0700,
so no one on the host but root reaches them.

What is not touched: the inside of image trees and of the containers' layers (upper, work,
rootfs), whose modes are what the containers see (`/tmp` 1777, `/etc/passwd` 0644...).
"""

from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger("tether.store")

DIR_MODE = 0o700
FILE_MODE = 0o600
# Bound into containers (see above): readable inside, private by their directory.
CONTAINER_SHARED = frozenset({"hosts", "resolv.conf", "hostname"})
SHARED_MODE = 0o644
# Directories of a container that are filesystem trees, not tether's files.
CONTAINER_TREES = frozenset({"upper", "work", "rootfs"})


def _set(path: str, mode: int, st: os.stat_result) -> bool:
    if stat.S_IMODE(st.st_mode) == mode:
        return False
    os.chmod(path, mode)
    return True


def _entries(directory: str) -> list[tuple[str, os.stat_result]]:
    out: list[tuple[str, os.stat_result]] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in names:
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        out.append((name, st))
    return out


def secure(root: str, root_mode: int = DIR_MODE) -> int:
    """Tighten --root: returns how many modes had to change (0 once a start has done it).

    `root_mode` is 0711 only when --exec-root is --root too: the API socket's group must
    still get through to the socket (whose own mode, 0660, then decides)."""
    changed = 0
    st = os.lstat(root)
    changed += _set(root, root_mode, st)
    for name, st in _entries(root):
        path = os.path.join(root, name)
        if stat.S_ISDIR(st.st_mode):
            changed += _set(path, DIR_MODE, st)
        elif stat.S_ISREG(st.st_mode):
            changed += _set(path, FILE_MODE, st)
    containers = os.path.join(root, "containers")
    for cid, st in _entries(containers):
        if not stat.S_ISDIR(st.st_mode):
            continue
        cdir = os.path.join(containers, cid)
        changed += _set(cdir, DIR_MODE, st)
        for name, fst in _entries(cdir):
            if not stat.S_ISREG(fst.st_mode) or name in CONTAINER_TREES:
                continue
            mode = SHARED_MODE if name in CONTAINER_SHARED else FILE_MODE
            changed += _set(os.path.join(cdir, name), mode, fst)
    if changed:
        log.info("state directory tightened root=%s changed=%d", root, changed)
    return changed


def private_file(path: str) -> None:
    """Create `path` empty and 0600 if it is missing (a process that opens it later with
    O_CREAT and a wider mode keeps this one)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
