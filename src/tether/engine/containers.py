"""Containers: create, start, stop, kill, remove, wait, connect, disconnect, and live restore.

Order of every start: resolve and check (nothing changed yet) -> allocate addresses and record
the endpoints in the store, in one transaction -> build the sandbox in the kernel -> start the
process -> record it running.  A failure at any step undoes the steps before it; a crash at
any step is undone (or completed) by `restore` at the next start of the daemon, because the
store always says which kernel objects a container may own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.api.containers import ContainerCreate, exposed_ports, parse_signal, port_bindings
from tether.api.decode import strslice
from tether.api.networks import EndpointSettings
from tether.cbuild import CACHE_DIR
from tether.drivers.veth import host_ifname, mac_from_ipv4
from tether.engine import container_views as views
from tether.engine import names
from tether.engine.filters import Filters, check_keys, label_match, regex_match
from tether.engine.netcreate import now_iso
from tether.engine.networks import Networks
from tether.engine.sandbox import Sandboxes, gateway_endpoint
from tether.errors import (
    Conflict,
    Forbidden,
    InvalidParameter,
    NotFound,
    NotModified,
    SystemFailure,
    TetherError,
)
from tether.ipam.manager import Ipam
from tether.kernel.fds import lift
from tether.kernel.rtnl import Rtnl
from tether.model import Container, ContainerState, Endpoint, EndpointConfig, Network
from tether.runtime import files, shim
from tether.runtime.confine import Confiner
from tether.runtime.images import DEFAULT_PATH, ImageStore, host_view
from tether.store import records, statedir
from tether.store.sqlite import Store
from tether.tasks import background

if TYPE_CHECKING:
    from tether.firewall.publish import Publisher

log = logging.getLogger("tether.containers")

NOT_USER_DEFINED = ("default", "bridge", "host", "none")
CONTAINER_FILTERS = {"id", "name", "status", "label", "network", "ancestor", "exited"}


def running_state(pid: int, shim_pid: int) -> ContainerState:
    """A container whose process `pid` (child of `shim_pid`) runs, as of now."""
    return ContainerState(
        status="running",
        pid=pid,
        pid_start=proc_start_time(pid),
        shim_pid=shim_pid,
        started_at=now_iso(),
    )


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: tells our process from a later one with the same pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    return int(data[data.rindex(b")") + 2 :].split()[19])


class Run:
    """What the daemon holds for one running container, in memory only."""

    def __init__(self) -> None:
        self.pidfd: int | None = None  # the container's pid 1, for signals
        self.watch_fd: int | None = None  # the process whose exit we wait for
        self.watched = 0  # ...and its pid
        # The container's exit code as tetherd itself reaped it: its shim was killed while
        # tetherd ran, so its pid 1 was re-parented to tetherd (a child subreaper).
        self.status: int | None = None
        # tetherd sent SIGKILL to pid 1 (stop's timeout, kill, rm -f).  After a daemon
        # restart a container whose shim is gone has init as its parent and its status is
        # lost; SIGKILL cannot be caught, so its exit code is still known: 137.
        self.killed = False
        self.finished = asyncio.Event()


class Containers:
    def __init__(
        self,
        store: Store,
        ipam: Ipam,
        networks: Networks,
        images: ImageStore,
        host: Rtnl,
        root: str,
        netns_dir: str,
        lock: asyncio.Lock,
    ) -> None:
        self.store = store
        self.ipam = ipam
        self.networks = networks
        self.images = images
        self.host = host
        self.dir = os.path.join(root, "containers")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)  # see store/statedir.py
        self.sandboxes = Sandboxes(host, netns_dir)
        # Capabilities, seccomp, masked paths: checked at create, applied by the shim.
        self.confiner = Confiner(root)
        # tether's own paths, kept out of the built-in host image's view.
        self.private_paths = [root, os.path.dirname(netns_dir), CACHE_DIR]
        self.lock = lock  # the daemon's lock: allocations and network changes
        self.by_id: dict[str, Container] = {}
        self.runs: dict[str, Run] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiters: dict[str, list[tuple[str, asyncio.Future[int]]]] = {}
        self.shim_path = ""
        # Published ports (set by the daemon; None: no port publishing at all).
        self.publisher: Publisher | None = None
        self.host_resolv_path = "/etc/resolv.conf"
        # Called with (container, event) on start, stop, connect, disconnect, destroy: the
        # embedded DNS and the firewall follow these.
        self.listeners: list[Callable[[Container, str], None]] = []
        # Called once the sandbox is built, before the container's process starts.
        self.before_process_start: list[Callable[[Container], None]] = []
        networks.containers_of = self.network_containers

    # -- helpers ---------------------------------------------------------------------------

    def _lock(self, c: Container) -> asyncio.Lock:
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

    def _notify(self, c: Container, event: str) -> None:
        for fn in self.listeners:
            try:
                fn(c, event)
            except Exception:
                log.exception("listener failed on %s of %s", event, c.name)

    def network_of(self, net_id: str) -> Network | None:
        return self.networks.by_id.get(net_id)

    def load(self) -> None:
        loaded = records.parse_all("container", self.store.load("container"), records.container)
        self.by_id = {c.id: c for c in loaded}

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
        taken = {c.name for c in self.by_id.values()}
        if name:
            name = names.check(name)
            for other in self.by_id.values():
                if other.name == name:
                    raise Conflict(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{other.id}". You have to remove (or rename) that container to be able to reuse that name.'
                    )
        else:
            name = names.generate(taken)
        hc = req.host
        endpoints_cfg = req.endpoints
        mode = hc.NetworkMode or "default"
        if len(endpoints_cfg) > 1:
            raise InvalidParameter(
                "Container cannot be connected to network endpoints: " + ", ".join(endpoints_cfg)
            )
        if mode.startswith("container:") and (hc.PortBindings or hc.PublishAllPorts):
            raise InvalidParameter(
                "conflicting options: port publishing and the container type network mode"
            )
        if mode.startswith("container:") and req.ExposedPorts:
            raise InvalidParameter(
                "conflicting options: port exposing and the container type network mode"
            )

        entrypoint = req.entrypoint
        cmd = req.cmd
        if entrypoint is None:
            entrypoint = img.config.get("Entrypoint")
            if not cmd:
                cmd = img.config.get("Cmd")
        argv = [*(entrypoint or []), *(cmd or [])]
        if not argv:
            raise InvalidParameter("No command specified")

        env = _merge_env(img.config.get("Env") or [], req.Env or [])
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, DEFAULT_PATH)
        mac = req.MacAddress or ""
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

        cid = secrets.token_hex(32)
        exposed = dict(img.config.get("ExposedPorts") or {})
        exposed.update(exposed_ports(req.ExposedPorts))
        config = {
            "Hostname": req.Hostname or cid[:12],
            "Domainname": req.Domainname or "",
            "User": req.User or "",
            "AttachStdin": bool(req.AttachStdin),
            "AttachStdout": req.AttachStdout is not False,
            "AttachStderr": req.AttachStderr is not False,
            "ExposedPorts": exposed or None,
            "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False,
            "Env": env,
            "Cmd": cmd,
            "Image": image_ref,
            "Volumes": None,
            "WorkingDir": req.WorkingDir or img.config.get("WorkingDir") or "",
            "Entrypoint": entrypoint,
            "OnBuild": None,
            "Labels": dict(req.Labels or {}),
        }
        if mac:
            config["MacAddress"] = mac
        if req.StopTimeout is not None:
            config["StopTimeout"] = req.StopTimeout
        stop_signal = req.StopSignal or img.config.get("StopSignal")
        if stop_signal:
            parse_signal(stop_signal)
            config["StopSignal"] = stop_signal
        host_config = {
            "NetworkMode": mode,
            "PortBindings": port_bindings(hc.PortBindings),
            "PublishAllPorts": bool(hc.PublishAllPorts),
            "Dns": list(hc.Dns or []),
            "DnsOptions": list(hc.DnsOptions or []),
            "DnsSearch": list(hc.DnsSearch or []),
            "ExtraHosts": list(hc.ExtraHosts or []) or None,
            "AutoRemove": bool(hc.AutoRemove),
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "Links": hc.Links,
            **security_fields,
        }

        c = Container(
            id=cid,
            name=name,
            created=now_iso(),
            image=image_ref,
            image_id=img.id,
            path=argv[0],
            args=argv[1:],
            config=config,
            host_config=host_config,
        )
        # The one network the container starts on.
        none = EndpointSettings()
        if mode in ("default", "bridge"):
            target, ecfg = (
                "bridge",
                endpoints_cfg.get("bridge") or endpoints_cfg.get("default") or none,
            )
        elif mode.startswith("container:"):
            target, ecfg = "", none
        else:
            target = mode
            ecfg = endpoints_cfg.get(mode) or next(iter(endpoints_cfg.values()), none)
        if target:
            cfg = _endpoint_config(ecfg, mac)
            if cfg.aliases and target in NOT_USER_DEFINED:
                raise InvalidParameter(
                    "network-scoped alias is supported only for containers in user defined networks"
                )
            try:
                net = self.networks.find(target)
                cfg.network_id = net.id
                target = net.name
            except NotFound:
                pass  # checked at start, as Docker does: the container stays Created
            c.networks[target] = cfg
        os.makedirs(self.cdir(c), mode=0o700, exist_ok=True)
        self.by_id[c.id] = c
        self.save(c)
        log.info(
            "container created name=%s id=%s image=%s network=%s",
            c.name,
            c.short_id,
            image_ref,
            mode,
        )
        return c

    # -- start -----------------------------------------------------------------------------

    async def start(self, term: str) -> Container:
        c = self.find(term)
        async with self._lock(c):
            if c.state.running:
                raise NotModified("container already started")
            if c.state.status == "removing":
                raise Conflict(f"container {c.id} is marked for removal and cannot be started")
            await self._start(c)
        return c

    def _resolve(self, c: Container) -> list[tuple[str, EndpointConfig, Network]]:
        """The networks to attach, resolved and checked (no changes made)."""
        plan: list[tuple[str, EndpointConfig, Network]] = []
        renamed: dict[str, EndpointConfig] = {}
        for name, cfg in c.networks.items():
            net = self.networks.by_id.get(cfg.network_id) if cfg.network_id else None
            if net is None:
                try:
                    net = self.networks.find(name)
                except NotFound:
                    raise NotFound(f"network {name} not found") from None
            if net.driver in ("host", "null"):
                renamed[net.name] = cfg
                continue
            _check_endpoint_rules(net, cfg)
            cfg.network_id = net.id
            renamed[net.name] = cfg
            plan.append((net.name, cfg, net))
        c.networks = renamed
        return plan

    async def _start(self, c: Container) -> None:
        img = self.images.by_id.get(c.image_id)
        if img is None:
            raise NotFound(f"No such image: {c.image}")
        mode = c.network_mode
        join_path: str | None = None
        if mode.startswith("container:"):
            other = self.find(mode.split(":", 1)[1])
            if not other.state.running:
                raise Conflict(f"cannot join network of a non running container: {other.id}")
            join_path = other.sandbox_key or None
        plan = (
            self._resolve(c)
            if mode not in ("host", "none") and not mode.startswith("container:")
            else []
        )

        # Allocate and record, in one transaction.
        async with self.lock:
            allocated: list[tuple[str, str]] = []
            try:
                with self.store.transaction():
                    c.next_if = 0
                    c.gateway = ""
                    c.endpoints = {}
                    for name, cfg, net in plan:
                        ep = self._allocate(c, net, cfg, allocated)
                        c.endpoints[name] = ep
                    if mode == "none" or plan:
                        c.sandbox_key = self.sandboxes.path_for(c)
                    elif join_path:
                        c.sandbox_key = join_path
                    else:
                        c.sandbox_key = ""
                    c.state.error = ""
                    self.store.put("container", c.id, c.name, c.to_doc())
            except BaseException:
                for net_id, addr in allocated:
                    self.ipam.forget_memory(net_id, addr)
                c.endpoints = {}
                c.sandbox_key = ""
                raise

        try:
            await self._build_sandbox(c, plan)
            self._write_files(c)
            await self._publish(c)
            for prepare in self.before_process_start:
                prepare(c)
            spec = self._run_spec(c, img.builtin, self.images.rootfs(img))
            try:
                os.unlink(self.paths(c)["exit"])
            except FileNotFoundError:
                pass
            statedir.private_file(self.paths(c)["log"])  # the shim appends to it
            if not self.shim_path:
                self.shim_path = shim.ensure_built()
            shim_pid, pid = await shim.start(self.shim_path, spec)
        except BaseException as exc:
            message = str(exc.message if isinstance(exc, TetherError) else exc)
            code = (
                127
                if "executable file not found" in message
                else 126
                if "permission denied" in message.lower()
                else 128
            )
            await self._teardown(c)
            c.state.error = (
                f"OCI runtime create failed: unable to start container process: {message}: unknown"
                if isinstance(exc, shim.StartError)
                else message
            )
            c.state.exit_code = code
            self.save(c)
            log.warning(
                "container start failed name=%s id=%s error=%r", c.name, c.short_id, c.state.error
            )
            if isinstance(exc, shim.StartError):
                raise SystemFailure(c.state.error) from None
            raise
        c.state = running_state(pid, shim_pid)
        self.save(c)
        self._watch(c)
        log.info(
            "container started name=%s id=%s pid=%d endpoints=%s",
            c.name,
            c.short_id,
            pid,
            ",".join(f"{n}:{ep.ipv4 or ep.ipv6}" for n, ep in c.endpoints.items()) or "-",
        )
        self._notify(c, "start")

    def _allocate(
        self, c: Container, net: Network, cfg: EndpointConfig, allocated: list[tuple[str, str]]
    ) -> Endpoint:
        ep_id = secrets.token_hex(32)
        ep = Endpoint(
            id=ep_id,
            network_id=net.id,
            ifname=f"eth{c.next_if}",
            host_ifname=host_ifname(ep_id),
            mac="",
        )
        c.next_if += 1
        v4 = net.pools_of(4)
        if v4:
            addr = self.ipam.request(net, 4, cfg.ipv4 or None, ep_id)
            allocated.append((net.id, str(addr)))
            ep.ipv4 = f"{addr}/{v4[0].prefixlen}"
            ep.gateway4 = v4[0].gateway
        v6 = net.pools_of(6)
        if v6 and net.enable_ipv6:
            addr6 = self.ipam.request(net, 6, cfg.ipv6 or None, ep_id)
            allocated.append((net.id, str(addr6)))
            ep.ipv6 = f"{addr6}/{v6[0].prefixlen}"
            ep.gateway6 = v6[0].gateway
        ep.mac = cfg.mac or (mac_from_ipv4(ep.ipv4.split("/")[0]) if ep.ipv4 else _random_mac())
        return ep

    def _port_target(self, c: Container) -> tuple[str, str]:
        """(container address, endpoint id) that published ports lead to: the gateway endpoint's.

        As in Docker, ports are programmed on the endpoint that has external connectivity;
        a container whose gateway is on an --internal network publishes nothing (silently).
        """
        gw = gateway_endpoint(c, self.network_of)
        if gw is None or not gw.ipv4:
            return "", ""
        net = self.network_of(gw.network_id)
        if net is None or net.internal:
            return "", ""
        return gw.ipv4.split("/")[0], gw.id

    async def _publish(self, c: Container) -> None:
        c.ports = []
        if (
            self.publisher is None
            or c.network_mode in ("host", "none")
            or c.network_mode.startswith("container:")
        ):
            return
        target, ep_id = self._port_target(c)
        if not target:
            return
        async with self.lock:
            c.ports = self.publisher.publish(c, target, ep_id)
        await self.publisher.wire_proxies(c)

    async def _retarget_ports(self, c: Container) -> None:
        if self.publisher is None or not c.ports:
            return
        target, _ = self._port_target(c)
        if target != c.ports[0].target_ip:
            self.publisher.retarget(c, target)
            await self.publisher.wire_proxies(c)

    async def _build_sandbox(
        self, c: Container, plan: list[tuple[str, EndpointConfig, Network]]
    ) -> None:
        if not c.sandbox_key or not c.sandbox_key.startswith(self.sandboxes.dir):
            return
        await self.sandboxes.create(c)
        if not plan:
            return
        inner = self.sandboxes.open(c)
        try:
            for name, _cfg, net in plan:
                await self.sandboxes.attach(c, net, c.endpoints[name], inner)
            await self.sandboxes.set_gateway(c, inner, gateway_endpoint(c, self.network_of))
        finally:
            inner.close()

    def _embedded_dns(self, c: Container) -> bool:
        for ep in c.endpoints.values():
            net = self.network_of(ep.network_id)
            if views.user_defined(net):
                return True
        return False

    def _write_files(self, c: Container) -> None:
        p = self.paths(c)
        mode = c.network_mode
        try:
            with open(self.host_resolv_path) as f:
                host_resolv = f.read()
        except OSError:
            host_resolv = ""
        hc = c.host_config
        extra = [(h.split(":", 1)[0], h.split(":", 1)[1]) for h in hc.get("ExtraHosts") or []]
        if mode == "host":
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
                embedded=self._embedded_dns(c),
            )
        c.dns_upstreams = servers
        host_name = os.uname().nodename if mode == "host" else c.hostname
        _write_in_place(p["hosts"], hosts_text)
        _write_in_place(p["resolv"], resolv_text)
        _write_in_place(p["hostname"], files.hostname_file(host_name))

    def _run_spec(self, c: Container, host_image: bool, rootfs: str | None) -> shim.RunSpec:
        p = self.paths(c)
        d = self.cdir(c)
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
        if "HOME" not in keys:
            env.append("HOME=/root")
        return shim.RunSpec(
            log=p["log"],
            exit_file=p["exit"],
            netns=c.sandbox_key or None,
            hostname=None if c.network_mode == "host" else c.hostname,
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
            security=self.confiner.shim_security(c.host_config),
        )

    # -- teardown --------------------------------------------------------------------------

    async def _teardown(self, c: Container) -> None:
        """Remove the sandbox and give back every address and port the container holds."""
        if self.publisher is not None:
            try:
                self.publisher.unpublish(c)
            except Exception as exc:  # the sweep releases what is left
                log.warning("unpublishing ports of %s incomplete: %s", c.name, exc)
        if c.endpoints or (c.sandbox_key and c.sandbox_key.startswith(self.sandboxes.dir)):
            try:
                await self.sandboxes.destroy(c)
            except Exception as exc:  # the reconciler removes what is left
                log.warning("sandbox teardown of %s incomplete: %s", c.name, exc)
        async with self.lock:
            with self.store.transaction():
                for ep in c.endpoints.values():
                    self.ipam.release_owner(ep.id)
                c.endpoints = {}
                c.sandbox_key = ""
                c.next_if = 0
                c.gateway = ""
                self.store.put("container", c.id, c.name, c.to_doc())

    # -- exit ------------------------------------------------------------------------------

    def _watch(self, c: Container, pid: int | None = None) -> None:
        """Be told when the shim (or, without one, the container process) ends."""
        run = self.runs.setdefault(c.id, Run())
        if run.pidfd is None and c.state.pid:
            try:
                run.pidfd = lift(os.pidfd_open(c.state.pid))
            except ProcessLookupError:
                run.pidfd = None
        target = pid or c.state.shim_pid
        loop = asyncio.get_running_loop()
        try:
            fd = lift(os.pidfd_open(target))
        except ProcessLookupError:
            loop.call_soon(lambda: background(self._finish(c.id), "container exit"))
            return
        run.watch_fd = fd
        run.watched = target
        loop.add_reader(fd, self._on_exit, c.id, fd)

    def _on_exit(self, cid: str, fd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        os.close(fd)
        c = self.by_id.get(cid)
        run = self.runs.get(cid)
        if run is not None and run.watched:
            # Our child (the shim we started, or pid 1 adopted when its shim died): reap
            # it.  After a daemon restart neither is our child and this finds nothing.
            status = _reap(run.watched)
            if c is not None and run.watched == c.state.pid and status is not None:
                run.status = status
            run.watch_fd, run.watched = None, 0
        background(self._finish(cid), "container exit")

    def _read_exit(self, c: Container) -> tuple[int, float] | None:
        try:
            with open(self.paths(c)["exit"]) as f:
                code, ns = f.read().split()
            return int(code), int(ns) / 1e9
        except (OSError, ValueError):
            return None

    async def _finish(self, cid: str) -> None:
        c = self.by_id.get(cid)
        if c is None or not c.state.running:
            return
        result = self._read_exit(c)
        run = self.runs.get(cid) or Run()
        if result is None:
            pid, start = c.state.pid, c.state.pid_start
            if run.status is None and pid and start and proc_start_time(pid) == start:
                # Re-parented to us when its shim died, and already ended: reap it now.
                run.status = _reap(pid)
                if run.status is None and _alive(pid):
                    # The shim is gone but the container runs on: wait for it itself.
                    c.state.shim_pid = 0
                    self._watch(c, pid)
                    return
            if run.status is not None:
                result = (run.status, time.time())
            elif run.killed:
                result = (128 + signal.SIGKILL, time.time())
            else:
                result = (255, time.time())
                c.state.error = "the container's tether-shim ended without recording an exit status"
        code, finished = result
        async with self._lock(c):
            if run.pidfd is not None:
                os.close(run.pidfd)
                run.pidfd = None
            c.state.status = "exited"
            c.state.exit_code = code
            c.state.pid = 0
            c.state.shim_pid = 0
            c.state.finished_at = _iso(finished)
            await self._teardown(c)
            self.save(c)
        run.finished.set()
        self.runs.pop(cid, None)
        log.info("container exited name=%s id=%s code=%d", c.name, c.short_id, code)
        self._notify(c, "stop")
        self._resolve_waiters(c, ("not-running", "next-exit"), code)
        if c.host_config.get("AutoRemove") and c.state.status != "removing" and c.id in self.by_id:
            await self._remove(c)

    def reap_orphans(self) -> int:
        """Reap zombies that were re-parented to tetherd and that nothing else waits for.

        tetherd is a child subreaper (so that a container whose shim died is re-parented to
        it and its exit status is not lost).  The same makes it the parent of processes of
        `exec` whose tether-shim was killed; those live in a container's pid namespace, which
        is how they are told from tetherd's own children (shims, compilers), whose owners
        reap them.  Containers' own pids are reaped by `_on_exit`/`_finish`.
        """
        watched = {c.state.pid for c in self.by_id.values() if c.state.pid}
        depth = len(_proc_status(os.getpid()).get("NSpid", "").split())
        reaped = 0
        for pid in _child_pids():
            if pid in watched:
                continue
            st = _proc_status(pid)
            if not st.get("State", "").startswith("Z") or len(st.get("NSpid", "").split()) <= depth:
                continue
            if _reap(pid) is not None:
                reaped += 1
        return reaped

    # -- stop, kill, restart, remove, wait -------------------------------------------------

    def _signal(self, c: Container, sig: int) -> None:
        run = self.runs.get(c.id)
        try:
            if run is not None and run.pidfd is not None:
                signal.pidfd_send_signal(run.pidfd, sig)
            elif c.state.pid and proc_start_time(c.state.pid) == c.state.pid_start:
                os.kill(c.state.pid, sig)
            else:
                return
        except ProcessLookupError:
            return
        if run is not None and sig == signal.SIGKILL:
            run.killed = True

    async def stop(self, term: str, timeout: float | None) -> Container:
        c = self.find(term)
        if not c.state.running:
            raise NotModified("container already stopped")
        await self._stop(c, timeout)
        return c

    async def _stop(self, c: Container, timeout: float | None) -> None:
        run = self.runs.get(c.id)
        if run is None:
            return
        if timeout is None and c.config.get("StopTimeout") is not None:
            timeout = float(c.config["StopTimeout"])  # docker run --stop-timeout
        t = 10.0 if timeout is None or timeout < 0 else float(timeout)
        sig = parse_signal(c.config.get("StopSignal"), signal.SIGTERM)
        self._signal(c, sig)
        try:
            await asyncio.wait_for(run.finished.wait(), t)
        except TimeoutError:
            self._signal(c, signal.SIGKILL)
            await run.finished.wait()

    async def kill(self, term: str, sig: str | None) -> Container:
        c = self.find(term)
        number = parse_signal(sig)
        if not c.state.running:
            raise Conflict(f"Cannot kill container: {term}: Container {c.id} is not running")
        self._signal(c, number)
        return c

    async def restart(self, term: str, timeout: float | None) -> Container:
        c = self.find(term)
        if c.state.running:
            await self._stop(c, timeout)
        async with self._lock(c):
            if not c.state.running:
                c.restart_count += 1
                await self._start(c)
        return c

    async def remove(self, term: str, force: bool) -> None:
        c = self.find(term)
        if c.state.running:
            if not force:
                raise Conflict(
                    f"You cannot remove a running container {c.id}. Stop the container before "
                    "attempting removal or force remove"
                )
            c.state.status = "removing"
            run = self.runs.get(c.id)
            if run is not None:
                self._signal(c, signal.SIGKILL)
                c.state.status = "running"  # let _finish record the exit
                c.host_config["AutoRemove"] = False
                await run.finished.wait()
        await self._remove(c)

    async def _remove(self, c: Container) -> None:
        async with self._lock(c):
            if c.id not in self.by_id:
                return
            c.state.status = "removing"
            await self._teardown(c)
            shutil.rmtree(self.cdir(c), ignore_errors=True)
            with self.store.transaction():
                self.store.delete("container", c.id)
            self.by_id.pop(c.id, None)
        self._locks.pop(c.id, None)
        log.info("container removed name=%s id=%s", c.name, c.short_id)
        self._notify(c, "destroy")
        self._resolve_waiters(c, ("not-running", "next-exit", "removed"), c.state.exit_code)

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
        c = self.find(term)
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
        c = self.find(term)
        mode = c.network_mode
        if net.driver in ("host", "null"):
            raise Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        if mode == "host" or mode.startswith("container:"):
            raise Forbidden(
                "container sharing network namespace with another container or host cannot be connected to any other network"
            )
        if mode == "none":
            raise Forbidden(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode"
            )
        cfg = _endpoint_config(body, "")
        if net.name in c.networks:
            raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
        if cfg.aliases and not views.user_defined(net):
            raise Forbidden(
                "network-scoped alias is supported only for containers in user defined networks"
            )
        _check_endpoint_rules(net, cfg)
        cfg.network_id = net.id
        async with self._lock(c):
            if net.name in c.networks:
                raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
            if not c.state.running:
                c.networks[net.name] = cfg
                self.save(c)
                return
            allocated: list[tuple[str, str]] = []
            async with self.lock:
                if net.id not in self.networks.by_id:
                    raise NotFound(f"network {net_term} not found")
                try:
                    with self.store.transaction():
                        ep = self._allocate(c, net, cfg, allocated)
                        c.networks[net.name] = cfg
                        c.endpoints[net.name] = ep
                        self.store.put("container", c.id, c.name, c.to_doc())
                except BaseException:
                    for net_id, addr in allocated:
                        self.ipam.forget_memory(net_id, addr)
                    c.networks.pop(net.name, None)
                    c.endpoints.pop(net.name, None)
                    raise
            inner = self.sandboxes.open(c)
            try:
                await self.sandboxes.attach(c, net, ep, inner)
                await self.sandboxes.set_gateway(c, inner, gateway_endpoint(c, self.network_of))
            except BaseException:
                await self.sandboxes.detach(ep)
                async with self.lock:
                    with self.store.transaction():
                        self.ipam.release_owner(ep.id)
                        c.networks.pop(net.name, None)
                        c.endpoints.pop(net.name, None)
                        self.store.put("container", c.id, c.name, c.to_doc())
                raise
            finally:
                inner.close()
            self._write_files(c)
            await self._retarget_ports(c)
            self.save(c)
        log.info(
            "container connected name=%s network=%s address=%s",
            c.name,
            net.name,
            ep.ipv4 or ep.ipv6,
        )
        self._notify(c, "connect")

    async def disconnect(self, net_term: str, term: str, force: bool) -> None:
        c = self.find(term)
        try:
            net: Network | None = self.networks.find(net_term)
        except NotFound:
            if not force:
                raise
            net = None
        if net is not None and net.driver in ("host", "null") and net.name in c.networks:
            raise Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        name = net.name if net is not None else net_term
        async with self._lock(c):
            if name not in c.networks:
                raise Forbidden(f"container {c.id} is not connected to network {name}")
            ep = c.endpoints.get(name)
            if ep is not None:
                await self.sandboxes.detach(ep)
            async with self.lock:
                with self.store.transaction():
                    if ep is not None:
                        self.ipam.release_owner(ep.id)
                    c.networks.pop(name, None)
                    c.endpoints.pop(name, None)
                    self.store.put("container", c.id, c.name, c.to_doc())
            if c.state.running and c.sandbox_key:
                await self.sandboxes.set_gateway(c, None, gateway_endpoint(c, self.network_of))
                self._write_files(c)
                await self._retarget_ports(c)
                self.save(c)
        log.info("container disconnected name=%s network=%s", c.name, name)
        self._notify(c, "disconnect")

    # -- views -----------------------------------------------------------------------------

    def network_containers(self, net: Network) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in self.by_id.values():
            if not c.state.running:
                continue
            if net.driver in ("host", "null"):
                mode = c.network_mode
                if (net.driver == "host" and mode == "host") or (
                    net.driver == "null" and mode == "none"
                ):
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

    # -- restore after a daemon restart ------------------------------------------------------

    async def restore(self) -> None:
        """Adopt containers that kept running; finish or clean up the rest.

        Also handles a start cut short by a crash after the shim was spawned: if the shim and
        its container are alive, the start did complete in the kernel and is adopted; a shim
        whose container the store no longer knows is killed.
        """
        shims = _find_shims(self.dir)
        for c in list(self.by_id.values()):
            shim_pid = shims.pop(c.id, 0)
            if c.state.running:
                if c.state.shim_pid and c.state.shim_pid == shim_pid:
                    self._watch(c)
                    await self._repair_endpoints(c)
                    if self.publisher is not None:
                        self.publisher.restore(c)
                        await self.publisher.wire_proxies(c)
                    log.info(
                        "container adopted name=%s id=%s pid=%d", c.name, c.short_id, c.state.pid
                    )
                    self._notify(c, "start")
                    continue
                self.runs[c.id] = Run()
                await self._finish(c.id)
                continue
            if c.state.status == "removing":
                _kill_shim_tree(shim_pid)
                await self._remove(c)
                continue
            child = _first_child(shim_pid) if shim_pid else 0
            if child and (c.endpoints or c.sandbox_key or c.network_mode == "host"):
                c.state = running_state(child, shim_pid)
                self._watch(c)
                await self._repair_endpoints(c)
                if self.publisher is not None:
                    # The crash came before the ports were recorded with the container.
                    self.publisher.unpublish(c)
                    await self._publish(c)
                self.save(c)
                log.info(
                    "container start completed after restart name=%s id=%s pid=%d",
                    c.name,
                    c.short_id,
                    child,
                )
                self._notify(c, "start")
                continue
            if shim_pid:
                _kill_shim_tree(shim_pid)
            if c.endpoints or c.sandbox_key:
                # A start or a stop was cut short: give everything back.
                await self._teardown(c)
        for cid, pid in shims.items():
            log.warning("killing a tether-shim of an unknown container id=%s pid=%d", cid[:12], pid)
            _kill_shim_tree(pid)
        if self.publisher is not None:
            self.publisher.restored()  # the port relay lets go of ports no one has now

    async def _repair_endpoints(self, c: Container) -> None:
        """Rebuild endpoints of a running container whose host side is gone."""
        if not c.endpoints or not c.sandbox_key or not os.path.exists(c.sandbox_key):
            return
        present = {link.name for link in self.host.links("veth")}
        missing = [(n, ep) for n, ep in c.endpoints.items() if ep.host_ifname not in present]
        if not missing:
            return
        inner = self.sandboxes.open(c)
        try:
            for name, ep in missing:
                net = self.network_of(ep.network_id)
                if net is None:
                    continue
                stale = await inner.index(ep.ifname)
                if stale is not None:
                    await inner.delete(stale)
                await self.sandboxes.attach(c, net, ep, inner)
                log.info("endpoint rebuilt container=%s network=%s", c.name, name)
            c.gateway = ""  # the rebuilt link lost its routes: set them again
            await self.sandboxes.set_gateway(c, inner, gateway_endpoint(c, self.network_of))
            self.save(c)
        finally:
            inner.close()

    def wanted_kernel_objects(self) -> tuple[set[str], set[str], set[str]]:
        """(host veth names, netns paths, endpoint ids) that some container may own now."""
        veths: set[str] = set()
        paths: set[str] = set()
        eps: set[str] = set()
        for c in self.by_id.values():
            for ep in c.endpoints.values():
                veths.add(ep.host_ifname)
                eps.add(ep.id)
            if c.sandbox_key:
                paths.add(c.sandbox_key)
        return veths, paths, eps


def _find_shims(containers_dir: str) -> dict[str, int]:
    """Live tether-shim run processes of this daemon's root, by container id."""
    marker = (containers_dir.rstrip("/") + "/").encode()
    out: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) < 2 or b"tether-shim" not in argv[0] or argv[1] != b"run":
            continue
        for arg in argv:
            if arg.startswith(marker):
                cid = arg[len(marker) :].split(b"/", 1)[0].decode()
                out[cid] = int(entry)
                break
    return out


def _reap(pid: int) -> int | None:
    """Reap `pid` if it is our child and has ended: its exit code as docker shows one."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done != pid:
        return None
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that is not us to reap it."""
    state = _proc_status(pid).get("State", "")
    return bool(state) and state[0] not in "ZX"


def _child_pids() -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return out


def _first_child(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return 0
    return int(kids[0]) if kids else 0


def _kill_shim_tree(shim_pid: int) -> None:
    """Kill a shim's container (its pid 1 takes the whole pid namespace along) and the shim."""
    if not shim_pid:
        return
    child = _first_child(shim_pid)
    for pid in (child, shim_pid):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _merge_env(base: list[str], extra: list[str]) -> list[str]:
    out: dict[str, str] = {}
    for e in [*base, *extra]:
        key = e.split("=", 1)[0]
        out[key] = e
    return list(out.values())


def _endpoint_config(ep: EndpointSettings, mac: str) -> EndpointConfig:
    """What one network attachment asks for; its values were checked at the API edge."""
    ipam = ep.IPAMConfig
    return EndpointConfig(
        aliases=list(ep.Aliases or []),
        ipv4=(ipam.IPv4Address or "") if ipam else "",
        ipv6=(ipam.IPv6Address or "") if ipam else "",
        mac=(ep.MacAddress or mac or "").lower(),
        driver_opts=dict(ep.DriverOpts or {}),
        links=list(ep.Links or []),
    )


def _check_endpoint_rules(net: Network, cfg: EndpointConfig) -> None:
    """Docker's rules for --ip/--ip6 and aliases, checked before anything is allocated."""
    if (cfg.ipv4 or cfg.ipv6) and not views.user_defined(net):
        raise Forbidden("user specified IP address is supported on user defined networks only")
    if cfg.ipv4 and (not net.user_subnets or not net.pools_of(4)):
        raise Forbidden(
            "user specified IP address is supported only when connecting to networks with user configured subnets"
        )
    if cfg.ipv6 and (not net.enable_ipv6 or not net.pools_of(6)):
        raise Forbidden(
            "user specified IP address is supported only when connecting to networks with user configured subnets"
        )
    if cfg.aliases and not views.user_defined(net):
        raise Forbidden(
            "network-scoped alias is supported only for containers in user defined networks"
        )


def _random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def _iso(epoch_seconds: float) -> str:
    t = time.gmtime(epoch_seconds)
    frac = int((epoch_seconds % 1) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{frac:09d}Z"


def _write_in_place(path: str, text: str) -> None:
    """Rewrite a file without replacing it: a running container has it bind-mounted by inode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
