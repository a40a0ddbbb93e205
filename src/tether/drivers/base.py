"""The network driver interface: what the engine may ask of a driver, and what it tells it.

Modelled on libnetwork's `driverapi.Driver` (CreateNetwork / CreateEndpoint / Join / Leave,
with a Capability of DataScope and ConnectivityScope) and netavark's `NetworkDriver` trait
(validate / setup / teardown, chosen by name).  The engine never tests a driver's name: it
asks the registry for the driver, reads its `Capabilities`, and calls these methods.  A driver
owns its options (`validate` turns them into `Network.driver_state`), the kernel objects it
makes (and their names, which is how the reconciler knows them), and the facts the firewall
and the reachability model need about its networks.

Order of calls, always: validate (pure, nothing changed) -> the engine stores the intent ->
create / join (kernel) -> on failure the engine undoes the store.  delete / leave must be
idempotent: they also run to clean up after a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tether.firewall.policy import Net
from tether.model import Endpoint, Network

if TYPE_CHECKING:
    from tether.kernel.rtdump import LinkInfo
    from tether.kernel.rtnl import Rtnl


# Link names the drivers' reconcilers and sweeps own (bridge tb-/tz-, macvlan tm-, veth tv,
# overlay ov-/vx-): never accepted as a name the user chooses.
TETHER_LINK_PREFIXES = ("tb-", "tz-", "tm-", "tv", "ov-", "vx-")


@dataclass(frozen=True)
class Capabilities:
    # Where the network's state lives: "local" (this host's store) or "global" (the cluster
    # store: every node sees the network), libnetwork's DataScope.
    scope: Literal["local", "global"] = "local"
    # At most one network of this driver (host, null): `network create -d host` is refused.
    singleton: bool = False
    # Containers get an interface on it (host and null are network *modes*: no endpoint).
    endpoints: bool = True
    # User-defined networks of this driver get the embedded DNS at 127.0.0.11.
    embedded_dns: bool = True
    # -p/-P are honoured for containers whose gateway endpoint is on this network.
    publishes_ports: bool = True
    # Its endpoints may carry the container's default route, through the network's gateway
    # (a bridge's address, a LAN's router).  An overlay's do not: its containers get out
    # through a local gateway bridge instead, as with Docker's docker_gwbridge.
    default_route: bool = True
    # Needs the cluster store (--cluster-store) to exist at all: the registry refuses it,
    # with the flag that gives one, on a daemon without.
    needs_cluster: bool = False
    # IPAM configs per address family that one network may have.
    subnets_per_family: int = 1
    # Can encrypt its traffic between hosts (-o encrypted).
    encryption: bool = False
    # Can be the routing mesh's network (--ingress): services' published ports on every
    # node reach their tasks over it.
    ingress: bool = False


@dataclass(frozen=True)
class Sandbox:
    """A container's network namespace as a driver sees it: its path and a netlink handle."""

    path: str
    inner: Rtnl


@dataclass(frozen=True)
class HostDevice:
    """A host device that a network's traffic crosses, as troubleshooting shows and checks it
    (network inspect --verbose, doctor, topology, capture): the driver says which, so that
    nothing outside drivers/ tests a driver's name."""

    name: str
    # The link kind the device must have ("bridge", "vxlan"); "" for a link the user gave
    # (a macvlan parent: any kind).
    kind: str
    # What it is to the network, for people: "bridge", "vxlan", "macvlan parent".
    role: str
    mtu: int = 0  # the MTU it must have (0: whatever it has)
    addresses: tuple[str, ...] = ()  # addresses it must carry (a bridge's gateways)
    info: tuple[tuple[str, str], ...] = ()  # more facts to show (an overlay's VNI)
    master: str = ""  # the bridge it must be a port of
    # The host ends of the network's endpoints are ports of this device.
    endpoints_master: bool = False


# What the host's firewall must know of one network of a driver that routes through the
# host: the reachability model's own view of a network (firewall/policy.py).  Networks whose
# traffic never crosses the host's IP stack (macvlan: frames leave through the parent) have
# none.
FirewallFacts = Net


class NetworkDriver(ABC):
    name: str
    caps: Capabilities

    # -- networks ------------------------------------------------------------------------

    @abstractmethod
    def validate(self, net: Network, others: list[Network]) -> None:
        """Check `net.options` (and the rest of the request) and fill `net.driver_state`.

        Pure: raise Docker's error, change nothing outside `net`.  `others` are the networks
        that exist already (every driver's), for conflicts such as a bridge name in use.
        """

    async def check_kernel(self, net: Network) -> None:
        """Checks that need to look at the kernel (a parent link exists); nothing changes."""
        return None

    def claims(self, net: Network) -> list[str]:
        """Values of a global network that must be unique across the cluster besides its
        name and subnets (an overlay's VXLAN id: "vni/4096"); claimed in the cluster store
        in the same transaction as the network."""
        return []

    def assign(self, net: Network, claimed: set[str]) -> None:
        """Fill in what `claims` names, avoiding `claimed` (what the cluster holds); refuse
        a value the user asked for that is taken."""
        return None

    def predefined_options(self, name: str) -> dict[str, str]:
        """The options a predefined network of this driver shows (and is built from)."""
        return {}

    @abstractmethod
    async def create(self, net: Network) -> None:
        """Make the network's kernel objects."""

    @abstractmethod
    async def delete(self, net: Network) -> None:
        """Remove what `create` made (idempotent)."""

    def firewall(self, net: Network) -> FirewallFacts | None:
        return None

    def host_devices(self, net: Network) -> list[HostDevice]:
        """The host devices the network's traffic crosses (none: a mode such as host)."""
        return []

    def default_host_ip(self, net: Network) -> str:
        """The host address `-p PORT:PORT` (no address) binds to for containers published
        through this network; "" is Docker's default, 0.0.0.0 and ::."""
        return ""

    # -- endpoints -----------------------------------------------------------------------

    def prepare_endpoint(self, net: Network, ep: Endpoint) -> None:
        """Name the endpoint's kernel objects before anything exists (pure).

        Called while the endpoint is recorded in the store, so that a crash at any later
        point leaves names the reconciler can find.
        """
        return None

    @abstractmethod
    async def join(self, net: Network, ep: Endpoint, sandbox: Sandbox) -> None:
        """Make the endpoint's interface `ep.ifname` inside the sandbox, addressed and up;
        set `ep.index` to its ifindex there."""

    @abstractmethod
    async def leave(self, net: Network, ep: Endpoint, sandbox_path: str | None) -> None:
        """Remove the endpoint's interface now, even when the sandbox is deleted next
        (idempotent; `sandbox_path` may be None or gone already)."""

    async def endpoint_present(
        self, net: Network, ep: Endpoint, host_links: dict[str, LinkInfo], inner: Rtnl
    ) -> bool:
        """Whether a running container's endpoint still has its kernel objects."""
        return await inner.index(ep.ifname) is not None

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, nets: list[Network]) -> int:
        """Remove this driver's host objects that none of `nets` wants; repair the rest.

        Runs every few seconds: dump only what the driver owns (links of one kind, filtered
        by the kernel).  Returns the number of kernel changes made.
        """
        return 0

    async def sweep_endpoints(self, wanted: set[str]) -> int:
        """Remove host-side endpoint links (by this driver's name prefix) not in `wanted`."""
        return 0

    async def drain(self) -> None:
        """Wait for background kernel work (clean stop)."""
        return None
