"""Every check `up` makes before it creates anything, and the start order.

Docker compose finds many of these only half-way through (the daemon refuses the second
container, the first network already exists); tether refuses the whole file up front, in
the daemon's words, so a failed `up` leaves nothing behind.  Pure: what the host already has
comes in as a HostView the caller filled from the API.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from tether.compose.model import ComposeError, Project, Service
from tether.drivers.catalog import LOCAL_DRIVERS, SINGLETONS, option_refusal, refusal
from tether.errors import TetherError
from tether.ipam import config as ipamconfig
from tether.netmodes import DEFAULT_DRIVER, own_endpoints

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class HostNetwork:
    name: str
    subnets: list[str]
    user_subnets: bool
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class HostContainer:
    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class HostView:
    """What exists already: networks by name, containers by name, ports in use by others."""

    networks: dict[str, HostNetwork] = field(default_factory=dict)
    containers: dict[str, HostContainer] = field(default_factory=dict)
    ports: list[tuple[str, int, str, str]] = field(default_factory=list)  # ip, port, proto, who
    # The daemon's network drivers (its registry, as /info lists them).
    drivers: set[str] = field(default_factory=lambda: set(LOCAL_DRIVERS))


def container_name(project: str, svc: Service, number: int) -> str:
    return svc.container_name or f"{project}-{svc.name}-{number}"


def check_services(project: Project) -> None:
    for name, svc in project.services.items():
        if not svc.image:
            raise ComposeError(
                f'service "{name}" has neither an image nor a build context specified: '
                "invalid compose project"
            )
        if svc.container_name and svc.replicas > 1:
            raise ComposeError(
                f"services.deploy.replicas: can't set container_name and {name} as container "
                "name must be unique: invalid compose project"
            )
        for att in svc.networks:
            if att.network not in project.networks:
                raise ComposeError(
                    f'service "{name}" refers to undefined network {att.network}: '
                    "invalid compose project"
                )
        for dep, cfg in svc.depends_on.items():
            if dep not in project.services and cfg.required:
                raise ComposeError(
                    f'service "{name}" depends on undefined service "{dep}": '
                    "invalid compose project"
                )
        if svc.network_mode.startswith("service:"):
            target = svc.network_mode.partition(":")[2]
            if target not in project.services:
                raise ComposeError(
                    f'service "{name}" refers to undefined service {target}: '
                    "invalid compose project"
                )


def start_order(project: Project) -> list[list[str]]:
    """Services in levels: each level depends only on earlier ones.  Cycles are errors."""
    deps = {
        name: sorted(d for d in svc.depends_on if d in project.services)
        for name, svc in project.services.items()
    }
    _find_cycle(deps)
    levels: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(deps):
        level = sorted(n for n, ds in deps.items() if n not in placed and set(ds) <= placed)
        levels.append(level)
        placed.update(level)
    return levels


def _find_cycle(deps: dict[str, list[str]]) -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in deps[node]:
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise ComposeError("dependency cycle detected: " + " -> ".join(cycle))
            if state.get(nxt) is None:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(deps):
        if state.get(node) is None:
            visit(node)


def _subnets_of(project: Project, key: str, host: HostView) -> tuple[list[Subnet], bool]:
    """The subnets a service address must fall in, and whether the user configured them."""
    net = project.networks[key]
    if net.external or (net.name in host.networks and not net.ipam_config):
        existing = host.networks.get(net.name)
        if existing is None:
            return [], False
        return [ipaddress.ip_network(s, strict=False) for s in existing.subnets], (
            existing.user_subnets
        )
    subnets = [ipaddress.ip_network(c["subnet"], strict=False) for c in net.ipam_config]
    return subnets, bool(subnets)


def check_networks(project: Project, host: HostView) -> None:
    mine: list[tuple[str, Subnet]] = []
    for key, net in project.networks.items():
        existing = host.networks.get(net.name)
        if net.external:
            if existing is None:
                raise ComposeError(
                    f"network {net.name} declared as external, but could not be found"
                )
            continue
        if existing is not None:
            label = existing.labels.get("com.docker.compose.network", "")
            owner = existing.labels.get("com.docker.compose.project", "")
            if label != key or owner != project.name:
                raise ComposeError(
                    f"network {net.name} was found but has incorrect label "
                    f'com.docker.compose.network set to "{label}"'
                )
        driver = net.driver or DEFAULT_DRIVER
        if driver in SINGLETONS:
            raise ComposeError(
                f'network {net.name}: only one instance of "{driver}" network is allowed'
            )
        if driver not in host.drivers:
            raise ComposeError(f"network {net.name}: {refusal(driver)}")
        for key in net.driver_opts:
            refused = option_refusal(driver, key)
            if refused:
                raise ComposeError(f"network {net.name}: {refused}")
        if net.ipam_driver not in ("", "default"):
            raise ComposeError(f'network {net.name}: plugin "{net.ipam_driver}" not found')
        cfgs = net.ipam_config
        for c in cfgs:
            if "subnet" not in c:
                raise ComposeError(
                    f"network {net.name}: every ip-range or gateway must have a corresponding subnet"
                )
        try:
            ipamconfig.consolidate(
                [c["subnet"] for c in cfgs],
                [c["ip_range"] for c in cfgs if "ip_range" in c],
                [c["gateway"] for c in cfgs if "gateway" in c],
                [(k, v) for c in cfgs for k, v in (c.get("aux_addresses") or {}).items()],
            )
        except (ValueError, TetherError) as exc:
            raise ComposeError(f"network {net.name}: {exc}") from None
        # (enable_ipv6 without an IPv6 subnet is fine: the daemon takes a /64 of its pool.)
        subnets = [ipaddress.ip_network(c["subnet"], strict=False) for c in cfgs]
        if existing is not None:
            continue  # ours from an earlier `up`: its subnets are already accounted for
        for s in subnets:
            for other_name, other in [*mine, *_host_subnets(host, skip=project.name)]:
                if s.version == other.version and s.overlaps(other):
                    raise ComposeError(
                        f"network {net.name}: Pool overlaps with other one on this address "
                        f"space (subnet {s} and {other_name}'s {other})"
                    )
            mine.append((net.name, s))


def _host_subnets(host: HostView, skip: str) -> list[tuple[str, Subnet]]:
    out: list[tuple[str, Subnet]] = []
    for net in host.networks.values():
        if net.labels.get("com.docker.compose.project") == skip:
            continue
        for s in net.subnets:
            try:
                out.append((net.name, ipaddress.ip_network(s, strict=False)))
            except ValueError:
                continue
    return out


def check_addresses(project: Project, host: HostView) -> None:
    taken: dict[tuple[str, str], str] = {}
    for name, svc in project.services.items():
        for att in svc.networks:
            for addr_text in (att.ipv4_address, att.ipv6_address):
                if not addr_text:
                    continue
                where = f'service "{name}" network "{att.network}"'
                try:
                    addr = ipaddress.ip_address(addr_text)
                except ValueError:
                    raise ComposeError(f"{where}: invalid IP address: {addr_text}") from None
                subnets, configured = _subnets_of(project, att.network, host)
                if not configured:
                    raise ComposeError(
                        f"{where}: user specified IP address is supported only when "
                        "connecting to networks with user configured subnets"
                    )
                if not any(addr.version == s.version and addr in s for s in subnets):
                    raise ComposeError(
                        f"{where}: Invalid address {addr_text}: It does not belong to any of "
                        "this network's subnets"
                    )
                if svc.replicas > 1:
                    raise ComposeError(
                        f"{where}: {svc.replicas} replicas cannot share the static address "
                        f"{addr_text}: Address already in use"
                    )
                key = (att.network, str(addr))
                if key in taken:
                    raise ComposeError(
                        f'{where}: Address already in use: {addr_text} is also given to service "{taken[key]}"'
                    )
                taken[key] = name


def _overlap(a: str, b: str) -> bool:
    """Two host addresses clash when equal or when either is a wildcard of the same family."""
    wild = ("", "0.0.0.0", "::")
    if a in wild or b in wild:
        va = 6 if ":" in a else 4 if a else 0
        vb = 6 if ":" in b else 4 if b else 0
        return va == 0 or vb == 0 or va == vb
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


def check_ports(project: Project, host: HostView) -> None:
    claimed: list[tuple[str, int, str, str]] = []
    for name, svc in project.services.items():
        if not own_endpoints(svc.network_mode) or svc.network_mode.startswith("service:"):
            continue
        fixed = [p for p in svc.ports if p.published and "-" not in p.published]
        for n in range(1, svc.replicas + 1):
            who = container_name(project.name, svc, n)
            for p in fixed:
                port = int(p.published)
                for ip, other_port, proto, owner in [*claimed, *host.ports]:
                    if other_port == port and proto == p.protocol and _overlap(ip, p.host_ip):
                        shown = p.host_ip or "0.0.0.0"
                        shown = f"[{shown}]" if ":" in shown else shown
                        raise ComposeError(
                            f'service "{name}": Bind for {shown}:{port} failed: port is '
                            f"already allocated (also published by {owner})"
                        )
                claimed.append((p.host_ip, port, p.protocol, f"{who}"))


def check_container_names(project: Project, host: HostView) -> None:
    for svc in project.services.values():
        for n in range(1, svc.replicas + 1):
            name = container_name(project.name, svc, n)
            other = host.containers.get(name)
            if other is None:
                continue
            labels = other.labels
            if (
                labels.get("com.docker.compose.project") == project.name
                and labels.get("com.docker.compose.service") == svc.name
            ):
                continue
            raise ComposeError(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{other.id}". You have to remove (or rename) that container to be able to '
                "reuse that name."
            )


def check_all(project: Project, host: HostView) -> None:
    """The checks that need the host's view; loader.load already made the file's own."""
    check_networks(project, host)
    check_addresses(project, host)
    check_ports(project, host)
    check_container_names(project, host)
