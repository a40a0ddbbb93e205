"""Make the kernel match the store: remove tether-named objects nothing wants, rebuild the rest.

Runs at every start (after a clean stop, a crash, or someone deleting things by hand) and
periodically while the daemon runs.  Ownership is decided by name and alias only: bridges
called tb-* or carrying the alias tether:net:<id>, veths called tv*, netns files under our
exec-root.  Nothing else on the host is ever touched.
"""

from __future__ import annotations

import logging
import os

from tether.drivers.bridge import ALIAS_PREFIX, TOMBSTONE_PREFIX, alias_for
from tether.drivers.veth import HOST_PREFIX as VETH_PREFIX
from tether.engine.containers import Containers
from tether.engine.networks import Networks
from tether.kernel import netns

log = logging.getLogger("tether.reconcile")

BRIDGE_PREFIX = "tb-"


async def reconcile_networks(networks: Networks) -> int:
    """Returns the number of kernel changes made."""
    changes = 0
    rtnl = networks.rtnl
    wanted = {n.bridge_name: n for n in networks.by_id.values() if n.driver == "bridge"}
    links = rtnl.links("bridge")
    by_name = {link.name: link for link in links}
    for link in links:
        if link.index in networks.bridge.reaping_indexes():
            continue
        ours = link.alias.startswith(ALIAS_PREFIX) or link.name.startswith(
            (BRIDGE_PREFIX, TOMBSTONE_PREFIX)
        )
        if not ours:
            continue
        net = wanted.get(link.name)
        if net is None or (link.alias.startswith(ALIAS_PREFIX) and link.alias != alias_for(net)):
            log.info("removing stray bridge name=%s alias=%s", link.name, link.alias or "-")
            await rtnl.delete_in_thread(link.index)
            by_name.pop(link.name, None)
            changes += 1
    addrs = rtnl.addresses()
    for net in wanted.values():
        current = by_name.get(net.bridge_name)
        have = addrs.get(current.index, set()) if current is not None else set()
        if await networks.bridge.ensure(net, current, have):
            log.info("bridge repaired name=%s network=%s", net.bridge_name, net.name)
            changes += 1
    return changes


async def reconcile_sandboxes(containers: Containers) -> int:
    """Remove veths, netns files and address allocations that no container owns any more."""
    changes = 0
    veths, paths, endpoints = containers.wanted_kernel_objects()
    rtnl = containers.host
    for link in rtnl.links("veth"):
        if link.name.startswith(VETH_PREFIX) and link.name not in veths:
            log.info("removing stray veth name=%s", link.name)
            await rtnl.delete_in_thread(link.index)
            changes += 1
    netns_dir = containers.sandboxes.dir
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
            containers.ipam.release_owner(owner)
        changes += 1
    return changes
