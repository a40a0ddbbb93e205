"""Encrypted overlays (-o encrypted) across nodes: what crosses the underlay, and what not.

Nodes are namespace-hosts on an underlay bridge with a real etcd cluster (test_overlay.py's
three_nodes).  What a user would check: the lesson's exercise 5 (a marker sent over the
encrypted network never shows in a capture of the underlay, while it does over a plain
overlay), and that tampered, replayed and foreign packets are dropped and counted, a key
rotation leaves a running TCP stream alone, the data path survives tetherd and comes back
from its own kill -9 without a plaintext packet meanwhile, and a node gone from the
cluster gets no part of the next key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_overlay import WEB, Nodes, reach, three_nodes, wait_for

from cluster import run_in_netns
from nshost import NamespaceHost

pytestmark = pytest.mark.integration

CRYPT_PORT = 4800
VXLAN_PORT = 4789
MARKER_SEC = "SECRET-MARKER-" + secrets.token_hex(6)
MARKER_PLAIN = "PLAIN-MARKER-" + secrets.token_hex(6)


# -- capturing the underlay ----------------------------------------------------------------


@dataclass
class Packet:
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    fragment: bool


@dataclass
class Capture:
    path: str
    raw: bytes = b""
    packets: list[Packet] = field(default_factory=list)

    def load(self) -> None:
        with open(self.path, "rb") as f:
            self.raw = f.read()
        self.packets = list(_parse_pcap(self.raw))

    def udp(self, port: int) -> list[Packet]:
        return [p for p in self.packets if port in (p.dport, p.sport)]


def _parse_pcap(data: bytes) -> Iterator[Packet]:
    """IPv4/UDP packets of a classic pcap file (Ethernet link type), as tcpdump -w writes."""
    if len(data) < 24:
        return
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    off = 24
    while off + 16 <= len(data):
        _s, _us, incl, _orig = struct.unpack(endian + "IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        flags_frag = struct.unpack(">H", ip[6:8])[0]
        fragment = bool(flags_frag & 0x2000) or bool(flags_frag & 0x1FFF)
        if ip[9] != 17:
            continue
        udp = ip[ihl:]
        sport, dport = struct.unpack(">HH", udp[:4])
        yield Packet(
            socket.inet_ntoa(ip[12:16]),
            socket.inet_ntoa(ip[16:20]),
            sport,
            dport,
            udp[8:],
            fragment,
        )


@contextlib.contextmanager
def underlay_capture(c: Nodes, seconds: int = 60, port: str = "n1") -> Iterator[Capture]:
    """tcpdump on node 1's port of the underlay bridge (every packet to or from node 1: a
    capture on br0 itself would see only what the bridge floods), bounded in time."""
    path = os.path.join(c.cluster.dir, f"underlay-{secrets.token_hex(3)}.pcap")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", c.cluster.underlay, "timeout", str(seconds),
         "tcpdump", "-i", port, "-n", "--immediate-mode", "-U", "-s", "0", "-w", path, "udp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    started = proc.stderr.readline().decode()  # "listening on br0 ...": capturing now
    assert "listening" in started, started
    cap = Capture(path)
    try:
        yield cap
    finally:
        time.sleep(0.3)  # what is in flight
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
        cap.load()


# -- helpers -------------------------------------------------------------------------------


def counters(h: NamespaceHost, net: str) -> dict[str, int]:
    enc = h.inspect_network(net)["Encryption"]
    dp = enc["DataPath"] or {}
    return {
        **dp.get("Counters", {}),
        **{"node_" + k: v for k, v in dp.get("NodeCounters", {}).items()},
    }


def encryption(h: NamespaceHost, net: str) -> dict[str, Any]:
    data: dict[str, Any] = h.inspect_network(net)["Encryption"]
    return data


def send_from(netns: str, src: str, dst: str, port: int, payloads: list[bytes]) -> None:
    """UDP datagrams from an address of a node's namespace (what a node could send)."""

    def send() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((src, 0))
            for p in payloads:
                s.sendto(p, (dst, port))
        finally:
            s.close()

    run_in_netns(netns, send, 10)


def spoof(netns: str, src: str, dst: str, port: int, payload: bytes, count: int = 1) -> None:
    """A UDP packet with someone else's source address (a raw socket in `netns`)."""

    def send() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            udp = struct.pack(">HHHH", 40000, port, 8 + len(payload), 0) + payload
            ip = struct.pack(
                ">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                socket.inet_aton(src), socket.inet_aton(dst),
            )  # fmt: skip
            for _ in range(count):
                s.sendto(ip + udp, (dst, 0))
        finally:
            s.close()

    run_in_netns(netns, send, 10)


def encrypted_pair(c: Nodes, name: str = "sec") -> tuple[NamespaceHost, NamespaceHost]:
    a, b = c.hosts[0], c.hosts[1]
    a.ok("network", "create", "-d", "overlay", "--attachable", "-o", "encrypted", name)
    for h in c.hosts:
        wait_for(f"{name} on every node", lambda h=h: name in h.ok("network", "ls"))
    return a, b


def iperf_pair(c: Nodes) -> tuple[NamespaceHost, NamespaceHost, str]:
    """encrypted_pair, with an iperf3 server `srv` on node 2 that a container `cli` on node 1
    reaches: (node 1, node 2, srv's address)."""
    a, b = encrypted_pair(c)
    b.ok("run", "-d", "--name", "srv", "--network", "sec", "host", "iperf3", "-s")
    a.ok("run", "-d", "--name", "cli", "--network", "sec", "host", "sleep", "600")
    ip = b.ip_of("srv", "sec")
    wait_for(
        "srv reachable",
        lambda: a.cli("exec", "cli", "busybox", "ping", "-c1", "-W1", ip).returncode == 0,
        20,
    )
    return a, b, ip


def web(page: str) -> list[str]:
    return ["sh", "-c", f"echo {page} > /www/index.html && exec httpd -f -p 80 -h /www"]


def fetch(h: NamespaceHost, client: str, target: str) -> str:
    r = h.cli("exec", client, "timeout", "5", "wget", "-qO-", f"http://{target}/")
    return r.stdout if r.returncode == 0 else ""


# -- exercise 5: ciphertext on the underlay ------------------------------------------------


def test_a_marker_is_ciphertext_on_the_encrypted_overlay_and_plaintext_on_a_plain_one(
    host: NamespaceHost,
) -> None:
    del host
    with three_nodes(2) as c:
        a, b = encrypted_pair(c)
        a.ok("network", "create", "-d", "overlay", "--attachable", "plain")
        wait_for("plain on node 2", lambda: "plain" in b.ok("network", "ls"))
        info = a.inspect_network("sec")
        assert info["Options"]["encrypted"] == ""  # as Docker shows it
        vni = _vni(a, "sec")
        sec_id = info["Id"][:12]
        # Each node: a TAP port to tether-crypt on the bridge, no VXLAN device; MTU
        # underlay - 96 (the seal fits one datagram).
        for h in c.hosts:
            links = h.links()
            assert f"ex-{sec_id}" in links and f"vx-{sec_id}" not in links
            assert links[f"ex-{sec_id}"]["mtu"] == 1500 - 96
            guard = h.sh("nft list chain inet tether guard_out").stdout
            assert "@th,96,24" in guard and f"{vni:#x}" in guard  # (nft shows the id in hex)

        a.ok("run", "-d", "--name", "web-sec", "--network", "sec", "busybox", *web(MARKER_SEC))
        a.ok(
            "run", "-d", "--name", "web-plain", "--network", "plain", "busybox", *web(MARKER_PLAIN)
        )
        b.ok("run", "-d", "--name", "cli-sec", "--network", "sec", "busybox", "sleep", "600")
        b.ok("run", "-d", "--name", "cli-plain", "--network", "plain", "busybox", "sleep", "600")
        wait_for("web-sec by name", lambda: MARKER_SEC in fetch(b, "cli-sec", "web-sec"), 20)
        # The frames were moved by the C data path (_fastcrypt.c), as on every machine that
        # ./run install prepared; "Python" here would mean it failed to build.
        for h in (a, b):
            assert encryption(h, "sec")["DataPath"]["Engine"] == "C"
        wait_for(
            "web-plain by name", lambda: MARKER_PLAIN in fetch(b, "cli-plain", "web-plain"), 20
        )

        with underlay_capture(c) as cap:
            for _ in range(3):
                assert MARKER_SEC in fetch(b, "cli-sec", "web-sec")
                assert MARKER_PLAIN in fetch(b, "cli-plain", "web-plain")
        # The encrypted network's page crossed (sealed), the plain one's in the clear.
        sealed = cap.udp(CRYPT_PORT)
        assert len(sealed) >= 6, "no encrypted traffic seen on the underlay"
        assert {(p.src, p.dst) for p in sealed} >= {
            ("10.99.0.11", "10.99.0.12"),
            ("10.99.0.12", "10.99.0.11"),
        }
        assert MARKER_SEC.encode() not in cap.raw
        assert MARKER_PLAIN.encode() in cap.raw
        assert all(p.payload[0] == 0xE1 for p in sealed)  # tether-crypt's header, then ciphertext
        # No plain VXLAN of the encrypted network's id, and no IP fragments at all.
        assert not [p for p in cap.udp(VXLAN_PORT) if _vni_of(p.payload) == vni]
        assert not [p for p in cap.packets if p.fragment]
        # Each node counted what it sealed and opened, and dropped nothing.
        ca, cb = counters(a, "sec"), counters(b, "sec")
        assert ca["tx_packets"] > 0 and ca["rx_packets"] > 0 and cb["rx_packets"] > 0
        assert not {
            k: v for k, v in {**ca, **cb}.items() if "drop" in k and "multicast" not in k and v
        }


def _vni(h: NamespaceHost, net: str) -> int:
    return int(encryption(h, net)["NetworkId"])


def _vni_of(vxlan: bytes) -> int:
    return int.from_bytes(vxlan[4:7], "big") if len(vxlan) >= 8 else -1


# -- tampering, replay, foreign packets ----------------------------------------------------


def test_tampered_replayed_and_foreign_packets_are_dropped_and_counted(host: NamespaceHost) -> None:
    del host
    with three_nodes(2) as c:
        a, b = encrypted_pair(c)
        a.ok("run", "-d", "--name", "w1", "--network", "sec", "busybox", *WEB)
        b.ok("run", "-d", "--name", "w2", "--network", "sec", "busybox", *WEB)
        ip2 = b.ip_of("w2", "sec")
        wait_for(
            "w2 reachable",
            lambda: a.cli("exec", "w1", "ping", "-c1", "-W1", ip2).returncode == 0,
            20,
        )
        node1, node2 = c.cluster.nodes[0], c.cluster.nodes[1]
        with underlay_capture(c) as cap:
            a.ok("exec", "w1", "ping", "-c", "2", "-s", "200", ip2)
        one = [p.payload for p in cap.udp(CRYPT_PORT) if p.src == node1.ip and len(p.payload) > 200]
        assert one, "no sealed ping seen"
        genuine = one[0]
        before = counters(b, "sec")

        # Replayed: the very datagram again, from node 1's own address.
        send_from(node1.netns, node1.ip, node2.ip, CRYPT_PORT, [genuine, genuine])

        def fresh(p: bytes, n: int) -> bytearray:
            # A counter never used (else the replay window drops it before it is opened).
            out = bytearray(p)
            out[20:28] = (1 << 40 | n).to_bytes(8, "big")
            return out

        # Tampered: the counter alone (associated data), a bit of the ciphertext, of the tag.
        tampered = [fresh(genuine, 1)]
        for n, where in ((2, 40), (3, len(genuine) - 1)):
            bad = fresh(genuine, n)
            bad[where] ^= 0x04
            tampered.append(bad)
        # Truncated; sealed with a key nobody gave out; garbage.
        cut = fresh(genuine, 4)[:-7]
        forged = fresh(genuine, 5)
        forged[28:] = os.urandom(len(genuine) - 28)
        send_from(
            node1.netns,
            node1.ip,
            node2.ip,
            CRYPT_PORT,
            [bytes(x) for x in (*tampered, cut, forged)] + [genuine[:20], b"\x00" * 64],
        )

        def grew(reason: str, by: int) -> bool:
            return counters(b, "sec")[reason] - before[reason] >= by

        wait_for("replays counted", lambda: grew("rx_drop_replayed", 2), 5)
        assert grew("rx_drop_auth_failed", 3 + 1 + 1)  # tampered x3, cut short, forged
        assert counters(b, "sec")["node_rx_drop_malformed"] - before["node_rx_drop_malformed"] >= 2
        assert counters(b, "sec")["rx_packets"] == before["rx_packets"]  # none got through

        # Foreign: not a node's address.  nftables drops it before tether-crypt sees it.
        guard = "nft list chain inet tether guard"
        dropped = _rule_packets(b.sh(guard).stdout, f"udp dport {CRYPT_PORT}")
        send_from(c.cluster.underlay, "10.99.0.1", node2.ip, CRYPT_PORT, [genuine] * 3)
        assert _rule_packets(b.sh(guard).stdout, f"udp dport {CRYPT_PORT}") == dropped + 3
        # Plain VXLAN of the encrypted network's id, from a node (a device made by hand): dropped
        # on the way out by the sender...
        vni = _vni(a, "sec")
        a.sh(
            f"ip link add vxhand type vxlan id {vni} local {node1.ip} remote {node2.ip} dstport "
            f"{VXLAN_PORT} && ip addr add 192.0.2.1/30 dev vxhand && ip link set vxhand up"
        )
        with underlay_capture(c) as cap2:
            a.sh("ping -c 3 -W 1 192.0.2.2", check=False)
        assert not [p for p in cap2.udp(VXLAN_PORT) if _vni_of(p.payload) == vni]
        assert _rule_packets(a.sh("nft list chain inet tether guard_out").stdout, "@th,96,24") > 0
        a.sh("ip link del vxhand")
        # Even a plain socket of the node cannot send one (nftables refuses it: EPERM)...
        vxlan = bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0" + bytes(64)
        with pytest.raises(PermissionError):
            send_from(node1.netns, node1.ip, node2.ip, VXLAN_PORT, [vxlan])
        # ...and on the way in, one claiming to come from node 1 is dropped by the receiver.
        before_in = _rule_packets(b.sh(guard).stdout, "@th,96,24")
        spoof(c.cluster.underlay, node1.ip, node2.ip, VXLAN_PORT, vxlan, count=2)
        wait_for(
            "the receiver's drop",
            lambda: _rule_packets(b.sh(guard).stdout, "@th,96,24") == before_in + 2,
            5,
        )

        # The genuine path is unharmed: the window moved only for genuine packets.
        assert a.cli("exec", "w1", "ping", "-c1", "-W2", ip2).returncode == 0
        assert reach(a, "w1", "w2")


def _rule_packets(chain: str, needle: str) -> int:
    for line in chain.splitlines():
        if needle in line and "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    raise AssertionError(f"no counted rule with {needle!r} in:\n{chain}")


# -- rotation under a running TCP stream ---------------------------------------------------


def test_key_rotation_does_not_disturb_a_running_tcp_stream(host: NamespaceHost) -> None:
    del host
    with three_nodes(2) as c:
        a, b, ip = iperf_pair(c)
        assert encryption(a, "sec")["KeyEpoch"] == 1
        result: dict[str, Any] = {}

        def stream() -> None:
            # 10 s at a bounded rate: the point is continuity, not speed (the bench measures that).
            r = a.cli(
                "exec",
                "cli",
                "iperf3",
                "-c",
                ip,
                "-t",
                "10",
                "-i",
                "1",
                "-b",
                "200M",
                "-J",
                timeout=60,
            )
            result["out"], result["rc"] = r.stdout, r.returncode

        t = threading.Thread(target=stream)
        t.start()
        time.sleep(2.5)
        assert "key epoch 2" in a.ok("network", "rotate-key", "sec")
        time.sleep(3)
        assert "key epoch 3" in b.ok("network", "rotate-key", "sec")
        t.join(90)
        assert result.get("rc") == 0, result
        report = json.loads(result["out"])
        per_second = [i["sum"]["bytes"] for i in report["intervals"]]
        assert len(per_second) >= 9 and min(per_second) > 0, per_second  # never a stalled second
        assert report["end"]["sum_received"]["bytes"] > 0.6 * 200e6 / 8 * 10
        # Both nodes hold and send with the newest key; nothing was dropped on the way.
        for h in (a, b):
            wait_for("epoch 3 everywhere", lambda h=h: encryption(h, "sec")["SendEpoch"] == 3, 15)
            got = counters(h, "sec")
            drops = {k: v for k, v in got.items() if k.startswith("rx_drop") and v}
            assert not drops, drops
        keys = [k for k in c.etcd_keys() if "/crypt/keys/" in k]
        # Two epochs are kept (current and previous), each sealed for both nodes.
        assert sorted({k.split("/")[-2] for k in keys}) == ["2", "3"]
        assert len(keys) == 4


def test_keys_rotate_on_schedule_over_a_tls_cluster_store(
    host: NamespaceHost, tmp_path: Any
) -> None:
    """The schedule (--encryption-key-rotation, 12 h by default, 10 s here) rotates keys by
    itself, under a running TCP stream, with etcd reached only over TLS with client
    certificates (the trust model's recommendation, docs/encryption.md)."""
    from test_overlay import assert_nothing_left_in_etcd, start_node

    from cluster import Cluster, make_tls

    del host
    tls = make_tls(os.path.join(str(tmp_path), "tls"), ["10.99.0.11"])
    cluster = Cluster(nodes=2, members=1, tls=tls)
    cluster.start()
    assert cluster.endpoints.startswith("https://")  # no plain-HTTP client URL at all
    opts = [
        "--cluster-store-opt", f"kv.cacertfile={tls.ca}",
        "--cluster-store-opt", f"kv.certfile={tls.client_cert}",
        "--cluster-store-opt", f"kv.keyfile={tls.client_key}",
        "--encryption-key-rotation", "10s",
    ]  # fmt: skip
    hosts: list[NamespaceHost] = []
    try:
        for i in range(2):
            hosts.append(start_node(cluster, i, opts))
        c = Nodes(cluster, hosts)
        a, b, ip = iperf_pair(c)
        first = encryption(a, "sec")["KeyEpoch"]
        r = a.cli(
            "exec", "cli", "iperf3", "-c", ip, "-t", "24", "-i", "1", "-b", "100M", "-J",
            timeout=90,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-800:] + r.stderr
        per_second = [i["sum"]["bytes"] for i in json.loads(r.stdout)["intervals"]]
        assert len(per_second) >= 23 and min(per_second) > 0, per_second
        # 24 s at one key every 10 s: at least two rotations happened during the stream, made
        # by the schedule alone (nobody asked), and every node sends with the newest key.
        last = encryption(a, "sec")["KeyEpoch"]
        assert last >= first + 2, (first, last)
        for h in (a, b):
            enc = encryption(h, "sec")
            assert enc["KeyEpoch"] >= last and enc["KeyHolders"] == ["node1", "node2"]
            drops = {k: v for k, v in counters(h, "sec").items() if k.startswith("rx_drop") and v}
            assert not drops, drops
        # Only the current and the previous epochs stay in the store.
        epochs = {int(k.split("/")[-2]) for k in c.etcd_keys() if "/crypt/keys/" in k}
        assert len(epochs) <= 2 and max(epochs) >= last, epochs
        for h in hosts:
            h.cli("rm", "-f", "srv", "cli")
        assert_nothing_left_in_etcd(c)
    finally:
        for h in hosts:
            h.cleanup()
        cluster.cleanup()


# -- the data path survives tetherd; tetherd brings it back ---------------------------------


def _crypt_pid(h: NamespaceHost) -> int:
    dp = encryption(h, "sec")["DataPath"]
    return int(dp.get("Pid", 0)) if dp else 0  # ({"Error": ...} while it is gone)


def test_the_data_path_outlives_tetherd_and_comes_back_from_kill_9_without_plaintext(
    host: NamespaceHost,
) -> None:
    del host
    # The product's lease TTL (10 s), not the suite's 4 s: tetherd killed and started again
    # takes ~3-4 s on this loaded VM, and a restart that lands as its old lease expires
    # loses its endpoint records for up to a minute (the cluster's reconcile sees them in
    # its relist and does not move them to the new lease: reported, not this test's
    # subject).  What is proven is unchanged: traffic while tetherd is dead, adoption of
    # the same process, and no plaintext while tether-crypt itself restarts.
    with three_nodes(2, ["--cluster-store-opt", "discovery.ttl=10s"]) as c:
        a, b = encrypted_pair(c)
        a.ok("run", "-d", "--name", "w1", "--network", "sec", "busybox", *web(MARKER_SEC))
        b.ok("run", "-d", "--name", "w2", "--network", "sec", "busybox", "sleep", "600")
        ip1 = a.ip_of("w1", "sec")
        wait_for("w1 from node 2", lambda: MARKER_SEC in fetch(b, "w2", ip1), 20)
        pid = _crypt_pid(a)
        assert pid

        # tetherd killed: the data path carries on; the next tetherd adopts it.
        a.kill()
        assert os.path.exists(f"/proc/{pid}")
        assert MARKER_SEC in fetch(b, "w2", ip1)
        a.start()
        assert _crypt_pid(a) == pid
        assert MARKER_SEC in fetch(b, "w2", ip1)

        # tether-crypt killed: frames on the TAP go nowhere until tetherd has started it
        # again (new process, new session); not one leaves in the clear meanwhile.
        stop = threading.Event()

        def traffic() -> None:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                b.cli("exec", "w2", "timeout", "2", "wget", "-qO-", f"http://{ip1}/")

        with underlay_capture(c) as cap:
            t = threading.Thread(target=traffic)
            t.start()
            time.sleep(1)
            os.kill(pid, 9)
            started = time.monotonic()
            wait_for("a new tether-crypt", lambda: _crypt_pid(a) not in (0, pid), 10)
            try:
                wait_for("traffic back", lambda: MARKER_SEC in fetch(b, "w2", ip1), 15)
            except AssertionError:
                raise AssertionError(
                    f"traffic did not come back: node1 {encryption(a, 'sec')}\n"
                    f"node2 {encryption(b, 'sec')}"
                ) from None
            resumed = time.monotonic() - started
            stop.set()
            t.join(40)
        assert resumed < 15
        assert MARKER_SEC.encode() not in cap.raw
        vni = _vni(a, "sec")
        assert not [p for p in cap.udp(VXLAN_PORT) if _vni_of(p.payload) == vni]
        assert cap.udp(CRYPT_PORT)  # sealed traffic before and after


# -- a node that left the cluster ----------------------------------------------------------


def _sealed_values(c: Nodes, net_id: str, epoch: int) -> dict[str, bytes]:
    """The stored sealed copies of one epoch's key, by node (read straight from etcd)."""
    prefix = f"/tether/crypt/keys/{net_id}/{epoch}/"
    body = {
        "key": base64.b64encode(prefix.encode()).decode(),
        "range_end": base64.b64encode(prefix[:-1].encode() + b"0").decode(),
    }
    data = c.cluster._any_member("/v3/kv/range", body)
    return {
        base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]: base64.b64decode(kv["value"])
        for kv in data.get("kvs", [])
    }


def test_a_node_that_left_the_cluster_gets_no_part_of_the_next_key(host: NamespaceHost) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from tether.crypt.keyring import open_sealed

    del host
    with three_nodes(3) as c:
        a, _, d = c.hosts
        encrypted_pair(c)
        net_id = a.inspect_network("sec")["Id"]
        a.ok("run", "-d", "--name", "w1", "--network", "sec", "busybox", *WEB)
        d.ok("run", "-d", "--name", "w3", "--network", "sec", "busybox", *WEB)
        ip1 = a.ip_of("w1", "sec")
        wait_for("epoch 1 sealed for all three", lambda: len(_sealed_values(c, net_id, 1)) == 3, 15)
        wait_for("w1 from node 3", lambda: reach(d, "w3", "w1"), 20)
        sandbox3 = d.api.get("/containers/w3/json")["NetworkSettings"]["SandboxKey"]
        with open(os.path.join(d.root, "crypt", "node.key"), "rb") as f:
            identity3 = X25519PrivateKey.from_private_bytes(f.read())

        def probe_ok() -> bool:
            # From w3's own network namespace (its node's tetherd may be down).
            def get() -> bool:
                try:
                    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                    with opener.open(f"http://{ip1}/", timeout=2) as resp:
                        return bytes(resp.read()).startswith(b"hello-")
                except OSError:
                    return False

            return run_in_netns(sandbox3, get, 10)

        assert probe_ok()  # (the probe works while node 3 is in the cluster)
        # Node 3's tetherd dies; its lease ends; the cluster rotates.
        d.kill()
        wait_for(
            "node 3 down",
            lambda: "node3 Down" in a.ok("node", "ls", "--format", "{{.Hostname}} {{.Status}}"),
            15,
        )
        assert "key epoch 2" in a.ok("network", "rotate-key", "sec")
        wait_for("epoch 2 stored", lambda: len(_sealed_values(c, net_id, 2)) >= 2, 10)
        time.sleep(1.5)  # a wrap round: nothing more is sealed for node 3
        sealed2 = _sealed_values(c, net_id, 2)
        assert sorted(sealed2) == ["node1", "node2"]
        # Node 3's own private key opens none of them: reading etcd gives it nothing.
        for node, value in sealed2.items():
            with pytest.raises(Exception):  # noqa: B017 (InvalidTag, or a KEM error)
                open_sealed(identity3, value, net_id, 2, node)
        # Node 3's data path (still running with epoch 1) reaches nobody any more.
        wait_for("node 3 cut off", lambda: not probe_ok(), 40)
        got = counters(a, "sec")
        assert got["rx_drop_unknown_sender"] + got["rx_drop_unknown_epoch"] > 0

        # Back in the cluster (a new lease), node 3 is given the current key and talks again.
        d.start()
        wait_for("epoch 2 given to node 3", lambda: "node3" in _sealed_values(c, net_id, 2), 20)
        wait_for("node 3 back", lambda: reach(d, "w3", "w1"), 30)


# -- compose and refusals ------------------------------------------------------------------


def test_compose_driver_opts_encrypted_makes_an_encrypted_overlay(
    host: NamespaceHost, tmp_path: Any
) -> None:
    del host
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "name: vault\n"
        "services:\n"
        "  web:\n"
        "    image: busybox\n"
        f'    command: ["sh", "-c", "echo {MARKER_SEC} > /www/index.html && exec httpd -f -p 80 -h /www"]\n'
        "    networks: [secure]\n"
        "networks:\n"
        "  secure:\n"
        "    driver: overlay\n"
        "    attachable: true\n"
        "    driver_opts:\n"
        '      encrypted: ""\n'
    )
    with three_nodes(2) as c:
        a, b = c.hosts
        a.ok("compose", "-f", str(compose), "up", "-d")
        info = a.inspect_network("vault_secure")
        assert info["Options"].get("encrypted") == ""
        wait_for("the network on node 2", lambda: "vault_secure" in b.ok("network", "ls"))
        assert f"ex-{info['Id'][:12]}" in b.links()
        b.ok("run", "-d", "--name", "cli", "--network", "vault_secure", "busybox", "sleep", "600")
        wait_for("web by name from node 2", lambda: MARKER_SEC in fetch(b, "cli", "web"), 20)
        with underlay_capture(c) as cap:
            assert MARKER_SEC in fetch(b, "cli", "web")
        assert MARKER_SEC.encode() not in cap.raw and cap.udp(CRYPT_PORT)
        # An option the overlay driver does not act on is refused by name, nothing made.
        r = a.cli("network", "create", "-d", "overlay", "-o", "encrypt=yes", "typo")
        assert r.returncode != 0 and "encrypt" in r.stderr and r.stderr.count("\n") == 1
        assert "typo" not in a.ok("network", "ls")
        b.ok("rm", "-f", "cli")
        a.ok("compose", "-f", str(compose), "down")
