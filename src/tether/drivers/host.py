"""The host and null drivers: network *modes*, not networks a container gets an interface on.

`--network host` runs the container in the host's network namespace; `--network none` gives
it a namespace with only lo.  Each exists once (the predefined `host` and `none` networks),
has no IPAM, no endpoints, no embedded DNS and publishes no ports (Docker warns that -p is
discarded with host networking).
"""

from __future__ import annotations

from tether.drivers.base import Capabilities, NetworkDriver, Sandbox
from tether.model import Endpoint, Network

MODE_CAPS = Capabilities(
    singleton=True,
    endpoints=False,
    embedded_dns=False,
    publishes_ports=False,
    default_route=False,
)


class _ModeDriver(NetworkDriver):
    caps = MODE_CAPS

    def validate(self, net: Network, others: list[Network]) -> None:
        net.driver_state = {}

    async def create(self, net: Network) -> None:
        return None

    async def delete(self, net: Network) -> None:
        return None

    async def join(self, net: Network, ep: Endpoint, sandbox: Sandbox) -> None:
        raise AssertionError(f"the {self.name} driver has no endpoints")

    async def leave(self, net: Network, ep: Endpoint, sandbox_path: str | None) -> None:
        return None


class HostDriver(_ModeDriver):
    name = "host"


class NullDriver(_ModeDriver):
    name = "null"
