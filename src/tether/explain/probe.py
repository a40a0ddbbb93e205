"""A real packet from A's namespace: one TCP connect, one UDP datagram or one ICMP echo.

Bounded: one attempt, a timeout of PROBE_TIMEOUT seconds.  The socket is opened inside the
namespace of the source (netns.socket_in), so routing, source address and the firewall are
exactly what the container's own processes get; nothing runs inside the container.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

from tether.kernel import netns

PROBE_TIMEOUT = 1.5


@dataclass(frozen=True)
class ProbeResult:
    reached: bool | None  # None: the probe cannot tell (UDP without an answer)
    text: str
    ms: float


def _socket(path: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    if path is None:
        return socket.socket(family, kind, proto)
    return netns.socket_in(path, family, kind, proto)


def probe(
    path: str | None, ip: str, port: int | None, proto: str, timeout: float = PROBE_TIMEOUT
) -> ProbeResult:
    """From the namespace at `path` (None: the daemon's own) to ip[:port]."""
    if port is None:
        return _icmp(path, ip, timeout)
    if proto == "udp":
        return _udp(path, ip, port, timeout)
    return _tcp(path, ip, port, timeout)


def _where(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _tcp(path: str | None, ip: str, port: int, timeout: float) -> ProbeResult:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    s = _socket(path, family, socket.SOCK_STREAM)
    start = time.monotonic()
    try:
        s.settimeout(timeout)
        code = s.connect_ex((ip, port))
    except TimeoutError:
        code = errno.ETIMEDOUT
    except OSError as exc:
        code = exc.errno or errno.EIO
    finally:
        s.close()
    ms = (time.monotonic() - start) * 1000
    where = _where(ip, port)
    if code == 0:
        return ProbeResult(True, f"TCP connect to {where} succeeded in {ms:.1f} ms", ms)
    if code == errno.ECONNREFUSED:
        return ProbeResult(
            False, f"TCP connect to {where} was refused: the packet arrived, nothing listens", ms
        )
    if code in (errno.ETIMEDOUT, errno.EAGAIN, errno.EINPROGRESS):
        return ProbeResult(
            False, f"TCP connect to {where}: no answer within {timeout:g} s (dropped)", ms
        )
    return ProbeResult(False, f"TCP connect to {where}: {os.strerror(code)}", ms)


def _udp(path: str | None, ip: str, port: int, timeout: float) -> ProbeResult:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    s = _socket(path, family, socket.SOCK_DGRAM)
    start = time.monotonic()
    where = _where(ip, port)
    try:
        s.settimeout(timeout)
        s.connect((ip, port))
        s.send(b"tether-explain\n")
        try:
            s.recv(1)
            return ProbeResult(
                True, f"UDP to {where}: an answer came back", (time.monotonic() - start) * 1000
            )
        except TimeoutError:
            return ProbeResult(
                None,
                f"UDP to {where}: no answer and no error within {timeout:g} s (a UDP server "
                "that stays silent and a firewall that drops look the same)",
                (time.monotonic() - start) * 1000,
            )
    except OSError as exc:
        ms = (time.monotonic() - start) * 1000
        if exc.errno == errno.ECONNREFUSED:
            return ProbeResult(
                False, f"UDP to {where}: port unreachable (the packet arrived, nothing listens)", ms
            )
        return ProbeResult(False, f"UDP to {where}: {exc.strerror or exc}", ms)
    finally:
        s.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def _icmp(path: str | None, ip: str, timeout: float) -> ProbeResult:
    v6 = ":" in ip
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    s = _socket(path, family, socket.SOCK_RAW, proto)
    ident = os.getpid() & 0xFFFF
    seq = int.from_bytes(os.urandom(2), "big")
    kind, reply = (128, 129) if v6 else (8, 0)
    start = time.monotonic()
    try:
        payload = b"tether-explain"
        header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
        checksum = 0 if v6 else _checksum(header + payload)  # the kernel fills ICMPv6's
        s.sendto(struct.pack("!BBHHH", kind, 0, checksum, ident, seq) + payload, (ip, 0))
        deadline = start + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                break
            data, addr = s.recvfrom(2048)
            body = data if v6 else data[(data[0] & 0x0F) * 4 :]
            if len(body) < 8 or addr[0] != ip:
                continue
            rtype, _code, _sum, rid, rseq = struct.unpack("!BBHHH", body[:8])
            if rtype == reply and rid == ident and rseq == seq:
                ms = (time.monotonic() - start) * 1000
                return ProbeResult(True, f"ping {ip}: echo reply in {ms:.1f} ms", ms)
    except OSError as exc:
        ms = (time.monotonic() - start) * 1000
        return ProbeResult(False, f"ping {ip}: {exc.strerror or exc}", ms)
    finally:
        s.close()
    ms = (time.monotonic() - start) * 1000
    return ProbeResult(False, f"ping {ip}: no echo reply within {timeout:g} s (dropped)", ms)
