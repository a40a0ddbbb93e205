"""From a `POST /networks/create` body to a fully resolved Network, or Docker's error.

Pure: every check a create needs happens here, before anything is written to the store or
the kernel, so a refused create changes nothing.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tether.api.networks import IPAM, IPAMConfig, NetworkCreate
from tether.errors import (
    SWARM_MESSAGE,
    Conflict,
    Forbidden,
    InvalidParameter,
    NotFound,
    SystemFailure,
)
from tether.ipam import config as ipamconfig
from tether.ipam.addresses import default_gateway
from tether.ipam.pools import PoolSpec, overlaps, pick_subnet
from tether.model import (
    OPT_BRIDGE_NAME,
    OPT_ICC,
    OPT_MASQ,
    OPT_MTU,
    Network,
    Pool,
)

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network

LINK_LOCAL = ipaddress.ip_network("fe80::/64")
# Linux interface names: at most 15 bytes, no '/', no whitespace, not '.' or '..'.
IFNAME_RE = re.compile(r"[^/\s:]{1,15}")


def new_id() -> str:
    return secrets.token_hex(32)


def now_iso() -> str:
    """Docker's Created format: RFC 3339 with nanoseconds and the local offset."""
    t = datetime.now(UTC).astimezone()
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{t.microsecond:06d}000"
    off = t.strftime("%z")
    off = "Z" if off in ("+0000", "") else f"{off[:3]}:{off[3:]}"
    return f"{base}.{frac}{off}"


def parse_go_bool(key: str, value: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise InvalidParameter(
        f'failed to parse {key} value: {value} (strconv.ParseBool: parsing "{value}": invalid syntax)'
    )


def parse_go_int(key: str, value: str) -> int:
    text = value[1:] if value[:1] in "+-" else value
    if not text or not text.isdigit() or not text.isascii():
        raise InvalidParameter(
            f'failed to parse {key} value: {value} (strconv.Atoi: parsing "{value}": invalid syntax)'
        )
    n = int(value)
    if not -(2**63) <= n < 2**63:
        raise InvalidParameter(
            f'failed to parse {key} value: {value} (strconv.Atoi: parsing "{value}": value out of range)'
        )
    return n


@dataclass
class Resolved:
    network: Network
    # Addresses the network itself holds: (address, owner) per pool subnet.
    reservations: list[tuple[str, str]] = field(default_factory=list)
    cursors: dict[int, str] = field(default_factory=dict)


def _find_conflicting_network(subnet: Subnet, networks: Iterable[Network]) -> Network | None:
    for n in networks:
        for p in n.pools:
            if overlaps(subnet, p.network):
                return n
    return None


def _bridge_options(
    net_id: str, name: str, options: dict[str, str], networks: Iterable[Network]
) -> tuple[str, int, bool, bool]:
    bridge_name = options.get(OPT_BRIDGE_NAME, "") or f"tb-{net_id[:12]}"
    if not IFNAME_RE.fullmatch(bridge_name) or bridge_name in (".", ".."):
        raise InvalidParameter(f"invalid bridge name: {bridge_name}")
    mtu = 0
    if OPT_MTU in options:
        mtu = parse_go_int(OPT_MTU, options[OPT_MTU])
        if mtu != 0 and not 68 <= mtu <= 65535:
            raise InvalidParameter(f"invalid MTU number: {mtu}")
    icc = parse_go_bool(OPT_ICC, options[OPT_ICC]) if OPT_ICC in options else True
    masq = parse_go_bool(OPT_MASQ, options[OPT_MASQ]) if OPT_MASQ in options else True
    for other in networks:
        if other.driver == "bridge" and other.bridge_name == bridge_name:
            raise Forbidden(
                f"cannot create network {net_id} ({bridge_name}): conflicts with network "
                f"{other.id} ({other.bridge_name}): networks have same bridge name"
            )
    return bridge_name, mtu, icc, masq


def resolve(
    req: NetworkCreate,
    networks: list[Network],
    host_routes: list[Subnet],
    default_pools: list[PoolSpec],
    cursors: dict[int, str],
    net_id: str | None = None,
) -> Resolved:
    name = req.Name
    if not name:
        raise InvalidParameter("network name can't be empty")
    if any(n.name == name for n in networks):
        raise Conflict(f"network with name {name} already exists")

    driver = req.Driver or "bridge"
    if driver == "overlay":
        raise Forbidden(SWARM_MESSAGE)
    if driver in ("host", "null"):
        if any(n.driver == driver for n in networks):
            raise Forbidden(f'only one instance of "{driver}" network is allowed')
    elif driver != "bridge":
        raise NotFound(f'plugin "{driver}" not found')

    ipam = req.IPAM or IPAM()
    ipam_driver = ipam.Driver or "default"
    if ipam_driver != "default":
        raise NotFound(f'plugin "{ipam_driver}" not found')
    raw_configs: list[IPAMConfig] = list(ipam.Config or [])
    options: dict[str, str] = dict(req.Options or {})
    labels: dict[str, str] = dict(req.Labels or {})
    enable_ipv6 = bool(req.EnableIPv6)
    internal = bool(req.Internal)

    net_id = net_id or new_id()
    net = Network(
        id=net_id,
        name=name,
        driver=driver,
        created=now_iso(),
        enable_ipv6=enable_ipv6,
        internal=internal,
        attachable=bool(req.Attachable),
        ingress=bool(req.Ingress),
        ipam_driver=ipam_driver,
        ipam_options=dict(ipam.Options or {}),
        options=options,
        labels=labels,
    )
    resolved = Resolved(net)
    if driver in ("host", "null"):
        net.ipam_config = []
        return resolved

    net.bridge_name, net.mtu, net.icc, net.masquerade = _bridge_options(
        net_id, name, options, networks
    )

    # Parse and check each user config; the same checks docker's CLI makes, for API callers.
    parsed: list[tuple[IPAMConfig, Subnet]] = []
    subnets = [c.Subnet or "" for c in raw_configs]
    for c in raw_configs:
        s = c.Subnet or ""
        if not s:
            raise InvalidParameter("every ip-range or gateway must have a corresponding subnet")
        try:
            _, subnet = ipamconfig.parse_cidr(s)
        except ValueError as exc:
            raise InvalidParameter(f"Invalid subnet {s} : {exc}") from None
        parsed.append((c, subnet))
    ipamconfig.consolidate(
        subnets,
        [c.IPRange for c in raw_configs if c.IPRange],
        [c.Gateway for c in raw_configs if c.Gateway],
        [(k, v) for c in raw_configs for k, v in (c.AuxiliaryAddresses or {}).items()],
    )
    v4 = [(c, s) for c, s in parsed if s.version == 4]
    v6 = [(c, s) for c, s in parsed if s.version == 6]
    if len(v4) > 1 or len(v6) > 1:
        raise Forbidden("bridge driver doesn't support multiple subnets")
    for _, net6 in v6:
        if net6.is_multicast:
            raise InvalidParameter(f"multicast subnet '{net6}' is not allowed")
        if net6 != LINK_LOCAL and net6.overlaps(LINK_LOCAL):
            raise InvalidParameter(f"'{net6}' clashes with the Link-Local prefix 'fe80::/64'")
    if enable_ipv6 and not v6:
        raise Forbidden(
            "could not find an available, non-overlapping IPv6 address pool among the "
            "defaults to assign to the network"
        )

    shown: list[dict[str, Any]] = []
    taken = [p.network for n in networks for p in n.pools]
    if v4:
        cfg, subnet = v4[0]
        resolved_pool = _user_pool(cfg, subnet, networks)
        net.pools.append(resolved_pool)
        shown.append(_shown(cfg))
        net.user_subnets = True
    else:
        subnet = pick_subnet(default_pools, 4, taken, host_routes, cursors.get(4))
        resolved.cursors[4] = str(subnet)
        gw = default_gateway(subnet, None)
        net.pools.append(Pool(subnet=str(subnet), gateway=str(gw)))
        shown.append({"Subnet": str(subnet), "Gateway": str(gw)})
    for cfg, subnet in v6:
        shown.append(_shown(cfg))
        if enable_ipv6:
            net.pools.append(_user_pool(cfg, subnet, networks))
    net.ipam_config = shown

    for pool in net.pools:
        resolved.reservations.append((pool.gateway, "gateway"))
        for key, addr in pool.aux.items():
            resolved.reservations.append((addr, f"aux:{key}"))
    return resolved


def _shown(cfg: IPAMConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"Subnet": cfg.Subnet}
    if cfg.IPRange:
        out["IPRange"] = cfg.IPRange
    if cfg.Gateway:
        out["Gateway"] = cfg.Gateway
    if cfg.AuxiliaryAddresses:
        out["AuxiliaryAddresses"] = dict(cfg.AuxiliaryAddresses)
    return out


def _user_pool(cfg: IPAMConfig, subnet: Subnet, networks: list[Network]) -> Pool:
    if _find_conflicting_network(subnet, networks) is not None:
        raise Forbidden("Pool overlaps with other one on this address space")
    ip_range: Subnet | None = None
    if cfg.IPRange:
        try:
            _, ip_range = ipamconfig.parse_cidr(cfg.IPRange)
        except ValueError as exc:
            raise InvalidParameter(f"Invalid IP range {cfg.IPRange} : {exc}") from None
    if cfg.Gateway:
        gw = ipamconfig.parse_ip(cfg.Gateway)
        if gw is None or gw not in subnet:
            raise InvalidParameter(f"no matching subnet for gateway {cfg.Gateway}")
    else:
        gw = default_gateway(subnet, ip_range)
    aux = dict(cfg.AuxiliaryAddresses or {})
    for v in aux.values():
        parsed = ipamconfig.parse_ip(v)
        if parsed is None or parsed not in subnet:
            raise InvalidParameter(f"no matching subnet for aux-address {v}")
    return Pool(
        subnet=str(subnet),
        gateway=str(gw),
        ip_range=str(ip_range) if ip_range is not None else None,
        aux=aux,
    )


def predefined(
    name: str, driver: str, bridge_subnet: Subnet | None = None, bridge_name: str = "tether0"
) -> Network:
    """The networks every daemon starts with: bridge, host, none."""
    net = Network(id=new_id(), name=name, driver=driver, created=now_iso())
    if driver == "bridge":
        if bridge_subnet is None:
            raise SystemFailure("default bridge needs a subnet")
        gw = default_gateway(bridge_subnet, None)
        net.pools = [Pool(subnet=str(bridge_subnet), gateway=str(gw))]
        net.ipam_options = None
        net.ipam_config = [{"Subnet": str(bridge_subnet)}]
        net.bridge_name = bridge_name
        net.options = {
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.enable_icc": "true",
            "com.docker.network.bridge.enable_ip_masquerade": "true",
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": bridge_name,
            "com.docker.network.driver.mtu": "1500",
        }
    else:
        net.ipam_options = None
        net.options = {}
    return net
