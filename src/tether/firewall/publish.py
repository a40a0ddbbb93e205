"""Published ports: Docker's -p/-P semantics, host port allocation, reservation, wiring.

For each binding the host port is
- allocated in the store (its primary key rules out a duplicate; 0.0.0.0 also conflicts with
  every address of the same family, as in Docker: "port is already allocated"),
- reserved in the kernel by a socket bound to it, so that no host process can take it (and
  one that already has it makes the publish fail, as docker-proxy's bind would),
- wired: IPv4 by a DNAT map element (kernel NAT, no process), IPv6 by the in-daemon proxy.
Random ports come from the ephemeral range, counted separately per protocol from its start
(Docker hands out 32768, 32769, ... for tcp and udp independently).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tether.errors import SystemFailure
from tether.firewall.manager import Firewall
from tether.firewall.proxy import TcpProxy, UdpProxy
from tether.firewall.render import PortRule
from tether.kernel.fds import lift_socket
from tether.model import Container, PortBinding
from tether.netmodes import own_endpoints
from tether.store.sqlite import Store

log = logging.getLogger("tether.ports")

WILDCARD = {4: "0.0.0.0", 6: "::"}


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


def specs_for(c: Container) -> list[Spec]:
    """HostConfig.PortBindings (+ -P for the exposed ports without one), expanded."""
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
            ip = str(b.get("HostIp") or "").strip("[]")
            # No host address means both families, on one host port (docker port shows both).
            ips = [WILDCARD[4], WILDCARD[6]] if not ip else [ip]
            out.append(
                Spec(
                    proto or "tcp", ips, str(b.get("HostPort") or "").strip(), int(port), ":" in ip
                )
            )
    return out


class Publisher:
    def __init__(self, store: Store, firewall: Firewall) -> None:
        self.store = store
        self.firewall = firewall
        self.held: dict[tuple[str, str, int], Any] = {}  # reservation socket or proxy
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
            if kind == socket.SOCK_STREAM:
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

    def publish(self, c: Container, target: str, endpoint_id: str) -> list[PortBinding]:
        """Allocate, reserve and wire every binding of `c`; all or nothing."""
        done: list[PortBinding] = []
        try:
            for spec in specs_for(c):
                done += self._publish_spec(c, spec, target, endpoint_id)
        except BaseException:
            self.release(c.id, done)
            raise
        self.firewall.add_ports([_rule(b) for b in done if b.family == 4 and b.target_ip])
        return done

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
            bound: list[PortBinding] = []
            try:
                for ip in spec.ips:
                    try:
                        sock = self._bind(spec.proto, ip, port)
                    except OSError as exc:
                        if (
                            _family(ip) == 6
                            and not spec.explicit_v6
                            and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
                        ):
                            continue  # no IPv6 on this host: the 0.0.0.0 half is enough
                        raise
                    b = PortBinding(spec.proto, ip, port, spec.container_port, target)
                    self.store.reserve_port(spec.proto, ip, port, c.id)
                    self.held[(spec.proto, ip, port)] = sock
                    bound.append(b)
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
            if random_port:
                self.next_port[spec.proto] = port + 1
            return bound
        raise PublishError(
            f"driver failed programming external connectivity on endpoint {c.name} ({endpoint_id}): "
            f"no free host port for {spec.container_port}/{spec.proto}"
            + (f" ({last_error.strerror})" if last_error else "")
        )

    async def wire_proxies(self, c: Container) -> None:
        """Start the IPv6 listeners (the reserved sockets become their listening sockets)."""
        for b in c.ports:
            if b.family != 6 or not b.target_ip:
                continue
            key = (b.proto, b.host_ip, b.host_port)
            held = self.held.get(key)
            if isinstance(held, socket.socket):
                proxy: TcpProxy | UdpProxy = (UdpProxy if b.proto == "udp" else TcpProxy)(
                    held, (b.target_ip, b.container_port)
                )
                await proxy.start()
                self.held[key] = proxy
            elif isinstance(held, TcpProxy | UdpProxy):
                held.target = (b.target_ip, b.container_port)

    def release(self, owner: str, bindings: list[PortBinding]) -> None:
        """Give back ports (store rows and reservation sockets); NAT elements go separately."""
        for b in bindings:
            held = self.held.pop((b.proto, b.host_ip, b.host_port), None)
            if isinstance(held, socket.socket):
                held.close()
            elif held is not None:
                import asyncio

                asyncio.get_running_loop().create_task(held.close())
        with self.store.transaction():
            self.store.release_ports(owner)

    def unpublish(self, c: Container) -> None:
        if not c.ports:
            with self.store.transaction():
                self.store.release_ports(c.id)
            return
        self.firewall.remove_ports([_rule(b) for b in c.ports if b.family == 4 and b.target_ip])
        self.release(c.id, c.ports)
        c.ports = []

    def retarget(self, c: Container, target: str) -> None:
        """The gateway endpoint changed: point the bindings at the container's new address."""
        old = [_rule(b) for b in c.ports if b.family == 4 and b.target_ip]
        for b in c.ports:
            b.target_ip = target
        self.firewall.remove_ports(old)
        self.firewall.add_ports([_rule(b) for b in c.ports if b.family == 4 and b.target_ip])

    def restore(self, c: Container) -> None:
        """After a daemon restart: take the reservation sockets again (NAT never stopped)."""
        for b in c.ports:
            key = (b.proto, b.host_ip, b.host_port)
            if key in self.held:
                continue
            try:
                self.held[key] = self._bind(b.proto, b.host_ip, b.host_port)
            except OSError as exc:
                log.warning(
                    "cannot reserve %s %s again: %s",
                    b.proto,
                    _show(b.host_ip, b.host_port),
                    exc.strerror,
                )

    def rules(self, containers: list[Container]) -> list[PortRule]:
        return [_rule(b) for c in containers for b in c.ports if b.family == 4 and b.target_ip]


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
