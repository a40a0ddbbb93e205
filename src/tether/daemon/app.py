"""tetherd's wiring: state, kernel handles, reconcile, API server, and a clean stop."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import resource
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether import __version__
from tether.cbuild import CACHE_DIR
from tether.daemon import (
    routes_cluster,
    routes_containers,
    routes_crypt,
    routes_images,
    routes_networks,
    routes_services,
    routes_system,
    routes_tether,
    routes_topology,
    routes_volumes,
)
from tether.daemon.http import HttpServer, Router
from tether.dns.server import DnsServer
from tether.drivers.base import NetworkDriver
from tether.drivers.bridge import BridgeDriver
from tether.drivers.catalog import IPVLAN_NOT_BUILT
from tether.drivers.host import HostDriver, NullDriver
from tether.drivers.macvlan import MacvlanDriver
from tether.drivers.overlay import OverlayDriver
from tether.drivers.registry import DriverRegistry
from tether.engine.containers import Containers
from tether.engine.dnsfollow import DnsFollower
from tether.engine.endpoints import Endpoints
from tether.engine.execs import Execs
from tether.engine.lifecycle import Lifecycle
from tether.engine.networks import Networks
from tether.engine.reconcile import reconcile_cluster, reconcile_networks, reconcile_sandboxes
from tether.engine.sandbox import Sandboxes
from tether.errors import TetherError
from tether.events import ClusterNode, EventBus, NetworkCreated, NetworkRemoved
from tether.firewall import dockeruser
from tether.firewall.manager import Firewall
from tether.firewall.policy import Underlay
from tether.firewall.publish import Publisher, ports_list, ports_view
from tether.firewall.relayctl import RelayClient
from tether.firewall.render import NetRule, PortRule
from tether.images.registry import Registries, RegistryOptions
from tether.ipam.manager import Ipam
from tether.ipam.pools import DEFAULT_POOLS, PoolSpec, with_ipv6_default
from tether.kernel import libc, netns
from tether.kernel.nft import Nft
from tether.kernel.rtnl import Rtnl
from tether.kernel.sysctl import set_sysctl
from tether.model import Container, Network
from tether.runtime.confine import Confiner
from tether.runtime.images import ImageStore
from tether.store import statedir
from tether.store.sqlite import Store

if TYPE_CHECKING:
    from tether.cluster.agent import Agent
    from tether.cluster.config import ClusterOptions
    from tether.cluster.follower import Follower
    from tether.cluster.ingress import Mesh
    from tether.cluster.lb import Balancer
    from tether.cluster.nodeapi import NodeApi
    from tether.cluster.state import ClusterStore
    from tether.crypt.manager import Encryption
    from tether.metrics import Metrics

log = logging.getLogger("tether.daemon")

RECONCILE_EVERY = 5.0  # seconds between background checks of bridges (and the firewall)
# Stray veths, netns files and allocations only come from crashes, which the start-up sweep
# handles; at run time a slower sweep is a safety net, not the mechanism.
SWEEP_EVERY = 12  # reconciles


@dataclass
class Options:
    root: str = "/var/lib/tether"
    exec_root: str = "/run/tether"
    debug: bool = False
    default_pools: list[PoolSpec] = field(default_factory=lambda: list(DEFAULT_POOLS))
    # The resolv.conf containers inherit upstream servers from (the host's, normally).
    resolv_conf: str = "/etc/resolv.conf"
    # Multi-host (--cluster-store ...): None is the single-host engine, SQLite only.
    cluster: ClusterOptions | None = None
    # Registries: --registry-mirror, --insecure-registry, the CA directory (images/registry.py).
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    # --metrics-addr HOST:PORT: Prometheus metrics (tether/metrics.py); "" serves none.
    metrics_addr: str = ""


class StartupError(Exception):
    pass


class Daemon:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.root = os.path.abspath(opts.root)
        self.exec_root = os.path.abspath(opts.exec_root)
        self.socket_path = os.path.join(self.exec_root, "tether.sock")
        self.netns_dir = os.path.join(self.exec_root, "netns")
        self.stopping = asyncio.Event()
        self.lock = asyncio.Lock()
        self._lock_fds: list[int] = []
        self.store: Store
        self.rtnl: Rtnl
        self.ipam: Ipam
        self.networks: Networks
        self.images: ImageStore
        self.registries: Registries
        self.containers: Containers
        self.execs: Execs
        self.events: EventBus
        self.drivers: DriverRegistry
        self.sandboxes: Sandboxes
        self.endpoints: Endpoints
        self.lifecycle: Lifecycle
        self.nft: Nft
        self.firewall: Firewall
        self.publisher: Publisher
        self.dns: DnsServer
        self.dns_follower: DnsFollower
        self.server: HttpServer | None = None
        self.cluster: ClusterStore | None = None
        self.overlay: OverlayDriver | None = None
        self.follower: Follower | None = None
        self.agent: Agent | None = None
        self.balancer: Balancer | None = None
        self.mesh: Mesh | None = None
        self.encryption: Encryption | None = None
        self.nodeapi: NodeApi | None = None
        self._last_underlay: Underlay | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.metrics: Metrics | None = None

    # -- life cycle ------------------------------------------------------------------------

    def _take_lock(self, directory: str) -> None:
        path = os.path.join(directory, "tetherd.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(f"another tetherd is already running with {directory}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fds.append(fd)

    async def start(self) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.makedirs(self.exec_root, mode=0o711, exist_ok=True)
        # The state (secrets in containers' environments) is root's alone; what an earlier
        # version left wider is tightened here, before the store is opened.
        root_mode = 0o711 if self.exec_root == self.root else 0o700
        statedir.secure(self.root, root_mode)
        self._take_lock(self.root)
        if self.exec_root != self.root:
            self._take_lock(self.exec_root)
        # A container whose tether-shim dies is re-parented to tetherd rather than to PID 1,
        # so its real exit status can still be reaped (engine/supervisor.py: Run.status).
        try:
            libc.set_child_subreaper()
        except OSError as exc:
            log.warning("cannot become a child subreaper: %s", exc)
        netns.prepare_dir(self.netns_dir)
        # Every published port holds a socket or two (its reservation, its IPv6 listener):
        # 1,000 ports would not fit the usual soft limit of 1,024 descriptors.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        # Containers reach other networks and the outside through the host's routing.
        set_sysctl("net/ipv4/ip_forward", "1")
        # Traffic between containers of one network crosses the bridge, not the router; with
        # these on it still meets the firewall (ICC off, the user chain), as with Docker.
        set_sysctl("net/bridge/bridge-nf-call-iptables", "1")
        set_sysctl("net/bridge/bridge-nf-call-ip6tables", "1")
        self.store = Store(os.path.join(self.root, "tether.db"))
        self.rtnl = Rtnl.open()
        self.events = EventBus()
        drivers: list[NetworkDriver] = [
            BridgeDriver(self.rtnl),
            MacvlanDriver(self.rtnl),
            HostDriver(),
            NullDriver(),
        ]
        if self.opts.cluster is not None:
            # Imported only here: the etcd client's HTTP library costs ~0.2 s to import.
            from tether.cluster.state import ClusterStore

            self.cluster = ClusterStore(self.opts.cluster, self.store, self.events)
            self.overlay = OverlayDriver(
                self.rtnl,
                self.opts.cluster.advertise,
                self.opts.cluster.vxlan_port,
                self._underlay_mtu(self.opts.cluster.advertise),
            )
            drivers.append(self.overlay)
            # Encrypted overlays (-o encrypted): tether-crypt and the keys (crypt/).
            from tether.crypt.manager import Encryption

            self.encryption = Encryption(
                self.rtnl,
                self.cluster,
                self.root,
                self.exec_root,
                self.opts.cluster.crypt_port,
                self.overlay.underlay_mtu,
                self.opts.cluster.key_rotation,
            )
            self.overlay.encryption = self.encryption
            self.encryption.start()
        self.drivers = DriverRegistry(
            drivers, await self._driver_reasons(), clustered=self.cluster is not None
        )
        self.ipam = Ipam(self.store)
        pools = with_ipv6_default(self.opts.default_pools, self._host_id())
        self.networks = Networks(
            self.store,
            self.ipam,
            self.rtnl,
            self.drivers,
            pools,
            self.lock,
            self.events,
            self._network_containers,
            self.cluster,
            in_use=lambda net: self.containers.has_endpoint_on(net),
        )
        self.networks.load()
        self.ipam.load(list(self.networks.by_id.values()))
        self.images = ImageStore(self.store, self.root)
        self.images.load()
        self.registries = Registries(self.opts.registry)
        self.containers = Containers(
            self.store,
            self.images,
            self.root,
            self.events,
            self.networks.by_id.get,
            self.networks.find,
            Confiner(self.root),
        )
        self.containers.load()
        statedir.secure(self.root, root_mode)  # and what the components just made
        self.sandboxes = Sandboxes(self.rtnl, self.netns_dir)
        self.endpoints = Endpoints(
            self.store,
            self.ipam,
            self.drivers,
            self.networks.by_id.get,
            self.networks.find,
            self.sandboxes,
            self.rtnl,
            self.lock,
            self.cluster,
        )
        self.nft = Nft()
        self.firewall = Firewall(self.nft, self._net_rules, self._port_rules, self._underlay)
        self.publisher = Publisher(self.store, self.firewall, RelayClient(self.exec_root))
        self.lifecycle = Lifecycle(
            self.containers,
            self.networks,
            self.endpoints,
            self.images,
            self.events,
            self.publisher,
            self.opts.resolv_conf,
            self.lock,
            # tether's own paths, kept out of the built-in host image's view.
            [self.root, self.exec_root, CACHE_DIR],
        )
        self.execs = Execs(self.containers, self.lifecycle.supervisor)
        self.dns = DnsServer()
        self.dns_follower = DnsFollower(self.dns, self.containers, self.events)
        self.dns.start()
        self.events.subscribe(NetworkCreated, lambda e: self.firewall.sync())
        self.events.subscribe(NetworkRemoved, lambda e: self.firewall.sync())
        # A node's address joins or leaves the VXLAN allow-list (a down node keeps its place:
        # its entries are withdrawn, and it may come back).
        self.events.subscribe(ClusterNode, lambda e: self._vteps_changed())
        await self.networks.ensure_predefined()
        if self.cluster is not None and self.overlay is not None:
            from tether.cluster.follower import Follower

            self.follower = Follower(self.events, self.networks, self.overlay)
            self.follower.start()
            self.cluster.on_new_lease.append(self.reconcile_cluster)
            from tether.cluster.agent import Agent
            from tether.cluster.lb import Balancer

            services = self.cluster.services
            self.agent = Agent(
                services,
                self.containers,
                self.lifecycle,
                self.events,
                lambda: {n.name: n.id for n in self.networks.by_id.values()},
                lambda: next((n.name for n in self.networks.by_id.values() if n.ingress), None),
                self._withdraw_task,
            )
            self.balancer = Balancer(self.cluster, services, self.containers, self.events)
            from tether.cluster.ingress import Mesh

            assert self.overlay is not None
            self.mesh = Mesh(
                self.cluster, services, self.networks, self.overlay, self.firewall, self.events
            )
            services.listeners.append(self._service_names)
            from tether.cluster.nodeapi import NodeApi

            self.nodeapi = NodeApi(
                self.cluster, self.containers, self.lifecycle, self.cluster.opts.node_port
            )
            await self.cluster.start()
            services.start()
            self.agent.start()
            self.balancer.start()
            self.mesh.start()
            await self.nodeapi.start()
        async with self.lock:
            await reconcile_networks(self.networks)
            self.firewall.sync()
        # Containers that kept running are adopted before strays are swept, so their
        # sandboxes count as wanted.
        await self.lifecycle.restore()
        await self.reconcile()
        self.firewall.sync()
        loop = asyncio.get_running_loop()
        # iptables' DOCKER-USER, for the commands Docker's documentation gives.
        await loop.run_in_executor(None, dockeruser.ensure)
        await loop.run_in_executor(None, self.lifecycle.supervisor.ensure_shim)

        router = Router()
        routes_system.register(router, self)
        routes_networks.register(router, self)
        routes_containers.register(router, self)
        routes_volumes.register(router, self)
        routes_images.register(router, self)
        routes_cluster.register(router, self.cluster)
        routes_services.register(router, self.cluster, self.networks, self.nodeapi)
        routes_topology.register(router, self)
        routes_tether.register(router, self)
        routes_crypt.register(router, self)
        self.server = HttpServer(router)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        await self.server.start_unix(self.socket_path)
        os.chmod(self.socket_path, 0o660)
        if self.opts.metrics_addr:
            # Imported only when asked for: prometheus_client stays out of a plain start.
            from tether.metrics import Metrics

            self.metrics = Metrics(self)
            self.server.observe = self.metrics.observe
            try:
                await self.metrics.start(self.opts.metrics_addr)
            except OSError as exc:
                raise StartupError(
                    f"cannot serve metrics on {self.opts.metrics_addr}: {exc.strerror}"
                ) from None
        self._tasks.append(asyncio.create_task(self._reconcile_loop()))
        log.info(
            "tetherd ready version=%s pid=%d root=%s socket=%s networks=%d",
            __version__,
            os.getpid(),
            self.root,
            self.socket_path,
            len(self.networks.by_id),
        )

    async def reconcile(self, sweep: bool = True) -> int:
        async with self.lock:
            changes = await reconcile_networks(self.networks)
            if sweep:
                changes += await reconcile_sandboxes(self.containers, self.endpoints)
            if self.firewall.ensure():
                changes += 1
            self.lifecycle.reap_orphans()
        if sweep:
            # Outside the lock: the cluster store may be slow or down.
            changes += await self.reconcile_cluster()
        return changes

    def _underlay_mtu(self, addr: str) -> int:
        """The MTU of the link that carries this node's advertise address (VXLAN rides it)."""
        index = next(
            (a.index for a in self.rtnl.dumper.addresses() if a.cidr.split("/")[0] == addr), 0
        )
        link = next((x for x in self.rtnl.links() if x.index == index), None)
        return link.mtu if link is not None and link.mtu else 1500

    async def reconcile_cluster(self) -> int:
        """This node's endpoints in the cluster store match its containers: missing ones are
        written again (a lost lease, a restart after the TTL), stale ones withdrawn (a
        teardown while the store was down).  Global networks the store no longer has are
        dropped from the local cache."""
        if self.cluster is None or not self.cluster.connected.is_set():
            return 0
        keep = frozenset({self.mesh.endpoint_id}) if self.mesh is not None else frozenset()
        changes = await reconcile_cluster(
            self.cluster, self.containers, self.endpoints, self.networks, keep
        )
        if self.mesh is not None:
            self.mesh.kick()  # the ingress bridge's address, after a network was remade
        return changes

    async def _driver_reasons(self) -> dict[str, str]:
        """What this kernel says about drivers tether does not serve (one probe each)."""
        reasons = {}
        if await self.rtnl.kind_supported("ipvlan"):
            reasons["ipvlan"] = IPVLAN_NOT_BUILT
        return reasons

    def _host_id(self) -> str:
        """This host's stable identity (the seed of its IPv6 ULA pool), made on first start."""
        host_id = self.store.get_meta("host_id")
        if host_id is None:
            host_id = secrets.token_hex(32)
            with self.store.transaction():
                self.store.set_meta("host_id", host_id)
        return host_id

    def _network_containers(self, net: Network) -> dict[str, Any]:
        return self.containers.network_containers(net, self.endpoints.has_endpoints(net))

    def _net_rules(self) -> list[NetRule]:
        """Each network's facts for the firewall, as its driver gives them."""
        facts = (self.drivers.of(n.driver).firewall(n) for n in self.networks.by_id.values())
        return [f for f in facts if f is not None]

    async def _withdraw_task(self, c: Container) -> None:
        """A task that is about to stop leaves its service first, as swarm's do: its
        tasks.<service> names go, and its endpoints stop counting as the service's (the VIP's
        and the routing mesh's backends) on every node, while it drains its connections."""
        assert self.cluster is not None
        for cfg in c.networks.values():
            cfg.aliases = []
        self.dns_follower.update(c)
        for ep in c.endpoints.values():
            net = self.networks.by_id.get(ep.network_id)
            if net is None or net.scope != "global":
                continue
            remote = self.endpoints.remote_of(c, ep)
            remote.service = ""
            try:
                await self.cluster.update_endpoint(net, remote)
            except TetherError as exc:
                log.warning("task %s not withdrawn from its service: %s", c.name, exc.message)

    def _service_names(self) -> None:
        """Services' VIPs as names in the embedded DNS (`web` -> its VIP on each network)."""
        if self.cluster is None:
            return
        entries = []
        for svc in self.cluster.services.by_id.values():
            for vip in svc.vips:
                net = self.networks.by_id.get(vip["NetworkID"])
                if net is not None:
                    entries.append((net.name, svc.name, vip["Addr"].split("/")[0]))
        self.dns_follower.set_vips(entries)

    def _vteps_changed(self) -> None:
        underlay = self._underlay()
        if underlay != self._last_underlay:
            self._last_underlay = underlay
            self.firewall.sync()

    def _underlay(self) -> Underlay | None:
        """VXLAN from the cluster's nodes only (None: not a cluster node)."""
        if self.cluster is None:
            return None
        vteps = {n.addr for n in self.cluster.nodes.values() if ":" not in n.addr}
        vteps.add(self.cluster.node.addr)
        from tether.crypt.manager import encrypted, vni_of

        return Underlay(
            self.cluster.opts.vxlan_port,
            tuple(sorted(vteps)),
            self.cluster.opts.node_port,
            crypt_port=self.cluster.opts.crypt_port,
            encrypted_vnis=tuple(
                sorted(vni_of(n) for n in self.networks.by_id.values() if encrypted(n))
            ),
        )

    def _port_rules(self) -> list[PortRule]:
        return self.publisher.rules(list(self.containers.by_id.values()))

    def ports_view(self, c: Container) -> dict[str, Any]:
        return ports_view(c)

    def ports_list(self, c: Container) -> list[dict[str, Any]]:
        return ports_list(c)

    async def _reconcile_loop(self) -> None:
        tick = 0
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), RECONCILE_EVERY)
                return
            except TimeoutError:
                pass
            try:
                started = time.perf_counter()
                tick += 1
                changes = await self.reconcile(sweep=tick % SWEEP_EVERY == 0)
                log.debug(
                    "reconcile changes=%d took_ms=%.1f",
                    changes,
                    (time.perf_counter() - started) * 1000,
                )
            except Exception:
                log.exception("background reconcile failed")

    async def stop(self) -> None:
        log.info("tetherd stopping pid=%d", os.getpid())
        for task in self._tasks:
            task.cancel()
        for part in (self.agent, self.balancer, self.mesh, self.nodeapi):
            if part is not None:
                await part.stop()
        if self.cluster is not None:
            await self.cluster.services.stop()
        if self.follower is not None:
            await self.follower.stop()
        if self.encryption is not None:
            await self.encryption.stop()  # the data path runs on (live restore)
        if self.cluster is not None:
            await self.cluster.stop()
        if self.server is not None:
            await self.server.close()
        if self.metrics is not None:
            await self.metrics.close()
        await self.registries.close()
        for driver in self.drivers.all():
            await driver.drain()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self.dns.stop()
        # Published ports stay with the relay while containers run on (live restore).
        self.publisher.close()
        self.rtnl.close()
        self.store.close()
        # The shared mount of the netns directory stays while sandboxes live in it (live
        # restore); with none left, it goes too, so a stopped daemon leaves no mount behind.
        if not os.listdir(self.netns_dir):
            netns.release_dir(self.netns_dir)
        for fd in self._lock_fds:
            os.close(fd)
        log.info("tetherd stopped")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.start()
        await self.stopping.wait()
        await self.stop()

    def info(self) -> dict[str, Any]:
        return {
            "ID": "",
            "Name": os.uname().nodename,
            "ServerVersion": __version__,
            "DockerRootDir": self.root,
            "Driver": "overlay2",
            "OperatingSystem": "tether",
            "OSType": "linux",
            "KernelVersion": os.uname().release,
            "Plugins": {"Network": self.drivers.names()},
            "RegistryConfig": self.registries.info(),
            # Docker's classic (pre-23.0) cluster fields, which these flags come from.
            "ClusterStore": self.opts.cluster.store if self.opts.cluster else "",
            "ClusterAdvertise": self.opts.cluster.advertise if self.opts.cluster else "",
            "Cluster": self._cluster_info(),
        }

    def _cluster_info(self) -> dict[str, Any] | None:
        if self.cluster is None:
            return None
        nodes = list(self.cluster.nodes.values())
        return {
            "NodeName": self.cluster.node.name,
            "NodeAddr": self.cluster.node.addr,
            "Store": self.cluster.store_name,
            "StoreReachable": self.cluster.connected.is_set(),
            "Nodes": len(nodes),
            "NodesReady": sum(1 for n in nodes if n.status == "ready"),
            "DataPathPort": self.cluster.opts.vxlan_port,
        }


def run(opts: Options) -> int:
    daemon = Daemon(opts)
    try:
        asyncio.run(daemon.run())
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    except TetherError as exc:
        log.error("%s", exc.message)
        return 1
    return 0
