"""tether-crypt's packet format, key derivation and replay window (pure: no I/O).

One frame that a container sends to a container on another node (a TCP super-packet of up
to 64 KiB, as the TAP hands it over with its virtio-net header) is sealed with ONE AEAD call
(AES-256-GCM) and sent as MTU-sized UDP datagrams, each carrying the 28-byte header:

    0      magic 0xE1 (tether-crypt, version 1)
    1      kind (0: data)
    2      segment index      (0 .. count-1)
    3      segment count      (1 .. 255)
    4..7   network id         (the overlay's VNI)
    8..11  key epoch
    12..19 sender session     (random, chosen by the sending process when it starts)
    20..27 counter            (per sending process, +1 per sealed frame, never reused)

Bytes 4..27 are the AEAD's associated data, so a header cannot be moved onto another
ciphertext.  The sealed frame (virtio-net header + Ethernet frame + 16-byte tag) is cut
into `count` chunks that follow the header of each datagram; the receiver puts them back
together (in one piece, normally: UDP GRO hands it the whole GSO send at once) and opens it.

Keys.  The network key of an epoch (32 random bytes, made by one node and wrapped for every
node in the cluster store) is never used to seal packets itself.  Each direction between
two nodes gets its own key, derived with HKDF-SHA256 from the network key and

    network id, epoch, sender address, sender session, receiver address, receiver session

so a nonce (4 zero bytes + the 8-byte counter) can repeat only under a key that no other
process has ever used: a sending process that restarts picks a new random session, hence
new keys, and starts its counter at 0 (64 random bits: the same session twice on one node
within one key epoch is a 2^-64 event per pair of starts).  The receiver's session in the
derivation means that packets recorded before a receiving process (re)started can never be
opened by it: its replay window, which lives in memory, never needs to outlive it.
"""

from __future__ import annotations

import ipaddress
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = 0xE1
KIND_DATA = 0
HEADER = struct.Struct(">BBBBIIQQ")
HEADER_LEN = HEADER.size  # 28
AAD_START = 4  # header bytes 4.. are authenticated
TAIL = struct.Struct(">IIQQ")  # vni, epoch, session, counter: the associated data
TAG_LEN = 16
VNET_HDR_LEN = 10  # struct virtio_net_hdr (no num_buffers)
ETH_LEN = 14
KEY_LEN = 32
MAX_SEGMENTS = 255
# Outer IPv4 + UDP headers: what the underlay adds to each datagram.
OUTER_LEN = 20 + 8
# What a frame costs on the underlay beyond its own bytes, so that a frame of the network's
# MTU fits one datagram: outer IPv4+UDP, our header, the virtio-net header, the inner
# Ethernet header, the tag.  An encrypted overlay's MTU is the underlay's minus this.
OVERHEAD = OUTER_LEN + HEADER_LEN + VNET_HDR_LEN + ETH_LEN + TAG_LEN  # 96
INFO = b"tether-crypt/1 pair"
REPLAY_WINDOW = 4096  # counters: how far behind the newest a packet may arrive


class Malformed(ValueError):
    pass


def chunk_size(underlay_mtu: int) -> int:
    """Ciphertext bytes per datagram for an underlay of this MTU."""
    return underlay_mtu - OUTER_LEN - HEADER_LEN


def max_frame(underlay_mtu: int) -> int:
    """The largest frame (Ethernet header included) whose seal fits one UDP GSO send: the
    kernel takes at most 65507 bytes of datagrams per send."""
    seg = underlay_mtu - OUTER_LEN
    return (65507 // seg) * (seg - HEADER_LEN) - TAG_LEN - VNET_HDR_LEN


def pack_header(index: int, count: int, vni: int, epoch: int, session: int, counter: int) -> bytes:
    return HEADER.pack(MAGIC, KIND_DATA, index, count, vni, epoch, session, counter)


def unpack_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, int]:
    """(index, count, vni, epoch, session, counter) of a datagram; Malformed if it is not
    one of ours."""
    if len(data) < HEADER_LEN:
        raise Malformed("shorter than the header")
    magic, kind, index, count, vni, epoch, session, counter = HEADER.unpack_from(data)
    if magic != MAGIC or kind != KIND_DATA:
        raise Malformed("not a tether-crypt data packet")
    if count == 0 or index >= count:
        raise Malformed("bad segment numbers")
    return index, count, vni, epoch, session, counter


def nonce(counter: int) -> bytes:
    return b"\0\0\0\0" + counter.to_bytes(8, "big")


def _addr(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def pair_key(
    network_key: bytes,
    vni: int,
    epoch: int,
    src: str,
    src_session: int,
    dst: str,
    dst_session: int,
) -> bytes:
    """The key that seals packets from (src, src_session) to (dst, dst_session)."""
    if len(network_key) != KEY_LEN:
        raise ValueError("a network key is 32 bytes")
    info = (
        INFO
        + struct.pack(">II", vni, epoch)
        + _addr(src)
        + src_session.to_bytes(8, "big")
        + _addr(dst)
        + dst_session.to_bytes(8, "big")
    )
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=info).derive(network_key)


def seal(
    key: bytes, vni: int, epoch: int, session: int, counter: int, frame: bytes, chunk: int
) -> list[bytes]:
    """The datagrams of one frame (the data path does the same with scatter-gather sends;
    this is the reference the tests use)."""
    tail = TAIL.pack(vni, epoch, session, counter)
    ct = AESGCM(key).encrypt(nonce(counter), frame, tail)
    count = -(-len(ct) // chunk)
    if count > MAX_SEGMENTS:
        raise ValueError("frame too large")
    return [
        HEADER.pack(MAGIC, KIND_DATA, i, count, vni, epoch, session, counter)
        + ct[i * chunk : (i + 1) * chunk]
        for i in range(count)
    ]


class ReplayWindow:
    """Which counters of one sender (per network, epoch and session) were accepted: the
    newest, and a bitmap of the REPLAY_WINDOW before it (RFC 6479's idea, WireGuard's too).

    `check` before opening (cheap, no state change), `accept` after the tag verified: a
    forged packet never moves the window."""

    __slots__ = ("bits", "top")

    def __init__(self) -> None:
        self.top = -1  # the newest counter accepted
        self.bits = 0  # bit i: counter top - i was accepted

    def check(self, counter: int) -> bool:
        if counter > self.top:
            return True
        behind = self.top - counter
        return behind < REPLAY_WINDOW and not (self.bits >> behind) & 1

    def accept(self, counter: int) -> None:
        if counter > self.top:
            shift = counter - self.top
            # (A jump past the window forgets it all, without a shift of that many bits.)
            self.bits = (
                1
                if shift >= REPLAY_WINDOW
                else ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            )
            self.top = counter
        else:
            self.bits |= 1 << (self.top - counter)
