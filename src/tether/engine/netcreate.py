"""From a `POST /networks/create` body to a fully resolved Network, or Docker's error.

Pure: every check a create needs happens here, before anything is written to the store or
the kernel, so a refused create changes nothing.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tether.api.networks import IPAM, IPAMConfig, NetworkCreate
from tether.drivers.base import NetworkDriver
from tether.errors import Conflict, Forbidden, InvalidParameter, NotFound
from tether.ipam import config as ipamconfig
from tether.ipam.addresses import default_gateway
from tether.ipam.pools import PoolSpec, overlaps, pick_subnet
from tether.model import Network, Pool
from tether.timefmt import now_iso

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network

LINK_LOCAL = ipaddress.ip_network("fe80::/64")


def new_id() -> str:
    return secrets.token_hex(32)


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


def resolve(
    req: NetworkCreate,
    driver: NetworkDriver,
    networks: list[Network],
    host_routes: list[Subnet],
    default_pools: list[PoolSpec],
    cursors: dict[int, str],
    net_id: str | None = None,
) -> Resolved:
    """`driver` is the registry's answer for the request's Driver (the caller asked for it)."""
    name = req.Name
    if not name:
        raise InvalidParameter("network name can't be empty")
    if any(n.name == name for n in networks):
        raise Conflict(f"network with name {name} already exists")
    caps = driver.caps
    if caps.singleton and any(n.driver == driver.name for n in networks):
        raise Forbidden(f'only one instance of "{driver.name}" network is allowed')
    _refuse_what_cannot_be_honoured(req, driver)

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
        driver=driver.name,
        created=now_iso(),
        scope=caps.scope,
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
    driver.validate(net, networks)
    if not caps.endpoints:
        net.ipam_config = []
        return resolved

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
    if len(v4) > caps.subnets_per_family or len(v6) > caps.subnets_per_family:
        raise Forbidden(f"{driver.name} driver doesn't support multiple subnets")
    for _, net6 in v6:
        if net6.is_multicast:
            raise InvalidParameter(f"multicast subnet '{net6}' is not allowed")
        if net6 != LINK_LOCAL and net6.overlaps(LINK_LOCAL):
            raise InvalidParameter(f"'{net6}' clashes with the Link-Local prefix 'fe80::/64'")

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
    if enable_ipv6 and not v6:
        # Docker 27+: a /64 from the default IPv6 pool (the host's ULA /48 unless
        # --default-address-pool names an IPv6 base).
        subnet6 = pick_subnet(default_pools, 6, taken, host_routes, cursors.get(6))
        resolved.cursors[6] = str(subnet6)
        gw6 = default_gateway(subnet6, None)
        net.pools.append(Pool(subnet=str(subnet6), gateway=str(gw6)))
        shown.append({"Subnet": str(subnet6), "Gateway": str(gw6)})
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
    name: str, driver: NetworkDriver, options: dict[str, str], pool: Pool | None = None
) -> Network:
    """One of the networks every daemon starts with (netmodes.PREDEFINED)."""
    net = Network(id=new_id(), name=name, driver=driver.name, created=now_iso())
    net.ipam_options = None
    net.options = dict(options)
    if pool is not None:
        net.pools = [pool]
        net.ipam_config = [{"Subnet": pool.subnet}]
    driver.validate(net, [])
    return net


def _refuse_what_cannot_be_honoured(req: NetworkCreate, driver: NetworkDriver) -> None:
    """Flags Docker accepts for swarm or other drivers: refused by name, never stored."""
    if req.Ingress and not driver.caps.ingress:
        raise Forbidden(
            f"the {driver.name} driver cannot carry the routing mesh: an ingress network is "
            "an overlay network (-d overlay --ingress), on a node with --cluster-store"
        )
    scope = req.Scope or ""
    if scope not in ("", "local", driver.caps.scope):
        raise Forbidden(
            f"the {driver.name} driver cannot create {scope}-scope networks (its scope is "
            f"{driver.caps.scope}); global networks are overlay networks with --cluster-store"
        )
    if "encrypted" in (req.Options or {}) and not driver.caps.encryption:
        raise Forbidden(
            f"the {driver.name} driver cannot encrypt traffic: -o encrypted is for overlay networks"
        )
    if req.EnableIPv4 is False:
        raise InvalidParameter(
            "tether does not support IPv6-only networks yet: EnableIPv4 cannot be false"
        )
    if req.ConfigOnly or (req.ConfigFrom is not None and req.ConfigFrom.Network):
        raise Forbidden(
            "--config-only and --config-from networks are swarm configuration templates, "
            "which tether does not support"
        )
