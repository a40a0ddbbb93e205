"""Query parameters, parsed the way dockerd parses them, with its texts (400, never a 500).

dockerd answers a bad number in `t` or `h` with Go's strconv error; those texts are kept,
with the status a bad request deserves.
"""

from __future__ import annotations

import re
from datetime import datetime

from tether.errors import InvalidParameter
from tether.textcheck import go_quote, shown

# daemon/names.go: validContainerNameChars, with an optional leading "/".
CONTAINER_NAME = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")
INT64 = 2**63


def container_name(value: str | None) -> str | None:
    """?name= of POST /containers/create: docker's characters, without the leading '/'."""
    if not value:
        return None
    if not CONTAINER_NAME.fullmatch(value):
        raise InvalidParameter(
            f"Invalid container name ({shown(value)}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return value.lstrip("/")


def atoi(value: str | None, what: str = "") -> int | None:
    """Go's strconv.Atoi, for ?t= (None when absent or empty, as dockerd)."""
    if value is None or value == "":
        return None
    digits = value[1:] if value[:1] in "+-" else value
    prefix = f'invalid value for "{what}": ' if what else ""
    if not digits or not digits.isascii() or not digits.isdigit():
        raise InvalidParameter(f"{prefix}strconv.Atoi: parsing {go_quote(value)}: invalid syntax")
    n = int(value)
    if not -INT64 <= n < INT64:
        raise InvalidParameter(
            f"{prefix}strconv.Atoi: parsing {go_quote(value)}: value out of range"
        )
    return n


def tail(value: str | None) -> int | None:
    """?tail= of logs: "all" (None) or a number of lines."""
    if value is None or value in ("", "all"):
        return None
    n = atoi(value, "tail")
    return n if n is not None and n >= 0 else None


def timestamp(what: str, value: str | None) -> float:
    """?since= of logs: Unix seconds (fractions allowed) or an RFC 3339 time; 0 when absent."""
    if not value:
        return 0.0
    try:
        return float(value) if value.replace(".", "", 1).isdigit() else _rfc3339(value)
    except ValueError:
        raise InvalidParameter(f"invalid value for {go_quote(what)}: {go_quote(value)}") from None


def _rfc3339(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def size(what: str, value: str | None, default: int) -> int:
    """?h= / ?w= of a resize: a terminal dimension (the kernel's winsize holds 16 bits)."""
    n = atoi(value)
    if n is None:
        return default
    if not 0 <= n <= 0xFFFF:
        raise InvalidParameter(
            f"invalid value for {go_quote(what)}: {n} is not a terminal size (0 to 65535)"
        )
    return n


DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q


def detach_keys(value: str | None) -> bytes:
    """?detachKeys= of attach (docker's term.ToBytes): comma-separated keys, each one
    character or ctrl-<a-z, @, [, \\, ], ^ or _>."""
    if not value:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in value.split(","):
        k = key.strip()
        if len(k) > 1 and k.lower().startswith("ctrl-") and len(k) == 6:
            c = k[5].lower()
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            if c in "@[\\]^_":
                out.append("@[\\]^_".index(c) if c == "@" else ord(c) - ord("@"))
                continue
        elif len(k) == 1:
            out += k.encode()
            continue
        raise InvalidParameter(f"Invalid detach keys ({value}) provided: Unknown character: '{k}'")
    return bytes(out)
