"""API routes for /nodes: the cluster's nodes, in the shapes of Docker's node API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether import __version__
from tether.daemon.http import Request, Response, Router, json_response
from tether.errors import NotFound, TetherError

if TYPE_CHECKING:
    from tether.cluster.state import ClusterStore
    from tether.model import NodeInfo

NO_CLUSTER = (
    "this node is not part of a cluster: start tetherd with --cluster-store "
    "etcd://HOST:2379 --cluster-advertise IP"
)


class NotClustered(TetherError):
    status = 503  # Docker's answer to /nodes on a daemon that is not a swarm manager


def node_view(node: NodeInfo, self_name: str, leader: str = "") -> dict[str, Any]:
    # Every tether node can create services and take the lead (an election in etcd, not a
    # raft quorum of managers): each is a manager, one of them the leader.
    return {
        "ID": node.name,
        "Self": node.name == self_name,
        "CreatedAt": node.started,
        "Spec": {"Role": "manager", "Availability": "active", "Labels": {}},
        "ManagerStatus": {
            "Leader": node.name == leader,
            "Reachability": "reachable" if node.status == "ready" else "unreachable",
            "Addr": f"{node.addr}:{node.port}",
        },
        "Description": {
            "Hostname": node.name,
            "Engine": {"EngineVersion": node.version or __version__},
        },
        "Status": {
            "State": node.status,
            "Addr": node.addr,
            "Port": node.port,
            "LastSeen": node.last_seen,
        },
    }


def register(router: Router, cluster: ClusterStore | None) -> None:
    def need() -> ClusterStore:
        if cluster is None:
            raise NotClustered(NO_CLUSTER)
        return cluster

    async def list_nodes(req: Request) -> Response:
        c = need()
        return json_response(
            [
                node_view(n, c.node.name, c.services.leader)
                for n in sorted(c.nodes.values(), key=lambda n: n.name)
            ]
        )

    async def inspect_node(req: Request) -> Response:
        c = need()
        name = req.params["id"]
        node = c.nodes.get(c.node.name if name == "self" else name)
        if node is None:
            raise NotFound(f"node {name} not found")
        return json_response(node_view(node, c.node.name, c.services.leader))

    router.add("GET", "/nodes", list_nodes)
    router.add("GET", "/nodes/{id}", inspect_node)
