"""Where tether keeps the cluster's state in etcd (pure).  Keys are relative to the
cluster's prefix (`--cluster-store-opt kv.path`, default /tether), so several clusters can
share one etcd.

    nodes/<name>                 {Name, Addr, Port, Vtep, Started, Version}     node's lease
    networks/<id>                a global network (model.Network's document)   permanent
    names/<name>                 the id of the network called <name>           permanent
    subnets/<subnet>             the id of the network that has <subnet>       permanent
    claims/<kind>/<value>        the id of the network holding a value its driver needs
                                 unique across the cluster (claims/vni/4096)  permanent
    ipam/<net id>/<address>      {Owner, Node}: gateway, aux:<key>, or an endpoint id
    endpoints/<net id>/<ep id>   one endpoint of a global network (RemoteEndpoint)
    crypt/...                    encrypted networks' keys, sealed per node (crypt/keyring.py)

An endpoint's address keys and its document are written in one transaction with its node's
lease: when a node dies, its lease expires and everything it held vanishes with it, so no
other node keeps a stale endpoint (Docker's classic overlay did: moby/moby#20398).  Network
keys are permanent: a network outlives any one node.
"""

from __future__ import annotations

NODES = "nodes/"
NETWORKS = "networks/"
NAMES = "names/"
SUBNETS = "subnets/"
CLAIMS = "claims/"
IPAM = "ipam/"
ENDPOINTS = "endpoints/"
CRYPT = "crypt/"


def node(name: str) -> str:
    return NODES + name


def network(net_id: str) -> str:
    return NETWORKS + net_id


def name(net_name: str) -> str:
    return NAMES + net_name


def subnet(cidr: str) -> str:
    return SUBNETS + cidr.replace("/", "_")


def claim(token: str) -> str:
    return CLAIMS + token


def ipam_prefix(net_id: str) -> str:
    return f"{IPAM}{net_id}/"


def address(net_id: str, addr: str) -> str:
    return f"{IPAM}{net_id}/{addr}"


def endpoints_prefix(net_id: str) -> str:
    return f"{ENDPOINTS}{net_id}/"


def endpoint(net_id: str, ep_id: str) -> str:
    return f"{ENDPOINTS}{net_id}/{ep_id}"


def split(key: str) -> tuple[str, str, str]:
    """(kind, first, second) of a key: ("endpoints", net id, ep id), ("nodes", name, "")."""
    kind, _, rest = key.partition("/")
    first, _, second = rest.partition("/")
    return kind, first, second


# -- encrypted networks (crypt/keyring.py) ---------------------------------------------------


def crypt_node(node_name: str) -> str:
    return f"{CRYPT}nodes/{node_name}"


def crypt_epoch(net_id: str) -> str:
    return f"{CRYPT}epochs/{net_id}"


def crypt_keys_prefix(net_id: str, epoch: int | None = None) -> str:
    return f"{CRYPT}keys/{net_id}/" + (f"{epoch}/" if epoch is not None else "")


def crypt_key(net_id: str, epoch: int, node_name: str) -> str:
    return f"{CRYPT}keys/{net_id}/{epoch}/{node_name}"


def crypt_acks(net_id: str) -> str:
    return f"{CRYPT}acks/{net_id}/"


def crypt_ack(net_id: str, node_name: str) -> str:
    return f"{CRYPT}acks/{net_id}/{node_name}"
