"""Make the kernel match the store: remove tether-named objects nothing wants, rebuild the rest.

Runs at every start (after a clean stop, a crash, or someone deleting things by hand) and
periodically while the daemon runs.  Ownership is decided by name and alias only: bridges
called tb-* or carrying the alias tether:net:<id>, veths called tv*, netns files under our
exec-root.  Nothing else on the host is ever touched.
"""

from __future__ import annotations

import logging

from tether.drivers.bridge import ALIAS_PREFIX, alias_for
from tether.engine.networks import Networks

log = logging.getLogger("tether.reconcile")

BRIDGE_PREFIX = "tb-"


async def reconcile_networks(networks: Networks) -> int:
    """Returns the number of kernel changes made."""
    changes = 0
    wanted = {n.bridge_name: n for n in networks.by_id.values() if n.driver == "bridge"}
    for link in await networks.rtnl.links():
        if link.kind != "bridge":
            continue
        ours = link.alias.startswith(ALIAS_PREFIX) or link.name.startswith(BRIDGE_PREFIX)
        if not ours:
            continue
        net = wanted.get(link.name)
        if net is None or (link.alias.startswith(ALIAS_PREFIX) and link.alias != alias_for(net)):
            log.info("removing stray bridge name=%s alias=%s", link.name, link.alias or "-")
            await networks.rtnl.delete(link.index)
            changes += 1
    for net in wanted.values():
        if await networks.bridge.ensure(net):
            log.info("bridge repaired name=%s network=%s", net.bridge_name, net.name)
            changes += 1
    return changes
