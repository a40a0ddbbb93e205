"""nftables rules as the kernel holds them, and what they do to one packet (pure).

explain follows a packet through the live ruleset (`nft -j list table ...`, read in the
namespace the table lives in) with the same rules the kernel evaluates: the user's chain
first, then tether's own.  Only what a rule matches on is interpreted; what cannot be known
from a question like "web -> api:80" (a source port, a mark, a rate limit) makes a match
*unknown* rather than true or false, and a rule with an unknown match is reported as one
that may apply.

`Ruleset.evaluate` returns the rule that decided (with its handle), every rule met on the
way, and the rules that might have applied.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import dataclass, field
from typing import Any

Tri = bool | None  # True, False, or unknown


@dataclass(frozen=True)
class Packet:
    """The first packet of a connection (or of its reply), as the firewall sees it."""

    family: int  # 4 or 6
    saddr: str
    daddr: str
    proto: str  # tcp | udp | icmp | icmpv6
    dport: int | None = None
    sport: int | None = None  # usually unknown: an ephemeral port
    iifname: str = ""
    oifname: str = ""
    ct_state: str = "new"  # new | established
    ct_status: frozenset[str] = frozenset()  # {"dnat"} once a published port rewrote it

    def text(self) -> str:
        port = f":{self.dport}" if self.dport is not None else ""
        return f"{self.proto} {self.saddr} -> {self.daddr}{port}"


@dataclass(frozen=True)
class Rule:
    chain: str
    handle: int
    expr: tuple[Any, ...]
    text: str = ""  # as `nft -a list` prints it (filled from the text listing)


@dataclass
class Outcome:
    verdict: str  # accept | drop | reject | continue (fell through every rule)
    rule: Rule | None = None  # the rule whose verdict was final
    met: list[Rule] = field(default_factory=list)  # rules that matched on the way (jumps)
    maybe: list[Rule] = field(default_factory=list)  # rules that may have matched


class Ruleset:
    """One table's chains, sets and maps, from `nft -j list table FAMILY NAME`."""

    def __init__(self, listing: str | dict[str, Any], texts: dict[int, str] | None = None) -> None:
        data = json.loads(listing) if isinstance(listing, str) else listing
        self.chains: dict[str, list[Rule]] = {}
        self.sets: dict[str, list[Any]] = {}
        texts = texts or {}
        for item in data.get("nftables", []):
            if "chain" in item:
                self.chains.setdefault(item["chain"]["name"], [])
            elif "rule" in item:
                r = item["rule"]
                handle = int(r.get("handle", 0))
                self.chains.setdefault(r["chain"], []).append(
                    Rule(r["chain"], handle, tuple(r.get("expr") or ()), texts.get(handle, ""))
                )
            elif "set" in item or "map" in item:
                s = item.get("set") or item.get("map")
                self.sets[s["name"]] = list(s.get("elem") or [])

    def rule(self, handle: int) -> Rule | None:
        for rules in self.chains.values():
            for r in rules:
                if r.handle == handle:
                    return r
        return None

    def evaluate(self, chain: str, pkt: Packet, depth: int = 0) -> Outcome:
        """The verdict of `chain` for `pkt`: the first rule that matches and says accept,
        drop or reject; a jump that comes back falls through; "continue" if none does."""
        out = Outcome("continue")
        if depth > 16:
            return out
        for rule in self.chains.get(chain, []):
            verdict, matched = self._rule(rule, pkt)
            if matched is False:
                continue
            if matched is None:
                if verdict[0] in ("accept", "drop", "reject"):
                    out.maybe.append(rule)
                continue
            kind, target = verdict
            if kind in ("accept", "drop", "reject"):
                out.verdict, out.rule = kind, rule
                return out
            if kind in ("jump", "goto") and target:
                out.met.append(rule)
                inner = self.evaluate(target, pkt, depth + 1)
                out.met += inner.met
                out.maybe += inner.maybe
                if inner.verdict != "continue":
                    out.verdict, out.rule = inner.verdict, inner.rule
                    return out
                if kind == "goto":
                    return out
            if kind == "return":
                return out
        return out

    # -- one rule ---------------------------------------------------------------------------

    def _rule(self, rule: Rule, pkt: Packet) -> tuple[tuple[str, str], Tri]:
        """(verdict, whether every match holds) for one rule."""
        matched: Tri = True
        verdict: tuple[str, str] = ("", "")
        for stmt in rule.expr:
            if not isinstance(stmt, dict) or not stmt:
                continue
            key, val = next(iter(stmt.items()))
            if key == "match":
                m = self._match(val, pkt)
                if m is False:
                    return ("", ""), False
                if m is None:
                    matched = None
            elif key in ("accept", "drop", "reject", "return", "continue"):
                verdict = (key, "")
            elif key in ("jump", "goto"):
                verdict = (key, str(val.get("target", "")))
            elif key == "vmap":
                found = self._vmap(val, pkt)
                if found is None:
                    matched = None
                    verdict = ("drop", "")  # what it might do: reported, never assumed
                elif found == ("", ""):
                    return ("", ""), False
                else:
                    verdict = found
            elif key in ("limit", "quota", "numgen"):
                matched = None if matched is not False else matched
            # counter, log, meta/ct set, notrack, masquerade, dnat...: no verdict here
        if verdict == ("", ""):
            return ("", ""), False if matched is not None else None
        return verdict, matched

    def _vmap(self, val: dict[str, Any], pkt: Packet) -> tuple[str, str] | None:
        key = _value(val.get("key"), pkt)
        data = val.get("data")
        elems: list[Any] = []
        if isinstance(data, str) and data.startswith("@"):
            elems = self.sets.get(data[1:], [])
        elif isinstance(data, dict) and "set" in data:
            elems = list(data["set"])
        if key is None:
            return None
        for elem in elems:
            if isinstance(elem, list) and len(elem) == 2:
                k, v = elem
                if _member(key, k) and isinstance(v, dict) and v:
                    kind, target = next(iter(v.items()))
                    target_name = target.get("target", "") if isinstance(target, dict) else ""
                    return str(kind), str(target_name)
        return ("", "")

    def _match(self, m: dict[str, Any], pkt: Packet) -> Tri:
        left = m.get("left")
        op = str(m.get("op", "=="))
        right = m.get("right")
        # Implicit dependencies: `ip saddr` only ever matches IPv4, `tcp dport` only TCP.
        if isinstance(left, dict) and "payload" in left:
            p = left["payload"]
            proto = p.get("protocol", "")
            if proto == "ip" and pkt.family != 4:
                return False
            if proto == "ip6" and pkt.family != 6:
                return False
            if proto in ("tcp", "udp", "sctp") and pkt.proto != proto:
                return False
            if proto == "th" and pkt.proto not in ("tcp", "udp", "sctp"):
                return False
            if proto in ("icmp", "icmpv6") and pkt.proto != proto:
                return False
        value = _value(left, pkt)
        if value is None:
            return None
        if isinstance(right, str) and right.startswith("@"):
            members = self.sets.get(right[1:])
            if members is None:
                return None
            hit = any(_member(value, e) for e in members)
        elif op == "in" or isinstance(right, list):
            flags = right if isinstance(right, list) else [right]
            have = value if isinstance(value, frozenset) else frozenset([value])
            hit = any(str(f) in have for f in flags)
        else:
            hit = _member(value, right)
        if op in ("==", "in"):
            return hit
        if op == "!=":
            return not hit
        if op in ("<", ">", "<=", ">=") and isinstance(value, int) and isinstance(right, int):
            return {
                "<": value < right,
                ">": value > right,
                "<=": value <= right,
                ">=": value >= right,
            }[op]
        return None


def _value(left: Any, pkt: Packet) -> Any:
    """What the left side of a match reads from the packet (None: not known)."""
    if not isinstance(left, dict):
        return None
    if "payload" in left:
        field_ = left["payload"].get("field", "")
        if field_ == "saddr":
            return pkt.saddr
        if field_ == "daddr":
            return pkt.daddr
        if field_ == "dport":
            return pkt.dport
        if field_ == "sport":
            return pkt.sport
        if field_ == "type" and pkt.proto in ("icmp", "icmpv6"):
            return "echo-request"
        return None
    if "meta" in left:
        key = left["meta"].get("key", "")
        if key == "iifname":
            return pkt.iifname or None
        if key == "oifname":
            return pkt.oifname or None
        if key in ("l4proto", "protocol"):
            return pkt.proto if key == "l4proto" else ("ip" if pkt.family == 4 else "ip6")
        if key == "nfproto":
            return "ipv4" if pkt.family == 4 else "ipv6"
        if key == "pkttype":
            return "host"
        return None
    if "ct" in left:
        key = left["ct"].get("key", "")
        if key == "state":
            return frozenset([pkt.ct_state])
        if key == "status":
            return pkt.ct_status
        if key == "direction":
            return "reply" if pkt.ct_state == "established" else "original"
        return None
    return None


def _member(value: Any, elem: Any) -> bool:
    """Whether `value` equals, or lies in, one element of a set (or a map's key)."""
    if isinstance(elem, dict):
        if "set" in elem:
            return any(_member(value, e) for e in elem["set"])
        if "prefix" in elem:
            try:
                net = ipaddress.ip_network(
                    f"{elem['prefix']['addr']}/{elem['prefix']['len']}", strict=False
                )
                return ipaddress.ip_address(str(value)) in net
            except ValueError:
                return False
        if "range" in elem:
            lo, hi = elem["range"]
            return _compare(lo, value) <= 0 <= _compare(hi, value)
        if "elem" in elem:
            return _member(value, elem["elem"].get("val"))
        return False
    if isinstance(elem, list) and len(elem) == 2:  # a map element: [key, value]
        return _member(value, elem[0])
    if isinstance(value, frozenset):
        return str(elem) in value
    if isinstance(value, int) or isinstance(elem, int):
        return _port(value) == _port(elem)
    if _is_ip(value) and _is_ip(elem):
        return ipaddress.ip_address(str(value)) == ipaddress.ip_address(str(elem))
    return str(value) == str(elem)


def _compare(bound: Any, value: Any) -> int:
    """<0, 0, >0 as bound is below, equal to or above value (addresses or ports)."""
    if _is_ip(bound) and _is_ip(value):
        a, b = int(ipaddress.ip_address(str(bound))), int(ipaddress.ip_address(str(value)))
    else:
        a, b = _port(bound) or 0, _port(value) or 0
    return (a > b) - (a < b)


def _is_ip(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        return False


def _port(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        if v.isdigit():
            return int(v)
        try:
            return socket.getservbyname(v)
        except OSError:
            return None
    return None


# -- the text listing (`nft -a list table ...`) ----------------------------------------------

_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_HANDLE = re.compile(r"^\s*(.*?)\s*# handle (\d+)\s*$")


def rule_texts(listing: str) -> dict[int, str]:
    """Rule handle -> rule text, from a listing made with handles (`nft -a list ...`)."""
    out: dict[int, str] = {}
    chain = ""
    for line in listing.splitlines():
        found = _CHAIN.match(line)
        if found:
            chain = found.group(1)
            continue
        if not chain:
            continue
        if line.strip() == "}":
            chain = ""
            continue
        h = _HANDLE.match(line)
        if h:
            out[int(h.group(2))] = h.group(1)
    return out


_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")


def normalized(text: str) -> str:
    """A rule's text in one form whether it was written by tether or printed by nft:
    anonymous one-element sets lose their braces, counters their values, and numbers are
    decimal (nft prints a mark compared under a mask in hex as wide as the mask: `!= 0`
    comes back as `!= 0x00000000`)."""
    text = _COUNTER.sub("counter", text)
    text = _HEX.sub(lambda m: str(int(m.group(0), 16)), text)
    text = re.sub(r"\{\s*([^,{}]+?)\s*\}", r"\1", text)
    return " ".join(text.split())


def counters(rule: Rule) -> tuple[int, int] | None:
    """(packets, bytes) of a rule's anonymous counter, if it has one."""
    for stmt in rule.expr:
        if isinstance(stmt, dict) and "counter" in stmt and isinstance(stmt["counter"], dict):
            c = stmt["counter"]
            if "packets" in c:  # not a named counter picked from a map
                return int(c.get("packets", 0)), int(c.get("bytes", 0))
    return None


_COUNT_SET = re.compile(r"vips_n[0-9]+")


def vip_entries(rs: Ruleset) -> dict[str, tuple[str, Rule | None]]:
    """VIP -> where a sandbox's `ip tether_svc` table balances it (the set it is an element
    of, or the chain its verdict map element jumps to) and the rule that does it.  Three
    layouts are read: a plain set per task count (`vips_n3`, matched by one rule of chain
    `out`), and the two before it, a verdict map `vips` whose elements jump to a chain per
    task count or per service."""
    out: dict[str, tuple[str, Rule | None]] = {}
    for name, elems in rs.sets.items():
        if not _COUNT_SET.fullmatch(name):
            continue
        ref = json.dumps(f"@{name}")
        rule = next((r for r in rs.chains.get("out", []) if ref in json.dumps(r.expr)), None)
        for elem in elems:
            if isinstance(elem, str):
                out[elem] = (name, rule)
    for elem in rs.sets.get("vips", []):
        if not (isinstance(elem, list) and len(elem) == 2 and isinstance(elem[1], dict)):
            continue
        jump = elem[1].get("jump") or elem[1].get("goto") or {}
        chain = str(jump.get("target", ""))
        rules = rs.chains.get(chain, [])
        out[str(elem[0])] = (chain, rules[0] if rules else None)
    return out


def vip_backends(rs: Ruleset) -> dict[str, list[str]]:
    """VIP -> the task addresses a sandbox's `ip tether_svc` table balances it over, in index
    order (layouts: vip_entries'): a `backends` map keyed by `VIP . index` (a set or a chain
    per number of tasks), or a chain per service whose rule DNATs through an anonymous
    `numgen` map."""
    found: dict[str, dict[int, str]] = {}
    for elem in rs.sets.get("backends", []):
        if isinstance(elem, list) and len(elem) == 2 and isinstance(elem[0], dict):
            key = elem[0].get("concat")
            if isinstance(key, list) and len(key) == 2:
                found.setdefault(str(key[0]), {})[int(key[1])] = str(elem[1])
    out = {vip: [by[i] for i in sorted(by)] for vip, by in found.items()}
    for vip, (where, _rule) in vip_entries(rs).items():
        if vip in out:
            continue
        targets: list[str] = []
        if not _COUNT_SET.fullmatch(where):  # a chain: a service's own map, or n0's drop
            for r in rs.chains.get(where, []):
                targets += dnat_targets(r.expr)
        out[vip] = targets
    return out


def dnat_targets(expr: tuple[object, ...]) -> list[str]:
    """The addresses of a `dnat to numgen random mod N map { 0 : IP, ... }` rule (or of a
    plain `dnat to IP`)."""
    out: list[str] = []
    for stmt in expr:
        if not isinstance(stmt, dict) or "dnat" not in stmt:
            continue
        addr = stmt["dnat"].get("addr") if isinstance(stmt["dnat"], dict) else None
        if isinstance(addr, str):
            out.append(addr)
        elif isinstance(addr, dict) and "map" in addr:
            data = addr["map"].get("data")
            elems = data.get("set", []) if isinstance(data, dict) else []
            for e in elems:
                if isinstance(e, list) and len(e) == 2:
                    out.append(str(e[1]))
    return out
