"""The containers this daemon knows: records, lookups, create, listings and inspect.

What happens to a container over its life (start, stop, connect...) is engine/lifecycle.py;
its attachments are engine/endpoints.py; its processes engine/supervisor.py.  This module is
the registry they share: the records in memory and in the store, Docker's lookup rules, and
the API views.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

from tether.api.containers import ContainerCreate
from tether.api.decode import strslice
from tether.engine import container_views as views
from tether.engine import names, specs
from tether.engine.filters import Filters, check_keys, label_match, regex_match
from tether.engine.volumes import Volumes
from tether.errors import Conflict, InvalidParameter, NotFound, SystemFailure
from tether.events import ContainerCreated, ContainerDestroyed, EventBus
from tether.model import Container, Network
from tether.runtime import volfill
from tether.runtime.confine import Confiner
from tether.runtime.images import ImageStore
from tether.store import records
from tether.store.sqlite import Store

log = logging.getLogger("tether.containers")

CONTAINER_FILTERS = {"id", "name", "status", "label", "network", "ancestor", "exited"}


class Containers:
    def __init__(
        self,
        store: Store,
        images: ImageStore,
        root: str,
        events: EventBus,
        network_of: Callable[[str], Network | None],
        find_network: Callable[[str], Network],
        confiner: Confiner,
    ) -> None:
        self.store = store
        self.images = images
        self.dir = os.path.join(root, "containers")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)  # see store/statedir.py
        # Capabilities, seccomp, masked paths: checked at create, applied by the shim.
        self.confiner = confiner
        self.events = events
        self.network_of = network_of
        self.find_network = find_network
        self.by_id: dict[str, Container] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.volumes = Volumes(store, root)
        # Volumes a created container fills from its image (populate), by container id;
        # one lock per volume: two containers created with one new volume copy once.
        self._to_fill: dict[str, list[tuple[str, str]]] = {}
        self._fill_locks: dict[str, asyncio.Lock] = {}

    # -- records ---------------------------------------------------------------------------

    def lock(self, c: Container) -> asyncio.Lock:
        """One container's lock: start, stop, connect and remove of it never interleave."""
        return self._locks.setdefault(c.id, asyncio.Lock())

    def cdir(self, c: Container) -> str:
        return os.path.join(self.dir, c.id)

    def paths(self, c: Container) -> dict[str, str]:
        d = self.cdir(c)
        return {
            "hosts": os.path.join(d, "hosts"),
            "resolv": os.path.join(d, "resolv.conf"),
            "hostname": os.path.join(d, "hostname"),
            "log": os.path.join(d, "container.log"),
            "exit": os.path.join(d, "exit"),
        }

    def save(self, c: Container) -> None:
        with self.store.transaction():
            self.store.put("container", c.id, c.name, c.to_doc())

    def forget(self, c: Container) -> None:
        with self.store.transaction():
            self.store.delete("container", c.id)
        self.by_id.pop(c.id, None)
        self._locks.pop(c.id, None)

    def load(self) -> None:
        loaded = records.parse_all("container", self.store.load("container"), records.container)
        self.by_id = {c.id: c for c in loaded}
        self.volumes.load()

    def find(self, term: str) -> Container:
        """Docker's lookup: full id, then name (with or without /), then unique id prefix."""
        c = self.by_id.get(term)
        if c is not None:
            return c
        name = term.lstrip("/")
        for c in self.by_id.values():
            if c.name == name:
                return c
        if term:
            found = [c for c in self.by_id.values() if c.id.startswith(term)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidParameter(f"multiple IDs found with provided prefix: {term}")
        raise NotFound(f"No such container: {term}")

    # -- create ----------------------------------------------------------------------------

    def create(self, req: ContainerCreate, name: str | None) -> Container:
        """A Created container from a request already checked at the API edge (tether.api)."""
        image_ref = req.Image or ""
        if not image_ref:
            raise InvalidParameter("No image specified")
        img = self.images.find(image_ref)
        if name:
            name = names.check(name)
            for other in self.by_id.values():
                if other.name == name:
                    raise Conflict(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{other.id}". You have to remove (or rename) that container to be able to reuse that name.'
                    )
        else:
            name = names.generate({c.name for c in self.by_id.values()})
        hc = req.host
        # Privileged, CapAdd, CapDrop, SecurityOpt, MaskedPaths, ReadonlyPaths, as Docker
        # records them (runtime/security.py); a bad value is refused before anything exists.
        security_fields = self.confiner.check(
            {
                "Privileged": hc.Privileged,
                "CapAdd": strslice(hc.CapAdd),
                "CapDrop": strslice(hc.CapDrop),
                "SecurityOpt": hc.SecurityOpt,
                "MaskedPaths": hc.MaskedPaths,
                "ReadonlyPaths": hc.ReadonlyPaths,
            }
        )
        c = specs.build(req, name, img, self.find_network, security_fields)
        # -v, --mount, --tmpfs, --volumes-from and VOLUMEs (the image's, then the request's).
        c.mounts, fill = self.volumes.resolve(
            hc, [*(img.config.get("Volumes") or {}), *(req.Volumes or {})], self.find
        )
        if fill:
            self._to_fill[c.id] = fill
        os.makedirs(self.cdir(c), mode=0o700, exist_ok=True)  # see store/statedir.py
        self.by_id[c.id] = c
        self.save(c)
        log.info(
            "container created name=%s id=%s image=%s network=%s",
            c.name,
            c.short_id,
            image_ref,
            c.host_config.get("NetworkMode"),
        )
        self.events.publish(ContainerCreated(c))
        return c

    async def populate(self, c: Container, at_create: bool = True) -> None:
        """Fill the new container's empty volumes from its image, as dockerd does at create
        (runtime/volfill.py); called right after create (and by the first start, for a
        creator that did not).  A failure at create is the create's: the container is not
        kept."""
        fill = self._to_fill.pop(c.id, [])
        img = self.images.by_id.get(c.image_id)
        # The built-in host image is a view of the host's programs, not content of its own.
        layers = (self.images.rootfs(img) or "").split(":") if img is not None else []
        for name, dst in fill:
            vol = self.volumes.by_name.get(name)
            if vol is None or not layers or not layers[0]:
                continue
            lock = self._fill_locks.setdefault(name, asyncio.Lock())
            try:
                async with lock:
                    await volfill.fill(vol["Mountpoint"], dst, layers)
            except (OSError, volfill.FillError) as exc:
                if at_create:
                    self.forget(c)
                    shutil.rmtree(self.cdir(c), ignore_errors=True)
                    self.events.publish(ContainerDestroyed(c))
                raise SystemFailure(
                    f"failed to populate volume {name} from the image's {dst}: {exc}"
                ) from None

    # -- views -----------------------------------------------------------------------------

    def network_containers(self, net: Network, has_endpoints: bool) -> dict[str, Any]:
        """`Containers` of a network's inspect: running containers attached to it."""
        out: dict[str, Any] = {}
        for c in self.by_id.values():
            if not c.state.running:
                continue
            if not has_endpoints:
                # host and none are modes: the containers running in that mode.
                if c.network_mode == net.name:
                    out[c.id] = {
                        "Name": c.name,
                        "EndpointID": "",
                        "MacAddress": "",
                        "IPv4Address": "",
                        "IPv6Address": "",
                    }
                continue
            ep = c.endpoints.get(net.name)
            if ep is not None:
                out[c.id] = {
                    "Name": c.name,
                    "EndpointID": ep.id,
                    "MacAddress": ep.mac,
                    "IPv4Address": ep.ipv4,
                    "IPv6Address": ep.ipv6,
                }
        return out

    def has_endpoint_on(self, net: Network) -> bool:
        """Whether any container holds an endpoint on `net`, running or not yet: a start
        records its endpoints (under the daemon's lock) before its process runs."""
        return any(
            ep.network_id == net.id for c in self.by_id.values() for ep in c.endpoints.values()
        )

    def inspect(
        self, c: Container, ports: dict[str, Any] | None = None, exec_ids: list[str] | None = None
    ) -> dict[str, Any]:
        return views.inspect(c, self.network_of, self.paths(c), ports, exec_ids or [])

    def query(
        self, all_: bool, filters: Filters, ports_of: Callable[[Container], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        check_keys(filters, CONTAINER_FILTERS)
        out = []
        for c in sorted(self.by_id.values(), key=lambda c: c.created, reverse=True):
            if not all_ and not c.state.running and "status" not in filters:
                continue
            if "id" in filters and not any(c.id.startswith(v) for v in filters["id"]):
                continue
            if "name" in filters and not regex_match(filters["name"], c.name):
                continue
            if "status" in filters and c.state.status not in filters["status"]:
                continue
            if "label" in filters and not label_match(
                filters["label"], c.config.get("Labels") or {}
            ):
                continue
            if "network" in filters:
                nets = set(c.networks) | {cfg.network_id for cfg in c.networks.values()}
                if not any(v in nets for v in filters["network"]):
                    continue
            if "ancestor" in filters and not any(
                v in (c.image, c.image_id) for v in filters["ancestor"]
            ):
                continue
            if "exited" in filters and (
                c.state.status != "exited" or str(c.state.exit_code) not in filters["exited"]
            ):
                continue
            out.append(views.list_entry(c, self.network_of, ports_of(c)))
        return out

    def wanted_kernel_objects(self) -> tuple[set[str], set[str], set[str]]:
        """(host-side link names, netns paths, endpoint ids) that some container may own now."""
        links: set[str] = set()
        paths: set[str] = set()
        eps: set[str] = set()
        for c in self.by_id.values():
            for ep in c.endpoints.values():
                if ep.host_ifname:
                    links.add(ep.host_ifname)
                eps.add(ep.id)
            if c.sandbox_key:
                paths.add(c.sandbox_key)
        return links, paths, eps
