"""The cluster's shared state in etcd: this node's registration, global networks, their
addresses and endpoints.  Every change is a transaction; every node follows them by one
watch, never by polling.

- **Node**: registered under a lease (TTL 10 s by default, renewed every TTL/3).  The lease id
  is kept in the local store, so a tetherd restarted within the TTL carries on with the same
  lease (nothing is withdrawn from the other nodes); after the TTL the lease is gone, a new
  one is granted and this node's endpoints are written again (`republish`).
- **Global networks**: created in one transaction that claims the name, the subnets and the
  VXLAN id (compare "absent", then put), so two nodes creating at once never share any of
  them; removed in one transaction that holds only while the network has no endpoint on any
  node (a range compare over its endpoints).
- **Endpoints**: an endpoint's addresses and its document are claimed in one transaction
  with the node's lease; a dead node's endpoints vanish with its lease.
- **Following**: one watch on the whole prefix from the revision of the initial listing;
  the caches here are updated from it and typed events are published (ClusterNetwork,
  ClusterEndpoints, ClusterNode) for the engine, the overlay driver and the DNS.  A compacted
  revision (or a watch that ends) means: list again, publish what differs, watch again.  A
  full re-list also runs every minute, as a safety net.

When etcd cannot be reached, local-scope work goes on; every global operation fails at once
with StoreUnavailable, whose one-line message names the store; existing overlay traffic keeps
flowing (the kernel keeps its entries), and the connection is retried in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

from tether import __version__
from tether.cluster import keys
from tether.cluster.config import ClusterOptions
from tether.cluster.services import LEADER, Services
from tether.errors import ClaimTaken, Conflict, Forbidden, NotFound, SubnetTaken
from tether.events import ClusterEndpoints, ClusterNetwork, ClusterNode, EventBus
from tether.ipam.addresses import mac_from_ipv4, random_mac
from tether.model import Network, NodeInfo, RemoteEndpoint
from tether.store.etcd import (
    Compare,
    EtcdClient,
    Event,
    KeepAlive,
    KeyValue,
    Lease,
    LeaseNotFound,
    Op,
    Range,
    RevisionCompacted,
    StoreError,
    StoreUnavailable,
    TLSFiles,
)
from tether.store.sqlite import Store
from tether.timefmt import now_iso

log = logging.getLogger("tether.cluster")

# Keys of services/ tasks/ tstatus/ leader: the services' caches follow them.
SERVICE_KINDS = frozenset({"services", "tasks", "tstatus", "ustatus", LEADER})
# Keys whose values are plain text (a network id, a service id, a node name), not JSON:
# names/ and subnets/ among them were reported as "holds no JSON" at every relist.
PLAIN_KINDS = frozenset({"claims", "snames", "names", "subnets", LEADER})
RELIST_EVERY = 60.0  # seconds: the safety net under the watch
RELIST_PAGE = 1000  # keys per range request of a relist
RETRY_EVERY = 1.0  # seconds between attempts to reach the store when it is down
ALLOC_ATTEMPTS = 64  # addresses tried before giving up on a busy network


class StoreExtension(Protocol):
    """Follows one kind of key (the first path element) that ClusterStore does not read."""

    def relisted(self, kvs: list[KeyValue]) -> None: ...

    def changed(self, key: str, kv: KeyValue | None) -> None: ...

    def network_prefixes(self, net_id: str) -> list[str]:
        """Keys that go with a global network (deleted in the transaction that removes it)."""
        ...


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


class ClusterStore:
    def __init__(self, opts: ClusterOptions, local: Store, events: EventBus) -> None:
        self.opts = opts
        self.local = local  # the node's own SQLite: its lease id survives restarts
        self.events = events
        tls = (
            TLSFiles(cafile=opts.cacert or None, certfile=opts.cert, keyfile=opts.key)
            if opts.cert
            else None
        )
        self.client = EtcdClient(opts.store, prefix=opts.prefix + "/", tls=tls)
        self.store_name = self.client.store
        self.node = NodeInfo(
            name=opts.node_name,
            addr=opts.advertise,
            port=opts.advertise_port,
            started=now_iso(),
            version=__version__,
        )
        self.lease: Lease | None = None
        self.fresh_lease = False  # the last registration had to grant a new lease
        self._keepalive: KeepAlive | None = None
        # Caches, from the listing and the watch.
        self.nodes: dict[str, NodeInfo] = {}
        self.networks: dict[str, Network] = {}
        self.endpoints: dict[str, dict[str, RemoteEndpoint]] = {}
        self.addresses: dict[str, set[str]] = {}
        self.claims: dict[str, str] = {}  # claim -> network id
        self.revision = 0
        self.connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Called (in the follower's task) after every (re)registration under a new lease:
        # the engine writes its local endpoints again.
        self.on_new_lease: list[Callable[[], Any]] = []
        # Services and their tasks (and the scheduler, on the leading node).
        self.services = Services(self)
        # Parts that keep keys of their own kind under the prefix (crypt/: the keys of
        # encrypted networks, crypt/keyring.py): handed every listing and change of it.
        self.extensions: dict[str, StoreExtension] = {}

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, wait: float = 3.0) -> None:
        """Connect, register and list (waiting up to `wait` seconds), then follow in the
        background; when the store is down, keep trying there instead."""
        task = asyncio.get_running_loop().create_task(self._run())
        self._tasks.append(task)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait)
        if not self.connected.is_set():
            log.warning(
                "cluster store %s unreachable: global networks are unavailable until it "
                "answers (local work goes on)",
                self.store_name,
            )

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._keepalive is not None:
            # Not revoked: a clean stop (live restore) keeps the endpoints for the TTL, so a
            # tetherd restarted in time withdraws nothing from the other nodes.
            await self._keepalive.stop()
        await self.client.close()

    def require(self) -> None:
        if not self.connected.is_set():
            raise StoreUnavailable(f"cluster store {self.store_name} unreachable")

    async def _run(self) -> None:
        """Register and follow for as long as the daemon runs, reconnecting when needed."""
        while not self._stopping:
            try:
                await self._register()
                await self._relist()
                self.connected.set()
                if self.fresh_lease:
                    await self._call_new_lease()
                    # Done: the periodic reconcile must not move the keys again each pass.
                    self.fresh_lease = False
                await self._follow()
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                if self.connected.is_set():
                    log.warning("cluster store lost: %s", exc.message)
                self.connected.clear()
                await asyncio.sleep(RETRY_EVERY)
            except Exception:
                log.exception("cluster follower failed; starting over")
                self.connected.clear()
                await asyncio.sleep(RETRY_EVERY)

    async def _call_new_lease(self) -> None:
        for fn in self.on_new_lease:
            result = fn()
            if asyncio.iscoroutine(result):
                await result

    # -- the node --------------------------------------------------------------------------

    async def _register(self) -> None:
        """This node under its lease: the one from before a restart if it still lives."""
        lease: Lease | None = None
        self.fresh_lease = False
        if self._keepalive is not None and not self._keepalive.lost:
            lease = self._keepalive.lease
        else:
            saved = self.local.get_meta("cluster_lease")
            if saved:
                lease_id, _, ttl = saved.partition(":")
                try:
                    info = await self.client.time_to_live(int(lease_id))
                except LeaseNotFound:
                    info = None
                if info is not None and info.ttl > 0:
                    lease = Lease(int(lease_id), int(ttl or self.opts.ttl))
                    log.info("cluster lease %x still alive (%d s left): kept", lease.id, info.ttl)
            if lease is None:
                lease = await self.client.grant(self.opts.ttl)
                self.fresh_lease = True
                with self.local.transaction():
                    self.local.set_meta("cluster_lease", f"{lease.id}:{lease.ttl}")
            if self._keepalive is not None:
                await self._keepalive.stop()
            self._keepalive = self.client.keep_alive(lease, self._lease_lost)
        self.lease = lease
        doc = {
            "Name": self.node.name,
            "Addr": self.node.addr,
            "Port": self.node.port,
            "Started": self.node.started,
            "Version": self.node.version,
        }
        await self.client.put(keys.node(self.node.name), _json(doc), lease=lease.id)
        log.info(
            "cluster node registered name=%s addr=%s lease=%x store=%s",
            self.node.name,
            self.node.addr,
            lease.id,
            self.store_name,
        )

    def _lease_lost(self, lease: Lease, reason: str) -> None:
        """etcd says our lease is gone (we could not renew it in time): every key it held
        went with it.  The follower re-registers under a new lease and the engine writes
        its endpoints again."""
        log.warning("cluster lease lost (%s): re-registering", reason)
        self.connected.clear()
        for task in self._tasks:
            task.cancel()
        self._tasks = [asyncio.get_running_loop().create_task(self._run())]

    def lease_id(self) -> int:
        self.require()
        assert self.lease is not None
        return self.lease.id

    # -- following -------------------------------------------------------------------------

    async def _list_all(self) -> Range:
        """Everything under the prefix as one snapshot, in pages of RELIST_PAGE keys read at
        the first page's revision: all of it in one request (10,000 keys with 5,000
        endpoints) took longer than the client's 1 s per attempt on a loaded machine, and a
        relist that never answers in time kept the node away from the store for good."""
        first = await self.client.get_prefix("", limit=RELIST_PAGE)
        kvs = list(first.kvs)
        page = first
        while page.more and page.kvs:
            page = await self.client.get_prefix(
                "", start=page.kvs[-1].key + "\0", revision=first.revision, limit=RELIST_PAGE
            )
            kvs.extend(page.kvs)
        return Range(kvs=kvs, revision=first.revision, count=len(kvs), more=False)

    async def _relist(self) -> None:
        """Everything under the prefix, as one snapshot; publish what differs from the
        caches (the first time: everything)."""
        listing = await self._list_all()
        nodes: dict[str, NodeInfo] = {}
        networks: dict[str, Network] = {}
        endpoints: dict[str, dict[str, RemoteEndpoint]] = {}
        addresses: dict[str, set[str]] = {}
        claims: dict[str, str] = {}
        self.services.by_id.clear()
        self.services.tasks.clear()
        self.services.update_status.clear()
        self.services.leader = ""
        extended: dict[str, list[KeyValue]] = {k: [] for k in self.extensions}
        for kv in listing.kvs:
            kind, first, second = keys.split(kv.key)
            if kind in extended:
                extended[kind].append(kv)
                continue
            try:
                data: Any = json.loads(kv.value) if kv.value and kind not in PLAIN_KINDS else None
            except ValueError:
                log.warning("cluster store: key %s holds no JSON; ignored", kv.key)
                continue
            if kind == "nodes":
                nodes[first] = _node(data)
            elif kind == "networks":
                networks[first] = Network.from_doc(data)
            elif kind == "endpoints":
                endpoints.setdefault(first, {})[second] = RemoteEndpoint(**data)
            elif kind == "ipam":
                addresses.setdefault(first, set()).add(second)
            elif kind == "claims":
                claims[f"{first}/{second}"] = kv.value.decode()
            elif kind in SERVICE_KINDS:
                self.services.apply(kind, first, data if kind != LEADER else kv.value.decode())
        self.revision = listing.revision
        self.services.relisted()
        for kind, kvs in extended.items():
            self.extensions[kind].relisted(kvs)
        self.claims = claims
        # Networks first (endpoints need their network), removals last.
        for net_id, net in networks.items():
            if _doc(self.networks.get(net_id)) != _doc(net):
                self.networks[net_id] = net
                self.events.publish(ClusterNetwork(net))
        self.addresses = addresses
        for net_id in set(self.endpoints) | set(endpoints):
            new = endpoints.get(net_id, {})
            if self.endpoints.get(net_id, {}) != new:
                self.endpoints[net_id] = new
                self._publish_endpoints(net_id)
        for name in set(self.nodes) | set(nodes):
            if name in nodes:
                if self.nodes.get(name) != nodes[name]:
                    self.nodes[name] = nodes[name]
                    self.events.publish(ClusterNode(nodes[name]))
            elif self.nodes[name].status == "ready":
                self._node_down(name)
        for net_id in [n for n in self.networks if n not in networks]:
            gone = self.networks.pop(net_id)
            self.endpoints.pop(net_id, None)
            self.events.publish(ClusterNetwork(gone, removed=True))

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        next_relist = loop.time() + RELIST_EVERY
        watch = self.client.watch_prefix("", start_revision=self.revision + 1, prev_kv=True)
        try:
            while True:
                timeout = max(0.1, next_relist - loop.time())
                try:
                    batch = await asyncio.wait_for(watch.__anext__(), timeout)
                except TimeoutError:
                    await self._relist()
                    next_relist = loop.time() + RELIST_EVERY
                    continue
                except StopAsyncIteration:
                    return
                except RevisionCompacted:
                    log.info("cluster watch fell behind a compaction: listing again")
                    return  # _run lists and watches again
                self._apply(batch)
        finally:
            await watch.cancel()

    def _apply(self, batch: list[Event]) -> None:
        touched: dict[str, set[str]] = {}
        for ev in batch:
            self.revision = max(self.revision, ev.revision)
            kind, first, second = keys.split(ev.key)
            put = ev.type == "put"
            if kind in self.extensions:
                self.extensions[kind].changed(ev.key, ev.kv if put else None)
                continue
            try:
                data: Any = (
                    json.loads(ev.kv.value)
                    if put and ev.kv.value and kind not in PLAIN_KINDS
                    else None
                )
            except ValueError:
                continue
            if kind == "nodes":
                if put:
                    node = _node(data)
                    self.nodes[first] = node
                    self.events.publish(ClusterNode(node))
                elif first in self.nodes:
                    self._node_down(first)
            elif kind == "networks":
                if put:
                    net = Network.from_doc(data)
                    self.networks[first] = net
                    self.events.publish(ClusterNetwork(net))
                else:
                    gone = self.networks.pop(first, None)
                    self.endpoints.pop(first, None)
                    self.addresses.pop(first, None)
                    if gone is not None:
                        self.events.publish(ClusterNetwork(gone, removed=True))
            elif kind == "endpoints":
                eps = self.endpoints.setdefault(first, {})
                if put:
                    eps[second] = RemoteEndpoint(**data)
                else:
                    eps.pop(second, None)
                touched.setdefault(first, set()).add(second)
            elif kind == "ipam":
                held = self.addresses.setdefault(first, set())
                if put:
                    held.add(second)
                else:
                    held.discard(second)
            elif kind == "claims":
                if put:
                    self.claims[f"{first}/{second}"] = ev.kv.value.decode()
                else:
                    self.claims.pop(f"{first}/{second}", None)
            elif kind in SERVICE_KINDS:
                value = ev.kv.value.decode() if put else None
                self.services.apply(kind, first, data if kind != LEADER else value)
        for net_id, ids in touched.items():
            self._publish_endpoints(net_id, frozenset(ids))

    def _publish_endpoints(self, net_id: str, changed: frozenset[str] | None = None) -> None:
        current = self.endpoints.get(net_id, {})
        self.events.publish(ClusterEndpoints(net_id, current, self.node.name, changed))

    def _node_down(self, name: str) -> None:
        node = self.nodes[name]
        node.status = "down"
        node.last_seen = now_iso()
        self.events.publish(ClusterNode(node))

    # -- networks --------------------------------------------------------------------------

    async def create_network(
        self, net: Network, reservations: list[tuple[str, str]], claims: list[str]
    ) -> None:
        """Claim the name, the subnets and the driver's unique values (claims) and write the
        network, all or nothing."""
        self.require()
        compares = [Compare.absent(keys.name(net.name)), Compare.absent(keys.network(net.id))]
        ops = [
            Op.put(keys.network(net.id), _json(net.to_doc())),
            Op.put(keys.name(net.name), net.id),
        ]
        for pool in net.pools:
            compares.append(Compare.absent(keys.subnet(pool.subnet)))
            ops.append(Op.put(keys.subnet(pool.subnet), net.id))
        for claim in claims:
            compares.append(Compare.absent(keys.claim(claim)))
            ops.append(Op.put(keys.claim(claim), net.id))
        for addr, owner in reservations:
            ops.append(Op.put(keys.address(net.id, addr), _json({"Owner": owner, "Node": ""})))
        result = await self.client.txn(compares, ops)
        if result.succeeded:
            self.networks[net.id] = net
            return
        # Which claim failed?  Read them back to say so in Docker's words.
        if await self.client.get(keys.name(net.name)) is not None:
            raise Conflict(f"network with name {net.name} already exists")
        for pool in net.pools:
            if await self.client.get(keys.subnet(pool.subnet)) is not None:
                raise SubnetTaken(pool.subnet)
        for claim in claims:
            if await self.client.get(keys.claim(claim)) is not None:
                raise ClaimTaken(claim, f"{claim} is already in use by another network")
        raise Conflict(f"network {net.name}: the cluster store changed meanwhile, try again")

    async def delete_network(self, net: Network, claims: list[str]) -> None:
        """Remove the network and everything it holds, if no node has an endpoint on it."""
        self.require()
        eps = keys.endpoints_prefix(net.id)
        ops = [
            Op.delete(keys.network(net.id)),
            Op.delete(keys.name(net.name)),
            Op.delete_prefix(keys.ipam_prefix(net.id)),
        ]
        for pool in net.pools:
            ops.append(Op.delete(keys.subnet(pool.subnet)))
        for claim in claims:
            ops.append(Op.delete(keys.claim(claim)))
        for ext in self.extensions.values():
            ops.extend(Op.delete_prefix(p) for p in ext.network_prefixes(net.id))
        result = await self.client.txn(
            [Compare.version(keys.network(net.id), ">", 0), Compare.prefix_absent(eps)], ops
        )
        if result.succeeded:
            self.networks.pop(net.id, None)
            self.endpoints.pop(net.id, None)
            self.addresses.pop(net.id, None)
            return
        if await self.client.get(keys.network(net.id)) is None:
            raise NotFound(f"network {net.name} not found")
        raise Forbidden(
            f"error while removing network: network {net.name} id {net.id} has active endpoints"
        )

    def claimed(self) -> set[str]:
        """Every claim the cluster holds now (from the cache)."""
        return set(self.claims)

    # -- endpoints -------------------------------------------------------------------------

    async def claim_endpoint(
        self,
        net: Network,
        ep: RemoteEndpoint,
        candidates4: Callable[[set[str]], str | None] | None,
        requested4: str,
        requested6: str,
        candidates6: Callable[[set[str]], str | None] | None,
    ) -> RemoteEndpoint:
        """Addresses for an endpoint and its document, in one transaction under this node's
        lease.  `requested*`: --ip/--ip6 (refused with Docker's "Address already in use" if
        taken); otherwise `candidates*` gives the lowest address not in the set it is
        handed, retried past addresses another node took meanwhile."""
        lease = self.lease_id()
        taken = set(self.addresses.get(net.id, set()))
        # The MAC follows the address actually claimed (a retry moves the address: a MAC
        # kept from the first try would be another endpoint's, two ports with one MAC on
        # the overlay's L2); a user's --mac-address stays.
        user_mac = ep.mac
        v6_only_mac = random_mac()
        for _ in range(ALLOC_ATTEMPTS):
            v4 = requested4 or (candidates4(taken) if candidates4 else None) or ""
            v6 = requested6 or (candidates6(taken) if candidates6 else None) or ""
            if candidates4 is not None and not v4:
                raise Forbidden(
                    f"no available IPv4 addresses on this network's address pools: "
                    f"{net.name} ({net.id})"
                )
            ep.ipv4, ep.ipv6 = v4, v6
            ep.mac = user_mac or (mac_from_ipv4(v4) if v4 else v6_only_mac)
            compares = [Compare.version(keys.network(net.id), ">", 0)]
            doc = _json(asdict(ep))
            ops = [Op.put(keys.endpoint(net.id, ep.id), doc, lease)]
            for addr in (v4, v6):
                if addr:
                    compares.append(Compare.absent(keys.address(net.id, addr)))
                    owner = _json({"Owner": ep.id, "Node": self.node.name})
                    ops.append(Op.put(keys.address(net.id, addr), owner, lease))
            if await self._txn_checked(compares, ops, keys.endpoint(net.id, ep.id), doc):
                held = self.addresses.setdefault(net.id, set())
                held.update(a for a in (v4, v6) if a)
                self.endpoints.setdefault(net.id, {})[ep.id] = ep
                return ep
            if await self.client.get(keys.network(net.id)) is None:
                raise NotFound(f"network {net.name} not found")
            if requested4 or requested6:
                raise Conflict("Address already in use")
            taken.update(a for a in (v4, v6) if a)
            # Someone else's addresses arrived meanwhile: learn them before the next try.
            listing = await self.client.get_prefix(keys.ipam_prefix(net.id), keys_only=True)
            taken.update(kv.key.rsplit("/", 1)[-1] for kv in listing.kvs)
        raise Forbidden(f"could not allocate an address on {net.name}: too much contention")

    async def claim_vip(
        self, net: Network, owner: str, candidates: Callable[[set[str]], str | None]
    ) -> str:
        """A service's virtual IP on `net`: the lowest free address, claimed (permanent,
        not on a lease: a service outlives any node)."""
        self.require()
        taken = set(self.addresses.get(net.id, set()))
        for _ in range(ALLOC_ATTEMPTS):
            addr = candidates(taken)
            if not addr:
                raise Forbidden(f"no available addresses on {net.name} for a virtual IP")
            result = await self.client.txn(
                [
                    Compare.version(keys.network(net.id), ">", 0),
                    Compare.absent(keys.address(net.id, addr)),
                ],
                [Op.put(keys.address(net.id, addr), _json({"Owner": owner, "Node": ""}))],
            )
            if result.succeeded:
                self.addresses.setdefault(net.id, set()).add(addr)
                return addr
            if await self.client.get(keys.network(net.id)) is None:
                raise NotFound(f"network {net.name} not found")
            taken.add(addr)
        raise Forbidden(f"could not allocate a virtual IP on {net.name}: too much contention")

    async def release_endpoint(self, net_id: str, ep: RemoteEndpoint) -> None:
        """Give back an endpoint's addresses and withdraw it from every node."""
        self.require()
        ops = [Op.delete(keys.endpoint(net_id, ep.id))]
        compares = []
        for addr in (ep.ipv4, ep.ipv6):
            if addr:
                key = keys.address(net_id, addr)
                # Only if it is still ours (after a lost lease it may be someone else's).
                compares.append(
                    Compare.value(key, "=", _json({"Owner": ep.id, "Node": self.node.name}))
                )
                ops.append(Op.delete(key))
        result = await self.client.txn(compares, ops, [Op.delete(keys.endpoint(net_id, ep.id))])
        if not result.succeeded:
            log.info("endpoint %s: addresses were no longer ours", ep.id[:12])
        self.endpoints.get(net_id, {}).pop(ep.id, None)
        held = self.addresses.get(net_id, set())
        for addr in (ep.ipv4, ep.ipv6):
            held.discard(addr)

    async def update_endpoint(self, net: Network, ep: RemoteEndpoint) -> None:
        """Rewrite one of this node's endpoint records (its VTEP changed)."""
        await self.client.put(
            keys.endpoint(net.id, ep.id), _json(asdict(ep)), lease=self.lease_id()
        )
        self.endpoints.setdefault(net.id, {})[ep.id] = ep

    async def _txn_checked(
        self, compares: list[Compare], ops: list[Op], key: str, value: str
    ) -> bool:
        """A transaction whose first put (`key` = `value`, unique to this request) tells
        whether it was applied: when a member took too long to answer (an election under
        load) the outcome is read back instead of failing the user's request, and the
        transaction is sent once more if it was not applied."""
        for attempt in range(2):
            try:
                return (await self.client.txn(compares, ops)).succeeded
            except StoreUnavailable as exc:
                if not exc.outcome_unknown or attempt:
                    raise
                held = await self.client.get(key)
                if held is not None and held.value == value.encode():
                    return True
        return False

    async def republish(self, net: Network, ep: RemoteEndpoint, rebind: bool = False) -> bool:
        """Write one of this node's endpoints again under the current lease (after the old
        lease expired); False if another node took one of its addresses meanwhile.

        `rebind`: the store may still hold the endpoint under this node's previous lease
        (a new lease was granted while the old one was dying): its keys are moved to the
        current lease while they are still ours, or they would vanish when the old lease
        expires (the other nodes would lose this endpoint until the next relist)."""
        lease = self.lease_id()
        ops = [Op.put(keys.endpoint(net.id, ep.id), _json(asdict(ep)), lease)]
        owner = _json({"Owner": ep.id, "Node": self.node.name})
        addr_keys = [keys.address(net.id, a) for a in (ep.ipv4, ep.ipv6) if a]
        ops += [Op.put(key, owner, lease) for key in addr_keys]
        if rebind:
            still_ours = [Compare.value(key, "=", owner) for key in addr_keys]
            if (await self.client.txn(still_ours, ops)).succeeded:
                return True
        result = await self.client.txn([Compare.absent(key) for key in addr_keys], ops)
        return result.succeeded


def _node(data: dict[str, Any]) -> NodeInfo:
    return NodeInfo(
        name=str(data.get("Name", "")),
        addr=str(data.get("Addr", "")),
        port=int(data.get("Port") or 0),
        started=str(data.get("Started", "")),
        version=str(data.get("Version", "")),
    )


def _doc(net: Network | None) -> dict[str, Any] | None:
    return None if net is None else net.to_doc()
