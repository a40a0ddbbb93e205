"""Make the kernel match the store: remove tether-named objects nothing wants, rebuild the rest.

Runs at every start (after a clean stop, a crash, or someone deleting things by hand) and
periodically while the daemon runs.  Ownership is decided by name and alias only, and each
driver knows its own names (drivers/*.py); netns files under our exec-root are the
sandboxes'.  Nothing else on the host is ever touched.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from tether.engine.containers import Containers
from tether.engine.endpoints import Endpoints
from tether.engine.networks import Networks
from tether.kernel import netns
from tether.model import Container, Endpoint

if TYPE_CHECKING:
    from tether.cluster.state import ClusterStore

log = logging.getLogger("tether.reconcile")


async def reconcile_networks(networks: Networks) -> int:
    """Every driver removes its stray host objects and repairs the rest; returns the number
    of kernel changes made."""
    changes = 0
    for driver in networks.drivers.all():
        mine = [n for n in networks.by_id.values() if n.driver == driver.name]
        changes += await driver.reconcile(mine)
    return changes


async def reconcile_sandboxes(containers: Containers, eps: Endpoints) -> int:
    """Remove host links, netns files and address allocations no container owns any more."""
    changes = 0
    host_links, paths, endpoints = containers.wanted_kernel_objects()
    for driver in eps.drivers.all():
        changes += await driver.sweep_endpoints(host_links)
    netns_dir = eps.sandboxes.dir
    for name in os.listdir(netns_dir):
        path = os.path.join(netns_dir, name)
        if path not in paths:
            log.info("removing stray network namespace path=%s", path)
            netns.delete(path)
            changes += 1
    # Running, or starting with its ports already published (c.ports is set under the lock).
    running = {c.id for c in containers.by_id.values() if c.state.running or c.ports}
    for owner in {owner for _p, _ip, _port, owner in containers.store.ports()} - running:
        log.info("releasing orphan host ports owner=%s", owner[:12])
        with containers.store.transaction():
            containers.store.release_ports(owner)
        changes += 1
    for _net_id, address, owner in containers.store.addresses():
        if owner == "gateway" or owner.startswith("aux:") or owner in endpoints:
            continue
        log.info("releasing orphan address address=%s owner=%s", address, owner[:12])
        with containers.store.transaction():
            eps.ipam.release_owner(owner)
        changes += 1
    return changes


async def reconcile_cluster(
    cluster: ClusterStore,
    containers: Containers,
    eps: Endpoints,
    networks: Networks,
    keep: frozenset[str] = frozenset(),
) -> int:
    """This node's endpoints in the cluster store match its running containers' endpoints on
    global networks, and the local cache of global networks matches the store.

    - an endpoint a container has but the store has not (the node's lease expired while
      tetherd was away, or was lost): written again under the current lease;
    - an endpoint the store has for this node that no container has (a teardown while the
      store was unreachable, a crash between the two): withdrawn;
    - a global network cached here that the store no longer has: dropped.

    `keep`: endpoints of this node that belong to no container (the routing mesh's address,
    cluster/ingress.py, which looks after its own).
    """
    changes = 0
    mine: dict[str, tuple[Container, Endpoint]] = {}
    for c in containers.by_id.values():
        for ep in c.endpoints.values():
            net = networks.by_id.get(ep.network_id)
            if net is not None and net.scope == "global":
                mine[ep.id] = (c, ep)
    for net_id, known in list(cluster.endpoints.items()):
        for ep_id, remote in list(known.items()):
            if remote.node == cluster.node.name and ep_id not in mine and ep_id not in keep:
                log.info("withdrawing a stale cluster endpoint id=%s", ep_id[:12])
                await cluster.release_endpoint(net_id, remote)
                changes += 1
    for ep_id, (c, ep) in mine.items():
        net = networks.by_id[ep.network_id]
        held = cluster.endpoints.get(net.id, {}).get(ep_id)
        if held is not None and held.vtep == cluster.node.addr:
            if cluster.fresh_lease:
                # Held under the lease this node had before: moved to the new one, or it
                # goes when the old lease expires.
                await cluster.republish(net, eps.remote_of(c, ep), rebind=True)
                changes += 1
            continue
        if held is not None:
            # This node came back with another --cluster-advertise: every node must send
            # the endpoint's frames to the new address.
            await cluster.update_endpoint(net, eps.remote_of(c, ep))
            log.info("cluster endpoint moved to vtep=%s container=%s", cluster.node.addr, c.name)
            changes += 1
            continue
        if await cluster.republish(net, eps.remote_of(c, ep)):
            log.info("cluster endpoint written again container=%s network=%s", c.name, net.name)
        else:
            log.error(
                "container %s: its address %s on %s was taken by another node while this "
                "node was away; restart the container to get a new one",
                c.name,
                ep.ipv4,
                net.name,
            )
        changes += 1
    for net in [n for n in networks.by_id.values() if n.scope == "global"]:
        if net.id not in cluster.networks:
            await networks.drop(net)
            changes += 1
    return changes
