"""One query in, one decision out: answer it, forward it, or drop it (pure, no sockets).

Docker's embedded DNS, as observed (../shared/reference/docker-behavior.md, section 2):
- A/AAAA for names of containers sharing a network with the asker, TTL 600, flags QR RD RA
  (no AA), the question echoed with its case; a known name without the asked family answers
  NOERROR with no data and is not forwarded.
- PTR for those containers' addresses: `name.network.`.
- Several containers behind one name: all their addresses, in a new random order every time.
- Anything else goes to the upstream servers, except a single-label name when the container
  set ndots itself (answered NOERROR, empty).
- Answers too big for the UDP size asked for go out truncated (TC), for a retry over TCP.

Parsing is dnspython's (the slow path).  What the fast path caches is produced here too: the
whole answer minus its ID, or, for round-robin names, the answer cut into its records so that
a hit only shuffles them.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tether.dns.records import Zone

TTL = 600
A, AAAA, PTR = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.PTR


@dataclass(frozen=True)
class View:
    """What one sandbox may see and where its other questions go."""

    networks: tuple[str, ...]
    upstreams: tuple[str, ...]
    ndots_set: bool = False


class Shuffled:
    """A cached round-robin answer: the same records, a new order on every hit."""

    __slots__ = ("chunks", "head", "tail")

    def __init__(self, head: bytes, chunks: list[bytes], tail: bytes) -> None:
        self.head = head
        self.chunks = chunks
        self.tail = tail

    def render(self) -> bytes:
        chunks = self.chunks[:]
        random.shuffle(chunks)
        return self.head + b"".join(chunks) + self.tail


@dataclass
class Decision:
    kind: str  # "answer" | "forward" | "drop"
    wire: bytes = b""
    cache: bytes | Shuffled | None = None  # what a later identical query may reuse (minus ID)


DROP = Decision("drop")
FORWARD = Decision("forward")


def question_end(wire: bytes) -> int:
    """Offset just past the first question, or -1 if it does not parse (no compression)."""
    if len(wire) < 12 or struct.unpack_from(">H", wire, 4)[0] < 1:
        return -1
    pos = 12
    while pos < len(wire):
        n = wire[pos]
        if n == 0:
            pos += 1
            return pos + 4 if pos + 4 <= len(wire) else -1
        if n & 0xC0:
            return -1
        pos += 1 + n
    return -1


def error_response(query: bytes, rcode: int) -> bytes:
    """A minimal reply (SERVFAIL, FORMERR, NOTIMP) built from the raw header and question."""
    if len(query) < 12:
        return b""
    qid, flags = struct.unpack_from(">HH", query, 0)
    end = question_end(query)
    question = query[12:end] if end > 0 else b""
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | (rcode & 0xF)  # QR, opcode+RD kept, RA
    return struct.pack(">HHHHHH", qid, out_flags, 1 if question else 0, 0, 0, 0) + question


def truncated(query: bytes) -> bytes:
    """Header and question only, with TC set: the client asks again over TCP."""
    wire = error_response(query, 0)
    if not wire:
        return b""
    flags = struct.unpack_from(">H", wire, 2)[0] | 0x0200
    return wire[:2] + struct.pack(">H", flags) + wire[4:]


def udp_limit(msg: dns.message.Message) -> int:
    return max(512, msg.payload) if msg.edns >= 0 else 512


def decide(query: bytes, zone: Zone, view: View, over_tcp: bool = False) -> Decision:
    try:
        msg = dns.message.from_wire(query)
    except dns.message.ShortHeader:
        return DROP
    except Exception:
        wire = error_response(query, dns.rcode.FORMERR)
        return Decision("answer", wire) if wire else DROP
    if msg.flags & dns.flags.QR:
        return DROP  # a response sent to us: never answer one
    if msg.opcode() != dns.opcode.QUERY:
        return Decision("answer", error_response(query, dns.rcode.NOTIMP))
    if len(msg.question) != 1:
        return Decision("answer", error_response(query, dns.rcode.FORMERR))
    q = msg.question[0]
    if q.rdclass != dns.rdataclass.IN:
        return FORWARD
    name_text = q.name.to_text()
    answer: dns.rrset.RRset | None = None
    known = False
    if q.rdtype in (A, AAAA):
        entries = zone.lookup(view.networks, name_text)
        if entries is not None:
            known = True
            pick = 0 if q.rdtype == A else 1
            ips = [e[pick] for e in entries if e[pick]]
            if ips:
                answer = dns.rrset.from_text_list(
                    q.name, TTL, "IN", dns.rdatatype.to_text(q.rdtype), ips
                )
    elif q.rdtype == PTR:
        target = zone.reverse(view.networks, name_text)
        if target is not None:
            known = True
            answer = dns.rrset.from_text(q.name, TTL, "IN", "PTR", target)
    if not known:
        single_label = "." not in name_text.rstrip(".")
        if view.ndots_set and single_label and name_text != ".":
            return _respond(msg, query, None, over_tcp, cacheable=True)
        return FORWARD
    return _respond(msg, query, answer, over_tcp, cacheable=True)


def _respond(
    msg: dns.message.Message,
    query: bytes,
    answer: dns.rrset.RRset | None,
    over_tcp: bool,
    cacheable: bool,
) -> Decision:
    r = dns.message.make_response(msg, recursion_available=True)
    if answer is not None:
        r.answer.append(answer)
    limit = 65535 if over_tcp else udp_limit(msg)
    try:
        wire = r.to_wire(max_size=limit)
    except dns.exception.TooBig:
        return Decision("answer", truncated(query), truncated(query)[2:] if cacheable else None)
    if not cacheable:
        return Decision("answer", wire)
    count = len(answer) if answer is not None else 0
    if count > 1:
        return Decision("answer", wire, _shuffled(query, wire, count))
    return Decision("answer", wire, wire[2:])


def _shuffled(query: bytes, wire: bytes, count: int) -> Shuffled | None:
    """Cut the answer section into its records (all the same size: compressed name pointer,
    fixed fields, one address), so that a cache hit can reorder them cheaply."""
    start = question_end(wire)
    if start < 0 or struct.unpack_from(">H", wire, 6)[0] != count:
        return None
    first = wire[start : start + 12]
    if len(first) < 12 or first[0] & 0xC0 != 0xC0:
        return None
    size = 12 + struct.unpack_from(">H", first, 10)[0]
    end = start + size * count
    chunks = [wire[start + i * size : start + (i + 1) * size] for i in range(count)]
    if end > len(wire) or any(c[:2] != first[:2] for c in chunks):
        return None
    return Shuffled(wire[2:start], chunks, wire[end:])
