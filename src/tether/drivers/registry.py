"""The registry of network drivers: the engine asks it for a driver by name, never tests names.

It feeds `network create` (which driver builds a network), `/info`'s plugin list, compose's
checks (through `/info` and drivers/catalog.py), and the reconciler (every driver's part).
"""

from __future__ import annotations

from collections.abc import Iterable

from tether.drivers.base import NetworkDriver
from tether.drivers.catalog import refusal
from tether.errors import Forbidden, NotFound


class DriverRegistry:
    def __init__(
        self,
        drivers: Iterable[NetworkDriver],
        reasons: dict[str, str] | None = None,
        clustered: bool = False,
    ) -> None:
        # A driver that needs the cluster store is only served by a daemon that has one.
        self.by_name: dict[str, NetworkDriver] = {
            d.name: d for d in drivers if clustered or not d.caps.needs_cluster
        }
        # Why a name is not served, where this host knows better than the catalog.
        self.reasons = dict(reasons or {})

    def get(self, name: str) -> NetworkDriver:
        """The driver called `name`, or the error that says why there is none."""
        driver = self.by_name.get(name)
        if driver is not None:
            return driver
        message = self.reasons.get(name) or refusal(name)
        if message.startswith("plugin "):
            raise NotFound(message)
        raise Forbidden(message)

    def of(self, driver_name: str) -> NetworkDriver:
        """The driver of an existing network (its name was checked when it was created)."""
        return self.by_name[driver_name]

    def names(self) -> list[str]:
        return sorted(self.by_name)

    def all(self) -> list[NetworkDriver]:
        return list(self.by_name.values())
