"""`-p`/`--publish` and `--expose` as docker parses them (go-connections/nat.ParsePortSpecs).

    80  8080:80  127.0.0.1:8080:80  127.0.0.1::80  [::1]:8080:80  5000-5010:5000-5010
    8000-8005:80  53:53/udp  8080:80/tcp

Returns ExposedPorts {"80/tcp": {}} and PortBindings {"80/tcp": [{"HostIp", "HostPort"}]}.
"""

from __future__ import annotations

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

PROTOCOLS = ("tcp", "udp", "sctp")


def _parse_range(text: str, what: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a = int(lo)
        b = int(hi) if sep else a
    except ValueError:
        raise ValueError(f"invalid {what}: {text}") from None
    if not (0 <= a <= 65535 and 0 <= b <= 65535) or b < a:
        raise ValueError(f"invalid {what}: {text}")
    return a, b


def _split_ip(spec: str) -> tuple[str, str]:
    """'[::1]:8080:80' -> ('::1', '8080:80'); '1.2.3.4:8080:80' -> ('1.2.3.4', '8080:80')."""
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise ValueError(f"invalid IP address: {spec}")
        return spec[1:end], spec[end + 2 :] if spec[end + 1 : end + 2] == ":" else spec[end + 1 :]
    parts = spec.split(":")
    if len(parts) >= 3:
        return ":".join(parts[:-2]), ":".join(parts[-2:])
    return "", spec


def _check_ip(ip: str) -> None:
    if not ip:
        return
    import ipaddress

    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"invalid IP address: {ip}") from None


def parse_one(spec: str) -> list[tuple[str, str, int, str]]:
    """[(host ip, host port or '', container port, proto)] for one -p value."""
    rest, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto.lower() not in PROTOCOLS:
        raise ValueError(f"invalid proto: {proto}")
    proto = proto.lower()
    ip, ports = _split_ip(rest)
    _check_ip(ip)
    host_part, sep, container_part = ports.rpartition(":")
    if not sep:
        host_part, container_part = "", ports
    if not container_part:
        raise ValueError(f"no port specified: {spec}<empty>")
    c_lo, c_hi = _parse_range(container_part, "containerPort")
    if host_part:
        h_lo, h_hi = _parse_range(host_part, "hostPort")
        h_count, c_count = h_hi - h_lo, c_hi - c_lo
        if c_count != 0 and h_count != c_count:
            raise ValueError(
                f"invalid ranges specified for container and host Ports: {container_part} and {host_part}"
            )
        if c_count == 0 and h_count != 0:
            # A host range for one container port: the daemon picks one port from the range.
            return [(ip, f"{h_lo}-{h_hi}", c_lo, proto)]
        return [(ip, str(h_lo + i), c_lo + i, proto) for i in range(c_hi - c_lo + 1)]
    return [(ip, "", p, proto) for p in range(c_lo, c_hi + 1)]


def parse_publish(
    publish: list[str], expose: list[str]
) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for e in expose:
        rest, _, proto = e.partition("/")
        proto = proto or "tcp"
        if proto not in PROTOCOLS:
            raise ValueError(f"invalid proto: {proto}")
        lo, hi = _parse_range(rest, "range for expose")
        for p in range(lo, hi + 1):
            exposed[f"{p}/{proto}"] = {}
    for spec in publish:
        for ip, host_port, cport, proto in parse_one(spec):
            key = f"{cport}/{proto}"
            exposed[key] = {}
            bindings.setdefault(key, []).append({"HostIp": ip, "HostPort": host_port})
    return exposed, bindings
