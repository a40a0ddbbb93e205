"""The embedded DNS server: one thread, one epoll loop, every sandbox's 127.0.0.11:53.

Why a thread of its own and not the daemon's asyncio loop: the hot path must cost almost
nothing per packet (dnsperf alone takes one of the two cores), and answers must not wait
behind a container start.  The loop reads a batch from a ready socket, looks each query up in
that sandbox's cache of finished answers (keyed by the query minus its ID), patches the ID and
sends; only a miss goes to answer.decide (dnspython) and then to the cache or the upstreams.

The control plane talks to the thread through a command queue (attach, detach, view) and by
swapping the Zone; the thread never touches the daemon's state.

Forwarding happens from inside the container's network namespace (the upstream sees the
container's address, as with Docker), except for a loopback upstream (a resolver on the
host's 127.0.0.53 cannot be reached from a container): that one is asked from the host's
namespace.  A truncated upstream answer is asked again over TCP; an upstream that refuses or
stays silent for a second is skipped, and with none left the client gets SERVFAIL.
"""

from __future__ import annotations

import collections
import errno
import heapq
import ipaddress
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tether.dns import answer as ans
from tether.dns import fast
from tether.dns.records import Zone
from tether.kernel import netns
from tether.kernel.fds import lift_socket
from tether.kernel.nft import NftError, run_in_netns

log = logging.getLogger("tether.dns")

ADDRESS = "127.0.0.11"
PORT = 53
UPSTREAM_TIMEOUT = 1.0
TCP_IDLE = 30.0
CACHE_MAX = 2048
BATCH = 128
# How long a detach waits for the DNS thread to close a sandbox's sockets (it takes
# microseconds; the bound only keeps a wedged thread from stalling every teardown).
DETACH_WAIT = 2.0


def is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server).is_loopback
    except ValueError:
        return False


def redirect_rules(udp_port: int, tcp_port: int) -> str:
    """The sandbox's own small table: 127.0.0.11:53 to where the server really listens."""
    return (
        "add table ip tether_dns\n"
        "delete table ip tether_dns\n"
        "table ip tether_dns {\n"
        # UDP: a stateless rewrite of the port both ways, outside conntrack (a DNAT would
        # cost a conntrack lookup per query, ~15 % of the throughput here).
        " chain redirect_udp {\n"
        "  type filter hook output priority raw; policy accept;\n"
        f"  ip daddr {ADDRESS} udp dport {PORT} notrack udp dport set {udp_port}\n"
        f"  ip saddr {ADDRESS} udp sport {udp_port} notrack udp sport set {PORT}\n"
        " }\n"
        " chain redirect_tcp {\n"
        "  type nat hook output priority -100; policy accept;\n"
        f"  ip daddr {ADDRESS} tcp dport {PORT} dnat to {ADDRESS}:{tcp_port}\n"
        " }\n"
        "}\n"
    )


class Sandbox:
    __slots__ = ("cache", "cid", "gen", "netns", "table", "tcp", "udp", "upstreams", "view")

    def __init__(
        self, cid: str, netns_path: str, view: ans.View, udp: socket.socket, tcp: socket.socket
    ) -> None:
        self.cid = cid
        self.netns = netns_path
        self.view = view
        self.udp = udp
        self.tcp = tcp
        self.cache: dict[bytes, Any] = {}  # the pure-Python cache (no C fast path)
        self.table: Any = None  # the C fast path's cache, when there is one
        self.gen = -1
        self.upstreams: dict[str, Upstream] = {}


@dataclass
class Upstream:
    server: str
    sock: socket.socket
    pending: dict[bytes, Pending] = field(default_factory=dict)


@dataclass
class Pending:
    sandbox: Sandbox
    query: bytes  # with the client's ID
    client: Any  # UDP address, or a TcpConn
    remaining: list[str]
    max_size: int
    upstream: Upstream | None = None
    key: bytes = b""
    done: bool = False
    tcp_retried: bool = False


class TcpConn:
    __slots__ = ("buf", "last", "sandbox", "sock")

    def __init__(self, sock: socket.socket, sandbox: Sandbox) -> None:
        self.sock = sock
        self.sandbox = sandbox
        self.buf = b""
        self.last = time.monotonic()

    def send(self, wire: bytes) -> None:
        try:
            self.sock.sendall(struct.pack(">H", len(wire)) + wire)
        except OSError:
            pass


class DnsServer:
    def __init__(self) -> None:
        self.zone = Zone()
        self.ep = select.epoll()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.handlers: dict[int, Any] = {self.wake_r: self._wakeup}
        self.ep.register(self.wake_r, select.EPOLLIN)
        self.cmds: collections.deque[tuple[Any, ...]] = collections.deque()
        self.sandboxes: dict[str, Sandbox] = {}
        self.conns: dict[int, TcpConn] = {}
        self.timers: list[tuple[float, int, Pending]] = []
        self._seq = itertools.count()
        self.running = False
        self.thread: threading.Thread | None = None
        # Plain integers, counted by the DNS thread (metrics.py reads them on scrape): cache
        # hits and `local` are answers of the embedded zone; `upstream` and `nxdomain` are
        # upstreams' answers; `servfail` is no upstream answering (or one saying SERVFAIL).
        self.stats = {
            "queries": 0,
            "cache_hits": 0,
            "local": 0,
            "forwarded": 0,
            "upstream": 0,
            "nxdomain": 0,
            "servfail": 0,
        }
        self.fast = fast.load()

    # -- control plane (any thread) --------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="tether-dns", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self._wake()
        if self.thread is not None:
            self.thread.join(5)
        for sb in list(self.sandboxes.values()):
            self._close_sandbox(sb)
        self.ep.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def set_zone(self, zone: Zone) -> None:
        self.zone = zone  # one reference swap: the thread always sees a whole zone

    def attach(self, cid: str, netns_path: str, view: ans.View) -> None:
        """Open 127.0.0.11:53 (UDP and TCP) in the sandbox, now: before its process starts."""
        if cid in self.sandboxes:
            self.update(cid, view)
            return
        with netns.entered(netns_path):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            # Ephemeral ports, reached through a DNAT of 127.0.0.11:53 in the sandbox (as
            # Docker does): port 53 itself stays free for a DNS server the container runs.
            udp.bind((ADDRESS, 0))
            tcp.bind((ADDRESS, 0))
            tcp.listen(64)
            run_in_netns(netns_path, redirect_rules(udp.getsockname()[1], tcp.getsockname()[1]))
        except (OSError, NftError):
            udp.close()
            tcp.close()
            raise
        udp = lift_socket(udp)
        tcp = lift_socket(tcp)
        udp.setblocking(False)
        tcp.setblocking(False)
        sb = Sandbox(cid, netns_path, view, udp, tcp)
        if self.fast is not None:
            sb.table = self.fast.Table()
        self.sandboxes[cid] = sb
        self.cmds.append(("add", sb))
        self._wake()

    def update(self, cid: str, view: ans.View) -> None:
        self.cmds.append(("view", cid, view))
        self._wake()

    def detach(self, cid: str) -> None:
        """Close the sandbox's sockets before returning.

        Synchronous on purpose: each socket (127.0.0.11, upstreams, TCP clients) holds the
        sandbox's network namespace, so while one is open the namespace and its interfaces
        outlive the teardown; a macvlan port left that way keeps answering ARP for an address
        given back, and the next port with that address's MAC cannot come up (EADDRINUSE).
        The DNS thread owns the sockets (they are in its epoll set), so it closes them and
        says so; without a running thread they are closed here.
        """
        if self.sandboxes.get(cid) is None:
            return
        thread = self.thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            sb = self.sandboxes.pop(cid, None)
            if sb is not None:
                self._close_sandbox(sb)
            return
        done = threading.Event()
        self.cmds.append(("remove", cid, done))
        self._wake()
        if not done.wait(DETACH_WAIT):
            log.warning("the DNS thread did not close the sockets of %s in time", cid[:12])

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    # -- the loop (DNS thread) ---------------------------------------------------------------

    def _loop(self) -> None:
        poll = self.ep.poll
        handlers = self.handlers
        while self.running:
            timeout = -1.0
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            elif self.conns:
                timeout = TCP_IDLE / 2
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            for fd, _ev in events:
                handler = handlers.get(fd)
                if handler is None:
                    continue
                try:
                    handler()
                except Exception:  # never let one bad packet or socket stop the server
                    log.exception("dns handler failed")
            if self.timers and self.timers[0][0] <= time.monotonic():
                self._expire()
            if self.conns:
                self._reap_conns()

    def _wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self.cmds:
            cmd = self.cmds.popleft()
            if cmd[0] == "add":
                sb = cmd[1]
                self.handlers[sb.udp.fileno()] = lambda sb=sb: self._udp(sb)
                self.handlers[sb.tcp.fileno()] = lambda sb=sb: self._accept(sb)
                self.ep.register(sb.udp.fileno(), select.EPOLLIN)
                self.ep.register(sb.tcp.fileno(), select.EPOLLIN)
            elif cmd[0] == "view":
                sb = self.sandboxes.get(cmd[1])
                if sb is not None:
                    sb.view = cmd[2]
                    sb.cache.clear()
                    if sb.table is not None:
                        sb.table.clear()
            elif cmd[0] == "remove":
                try:
                    sb = self.sandboxes.pop(cmd[1], None)
                    if sb is not None:
                        self._close_sandbox(sb)
                finally:
                    cmd[2].set()
            elif cmd[0] == "tcp_result":
                self._tcp_result(cmd[1], cmd[2])

    def _close_sandbox(self, sb: Sandbox) -> None:
        for s in [sb.udp, sb.tcp, *(u.sock for u in sb.upstreams.values())]:
            fd = s.fileno()
            if fd >= 0:
                self.handlers.pop(fd, None)
                try:
                    self.ep.unregister(fd)
                except (OSError, ValueError):
                    pass
            s.close()
        for fd, conn in list(self.conns.items()):
            if conn.sandbox is sb:
                self._close_conn(fd)
        for up in sb.upstreams.values():
            for p in up.pending.values():
                p.done = True

    # -- UDP: the hot path -------------------------------------------------------------------

    def _udp(self, sb: Sandbox) -> None:
        zone = self.zone
        cache = sb.cache
        if sb.gen != zone.generation:
            cache.clear()
            if sb.table is not None:
                sb.table.clear()
            sb.gen = zone.generation
        if sb.table is not None:
            self._udp_fast(sb, zone)
            return
        recv = sb.udp.recvfrom
        send = sb.udp.sendto
        stats = self.stats
        for _ in range(BATCH):
            try:
                data, addr = recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            stats["queries"] += 1
            hit = cache.get(data[2:])
            if hit is not None:
                stats["cache_hits"] += 1
                try:
                    send(data[:2] + (hit if hit.__class__ is bytes else hit.render()), addr)
                except OSError:
                    pass
                continue
            self._query(sb, zone, data, addr, None)

    def _udp_fast(self, sb: Sandbox, zone: Zone) -> None:
        """Hits are answered in C (recvmmsg/sendmmsg, no GIL); only misses come back here."""
        serve = self.fast.serve  # type: ignore[union-attr]
        fd = sb.udp.fileno()
        for _ in range(16):
            hits, misses = serve(fd, sb.table)
            self.stats["cache_hits"] += hits
            self.stats["queries"] += hits + len(misses)
            for data, addr in misses:
                self._query(sb, zone, data, addr, None)
            if hits + len(misses) < 64:
                return

    def _query(self, sb: Sandbox, zone: Zone, data: bytes, addr: Any, conn: TcpConn | None) -> None:
        d = ans.decide(data, zone, sb.view, over_tcp=conn is not None)
        if d.kind == "answer":
            self.stats["local"] += 1
            if conn is None:
                if d.cache is not None and len(data) > 12:
                    if sb.table is not None:
                        if isinstance(d.cache, bytes):
                            sb.table.put(data[2:], d.cache)
                        else:
                            sb.table.put_shuffled(
                                data[2:], d.cache.head, d.cache.chunks, d.cache.tail
                            )
                    else:
                        if len(sb.cache) >= CACHE_MAX:
                            sb.cache.clear()
                        sb.cache[data[2:]] = d.cache
                try:
                    sb.udp.sendto(d.wire, addr)
                except OSError:
                    pass
            else:
                conn.send(d.wire)
        elif d.kind == "forward":
            self._forward(sb, data, addr if conn is None else conn, conn is not None)

    # -- TCP from clients --------------------------------------------------------------------

    def _accept(self, sb: Sandbox) -> None:
        for _ in range(16):
            try:
                s, _addr = sb.tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if sum(1 for c in self.conns.values() if c.sandbox is sb) >= 64:
                s.close()
                continue
            s = lift_socket(s)
            s.settimeout(1.0)
            conn = TcpConn(s, sb)
            fd = s.fileno()
            self.conns[fd] = conn
            self.handlers[fd] = lambda fd=fd: self._tcp_read(fd)
            self.ep.register(fd, select.EPOLLIN)

    def _tcp_read(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        try:
            data = conn.sock.recv(65535, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_conn(fd)
            return
        conn.last = time.monotonic()
        conn.buf += data
        if len(conn.buf) > 70000:
            self._close_conn(fd)
            return
        while len(conn.buf) >= 2:
            size = struct.unpack_from(">H", conn.buf)[0]
            if len(conn.buf) < 2 + size:
                break
            query, conn.buf = conn.buf[2 : 2 + size], conn.buf[2 + size :]
            self.stats["queries"] += 1
            self._query(conn.sandbox, self.zone, query, None, conn)

    def _close_conn(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        self.handlers.pop(fd, None)
        if conn is not None:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass
            conn.sock.close()

    def _reap_conns(self) -> None:
        now = time.monotonic()
        for fd, conn in list(self.conns.items()):
            if now - conn.last > TCP_IDLE:
                self._close_conn(fd)

    # -- forwarding --------------------------------------------------------------------------

    def _forward(self, sb: Sandbox, data: bytes, client: Any, over_tcp: bool) -> None:
        self.stats["forwarded"] += 1
        max_size = 65535 if over_tcp else _client_udp_size(data)
        p = Pending(sb, data, client, list(sb.view.upstreams), max_size)
        self._send_next(p)

    def _upstream(self, sb: Sandbox, server: str) -> Upstream:
        up = sb.upstreams.get(server)
        if up is not None:
            return up
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        if is_loopback(server):
            s = socket.socket(family, socket.SOCK_DGRAM)  # the host's own resolver
        else:
            s = netns.socket_in(sb.netns, family, socket.SOCK_DGRAM)
        s = lift_socket(s)
        s.setblocking(False)
        try:
            s.connect((server, PORT))
        except OSError:
            s.close()
            raise
        up = Upstream(server, s)
        sb.upstreams[server] = up
        fd = s.fileno()
        self.handlers[fd] = lambda up=up: self._upstream_read(up)
        self.ep.register(fd, select.EPOLLIN)
        return up

    def _send_next(self, p: Pending) -> None:
        while p.remaining and not p.done:
            server = p.remaining.pop(0)
            try:
                up = self._upstream(p.sandbox, server)
                key = os.urandom(2)
                while key in up.pending:
                    key = os.urandom(2)
                up.sock.send(key + p.query[2:])
            except OSError:
                continue
            p.upstream, p.key = up, key
            up.pending[key] = p
            heapq.heappush(self.timers, (time.monotonic() + UPSTREAM_TIMEOUT, next(self._seq), p))
            return
        if not p.done:
            self._fail(p)

    def _fail(self, p: Pending) -> None:
        p.done = True
        self.stats["servfail"] += 1
        self._deliver(p, ans.error_response(p.query, 2))

    def _deliver(self, p: Pending, wire: bytes) -> None:
        p.done = True
        if not wire:
            return
        if isinstance(p.client, TcpConn):
            p.client.send(wire)
            return
        if len(wire) > p.max_size:
            wire = ans.truncated(p.query)
        try:
            p.sandbox.udp.sendto(wire, p.client)
        except OSError:
            pass

    def _upstream_read(self, up: Upstream) -> None:
        for _ in range(BATCH):
            try:
                data = up.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    # The upstream is not there: every query waiting on it tries the next one.
                    waiting = list(up.pending.values())
                    up.pending.clear()
                    for p in waiting:
                        self._send_next(p)
                return
            if len(data) < 12:
                continue
            found = up.pending.get(data[:2])
            if found is None or found.done:
                continue
            del up.pending[data[:2]]
            reply = found.query[:2] + data[2:]
            if data[2] & 0x02 and not found.tcp_retried:  # TC: ask again over TCP
                found.tcp_retried = True
                threading.Thread(
                    target=self._tcp_upstream, args=(found, up.server), daemon=True
                ).start()
                continue
            self._count_upstream(reply)
            self._deliver(found, reply)

    def _count_upstream(self, reply: bytes) -> None:
        rcode = reply[3] & 0xF if len(reply) > 3 else 0
        key = "nxdomain" if rcode == 3 else "servfail" if rcode == 2 else "upstream"
        self.stats[key] += 1

    def _tcp_upstream(self, p: Pending, server: str) -> None:
        """A blocking TCP query to the upstream, in its own short-lived thread."""
        result: bytes | None = None
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        try:
            if is_loopback(server):
                s = socket.socket(family, socket.SOCK_STREAM)
            else:
                s = netns.socket_in(p.sandbox.netns, family, socket.SOCK_STREAM)
            with s:
                s.settimeout(2.0)
                s.connect((server, PORT))
                s.sendall(struct.pack(">H", len(p.query)) + p.query)
                size = struct.unpack(">H", _recv_exact(s, 2))[0]
                result = _recv_exact(s, size)
        except (OSError, struct.error):
            result = None
        self.cmds.append(("tcp_result", p, result))
        self._wake()

    def _tcp_result(self, p: Pending, result: bytes | None) -> None:
        if p.done:
            return
        if result is None:
            self._send_next(p)
        else:
            self._count_upstream(result)
            self._deliver(p, result)

    def _expire(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, p = heapq.heappop(self.timers)
            if p.done or p.tcp_retried:
                continue
            if p.upstream is not None and p.upstream.pending.get(p.key) is p:
                del p.upstream.pending[p.key]
                self._send_next(p)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("upstream closed the connection")
        out += chunk
    return out


def _client_udp_size(query: bytes) -> int:
    """The UDP payload the client can take: 512, or its EDNS0 size."""
    try:
        arcount = struct.unpack_from(">H", query, 10)[0]
    except struct.error:
        return 512
    if arcount == 0:
        return 512
    end = ans.question_end(query)
    # The OPT record: root name (0), type 41, then the payload size in the class field.
    if (
        end > 0
        and len(query) >= end + 5
        and query[end] == 0
        and query[end + 1 : end + 3] == b"\x00\x29"
    ):
        return max(512, int(struct.unpack_from(">H", query, end + 3)[0]))
    return 512
