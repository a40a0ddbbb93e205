"""One typed event bus: what happened to networks, containers and their endpoints.

The engine publishes; the embedded DNS, the firewall, `/events`, the cluster publisher and
the troubleshooting views subscribe.  Publishers never know who listens, so a new consumer is
one `subscribe` call in the daemon's wiring, never an attribute set on the engine afterwards.

Handlers run synchronously, in subscription order, on the publisher's thread (the asyncio
loop): an event is fully applied (DNS answers, firewall elements) by the time `publish`
returns, which is what lets a container's first lookup find its own name.  A failing handler
is logged and does not stop the others, nor the operation that published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tether.model import Container, Endpoint, Network, NodeInfo, RemoteEndpoint

log = logging.getLogger("tether.events")


@dataclass(frozen=True)
class NetworkCreated:
    network: Network


@dataclass(frozen=True)
class NetworkRemoved:
    network: Network


@dataclass(frozen=True)
class ContainerCreated:
    container: Container


@dataclass(frozen=True)
class SandboxReady:
    """The sandbox and its endpoints exist; the container's process has not started yet."""

    container: Container


@dataclass(frozen=True)
class SandboxRemoving:
    """The container's sandbox is about to be deleted and its addresses given back (a stop, a
    failed start, a remove): whoever holds something inside it lets go now.  An open socket
    keeps a network namespace, and every interface in it, alive after its file is gone."""

    container: Container


@dataclass(frozen=True)
class ContainerStarted:
    container: Container
    # True when a restarted daemon adopted a container that kept running.
    adopted: bool = False


@dataclass(frozen=True)
class ContainerStopped:
    container: Container


@dataclass(frozen=True)
class ContainerDestroyed:
    container: Container


@dataclass(frozen=True)
class EndpointJoined:
    """A running container was connected to one more network."""

    container: Container
    network: Network
    endpoint: Endpoint


@dataclass(frozen=True)
class EndpointLeft:
    """A running container was disconnected from a network."""

    container: Container
    network: Network | None
    endpoint: Endpoint | None


@dataclass(frozen=True)
class ClusterNetwork:
    """A global network appeared, changed or (removed=True) went, in the cluster store."""

    network: Network
    removed: bool = False


@dataclass(frozen=True)
class ClusterEndpoints:
    """One global network's endpoints changed in the cluster store.

    `endpoints` is the store's whole current set for the network (every node's, this one's
    included: subscribers skip `node`'s own, which they know from the local containers);
    `changed` names the endpoint ids this change touched (None: any may have), so that a
    subscriber's work per change does not grow with the network's size.  Read-only.
    """

    network_id: str
    endpoints: Mapping[str, RemoteEndpoint]
    node: str
    changed: frozenset[str] | None = None

    def others(self) -> dict[str, RemoteEndpoint]:
        """The network's endpoints on other nodes."""
        return {k: ep for k, ep in self.endpoints.items() if ep.node != self.node}


@dataclass(frozen=True)
class ClusterNode:
    """A node registered, re-registered, or went down (its lease expired)."""

    node: NodeInfo


Event = (
    NetworkCreated
    | NetworkRemoved
    | ContainerCreated
    | SandboxReady
    | SandboxRemoving
    | ContainerStarted
    | ContainerStopped
    | ContainerDestroyed
    | EndpointJoined
    | EndpointLeft
    | ClusterNetwork
    | ClusterEndpoints
    | ClusterNode
)
E = TypeVar("E")


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Any], list[Callable[[Any], None]]] = {}
        self._every: list[Callable[[Any], None]] = []

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call `handler` for every event of `kind`; returns the unsubscribe function."""
        handlers = self._handlers.setdefault(kind, [])
        handlers.append(handler)
        return lambda: handlers.remove(handler) if handler in handlers else None

    def subscribe_all(self, handler: Callable[[Event], None]) -> Callable[[], None]:
        """Every event, whatever its kind (the `/events` stream, loggers)."""
        self._every.append(handler)
        return lambda: self._every.remove(handler) if handler in self._every else None

    def publish(self, event: Event) -> None:
        for handler in [*self._handlers.get(type(event), ()), *self._every]:
            try:
                handler(event)
            except Exception:
                log.exception("event handler failed on %s", type(event).__name__)
