"""Encrypted overlay (issue 12): throughput, latency, CPU and fragments, against the plain
overlay and the underlay, in one run.

    .venv/bin/python bench/bench_encrypted.py [ROUNDS] [SECONDS]   (default 5 rounds of 8 s)

Two nodes (namespace-hosts on an underlay bridge, a one-member etcd, a tetherd each, as in
tests/cluster.py); on them an encrypted overlay (-o encrypted: tether-crypt, AES-256-GCM)
and a plain one (kernel VXLAN), an iperf3 server container on node 2 and a client container
on node 1 in each, and iperf3 between the nodes' own namespaces for the underlay.  Each round
runs the three single TCP streams one after the other (the order turns every round) and
records, per stream: the receiver's Gbit/s, the machine's CPU time (/proc/stat) and, for the
encrypted one, the two tether-crypt processes' own CPU time, and the IP fragments that
crossed node 1's underlay port (tcpdump, kernel filter `ip[6:2] & 0x3fff != 0`).  Then ping
RTTs (busybox ping, 50 x 0.1 s) over each path, and a short capture of the encrypted stream's
datagrams (their sizes on the underlay).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

from common import loadavg, save, stats

from cluster import Cluster
from nshost import NamespaceHost

CLK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK, sum(fields) / CLK


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0, 0.0
    return int(fields[11]) / CLK, int(fields[12]) / CLK


def crypt_cpu(pids: list[int]) -> tuple[float, float]:
    times = [proc_cpu(p) for p in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def crypt_pid(h: NamespaceHost) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"tether.crypt.datapath" in cmd and h.exec_root.encode() in cmd:
            return int(pid)
    return 0


def crypto_rate(seconds: float = 1.0) -> dict[str, float]:
    """Gbit/s that one core seals and opens with AES-256-GCM alone, in 63 KB frames as
    tether-crypt does (CPU time of this process: what other load does to the wall clock
    does not count)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(32))
    frame, aad = os.urandom(63000), bytes(24)
    sealed = memoryview(bytearray(len(frame) + 16))
    opened = memoryview(bytearray(len(frame)))
    nonce = bytes(12)
    out = {}
    for what in ("seal", "open"):
        if what == "open":
            aead.encrypt_into(nonce, frame, aad, sealed)
        n, t0 = 0, time.process_time()
        while time.process_time() - t0 < seconds:
            if what == "seal":
                aead.encrypt_into(nonce, frame, aad, sealed)
            else:
                aead.decrypt_into(nonce, sealed, aad, opened)
            n += 1
        out[f"{what}_gbit_per_core"] = round(
            n * len(frame) * 8 / (time.process_time() - t0) / 1e9, 2
        )
    return out


def datapath_rate(frames: int = 2000, fast: bool = True) -> dict[str, float]:
    """What one core does with tether-crypt's own code, in isolation: two DataPath objects
    (the process's class) in this process on 127.0.0.1 and 127.0.0.2, the largest frame a
    container sends (63 KB) read from a "TAP", sealed and sent with UDP GSO by one,
    received with UDP GRO, opened and written to its "TAP" by the other; a datagram socket
    pair stands for each TAP.  `fast`: with the C fast path (what tether-crypt runs), or
    Python moving every frame.  CPU time of this process, so the machine's other load does
    not count; no veth, bridge or TCP stack in the way."""
    import select
    import socket
    import tempfile

    from tether.crypt import wire
    from tether.crypt.datapath import DataPath, Net, load_fast

    module = load_fast() if fast else None
    if fast and module is None:
        raise RuntimeError("the C fast path did not build")
    vni, key, port = 4096, os.urandom(32), 47000 + os.getpid() % 1000
    frame = bytes(wire.VNET_HDR_LEN) + bytes.fromhex("02420a00000302420a0000020800")
    frame += os.urandom(wire.max_frame(1500) - wire.ETH_LEN)
    with tempfile.TemporaryDirectory() as tmp:
        nodes = []
        for addr in ("127.0.0.1", "127.0.0.2"):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(os.path.join(tmp, addr))
            dp = DataPath(listener, fast=module)
            dp.configure(addr, port, 1500)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for sk in (ours, theirs):
                sk.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
                sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sk.setblocking(False)
            net = Net(vni, "ex-bench")
            net.fd, net.keys, net.send_epoch = theirs.fileno(), {1: key}, 1
            dp.nets[vni] = net
            dp.by_fd[net.fd] = net
            nodes.append((dp, net, ours, theirs, listener))
        (a, anet, atap, _, _), (b, _, btap, _, _) = nodes
        a.peers, b.peers = {b.addr: b.session}, {a.addr: a.session}
        anet.macs = {bytes.fromhex("02420a000003"): b.addr}
        assert b.sock is not None
        tx = rx = 0.0
        for i in range(frames + 100):
            atap.send(frame)
            t0 = time.process_time()
            a.on_tap(anet.fd)
            t1 = time.process_time()
            select.select([b.sock], [], [], 2)
            b.on_udp(b.sock.fileno())
            t2 = time.process_time()
            got = btap.recv(1 << 17)
            if len(got) != len(frame):
                raise RuntimeError(f"frame {i} came back as {len(got)} bytes")
            if i >= 100:  # the first ones warm caches and derive keys
                tx, rx = tx + t1 - t0, rx + t2 - t1
        for dp, _net, ours, theirs, listener in nodes:
            for sk in (ours, theirs, listener):
                sk.close()
            if dp.sock is not None:
                dp.sock.close()
            dp.ep.close()
    bits = len(frame) * 8 * frames / 1e9
    return {
        "frame_bytes": len(frame),
        "read_seal_and_send_us_per_frame": round(tx / frames * 1e6, 1),
        "receive_open_and_write_us_per_frame": round(rx / frames * 1e6, 1),
        "read_seal_and_send_gbit_per_core": round(bits / tx, 2),
        "receive_open_and_write_gbit_per_core": round(bits / rx, 2),
    }


def start_node(cluster: Cluster, i: int) -> NamespaceHost:
    node = cluster.nodes[i]
    h = NamespaceHost(
        ["--cluster-store", cluster.endpoints, "--cluster-advertise", node.ip,
         "--node-name", f"node{i + 1}"],
        name=node.netns,
    )  # fmt: skip
    h.start()
    h.import_busybox()
    return h


def fragments_capture(cluster: Cluster) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        ["ip", "netns", "exec", cluster.underlay, "timeout", "120", "tcpdump", "-i", "n1",
         "-n", "-w", "/dev/null", "ip[6:2] & 0x3fff != 0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert p.stderr is not None
    p.stderr.readline()  # listening
    return p


def fragments_seen(p: subprocess.Popen[bytes]) -> int:
    p.terminate()
    _, err = p.communicate(timeout=10)
    m = re.search(rb"(\d+) packets? captured", err)
    return int(m.group(1)) if m else -1


def iperf(cmd: list[str]) -> float:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stdout[-500:]}{r.stderr[-500:]}")
    data = json.loads(r.stdout)
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def ping_ms(cmd: list[str]) -> dict[str, float]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", r.stdout)]
    if not rtts:
        raise RuntimeError(f"no ping replies: {r.stdout}{r.stderr}")
    rtts.sort()
    return {
        "n": len(rtts),
        "median": round(statistics.median(rtts), 3),
        "p90": round(rtts[int(len(rtts) * 0.9) - 1], 3),
        "min": round(rtts[0], 3),
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    cluster = Cluster(nodes=2, members=1)
    cluster.start()
    hosts: list[NamespaceHost] = []
    try:
        hosts = [start_node(cluster, 0), start_node(cluster, 1)]
        a, b = hosts
        a.ok("network", "create", "-d", "overlay", "-o", "encrypted", "sec")
        a.ok("network", "create", "-d", "overlay", "plain")
        for name in ("sec", "plain"):
            deadline = time.monotonic() + 20
            while name not in b.ok("network", "ls", "--format", "{{.Name}}").split():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"network {name} never reached node 2:\n{b.log()[-3000:]}")
                time.sleep(0.1)
            b.ok("run", "-d", "--name", f"srv-{name}", "--network", name, "host", "iperf3", "-s")
            a.ok("run", "-d", "--name", f"cli-{name}", "--network", name, "host", "sleep", "3600")
        srv = {n: b.ip_of(f"srv-{n}", n) for n in ("sec", "plain")}
        under = subprocess.Popen(
            ["ip", "netns", "exec", b.netns, "iperf3", "-s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        for n in ("sec", "plain"):  # paths learnt, keys in place
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if (
                    a.cli("exec", f"cli-{n}", "busybox", "ping", "-c1", "-W1", srv[n]).returncode
                    == 0
                ):
                    break
        cmds = {
            "encrypted overlay": [PY_TETHER(a), "exec", "cli-sec", "iperf3", "-c", srv["sec"],
                                  "-t", str(seconds), "-J"],
            "plain overlay": [PY_TETHER(a), "exec", "cli-plain", "iperf3", "-c", srv["plain"],
                              "-t", str(seconds), "-J"],
            "underlay": ["ip", "netns", "exec", a.netns, "iperf3", "-c", cluster.nodes[1].ip,
                         "-t", str(seconds), "-J"],
        }  # fmt: skip
        env = dict(os.environ, TETHER_HOST=f"unix://{a.socket}")
        pids = [crypt_pid(a), crypt_pid(b)]
        order = list(cmds)
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in cmds}
        for r in range(rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                frag = fragments_capture(cluster)
                load0 = loadavg()[0]
                busy0 = machine_cpu()[0]
                crypt0 = crypt_cpu(pids)
                t0 = time.monotonic()
                res = subprocess.run(
                    cmds[name], capture_output=True, text=True, env=env, timeout=120
                )
                wall = time.monotonic() - t0
                if res.returncode != 0:
                    raise RuntimeError(f"{name}: {res.stdout[-800:]}{res.stderr[-800:]}")
                gbit = float(json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9
                busy1 = machine_cpu()[0]
                crypt1 = crypt_cpu(pids)
                frags = fragments_seen(frag)
                # Cores busy over the run (the 2 vCPUs are 2.0), per Gbit/s carried.
                cores = (busy1 - busy0) / wall
                row = {
                    "gbit_s": round(gbit, 3),
                    "machine_cores_busy": round(cores, 3),
                    "machine_cores_per_gbit": round(cores / gbit, 3),
                    "ip_fragments": frags,
                    # The machine is shared (a CI run may be going on): what else wanted it.
                    "load1_before": load0,
                }
                if name == "encrypted overlay":
                    user = (crypt1[0] - crypt0[0]) / wall
                    system = (crypt1[1] - crypt0[1]) / wall
                    crypt_cores = user + system
                    row["tether_crypt_cores"] = round(crypt_cores, 3)
                    # User: Python and the AEAD; system: the TAP reads and writes and the
                    # UDP sends and receives (and the kernel work they run in its context).
                    row["tether_crypt_user_share"] = round(user / crypt_cores, 3)
                    row["tether_crypt_cores_per_gbit"] = round(crypt_cores / gbit, 3)
                runs[name].append(row)
                print(name, row, flush=True)
        pings = {
            "encrypted overlay": ping_ms([PY_TETHER(a), "exec", "cli-sec", "busybox", "ping",
                                          "-c", "50", "-i", "0.1", srv["sec"]]),
            "plain overlay": ping_ms([PY_TETHER(a), "exec", "cli-plain", "busybox", "ping",
                                      "-c", "50", "-i", "0.1", srv["plain"]]),
            "underlay": ping_ms(["ip", "netns", "exec", a.netns, "busybox", "ping", "-c", "50",
                                 "-i", "0.1", cluster.nodes[1].ip]),
        }  # fmt: skip
        # What the encrypted stream looks like on the underlay: a short capture.
        sample = os.path.join(cluster.dir, "sample.pcap")
        cap = subprocess.Popen(
            ["ip", "netns", "exec", cluster.underlay, "timeout", "30", "tcpdump", "-i", "n1",
             "-n", "-s", "64", "-c", "2000", "-w", sample, "udp port 4800"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert cap.stderr is not None
        cap.stderr.readline()
        subprocess.run(
            [*cmds["encrypted overlay"][:-3], "-t", "2", "-J"],
            env=env,
            capture_output=True,
            timeout=60,
        )
        cap.terminate()
        cap.communicate(timeout=10)
        sizes = _udp_lengths(sample)
        under.terminate()
        under.wait(10)
        stats_a = a.inspect_network("sec")["Encryption"]["DataPath"]
        summary = {
            name: {
                "gbit_s": stats([x["gbit_s"] for x in rows]),
                "machine_cores_per_gbit": stats([x["machine_cores_per_gbit"] for x in rows]),
                "ip_fragments_total": sum(x["ip_fragments"] for x in rows),
                **(
                    {
                        "tether_crypt_cores_per_gbit": stats(
                            [x["tether_crypt_cores_per_gbit"] for x in rows]
                        )
                    }
                    if name == "encrypted overlay"
                    else {}
                ),
            }
            for name, rows in runs.items()
        }
        med = {k: v["gbit_s"]["median"] for k, v in summary.items()}
        out = save(
            "encrypted",
            {
                "command": f".venv/bin/python bench/bench_encrypted.py {rounds} {seconds}",
                "rounds": rounds,
                "seconds": seconds,
                "summary": summary,
                "ratios": {
                    "encrypted / plain overlay": round(
                        med["encrypted overlay"] / med["plain overlay"], 3
                    ),
                    "encrypted / underlay": round(med["encrypted overlay"] / med["underlay"], 3),
                    "plain overlay / underlay": round(med["plain overlay"] / med["underlay"], 3),
                },
                "ping_rtt_ms": pings,
                "aes_256_gcm_alone": crypto_rate(),
                "tether_crypt_alone": datapath_rate(fast=True),
                "tether_crypt_alone_python_only": datapath_rate(fast=False),
                "encrypted datagrams on the underlay (a 2 s sample)": sizes,
                "node1 tether-crypt counters": stats_a.get("Counters"),
                "runs": runs,
                "load average at the start of the last round": loadavg(),
            },
        )
        print(json.dumps(summary, indent=1))
        print(json.dumps(pings, indent=1))
        print("->", out)
    finally:
        for h in hosts:
            h.cleanup()
        cluster.cleanup()


def PY_TETHER(h: NamespaceHost) -> str:
    """The CLI of node `h`, as a command."""
    path = os.path.join(h.dir, "tether-cli")
    if not os.path.exists(path):
        with open(path, "w") as f:
            # This node's socket, always: never the machine's default one (a CLI call without
            # a daemon there would start the machine's own tetherd).
            f.write(
                f"#!/bin/sh\nTETHER_HOST=unix://{h.socket} exec {sys.executable} "
                '-m tether.cli.main "$@"\n'
            )
        os.chmod(path, 0o755)
    return path


def _udp_lengths(path: str) -> dict[str, Any]:
    """How big the captured UDP packets were (a GSO send shows as one large packet on a
    veth: the datagrams are cut from it where a NIC would cut them)."""
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    off, lengths = 24, []
    while off + 16 <= len(data):
        _s, _u, incl, _orig = struct.unpack("<IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(pkt) >= 42 and pkt[12:14] == b"\x08\x00":
            ihl = (pkt[14] & 0x0F) * 4
            lengths.append(struct.unpack(">H", pkt[14 + ihl + 4 : 14 + ihl + 6])[0])
    if not lengths:
        return {}
    return {
        "packets": len(lengths),
        "udp_length_median": statistics.median(lengths),
        "udp_length_max": max(lengths),
        "share_over_60000_bytes": round(sum(1 for x in lengths if x > 60000) / len(lengths), 3),
    }


if __name__ == "__main__":
    main()
