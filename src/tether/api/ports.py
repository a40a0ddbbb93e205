"""Port keys ("80/tcp") and host bindings as the Engine API carries them, with docker's checks.

Everything here ends up in an nftables map element or a bound socket, so it is parsed to
numbers and a known protocol before anything else sees it.
"""

from __future__ import annotations

from tether.errors import InvalidParameter
from tether.textcheck import go_quote, ip_version, shown

PROTOCOLS = ("tcp", "udp", "sctp")


def _number(text: str) -> int | None:
    """Go's strconv.ParseUint(text, 10, 16): ASCII digits only, 0..65535."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    n = int(text)
    return n if n <= 65535 else None


def port_key(key: str) -> tuple[int, str]:
    """An ExposedPorts / PortBindings key: "80", "80/tcp", "53/udp" -> (80, "tcp").

    docker's daemon answers `invalid port specification: "70000"` for a bad number; a bad
    protocol gets its CLI's `invalid proto: icmp`.
    """
    port, sep, proto = key.partition("/")
    n = _number(port)
    if n is None:
        raise InvalidParameter(f"invalid port specification: {go_quote(port)}")
    proto = proto.lower() if sep else "tcp"
    if proto not in PROTOCOLS:
        raise InvalidParameter(f"invalid proto: {shown(proto)}")
    return n, proto


def host_port(text: str) -> str:
    """A HostPort: "" (a random port), "8080", or a range "8000-8010" to pick one from."""
    if text == "":
        return text
    lo, sep, hi = text.partition("-")
    a = _number(lo)
    b = _number(hi) if sep else a
    if a is None or b is None or b < a:
        raise InvalidParameter(f"invalid port specification: {go_quote(text)}")
    return text


def host_ip(text: str) -> str:
    """A HostIp: "" (every address) or one IPv4/IPv6 address ("[::1]" as the CLI writes it)."""
    if text == "":
        return text
    addr = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not ip_version(addr):
        raise InvalidParameter(f"invalid IP address: {shown(text)}")
    return addr
