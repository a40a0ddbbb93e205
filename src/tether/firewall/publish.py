"""Published ports: Docker's -p/-P semantics, host port allocation, reservation, wiring.

For each binding the host port is
- allocated in the store (its primary key rules out a duplicate; 0.0.0.0 also conflicts with
  every address of the same family, as in Docker: "port is already allocated"),
- reserved in the kernel by a socket bound to it, so that no host process can take it (and
  one that already has it makes the publish fail, as docker-proxy's bind would); tetherd binds
  it and hands it to the port relay (firewall/relay.py), a process of its own that keeps it
  while tetherd restarts,
- wired: IPv4 by a DNAT map element (kernel NAT, no process), IPv6 by the relay.
Random ports come from the ephemeral range, counted separately per protocol from its start
(Docker hands out 32768, 32769, ... for tcp and udp independently).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tether.errors import SystemFailure
from tether.firewall.manager import Firewall
from tether.firewall.relayctl import Key, RelayClient, RelayError, Target
from tether.firewall.render import PortRule
from tether.kernel.fds import lift_socket
from tether.model import Container, PortBinding
from tether.netmodes import own_endpoints
from tether.store.sqlite import Store

log = logging.getLogger("tether.ports")

WILDCARD = {4: "0.0.0.0", 6: "::"}
# With no port left, the relay is ended after this long: a container being restarted would
# otherwise end it and start it again within a second.
RELAY_IDLE = 5.0


class PublishError(SystemFailure):
    pass


@dataclass
class Spec:
    proto: str
    ips: list[str]  # host addresses sharing one host port ("" in -p: 0.0.0.0 and ::)
    host_port: str  # "8080", "8000-8005", "" (random)
    container_port: int
    explicit_v6: bool


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


def _show(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def specs_for(c: Container, default_ip: str = "") -> list[Spec]:
    """HostConfig.PortBindings (+ -P for the exposed ports without one), expanded.

    `default_ip`: where a binding without a host address goes, from the network the ports
    are published through (the bridge's host_binding_ipv4); "" is 0.0.0.0 and :: both."""
    hc = c.host_config
    bindings: dict[str, list[dict[str, str]]] = {
        k: list(v or []) for k, v in (hc.get("PortBindings") or {}).items()
    }
    if hc.get("PublishAllPorts"):
        for key in c.config.get("ExposedPorts") or {}:
            bindings.setdefault(key, [{"HostIp": "", "HostPort": ""}])
    out: list[Spec] = []
    for key in sorted(bindings, key=lambda k: (int(k.split("/")[0]), k)):
        port, _, proto = key.partition("/")
        for b in bindings[key]:
            ip = str(b.get("HostIp") or "").strip("[]") or default_ip
            # No host address means both families, on one host port (docker port shows both).
            ips = [WILDCARD[4], WILDCARD[6]] if not ip else [ip]
            out.append(
                Spec(
                    proto or "tcp", ips, str(b.get("HostPort") or "").strip(), int(port), ":" in ip
                )
            )
    return out


class Publisher:
    def __init__(self, store: Store, firewall: Firewall, relay: RelayClient) -> None:
        self.store = store
        self.firewall = firewall
        self.relay = relay
        relay.on_lost = self._rehome
        # Every host port published now, and where the relay sends it (IPv6 host addresses;
        # None: the relay only holds the port).
        self.owned: dict[Key, Target] = {}
        # Sockets bound by a publish in progress, not handed to the relay yet.
        self._bound: dict[Key, socket.socket] = {}
        # What the relay held when this daemon started (restore), until restore is over.
        self._found: dict[Key, Target] | None = None
        self._idle: asyncio.TimerHandle | None = None
        lo, hi = ephemeral_range()
        self.range = (lo, hi)
        self.next_port = {"tcp": lo, "udp": lo, "sctp": lo}

    # -- allocation ------------------------------------------------------------------------

    def _taken(self, proto: str, ip: str, port: int) -> bool:
        fam = _family(ip)
        for hip, _owner in self.store.ports_on(proto, port):
            if _family(hip) != fam:
                continue
            if hip == ip or hip == WILDCARD[fam] or ip == WILDCARD[fam]:
                return True
        return False

    def _bind(self, proto: str, ip: str, port: int) -> socket.socket:
        fam = socket.AF_INET6 if _family(ip) == 6 else socket.AF_INET
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        s = socket.socket(fam, kind)
        try:
            if kind == socket.SOCK_STREAM and fam == socket.AF_INET6:
                # The relay listens on it (a new relay must bind again past the TIME_WAITs
                # of relayed connections), and a listening socket keeps the port anyway.
                # An IPv4 one only reserves the port and never listens: with SO_REUSEADDR
                # a host process setting it too could bind the same port (two sockets that
                # both ask for reuse and neither listens may share one).
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((ip, port))
        except OSError:
            s.close()
            raise
        s = lift_socket(s)
        s.setblocking(False)
        return s

    def _bind_reclaiming(self, proto: str, ip: str, port: int) -> socket.socket:
        """`_bind`, taking back first a port that the relay holds for no one (a start cut
        short by a crash had handed it over before the container recorded it)."""
        try:
            return self._bind(proto, ip, port)
        except OSError as exc:
            key = (proto, ip, port)
            if exc.errno != errno.EADDRINUSE or key in self.owned:
                raise
            try:
                held = self._found if self._found is not None else self.relay.held()
                if key not in held:
                    raise
                held.pop(key, None)
                self.relay.remove([key])
            except RelayError:
                raise exc from None
            return self._bind(proto, ip, port)

    def _pick(self, spec: Spec) -> Iterator[int]:
        """Candidate host ports for a spec, in the order to try them (lazily: the ephemeral
        range has ~28,000 ports and the first free one is usually the next)."""
        if spec.host_port and "-" not in spec.host_port and spec.host_port != "0":
            yield int(spec.host_port)
            return
        if spec.host_port and "-" in spec.host_port:
            lo, hi = (int(x) for x in spec.host_port.split("-", 1))
            yield from range(lo, hi + 1)
            return
        lo, hi = self.range
        start = self.next_port.get(spec.proto, lo)
        span = hi - lo + 1
        for i in range(span):
            yield lo + (start - lo + i) % span

    def publish(
        self, c: Container, target: str, endpoint_id: str, default_ip: str = ""
    ) -> list[PortBinding]:
        """Allocate, reserve and wire every binding of `c`; all or nothing.  `default_ip`:
        see specs_for."""
        done: list[PortBinding] = []
        try:
            for spec in specs_for(c, default_ip):
                done += self._publish_spec(c, spec, target, endpoint_id)
            self._hand_over(done)
        except RelayError as exc:
            self.release(c.id, done)
            raise PublishError(
                f"driver failed programming external connectivity on endpoint {c.name} "
                f"({endpoint_id}): {exc}"
            ) from None
        except BaseException:
            self.release(c.id, done)
            raise
        self.firewall.add_ports([_rule(b) for b in done if b.family == 4 and b.target_ip])
        return done

    def _hand_over(self, bindings: list[PortBinding]) -> None:
        """Give the bound sockets of `bindings` to the relay (ours are closed either way)."""
        items = []
        for b in bindings:
            sock = self._bound.pop(_key(b), None)
            if sock is not None:
                items.append((_key(b), _target(b), sock))
        if not items:
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            self.relay.add(items)
            for key, tgt, _sock in items:
                self.owned[key] = tgt
        finally:
            for item in items:
                item[2].close()

    def _publish_spec(
        self, c: Container, spec: Spec, target: str, endpoint_id: str
    ) -> list[PortBinding]:
        random_port = not spec.host_port or spec.host_port == "0"
        fixed = not random_port and "-" not in spec.host_port
        last_error: OSError | None = None
        for port in self._pick(spec):
            if any(self._taken(spec.proto, ip, port) for ip in spec.ips):
                if fixed:
                    ip = next(ip for ip in spec.ips if self._taken(spec.proto, ip, port))
                    raise PublishError(
                        f"driver failed programming external connectivity on endpoint {c.name} "
                        f"({endpoint_id}): Bind for {_show(ip, port)} failed: port is already allocated"
                    )
                continue
            # What this attempt took: on failure it gives back exactly that (the bindings of
            # earlier specs stay, their sockets are on their way to the relay).
            bound: list[PortBinding] = []
            try:
                for ip in spec.ips:
                    try:
                        sock = self._bind_reclaiming(spec.proto, ip, port)
                    except OSError as exc:
                        if (
                            _family(ip) == 6
                            and not spec.explicit_v6
                            and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
                        ):
                            continue  # no IPv6 on this host: the 0.0.0.0 half is enough
                        raise
                    b = PortBinding(spec.proto, ip, port, spec.container_port, target)
                    if not self.store.reserve_port(spec.proto, ip, port, c.id):
                        # Allocated meanwhile (the store's key is the last word).
                        sock.close()
                        raise _Allocated(ip)
                    self._bound[_key(b)] = sock
                    bound.append(b)
            except _Allocated as taken:
                self.release(c.id, bound)
                if not fixed:
                    continue
                raise PublishError(
                    f"driver failed programming external connectivity on endpoint {c.name} "
                    f"({endpoint_id}): Bind for {_show(taken.ip, port)} failed: port is already allocated"
                ) from None
            except OSError as exc:
                self.release(c.id, bound)
                last_error = exc
                if not fixed:
                    continue
                ip = spec.ips[0] if len(spec.ips) == 1 else spec.ips[len(bound)]
                fam = "6" if _family(ip) == 6 else "4"
                raise PublishError(
                    f"driver failed programming external connectivity on endpoint {c.name} "
                    f"({endpoint_id}): Error starting userland proxy: listen {spec.proto}{fam} "
                    f"{_show(ip, port)}: bind: {os.strerror(exc.errno or 0).lower()}"
                ) from None
            except BaseException:
                self.release(c.id, bound)
                raise
            if random_port:
                self.next_port[spec.proto] = port + 1
            return bound
        raise PublishError(
            f"driver failed programming external connectivity on endpoint {c.name} ({endpoint_id}): "
            f"no free host port for {spec.container_port}/{spec.proto}"
            + (f" ({last_error.strerror})" if last_error else "")
        )

    async def wire_proxies(self, c: Container) -> None:
        """Make the relay send `c`'s IPv6 host ports where its bindings now lead."""
        changes = []
        for b in c.ports:
            key, tgt = _key(b), _target(b)
            if key in self.owned and self.owned[key] != tgt:
                self.owned[key] = tgt
                changes.append((key, tgt))
        if changes:
            try:
                self.relay.retarget(changes)
            except RelayError as exc:
                log.warning("retargeting ports of %s: %s", c.name, exc)

    def release(self, owner: str, bindings: list[PortBinding]) -> None:
        """Give back these ports (their store rows, reservations, relaying), and only these:
        the owner may hold others; NAT elements go separately."""
        gone = []
        for b in bindings:
            key = _key(b)
            sock = self._bound.pop(key, None)
            if sock is not None:
                sock.close()
            elif key in self.owned:
                del self.owned[key]
                gone.append(key)
        if gone:
            try:
                self.relay.remove(gone)
            except RelayError as exc:  # a relay that died holds nothing any more
                log.warning("releasing ports in the relay: %s", exc)
        with self.store.transaction():
            for b in bindings:
                self.store.release_port(b.proto, b.host_ip, b.host_port, owner)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        """No port left: end the relay soon (now when there is no event loop to wait in)."""
        if self.owned or self._bound or self._found is not None or self.relay.sock is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.relay.quit()
            return
        if self._idle is None:
            self._idle = loop.call_later(RELAY_IDLE, self._end_idle_relay)

    def _end_idle_relay(self) -> None:
        self._idle = None
        if not self.owned and not self._bound and self._found is None:
            self.relay.quit()

    def unpublish(self, c: Container) -> None:
        if not c.ports:
            with self.store.transaction():
                self.store.release_ports(c.id)
            return
        self.firewall.remove_ports([_rule(b) for b in c.ports if b.family == 4 and b.target_ip])
        self.release(c.id, c.ports)
        c.ports = []
        with self.store.transaction():  # and any row a crash left without a binding
            self.store.release_ports(c.id)

    def retarget(self, c: Container, target: str) -> None:
        """The gateway endpoint changed: point the bindings at the container's new address."""
        old = [_rule(b) for b in c.ports if b.family == 4 and b.target_ip]
        for b in c.ports:
            b.target_ip = target
        self.firewall.remove_ports(old)
        self.firewall.add_ports([_rule(b) for b in c.ports if b.family == 4 and b.target_ip])

    def restore(self, c: Container) -> None:
        """After a daemon restart: the relay kept `c`'s ports (NAT never stopped); take back
        what it does not hold (it was not running, or died while tetherd was down)."""
        if self._found is None:
            try:
                self._found = self.relay.held()
            except RelayError as exc:
                log.warning("cannot ask the port relay what it holds: %s", exc)
                self._found = {}
        missing = []
        for b in c.ports:
            key = _key(b)
            if key in self.owned or key in self._bound:
                continue
            if key in self._found:
                self.owned[key] = self._found[key]  # wire_proxies fixes a stale target
                continue
            try:
                self._bound[key] = self._bind(b.proto, b.host_ip, b.host_port)
            except OSError as exc:
                log.warning(
                    "cannot reserve %s %s again: %s",
                    b.proto,
                    _show(b.host_ip, b.host_port),
                    exc.strerror,
                )
                continue
            missing.append(b)
        try:
            self._hand_over(missing)
        except RelayError as exc:
            log.warning("cannot hand ports of %s to the relay: %s", c.name, exc)

    def restored(self) -> None:
        """Every container is restored: what the relay holds for no one is let go."""
        found, self._found = self._found or {}, None
        stale = [k for k in found if k not in self.owned]
        if stale:
            try:
                self.relay.remove(stale)
            except RelayError as exc:
                log.warning("releasing stale ports in the relay: %s", exc)
        # Nothing is published: a relay left running (after a crash) is not needed.
        if not self.owned and (self.relay.sock is not None or self.relay.adopt()):
            self.relay.quit()

    def _rehome(self) -> None:
        """The relay died while tetherd runs: start a new one and hand it every port again."""
        wanted, self.owned = dict(self.owned), {}
        items = []
        for key, tgt in wanted.items():
            proto, ip, port = key
            try:
                sock = self._bind(proto, ip, port)
            except OSError as exc:
                log.warning("cannot reserve %s %s again: %s", proto, _show(ip, port), exc.strerror)
                continue
            items.append((key, tgt, sock))
        try:
            if items:
                self.relay.add(items)
            for key, tgt, _sock in items:
                self.owned[key] = tgt
        except RelayError as exc:
            log.error("the port relay cannot be started again: %s", exc)
        finally:
            for item in items:
                item[2].close()

    def close(self) -> None:
        """tetherd is stopping: a relay with ports keeps them (live restore); an idle one ends."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.owned:
            self.relay.detach()
        else:
            self.relay.quit()

    def rules(self, containers: list[Container]) -> list[PortRule]:
        return [_rule(b) for c in containers for b in c.ports if b.family == 4 and b.target_ip]


class _Allocated(Exception):
    """reserve_port found the row taken: the host address `ip` of this port is allocated."""

    def __init__(self, ip: str) -> None:
        super().__init__(ip)
        self.ip = ip


def _key(b: PortBinding) -> Key:
    return (b.proto, b.host_ip, b.host_port)


def _target(b: PortBinding) -> Target:
    """Where the relay sends a port: IPv6 host ports only (IPv4 ones are kernel NAT)."""
    return (b.target_ip, b.container_port) if b.family == 6 and b.target_ip else None


def _rule(b: PortBinding) -> PortRule:
    return PortRule(
        b.proto,
        "" if b.host_ip == WILDCARD[4] else b.host_ip,
        b.host_port,
        b.target_ip,
        b.container_port,
    )


def ports_view(c: Container) -> dict[str, Any]:
    """NetworkSettings.Ports: bindings by container port, exposed-only ports as null."""
    if not c.state.running or not own_endpoints(c.network_mode):
        return {}
    out: dict[str, Any] = {k: None for k in sorted(c.config.get("ExposedPorts") or {})}
    for b in c.ports:
        key = f"{b.container_port}/{b.proto}"
        if out.get(key) is None:
            out[key] = []
        out[key].append({"HostIp": b.host_ip, "HostPort": str(b.host_port)})
    return out


def ports_list(c: Container) -> list[dict[str, Any]]:
    """The list API's Ports: published first, then exposed-only."""
    out: list[dict[str, Any]] = []
    published = set()
    for b in c.ports if c.state.running else []:
        out.append(
            {
                "IP": b.host_ip,
                "PrivatePort": b.container_port,
                "PublicPort": b.host_port,
                "Type": b.proto,
            }
        )
        published.add(f"{b.container_port}/{b.proto}")
    for key in sorted(c.config.get("ExposedPorts") or {}):
        if key not in published:
            port, _, proto = key.partition("/")
            out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
    return out
