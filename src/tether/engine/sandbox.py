"""Sandboxes: a container's network namespace, its endpoints, and its default route.

A sandbox is a network namespace bound to EXEC_ROOT/netns/<container id prefix>, so it lives
without any process in it.  This module does the namespace's kernel work; the drivers make
the endpoints' interfaces in it (engine/endpoints.py decides when).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from tether.kernel import netns
from tether.kernel.rtnl import Rtnl
from tether.model import Container, Endpoint, Network


def gateway_endpoint(c: Container, network_of: Callable[[str], Network | None]) -> Endpoint | None:
    """Which endpoint carries the default route: Docker's order, or None.

    Endpoints with both IPv4 and IPv6 gateways before those with one; then by network name
    (libnetwork's Endpoint.Less).  An endpoint on an --internal network never carries it: as
    in Docker 25+ (moby#46603), a container only on internal networks has no default route
    at all, so a connect() beyond its subnets fails at once instead of timing out in the
    firewall, and one on an internal and a normal network gets its route from the normal one.
    """

    def key(ep: Endpoint) -> tuple[int, str]:
        net = network_of(ep.network_id)
        has = (1 if ep.gateway4 else 0) + (2 if ep.gateway6 else 0)
        return (-has, net.name if net else "")

    def external(ep: Endpoint) -> bool:
        net = network_of(ep.network_id)
        return net is not None and not net.internal

    candidates = [
        ep for ep in c.endpoints.values() if (ep.gateway4 or ep.gateway6) and external(ep)
    ]
    return min(candidates, key=key) if candidates else None


class Sandboxes:
    def __init__(self, host: Rtnl, netns_dir: str) -> None:
        self.host = host
        self.dir = netns_dir

    def path_for(self, c: Container) -> str:
        return os.path.join(self.dir, c.id[:12])

    def open(self, c: Container) -> Rtnl:
        return Rtnl.open(c.sandbox_key)

    async def create(self, c: Container) -> str:
        path = self.path_for(c)
        if os.path.exists(path):  # left by a crash: start from a clean namespace
            netns.delete(path)
        netns.create(path)
        inner = Rtnl.open(path)
        try:
            await inner.up(1)  # lo
        finally:
            inner.close()
        return path

    async def set_gateway(self, c: Container, inner: Rtnl | None, gw: Endpoint | None) -> None:
        """Point the default routes at `gw` (or remove them when no endpoint has a gateway).

        Does nothing when the gateway endpoint did not change: connecting or disconnecting a
        secondary network leaves the routes as they are (and costs no netlink round trip).
        """
        want = gw.id if gw is not None else ""
        if want == c.gateway:
            return
        own = inner is None
        if inner is None:
            inner = Rtnl.open(c.sandbox_key)
        try:
            routes = (
                (socket.AF_INET, gw.gateway4 if gw else ""),
                (socket.AF_INET6, gw.gateway6 if gw else ""),
            )
            for family, addr in routes:
                if addr and gw is not None:
                    index = gw.index or await inner.index(gw.ifname)
                    await inner.add_default_route(addr, index)
                else:
                    await inner.del_default_route(family)
        finally:
            if own:
                inner.close()
        c.gateway = want

    def delete(self, c: Container) -> None:
        """Remove the namespace (and what lives only inside it).  Idempotent."""
        if c.sandbox_key and c.sandbox_key.startswith(self.dir):
            netns.delete(c.sandbox_key)
