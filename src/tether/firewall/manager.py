"""Applying the firewall: the whole table when networks change, map elements for ports.

A full render happens at start, when a network is created or removed, and whenever the
periodic check finds the table gone (someone ran `nft flush ruleset`, or deleted it).
Published ports never re-render the table: they are element additions and deletions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from tether.firewall.policy import Underlay
from tether.firewall.render import (
    FORWARD_PRIORITY,
    TABLE,
    FirewallState,
    IngressPort,
    NetRule,
    PortRule,
    ingress_changes,
    mesh_counts,
    port_elements,
    render,
)
from tether.kernel.nft import Nft, NftError

log = logging.getLogger("tether.firewall")


class Firewall:
    def __init__(
        self,
        nft: Nft,
        networks: Callable[[], list[NetRule]],
        ports: Callable[[], list[PortRule]],
        underlay: Callable[[], Underlay | None] = lambda: None,
    ) -> None:
        self.nft = nft
        self.networks = networks
        self.ports = ports
        self.underlay = underlay
        # The routing mesh's ports as last set (cluster/ingress.py keeps them current).
        self.ingress: list[IngressPort] = []
        # The mesh's (protocol, task count) sets and rules the table has (a full render
        # makes those of the ports; set_ingress adds to them).
        self._mesh_made: set[tuple[str, int]] = set()

    def state(self) -> FirewallState:
        return FirewallState(
            networks=self.networks(),
            ports=self.ports(),
            underlay=self.underlay(),
            ingress=list(self.ingress),
        )

    def existing_chains(self) -> set[str]:
        try:
            out = self.nft.run(f"list chains {TABLE.split()[0]}", json_output=True)
        except NftError:
            return set()
        chains = set()
        self._forward_priority = None
        for item in json.loads(out or "{}").get("nftables", []):
            chain = item.get("chain")
            if chain and chain.get("table") == TABLE.split()[1]:
                chains.add(chain["name"])
                if chain["name"] == "forward":
                    self._forward_priority = chain.get("prio")
        return chains

    _forward_priority: int | None = None

    def sync(self) -> None:
        """Render and apply the whole table in one transaction (the user chain is kept)."""
        state = self.state()
        existing = self.existing_chains()
        text = render(state, existing)
        if "forward" in existing and self._forward_priority != FORWARD_PRIORITY:
            # A table made before forward ran after iptables' FORWARD (dockeruser.py): a
            # base chain's priority cannot change in place, so it is made again, in the
            # same transaction (no packet passes unfiltered meanwhile).
            table = TABLE
            text = f"flush chain {table} forward\ndelete chain {table} forward\n" + text
        self.nft.run(text)
        self._mesh_made = mesh_counts(state.ingress)
        log.debug("firewall applied networks=%d ports=%d", len(state.networks), len(state.ports))

    def present(self) -> bool:
        """Whether our table is there with its forward chain filled (cheap: no map listing)."""
        try:
            out = self.nft.run(f"list chain {TABLE} forward")
        except NftError:
            return False
        return "jump user" in out

    def ensure(self) -> bool:
        """Restore the table if it went missing; returns whether it had to."""
        if self.present():
            return False
        log.warning("nftables table %s missing or emptied; restoring it", TABLE)
        self.sync()
        return True

    def add_ports(self, rules: list[PortRule]) -> None:
        if rules:
            self.nft.run(port_elements(rules, "add"))

    def remove_ports(self, rules: list[PortRule]) -> None:
        if not rules:
            return
        try:
            self.nft.run(port_elements(rules, "delete"))
        except NftError:
            # An element already gone (table restored meanwhile): re-render from state.
            self.sync()

    def set_ingress(self, ports: list[IngressPort]) -> bool:
        """Make the routing mesh's ports `ports`: one transaction of the set and map
        elements that differ (a task starting or stopping moves its port between two sets
        and rewrites its tasks).  Returns whether anything was applied."""
        made = set(self._mesh_made)
        text = ingress_changes(self.ingress, ports, made)
        self.ingress = list(ports)
        if not text:
            return False
        try:
            self.nft.run(text)
            self._mesh_made = made
        except NftError as exc:
            # The table was restored or flushed meanwhile: render it whole from the state.
            log.warning("routing mesh change re-rendered the table: %s", exc)
            self.sync()
        return True
