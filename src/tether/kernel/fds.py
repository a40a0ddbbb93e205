"""Keep the descriptors below 1024 free: long-lived per-object ones live above it.

libnftables waits on its netlink socket with select(), and glibc aborts the whole process
when that socket's number is 1024 or more (FD_SETSIZE).  A daemon serving hundreds of
containers holds thousands of descriptors (DNS sockets, port reservations, pidfds); if those
took the low numbers, the next libnftables context would be born above 1024 and crash tetherd.
So every descriptor that lives as long as a container is moved up with F_DUPFD_CLOEXEC right
after it is made, and the low range stays for short-lived ones and for libraries.
"""

from __future__ import annotations

import fcntl
import os
import resource
import socket

FLOOR = 1024


def _base() -> int | None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FLOOR if soft > 2 * FLOOR else None


def lift(fd: int) -> int:
    """The same open file under a number >= 1024 (the old number is closed)."""
    base = _base()
    if base is None:
        return fd
    try:
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base)
    except OSError:
        return fd
    os.close(fd)
    return new


def lift_socket(s: socket.socket) -> socket.socket:
    timeout = s.gettimeout()
    fd = lift(s.detach())
    out = socket.socket(fileno=fd)
    out.settimeout(timeout)
    return out
