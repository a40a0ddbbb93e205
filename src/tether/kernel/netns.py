"""Network namespaces as files: create, enter for a moment, delete.

A sandbox's namespace is bind-mounted onto a file under the exec-root so that it lives on
without any process in it (a stopped daemon, a container between exec's).  Everything here
runs in the calling thread only: setns(2) changes the namespace of one thread, and we always
switch back before returning, so the daemon's event loop never runs in a foreign namespace.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from tether.kernel import libc


def prepare_dir(path: str) -> None:
    """Make the netns directory a shared mount point of its own, like `ip netns` does.

    Containers copy the mount table when they get their own mount namespace; with the
    directory shared (and containers' mounts slaves of it), unmounting a sandbox file here
    also unmounts every copy, so no container can keep another's namespace alive.
    """
    os.makedirs(path, exist_ok=True)
    if _is_mount_point(path):
        return
    libc.mount(path, path, None, libc.MS_BIND | libc.MS_REC, None)
    libc.mount(None, path, None, libc.MS_SHARED | libc.MS_REC, None)


def release_dir(path: str) -> None:
    if _is_mount_point(path):
        try:
            libc.umount(path, libc.MNT_DETACH)
        except OSError:
            pass


def _is_mount_point(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4] == real:
                return True
    return False


@contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with this thread inside the namespace at `path`."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(target, libc.CLONE_NEWNET)
        try:
            yield
        finally:
            libc.setns(home, libc.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def create(path: str) -> None:
    """A new, empty network namespace bound to `path` (which must not exist yet)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.unshare(libc.CLONE_NEWNET)
        try:
            libc.mount("/proc/thread-self/ns/net", path, None, libc.MS_BIND, None)
        finally:
            libc.setns(home, libc.CLONE_NEWNET)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    finally:
        os.close(home)


def delete(path: str) -> None:
    """Unbind and remove; the kernel frees the namespace once nothing else holds it."""
    try:
        libc.umount(path, libc.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (libc.EINVAL, libc.ENOENT):
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def socket_in(path: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket that belongs to the namespace at `path` for the rest of its life."""
    with entered(path):
        return socket.socket(family, kind, proto)


def same_as_self(path: str) -> bool:
    st = os.stat(path)
    me = os.stat("/proc/self/ns/net")
    return (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino)
