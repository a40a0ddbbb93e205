"""`up`, `down` and friends: a checked Project carried out through the Engine API.

Like docker compose, this is a client of the daemon: it finds what a project already has by
its labels, so `up` is idempotent (a container is recreated only when its configuration hash
changed) and `down` removes exactly the containers and networks labelled with the project.
Progress lines go to stderr in compose's plain form: ` Container demo-web-1  Started`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from tether.client import ApiError, quote
from tether.compose import checks, plan
from tether.compose.checks import HostContainer, HostNetwork, HostView, container_name
from tether.compose.model import ComposeError, Project, Service
from tether.netmodes import PREDEFINED


class Api(Protocol):
    def call(self, method: str, path: str, **kw: Any) -> Any: ...

    def open(self, method: str, path: str, **kw: Any) -> Any: ...


@dataclass
class Existing:
    """A container of this project, as the daemon lists it."""

    id: str
    name: str
    service: str
    number: int
    state: str
    config_hash: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")


def label_filter(project: str, service: str | None = None) -> dict[str, list[str]]:
    labels = [f"{plan.PROJECT}={project}"]
    if service:
        labels.append(f"{plan.SERVICE}={service}")
    return {"label": labels}


class Runner:
    def __init__(self, api: Api, project: Project, err: TextIO | None = None) -> None:
        self.api = api
        self.project = project
        self.err = err or sys.stderr
        # `up --build` ("always") / `up --no-build` ("never"); "" builds a missing image.
        self.build_policy = ""
        self._out_lock = threading.Lock()

    # -- what exists ---------------------------------------------------------------------

    def progress(self, kind: str, name: str, status: str) -> None:
        with self._out_lock:
            self.err.write(f" {kind} {name}  {status}\n")
            self.err.flush()

    def containers(
        self, services: Iterable[str] | None = None, listed: list[Any] | None = None
    ) -> list[Existing]:
        """The project's containers (of `services`), from `listed` when the caller has the
        host's whole list already."""
        if listed is None:
            listed = self.api.call(
                "GET",
                "/containers/json",
                query={"all": 1, "filters": label_filter(self.project.name)},
            )
        wanted = set(services) if services is not None else None
        out = []
        for c in listed:
            labels = c.get("Labels") or {}
            if labels.get(plan.PROJECT) != self.project.name:
                continue
            svc = labels.get(plan.SERVICE, "")
            if wanted is not None and svc not in wanted:
                continue
            out.append(
                Existing(
                    id=c["Id"],
                    name=(c.get("Names") or ["/?"])[0].lstrip("/"),
                    service=svc,
                    number=int(labels.get(plan.NUMBER) or 0),
                    state=str(c.get("State") or ""),
                    config_hash=labels.get(plan.HASH, ""),
                    labels=labels,
                )
            )
        out.sort(key=lambda e: (e.service, e.number, e.name))
        return out

    def host_view(self, listed: list[Any]) -> HostView:
        """What exists: every network, and `listed` (all of the host's containers)."""
        view = HostView()
        info = self.api.call("GET", "/info")
        view.drivers = set((info.get("Plugins") or {}).get("Network") or [])
        for n in self.api.call("GET", "/networks"):
            subnets = [
                c["Subnet"] for c in (n.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")
            ]
            view.networks[n["Name"]] = HostNetwork(
                name=n["Name"],
                subnets=subnets,
                # The API does not say whether subnets were chosen by the user; the daemon
                # re-checks, so only the predefined bridge counts as "not configured" here.
                user_subnets=bool(subnets) and n["Name"] not in PREDEFINED,
                labels=n.get("Labels") or {},
            )
        for c in listed:
            name = (c.get("Names") or ["/?"])[0].lstrip("/")
            labels = c.get("Labels") or {}
            view.containers[name] = HostContainer(id=c["Id"], name=name, labels=labels)
            if labels.get(plan.PROJECT) == self.project.name:
                continue  # this project's own ports are re-planned, not conflicts
            for p in c.get("Ports") or []:
                if p.get("PublicPort"):
                    view.ports.append(
                        (str(p.get("IP") or ""), int(p["PublicPort"]), str(p.get("Type")), name)
                    )
        return view

    # -- up ------------------------------------------------------------------------------

    def selected(self, names: list[str]) -> list[str]:
        """The named services and everything they depend on (all services when none named)."""
        if not names:
            return list(self.project.services)
        for n in names:
            if n not in self.project.services:
                raise ComposeError(f"no such service: {n}")
        out: list[str] = []

        def add(n: str) -> None:
            if n in out or n not in self.project.services:
                return
            for dep in self.project.services[n].depends_on:
                add(dep)
            out.append(n)

        for n in names:
            add(n)
        return out

    def up(
        self,
        names: list[str],
        force_recreate: bool = False,
        no_recreate: bool = False,
        remove_orphans: bool = False,
        timeout: float | None = None,
    ) -> list[Existing]:
        project = self.project
        wanted = self.selected(names)
        listed = self.api.call("GET", "/containers/json", query={"all": 1})
        host = self.host_view(listed)
        checks.check_all(project, host)
        from tether.compose import images as compose_images

        images = compose_images.ensure(
            self, [project.services[n] for n in wanted], self.build_policy
        )
        levels = [[s for s in level if s in wanted] for level in project.order]

        existing = self.containers(listed=listed)
        orphans = [e for e in existing if e.service not in project.services]
        if orphans and remove_orphans:
            self._remove_all(orphans, timeout)
        elif orphans:
            self.warn(
                f"Found orphan containers ({', '.join(e.name for e in orphans)}) for this "
                "project. If you removed or renamed this service in your compose file, you "
                "can run this command with the --remove-orphans flag to clean it up."
            )
        # Volumes first: a missing external volume stops `up` before anything is made.
        from tether.compose.volumes import ensure_volumes

        ensure_volumes(self, wanted)
        self._ensure_networks(wanted, host, existing, timeout)
        existing = [e for e in existing if e.service in project.services and e.state != "removed"]

        # Create (or recreate) every container first, then start them in dependency order.
        ids: dict[str, list[Existing]] = {}
        for level in levels:
            for name in level:
                svc = project.services[name]
                mine = [e for e in existing if e.service == name]
                ids[name] = self._converge(
                    svc, mine, images[svc.image], ids, force_recreate, no_recreate, timeout
                )
        for level in levels:
            for name in level:
                self._wait_dependencies(project.services[name])
                for e in ids[name]:
                    self._start(e)
        return [e for level in levels for name in level for e in ids[name]]

    def _start(self, e: Existing) -> None:
        if e.running:
            self.progress("Container", e.name, "Running")
            return
        try:
            self.api.call("POST", f"/containers/{e.id}/start")
        except ApiError as exc:
            raise ComposeError(
                f"Error response from daemon: {exc.message} (container {e.name})"
            ) from None
        e.state = "running"
        self.progress("Container", e.name, "Started")

    def warn(self, message: str) -> None:
        with self._out_lock:
            self.err.write(f"WARN[0000] {message}\n")

    def _ensure_networks(
        self, wanted: list[str], host: HostView, existing: list[Existing], timeout: float | None
    ) -> None:
        """Create the project's networks; recreate one whose definition changed (its
        containers are removed first; `up` then creates them again)."""
        used = {a.network for n in wanted for a in self.project.services[n].networks}
        for key in sorted(used):
            net = self.project.networks[key]
            if net.external:
                continue
            body = plan.network_body(self.project, net)
            have = host.networks.get(net.name)
            if have is not None and have.labels.get(plan.HASH) == body["Labels"][plan.HASH]:
                continue
            if have is not None:
                # Changed definition: its containers go (they are recreated below), then it.
                self.progress("Network", net.name, "Recreate")
                info = self.api.call("GET", f"/networks/{quote(net.name)}")
                attached = set((info.get("Containers") or {}).keys())
                self._remove_all([e for e in existing if e.id in attached], timeout)
                self.api.call("DELETE", f"/networks/{quote(net.name)}")
            try:
                self.api.call("POST", "/networks/create", body=body)
            except ApiError as exc:
                raise ComposeError(
                    f"Error response from daemon: {exc.message} (network {net.name})"
                ) from None
            self.progress("Network", net.name, "Recreated" if have is not None else "Created")

    def _converge(
        self,
        svc: Service,
        mine: list[Existing],
        image_id: str,
        ids: dict[str, list[Existing]],
        force: bool,
        no_recreate: bool,
        timeout: float | None,
    ) -> list[Existing]:
        want = plan.service_hash(svc, image_id)
        by_number = {e.number: e for e in mine}
        extra = [e for e in mine if not 1 <= e.number <= svc.replicas]
        self._remove_all(sorted(extra, key=lambda e: -e.number), timeout)
        out: list[Existing] = []
        for n in range(1, svc.replicas + 1):
            e = by_number.get(n)
            if e is not None and (no_recreate or (e.config_hash == want and not force)):
                out.append(e)
                continue
            if e is not None:
                self.progress("Container", e.name, "Recreate")
                self._remove_all([e], timeout, quiet=True)
            created = self._create(svc, n, image_id, ids)
            self.progress("Container", created.name, "Recreated" if e is not None else "Created")
            out.append(created)
        return out

    def _create(
        self, svc: Service, number: int, image_id: str, ids: dict[str, list[Existing]]
    ) -> Existing:
        project = self.project

        def first_container_of(service: str) -> str:
            found = ids.get(service) or []
            if not found:
                raise ComposeError(f'service "{svc.name}" needs service "{service}" to be up')
            return found[0].id

        body = plan.container_body(project, svc, number, image_id, first_container_of)
        name = container_name(project.name, svc, number)
        try:
            resp = self.api.call("POST", "/containers/create", query={"name": name}, body=body)
        except ApiError as exc:
            raise ComposeError(f"Error response from daemon: {exc.message}") from None
        cid = str(resp["Id"])
        for att in svc.networks[1:]:
            net = project.networks[att.network]
            try:
                self.api.call(
                    "POST",
                    f"/networks/{quote(net.name)}/connect",
                    body={
                        "Container": cid,
                        "EndpointConfig": plan.endpoint_config(project, svc, att, number),
                    },
                )
            except ApiError as exc:
                raise ComposeError(
                    f"Error response from daemon: {exc.message} (container {name}, network {net.name})"
                ) from None
        return Existing(
            id=cid,
            name=name,
            service=svc.name,
            number=number,
            state="created",
            config_hash=body["Labels"][plan.HASH],
            labels=body["Labels"],
        )

    def _wait_dependencies(self, svc: Service) -> None:
        for dep, cfg in svc.depends_on.items():
            if cfg.condition != "service_completed_successfully":
                continue
            for e in self.containers([dep]):
                resp = self.api.call("POST", f"/containers/{e.id}/wait")
                code = int((resp or {}).get("StatusCode", 0))
                if code != 0:
                    raise ComposeError(
                        f'service "{dep}" didn\'t complete successfully: exit {code}'
                    )

    # -- down / stop ---------------------------------------------------------------------

    def _parallel(self, fn: Callable[[Existing], None], items: list[Existing]) -> None:
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
            for f in [pool.submit(fn, e) for e in items]:
                f.result()

    def stop(self, items: list[Existing], timeout: float | None) -> None:
        def one(e: Existing) -> None:
            if not e.running:
                return
            self.progress("Container", e.name, "Stopping")
            query = {"t": int(timeout)} if timeout is not None else None
            try:
                self.api.call("POST", f"/containers/{e.id}/stop", query=query)
            except ApiError as exc:
                if exc.status != 304:
                    raise
            e.state = "exited"
            self.progress("Container", e.name, "Stopped")

        for level in reversed(self._levels_of(items)):
            self._parallel(one, level)

    def _remove_all(
        self, items: list[Existing], timeout: float | None, quiet: bool = False
    ) -> None:
        self.stop(items, timeout)

        def one(e: Existing) -> None:
            try:
                self.api.call("DELETE", f"/containers/{e.id}", query={"force": 1})
            except ApiError as exc:
                if exc.status != 404:
                    raise
            e.state = "removed"
            if not quiet:
                self.progress("Container", e.name, "Removed")

        self._parallel(one, items)

    def _levels_of(self, items: list[Existing]) -> list[list[Existing]]:
        """Containers grouped by their service's level in the start order (orphans first)."""
        rank = {svc: i + 1 for i, level in enumerate(self.project.order) for svc in level}
        levels: dict[int, list[Existing]] = {}
        for e in items:
            levels.setdefault(rank.get(e.service, 0), []).append(e)
        return [levels[k] for k in sorted(levels)]

    def down(self, remove_orphans: bool, timeout: float | None, volumes: bool = False) -> int:
        existing = self.containers()
        ours = [e for e in existing if e.service in self.project.services or remove_orphans]
        orphans = [e for e in existing if e not in ours]
        if orphans:
            self.warn(
                f"Found orphan containers ({', '.join(e.name for e in orphans)}) for this "
                "project. If you removed or renamed this service in your compose file, you "
                "can run this command with the --remove-orphans flag to clean it up."
            )
        self._remove_all(ours, timeout)
        status = 0
        nets = self.api.call("GET", "/networks", query={"filters": label_filter(self.project.name)})
        for n in sorted(nets, key=lambda n: n["Name"]):
            key = (n.get("Labels") or {}).get(plan.NETWORK, "")
            if key not in self.project.networks and not remove_orphans and orphans:
                continue  # still used by the orphans left behind
            try:
                self.api.call("DELETE", f"/networks/{n['Id']}")
            except ApiError as exc:
                if "has active endpoints" in exc.message:
                    # Containers outside this `down` still use it (the project's services on
                    # another cluster node, say): docker compose warns and goes on.
                    self.progress("Network", n["Name"], "Resource is still in use")
                    continue
                self.err.write(f"Error response from daemon: {exc.message}\n")
                status = 1
                continue
            self.progress("Network", n["Name"], "Removed")
        if volumes:
            from tether.compose.volumes import remove_volumes

            status = remove_volumes(self) or status
        return status

    # -- attach (up without -d) ----------------------------------------------------------

    def attach(self, items: list[Existing], abort_on_exit: bool, timeout: float | None) -> int:
        """Follow every container's output, prefixed like compose, until all have exited."""
        width = max((len(self.prefix(e)) for e in items), default=0)
        exited = threading.Event()
        codes: dict[str, int] = {}
        out = sys.stdout

        def follow(e: Existing) -> None:
            label = self.prefix(e).ljust(width) + "  | "
            query = {"follow": 1, "stdout": 1, "stderr": 1}
            try:
                self.print_output(e, query, label, self._out_lock)
            except OSError:
                pass
            info = self.api.call("GET", f"/containers/{e.id}/json")
            code = int(info["State"]["ExitCode"])
            codes[e.id] = code
            with self._out_lock:
                out.write(f"{self.prefix(e)} exited with code {code}\n")
                out.flush()
            if abort_on_exit:
                exited.set()

        threads = [threading.Thread(target=follow, args=(e,), daemon=True) for e in items]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads) and not exited.is_set():
                time.sleep(0.1)
        except KeyboardInterrupt:
            self.err.write("Gracefully stopping... (press Ctrl+C again to force)\n")
            self.stop(items, timeout)
            return 130
        if exited.is_set():
            self.err.write("Aborting on container exit...\n")
            self.stop(items, timeout)
            return next(iter(codes.values()), 0)
        return 0

    def print_output(
        self, e: Existing, query: dict[str, Any], label: str, lock: threading.Lock
    ) -> None:
        """A container's output, line by line, each behind `label` (compose's `web-1  | `)."""
        resp = self.api.open("GET", f"/containers/{e.id}/logs", query=query)
        try:
            for line in resp.lines():
                with lock:
                    sys.stdout.write(f"{label}{line}\n")
                    sys.stdout.flush()
        finally:
            resp.close()

    def prefix(self, e: Existing) -> str:
        svc = self.project.services.get(e.service)
        if svc is not None and svc.container_name:
            return svc.container_name
        return f"{e.service}-{e.number}"
