"""nftables transactions: libnftables in-process, or the `nft` binary when it is missing.

libnftables is the library `nft` itself is built on; calling it through ctypes runs the same
parser and the same single netlink transaction, without a process per change (that fork and
exec was most of the ~7 ms an `nft add element` took here).  Every call is one atomic batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import socket
import subprocess
import threading

from tether.errors import SystemFailure


class NftError(SystemFailure):
    pass


class Nft:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self._ctx: int | None = None
        path = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            return
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        ctx = new_ctx(lib)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        self._lib, self._ctx = lib, ctx

    @property
    def in_process(self) -> bool:
        return self._lib is not None

    def run(self, text: str, json_output: bool = False) -> str:
        """Run a batch; raise NftError with nft's own message on failure."""
        if self._lib is None or self._ctx is None:
            args = ["nft", "-j", "-f", "-"] if json_output else ["nft", "-f", "-"]
            r = subprocess.run(args, input=text, capture_output=True, text=True)
            if r.returncode != 0:
                raise NftError(f"nftables: {r.stderr.strip()}")
            return r.stdout
        with self._lock:
            self._lib.nft_ctx_output_set_flags(
                self._ctx, 1 << 4 if json_output else 0
            )  # NFT_CTX_OUTPUT_JSON
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise NftError(f"nftables: {err.strip()}")
        return out


# NETLINK_NETFILTER (linux/netlink.h): the protocol of libnftables' socket to the kernel.
_NETLINK_NETFILTER = 12
# One context is made at a time, so no other context's socket shows among the new numbers.
_CTX_LOCK = threading.Lock()


def new_ctx(lib: ctypes.CDLL) -> int:
    """nft_ctx_new, with the netlink socket it opens made close-on-exec.

    libmnl opens that socket (NETLINK_NETFILTER) without SOCK_CLOEXEC; left so, it would pass
    through every posix_spawn (tether-shim, the port relay) into containers, letting one with
    NET_ADMIN read and rewrite the host's `inet tether` table.  The library has no API for
    its descriptor.  The kernel gives a new descriptor the lowest free number, so what
    nft_ctx_new opened lies between the lowest free number before the call and the lowest
    free one after it: only those few numbers are looked at, not all of /proc/self/fd (this
    runs at every container start, for the sandbox's DNS redirect, and tetherd holds ~4
    descriptors per running container: a walk of them all made the 1,000th start ~45 ms
    slower than the first).  Should the socket not be among them (another thread closed a
    lower descriptor meanwhile), every inheritable descriptor from 3 up is marked: tetherd
    keeps none on purpose, so marking one another thread opened is harmless.
    """
    with _CTX_LOCK:
        low = _lowest_free_fd()
        ctx: int = lib.nft_ctx_new(0)
        high = _lowest_free_fd()
        found = False
        for fd in range(low, high):
            found = _cloexec_if_inheritable(fd) or found
        if not found:
            for name in os.listdir("/proc/self/fd"):
                _cloexec_if_inheritable(int(name))
    return ctx


def _lowest_free_fd() -> int:
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return fd


def _cloexec_if_inheritable(fd: int) -> bool:
    """Mark `fd` close-on-exec if it is inheritable (0-2 only if it is a netfilter socket);
    True if it was an inheritable netfilter netlink socket."""
    try:
        if not os.get_inheritable(fd):
            return False
    except OSError:  # closed meanwhile
        return False
    netfilter = _is_netfilter_socket(fd)
    if fd > 2 or netfilter:
        try:
            os.set_inheritable(fd, False)
        except OSError:
            pass
    return netfilter


def _is_netfilter_socket(fd: int) -> bool:
    try:
        dup = os.dup(fd)
    except OSError:  # closed meanwhile
        return False
    try:
        s = socket.socket(fileno=dup)
    except OSError:  # not a socket
        os.close(dup)
        return False
    try:
        return (
            s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_NETLINK
            and s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == _NETLINK_NETFILTER
        )
    except OSError:
        return False
    finally:
        s.close()


@functools.cache
def _netns_library() -> ctypes.CDLL | None:
    """libnftables for run_in_netns, loaded once: find_library runs `ldconfig -p` (a fork
    and exec, ~5 ms, more on a busy machine) on every call."""
    path = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    return lib


def run_in_netns(path: str, text: str) -> None:
    """One transaction in another network namespace.

    A libnftables context talks through a netlink socket opened when the context is made, so
    the context is made inside the namespace (and freed after); ~1.4 ms here.
    """
    from tether.kernel import netns

    lib = _netns_library()
    if lib is None:
        r = subprocess.run(
            ["nsenter", f"--net={path}", "nft", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise NftError(f"nftables: {r.stderr.strip()}") from None
        return
    with netns.entered(path):
        ctx = new_ctx(lib)
        try:
            lib.nft_ctx_buffer_error(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        finally:
            lib.nft_ctx_free(ctx)
    if rc != 0:
        raise NftError(f"nftables: {err.strip()}")
