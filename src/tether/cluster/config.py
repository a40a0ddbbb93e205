"""tetherd's cluster flags, Docker's classic names (pure: parsing and checking only).

    --cluster-store etcd://HOST:PORT[,HOST:PORT...][/PREFIX]
    --cluster-advertise IP|IFACE[:PORT]
    --cluster-store-opt kv.cacertfile=F --cluster-store-opt kv.certfile=F
    --cluster-store-opt kv.keyfile=F    --cluster-store-opt kv.path=/PREFIX
    --cluster-store-opt discovery.ttl=10s
    --node-name NAME            (default: the host name)
    --data-path-port PORT       (VXLAN's UDP port, default 4789: swarm's flag name)
    --cluster-node-port PORT    (the node listener's TCP port, default 7946: cluster/nodeapi.py)
    --encrypted-data-port PORT  (tether-crypt's UDP port, default 4800)
    --encryption-key-rotation DURATION   (encrypted overlays' keys, default 12h)

Without --cluster-store tether is the single-host engine: SQLite only, no overlay driver.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field

from tether.errors import InvalidParameter

DEFAULT_PREFIX = "/tether"
DEFAULT_TTL = 10
DEFAULT_VXLAN_PORT = 4789
# tether-crypt's UDP port: not 4790 (VXLAN-GPE's, which tcpdump would decode as such), not
# 7946 (the node listener's).
DEFAULT_CRYPT_PORT = 4800
DEFAULT_KEY_ROTATION = 12 * 3600  # seconds: as often as Docker rotates its overlay keys
DEFAULT_NODE_PORT = 7946  # swarm's gossip port: other nodes read task logs there
# Docker's global-scope default pool: 10.0.0.0/8 cut into /24s.
GLOBAL_POOL = "10.0.0.0/8"
GLOBAL_POOL_SIZE = 24
STORE_OPTS = {"kv.cacertfile", "kv.certfile", "kv.keyfile", "kv.path", "discovery.ttl"}
NODE_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")


@dataclass
class ClusterOptions:
    store: str  # etcd://... as given
    advertise: str  # the IP other nodes reach this one at (its VTEP)
    advertise_port: int = 0  # the :PORT of --cluster-advertise, shown in node inspect
    node_name: str = ""
    prefix: str = DEFAULT_PREFIX
    ttl: int = DEFAULT_TTL
    vxlan_port: int = DEFAULT_VXLAN_PORT
    node_port: int = DEFAULT_NODE_PORT  # 0: no node listener
    # Encrypted overlays (crypt/): tether-crypt's UDP port and how often keys change.
    crypt_port: int = DEFAULT_CRYPT_PORT
    key_rotation: int = DEFAULT_KEY_ROTATION
    cacert: str = ""
    cert: str = ""
    key: str = ""
    opts: dict[str, str] = field(default_factory=dict)


def set_encryption(opts: ClusterOptions, port: int, rotation: str) -> None:
    """--encrypted-data-port (0: 4800) and --encryption-key-rotation."""
    port = port or DEFAULT_CRYPT_PORT
    if not 0 < port < 65536 or port in (opts.vxlan_port, opts.node_port):
        raise InvalidParameter(
            f"invalid --encrypted-data-port {port}: a port of its own (not --data-path-port "
            "or --cluster-node-port)"
        )
    seconds = parse_duration(rotation) if rotation else DEFAULT_KEY_ROTATION
    if seconds < 10:
        raise InvalidParameter("--encryption-key-rotation must be at least 10s")
    opts.crypt_port = port
    opts.key_rotation = seconds


def parse_duration(text: str) -> int:
    """Seconds, from Go durations as Docker takes them ("10s", "1m") or a plain number."""
    m = re.fullmatch(r"(\d+)(s|m|h)?", text.strip())
    if m is None:
        raise InvalidParameter(f"invalid duration {text!r} (e.g. 10s)")
    return int(m[1]) * {"s": 1, "m": 60, "h": 3600, None: 1}[m[2]]


def resolve_advertise(text: str, iface_addr: dict[str, str]) -> tuple[str, int]:
    """(IP, port) from `IP|IFACE[:PORT]`; `iface_addr` maps interface names to their first
    IPv4 address (the caller reads it from the kernel)."""
    host, port = text, 0
    if text.count(":") == 1 or text.startswith("["):
        host, _, p = text.rpartition(":")
        host = host.strip("[]")
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise InvalidParameter(f"invalid --cluster-advertise {text!r}: bad port {p!r}")
        port = int(p)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host not in iface_addr:
            raise InvalidParameter(
                f"invalid --cluster-advertise {text!r}: {host} is neither an IP address nor "
                "an interface with an IPv4 address"
            ) from None
        ip = ipaddress.ip_address(iface_addr[host])
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        raise InvalidParameter(
            f"invalid --cluster-advertise {text!r}: other nodes cannot reach {ip}"
        )
    return str(ip), port


def build(
    store: str,
    advertise: str,
    node_name: str,
    store_opts: list[str],
    vxlan_port: int,
    iface_addr: dict[str, str],
    node_port: int = DEFAULT_NODE_PORT,
) -> ClusterOptions:
    if not advertise:
        raise InvalidParameter("--cluster-store needs --cluster-advertise IP|IFACE[:PORT]")
    opts: dict[str, str] = {}
    for item in store_opts:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidParameter(f"invalid --cluster-store-opt {item!r}: want key=value")
        if key not in STORE_OPTS:
            raise InvalidParameter(
                f"unknown --cluster-store-opt {key!r} (known: {', '.join(sorted(STORE_OPTS))})"
            )
        opts[key] = value
    tls = [opts.get(k, "") for k in ("kv.cacertfile", "kv.certfile", "kv.keyfile")]
    if any(tls) and not (tls[1] and tls[2]):
        raise InvalidParameter("kv.certfile and kv.keyfile go together")
    ip, port = resolve_advertise(advertise, iface_addr)
    name = node_name or socket.gethostname()
    if not NODE_NAME_RE.fullmatch(name):
        raise InvalidParameter(f"invalid node name {name!r}")
    if not 0 < vxlan_port < 65536:
        raise InvalidParameter(f"invalid --data-path-port {vxlan_port}")
    if not 0 <= node_port < 65536:
        raise InvalidParameter(f"invalid --cluster-node-port {node_port}")
    # The prefix may come after the members (etcd://h:2379/PREFIX, as Docker's classic
    # --cluster-store took it) or from kv.path; both at once must agree.
    from tether.store.etcd import parse_store_url

    in_url = parse_store_url(store).path  # a bad URL: InvalidParameter, in its words
    if in_url and "kv.path" in opts and opts["kv.path"].strip("/") != in_url.strip("/"):
        raise InvalidParameter(
            f"--cluster-store's prefix /{in_url.strip('/')} and kv.path={opts['kv.path']} differ"
        )
    prefix = opts.get("kv.path") or ("/" + in_url.strip("/") if in_url else DEFAULT_PREFIX)
    if not prefix.startswith("/") or prefix.rstrip("/") == "":
        raise InvalidParameter(f"invalid kv.path {prefix!r}: an absolute key prefix like /tether")
    ttl = parse_duration(opts["discovery.ttl"]) if "discovery.ttl" in opts else DEFAULT_TTL
    if ttl < 2:
        raise InvalidParameter("discovery.ttl must be at least 2s (etcd's shortest lease)")
    return ClusterOptions(
        store=store,
        advertise=ip,
        advertise_port=port,
        node_name=name,
        prefix=prefix.rstrip("/"),
        ttl=ttl,
        vxlan_port=vxlan_port,
        node_port=node_port,
        cacert=tls[0],
        cert=tls[1],
        key=tls[2],
        opts=opts,
    )
