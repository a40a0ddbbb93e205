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

PREDEFINED = ("bridge", "host", "none")

# Option keys Docker users pass with -o.
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"


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
    # Driver state derived from options at create time.
    bridge_name: str = ""
    # The bridge existed before the network (-o bridge.name=<a bridge the user made>): tether
    # uses it but never deletes it, as Docker does.
    bridge_external: bool = False
    mtu: int = 0
    icc: bool = True
    masquerade: bool = True

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    def pools_of(self, version: int) -> list[Pool]:
        return [p for p in self.pools if p.version == version]

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Network:
        doc = dict(doc)
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
