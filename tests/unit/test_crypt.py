"""tether-crypt's data path and keys, without root: real sockets on loopback, real AEAD.

Two DataPath objects (the process's own class) on 127.0.0.1 and 127.0.0.2 stand for two
nodes; a datagram socket pair stands for each network's TAP (one frame per read and per
write, as a TAP), so what the receiver would hand the kernel is read back and compared byte
for byte.  Every test of the pair runs twice: with the C fast path (_fastcrypt.c, what
tether-crypt runs) and with Python moving every frame (the reference).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import tempfile
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tether.crypt import wire
from tether.crypt.datapath import DataPath, Net, arp_reply, load_fast, na_reply
from tether.crypt.keyring import (
    ACK_WAIT,
    PREVIOUS_GRACE,
    CryptNode,
    Keyring,
    open_sealed,
    seal_for,
)
from tether.firewall.policy import Underlay
from tether.firewall.render import FirewallState, render

VNI = 4096
KEY = bytes(range(32))
PORT = 47900 + os.getpid() % 1000  # a high port per test process, on loopback only


def frame(size: int, fill: bytes = b"x") -> bytes:
    """A virtio-net header and an Ethernet frame of `size` bytes to a unicast MAC."""
    eth = bytes.fromhex("02420a000003") + bytes.fromhex("02420a000002") + b"\x08\x00"
    return bytes(wire.VNET_HDR_LEN) + eth + (fill * size)[: size - len(eth)]


FAST = load_fast()


class Node:
    def __init__(self, addr: str, tmp: str, fast: bool = False) -> None:
        path = os.path.join(tmp, f"ctl-{addr}")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.dp = DataPath(self.listener, fast=FAST if fast else None)
        self.dp.configure(addr, PORT, 1500)
        # The test's end of the "TAP" and the data path's.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.rd = ours.detach()
        os.set_blocking(self.rd, False)
        wr = theirs.detach()
        os.set_blocking(wr, False)
        self.net = Net(VNI, "ex-test")
        self.net.fd = wr
        self.net.keys = {1: KEY}
        self.net.send_epoch = 1
        self.dp.nets[VNI] = self.net
        self.dp.by_fd[wr] = self.net

    @property
    def addr(self) -> str:
        return self.dp.addr

    def delivered(self) -> list[bytes]:
        """What the data path wrote to the network's "TAP" (one write per frame)."""
        out = []
        while True:
            try:
                out.append(os.read(self.rd, 1 << 20))
            except BlockingIOError:
                return out

    def receive(self, timeout: float = 2.0) -> None:
        assert self.dp.sock is not None
        select.select([self.dp.sock], [], [], timeout)
        self.dp.on_udp(self.dp.sock.fileno())

    def from_tap(self, *frames: bytes) -> None:
        """Frames a container sent into the network's TAP, read and sent by the data path."""
        for f in frames:
            os.write(self.rd, f)
        self.dp.on_tap(self.net.fd)

    def close(self) -> None:
        os.close(self.rd)
        os.close(self.net.fd)
        if self.dp.sock is not None:
            self.dp.sock.close()
        self.listener.close()
        self.dp.ep.close()


def test_the_c_fast_path_is_built_and_loads() -> None:
    """tether-crypt runs it: a machine where it cannot be built moves frames in Python at a
    fraction of the speed (./run install puts gcc and libssl-dev there)."""
    assert FAST is not None
    assert tuple(FAST.COUNTERS) == datapath_counters()


def datapath_counters() -> tuple[str, ...]:
    from tether.crypt.datapath import COUNTERS

    return COUNTERS


@pytest.fixture(params=["c", "python"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Node, Node]]:
    fast = request.param == "c"
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Node("127.0.0.1", tmp, fast), Node("127.0.0.2", tmp, fast)
        a.dp.peers = {b.addr: b.dp.session}
        b.dp.peers = {a.addr: a.dp.session}
        a.net.macs = {bytes.fromhex("02420a000003"): b.addr}
        try:
            yield a, b
        finally:
            a.close()
            b.close()


def sealed(
    a: Node, b: Node, data: bytes, counter: int, key: bytes = KEY, epoch: int = 1
) -> list[bytes]:
    """Datagrams from a to b as a's data path would send them (wire.seal is the reference)."""
    k = wire.pair_key(key, VNI, epoch, a.addr, a.dp.session, b.addr, b.dp.session)
    return wire.seal(k, VNI, epoch, a.dp.session, counter, data, wire.chunk_size(1500))


def feed(b: Node, src: str, dgrams: list[bytes]) -> None:
    """Hand datagrams to b's receive path as separate receives."""
    for d in dgrams:
        b.dp.block(src, memoryview(d), len(d), len(d))


# -- the whole path over loopback: one seal, GSO send, GRO receive, one open --------------


@pytest.mark.parametrize("size", [60, 1400, 9000, 65000])
def test_frames_cross_sealed_and_arrive_whole(pair: tuple[Node, Node], size: int) -> None:
    a, b = pair
    data = frame(size)
    a.dp.send(a.net, b.addr, data)
    b.receive()
    assert b.delivered() == [data]
    assert b.net.stats["rx_packets"] == 1
    assert a.net.stats["tx_packets"] == 1


def test_what_crosses_is_not_the_frame(pair: tuple[Node, Node]) -> None:
    a, b = pair
    marker = b"TETHER-MARKER-" * 100
    spy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spy.bind(("127.0.0.3", PORT))
    spy.setsockopt(socket.SOL_UDP, 104, 1)  # UDP_GRO: the whole send at once
    try:
        a.dp.peers["127.0.0.3"] = b.dp.session
        a.dp.send(a.net, "127.0.0.3", frame(20000, marker))
        spy.settimeout(2)
        got = spy.recv(1 << 17)
    finally:
        spy.close()
    assert len(got) > 20000
    assert b"TETHER-MARKER" not in got
    assert got[0] == wire.MAGIC


# -- the receive side: reassembly, replay, tampering ---------------------------------------


def test_datagrams_of_a_frame_in_any_order_and_split_across_receives(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    data = frame(30000)
    dgrams = sealed(a, b, data, counter=5)
    assert len(dgrams) > 3
    # Two runs, the later first (as two GSO sends of one frame may be received).
    first, second = dgrams[:3], dgrams[3:]
    run2 = b"".join(second)
    b.dp.block(a.addr, memoryview(run2), len(run2), len(second[0]))
    assert b.delivered() == []
    run1 = b"".join(first)
    b.dp.block(a.addr, memoryview(run1), len(run1), len(first[0]))
    assert b.delivered() == [data]


def test_a_replayed_frame_is_dropped_and_counted(pair: tuple[Node, Node]) -> None:
    a, b = pair
    data = frame(100)
    dgrams = sealed(a, b, data, counter=1)
    feed(b, a.addr, dgrams)
    feed(b, a.addr, dgrams)
    assert b.delivered() == [data]
    assert b.net.stats["rx_drop_replayed"] == 1
    # Older than the window: dropped too, even never seen.
    feed(b, a.addr, sealed(a, b, data, counter=wire.REPLAY_WINDOW + 10))
    feed(b, a.addr, sealed(a, b, data, counter=2))
    assert len(b.delivered()) == 1
    assert b.net.stats["rx_drop_replayed"] == 2


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (wire.HEADER_LEN + 5, "auth_failed"),  # the ciphertext
        (-1, "auth_failed"),  # the tag
        (27, "auth_failed"),  # the counter (associated data)
        (9, "unknown_epoch"),  # the epoch
        (14, "unknown_sender"),  # the sender's session
    ],
)
def test_tampered_datagrams_are_dropped_and_counted(
    pair: tuple[Node, Node], where: int, reason: str
) -> None:
    a, b = pair
    (d,) = sealed(a, b, frame(200), counter=3)
    bad = bytearray(d)
    bad[where] ^= 0x01
    feed(b, a.addr, [bytes(bad)])
    assert b.delivered() == []
    assert b.net.stats["rx_drop_" + reason] == 1
    feed(b, a.addr, [d])  # the genuine one still passes (a forgery never moves the window)
    assert len(b.delivered()) == 1


def test_truncated_foreign_and_unknown_packets_are_dropped_and_counted(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    (d,) = sealed(a, b, frame(200), counter=4)
    feed(b, a.addr, [d[:10]])
    assert b.dp.glob["rx_drop_malformed"] == 1
    feed(b, a.addr, [d[:-5]])
    assert b.net.stats["rx_drop_auth_failed"] == 1
    feed(b, a.addr, [b"GET / HTTP/1.0\r\n\r\n" * 3])
    assert b.dp.glob["rx_drop_malformed"] == 2
    feed(b, a.addr, sealed(a, b, frame(200), counter=5, key=os.urandom(32)))
    assert b.net.stats["rx_drop_auth_failed"] == 2
    # From an address that is no node's: unknown sender, never opened.
    feed(b, "127.0.0.9", [d])
    assert b.net.stats["rx_drop_unknown_sender"] == 1
    other = bytearray(d)
    other[4:8] = struct.pack(">I", VNI + 1)
    feed(b, a.addr, [bytes(other)])
    assert b.dp.glob["rx_drop_unknown_network"] == 1
    assert b.delivered() == []


def test_a_frame_missing_a_datagram_is_counted_incomplete(pair: tuple[Node, Node]) -> None:
    a, b = pair
    dgrams = sealed(a, b, frame(5000), counter=6)
    feed(b, a.addr, dgrams[:-1])
    b.dp.sweep(1e12)
    assert b.net.stats["rx_drop_incomplete"] == 1
    assert b.delivered() == []


def test_a_restarted_receiver_opens_nothing_recorded_before(pair: tuple[Node, Node]) -> None:
    """A new process, a new session: packets recorded for the old one never open."""
    a, b = pair
    recorded = sealed(a, b, frame(100), counter=7)
    b.dp.session ^= 1  # what a restart does (a fresh random session)
    b.dp.rx.clear()
    feed(b, a.addr, recorded)
    assert b.delivered() == []
    assert b.net.stats["rx_drop_auth_failed"] == 1


def test_unknown_destinations_and_missing_keys_are_not_sent(pair: tuple[Node, Node]) -> None:
    a, b = pair
    a.dp.send(a.net, "127.0.0.7", frame(100))  # no session known for that node
    assert a.net.stats["tx_drop_no_key"] == 1
    a.net.send_epoch = 9
    a.dp.send(a.net, b.addr, frame(100))
    assert a.net.stats["tx_drop_no_key"] == 2


def test_replay_window() -> None:
    w = wire.ReplayWindow()
    for c in (1, 3, 2, 10, 5):
        assert w.check(c)
        w.accept(c)
    assert not any(w.check(c) for c in (1, 2, 3, 5, 10))
    assert w.check(4) and w.check(11)
    w.accept(10 + wire.REPLAY_WINDOW)
    assert not w.check(10) and not w.check(4)
    assert w.check(11 + 1)


# -- answers given locally: ARP and neighbour solicitations -------------------------------


def test_arp_requests_for_remote_containers_are_answered() -> None:
    mac = bytes.fromhex("02420a000003")
    asker = bytes.fromhex("02420a000002")
    req = (
        b"\xff" * 6 + asker + b"\x08\x06"
        + b"\x00\x01\x08\x00\x06\x04\x00\x01" + asker + bytes([10, 0, 0, 2])
        + bytes(6) + bytes([10, 0, 0, 3])
    )  # fmt: skip
    reply = arp_reply(memoryview(req), {bytes([10, 0, 0, 3]): mac})
    assert reply is not None
    assert reply[:6] == asker and reply[6:12] == mac
    assert reply[20:22] == b"\x00\x02"  # a reply
    assert reply[22:28] == mac and reply[28:32] == bytes([10, 0, 0, 3])
    assert arp_reply(memoryview(req), {}) is None


def test_neighbour_solicitations_get_a_valid_advertisement() -> None:
    import ipaddress

    mac = bytes.fromhex("02420a000003")
    target = ipaddress.ip_address("fd00::3").packed
    src = ipaddress.ip_address("fd00::2").packed
    body = b"\x87\x00\x00\x00" + bytes(4) + target
    ip6 = b"\x60\0\0\0" + len(body).to_bytes(2, "big") + b"\x3a\xff" + src + b"\xff" * 16
    req = b"\x33\x33\xff\x00\x00\x03" + bytes.fromhex("02420a000002") + b"\x86\xdd" + ip6 + body
    reply = na_reply(memoryview(req), {target: mac})
    assert reply is not None
    ip = reply[14:]
    assert ip[24:40] == src and ip[40] == 136  # to the asker, a neighbour advertisement
    payload = ip[40:]
    pseudo = ip[8:24] + ip[24:40] + len(payload).to_bytes(4, "big") + b"\0\0\0\x3a"
    data = pseudo + payload
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF  # the checksum verifies
    assert payload[-6:] == mac


# -- keys: sealed per node, plans, rotation ------------------------------------------------


def test_a_sealed_network_key_opens_only_for_its_node() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    value = seal_for(a.public_key().public_bytes_raw(), "n" * 64, 3, "node1", KEY).encode()
    assert open_sealed(a, value, "n" * 64, 3, "node1") == KEY
    with pytest.raises(InvalidTag):
        open_sealed(b, value, "n" * 64, 3, "node1")
    with pytest.raises(InvalidTag):
        open_sealed(a, value, "n" * 64, 4, "node1")  # another epoch's slot


def _ring(held: dict[int, bytes], acks: dict[str, int]) -> Keyring:
    k = Keyring("node1", X25519PrivateKey.generate())
    net = "n" * 64
    k.held[net] = dict(held)
    for name in ("node1", *acks):
        k.nodes[name] = CryptNode(name, name, b"x" * 32, "s")
    k.acks[net] = dict(acks)
    return k


def test_senders_switch_when_every_node_holds_the_new_key() -> None:
    net = "n" * 64
    k = _ring({1: b"1" * 32, 2: b"2" * 32}, {"node2": 2, "node3": 1})
    plan = k.plan(net, 100.0)
    assert plan.send == 1 and set(plan.keys) == {1, 2}  # node3 cannot open 2 yet
    k.acks[net]["node3"] = 2
    plan = k.plan(net, 101.0)
    assert plan.send == 2 and set(plan.keys) == {1, 2}  # the previous one for a while
    plan = k.plan(net, 101.0 + PREVIOUS_GRACE + 1)
    assert plan.send == 2 and set(plan.keys) == {2}


def test_senders_switch_after_a_bound_when_a_node_never_acknowledges() -> None:
    net = "n" * 64
    k = _ring({1: b"1" * 32, 2: b"2" * 32}, {"node2": 1})
    assert k.plan(net, 50.0).send == 1
    assert k.plan(net, 50.0 + ACK_WAIT).send == 2


def test_nodes_whose_copy_was_sealed_for_another_key_pair_get_a_new_one() -> None:
    from tether.crypt.keyring import Epoch

    net = "n" * 64
    k = _ring({1: KEY}, {"node2": 1})
    k.epochs[net] = Epoch(1, 0.0, "node1", ("node1", "node2"), 5)
    k.nodes["node2"] = CryptNode("node2", "10.0.0.2", b"p" * 32, "s")
    k.sealed[net] = {1: {"node2": seal_for(X25519PrivateKey.generate().public_key().public_bytes_raw(), net, 1, "node2", KEY).encode()}}  # fmt: skip
    assert [n.name for n in k.missing(net)] == ["node1", "node2"]


# -- the firewall's part -------------------------------------------------------------------


def test_plain_vxlan_of_encrypted_networks_is_dropped_both_ways() -> None:
    u = Underlay(4789, ("10.99.0.11", "10.99.0.12"), crypt_port=4790, encrypted_vnis=(4097, 4099))
    text = render(FirewallState([], underlay=u))
    assert "type filter hook output priority raw" in text
    assert "add rule inet tether guard udp dport 4790 ip saddr != @vteps counter drop\n" in text
    rule = "udp dport 4789 @th,96,24 { 4097, 4099 } counter drop"
    assert f"add rule inet tether guard {rule}\n" in text
    assert f"add rule inet tether guard_out {rule}\n" in text
    plain = render(FirewallState([], underlay=Underlay(4789, ("10.99.0.11",))))
    assert "guard_out" not in plain and "@th,96,24" not in plain


def test_an_encrypted_overlay_leaves_room_for_the_seal_in_one_datagram() -> None:
    from tether.drivers.overlay import ENCRYPTED_OVERHEAD

    assert ENCRYPTED_OVERHEAD == wire.OVERHEAD
    # A full frame of the network's MTU is one datagram of the underlay's MTU.
    mtu = 1500 - ENCRYPTED_OVERHEAD
    assert wire.VNET_HDR_LEN + wire.ETH_LEN + mtu + wire.TAG_LEN == wire.chunk_size(1500)


def test_a_frame_of_the_largest_size_a_container_sends_fits_one_gso_send() -> None:
    for mtu in (1500, 1420, 9000):
        seg = mtu - wire.OUTER_LEN
        sealed = wire.max_frame(mtu) + wire.VNET_HDR_LEN + wire.TAG_LEN
        assert -(-sealed // (seg - wire.HEADER_LEN)) * seg <= 65507


def test_encryption_flags() -> None:
    from tether.cluster.config import ClusterOptions, set_encryption
    from tether.errors import InvalidParameter

    opts = ClusterOptions(store="etcd://10.0.0.1:2379", advertise="10.0.0.1")
    set_encryption(opts, 0, "")
    assert (opts.crypt_port, opts.key_rotation) == (4800, 12 * 3600)
    set_encryption(opts, 5000, "90m")
    assert (opts.crypt_port, opts.key_rotation) == (5000, 5400)
    for port, rotation in ((4789, "1h"), (70000, "1h"), (5000, "5s"), (5000, "soon")):
        with pytest.raises(InvalidParameter):
            set_encryption(opts, port, rotation)


def test_an_encrypted_overlay_is_refused_on_a_node_advertising_ipv6() -> None:
    from typing import Any, cast

    from tether.drivers.overlay import OverlayDriver
    from tether.errors import InvalidParameter
    from tether.model import Network

    def net() -> Network:
        return Network("a" * 64, "secure-net", "overlay", "", options={"encrypted": ""})

    rtnl = cast(Any, None)  # validate touches no kernel
    v6 = OverlayDriver(rtnl, "fd00::11", 4789, 1500)
    with pytest.raises(InvalidParameter, match="IPv4 --cluster-advertise"):
        v6.validate(net(), [])
    plain = Network("b" * 64, "plain-net", "overlay", "", options={})
    v6.validate(plain, [])  # a plain overlay is not the data path's business
    n = net()
    OverlayDriver(rtnl, "10.0.0.1", 4789, 1500).validate(n, [])
    assert n.driver_state["encrypted"] is True


# -- frames from the TAP and buffers from the socket: the loop tether-crypt runs ----------


def gso_send(a: Node, b: Node, dgrams: list[bytes], port: int = PORT) -> None:
    """Datagrams from a's socket to b's in one UDP GSO send (one GRO buffer at b), as a's
    data path sends a frame."""
    assert a.dp.sock is not None
    cmsg = [(socket.SOL_UDP, 103, struct.pack("=H", len(dgrams[0])))] if len(dgrams) > 1 else []
    a.dp.sock.sendmsg(dgrams, cmsg, 0, (b.addr, port))


@pytest.mark.parametrize("size", [60, 1400, 9000, 65000])
def test_frames_from_the_tap_cross_sealed(pair: tuple[Node, Node], size: int) -> None:
    a, b = pair
    data = frame(size)
    a.from_tap(data, data)
    b.receive()
    b.receive(timeout=0.5)
    assert b.delivered() == [data, data]
    assert a.net.stats["tx_packets"] == 2
    assert a.net.stats["tx_bytes"] == 2 * (len(data) - wire.VNET_HDR_LEN)
    assert b.net.stats["rx_packets"] == 2
    assert b.net.stats["rx_bytes"] == a.net.stats["tx_bytes"]


def test_the_c_and_python_paths_speak_the_same_wire() -> None:
    data = frame(30000)
    with tempfile.TemporaryDirectory() as tmp:
        for a_fast, b_fast in ((True, False), (False, True)):
            sub = os.path.join(tmp, str(a_fast))
            os.mkdir(sub)
            a, b = Node("127.0.0.1", sub, a_fast), Node("127.0.0.2", sub, b_fast)
            try:
                a.dp.peers, b.dp.peers = {b.addr: b.dp.session}, {a.addr: a.dp.session}
                a.net.macs = {bytes.fromhex("02420a000003"): b.addr}
                a.from_tap(data)
                b.receive()
                assert b.delivered() == [data], (a_fast, b_fast)
            finally:
                a.close()
                b.close()


def test_replays_and_tampering_through_the_socket(pair: tuple[Node, Node]) -> None:
    """What the C receiver opens itself: a whole frame in one GRO buffer."""
    a, b = pair
    data = frame(20000)
    dgrams = sealed(a, b, data, counter=11)
    gso_send(a, b, dgrams)
    b.receive()
    assert b.delivered() == [data]
    gso_send(a, b, dgrams)  # the same frame again
    b.receive()
    assert b.delivered() == []
    assert b.net.stats["rx_drop_replayed"] == 1
    # One window whichever path opens: a frame opened from the socket (by the C receiver,
    # when it runs) is a replay when it comes again through the Python path.
    small = sealed(a, b, frame(300), counter=13)
    gso_send(a, b, small)
    b.receive()
    assert len(b.delivered()) == 1
    feed(b, a.addr, small)
    assert b.delivered() == []
    assert b.net.stats["rx_drop_replayed"] == 2
    bad = [bytearray(d) for d in sealed(a, b, data, counter=12)]
    bad[2][wire.HEADER_LEN + 7] ^= 0x80
    gso_send(a, b, [bytes(d) for d in bad])
    b.receive()
    assert b.delivered() == []
    assert b.net.stats["rx_drop_auth_failed"] == 1
    gso_send(a, b, sealed(a, b, data, counter=12))  # the genuine one is still welcome
    b.receive()
    assert b.delivered() == [data]


def test_arp_for_a_remote_container_is_answered_from_the_tap(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    remote_mac, remote_ip = bytes.fromhex("02420a000003"), bytes([10, 0, 0, 3])
    a.net.arp = {remote_ip: remote_mac}
    me_mac, me_ip = bytes.fromhex("02420a000002"), bytes([10, 0, 0, 2])
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + me_mac + me_ip + bytes(6) + remote_ip
    request = bytes(wire.VNET_HDR_LEN) + b"\xff" * 6 + me_mac + b"\x08\x06" + arp
    a.from_tap(request)
    (reply,) = a.delivered()
    assert reply[wire.VNET_HDR_LEN :][:6] == me_mac
    assert reply[wire.VNET_HDR_LEN + 6 : wire.VNET_HDR_LEN + 12] == remote_mac
    assert a.net.stats["proxy_replies"] == 1
    # A frame for a MAC no node has: counted, not sent.
    a.from_tap(
        bytes(wire.VNET_HDR_LEN) + bytes.fromhex("02420a0000ff") + me_mac + b"\x08\x00" + bytes(50)
    )
    assert a.net.stats["tx_drop_no_route"] == 1
    assert a.net.stats["tx_packets"] == 0


def test_counters_never_repeat_between_the_c_and_python_senders(pair: tuple[Node, Node]) -> None:
    a, b = pair
    a.from_tap(frame(100), frame(100))
    a.dp.send(a.net, b.addr, frame(100))
    a.from_tap(frame(100))
    counters = []
    assert b.dp.sock is not None
    for _ in range(4):
        select.select([b.dp.sock], [], [], 2)
        d = b.dp.sock.recv(1 << 17)
        counters.append(wire.unpack_header(d)[5])
    assert counters == [1, 2, 3, 4]


def test_a_new_epoch_is_sent_with_and_received(pair: tuple[Node, Node]) -> None:
    a, b = pair
    new = bytes(range(1, 33))
    b.net.keys = {1: KEY, 2: new}
    a.net.keys, a.net.send_epoch = {1: KEY, 2: new}, 2
    data = frame(3000)
    a.from_tap(data)
    b.receive()
    assert b.delivered() == [data]
    # The old epoch retired at b: a's frames sealed with it are dropped, counted.
    b.net.keys = {2: new}
    b.dp._current_senders()
    gso_send(a, b, sealed(a, b, data, counter=99, epoch=1))
    b.receive()
    assert b.delivered() == []
    assert b.net.stats["rx_drop_unknown_epoch"] == 1


def test_the_c_replay_window_decides_as_the_python_one() -> None:
    """RxRoute's ring of bits (RFC 6479) against wire.ReplayWindow, the reference, over
    sequences that reorder, repeat and jump past the window."""
    import random

    assert FAST is not None
    rng = random.Random(12)
    for _ in range(20):
        c_win = FAST.RxRoute(KEY, -1, array_of_counters())
        ref = wire.ReplayWindow()
        top = 0
        for _ in range(3000):
            r = rng.random()
            if r < 0.5:
                top += rng.randint(1, 3)
                counter = top
            elif r < 0.8:
                counter = max(1, top - rng.randint(0, wire.REPLAY_WINDOW + 50))
            elif r < 0.95:
                counter = max(1, top - rng.randint(0, 64))
            else:
                top += rng.randint(wire.REPLAY_WINDOW - 5, 3 * wire.REPLAY_WINDOW)
                counter = top
            ok = ref.check(counter)
            assert c_win.check(counter) == ok, counter
            if ok:
                ref.accept(counter)
                c_win.accept(counter)


def array_of_counters() -> object:
    from tether.crypt.datapath import Stats

    return Stats().a


def test_a_new_data_port_keeps_the_replay_windows(pair: tuple[Node, Node]) -> None:
    """The port is no part of any key: frames recorded before tetherd moved the data port
    (config with another port: a new socket) are still replays on the new one."""
    a, b = pair
    recorded = sealed(a, b, frame(2000), counter=21)
    gso_send(a, b, recorded)
    b.receive()
    assert len(b.delivered()) == 1
    port = PORT + 1000  # another range than any test process's PORT
    b.dp.configure(b.addr, port, 1500)
    gso_send(a, b, recorded, port)
    b.receive()
    assert b.delivered() == []
    assert b.net.stats["rx_drop_replayed"] == 1
    # And what is new still opens there.
    gso_send(a, b, sealed(a, b, frame(2000), counter=22), port)
    b.receive()
    assert len(b.delivered()) == 1


def test_a_datagram_larger_than_ours_from_a_node_of_a_larger_mtu_opens(
    pair: tuple[Node, Node],
) -> None:
    """A node whose underlay MTU is larger sends datagrams larger than ours: a frame in one
    such datagram opens (the scatter receive spread it over two of our slots)."""
    a, b = pair
    data = frame(3000)
    k = wire.pair_key(KEY, VNI, 1, a.addr, a.dp.session, b.addr, b.dp.session)
    (dgram,) = wire.seal(k, VNI, 1, a.dp.session, 30, data, wire.chunk_size(9000))
    assert len(dgram) > b.dp.seg
    gso_send(a, b, [dgram])
    b.receive()
    assert b.delivered() == [data]
    assert b.net.stats["rx_packets"] == 1


def test_an_epoch_that_comes_back_keeps_its_replay_window(pair: tuple[Node, Node]) -> None:
    """tetherd's plan can drop an epoch and hold it again (the send epoch steps back when a
    node joins before every node acknowledged the newest): frames recorded under it are
    still replays when it is back.  A key that really changed starts a new window."""
    import base64

    a, b = pair
    new = bytes(range(1, 33))

    def keys(ks: dict[int, bytes], send: int) -> None:
        enc = {str(e): base64.b64encode(k).decode() for e, k in ks.items()}
        assert b.dp.handle({"op": "keys", "vni": VNI, "keys": enc, "send": send})["ok"]

    recorded = sealed(a, b, frame(2000), counter=40)
    gso_send(a, b, recorded)
    b.receive()
    assert len(b.delivered()) == 1
    keys({2: new}, 2)
    keys({1: KEY, 2: new}, 1)
    gso_send(a, b, recorded)
    b.receive()
    assert b.delivered() == []
    assert b.net.stats["rx_drop_replayed"] == 1
    # Epoch 1 with another key: nothing sealed with the old one opens, new frames do.
    keys({1: new, 2: new}, 1)
    gso_send(a, b, recorded)
    b.receive()
    assert b.delivered() == []
    assert b.net.stats["rx_drop_auth_failed"] == 1
    gso_send(a, b, sealed(a, b, frame(2000), counter=40, key=new))
    b.receive()
    assert len(b.delivered()) == 1


def test_the_c_objects_never_count_again_nor_open_without_a_key() -> None:
    """Made again, a Sender would count from 0 under the same keys (nonces reused); an
    RxRoute or Receiver that was never made has no key or buffers to work with.  Each
    refuses, in a child: what this guards against was a crash."""
    import subprocess
    import sys

    assert FAST is not None
    code = """
import sys
from tether.crypt.datapath import load_fast
F = load_fast()
s = F.Sender(5)
s.next(), s.next()
try:
    s.__init__(5)
except RuntimeError:
    pass
assert s.next() == 3, "counted again"
r = F.RxRoute.__new__(F.RxRoute)
for call in (lambda: r.open_into(1, bytes(40), bytes(24), bytearray(40)),
             lambda: setattr(r, "active", True),
             lambda: F.Receiver.__new__(F.Receiver).configure(0, 1472),
             lambda: F.Sender.__new__(F.Sender).configure(0, 1472)):
    try:
        call()
    except RuntimeError:
        continue
    sys.exit("accepted")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-500:] or r.returncode


def test_the_c_replay_window_decides_as_the_python_one_over_all_64_bits() -> None:
    """Counters are 64 bits: one with its top bit set (a forged header, in practice) is
    decided as wire.ReplayWindow does, so its drop is counted by its real reason."""
    assert FAST is not None
    for start in (2**63 - 3, 2**64 - 5000):
        c_win = FAST.RxRoute(KEY, -1, array_of_counters())
        ref = wire.ReplayWindow()
        for counter in (5, start, start + 2, start + 1, start + 2, 7, 2**64 - 1, start + 3):
            ok = ref.check(counter)
            assert c_win.check(counter) == ok, counter
            if ok:
                ref.accept(counter)
                c_win.accept(counter)
    # A forged counter's drop: auth_failed on both paths, never replayed.
    fresh = FAST.RxRoute(KEY, -1, array_of_counters())
    assert fresh.check(2**63)
