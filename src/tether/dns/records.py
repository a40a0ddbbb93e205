"""What the embedded DNS knows: names and addresses per network, as an immutable snapshot.

The control plane makes a new Zone on every change (start, stop, connect, disconnect, rm)
and swaps it in whole; the DNS thread only ever reads a complete one.  A change costs what
the changed container has, not what the zone holds: `apply` copies only the dicts of the
networks it touches (a C-speed dict copy) and edits the copies.  Pure: no sockets.

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
        return cls().apply([], members, generation)

    def apply(self, removed: list[Member], added: list[Member], generation: int) -> Zone:
        """A new zone: this one without `removed` (members it holds) and with `added`.

        This zone is never changed (the DNS thread may be reading it); the dicts of the
        networks touched are copied, entry lists are replaced, never edited in place.
        """
        touched = {m.network for m in [*removed, *added]}
        names = dict(self.names)
        ptr = dict(self.ptr)
        for net in touched:
            names[net] = dict(names.get(net, {}))
            ptr[net] = dict(ptr.get(net, {}))
        for m in removed:
            net_names = names[m.network]
            pair = (m.ipv4, m.ipv6)
            for fqdn in _fqdns(m):
                entries = net_names.get(fqdn)
                if entries is None or pair not in entries:
                    continue
                rest = [e for e in entries if e != pair]
                if rest:
                    net_names[fqdn] = rest
                else:
                    del net_names[fqdn]
            for ip in (m.ipv4, m.ipv6):
                if ip:
                    ptr[m.network].pop(reverse_name(ip), None)
        for m in added:
            net_names = names[m.network]
            pair = (m.ipv4, m.ipv6)
            for fqdn in _fqdns(m):
                entries = net_names.get(fqdn, [])
                if pair not in entries:
                    net_names[fqdn] = [*entries, pair]
            for ip in (m.ipv4, m.ipv6):
                if ip:
                    ptr[m.network][reverse_name(ip)] = f"{m.name}.{m.network}."
        for net in touched:
            if not names[net]:
                del names[net]
            if not ptr[net]:
                del ptr[net]
        return Zone(generation, names, ptr)

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


def _fqdns(m: Member) -> set[str]:
    """Every name a member answers to on its network, lower case, with the trailing dot."""
    labels = {m.name, m.short_id, m.hostname, *m.aliases} - {""}
    return {fqdn.lower() for label in labels for fqdn in (f"{label}.", f"{label}.{m.network}.")}
