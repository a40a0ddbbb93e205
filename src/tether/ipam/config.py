"""Turning --subnet/--ip-range/--gateway/--aux-address into IPAM configs, with docker's checks.

The docker CLI checks these before it calls the daemon (so its messages carry no "Error
response from daemon" prefix); the tether CLI runs this same function for the same reason,
and the daemon runs it again for API clients that skip the CLI.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tether.errors import InvalidParameter

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_cidr(text: str) -> tuple[Addr, Net]:
    """Go's net.ParseCIDR: 'ADDR/LEN' with a mandatory prefix length; host bits allowed."""
    if "/" not in text:
        raise ValueError(f"invalid CIDR address: {text}")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"invalid CIDR address: {text}") from None
    len_part = text.partition("/")[2]
    if not len_part.isdigit():
        raise ValueError(f"invalid CIDR address: {text}")
    return iface.ip, iface.network


def parse_ip(text: str) -> Addr | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _contains(subnet: str, data: str) -> bool:
    try:
        _, net = parse_cidr(subnet)
    except ValueError as exc:
        raise InvalidParameter(f"invalid subnet: {exc}") from None
    if "/" in data:
        try:
            ip, _ = parse_cidr(data)
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
    else:
        parsed = parse_ip(data)
        if parsed is None:
            return False
        ip = parsed
    return ip.version == net.version and ip in net


def consolidate(
    subnets: list[str],
    ranges: list[str],
    gateways: list[str],
    aux: list[tuple[str, str]],
) -> list[dict[str, Any]]:
    """docker network create's consolidateIpam, message for message."""
    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise InvalidParameter("every ip-range or gateway must have a corresponding subnet")
    data: dict[str, dict[str, Any]] = {}
    for s in subnets:
        for k in data:
            if _contains(s, k) or _contains(k, s):
                raise InvalidParameter("multiple overlapping subnet configuration is not supported")
        data[s] = {"Subnet": s, "AuxiliaryAddresses": {}}
    for r in ranges:
        match = False
        for s in subnets:
            if not _contains(s, r):
                continue
            if data[s].get("IPRange"):
                raise InvalidParameter(
                    f"cannot configure multiple ranges ({r}, {data[s]['IPRange']}) "
                    f"on the same subnet ({s})"
                )
            data[s]["IPRange"] = r
            match = True
        if not match:
            raise InvalidParameter(f"no matching subnet for range {r}")
    for g in gateways:
        match = False
        for s in subnets:
            if not _contains(s, g):
                continue
            if data[s].get("Gateway"):
                raise InvalidParameter(
                    f"cannot configure multiple gateways ({g}, {data[s]['Gateway']}) "
                    f"for the same subnet ({s})"
                )
            data[s]["Gateway"] = g
            match = True
        if not match:
            raise InvalidParameter(f"no matching subnet for gateway {g}")
    for key, a in aux:
        match = False
        for s in subnets:
            if not _contains(s, a):
                continue
            data[s]["AuxiliaryAddresses"][key] = a
            match = True
        if not match:
            raise InvalidParameter(f"no matching subnet for aux-address {a}")
    out: list[dict[str, Any]] = []
    for s in subnets:
        entry = data[s]
        if not entry["AuxiliaryAddresses"]:
            del entry["AuxiliaryAddresses"]
        out.append(entry)
    return out


def parse_aux(values: list[str]) -> list[tuple[str, str]]:
    """--aux-address name=ip, as docker's MapOpts parses it."""
    out: list[tuple[str, str]] = []
    for v in values:
        key, sep, val = v.partition("=")
        if not sep:
            raise InvalidParameter(
                f'invalid argument "{v}" for "--aux-address" flag: bad format for key-value pairs'
            )
        out.append((key, val))
    return out
