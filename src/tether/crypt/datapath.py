"""tether-crypt: the data path of encrypted overlay networks, one process per node.

    python -I -m tether.crypt.datapath --exec-root DIR --control-fd 3

tetherd starts it when the node gets its first encrypted network, hands it a listening
control socket (EXEC_ROOT/crypt.sock), and tells it everything over that socket: this node's
address and the data port, each network (VNI and TAP), its keys by epoch and the epoch to
send with, the other nodes' sessions, and which MAC lives on which node.  It survives a
restart or a kill -9 of tetherd (traffic keeps flowing: it has all it needs), and the next
tetherd adopts it through the same socket, as it does the port relay.

The data path, per frame:

  TAP ex-<id> ──read (virtio-net header + frame, up to 64 KiB: TSO)──► seal once (AES-256-GCM,
  the key of this pair of nodes) ──► one sendmsg with UDP_SEGMENT: MTU-sized datagrams, each
  with its header (wire.py) ──► the peer's UDP socket (UDP_GRO: the datagrams of one send come
  back as one buffer) ──► checks (network, epoch, sender session, replay window) ──► open ──►
  write into that network's TAP (the virtio-net header tells the kernel what is still to do).

ARP requests (and IPv6 neighbour solicitations) for remote containers are answered here from
the table tetherd gave, as the plain overlay's VXLAN device does with `proxy`; other
broadcast and multicast frames go nowhere, as on the plain overlay (no flooding).

Everything dropped is counted, by network and reason (the `stats` request; `tether network
inspect` shows them): tampered or wrongly keyed (auth_failed), replayed, unknown epoch,
unknown sender or session, unknown network, malformed or truncated, incomplete (a datagram
of a frame never came).

Control requests: 4-byte big-endian length + JSON, answered the same way
({"ok": true, ...} or {"ok": false, "error": ...}):
    {"op": "ping"}                                     -> {"pid", "session"}
    {"op": "config", "addr": IP, "port": N, "mtu": N}  this node's underlay address and MTU
    {"op": "network", "vni": N, "tap": NAME}           add (or update) a network
    {"op": "forget", "vni": N}                         a network is gone
    {"op": "keys", "vni": N, "keys": {EPOCH: b64}, "send": EPOCH}   exactly these epochs
    {"op": "peers", "sessions": {IP: hex}}             every other node's current session
    {"op": "remotes", "vni": N, "remotes": [[MAC, NODE IP, [IPs]], ...]}
    {"op": "stats"}                                    -> {"networks": {VNI: {...}}, "global"}
    {"op": "quit"}
"""

from __future__ import annotations

import array
import base64
import errno
import ipaddress
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tether.crypt import tap
from tether.crypt.wire import (
    ETH_LEN,
    HEADER,
    HEADER_LEN,
    KIND_DATA,
    MAGIC,
    MAX_SEGMENTS,
    OUTER_LEN,
    TAG_LEN,
    TAIL,
    VNET_HDR_LEN,
    ReplayWindow,
    pair_key,
)
from tether.firewall.relay import accept_root

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3  # DF set, the path MTU not applied: never fragment, never shrink
MAX_UDP_PAYLOAD = 65507
READ_SIZE = 65536 + VNET_HDR_LEN + ETH_LEN + 64
RECV_SIZE = 1 << 18
MAX_RECEIVE = 65536  # what one receive returns at most (a datagram, or a GRO batch)
BATCH = 64  # frames or buffers handled per wakeup before the other side gets its turn
PENDING_MAX = 256  # frames being put back together
PENDING_TTL = 2.0  # seconds a partial frame waits for its other datagrams
MAX_CONTROL = 64 << 20
SOCK_BUF = 8 << 20
VNET_NONE = bytes(VNET_HDR_LEN)
ZERO4 = b"\0\0\0\0"
IN = select.EPOLLIN

# Counter names (per network, and "global" for what belongs to none).
RX_REASONS = (
    "malformed",
    "unknown_network",
    "unknown_epoch",
    "unknown_sender",
    "replayed",
    "auth_failed",
    "incomplete",
    "bad_frame",
)
TX_REASONS = ("no_route", "no_key", "multicast", "send_failed")
# Send failures that are counted, not logged: a full queue, a peer that is gone.
QUIET_SEND_ERRORS = frozenset(
    (0, errno.ENOBUFS, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH,
     errno.ECONNREFUSED, errno.EPERM)
)  # fmt: skip


def log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        sys.stderr.write(f"time={stamp} level=warn component=crypt pid={os.getpid()} msg={msg!r}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


COUNTERS = (
    "rx_packets",
    "rx_bytes",
    "tx_packets",
    "tx_bytes",
    "proxy_replies",
    *("rx_drop_" + r for r in RX_REASONS),
    *("tx_drop_" + r for r in TX_REASONS),
)
COUNTER_INDEX = {name: i for i, name in enumerate(COUNTERS)}


class Stats:
    """A network's counters by name, kept in an array('Q') that the C fast path
    (_fastcrypt.c) counts into directly, in the order of COUNTERS."""

    __slots__ = ("a",)

    def __init__(self) -> None:
        self.a = array.array("Q", bytes(8 * len(COUNTERS)))

    def __getitem__(self, name: str) -> int:
        return self.a[COUNTER_INDEX[name]]

    def __setitem__(self, name: str, value: int) -> None:
        self.a[COUNTER_INDEX[name]] = value

    def as_dict(self) -> dict[str, int]:
        return dict(zip(COUNTERS, self.a, strict=True))


def load_fast() -> Any:
    """The C fast path (_fastcrypt.c, built on first use), or None: then every frame goes
    through the Python code below (TETHER_CRYPT_PURE_PYTHON=1 asks for that)."""
    if os.environ.get("TETHER_CRYPT_PURE_PYTHON"):
        return None
    from tether.cbuild import load_extension
    from tether.crypt.fastbuild import LIBS, SOURCE

    try:
        module = load_extension(SOURCE, "_fastcrypt", libs=LIBS)
    except Exception as exc:
        log(f"C data path unavailable, moving frames in Python: {exc}")
        return None
    if tuple(module.COUNTERS) != COUNTERS:
        log("C data path's counters differ from datapath.COUNTERS: not used")
        return None
    return module


class Net:
    __slots__ = (
        "arp",
        "fd",
        "keys",
        "macs",
        "nd",
        "routes",
        "routes_of",
        "rx_keys",
        "send_epoch",
        "stats",
        "tap",
        "vni",
    )

    def __init__(self, vni: int, tap_name: str) -> None:
        self.vni = vni
        self.tap = tap_name
        self.fd = -1
        self.keys: dict[int, bytes] = {}
        self.send_epoch = 0
        self.macs: dict[bytes, str] = {}  # remote MAC -> its node's address
        self.arp: dict[bytes, bytes] = {}  # remote IPv4 (4 bytes) -> MAC
        self.nd: dict[bytes, bytes] = {}  # remote IPv6 (16 bytes) -> MAC
        self.stats = Stats()
        # The C sender's table (remote MAC -> TxRoute), and what it was built from: it is
        # built again when any of those objects is replaced (the control requests replace
        # them whole).
        self.routes: dict[bytes, Any] = {}
        self.routes_of: tuple[Any, ...] = ()
        # The network key each epoch's receive states were made with, kept while the epoch
        # is out of `keys` (its windows stay: it may come back).
        self.rx_keys: dict[int, bytes] = {}


class RxState:
    """What receiving from one sender (network, epoch, node, session) needs: its key and
    replay window (the C fast path's RxRoute has the same methods)."""

    __slots__ = ("active", "aead", "window")

    def __init__(self, aead: AESGCM) -> None:
        self.aead = aead
        self.window = ReplayWindow()
        self.active = True

    def check(self, counter: int) -> bool:
        return self.window.check(counter)

    def accept(self, counter: int) -> None:
        self.window.accept(counter)

    def open_into(self, counter: int, ct: bytes | memoryview, aad: bytes, out: memoryview) -> bool:
        try:
            self.aead.decrypt_into(ZERO4 + counter.to_bytes(8, "big"), ct, aad, out)
        except InvalidTag:
            return False
        return True


class DataPath:
    def __init__(self, control: socket.socket, fast: Any = None) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Any] = {}
        self.control = control
        self.control.setblocking(False)
        self._watch(control.fileno(), self.on_accept)
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self.had_client = False
        self.started = time.monotonic()
        self.running = True
        # This process's session: part of every key it uses, so a restart never reuses a
        # (key, nonce) pair and never accepts what was recorded before it (wire.py).
        self.session = int.from_bytes(os.urandom(8), "big")
        self.counter = 0  # the last counter sealed with (the C Sender's, with the fast path)
        # The C fast path (load_fast()), or None.  With it the common frames never reach
        # the Python below: Python keeps the control, the keys, ARP/ND answers, and every
        # frame or buffer that is not the usual case (on_tap, on_udp).
        self.fast = fast
        self.sender = fast.Sender(self.session) if fast is not None else None
        self.receiver = fast.Receiver() if fast is not None else None
        # Receive states by (network, epoch, node, session), and the same objects by the
        # bytes the C receiver looks up (node's IPv4 + header bytes 4..19).
        self.rxtab: dict[bytes, Any] = {}
        self.addr = ""
        self.port = 0
        self.mtu = 1500
        self.sock: socket.socket | None = None
        self.chunk = 0
        self.seg = 0
        self.group = 1
        self.prefixes: list[list[bytes]] = []
        self.seg_cmsg: list[tuple[int, int, bytes]] = []
        self.nets: dict[int, Net] = {}
        self.by_fd: dict[int, Net] = {}
        self.peers: dict[str, int] = {}  # node address -> its data path's session
        self.tx_keys: dict[tuple[int, int, str, int], Any] = {}  # AESGCM, or TxRoute
        self.rx: dict[tuple[int, int, str, int], Any] = {}  # RxState, or RxRoute
        self.pending: dict[tuple[str, bytes], list[Any]] = {}
        self.glob = Stats()
        self.rbuf = bytearray(RECV_SIZE)
        self.rview = memoryview(self.rbuf)
        # Frames read from the TAPs, and sealed (one of each at a time: one thread).
        self.tbuf = bytearray(READ_SIZE)
        self.tview = memoryview(self.tbuf)
        self.cview = memoryview(bytearray(READ_SIZE + TAG_LEN))
        # Receiving: the datagrams of a send land with their headers in `hview` and their
        # chunks end to end in `ctview` (one scatter receive: the ciphertext is whole
        # without a copy), and frames are opened into `pview`.
        self.hview = memoryview(bytearray(0))  # sized by configure (the datagram size)
        self.ctview = memoryview(bytearray(RECV_SIZE))
        self.pview = memoryview(bytearray(RECV_SIZE))
        self.rx_iov: list[memoryview] = []

    # -- the loop --------------------------------------------------------------------------

    def _watch(self, fd: int, handler: Any) -> None:
        self.ep.register(fd, IN)
        self.handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass

    def run(self) -> None:
        last_sweep = time.monotonic()
        while self.running:
            try:
                events = self.ep.poll(1.0)
            except InterruptedError:
                continue
            for fd, _ev in events:
                handler = self.handlers.get(fd)
                if handler is not None:
                    handler(fd)
            now = time.monotonic()
            if now - last_sweep >= 1.0:
                last_sweep = now
                self.sweep(now)
                # Nothing to carry and nobody to ask for more: nothing left to do.
                if (
                    not self.nets
                    and not self.clients
                    and (self.had_client or now - self.started > 30)
                ):
                    break
        for net in self.nets.values():
            if net.fd >= 0:
                os.close(net.fd)

    def sweep(self, now: float) -> None:
        for key, entry in list(self.pending.items()):
            if entry[3] < now:
                del self.pending[key]
                self._count_rx(entry[4], "incomplete")

    # -- sending ---------------------------------------------------------------------------

    def on_tap(self, fd: int) -> None:
        net = self.by_fd.get(fd)
        if net is None:
            return
        if self.sender is not None and self.sock is not None:
            self._pump_tap(fd, net, self.sender)
            return
        tbuf, tview = self.tbuf, self.tview
        for _ in range(BATCH):
            try:
                n = os.readv(fd, [tbuf])
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EBADFD:  # the TAP went away under us
                    self._detach(net)
                return
            if n < VNET_HDR_LEN + ETH_LEN:
                continue
            data = tview[:n]
            dst = tbuf[VNET_HDR_LEN : VNET_HDR_LEN + 6]
            if dst[0] & 1:
                self.local(net, data)
                continue
            peer = net.macs.get(bytes(dst))
            if peer is None:
                net.stats["tx_drop_no_route"] += 1
                continue
            self.send(net, peer, data)

    def _pump_tap(self, fd: int, net: Net, sender: Any) -> None:
        """The C sender moves this TAP's unicast frames; what it hands back is ours."""
        fast = self.fast
        if net.routes_of != (net.macs, net.keys, net.send_epoch, self.peers, self.sock):
            self._build_routes(net)
        for _ in range(BATCH):
            status, _frames, extra = sender.pump(fd, net.routes, net.stats.a)
            if status == fast.FRAME:
                self.local(net, memoryview(extra))
                continue
            if status == fast.GONE:
                self._detach(net)
            elif isinstance(extra, int) and extra not in QUIET_SEND_ERRORS:
                log(f"{'send' if status != fast.ERROR else 'tap read'}: {os.strerror(extra)}")
            return

    def _build_routes(self, net: Net) -> None:
        """The C sender's table: each remote MAC to the route to its node (one per node,
        shared by its MACs; a route without a key counts the frames as no_key)."""
        assert self.fast is not None
        routes: dict[bytes, Any] = {}
        by_peer: dict[str, Any] = {}
        for mac, peer in net.macs.items():
            route = by_peer.get(peer)
            if route is None:
                try:
                    route = self.tx_key(net, peer)
                    if route is None:
                        route = self.fast.TxRoute(None, peer, self.port, net.vni, 0)
                except ValueError as exc:  # not an IPv4 address: no route (counted so)
                    log(f"no route to {peer}: {exc}")
                    continue
                by_peer[peer] = route
            routes[mac] = route
        net.routes = routes
        net.routes_of = (net.macs, net.keys, net.send_epoch, self.peers, self.sock)

    def tx_key(self, net: Net, peer: str) -> Any:
        """The sealing key for `peer` on this network now (AESGCM; the C path's TxRoute),
        or None if there is none yet."""
        session = self.peers.get(peer)
        epoch = net.send_epoch
        if session is None or epoch not in net.keys:
            return None
        k = (net.vni, epoch, peer, session)
        aead = self.tx_keys.get(k)
        if aead is None:
            key = pair_key(net.keys[epoch], net.vni, epoch, self.addr, self.session, peer, session)
            if self.fast is not None:
                aead = self.fast.TxRoute(key, peer, self.port, net.vni, epoch)
            else:
                aead = AESGCM(key)
            self.tx_keys[k] = aead
        return aead

    def send(self, net: Net, peer: str, data: bytes | memoryview) -> None:
        """One frame sealed and sent from Python (the reference path: what the C sender
        does for every frame when it is there)."""
        session = self.peers.get(peer)
        epoch = net.send_epoch
        sock = self.sock
        if session is None or epoch not in net.keys or sock is None:
            net.stats["tx_drop_no_key"] += 1
            return
        aead = (
            AESGCM(
                pair_key(net.keys[epoch], net.vni, epoch, self.addr, self.session, peer, session)
            )
            if self.fast is not None
            else self.tx_key(net, peer)
        )
        if self.sender is not None:
            counter = self.counter = self.sender.next()
        else:
            self.counter += 1
            counter = self.counter
        tail = TAIL.pack(net.vni, net.send_epoch, self.session, counter)
        # Sealed into a buffer of our own: no 64 KiB object per frame.
        mv = self.cview[: len(data) + TAG_LEN]
        aead.encrypt_into(ZERO4 + counter.to_bytes(8, "big"), data, tail, mv)
        chunk = self.chunk
        count = -(-len(mv) // chunk)
        if count > MAX_SEGMENTS:
            net.stats["tx_drop_send_failed"] += 1
            return
        prefixes = self.prefixes[count]
        dest = (peer, self.port)
        group = self.group
        try:
            if count == 1:
                sock.sendmsg([prefixes[0] + tail, mv], (), 0, dest)
            else:
                iov: list[Any] = []
                for i in range(count):
                    iov.append(prefixes[i] + tail)
                    iov.append(mv[i * chunk : (i + 1) * chunk])
                seg = self.seg_cmsg
                for first in range(0, count, group):
                    sock.sendmsg(iov[2 * first : 2 * (first + group)], seg, 0, dest)
        except OSError as exc:
            net.stats["tx_drop_send_failed"] += 1
            if exc.errno not in QUIET_SEND_ERRORS:
                log(f"send to {peer}: {exc}")
            return
        net.stats["tx_packets"] += 1
        net.stats["tx_bytes"] += len(data) - VNET_HDR_LEN

    # -- answering locally: ARP and neighbour solicitations for remote containers ----------

    def local(self, net: Net, data: memoryview) -> None:
        frame = data[VNET_HDR_LEN:]
        ethertype = frame[12:14].tobytes()
        reply: bytes | None = None
        if ethertype == b"\x08\x06":
            reply = arp_reply(frame, net.arp)
        elif ethertype == b"\x86\xdd":
            reply = na_reply(frame, net.nd)
        if reply is None:
            net.stats["tx_drop_multicast"] += 1
            return
        try:
            os.write(net.fd, VNET_NONE + reply)
            net.stats["proxy_replies"] += 1
        except OSError:
            pass

    # -- receiving -------------------------------------------------------------------------

    def on_udp(self, fd: int) -> None:
        sock = self.sock
        if sock is None:
            return
        if self.receiver is not None:
            self._pump_udp(self.receiver)
            return
        cmsg_space = socket.CMSG_SPACE(4)
        iov = self.rx_iov
        hview, ctview = self.hview, self.ctview
        ours = self.seg
        for _ in range(BATCH):
            try:
                n, anc, _flags, addr = sock.recvmsg_into(iov, cmsg_space, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log(f"receive: {exc}")
                return
            seg = n
            for level, kind, cdata in anc:
                if level == SOL_UDP and kind == UDP_GRO:
                    seg = int.from_bytes(cdata, sys.byteorder)
            if seg <= HEADER_LEN:
                self.glob["rx_drop_malformed"] += 1
                continue
            k = -(-n // seg)
            # (One datagram larger than ours, from a node of a larger MTU, was spread over
            # two of our header and chunk slots: it is taken apart below, as in C.)
            if seg == ours or (k == 1 and n <= ours):
                # Laid out as we expect: headers in hview, the chunks end to end in ctview.
                # The usual case is the whole of one frame, in order (one GSO send, passed
                # through or put back together by GRO): it is opened where it landed.
                last = (k - 1) * HEADER_LEN
                if (
                    hview[0] == MAGIC
                    and hview[1] == KIND_DATA
                    and hview[2] == 0
                    and hview[3] == k
                    and n - (k - 1) * seg > HEADER_LEN
                    and (
                        k == 1
                        or (
                            hview[last + 2] == k - 1
                            and hview[last + 3] == k
                            and hview[last + 4 : last + HEADER_LEN] == hview[4:HEADER_LEN]
                        )
                    )
                ):
                    self.open(addr[0], bytes(hview[4:HEADER_LEN]), ctview[: n - k * HEADER_LEN])
                    continue
            # Anything else: the bytes as they came, taken apart datagram by datagram.
            whole = _gather(iov, n)
            self.block(addr[0], memoryview(whole), n, seg)

    def _pump_udp(self, receiver: Any) -> None:
        """The C receiver opens the usual buffers; what it hands back is ours."""
        fast = self.fast
        for _ in range(BATCH):
            status, _frames, extra = receiver.pump(self.rxtab)
            if status == fast.BUFFER:
                src, n, seg, data = extra
                if seg <= HEADER_LEN:
                    self.glob["rx_drop_malformed"] += 1
                else:
                    self.block(src, memoryview(data), n, seg)
                continue
            if status == fast.ERROR:
                log(f"receive: {os.strerror(extra)}")
            return

    def block(self, src: str, view: memoryview, n: int, seg: int) -> None:
        """A buffer of `n` bytes: datagrams of `seg` bytes (the last may be shorter), as one
        receive returned them.  Normally they are the datagrams of one GSO send, in order:
        all of a frame (opened at once) or a run of it (kept until the rest comes).  First
        and last headers are checked; if anything in between belonged to another frame,
        the tag would not verify.  Anything else is taken apart datagram by datagram."""
        k = -(-n // seg)
        last = (k - 1) * seg
        if n - last <= HEADER_LEN:
            self.glob["rx_drop_malformed"] += 1
            return
        magic, kind, first, count, vni, _e, _s, _c = HEADER.unpack_from(view, 0)
        if magic != MAGIC or kind != KIND_DATA or count == 0 or first + k > count:
            if k == 1:
                self.glob["rx_drop_malformed"] += 1
                return
            for off in range(0, n, seg):
                self.block(src, view[off : min(off + seg, n)], min(seg, n - off), seg)
            return
        if k > 1 and not (
            view[last + 2] == first + k - 1
            and view[last + 3] == count
            and view[last] == MAGIC
            and view[last + 4 : last + HEADER_LEN] == view[4:HEADER_LEN]
        ):
            for off in range(0, n, seg):
                self.block(src, view[off : min(off + seg, n)], min(seg, n - off), seg)
            return
        tail = bytes(view[4:HEADER_LEN])
        if k == 1:
            data = bytes(view[HEADER_LEN:n])
        else:
            data = b"".join(
                [view[off + HEADER_LEN : min(off + seg, n)] for off in range(0, n, seg)]
            )
        if k == count:
            self.open(src, tail, data)
            return
        key = (src, tail)
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= PENDING_MAX:
                oldest = next(iter(self.pending))
                self._count_rx(self.pending.pop(oldest)[4], "incomplete")
            # [runs by first index, datagrams so far, count, deadline, vni]
            entry = [{}, 0, count, time.monotonic() + PENDING_TTL, vni]
            self.pending[key] = entry
        runs = entry[0]
        if entry[2] != count or first in runs:
            return  # a duplicate (or a forgery: the tag will tell)
        runs[first] = data
        entry[1] += k
        if entry[1] >= count:
            del self.pending[key]
            self.open(src, tail, b"".join([runs[i] for i in sorted(runs)]))

    def _new_rx(self, k: tuple[int, int, str, int], net: Net, key: bytes) -> Any:
        """The receive state of one sender (network, epoch, node, session)."""
        if self.fast is None:
            rx: Any = RxState(AESGCM(key))
        else:
            rx = self.fast.RxRoute(key, net.fd, net.stats.a)
            self.rxtab[_rxtab_key(k)] = rx
        self.rx[k] = rx
        return rx

    def _drop_rx(self, keys: list[tuple[int, int, str, int]]) -> None:
        for k in keys:
            if self.rx.pop(k, None) is not None and self.fast is not None:
                self.rxtab.pop(_rxtab_key(k), None)

    def _current_senders(self) -> None:
        """The C receiver opens only for active senders: a sender whose node has another
        session now, or whose epoch is no longer kept, goes back to Python's checks (which
        count the drop by its reason)."""
        for (vni, epoch, src, session), rx in self.rx.items():
            net = self.nets.get(vni)
            rx.active = net is not None and epoch in net.keys and self.peers.get(src) == session

    def _count_rx(self, vni: int, reason: str) -> None:
        net = self.nets.get(vni)
        (net.stats if net is not None else self.glob)["rx_drop_" + reason] += 1

    def open(self, src: str, tail: bytes, ct: bytes | memoryview) -> None:
        vni, epoch, session, counter = TAIL.unpack(tail)
        net = self.nets.get(vni)
        if net is None:
            self.glob["rx_drop_unknown_network"] += 1
            return
        st = net.stats
        key = net.keys.get(epoch)
        if key is None:
            st["rx_drop_unknown_epoch"] += 1
            return
        if self.peers.get(src) != session:
            st["rx_drop_unknown_sender"] += 1
            return
        k = (vni, epoch, src, session)
        rx = self.rx.get(k)
        if rx is None:
            rx = self._new_rx(
                k, net, pair_key(key, vni, epoch, src, session, self.addr, self.session)
            )
        rx.active = True  # checked just now: current sender, known epoch
        if not rx.check(counter):
            st["rx_drop_replayed"] += 1
            return
        size = len(ct) - TAG_LEN
        if size < VNET_HDR_LEN + ETH_LEN:
            st["rx_drop_auth_failed" if size < 0 else "rx_drop_bad_frame"] += 1
            return
        frame = self.pview[:size]
        if not rx.open_into(counter, ct, tail, frame):
            st["rx_drop_auth_failed"] += 1
            return
        rx.accept(counter)
        if net.fd < 0:
            st["rx_drop_bad_frame"] += 1
            return
        try:
            os.write(net.fd, frame)
        except OSError:
            # The kernel refused the frame (a virtio-net header it does not take).
            st["rx_drop_bad_frame"] += 1
            return
        st["rx_packets"] += 1
        st["rx_bytes"] += size - VNET_HDR_LEN

    # -- control ---------------------------------------------------------------------------

    def on_accept(self, fd: int) -> None:
        conn = accept_root(self.control, log)
        if conn is None:
            return
        # Replies are small and tetherd waits for them; a client that stops reading for a
        # second is dropped rather than stalling the data path.
        conn.settimeout(1.0)
        self.clients[conn.fileno()] = (conn, bytearray())
        self.had_client = True
        self._watch(conn.fileno(), self.on_control)

    def _drop_client(self, fd: int) -> None:
        self._unwatch(fd)
        conn, _ = self.clients.pop(fd, (None, None))
        if conn is not None:
            conn.close()

    def on_control(self, fd: int) -> None:
        conn, buf = self.clients[fd]
        try:
            data = conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(fd)
            return
        buf += data
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if size > MAX_CONTROL:
                self._drop_client(fd)
                return
            if len(buf) < 4 + size:
                break
            msg = bytes(buf[4 : 4 + size])
            del buf[: 4 + size]
            try:
                reply = self.handle(json.loads(msg))
            except Exception as exc:  # a bad request never ends the data path
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out = json.dumps(reply, separators=(",", ":")).encode()
            try:
                conn.sendall(len(out).to_bytes(4, "big") + out)
            except OSError:
                self._drop_client(fd)
                return

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "session": f"{self.session:016x}"}
        if op == "config":
            self.configure(str(req["addr"]), int(req["port"]), int(req.get("mtu") or 1500))
            return {"ok": True}
        if op == "network":
            self.add_network(int(req["vni"]), str(req["tap"]))
            return {"ok": True}
        if op == "forget":
            self.forget(int(req["vni"]))
            return {"ok": True}
        if op == "keys":
            net = self.nets[int(req["vni"])]
            keys = {int(e): base64.b64decode(k) for e, k in req["keys"].items()}
            if any(len(k) != 32 for k in keys.values()):
                raise ValueError("a key is 32 bytes")
            changed = {e for e in set(net.keys) | set(keys) if net.keys.get(e) != keys.get(e)}
            net.keys = keys
            net.send_epoch = int(req.get("send") or 0)
            for k in [k for k in self.tx_keys if k[0] == net.vni and k[1] in changed]:
                del self.tx_keys[k]
            # Receive windows stay as long as this process does (one thrown away would
            # accept a replay, should its epoch come back), but for epochs long gone, and
            # for an epoch whose key changed (what was sealed with the old key cannot
            # open with the new one: nothing to replay).  An epoch merely left out keeps
            # its windows: tetherd's plan may hold it again (after a restart, say).
            replaced = {e for e, key in keys.items() if net.rx_keys.get(e, key) != key}
            newest = max(keys, default=0)
            net.rx_keys.update(keys)
            for e in [e for e in net.rx_keys if e < newest - 2]:
                del net.rx_keys[e]
            self._drop_rx(
                [k for k in self.rx if k[0] == net.vni and (k[1] < newest - 2 or k[1] in replaced)]
            )
            self._current_senders()
            return {"ok": True}
        if op == "peers":
            self.peers = {str(ip): int(s, 16) for ip, s in req["sessions"].items()}
            for k in [k for k in self.tx_keys if self.peers.get(k[2]) != k[3]]:
                del self.tx_keys[k]
            self._current_senders()
            return {"ok": True}
        if op == "remotes":
            net = self.nets[int(req["vni"])]
            macs: dict[bytes, str] = {}
            arp: dict[bytes, bytes] = {}
            nd: dict[bytes, bytes] = {}
            for mac, node, ips in req["remotes"]:
                m = bytes.fromhex(str(mac).replace(":", ""))
                macs[m] = str(node)
                for ip in ips:
                    a = ipaddress.ip_address(ip)
                    (arp if a.version == 4 else nd)[a.packed] = m
            net.macs, net.arp, net.nd = macs, arp, nd
            return {"ok": True}
        if op == "stats":
            return {
                "ok": True,
                "pid": os.getpid(),
                "session": f"{self.session:016x}",
                "addr": self.addr,
                "port": self.port,
                "engine": "C" if self.fast is not None else "Python",
                "global": self.glob.as_dict(),
                "networks": {
                    str(vni): {
                        "tap": net.tap,
                        "attached": net.fd >= 0,
                        "epochs": sorted(net.keys),
                        "send_epoch": net.send_epoch,
                        "remotes": len(net.macs),
                        **net.stats.as_dict(),
                    }
                    for vni, net in self.nets.items()
                },
            }
        if op == "quit":
            self.running = False
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")

    def configure(self, addr: str, port: int, mtu: int) -> None:
        ipaddress.IPv4Address(addr)
        if not 0 < port < 65536 or not 576 <= mtu <= 65535:
            raise ValueError("bad port or MTU")
        if (addr, port) != (self.addr, self.port) or self.sock is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for opt, force in (
                (socket.SO_SNDBUF, 32),  # SO_SNDBUFFORCE
                (socket.SO_RCVBUF, 33),  # SO_RCVBUFFORCE
            ):
                try:
                    s.setsockopt(socket.SOL_SOCKET, force, SOCK_BUF)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
            s.setsockopt(SOL_UDP, UDP_GRO, 1)
            # Never fragment: a datagram too large for the path is an error here, not a
            # train of IP fragments on the underlay.
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
            s.bind((addr, port))
            if self.sock is not None:
                self._unwatch(self.sock.fileno())
                self.sock.close()
            self.sock = s
            self._watch(s.fileno(), self.on_udp)
            self.tx_keys.clear()  # the port is in every route, our address in every key
            if addr != self.addr:
                # Receive states go with the keys, but only then: the port is no part of a
                # key, and a window thrown away would accept what was recorded before.
                self.rx.clear()
                self.rxtab.clear()
            self.addr, self.port = addr, port
        self.mtu = mtu
        self.seg = mtu - OUTER_LEN
        self.chunk = self.seg - HEADER_LEN
        self.group = max(1, MAX_UDP_PAYLOAD // self.seg)
        if self.sender is not None and self.receiver is not None and self.sock is not None:
            self.sender.configure(self.sock.fileno(), self.seg)
            self.receiver.configure(self.sock.fileno(), self.seg)
        self.seg_cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", self.seg))]
        c = self.chunk
        # Enough datagrams for the largest receive (64 KiB of them, or one of any size).
        segments = -(-MAX_RECEIVE // self.seg) + 1
        self.hview = memoryview(bytearray(HEADER_LEN * segments))
        self.rx_iov = []
        for i in range(segments):
            self.rx_iov.append(self.hview[i * HEADER_LEN : (i + 1) * HEADER_LEN])
            self.rx_iov.append(self.ctview[i * c : (i + 1) * c])
        self.prefixes = [
            [bytes((MAGIC, KIND_DATA, i, n)) for i in range(n)] for n in range(MAX_SEGMENTS + 1)
        ]

    def add_network(self, vni: int, tap_name: str) -> None:
        net = self.nets.get(vni)
        if net is None:
            net = Net(vni, tap_name)
            self.nets[vni] = net
        elif net.tap != tap_name:
            self._detach(net)
            net.tap = tap_name
        if net.fd < 0:
            fd = tap.attach(tap_name)
            net.fd = fd
            self.by_fd[fd] = net
            self._watch(fd, self.on_tap)
            self._rx_fd(net)

    def _detach(self, net: Net) -> None:
        if net.fd >= 0:
            self._unwatch(net.fd)
            self.by_fd.pop(net.fd, None)
            os.close(net.fd)
            net.fd = -1
            self._rx_fd(net)

    def _rx_fd(self, net: Net) -> None:
        """The C receiver writes a network's frames to the TAP its routes name."""
        if self.fast is not None:
            for k, rx in self.rx.items():
                if k[0] == net.vni:
                    rx.fd = net.fd

    def forget(self, vni: int) -> None:
        net = self.nets.pop(vni, None)
        if net is None:
            return
        self._detach(net)
        for k in [k for k in self.tx_keys if k[0] == vni]:
            del self.tx_keys[k]
        self._drop_rx([k for k in self.rx if k[0] == vni])


def _rxtab_key(k: tuple[int, int, str, int]) -> bytes:
    """What the C receiver looks a sender up by: the node's IPv4 address and header bytes
    4..19 (network id, epoch, session) of its datagrams."""
    vni, epoch, src, session = k
    return socket.inet_aton(src) + struct.pack(">IIQ", vni, epoch, session)


def _gather(iov: list[memoryview], n: int) -> bytes:
    """The first `n` bytes a scatter receive spread over `iov`, back in one piece."""
    out = []
    for piece in iov:
        if n <= 0:
            break
        out.append(piece[:n])
        n -= len(piece)
    return b"".join(out)


# -- frames answered locally ----------------------------------------------------------------


def arp_reply(frame: memoryview, table: dict[bytes, bytes]) -> bytes | None:
    """The ARP reply for a request about a remote container's IPv4 address."""
    if len(frame) < ETH_LEN + 28:
        return None
    arp = frame[ETH_LEN : ETH_LEN + 28].tobytes()
    # Ethernet/IPv4, request.
    if arp[0:8] != b"\x00\x01\x08\x00\x06\x04\x00\x01":
        return None
    sha, spa, tpa = arp[8:14], arp[14:18], arp[24:28]
    mac = table.get(tpa)
    if mac is None:
        return None
    return sha + mac + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x02" + mac + tpa + sha + spa


def na_reply(frame: memoryview, table: dict[bytes, bytes]) -> bytes | None:
    """The neighbour advertisement for a solicitation about a remote container's IPv6
    address (RFC 4861 4.4, solicited, with the target's link-layer address)."""
    if len(frame) < ETH_LEN + 40 + 24:
        return None
    ip6 = frame[ETH_LEN:].tobytes()
    if ip6[6] != 58 or ip6[40] != 135:  # ICMPv6 neighbour solicitation
        return None
    target = ip6[48:64]
    mac = table.get(target)
    if mac is None:
        return None
    src_ip = ip6[8:24]
    src_mac = frame[6:12].tobytes()
    if src_ip == bytes(16):  # duplicate address detection: answer to all nodes
        dst_ip = b"\xff\x02" + bytes(13) + b"\x01"
        flags = b"\x20\0\0\0"  # override
    else:
        dst_ip = src_ip
        flags = b"\x60\0\0\0"  # solicited, override
    body = b"\x88\x00\x00\x00" + flags + target + b"\x02\x01" + mac
    pseudo = target + dst_ip + len(body).to_bytes(4, "big") + b"\0\0\0\x3a"
    csum = _checksum(pseudo + body)
    body = body[:2] + csum.to_bytes(2, "big") + body[4:]
    hdr = b"\x60\0\0\0" + len(body).to_bytes(2, "big") + b"\x3a\xff" + target + dst_ip
    return src_mac + mac + b"\x86\xdd" + hdr + body


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def main(argv: list[str]) -> int:
    control_fd = -1
    for i, arg in enumerate(argv):
        if arg == "--control-fd":
            control_fd = int(argv[i + 1])
    if control_fd < 0:
        sys.stderr.write("usage: python -m tether.crypt.datapath --exec-root DIR --control-fd FD\n")
        return 2
    # We need stdio and the control socket, nothing else.
    os.closerange(3, control_fd)
    os.closerange(control_fd + 1, 1 << 20)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import gc

    gc.freeze()  # what was made at start stays; frames make no reference cycles
    DataPath(socket.socket(fileno=control_fd), fast=load_fast()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
