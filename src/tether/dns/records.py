"""What the embedded DNS knows: names and addresses per network, as an immutable snapshot.

The control plane builds a new Zone on every change (start, stop, connect, disconnect, rm)
and swaps it in whole; the DNS thread only ever reads a complete one.  Pure: no sockets.

Per user-defined network, a running container answers to its name, its short id, its
--hostname, its network aliases (run --network-alias and connect --alias), and each of those
qualified with the network's name (`web.my-net`).  Names are case-insensitive.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Member:
    """One running container's endpoint on one network."""

    network: str
    name: str
    short_id: str
    hostname: str  # only when set with --hostname (else the short id, already a name)
    aliases: tuple[str, ...]
    ipv4: str = ""
    ipv6: str = ""


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer.lower() + "."


@dataclass
class Zone:
    generation: int = 0
    # network -> lowercase name (with trailing dot) -> [(ipv4, ipv6)]
    names: dict[str, dict[str, list[tuple[str, str]]]] = field(default_factory=dict)
    # network -> reverse name -> PTR target ("name.network.")
    ptr: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def build(cls, members: list[Member], generation: int) -> Zone:
        z = cls(generation)
        for m in members:
            names = z.names.setdefault(m.network, {})
            labels = {m.name, m.short_id, *m.aliases}
            if m.hostname:
                labels.add(m.hostname)
            for label in labels:
                for fqdn in (f"{label}.", f"{label}.{m.network}."):
                    entries = names.setdefault(fqdn.lower(), [])
                    if (m.ipv4, m.ipv6) not in entries:
                        entries.append((m.ipv4, m.ipv6))
            ptrs = z.ptr.setdefault(m.network, {})
            for ip in (m.ipv4, m.ipv6):
                if ip:
                    ptrs[reverse_name(ip)] = f"{m.name}.{m.network}."
        return z

    def lookup(self, networks: tuple[str, ...], qname: str) -> list[tuple[str, str]] | None:
        """All (ipv4, ipv6) for a name on any of the asker's networks; None if unknown."""
        found: list[tuple[str, str]] | None = None
        key = qname.lower()
        for net in networks:
            entries = self.names.get(net, {}).get(key)
            if entries:
                found = (found or []) + [e for e in entries if e not in (found or [])]
        return found

    def reverse(self, networks: tuple[str, ...], qname: str) -> str | None:
        key = qname.lower()
        for net in networks:
            target = self.ptr.get(net, {}).get(key)
            if target:
                return target
        return None
