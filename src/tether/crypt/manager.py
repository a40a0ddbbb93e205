"""Encrypted overlay networks on one node: the TAP ports, the data path, the keys.

The overlay driver (drivers/overlay.py) asks this for an encrypted network's port instead
of a VXLAN device (`ensure`), hands it the network's remote endpoints instead of programming
an FDB (`program`), and removes the port with the network (`delete`).  Everything else is
one worker task that keeps three things in line, whenever the cluster store's `crypt/` keys
change and once a second:

- the cluster store: this node's registration (public key, address, data-path session),
  each encrypted network's first key and its rotations (every `rotation` seconds, and on
  `rotate`), the current key sealed for nodes that lack it, this node's acknowledgements;
- tether-crypt (crypt/datapath.py, its own process, crypt/ctl.py): the networks, the keys
  it should hold and the epoch to send with (keyring.Plan), the other nodes' sessions, the
  remote MACs;
- nothing else: the firewall's part (plain VXLAN of encrypted VNIs dropped in and out, the
  data port only from nodes) comes from the daemon's underlay facts (`encrypted_vnis`).

tether-crypt outlives tetherd: a restarted tetherd adopts it and sends it everything again
(the same values: nothing changes for traffic).  If it dies, it is started again at once;
it comes back with a new session (new keys: the other nodes learn it through the store, and
traffic resumes as soon as their watch delivers it).  While it is down, the TAP has no
reader and the kernel drops what the bridge sends there: nothing leaves unencrypted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tether.crypt import tap, wire
from tether.crypt.ctl import CryptClient, CryptError
from tether.crypt.keyring import DEFAULT_ROTATION, Keyring, Plan, load_identity
from tether.errors import Forbidden, SystemFailure
from tether.model import Endpoint, Network
from tether.store.etcd import StoreError

if TYPE_CHECKING:
    from tether.cluster.state import ClusterStore
    from tether.drivers.overlay import Remote
    from tether.kernel.rtnl import Rtnl

log = logging.getLogger("tether.crypt")

TAP_PREFIX = "ex-"
ALIAS_PREFIX = "tether:crypt:"
TICK = 1.0


def tap_name(net: Network) -> str:
    return TAP_PREFIX + net.id[:12]


def encrypted(net: Network) -> bool:
    return net.driver == "overlay" and bool((net.driver_state or {}).get("encrypted"))


def vni_of(net: Network) -> int:
    return int((net.driver_state or {}).get("vni") or 0)


class Encryption:
    def __init__(
        self,
        rtnl: Rtnl,
        cluster: ClusterStore,
        root: str,
        exec_root: str,
        port: int,
        underlay_mtu: int,
        rotation: float = DEFAULT_ROTATION,
    ) -> None:
        self.rtnl = rtnl
        self.cluster = cluster
        self.port = port
        self.underlay_mtu = underlay_mtu
        self.rotation = rotation
        self.identity_path = os.path.join(root, "crypt", "node.key")
        self.keyring = Keyring(
            cluster.node.name, load_identity(self.identity_path), self._dirty_soon
        )
        cluster.extensions["crypt"] = self.keyring
        self.client = CryptClient(exec_root)
        self.client.on_lost = self._lost
        # Encrypted networks whose port this node made, and their remote endpoints.
        self.nets: dict[str, Network] = {}
        self.remotes: dict[str, list[Remote]] = {}
        # What the data path was last told (so only changes are sent).
        self._told_keys: dict[int, tuple[dict[int, bytes], int]] = {}
        self._told_remotes: dict[int, list[list[Any]]] = {}
        self._told_peers: dict[str, str] | None = None
        self._told_nets: set[int] = set()
        self._configured = False
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        # A data path left by the previous tetherd carries traffic on: adopt it first.
        if self.client.adopt():
            self._forget_told()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Live restore: the data path keeps carrying traffic while tetherd is away.
        self.client.detach()

    def _dirty_soon(self) -> None:
        self._dirty.set()

    def _lost(self) -> None:
        self._forget_told()
        self._dirty.set()

    def _forget_told(self) -> None:
        self._told_keys.clear()
        self._told_remotes.clear()
        self._told_peers = None
        self._told_nets.clear()
        self._configured = False

    # -- the overlay driver's hooks --------------------------------------------------------

    async def ensure(self, net: Network, bridge: int, mtu: int) -> bool:
        """The network's TAP port on its bridge, and the data path carrying it.  Returns
        whether anything in the kernel changed."""
        if ":" in self.cluster.node.addr:
            # The data path is IPv4 only (its socket, header sizes, firewall rules): a node
            # advertising IPv6 carries no encrypted network rather than a broken one.
            raise SystemFailure(
                f"encrypted overlay network {net.name} needs an IPv4 --cluster-advertise "
                f"address (this node advertises {self.cluster.node.addr})"
            )
        name = tap_name(net)
        changed = False
        link = await self.rtnl.link(name)
        if link is None:
            try:
                tap.create_persistent(name)
            except OSError as exc:
                raise SystemFailure(f"cannot make the encrypted port {name}: {exc}") from None
            index = await self.rtnl.index(name)
            if index is None:
                raise SystemFailure(f"encrypted port {name} vanished")
            await self.rtnl.set_link(index, ifalias=ALIAS_PREFIX + net.id)
            await self.rtnl.no_ipv6_link_local(index)
            await self.rtnl.set_link(index, mtu=mtu, master=bridge)
            await self.rtnl.up(index)
            changed = True
        else:
            if link.master != bridge or link.mtu != mtu:
                await self.rtnl.set_link(link.index, mtu=mtu, master=bridge)
                changed = True
            if not link.up:
                await self.rtnl.up(link.index)
                changed = True
        self.nets[net.id] = net
        self._dirty.set()
        return changed

    async def joined(self, inner: Rtnl, ep: Endpoint) -> None:
        """A container's interface on an encrypted network: its TCP builds super-packets
        whose seal fits one UDP GSO send (at 1500 bytes, 63 KB instead of 64: one sendmsg
        and one receive per frame instead of two)."""
        if ep.index:
            await inner.set_link(
                ep.index, gso_max_size=wire.max_frame(self.underlay_mtu) - wire.ETH_LEN
            )

    async def program(self, net: Network, remotes: list[Remote]) -> int:
        old = {(r.ip, r.mac, r.vtep) for r in self.remotes.get(net.id, [])}
        self.remotes[net.id] = list(remotes)
        new = {(r.ip, r.mac, r.vtep) for r in remotes}
        self._dirty.set()
        return len(old ^ new)

    async def delete(self, net: Network) -> None:
        self.nets.pop(net.id, None)
        self.remotes.pop(net.id, None)
        vni = vni_of(net)
        if self.client.running and vni in self._told_nets:
            with contextlib.suppress(CryptError):
                self.client.request({"op": "forget", "vni": vni})
        self._told_nets.discard(vni)
        self._told_keys.pop(vni, None)
        self._told_remotes.pop(vni, None)
        index = await self.rtnl.index(tap_name(net))
        if index is not None:
            await self.rtnl.delete_in_thread(index)
        if not self.nets and self.client.running:
            self.client.quit()
            self._forget_told()

    async def reconcile(self, nets: list[Network]) -> int:
        """Stray ex- ports (of networks this node no longer has) go."""
        wanted = {n.id[:12] for n in nets if encrypted(n)}
        changes = 0
        for link in self.rtnl.links("tun"):
            if link.name.startswith(TAP_PREFIX) and link.name[len(TAP_PREFIX) :] not in wanted:
                if link.alias and not link.alias.startswith(ALIAS_PREFIX):
                    continue
                log.info("removing stray encrypted port name=%s", link.name)
                await self.rtnl.delete_in_thread(link.index)
                changes += 1
        return changes

    # -- the API ---------------------------------------------------------------------------

    async def rotate(self, net: Network) -> int:
        """A new key for the network now (tether network rotate-key)."""
        if not encrypted(net):
            raise Forbidden(f"network {net.name} is not encrypted (-o encrypted)")
        self.cluster.require()
        await self._register()
        try:
            epoch = await self.keyring.new_epoch(self.cluster.client, net.id)
        except RuntimeError as exc:
            raise SystemFailure(f"rotating the key of {net.name}: {exc}") from None
        self._dirty.set()
        return epoch

    def status(self, net: Network) -> dict[str, Any]:
        """What `network inspect` shows under "Encryption" (this node's view)."""
        doc = self.keyring.epochs.get(net.id)
        plan = self.keyring.plan(net.id, time.monotonic())
        out: dict[str, Any] = {
            "Cipher": "AES-256-GCM",
            "NetworkId": vni_of(net),  # in every packet's header (the VXLAN id)
            "Port": self.port,
            "KeyEpoch": doc.epoch if doc else 0,
            "KeyCreated": _iso(doc.created) if doc else "",
            "KeyCreatedBy": doc.by if doc else "",
            # The nodes the current key is sealed for (who can read this network's traffic).
            "KeyHolders": sorted(self.keyring.sealed.get(net.id, {}).get(doc.epoch, {}))
            if doc
            else [],
            "NextRotation": _iso(doc.created + self.rotation) if doc else "",
            "HeldEpochs": sorted(plan.keys),
            "SendEpoch": plan.send,
            "DataPath": None,
        }
        if self.client.running:
            try:
                stats = self.client.request({"op": "stats"})
            except CryptError as exc:
                out["DataPath"] = {"Error": str(exc)}
                return out
            mine = stats["networks"].get(str(vni_of(net)), {})
            out["DataPath"] = {
                "Pid": stats["pid"],
                "Session": stats["session"],
                "Port": stats["port"],
                # "C" (_fastcrypt.c moves the frames) or "Python" (it could not be built).
                "Engine": stats.get("engine", ""),
                "Attached": bool(mine.get("attached")),
                "Counters": {
                    k: v
                    for k, v in mine.items()
                    if type(v) is int and k not in ("send_epoch", "remotes")
                },
                "NodeCounters": stats["global"],
            }
        return out

    # -- the worker ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), TICK)
            self._dirty.clear()
            try:
                async with self._lock:
                    await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("encryption sync failed")

    async def sync(self) -> None:
        """One pass: the store's part (when it answers), then the data path's."""
        if self.cluster.connected.is_set():
            try:
                await self._sync_store()
            except StoreError as exc:
                log.info("encryption: cluster store: %s", exc.message)
        self._sync_datapath()
        if self.cluster.connected.is_set():
            try:
                await self._acknowledge()
            except StoreError as exc:
                log.info("encryption: cluster store: %s", exc.message)

    def _cluster_encrypted(self) -> list[Network]:
        return [n for n in self.cluster.networks.values() if encrypted(n)]

    async def _register(self) -> None:
        session = self.client.session if self.client.running else ""
        await self.keyring.register(
            self.cluster.client, self.cluster.lease_id(), self.cluster.node.addr, session
        )

    async def _sync_store(self) -> None:
        nets = self._cluster_encrypted()
        if not nets and not self.nets:
            # No encrypted network left: this node's registration goes too (nothing of
            # them stays in the store).
            await self.keyring.unregister(self.cluster.client)
            return
        await self._register()
        wall = time.time()
        for net in nets:
            if net.id not in self.keyring.epochs or self.keyring.due(net.id, self.rotation, wall):
                await self.keyring.new_epoch(self.cluster.client, net.id)
            else:
                await self.keyring.seal_missing(self.cluster.client, net.id)

    async def _acknowledge(self) -> None:
        lease = self.cluster.lease_id()
        for net in list(self.nets.values()):
            told = self._told_keys.get(vni_of(net))
            newest = self.keyring.newest(net.id)
            if told is not None and newest and newest in told[0]:
                await self.keyring.acknowledge(self.cluster.client, lease, net.id, newest)

    def _sync_datapath(self) -> None:
        if not self.nets:
            return
        # Until the store was read, keys and sessions are unknown, not absent: the data
        # path (adopted, or just started) keeps what it has.
        known = self.keyring.listed
        try:
            if self.client.ensure():
                self._forget_told()
                self._dirty.set()  # the new session must be registered
            if not self._configured:
                self.client.request(
                    {
                        "op": "config",
                        "addr": self.cluster.node.addr,
                        "port": self.port,
                        "mtu": self.underlay_mtu,
                    }
                )
                self._configured = True
            now = time.monotonic()
            for net in list(self.nets.values()):
                vni = vni_of(net)
                if vni not in self._told_nets:
                    self.client.request({"op": "network", "vni": vni, "tap": tap_name(net)})
                    self._told_nets.add(vni)
                if known and net.id in self.keyring.epochs:
                    self._tell_keys(vni, self.keyring.plan(net.id, now))
                remotes = _remotes(self.remotes.get(net.id, []))
                if self._told_remotes.get(vni) != remotes:
                    self.client.request({"op": "remotes", "vni": vni, "remotes": remotes})
                    self._told_remotes[vni] = remotes
            peers = self.keyring.sessions()
            if known and peers != self._told_peers:
                self.client.request({"op": "peers", "sessions": peers})
                self._told_peers = peers
        except CryptError as exc:
            log.warning("encryption: %s", exc)
            self._forget_told()

    def _tell_keys(self, vni: int, plan: Plan) -> None:
        told = self._told_keys.get(vni)
        if told is not None and told == (plan.keys, plan.send):
            return
        self.client.request(
            {
                "op": "keys",
                "vni": vni,
                "keys": {str(e): base64.b64encode(k).decode() for e, k in plan.keys.items()},
                "send": plan.send,
            }
        )
        self._told_keys[vni] = (dict(plan.keys), plan.send)


def _remotes(remotes: list[Remote]) -> list[list[Any]]:
    """[[MAC, node address, [IPs]]] for the data path, in a stable order."""
    by_mac: dict[tuple[str, str], list[str]] = {}
    for r in remotes:
        by_mac.setdefault((r.mac, r.vtep), []).append(r.ip)
    return [[mac, vtep, sorted(ips)] for (mac, vtep), ips in sorted(by_mac.items())]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
