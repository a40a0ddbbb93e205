"""docker cp's archives of a running container: a short-lived helper chrooted into it.

    python -m tether.runtime.cparchive stat|get|put PID PATH   (put: the tar on stdin)

The helper chroots into /proc/PID/root, so every path, and every symlink in it, resolves
inside the container's own root (and its mounts): `/x -> /etc` names the container's /etc,
never the host's.  Everything it needs is imported before the chroot.  The first line on
stderr is the JSON stat of PATH (docker's X-Docker-Container-Path-Stat) or {"error": ...};
`get` writes the tar to stdout.
"""

from __future__ import annotations

import bz2  # noqa: F401 (tarfile imports these lazily: after the chroot they are gone)
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import stat
import sys
import tarfile
import time
import zlib  # noqa: F401

# Go's os.FileMode bits, which docker's CLI reads from the stat header.
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27


def go_mode(st: os.stat_result) -> int:
    mode = st.st_mode & 0o777
    if stat.S_ISDIR(st.st_mode):
        mode |= GO_DIR
    elif stat.S_ISLNK(st.st_mode):
        mode |= GO_SYMLINK
    return mode


def path_stat(path: str) -> dict[str, object]:
    st = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    return {
        "name": os.path.basename(path.rstrip("/")) or "/",
        "size": st.st_size,
        "mode": go_mode(st),
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
        "linkTarget": link,
    }


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(json.dumps({"error": message}) + "\n")
    return code


def main() -> int:
    op, pid, path = sys.argv[1], sys.argv[2], sys.argv[3]
    os.chroot(f"/proc/{pid}/root")
    os.chdir("/")
    path = "/" + path.lstrip("/")
    if op in ("stat", "get"):
        follow = path.endswith("/.") or path.endswith("/")
        try:
            info = path_stat(os.path.realpath(path) if follow else path)
        except OSError:
            return fail(f"Could not find the file {path} in container", 2)
        sys.stderr.write(json.dumps(info) + "\n")
        sys.stderr.flush()
        if op == "stat":
            return 0
        out = sys.stdout.buffer
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            base = path.rstrip("/")
            if base.endswith("/."):
                # "dir/." copies the directory's contents.
                base = base[:-2] or "/"
                for name in sorted(os.listdir(base)):
                    tar.add(os.path.join(base, name), arcname=name)
            else:
                tar.add(base or "/", arcname=os.path.basename(base) or "/")
        return 0
    if op == "put":
        try:
            st = os.stat(path)
        except OSError:
            return fail(f"Could not find the file {path} in container", 2)
        if not stat.S_ISDIR(st.st_mode):
            return fail("extraction point is not a directory", 3)
        sys.stderr.write(json.dumps(path_stat(path)) + "\n")
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
            # Inside the chroot nothing a member names can leave the container's root.
            tar.extractall(path, numeric_owner=True)
        return 0
    return fail(f"unknown operation {op}")


if __name__ == "__main__":
    sys.exit(main())
