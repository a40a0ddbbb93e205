"""Make the kernel match the store: remove tether-named objects nothing wants, rebuild the rest.

Runs at every start (after a clean stop, a crash, or someone deleting things by hand) and
periodically while the daemon runs.  Ownership is decided by name and alias only, and each
driver knows its own names (drivers/*.py); netns files under our exec-root are the
sandboxes'.  Nothing else on the host is ever touched.
"""

from __future__ import annotations

import logging
import os

from tether.engine.containers import Containers
from tether.engine.endpoints import Endpoints
from tether.engine.networks import Networks
from tether.kernel import netns

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
