"""The topology as one JSON document: what `tether topology`, `tether ui` and people read.

Built by the daemon from its own state (networks, containers and their endpoints, published
ports; on a cluster node also the other nodes, their containers on overlay networks, and
services with their VIPs and tasks) and served as `GET /tether/topology`.  Pure: it takes
the objects, never the kernel, so a picture is drawn from what tether *decided*; the
kernel's side is `inspect --verbose` and `doctor`.

Shape (keys in Docker's capitalised style, as the rest of the API):

    {"Node": {"Name", "Addr"},
     "Nodes": [{"Name", "Addr", "Status", "Self"}],                       cluster only
     "Networks": [{"Id", "Name", "Driver", "Scope", "Internal", "ICC", "Attachable",
                   "Subnets": [...], "Gateways": [...], "Devices": [{"Name", "Kind"}]}],
     "Containers": [{"Id", "Name", "Image", "State", "Node", "Local", "Service",
                     "NetworkMode", "Endpoints": [{"NetworkID", "Network", "Interface",
                     "IPv4", "IPv6", "MAC"}], "Ports": [{"HostIP", "HostPort",
                     "ContainerPort", "Proto"}]}],
     "Services": [{"Id", "Name", "Mode", "Replicas", "VIPs": [{"NetworkID", "Network",
                   "Addr"}], "Ports": [...], "Tasks": [{"Id", "Slot", "Node", "State",
                   "Container"}]}]}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tether.model import Container, Network, NodeInfo, RemoteEndpoint

if TYPE_CHECKING:
    from tether.drivers.base import NetworkDriver

DriverOf = Callable[[Network], "NetworkDriver | None"]


def devices(net: Network, driver: NetworkDriver | None) -> list[dict[str, str]]:
    """The host devices a network's traffic crosses (what `tether capture NETWORK` taps), as
    its driver names them."""
    if driver is None:
        return []
    return [{"Name": d.name, "Kind": d.role.replace(" ", "-")} for d in driver.host_devices(net)]


def network_view(net: Network, driver: NetworkDriver | None = None) -> dict[str, Any]:
    facts = driver.firewall(net) if driver is not None else None
    return {
        "Id": net.id,
        "Name": net.name,
        "Driver": net.driver,
        "Scope": net.scope,
        "Internal": net.internal,
        # ICC is a bridge option (its firewall facts); other drivers always let their
        # containers talk.
        "ICC": facts.icc if facts is not None else True,
        "Attachable": net.attachable,
        "Subnets": [p.subnet for p in net.pools],
        "Gateways": [p.gateway for p in net.pools if p.gateway],
        "Devices": devices(net, driver),
    }


def container_view(c: Container, node: str, nets: Mapping[str, Network]) -> dict[str, Any]:
    endpoints = []
    for name, ep in c.endpoints.items():
        endpoints.append(
            {
                "NetworkID": ep.network_id,
                "Network": name,
                "Interface": ep.ifname,
                "IPv4": ep.ipv4.split("/")[0],
                "IPv6": ep.ipv6.split("/")[0],
                "MAC": ep.mac,
            }
        )
    if not c.state.running:
        # A stopped container still belongs to its networks (it joins them again on start).
        for name, cfg in c.networks.items():
            net = nets.get(cfg.network_id) if cfg.network_id else None
            net = net or next((n for n in nets.values() if n.name == name), None)
            if net is None:
                continue
            endpoints.append(
                {
                    "NetworkID": net.id,
                    "Network": name,
                    "Interface": "",
                    "IPv4": "",
                    "IPv6": "",
                    "MAC": "",
                }
            )
    labels = c.config.get("Labels") or {}
    return {
        "Id": c.id,
        "Name": c.name,
        "Image": c.image,
        "State": c.state.status,
        "Node": node,
        "Local": True,
        "Service": str(labels.get("com.docker.swarm.service.id") or ""),
        "NetworkMode": c.network_mode,
        "Endpoints": endpoints,
        "Ports": [
            {
                "HostIP": b.host_ip,
                "HostPort": b.host_port,
                "ContainerPort": b.container_port,
                "Proto": b.proto,
            }
            for b in (c.ports if c.state.running else [])
        ],
    }


def remote_containers(
    endpoints: Mapping[str, Mapping[str, RemoteEndpoint]],
    self_node: str,
    nets: Mapping[str, Network],
) -> list[dict[str, Any]]:
    """Containers of other nodes, as their overlay endpoints in the cluster store show them."""
    out: dict[str, dict[str, Any]] = {}
    for net_id, eps in endpoints.items():
        net = nets.get(net_id)
        for ep in eps.values():
            if ep.node == self_node:
                continue
            c = out.setdefault(
                ep.container,
                {
                    "Id": ep.container,
                    "Name": ep.name,
                    "Image": "",
                    "State": "running",
                    "Node": ep.node,
                    "Local": False,
                    "Service": ep.service,
                    "NetworkMode": "",
                    "Endpoints": [],
                    "Ports": [],
                },
            )
            c["Endpoints"].append(
                {
                    "NetworkID": net_id,
                    "Network": net.name if net is not None else net_id[:12],
                    "Interface": "",
                    "IPv4": ep.ipv4,
                    "IPv6": ep.ipv6,
                    "MAC": ep.mac,
                }
            )
    return list(out.values())


def build(
    node: dict[str, str],
    networks: Iterable[Network],
    containers: Iterable[Container],
    nodes: Iterable[NodeInfo] = (),
    remote: Mapping[str, Mapping[str, RemoteEndpoint]] | None = None,
    services: list[dict[str, Any]] | None = None,
    driver_of: DriverOf | None = None,
) -> dict[str, Any]:
    """`driver_of` gives a network's driver (the daemon's registry): its devices, its ICC, and
    whether it is a mode without endpoints (host, null), drawn only when a container uses it."""

    def drv(net: Network) -> NetworkDriver | None:
        return driver_of(net) if driver_of is not None else None

    nets = {n.id: n for n in networks}
    ctrs = [container_view(c, node["Name"], nets) for c in containers]
    if remote:
        ctrs += remote_containers(remote, node["Name"], nets)
    used = {ep["NetworkID"] for c in ctrs for ep in c["Endpoints"]}
    used_modes = {c["NetworkMode"] for c in ctrs}
    shown = [
        n for n in nets.values() if _has_endpoints(drv(n)) or n.id in used or n.name in used_modes
    ]
    return {
        "Node": dict(node),
        "Nodes": [
            {"Name": n.name, "Addr": n.addr, "Status": n.status, "Self": n.name == node["Name"]}
            for n in sorted(nodes, key=lambda n: n.name)
        ],
        "Networks": [network_view(n, drv(n)) for n in sorted(shown, key=lambda n: n.name)],
        "Containers": sorted(ctrs, key=lambda c: (c["Name"], c["Id"])),
        "Services": services or [],
    }


def _has_endpoints(driver: NetworkDriver | None) -> bool:
    return driver is None or driver.caps.endpoints
