"""nftables transactions: libnftables in-process, or the `nft` binary when it is missing.

libnftables is the library `nft` itself is built on; calling it through ctypes runs the same
parser and the same single netlink transaction, without a process per change (that fork and
exec was most of the ~7 ms an `nft add element` took here).  Every call is one atomic batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
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
        before = _open_fds()
        ctx = lib.nft_ctx_new(0)
        _cloexec_since(before)
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


def _open_fds() -> dict[int, tuple[int, int]]:
    """Open descriptors and what each refers to (the listing's own is closed when fstat runs)."""
    out: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:
            continue
        out[int(name)] = (st.st_dev, st.st_ino)
    return out


def _cloexec_since(before: dict[int, tuple[int, int]]) -> None:
    """Mark close-on-exec what libnftables just opened: its netlink socket to the kernel's
    nftables (NETLINK_NETFILTER), which libmnl opens without SOCK_CLOEXEC and which would
    otherwise pass through every posix_spawn (tether-shim, the port relay) into containers,
    letting one with NET_ADMIN read and rewrite the host's `inet tether` table.  The library
    has no API for its descriptor, so it is found by comparing /proc/self/fd (by what each
    number refers to: the new socket may take the number the listing itself used); marking a
    descriptor another thread opened meanwhile is harmless."""
    for fd, ident in _open_fds().items():
        if before.get(fd) == ident:
            continue
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError:
            pass


def run_in_netns(path: str, text: str) -> None:
    """One transaction in another network namespace.

    A libnftables context talks through a netlink socket opened when the context is made, so
    the context is made inside the namespace (and freed after); ~1.4 ms here.
    """
    from tether.kernel import netns

    path_ = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(path_)
    except OSError:
        r = subprocess.run(
            ["nsenter", f"--net={path}", "nft", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise NftError(f"nftables: {r.stderr.strip()}") from None
        return
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    with netns.entered(path):
        before = _open_fds()
        ctx = lib.nft_ctx_new(0)
        _cloexec_since(before)
        try:
            lib.nft_ctx_buffer_error(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        finally:
            lib.nft_ctx_free(ctx)
    if rc != 0:
        raise NftError(f"nftables: {err.strip()}")
