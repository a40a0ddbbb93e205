"""A container's life: start, stop, kill, restart, remove, wait, connect, disconnect, restore.

Order of every start: resolve and check (nothing changed yet) -> allocate addresses and record
the endpoints in the store, in one transaction -> build the sandbox in the kernel -> publish
ports -> start the process -> record it running.  Each step pushes its undo as soon as it has
happened (undo.py), so a failure at any step takes back exactly what was done; a crash at any
step is undone (or completed) by `restore` at the next start of the daemon, because the store
always says which kernel objects a container may own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from typing import TYPE_CHECKING

from tether.api.containers import log_rotation, parse_signal
from tether.api.networks import EndpointSettings
from tether.engine.attach import Attacher
from tether.engine.container_views import epoch as epoch_of
from tether.engine.containers import Containers
from tether.engine.endpoints import Endpoints, Plan, check_endpoint_rules, user_defined
from tether.engine.specs import endpoint_config
from tether.engine.supervisor import (
    Run,
    Supervisor,
    first_child,
    kill_shim_tree,
    running_state,
)
from tether.engine.volumes import ANONYMOUS, check_propagation
from tether.errors import (
    Conflict,
    Forbidden,
    InvalidParameter,
    NotFound,
    NotModified,
    SystemFailure,
    TetherError,
)
from tether.events import (
    ContainerDestroyed,
    ContainerStarted,
    ContainerStopped,
    EndpointJoined,
    EndpointLeft,
    EventBus,
    SandboxReady,
    SandboxRemoving,
)
from tether.model import Container, Endpoint, EndpointConfig, Network
from tether.netmodes import DEFAULT_NETWORK, is_container, is_host, is_none, own_endpoints
from tether.runtime import cgroups, files, shim
from tether.runtime.images import ImageStore, host_view
from tether.store import statedir
from tether.timefmt import iso_utc
from tether.undo import Undo

if TYPE_CHECKING:
    from tether.engine.networks import Networks
    from tether.firewall.publish import Publisher

log = logging.getLogger("tether.lifecycle")

# --add-host NAME:host-gateway: Docker's name for the host as containers reach it.
HOST_GATEWAY = "host-gateway"


class Lifecycle:
    def __init__(
        self,
        containers: Containers,
        networks: Networks,
        endpoints: Endpoints,
        images: ImageStore,
        events: EventBus,
        publisher: Publisher | None,
        host_resolv_path: str,
        lock: asyncio.Lock,
        private_paths: list[str],
    ) -> None:
        self.containers = containers
        self.networks = networks
        self.endpoints = endpoints
        self.images = images
        self.events = events
        # Published ports (None: no port publishing at all, as in unit setups).
        self.publisher = publisher
        self.host_resolv_path = host_resolv_path
        self.lock = lock  # the daemon's lock: allocations and network changes
        # tether's own paths, kept out of the built-in host image's view.
        self.private_paths = private_paths
        self.supervisor = Supervisor(containers.dir, self._finish)
        self.attacher = Attacher(containers.cdir)
        self._waiters: dict[str, list[tuple[str, asyncio.Future[int]]]] = {}
        # Restart policies: the pending restart of each container and its next backoff.
        self.restarting: dict[str, asyncio.Task[None]] = {}
        self._reaping: set[asyncio.Task[None]] = set()  # cgroups left to remove
        self._backoff: dict[str, float] = {}

    # -- start -----------------------------------------------------------------------------

    async def start(self, term: str) -> Container:
        c = self.containers.find(term)
        async with self.containers.lock(c):
            if c.id not in self.containers.by_id:  # removed while this start waited
                raise NotFound(f"No such container: {term}")
            if c.state.running:
                raise NotModified("container already started")
            if c.state.status == "removing":
                raise Conflict(f"container {c.id} is marked for removal and cannot be started")
            self._cancel_restart(c)
            c.state.manually_stopped = False
            failure: TetherError | None = None
            try:
                await self._start(c)
            except TetherError as exc:
                failure = exc
        if failure is not None:
            if c.host_config.get("AutoRemove"):
                # As dockerd: a --rm container whose start failed is removed (its waiters
                # for "removed", docker run's, are answered).
                try:
                    await self._remove(c, force=True, volumes=True)
                except TetherError:
                    pass
            raise failure
        return c

    async def _start(self, c: Container) -> None:
        await self.containers.populate(c, at_create=False)  # for a creator that did not
        img = self.images.by_id.get(c.image_id)
        if img is None:
            raise NotFound(f"No such image: {c.image}")
        mode = c.network_mode
        join_path: str | None = None
        if is_container(mode):
            other = self.containers.find(mode.split(":", 1)[1])
            if not other.state.running:
                raise Conflict(f"cannot join network of a non running container: {other.id}")
            join_path = other.sandbox_key or None
        for other, alias in self._links(c):
            if not other.state.running:
                raise Conflict(
                    f"Cannot link to a non running container: /{other.name} AS /{c.name}/{alias}"
                )
        plan = self.endpoints.resolve(c) if own_endpoints(mode) else []
        if self.endpoints.needs_gateway_bridge(plan):
            gw = await self.networks.gateway_bridge()
            plan.append((gw.name, EndpointConfig(network_id=gw.id), gw))
        try:
            async with Undo() as undo:
                check_propagation(c.mounts)  # the host's mounts as they are now (dockerd's)
                await self._allocate(c, plan, join_path)
                undo.push(lambda: self._teardown(c), "sandbox and addresses")
                await self.endpoints.build_sandbox(c, plan)
                self._write_files(c)
                await self._publish(c)
                self.events.publish(SandboxReady(c))
                spec = self._run_spec(c, self.images.rootfs(img))
                try:
                    os.unlink(self.containers.paths(c)["exit"])
                except FileNotFoundError:
                    pass
                statedir.private_file(self.containers.paths(c)["log"])  # the shim appends
                spec.listen_fd = self.attacher.listener(c)
                spec.attach_fd = self.attacher.shim_end(c)
                try:
                    shim_pid, pid = await self.supervisor.spawn(spec)
                finally:
                    for fd in (spec.listen_fd, spec.attach_fd):
                        if fd >= 0:
                            os.close(fd)
        except BaseException as exc:
            self.attacher.spawn_failed(c)
            self._record_start_failure(c, exc)
            if isinstance(exc, shim.StartError):
                raise SystemFailure(c.state.error) from None
            raise
        c.state = running_state(pid, shim_pid)
        self.containers.save(c)
        self.supervisor.watch(c)
        await self.attacher.spawned(c)
        log.info(
            "container started name=%s id=%s pid=%d endpoints=%s",
            c.name,
            c.short_id,
            pid,
            ",".join(f"{n}:{ep.ipv4 or ep.ipv6}" for n, ep in c.endpoints.items()) or "-",
        )
        self.events.publish(ContainerStarted(c))

    async def _allocate(self, c: Container, plan: Plan, join_path: str | None) -> None:
        """Addresses and the sandbox's name, recorded in one transaction."""
        mode = c.network_mode
        taken: list[tuple[str, str]] = []
        claimed: dict[str, Endpoint] = {}
        async with self.lock:
            try:
                c.next_if = 0
                c.gateway = ""
                c.endpoints = {}
                ifnames = {name: self.endpoints.next_ifname(c) for name, _cfg, _net in plan}
                # Endpoints of global networks are claimed in the cluster store first (one
                # transaction each); local ones in the local store's transaction below.
                for name, cfg, net in plan:
                    if self.endpoints.is_global(net):
                        claimed[name] = await self.endpoints.claim_global(
                            c, net, cfg, ifnames[name]
                        )
                with self.containers.store.transaction():
                    for name, cfg, net in plan:
                        if self.endpoints.network_of(net.id) is None:
                            # Removed since the plan was made, before this start held the
                            # lock; `network rm` sees endpoints only once they are recorded.
                            raise NotFound(f"network {name} not found")
                        c.endpoints[name] = claimed.get(name) or self.endpoints.allocate(
                            c, net, cfg, taken, ifnames[name]
                        )
                    if is_none(mode) or plan:
                        c.sandbox_key = self.endpoints.sandboxes.path_for(c)
                    elif join_path:
                        c.sandbox_key = join_path
                    else:
                        c.sandbox_key = ""
                    c.state.error = ""
                    self.containers.store.put("container", c.id, c.name, c.to_doc())
            except BaseException:
                self.endpoints.forget(taken)
                await self.endpoints.release_global(c, list(claimed.values()))
                c.endpoints = {}
                c.sandbox_key = ""
                raise

    def _record_start_failure(self, c: Container, exc: BaseException) -> None:
        message = str(exc.message if isinstance(exc, TetherError) else exc)
        c.state.exit_code = (
            127
            if "executable file not found" in message
            else 126
            if "permission denied" in message.lower()
            else 128
        )
        c.state.error = (
            f"OCI runtime create failed: unable to start container process: {message}: unknown"
            if isinstance(exc, shim.StartError)
            else message
        )
        self.containers.save(c)
        log.warning(
            "container start failed name=%s id=%s error=%r", c.name, c.short_id, c.state.error
        )

    async def _publish(self, c: Container) -> None:
        c.ports = []
        if self.publisher is None or not own_endpoints(c.network_mode):
            return
        target, ep_id = self.endpoints.port_target(c)
        if not target:
            return
        default_ip = self.endpoints.default_host_ip(c)
        async with self.lock:
            c.ports = self.publisher.publish(c, target, ep_id, default_ip)
        await self.publisher.wire_proxies(c)

    async def _retarget_ports(self, c: Container) -> None:
        if self.publisher is None or not c.ports:
            return
        target, _ = self.endpoints.port_target(c)
        if target != c.ports[0].target_ip:
            self.publisher.retarget(c, target)
            await self.publisher.wire_proxies(c)

    def _write_files(self, c: Container) -> None:
        p = self.containers.paths(c)
        mode = c.network_mode
        try:
            with open(self.host_resolv_path) as f:
                host_resolv = f.read()
        except OSError:
            host_resolv = ""
        hc = c.host_config
        extra = self._extra_hosts(hc.get("ExtraHosts") or []) + self._link_hosts(c)
        if is_host(mode):
            try:
                with open("/etc/hosts") as f:
                    hosts_text = f.read()
            except OSError:
                hosts_text = files.HOSTS_HEADER
            hosts_text += "".join(f"{ip}\t{name}\n" for name, ip in extra)
            resolv_text = host_resolv
            servers = files.parse_resolv(host_resolv)[0]
        else:
            addrs = [ep.ipv4.split("/")[0] for ep in c.endpoints.values() if ep.ipv4]
            addrs += [ep.ipv6.split("/")[0] for ep in c.endpoints.values() if ep.ipv6]
            hosts_text = files.hosts(
                c.hostname, str(c.config.get("Domainname") or ""), addrs, extra
            )
            resolv_text, servers = files.resolv_conf(
                host_resolv,
                hc.get("Dns") or [],
                hc.get("DnsSearch") or [],
                hc.get("DnsOptions") or [],
                embedded=self.endpoints.embedded_dns(c),
            )
        c.dns_upstreams = servers
        host_name = os.uname().nodename if is_host(mode) else c.hostname
        _write_in_place(p["hosts"], hosts_text)
        _write_in_place(p["resolv"], resolv_text)
        _write_in_place(p["hostname"], files.hostname_file(host_name))

    def _links(self, c: Container) -> list[tuple[Container, str]]:
        """--link NAME[:ALIAS]: (the linked container, the name this one knows it by)."""
        out = []
        for link in c.host_config.get("Links") or []:
            name, _, alias = str(link).partition(":")
            name = name.strip("/")
            alias = alias.rsplit("/", 1)[-1] or name
            try:
                out.append((self.containers.find(name), alias))
            except NotFound:
                raise NotFound(f"could not get container for {name}") from None
        return out

    def _link_hosts(self, c: Container) -> list[tuple[str, str]]:
        """The linked containers' addresses under their link aliases and names, in this
        container's /etc/hosts (as dockerd writes them on the default bridge; on a user
        network dockerd's DNS answers the alias to the linker only, which this is too)."""
        out: list[tuple[str, str]] = []
        try:
            links = self._links(c)
        except NotFound:
            return out
        mine = {ep.network_id for ep in c.endpoints.values()}
        for other, alias in links:
            eps = list(other.endpoints.values())
            shared = [ep for ep in eps if ep.network_id in mine and ep.ipv4] or [
                ep for ep in eps if ep.ipv4
            ]
            if shared:
                ip = shared[0].ipv4.split("/")[0]
                out += [(alias, ip)] + ([(other.name, ip)] if other.name != alias else [])
        return out

    def _extra_hosts(self, entries: list[str]) -> list[tuple[str, str]]:
        """--add-host NAME:IP pairs, with Docker's NAME:host-gateway resolved to the host's
        address on the default bridge (its gateway, IPv4 then IPv6), as dockerd does when
        no --host-gateway-ip is set."""
        out: list[tuple[str, str]] = []
        for entry in entries:
            name, _, ip = entry.partition(":")
            if ip != HOST_GATEWAY:
                out.append((name, ip))
                continue
            bridge = next(
                (n for n in self.networks.by_id.values() if n.name == DEFAULT_NETWORK), None
            )
            gateways = [p.gateway for p in bridge.pools if p.gateway] if bridge else []
            if not gateways:
                raise InvalidParameter("unable to derive the IP value for host-gateway")
            out += [(name, gw) for gw in sorted(gateways, key=lambda g: ":" in g)]
        return out

    def _run_spec(self, c: Container, rootfs: str | None) -> shim.RunSpec:
        p = self.containers.paths(c)
        d = self.containers.cdir(c)
        overlay = None
        view = None
        if rootfs:
            for sub in ("upper", "work", "rootfs"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            overlay = (rootfs, os.path.join(d, "upper"), os.path.join(d, "work"))
        else:
            # The host image: a tmpfs root with a read-only view of the host's programs.
            for sub in ("work", "rootfs"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            view = host_view(os.path.join(d, "work"), self.private_paths)
        env = list(c.config.get("Env") or [])
        keys = {e.split("=", 1)[0] for e in env}
        if "HOSTNAME" not in keys:
            env.append(f"HOSTNAME={c.hostname}")
        user = str(c.config.get("User") or "")
        if "HOME" not in keys and not user:
            env.append("HOME=/root")  # with -u, the shim takes it from the user's passwd entry
        cfg = c.config
        hc = c.host_config
        log_type = (hc.get("LogConfig") or {}).get("Type") or "json-file"
        max_size, max_file = log_rotation((hc.get("LogConfig") or {}).get("Config") or {})
        return shim.RunSpec(
            log="" if log_type == "none" else p["log"],
            log_max_size=max_size,
            log_max_file=max_file,
            user=user,
            group_add=[str(g) for g in hc.get("GroupAdd") or []],
            stdin=bool(cfg.get("OpenStdin")),
            tty=bool(cfg.get("Tty")),
            tty_size=self.attacher.tty_size(c) or _console_size(hc.get("ConsoleSize")),
            volumes=[
                (
                    not m.get("RW", True),
                    str(m["Destination"]),
                    str(m["Source"]),
                    str(m.get("Propagation") or ""),
                )
                for m in sorted(c.mounts, key=lambda m: str(m["Destination"]).count("/"))
                if m.get("Type") in ("bind", "volume")
            ],
            tmpfs=[
                (str(m["Destination"]), str(m.get("Mode") or ""))
                for m in c.mounts
                if m.get("Type") == "tmpfs"
            ],
            readonly_root=bool(hc.get("ReadonlyRootfs")),
            shm_size=int(hc.get("ShmSize") or 0),
            exit_file=p["exit"],
            netns=c.sandbox_key or None,
            hostname=None if is_host(c.network_mode) else c.hostname,
            rootfs=os.path.join(d, "rootfs"),
            overlay=overlay,
            host_view=view,
            binds=[
                (p["hosts"], "/etc/hosts"),
                (p["resolv"], "/etc/resolv.conf"),
                (p["hostname"], "/etc/hostname"),
            ],
            cwd=str(c.config.get("WorkingDir") or "/"),
            env=env,
            argv=[c.path, *c.args],
            security=self.containers.confiner.shim_security(c.host_config),
            cgroup=cgroups.path_for(c.id),
        )

    # -- teardown --------------------------------------------------------------------------

    async def _teardown(self, c: Container) -> None:
        """Remove the sandbox and give back every address and port the container holds."""
        cgroups.remove(c.id)  # its shim's job, unless the shim was killed
        if self.publisher is not None:
            try:
                self.publisher.unpublish(c)
            except Exception as exc:  # the sweep releases what is left
                log.warning("unpublishing ports of %s incomplete: %s", c.name, exc)
        if c.endpoints or (
            c.sandbox_key and c.sandbox_key.startswith(self.endpoints.sandboxes.dir)
        ):
            # Before anything is deleted: the embedded DNS drops the names and closes its
            # sockets in the sandbox (they would keep the namespace, and its interfaces,
            # alive after the file is gone).  This is also the undo of SandboxReady for a
            # start that fails later: its undo step is this teardown.
            self.events.publish(SandboxRemoving(c))
            try:
                await self.endpoints.destroy_sandbox(c)
            except Exception as exc:  # the reconciler removes what is left
                log.warning("sandbox teardown of %s incomplete: %s", c.name, exc)
        await self.endpoints.release_global(c, list(c.endpoints.values()))
        async with self.lock:
            with self.containers.store.transaction():
                for ep in c.endpoints.values():
                    self.endpoints.release(ep)
                c.endpoints = {}
                c.sandbox_key = ""
                c.next_if = 0
                c.gateway = ""
                self.containers.store.put("container", c.id, c.name, c.to_doc())

    # -- exit ------------------------------------------------------------------------------

    def _read_exit(self, c: Container) -> tuple[int, float] | None:
        try:
            with open(self.containers.paths(c)["exit"]) as f:
                code, ns = f.read().split()
            return int(code), int(ns) / 1e9
        except (OSError, ValueError):
            return None

    async def _finish(self, cid: str) -> None:
        c = self.containers.by_id.get(cid)
        if c is None or not c.state.running:
            return
        result = self._read_exit(c)
        if result is None:
            run = self.supervisor.run_of(c) or Run()
            status = self.supervisor.exit_status(c, run)
            if status is False:
                # The shim is gone but the container runs on: wait for the container itself,
                # and remember there is no shim (its old pid may be anyone's after a restart).
                c.state.shim_pid = 0
                self.containers.save(c)
                self.supervisor.watch(c, c.state.pid)
                return
            if isinstance(status, int) and not isinstance(status, bool):
                result = (status, time.time())
            else:
                result = (255, time.time())
                c.state.error = "the container's tether-shim ended without recording an exit status"
        code, finished = result
        async with self.containers.lock(c):
            run = self.supervisor.forget(c)
            c.state.status = "exited"
            c.state.paused = False
            c.state.exit_code = code
            c.state.pid = 0
            c.state.shim_pid = 0
            c.state.finished_at = iso_utc(finished)
            await self._teardown(c)
            self.containers.save(c)
        run.finished.set()
        log.info("container exited name=%s id=%s code=%d", c.name, c.short_id, code)
        self.events.publish(ContainerStopped(c))
        self._resolve_waiters(c, ("not-running", "next-exit"), code)
        if self._should_restart(c, code):
            self._schedule_restart(c)
            return
        if (
            c.host_config.get("AutoRemove")
            and c.state.status != "removing"
            and c.id in self.containers.by_id
        ):
            try:
                await self._remove(c, volumes=True)  # dockerd's auto-remove: RemoveVolume
            except Conflict:  # started again meanwhile: it stays
                pass

    # -- stop, kill, restart, remove, wait -------------------------------------------------

    async def stop(self, term: str, timeout: float | None) -> Container:
        c = self.containers.find(term)
        if not c.state.running:
            if self._cancel_restart(c):  # stopping a restarting container ends its restarts
                c.state.manually_stopped = True
                self.containers.save(c)
                return c
            raise NotModified("container already stopped")
        c.state.manually_stopped = True
        await self._stop(c, timeout)
        return c

    async def _stop(self, c: Container, timeout: float | None) -> None:
        run = self.supervisor.run_of(c)
        if run is None:
            return
        if timeout is None and c.config.get("StopTimeout") is not None:
            timeout = float(c.config["StopTimeout"])  # docker run --stop-timeout
        t = 10.0 if timeout is None or timeout < 0 else float(timeout)
        sig = parse_signal(c.config.get("StopSignal"), signal.SIGTERM)
        self._thaw(c)
        self.supervisor.signal(c, sig)
        try:
            await asyncio.wait_for(run.finished.wait(), t)
        except TimeoutError:
            self.supervisor.signal(c, signal.SIGKILL)
            await run.finished.wait()

    async def kill(self, term: str, sig: str | None) -> Container:
        c = self.containers.find(term)
        number = parse_signal(sig)
        if not c.state.running:
            raise Conflict(f"Cannot kill container: {term}: Container {c.id} is not running")
        c.state.manually_stopped = True  # as dockerd: no restart after a kill
        run = self.supervisor.run_of(c)
        self._thaw(c)
        self.supervisor.signal(c, number)
        if number == signal.SIGKILL and run is not None:
            # As dockerd: a SIGKILL returns once the container has exited.
            try:
                await asyncio.wait_for(run.finished.wait(), 10)
            except TimeoutError:
                pass
        return c

    async def restart(self, term: str, timeout: float | None) -> Container:
        c = self.containers.find(term)
        self._cancel_restart(c)
        if c.state.running:
            c.state.manually_stopped = True  # no policy restart in between
            await self._stop(c, timeout)
        async with self.containers.lock(c):
            if not c.state.running:
                c.state.manually_stopped = False
                await self._start(c)
        return c

    async def remove(self, term: str, force: bool, volumes: bool = False) -> None:
        await self._remove(self.containers.find(term), force, volumes)

    async def _remove(self, c: Container, force: bool = False, volumes: bool = False) -> None:
        """Remove a container; a running one is refused, or with `force` killed first;
        with `volumes` (rm -v, --rm) its anonymous volumes too.

        Whether it runs is decided under the container's lock, where a start that got the
        lock first has made it running: checked before waiting, a remove would tear the
        sandbox from under a container that goes on running, forgotten.
        """
        if force or not c.state.running:
            self._cancel_restart(c)
            c.state.manually_stopped = True
        elif c.id in self.restarting:
            raise Conflict(
                f"You cannot remove a restarting container {c.id}. Stop the container "
                "before attempting removal or force remove"
            )
        while True:
            async with self.containers.lock(c):
                if c.id not in self.containers.by_id:
                    return
                run = self.supervisor.run_of(c) if c.state.running else None
                if c.state.running and not force:
                    raise Conflict(
                        f"You cannot remove a running container {c.id}. Stop the container "
                        "before attempting removal or force remove"
                    )
                if run is None:
                    if c.state.running:  # nothing watches it: kill it by its pid, if still it
                        self.supervisor.signal(c, signal.SIGKILL)
                    c.state.status = "removing"
                    await self._teardown(c)
                    shutil.rmtree(self.containers.cdir(c), ignore_errors=True)
                    self.containers.forget(c)
                    self.attacher.forget(c)
                    if cgroups.existing(c.id):
                        # Its last processes are still being reaped (a pid namespace takes
                        # a moment, longer under load than the shim's own second of tries):
                        # once the container's directory is gone nothing else would look.
                        task = asyncio.get_running_loop().create_task(_reap_cgroup(c.id))
                        self._reaping.add(task)
                        task.add_done_callback(self._reaping.discard)
                    break
                # Killed here, removed by this call (not by --rm's auto-remove).
                c.host_config["AutoRemove"] = False
                self._thaw(c)
                self.supervisor.signal(c, signal.SIGKILL)
            # _finish records the exit under the lock: wait for it outside, then look again.
            await run.finished.wait()
        if volumes:
            self._remove_anonymous_volumes(c)
        log.info("container removed name=%s id=%s", c.name, c.short_id)
        self.events.publish(ContainerDestroyed(c))
        self._resolve_waiters(c, ("not-running", "next-exit", "removed"), c.state.exit_code)

    def _remove_anonymous_volumes(self, c: Container) -> None:
        """dockerd's removeMountPoints with rm: the removed container's anonymous volumes
        go, data and all; named ones stay, and so does one another container still mounts
        (--volumes-from): not an error."""
        vols = self.containers.volumes
        for m in c.mounts:
            name = str(m.get("Name") or "") if m.get("Type") == "volume" else ""
            vol = vols.by_name.get(name)
            if vol is None or ANONYMOUS not in (vol.get("Labels") or {}):
                continue
            try:
                vols.remove(name, self.containers.by_id.values())
            except Conflict:
                pass

    # -- pause, rename, update --------------------------------------------------------------

    def _freeze(self, c: Container, frozen: bool) -> None:
        path = cgroups.path_for(c.id)
        if path is None:
            raise SystemFailure("pause needs a cgroup2 hierarchy (cgroup.freeze)")
        try:
            with open(os.path.join(path, "cgroup.freeze"), "w") as f:
                f.write("1" if frozen else "0")
        except OSError as exc:
            raise SystemFailure(f"cannot {'pause' if frozen else 'unpause'}: {exc}") from None
        c.state.paused = frozen
        self.containers.save(c)

    async def pause(self, term: str) -> Container:
        c = self.containers.find(term)
        async with self.containers.lock(c):
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is already paused")
            self._freeze(c, True)
        log.info("container paused name=%s id=%s", c.name, c.short_id)
        return c

    async def unpause(self, term: str) -> Container:
        c = self.containers.find(term)
        async with self.containers.lock(c):
            if not c.state.running or not c.state.paused:
                raise Conflict(f"Container {c.id} is not paused")
            self._freeze(c, False)
        log.info("container unpaused name=%s id=%s", c.name, c.short_id)
        return c

    def _thaw(self, c: Container) -> None:
        """A frozen container cannot act on a signal: stop, kill and rm thaw it first."""
        if c.state.paused and c.state.running:
            try:
                self._freeze(c, False)
            except SystemFailure:
                pass

    async def rename(self, term: str, new: str) -> Container:
        from tether.engine import names

        c = self.containers.find(term)
        name = names.check(new.lstrip("/")) if new else ""
        if not name:
            raise InvalidParameter("Neither old nor new names may be empty")
        if name == c.name:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        for other in self.containers.by_id.values():
            if other.name == name:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able '
                    "to reuse that name."
                )
        async with self.containers.lock(c):
            old = c.name
            c.name = name
            self.containers.save(c)
        log.info("container renamed id=%s from=%s to=%s", c.short_id, old, name)
        if c.state.running:
            # Its names in the embedded DNS follow (the followers re-read the container).
            self.events.publish(ContainerStarted(c, adopted=True))
        return c

    async def update(self, term: str, restart_policy: dict[str, object] | None) -> Container:
        c = self.containers.find(term)
        if restart_policy is not None:
            if restart_policy.get("Name") not in ("", "no", None) and c.host_config.get(
                "AutoRemove"
            ):
                raise InvalidParameter(
                    "Cannot update restart policy: can't create 'AutoRemove' container with "
                    "restart policy"
                )
            async with self.containers.lock(c):
                c.host_config["RestartPolicy"] = {
                    "Name": restart_policy.get("Name") or "no",
                    "MaximumRetryCount": restart_policy.get("MaximumRetryCount") or 0,
                }
                self.containers.save(c)
        return c

    # -- restart policies ----------------------------------------------------------------

    def _should_restart(self, c: Container, code: int) -> bool:
        """dockerd's RestartManager.ShouldRestart for an exit with `code`."""
        if c.state.manually_stopped or c.id not in self.containers.by_id:
            return False
        if c.state.status == "removing" or c.host_config.get("AutoRemove"):
            return False
        policy = c.host_config.get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure":
            limit = int(policy.get("MaximumRetryCount") or 0)
            return code != 0 and (limit == 0 or c.restart_count < limit)
        return False

    def _schedule_restart(self, c: Container, delay: float | None = None) -> None:
        """Start it again after dockerd's backoff: 100 ms, doubling up to a minute, back to
        100 ms once a run lasted 10 s."""
        if delay is None:
            ran = epoch_of(c.state.finished_at) - epoch_of(c.state.started_at)
            delay = 0.1 if ran >= 10 else self._backoff.get(c.id, 0.1)
            self._backoff[c.id] = min(delay * 2, 60.0)
        self._cancel_restart(c)
        self.restarting[c.id] = asyncio.get_running_loop().create_task(self._auto_restart(c, delay))
        c.state.status = "restarting"
        self.containers.save(c)
        log.info("container restarting name=%s id=%s in=%.1fs", c.name, c.short_id, delay)

    def _cancel_restart(self, c: Container) -> bool:
        task = self.restarting.pop(c.id, None)
        if c.state.status == "restarting":
            c.state.status = "exited"
        if task is None:
            return False
        if task is not asyncio.current_task():
            task.cancel()
        return True

    async def _auto_restart(self, c: Container, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self.containers.lock(c):
            if self.restarting.get(c.id) is not asyncio.current_task():
                return
            del self.restarting[c.id]
            if c.state.status == "restarting":
                c.state.status = "exited"
            if c.id not in self.containers.by_id or c.state.running or c.state.manually_stopped:
                return
            c.restart_count += 1
            try:
                await self._start(c)
            except TetherError as exc:
                log.warning("restart of %s failed: %s", c.name, exc.message)
                if self._should_restart(c, c.state.exit_code):
                    self._schedule_restart(c)

    def restart_wanted_at_start(self) -> None:
        """At the daemon's start: containers whose policy wants them running (always,
        unless-stopped not stopped by hand) that are not, start again."""
        for c in list(self.containers.by_id.values()):
            policy = (c.host_config.get("RestartPolicy") or {}).get("Name") or "no"
            if (
                not c.state.running
                and c.state.status != "created"
                and not c.state.manually_stopped
                and policy in ("always", "unless-stopped")
                and c.id not in self.restarting
            ):
                self._schedule_restart(c, 0.0)

    def _resolve_waiters(self, c: Container, conditions: tuple[str, ...], code: int) -> None:
        keep = []
        for cond, fut in self._waiters.get(c.id, []):
            if cond in conditions:
                if not fut.done():
                    fut.set_result(code)
            else:
                keep.append((cond, fut))
        if keep:
            self._waiters[c.id] = keep
        else:
            self._waiters.pop(c.id, None)

    def waiter(self, term: str, condition: str) -> asyncio.Future[int]:
        """A future for Docker's wait conditions: not-running (default), next-exit, removed."""
        c = self.containers.find(term)
        condition = condition or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidParameter(f"invalid condition: {condition!r}")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if condition == "not-running" and not c.state.running:
            fut.set_result(c.state.exit_code)
        else:
            self._waiters.setdefault(c.id, []).append((condition, fut))
        return fut

    # -- connect, disconnect ---------------------------------------------------------------

    async def connect(self, net_term: str, term: str, body: EndpointSettings) -> None:
        net = self.networks.find(net_term)
        c = self.containers.find(term)
        mode = c.network_mode
        if not self.endpoints.has_endpoints(net):
            raise Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        if is_host(mode) or is_container(mode):
            raise Forbidden(
                "container sharing network namespace with another container or host cannot be connected to any other network"
            )
        if is_none(mode):
            raise Forbidden(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode"
            )
        cfg = endpoint_config(body, "")
        if net.name in c.networks:
            raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
        if cfg.aliases and not user_defined(net):
            raise Forbidden(
                "network-scoped alias is supported only for containers in user defined networks"
            )
        check_endpoint_rules(net, cfg)
        cfg.network_id = net.id
        async with self.containers.lock(c):
            if net.name in c.networks:
                raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
            if not c.state.running:
                c.networks[net.name] = cfg
                self.containers.save(c)
                return
            async with Undo() as undo:
                ep = await self.endpoints.connect(c, net, cfg)

                async def unconnect() -> None:
                    await self.endpoints.disconnect(c, net.name)
                    await self._retarget_ports(c)
                    self._write_files(c)

                # The files and the ports follow the endpoint; if they cannot, the endpoint
                # goes too: a connect is all or nothing, as a start is.
                undo.push(unconnect, "connected endpoint")
                self._write_files(c)
                await self._retarget_ports(c)
                self.containers.save(c)
        log.info(
            "container connected name=%s network=%s address=%s",
            c.name,
            net.name,
            ep.ipv4 or ep.ipv6,
        )
        self.events.publish(EndpointJoined(c, net, ep))

    async def disconnect(self, net_term: str, term: str, force: bool) -> None:
        c = self.containers.find(term)
        try:
            net: Network | None = self.networks.find(net_term)
        except NotFound:
            if not force:
                raise
            net = None
        if net is not None and not self.endpoints.has_endpoints(net) and net.name in c.networks:
            raise Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        name = net.name if net is not None else net_term
        async with self.containers.lock(c):
            if name not in c.networks:
                raise Forbidden(f"container {c.id} is not connected to network {name}")
            ep = await self.endpoints.disconnect(c, name)
            log.info("container disconnected name=%s network=%s", c.name, name)
            # Published as soon as the endpoint is gone, so its name goes with it even if
            # the files below cannot be rewritten.
            self.events.publish(EndpointLeft(c, net, ep))
            if c.state.running and c.sandbox_key:
                self._write_files(c)
                await self._retarget_ports(c)
                self.containers.save(c)

    # -- restore after a daemon restart ------------------------------------------------------

    async def restore(self) -> None:
        """Adopt containers that kept running; finish or clean up the rest.

        Also handles a start cut short by a crash after the shim was spawned: if the shim and
        its container are alive, the start did complete in the kernel and is adopted; a shim
        whose container the store no longer knows is killed.
        """
        shims = self.supervisor.find_shims()
        for c in list(self.containers.by_id.values()):
            shim_pid = shims.pop(c.id, 0)
            if c.state.running:
                if c.state.shim_pid and c.state.shim_pid == shim_pid:
                    await self._adopt(c, "adopted")
                    continue
                if not shim_pid and self.supervisor.runs_on(c):
                    # Its shim died (while tetherd was away, or before): the container runs
                    # on without one, and is watched by its own pid from now on.
                    c.state.shim_pid = 0
                    await self._adopt(c, "adopted without its tether-shim")
                    continue
                self.supervisor.runs[c.id] = Run()
                await self._finish(c.id)
                continue
            if c.state.status == "removing":
                kill_shim_tree(shim_pid)
                await self._remove(c, volumes=bool(c.host_config.get("AutoRemove")))
                continue
            child = first_child(shim_pid) if shim_pid else 0
            if child and (c.endpoints or c.sandbox_key or is_host(c.network_mode)):
                c.state = running_state(child, shim_pid)
                # The crash came before the ports were recorded with the container.
                await self._adopt(c, "start completed after restart", republish=True)
                continue
            if shim_pid:
                kill_shim_tree(shim_pid)
            if c.endpoints or c.sandbox_key:
                # A start or a stop was cut short: give everything back.
                await self._teardown(c)
        for cid, pid in shims.items():
            log.warning("killing a tether-shim of an unknown container id=%s pid=%d", cid[:12], pid)
            kill_shim_tree(pid)
        if self.publisher is not None:
            self.publisher.restored()  # the port relay lets go of ports no one has now
        self.restart_wanted_at_start()

    async def _adopt(self, c: Container, how: str, republish: bool = False) -> None:
        """Take a container that runs on into this daemon's care, as a start leaves one:
        watched (its shim, or its own pid without one), its endpoints repaired, its published
        ports held and wired (`republish`: allocated again), its state saved, and then
        ContainerStarted, which gives it its names and DNS sockets again."""
        self.supervisor.watch(c, None if c.state.shim_pid else c.state.pid)
        await self.endpoints.repair(c)
        if self.publisher is not None:
            if republish:
                self.publisher.unpublish(c)
                await self._publish(c)
            else:
                self.publisher.restore(c)
                await self.publisher.wire_proxies(c)
        self.containers.save(c)
        log.info("container %s name=%s id=%s pid=%d", how, c.name, c.short_id, c.state.pid)
        self.events.publish(ContainerStarted(c, adopted=True))

    def reap_orphans(self) -> int:
        """Zombies re-parented to tetherd that no container's exit path waits for."""
        watched = {c.state.pid for c in self.containers.by_id.values() if c.state.pid}
        return self.supervisor.reap_orphans(watched)


def _console_size(value: object) -> tuple[int, int] | None:
    """HostConfig.ConsoleSize [rows, columns] (API 1.42+), 0 0 when not given."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    return None


def _write_in_place(path: str, text: str) -> None:
    """Rewrite a file without replacing it: a running container has it bind-mounted by inode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


async def _reap_cgroup(container_id: str, within: float = 30.0) -> None:
    """Remove a removed container's cgroup as soon as its last process is gone."""
    deadline = time.monotonic() + within
    while cgroups.existing(container_id) and time.monotonic() < deadline:
        cgroups.remove(container_id)
        await asyncio.sleep(0.1)
