"""tether's port relay: a process of its own that holds published ports across daemon restarts.

Two things about published ports must not stop when tetherd does (live restore: containers,
and their ports, outlive the daemon):

- the reservation of every published host port: a socket bound to it, so that no host process
  takes the port while tetherd restarts (IPv4 ports are kernel NAT, the socket carries no
  traffic; it only keeps the port taken, as docker-proxy's listening socket does);
- the relaying of ports published on IPv6 host addresses (`[::]:8080`, `[::1]:8080`): the
  kernel cannot NAT an IPv6 connection to an IPv4 container, so those are relayed in user
  space, like docker-proxy.

So they live here, not in tetherd: one relay per daemon (not one process per port, unlike
docker-proxy), started by tetherd when the first port is published, told of every change over a
control socket (EXEC_ROOT/relay.sock, SOCK_SEQPACKET, one JSON message per request, the bound
sockets passed along with SCM_RIGHTS), adopted by the next tetherd after a restart, restarted
by tetherd if it dies, and ended when it holds no port and no tetherd is connected to it.
tetherd still binds every socket itself (its errors are the ones docker prints) and hands it
over; this process never chooses a port.

It is deliberately small: standard library only, started with `python -I -S` (no site, no
tether package), one thread, one epoll loop.  TCP is moved with splice(2) through a pipe per
direction (the bytes never enter Python); UDP is one connected socket per client address,
closed after 30 s of silence.

Control requests (each answered with {"ok": true, ...} or {"ok": false, "error": ...}):
    {"op": "add", "ports": [{"proto", "ip", "port", "target": [ip, port] | null}, ...]}  + fds
    {"op": "retarget", "ports": [{"proto", "ip", "port", "target": [ip, port] | null}, ...]}
    {"op": "remove", "ports": [{"proto", "ip", "port"}, ...]}
    {"op": "list", "offset": N}      -> {"ports": [...], "next": N | null}
    {"op": "quit"}                   -> closes everything and exits
"""

from __future__ import annotations

import errno
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

MAX_MESSAGE = 256 * 1024
MAX_FDS = 250  # below the kernel's SCM_MAX_FD (253)
LIST_PAGE = 200
UDP_IDLE = 30.0
CONNECT_TIMEOUT = 10.0
CHUNK = 1 << 16  # one pipe's worth
SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
IN = select.EPOLLIN
OUT = select.EPOLLOUT

Key = tuple[str, str, int]


def log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        sys.stderr.write(f"time={stamp} level=warn component=relay pid={os.getpid()} msg={msg!r}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Loop:
    def __init__(self) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Any] = {}
        self.masks: dict[int, int] = {}

    def set(self, fd: int, mask: int, handler: Any) -> None:
        if fd in self.handlers:
            if self.masks[fd] != mask:
                self.ep.modify(fd, mask)
        else:
            self.ep.register(fd, mask)
        self.handlers[fd] = handler
        self.masks[fd] = mask

    def drop(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.masks.pop(fd, None)
            try:
                self.ep.unregister(fd)
            except OSError:
                pass


class Direction:
    """Bytes from `src` to `dst` through a pipe, with splice: never copied into Python."""

    __slots__ = ("dst", "eof", "pending", "rd", "shut", "src", "wr")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.rd, self.wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending = 0  # bytes in the pipe
        self.eof = False  # src has no more to send
        self.shut = False  # dst has been told so

    def pump(self) -> None:
        """Move what can be moved now; raises OSError when the connection is broken."""
        for _ in range(8):  # bounded: other connections get their turn
            if self.pending:
                try:
                    self.pending -= os.splice(
                        self.rd, self.dst.fileno(), self.pending, flags=SPLICE
                    )
                except BlockingIOError:
                    return
                continue
            if self.eof:
                if not self.shut:
                    self.shut = True
                    self.dst.shutdown(socket.SHUT_WR)
                return
            try:
                n = os.splice(self.src.fileno(), self.wr, CHUNK, flags=SPLICE)
            except BlockingIOError:
                return
            if n == 0:
                self.eof = True
            self.pending = n

    def close(self) -> None:
        os.close(self.rd)
        os.close(self.wr)


class TcpConn:
    def __init__(self, relay: Relay, client: socket.socket, target: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.connected = False
        self.closed = False
        self.deadline = time.monotonic() + CONNECT_TIMEOUT
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        self.upstream = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.up = Direction(client, self.upstream)
        self.down = Direction(self.upstream, client)
        err = self.upstream.connect_ex(target)
        if err not in (0, errno.EINPROGRESS):
            self.close()
            return
        relay.connecting.add(self)
        self.update()

    def on_event(self, events: int) -> None:
        if self.closed:
            return
        if events & select.EPOLLERR:  # a reset, or the connect failed
            self.close()
            return
        if not self.connected:
            err = self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.close()
                return
            self.connected = True
            self.relay.connecting.discard(self)
        try:
            self.up.pump()
            self.down.pump()
        except OSError:
            self.close()
            return
        if self.up.shut and self.down.shut:
            self.close()
            return
        self.update()

    def update(self) -> None:
        loop = self.relay.loop
        if not self.connected:
            loop.set(self.upstream.fileno(), OUT, self.on_event)
            return
        for sock, reading, writing in (
            (self.client, self.up, self.down),
            (self.upstream, self.down, self.up),
        ):
            if reading.eof and writing.shut:
                # Nothing more to read from it or write to it: stop watching it (epoll would
                # report its hang-up on every round) until the other side is done too.
                loop.drop(sock.fileno())
                continue
            mask = (IN if not reading.eof and not reading.pending else 0) | (
                OUT if writing.pending else 0
            )
            # With nothing to wait for it stays registered with no events: a reset is
            # still reported.
            loop.set(sock.fileno(), mask, self.on_event)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay.connecting.discard(self)
        self.relay.conns.discard(self)
        for s in (self.client, self.upstream):
            self.relay.loop.drop(s.fileno())
            s.close()
        self.up.close()
        self.down.close()


class UdpFlow:
    __slots__ = ("last", "listener", "peer", "sock")

    def __init__(self, listener: Port, peer: Any, sock: socket.socket) -> None:
        self.listener, self.peer, self.sock = listener, peer, sock
        self.last = time.monotonic()


class Port:
    """One published host port: its reserved socket, and its relay when it has a target."""

    def __init__(self, relay: Relay, key: Key, sock: socket.socket) -> None:
        self.relay = relay
        self.key = key
        self.sock = sock
        self.sock.setblocking(False)
        self.target: tuple[str, int] | None = None
        self.listening = False
        self.flows: dict[Any, UdpFlow] = {}

    def set_target(self, target: tuple[str, int] | None) -> None:
        self.target = target
        if target is None:
            self.relay.loop.drop(self.sock.fileno())
            return
        if self.key[0] == "tcp" and not self.listening:
            self.sock.listen(128)
            self.listening = True
        self.relay.loop.set(self.sock.fileno(), IN, self.on_readable)

    def on_readable(self, events: int) -> None:
        if self.target is None:
            return
        if self.key[0] == "tcp":
            for _ in range(64):
                try:
                    client, _addr = self.sock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:  # EMFILE and the like: try again on the next event
                    log(f"accept on {self.key}: {exc}")
                    return
                client.setblocking(False)
                conn = TcpConn(self.relay, client, self.target)
                if not conn.closed:
                    self.relay.conns.add(conn)
            return
        for _ in range(64):
            try:
                data, peer = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            flow = self.flows.get(peer)
            if flow is None:
                flow = self._new_flow(peer)
                if flow is None:
                    continue
            flow.last = time.monotonic()
            try:
                flow.sock.send(data)
            except OSError:
                pass

    def _new_flow(self, peer: Any) -> UdpFlow | None:
        assert self.target is not None
        family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            s.connect(self.target)
        except OSError:
            s.close()
            return None
        flow = UdpFlow(self, peer, s)
        self.flows[peer] = flow
        self.relay.loop.set(s.fileno(), IN, lambda ev, f=flow: self._reply(f))
        return flow

    def _reply(self, flow: UdpFlow) -> None:
        for _ in range(64):
            try:
                data = flow.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable from the container: drop the flow
                self._end_flow(flow)
                return
            flow.last = time.monotonic()
            try:
                self.sock.sendto(data, flow.peer)
            except OSError:
                pass

    def _end_flow(self, flow: UdpFlow) -> None:
        if self.flows.pop(flow.peer, None) is not None:
            self.relay.loop.drop(flow.sock.fileno())
            flow.sock.close()

    def reap(self, now: float) -> None:
        for flow in [f for f in self.flows.values() if now - f.last > UDP_IDLE]:
            self._end_flow(flow)

    def close(self) -> None:
        for flow in list(self.flows.values()):
            self._end_flow(flow)
        self.relay.loop.drop(self.sock.fileno())
        self.sock.close()


class Relay:
    def __init__(self, control: socket.socket) -> None:
        self.loop = Loop()
        self.control = control
        self.control.setblocking(False)
        self.loop.set(control.fileno(), IN, self.on_control_accept)
        self.clients: dict[int, socket.socket] = {}
        self.ports: dict[Key, Port] = {}
        self.conns: set[TcpConn] = set()
        self.connecting: set[TcpConn] = set()
        self.running = True
        # The tetherd that started us connects at once; until one has, do not give up.
        self.had_client = False
        self.started = time.monotonic()

    # -- control -------------------------------------------------------------------------

    def on_control_accept(self, events: int) -> None:
        conn = accept_root(self.control, log)
        if conn is None:
            return
        conn.setblocking(False)
        self.clients[conn.fileno()] = conn
        self.had_client = True
        self.loop.set(conn.fileno(), IN, lambda ev, c=conn: self.on_control(c))

    def on_control(self, conn: socket.socket) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE, MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            self.loop.drop(conn.fileno())
            self.clients.pop(conn.fileno(), None)
            conn.close()
            return
        try:
            reply = self.handle(json.loads(data), fds)
        except Exception as exc:  # a bad request never ends the relay
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        try:
            conn.send(json.dumps(reply).encode())
        except OSError:
            pass

    def handle(self, req: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        op = req.get("op")
        if op == "add":
            entries = req["ports"]
            if len(entries) != len(fds):
                raise ValueError(f"{len(entries)} ports but {len(fds)} sockets")
            for entry, fd in zip(entries, fds, strict=True):
                key = _key(entry)
                old = self.ports.pop(key, None)
                if old is not None:
                    old.close()
                port = Port(self, key, socket.socket(fileno=fd))
                self.ports[key] = port
                port.set_target(_target(entry))
            return {"ok": True}
        if op == "retarget":
            for entry in req["ports"]:
                found = self.ports.get(_key(entry))
                if found is not None:
                    found.set_target(_target(entry))
            return {"ok": True}
        if op == "remove":
            for entry in req["ports"]:
                gone = self.ports.pop(_key(entry), None)
                if gone is not None:
                    gone.close()
            return {"ok": True}
        if op == "list":
            keys = sorted(self.ports)
            offset = int(req.get("offset") or 0)
            page = keys[offset : offset + LIST_PAGE]
            nxt = offset + LIST_PAGE if offset + LIST_PAGE < len(keys) else None
            return {
                "ok": True,
                "pid": os.getpid(),
                "ports": [
                    {"proto": k[0], "ip": k[1], "port": k[2], "target": self.ports[k].target}
                    for k in page
                ],
                "next": nxt,
            }
        if op == "quit":
            self.running = False
            return {"ok": True}
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        raise ValueError(f"unknown op {op!r}")

    # -- loop ------------------------------------------------------------------------------

    def run(self) -> None:
        last_reap = time.monotonic()
        while self.running:
            try:
                events = self.loop.ep.poll(1.0)
            except InterruptedError:
                continue
            for fd, ev in events:
                handler = self.loop.handlers.get(fd)
                if handler is not None:
                    handler(ev)
            now = time.monotonic()
            if now - last_reap > 1.0:
                last_reap = now
                for conn in [c for c in self.connecting if now > c.deadline]:
                    conn.close()
                for port in self.ports.values():
                    port.reap(now)
            # Nothing to hold and no tetherd to ask for more: nothing left to do.
            if not self.ports and not self.clients and (self.had_client or now - self.started > 30):
                break
        for conn in list(self.conns):
            conn.close()
        for port in self.ports.values():
            port.close()


def accept_root(control: socket.socket, log: Any) -> socket.socket | None:
    """The next control connection, if it comes from root (tetherd) or our own uid: only
    they give orders.  Whoever else reaches the socket (its mode is 0600, but a file's mode
    is not the only way to a socket) is hung up on.  tether-crypt's control uses it too."""
    try:
        conn, _ = control.accept()
    except OSError:
        return None
    try:
        _pid, uid, _gid = struct.unpack(
            "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        )
    except OSError:
        uid = -1
    if uid not in (0, os.geteuid()):
        log(f"control connection from uid {uid} refused")
        conn.close()
        return None
    return conn


def _key(entry: dict[str, Any]) -> Key:
    return (str(entry["proto"]), str(entry["ip"]), int(entry["port"]))


def _target(entry: dict[str, Any]) -> tuple[str, int] | None:
    t = entry.get("target")
    return (str(t[0]), int(t[1])) if t else None


def main(argv: list[str]) -> int:
    control_fd = -1
    for i, arg in enumerate(argv):
        if arg == "--control-fd":
            control_fd = int(argv[i + 1])
    if control_fd < 0:
        sys.stderr.write("usage: relay.py --exec-root DIR --control-fd FD\n")
        return 2
    # We need stdio and the control socket, nothing else: a descriptor tetherd left without
    # close-on-exec (a library's netlink socket, say) has no business here for months.
    os.closerange(3, control_fd)
    os.closerange(control_fd + 1, 1 << 20)
    # Terminal signals are tetherd's business, not ours (we are in a session of our own).
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    control = socket.socket(fileno=control_fd)
    Relay(control).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
