"""The CNM objects as tether stores them: networks here; sandboxes and endpoints with containers.

Each object turns into a plain dict for the store (`to_doc`/`from_doc`) and, separately, into
the Docker Engine API shape (`to_api`), so the storage format can evolve without changing
what users see.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from tether.netmodes import PREDEFINED, normalize

# Fields of networks stored by tether before drivers owned their state (moved on load).
LEGACY_DRIVER_FIELDS = ("bridge_name", "bridge_external", "mtu", "icc", "masquerade")


@dataclass
class Pool:
    """One subnet a network really uses, resolved from the user's config or a default pool."""

    subnet: str  # canonical CIDR
    gateway: str  # the address the bridge carries
    ip_range: str | None = None
    aux: dict[str, str] = field(default_factory=dict)

    @cached_property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.subnet)

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen


@dataclass
class Network:
    id: str
    name: str
    driver: str
    created: str
    scope: str = "local"
    enable_ipv6: bool = False
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    config_only: bool = False
    ipam_driver: str = "default"
    ipam_options: dict[str, str] | None = None
    # IPAM.Config exactly as inspect shows it: only the keys that were set.
    ipam_config: list[dict[str, Any]] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    # Whether the subnets came from the user (only then may containers ask for --ip).
    user_subnets: bool = False
    options: dict[str, str] | None = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # The driver's own state, derived from the options at create time (drivers/*.py type it).
    driver_state: dict[str, Any] = field(default_factory=dict)

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    def pools_of(self, version: int) -> list[Pool]:
        return [p for p in self.pools if p.version == version]

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def upgrade_doc(doc: dict[str, Any]) -> dict[str, Any]:
        """A stored network in today's shape: fields of the driver's own (written before
        drivers owned their state) move into `driver_state`."""
        doc = dict(doc)
        legacy = {k: doc.pop(k) for k in LEGACY_DRIVER_FIELDS if k in doc}
        if legacy.get("bridge_name") and not doc.get("driver_state"):
            doc["driver_state"] = legacy
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Network:
        doc = cls.upgrade_doc(doc)
        doc["pools"] = [Pool(**p) for p in doc.get("pools", [])]
        return cls(**doc)

    def to_api(self, containers: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "Name": self.name,
            "Id": self.id,
            "Created": self.created,
            "Scope": self.scope,
            "Driver": self.driver,
            "EnableIPv6": self.enable_ipv6,
            "IPAM": {
                "Driver": self.ipam_driver,
                "Options": self.ipam_options,
                "Config": [dict(c) for c in self.ipam_config],
            },
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Ingress": self.ingress,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": self.config_only,
            "Containers": containers or {},
            "Options": None if self.options is None else dict(self.options),
            "Labels": dict(self.labels),
        }


@dataclass
class EndpointConfig:
    """What the user asked for on one network; kept while the container exists."""

    network_id: str = ""
    aliases: list[str] = field(default_factory=list)
    ipv4: str = ""  # --ip
    ipv6: str = ""  # --ip6
    mac: str = ""  # --mac-address
    driver_opts: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)


@dataclass
class Endpoint:
    """One live attachment of a running container's sandbox to a network."""

    id: str
    network_id: str
    ifname: str  # inside the sandbox: eth0, eth1, ...
    host_ifname: str  # tv<endpoint id prefix>, on the network's bridge
    mac: str
    ipv4: str = ""  # address/prefixlen
    ipv6: str = ""
    gateway4: str = ""
    gateway6: str = ""
    index: int = 0  # ifindex inside the sandbox (stable while the link exists)


@dataclass
class PortBinding:
    """One published port as it is wired now."""

    proto: str
    host_ip: str  # "0.0.0.0", "::" or one host address
    host_port: int
    container_port: int
    target_ip: str = ""  # the container address traffic goes to (empty: not reachable now)

    @property
    def family(self) -> int:
        return 6 if ":" in self.host_ip else 4


@dataclass
class ContainerState:
    status: str = "created"  # created | running | exited | removing | dead
    pid: int = 0
    pid_start: int = 0  # /proc/<pid>/stat starttime, to tell a reused pid from ours
    shim_pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    oom_killed: bool = False
    # docker stop/kill: the restart policy waits until the next start (or daemon start).
    manually_stopped: bool = False
    paused: bool = False  # the cgroup is frozen (docker pause)

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass
class Container:
    id: str
    name: str
    created: str
    image: str  # as the user wrote it
    image_id: str
    path: str
    args: list[str]
    config: dict[str, Any]  # Docker's Config
    host_config: dict[str, Any]  # Docker's HostConfig
    # Desired attachments by network name (as Docker keys NetworkSettings.Networks), in the
    # order they were made; the network id is resolved at start and connect.
    networks: dict[str, EndpointConfig] = field(default_factory=dict)
    state: ContainerState = field(default_factory=ContainerState)
    # Live attachments while running, by network name.
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    sandbox_key: str = ""
    next_if: int = 0  # eth<n> names are not reused while the container runs
    gateway: str = ""  # id of the endpoint the default routes go through
    restart_count: int = 0
    # Upstream DNS servers the embedded resolver forwards this container's queries to.
    dns_upstreams: list[str] = field(default_factory=list)
    # Published ports while running.
    ports: list[PortBinding] = field(default_factory=list)
    # -v/--mount binds and volumes as inspect shows them (Type, Source, Destination, RW...).
    mounts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def network_mode(self) -> str:
        return normalize(str(self.host_config.get("NetworkMode") or ""))

    @property
    def hostname(self) -> str:
        return str(self.config.get("Hostname") or self.short_id)

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Container:
        doc = dict(doc)
        doc["networks"] = {k: EndpointConfig(**v) for k, v in doc.get("networks", {}).items()}
        doc["endpoints"] = {k: Endpoint(**v) for k, v in doc.get("endpoints", {}).items()}
        doc["state"] = ContainerState(**doc.get("state", {}))
        doc["ports"] = [PortBinding(**p) for p in doc.get("ports", [])]
        return cls(**doc)


@dataclass
class RemoteEndpoint:
    """An endpoint of a global network as the cluster store has it (keys.endpoint): enough
    for every node to program its FDB and neighbours and to answer for it in DNS."""

    id: str
    network: str  # the network's id
    node: str  # the node it runs on
    vtep: str  # that node's advertise address
    container: str  # the container's id
    name: str  # the container's name
    hostname: str = ""  # set with --hostname (else empty)
    aliases: list[str] = field(default_factory=list)
    ipv4: str = ""  # address without prefix length
    ipv6: str = ""
    mac: str = ""
    service: str = ""  # the service id, for a task's container (its VIP balances over it)

    @property
    def short_id(self) -> str:
        return self.container[:12]


@dataclass
class NodeInfo:
    """One node of the cluster (keys.node), as every node sees it."""

    name: str
    addr: str  # its advertise address (VTEP)
    port: int = 0  # the :PORT of its --cluster-advertise
    started: str = ""
    version: str = ""
    status: str = "ready"  # ready | down (its lease expired)
    last_seen: str = ""
