"""libnftables' netlink socket never stays inheritable, and finding it does not walk every
descriptor tetherd holds (it did: the 1,000th container start paid ~45 ms for the walk)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
from collections.abc import Iterator

import pytest

from tether.kernel import nft

LIB = ctypes.util.find_library("nftables")
pytestmark = pytest.mark.skipif(LIB is None, reason="libnftables is not installed")


def netfilter_sockets() -> dict[int, bool]:
    """NETLINK_NETFILTER sockets of this process: fd -> inheritable."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            dup = os.dup(fd)
        except OSError:
            continue
        try:
            s = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        try:
            if (
                s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_NETLINK
                and s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == 12
            ):
                out[fd] = os.get_inheritable(fd)
        except OSError:
            pass
        finally:
            s.close()
    return out


@pytest.fixture
def lib() -> Iterator[ctypes.CDLL]:
    lib = ctypes.CDLL(LIB)
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    yield lib


def test_the_context_socket_is_close_on_exec(lib: ctypes.CDLL) -> None:
    before = netfilter_sockets()
    ctx = nft.new_ctx(lib)
    try:
        new = {fd: inh for fd, inh in netfilter_sockets().items() if fd not in before}
        assert len(new) == 1, new  # libnftables opened its socket...
        assert list(new.values()) == [False]  # ...and it would not survive an exec
    finally:
        lib.nft_ctx_free(ctx)


def test_only_the_new_numbers_are_looked_at(
    lib: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon with 1,000 containers holds ~4,000 descriptors; 800 make the point here.
    held = [os.pipe() for _ in range(400)]
    looked: list[int] = []
    real = nft._cloexec_if_inheritable

    def spy(fd: int) -> bool:
        looked.append(fd)
        return real(fd)

    monkeypatch.setattr(nft, "_cloexec_if_inheritable", spy)
    try:
        ctx = nft.new_ctx(lib)
        lib.nft_ctx_free(ctx)
    finally:
        for r, w in held:
            os.close(r)
            os.close(w)
    assert 1 <= len(looked) <= 4, looked


def test_a_socket_outside_the_range_is_still_found(
    lib: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread closing a lower descriptor meanwhile puts the socket below the range:
    then every inheritable descriptor from 3 up is marked."""
    probes = iter([10_000, 10_001])  # a range [10000, 10001) that holds nothing
    monkeypatch.setattr(nft, "_lowest_free_fd", lambda: next(probes))
    r, w = os.pipe()
    os.set_inheritable(w, True)  # something left inheritable: marked as well
    stdio = [os.get_inheritable(fd) for fd in (0, 1, 2)]
    before = netfilter_sockets()
    ctx = nft.new_ctx(lib)
    try:
        new = {fd: inh for fd, inh in netfilter_sockets().items() if fd not in before}
        assert list(new.values()) == [False]
        assert not os.get_inheritable(w)
        assert [os.get_inheritable(fd) for fd in (0, 1, 2)] == stdio  # stdio left alone
    finally:
        lib.nft_ctx_free(ctx)
        os.close(r)
        os.close(w)
