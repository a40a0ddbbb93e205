"""Encrypted networks' keys in the cluster store: made by one node, readable by members only.

Under the cluster prefix (cluster/keys.py has the layout):

    crypt/nodes/<node>               {Addr, Pub, Session}              the node's lease
    crypt/epochs/<net id>            {Epoch, Created, By, Members}     until network rm
    crypt/keys/<net id>/<epoch>/<node>   {Pub, Sealed}: the epoch's key for that node
    crypt/acks/<net id>/<node>       the newest epoch the node's data path holds   its lease

- **Who can read a key.**  Each node has an X25519 key pair (ROOT/crypt/node.key, 0600, made
  on first start); its public half is in `crypt/nodes/<node>`.  A network key (32 random
  bytes) is stored only sealed to each node's public key with HPKE (RFC 9180: X25519,
  HKDF-SHA256, AES-256-GCM; `cryptography`'s implementation), the network, epoch and node
  bound in as `info`.  Reading etcd gives nobody a key; only a node's private key opens its
  copy.  Whoever can *write* etcd could register a public key of their own and be handed
  the next key: etcd with TLS client certificates (docs/cluster.md) is what keeps that out.
- **Made by one node.**  The first key (epoch 1) and every rotation are one transaction
  that holds only if the epoch document is unchanged since the node read it (and the
  network still exists): when several nodes try at once, exactly one key wins.
- **Who gets it.**  The nodes registered at that moment (their `crypt/nodes` key lives on
  their lease): a node whose lease is gone is not given the next key, so it loses access at
  the next rotation.  A node that registers later (a new node, or one back after its lease
  ended) is given the current key by any node that holds it.
- **Rotation without a stall.**  Receivers accept the new epoch as soon as they hold it and
  acknowledge it (`crypt/acks`); senders switch to it when every registered node has
  acknowledged, or after ACK_WAIT at most (a node whose tetherd is down cannot acknowledge);
  the previous epoch is still accepted for PREVIOUS_GRACE after the switch, so packets
  in flight and nodes a moment behind are not dropped, and a TCP stream sees no gap.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from tether.cluster import keys
from tether.store.etcd import Compare, EtcdClient, KeyValue, Op

log = logging.getLogger("tether.crypt")

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
KEY_LEN = 32
ACK_WAIT = 10.0  # seconds a sender waits for every node to hold a new key before using it
PREVIOUS_GRACE = 30.0  # seconds the previous epoch is still accepted after the switch
DEFAULT_ROTATION = 12 * 3600  # seconds: Docker's encrypted overlays rotate every 12 h


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def load_identity(path: str) -> X25519PrivateKey:
    """This node's key pair, made on first use (the private half never leaves the node)."""
    try:
        with open(path, "rb") as f:
            return X25519PrivateKey.from_private_bytes(f.read())
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    key = X25519PrivateKey.generate()
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, key.private_bytes_raw())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


def wrap_info(net_id: str, epoch: int, node: str) -> bytes:
    return f"tether-crypt network key|{net_id}|{epoch}|{node}".encode()


def seal_for(pub: bytes, net_id: str, epoch: int, node: str, key: bytes) -> str:
    """The stored form of `key` for `node`: only its private key opens it."""
    sealed = SUITE.encrypt(
        key, X25519PublicKey.from_public_bytes(pub), info=wrap_info(net_id, epoch, node)
    )
    return _json({"Pub": _b64(pub), "Sealed": _b64(sealed)})


def open_sealed(
    identity: X25519PrivateKey, value: bytes, net_id: str, epoch: int, node: str
) -> bytes:
    doc = json.loads(value)
    key = SUITE.decrypt(
        base64.b64decode(doc["Sealed"]), identity, info=wrap_info(net_id, epoch, node)
    )
    if len(key) != KEY_LEN:
        raise ValueError("a network key is 32 bytes")
    return key


@dataclass(frozen=True)
class CryptNode:
    name: str
    addr: str
    pub: bytes
    session: str


@dataclass(frozen=True)
class Epoch:
    epoch: int
    created: float  # unix time
    by: str
    members: tuple[str, ...]
    revision: int  # mod_revision of the document: the rotation transaction compares it


@dataclass
class Plan:
    """What one network's data path should hold: keys by epoch, and the epoch to send with."""

    keys: dict[int, bytes] = field(default_factory=dict)
    send: int = 0


class Keyring:
    """The `crypt/` keys of the cluster store, followed (the ClusterStore hands every change
    here, cluster/state.py `extensions`), and the transactions that write them."""

    def __init__(
        self, me: str, identity: X25519PrivateKey, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.me = me
        self.identity = identity
        self.pub = identity.public_key().public_bytes_raw()
        self.on_change = on_change
        self.nodes: dict[str, CryptNode] = {}
        self.epochs: dict[str, Epoch] = {}
        # The stored (sealed) keys: net -> epoch -> node -> the JSON value.
        self.sealed: dict[str, dict[int, dict[str, bytes]]] = {}
        self.acks: dict[str, dict[str, int]] = {}
        # What this node opened: net -> epoch -> key.
        self.held: dict[str, dict[int, bytes]] = {}
        self.failed: set[tuple[str, int]] = set()  # sealed keys this node could not open
        # When this node first held an epoch, and when it began sending with one (monotonic).
        self._since: dict[tuple[str, int], float] = {}
        self._switched: dict[str, tuple[int, float]] = {}
        # Whether the store has been listed once: before that, this node knows no key and no
        # session, which must not be taken for "none" (a restarted tetherd would empty the
        # data path it adopted).
        self.listed = False

    # -- following the store (cluster/state.py calls these in its watch) ------------------

    def relisted(self, kvs: list[KeyValue]) -> None:
        self.nodes.clear()
        self.epochs.clear()
        self.sealed.clear()
        self.acks.clear()
        for kv in kvs:
            self._put(kv)
        self._open_mine()
        self.listed = True
        self.on_change()

    def changed(self, key: str, kv: KeyValue | None) -> None:
        if kv is None:
            self._delete(key)
        else:
            self._put(kv)
            self._open_mine()
        self.on_change()

    def network_prefixes(self, net_id: str) -> list[str]:
        """What goes with a network (deleted in the same transaction as the network)."""
        return [keys.crypt_epoch(net_id), keys.crypt_keys_prefix(net_id), keys.crypt_acks(net_id)]

    def _put(self, kv: KeyValue) -> None:
        parts = kv.key.split("/")
        try:
            if parts[:2] == ["crypt", "nodes"] and len(parts) == 3:
                doc = json.loads(kv.value)
                self.nodes[parts[2]] = CryptNode(
                    parts[2],
                    str(doc.get("Addr", "")),
                    base64.b64decode(doc.get("Pub", "")),
                    str(doc.get("Session", "")),
                )
            elif parts[:2] == ["crypt", "epochs"] and len(parts) == 3:
                doc = json.loads(kv.value)
                self.epochs[parts[2]] = Epoch(
                    int(doc["Epoch"]),
                    float(doc.get("Created", 0)),
                    str(doc.get("By", "")),
                    tuple(str(m) for m in doc.get("Members", [])),
                    kv.mod_revision,
                )
            elif parts[:2] == ["crypt", "keys"] and len(parts) == 5:
                self.sealed.setdefault(parts[2], {}).setdefault(int(parts[3]), {})[parts[4]] = (
                    kv.value
                )
            elif parts[:2] == ["crypt", "acks"] and len(parts) == 4:
                self.acks.setdefault(parts[2], {})[parts[3]] = int(kv.value)
        except (ValueError, KeyError, TypeError):
            log.warning("cluster store: key %s is not what tether-crypt wrote; ignored", kv.key)

    def _delete(self, key: str) -> None:
        parts = key.split("/")
        if parts[:2] == ["crypt", "nodes"] and len(parts) == 3:
            self.nodes.pop(parts[2], None)
        elif parts[:2] == ["crypt", "epochs"] and len(parts) == 3:
            self.epochs.pop(parts[2], None)
            self.held.pop(parts[2], None)
        elif parts[:2] == ["crypt", "keys"] and len(parts) == 5:
            by_epoch = self.sealed.get(parts[2], {})
            by_epoch.get(int(parts[3]), {}).pop(parts[4], None)
            if not by_epoch.get(int(parts[3]), True):
                del by_epoch[int(parts[3])]
        elif parts[:2] == ["crypt", "acks"] and len(parts) == 4:
            self.acks.get(parts[2], {}).pop(parts[3], None)

    def _open_mine(self) -> None:
        """Open this node's sealed keys of the epochs still valid (current and previous)."""
        for net_id, by_epoch in self.sealed.items():
            doc = self.epochs.get(net_id)
            if doc is None:
                continue
            held = self.held.setdefault(net_id, {})
            for epoch, by_node in by_epoch.items():
                value = by_node.get(self.me)
                if value is None or epoch in held or epoch < doc.epoch - 1:
                    continue
                if (net_id, epoch) in self.failed:
                    continue
                try:
                    held[epoch] = open_sealed(self.identity, value, net_id, epoch, self.me)
                except Exception as exc:
                    # Sealed for another key pair (this node's state was remade): the next
                    # wrap round seals it again for the registered key.
                    self.failed.add((net_id, epoch))
                    log.warning(
                        "key epoch %d of network %s: cannot open: %s", epoch, net_id[:12], exc
                    )
            for epoch in [e for e in held if e < doc.epoch - 1 or e > doc.epoch]:
                del held[epoch]

    # -- deciding ------------------------------------------------------------------------

    def sessions(self) -> dict[str, str]:
        """Every other node's data-path session, by address."""
        return {
            n.addr: n.session
            for n in self.nodes.values()
            if n.name != self.me and n.session and n.addr
        }

    def newest(self, net_id: str) -> int:
        held = self.held.get(net_id)
        return max(held) if held else 0

    def plan(self, net_id: str, now: float) -> Plan:
        """The keys this node's data path should hold for a network, and the send epoch."""
        held = self.held.get(net_id) or {}
        if not held:
            return Plan()
        newest = max(held)
        since = self._since.setdefault((net_id, newest), now)
        waiting = [
            n for n in self.nodes if n != self.me and self.acks.get(net_id, {}).get(n, 0) < newest
        ]
        if newest - 1 not in held or not waiting or now - since >= ACK_WAIT:
            send = newest
        else:
            send = newest - 1
        switched = self._switched.get(net_id)
        if switched is None or switched[0] != send:
            switched = (send, now)
            self._switched[net_id] = switched
            if send == newest and newest - 1 in held:
                log.info(
                    "network %s: sending with key epoch %d%s",
                    net_id[:12],
                    send,
                    f" (no acknowledgement from {', '.join(sorted(waiting))})" if waiting else "",
                )
        keep = {newest, send}
        if send - 1 in held and now - switched[1] < PREVIOUS_GRACE:
            keep.add(send - 1)
        return Plan({e: held[e] for e in sorted(keep)}, send)

    def due(self, net_id: str, rotation: float, wall: float) -> bool:
        doc = self.epochs.get(net_id)
        return doc is not None and wall - doc.created >= rotation

    def missing(self, net_id: str) -> list[CryptNode]:
        """Registered nodes without a copy of the current key sealed to their key pair."""
        doc = self.epochs.get(net_id)
        if doc is None:
            return []
        have = self.sealed.get(net_id, {}).get(doc.epoch, {})
        out = []
        for n in self.nodes.values():
            value = have.get(n.name)
            if value is None or _sealed_pub(value) != n.pub:
                out.append(n)
        return out

    # -- writing (one node wins) ---------------------------------------------------------

    def _sealed_ops(self, net_id: str, epoch: int, key: bytes) -> tuple[list[Op], list[str]]:
        ops = []
        members = []
        for n in sorted(self.nodes.values(), key=lambda n: n.name):
            if len(n.pub) != 32:
                continue
            ops.append(
                Op.put(
                    keys.crypt_key(net_id, epoch, n.name),
                    seal_for(n.pub, net_id, epoch, n.name, key),
                )
            )
            members.append(n.name)
        return ops, members

    async def new_epoch(self, client: EtcdClient, net_id: str) -> int:
        """Make the network's next key (epoch 1 if it has none): one transaction that holds
        only if nobody else did it first.  Returns the epoch now current (ours or the
        winner's); 0 if the network is gone."""
        for _ in range(3):
            doc = self.epochs.get(net_id)
            epoch = (doc.epoch if doc else 0) + 1
            key = secrets.token_bytes(KEY_LEN)
            ops, members = self._sealed_ops(net_id, epoch, key)
            if self.me not in members:
                raise RuntimeError("this node is not registered for encryption yet")
            ops.append(
                Op.put(
                    keys.crypt_epoch(net_id),
                    _json(
                        {"Epoch": epoch, "Created": time.time(), "By": self.me, "Members": members}
                    ),
                )
            )
            if doc is not None and doc.epoch >= 2:
                # Two epochs are kept (current and previous): older sealed keys go.
                ops.append(Op.delete_prefix(keys.crypt_keys_prefix(net_id, doc.epoch - 1)))
            compares = [Compare.version(keys.network(net_id), ">", 0)]
            if doc is None:
                compares.append(Compare.absent(keys.crypt_epoch(net_id)))
            else:
                compares.append(Compare.mod_revision(keys.crypt_epoch(net_id), "=", doc.revision))
            result = await client.txn(compares, ops)
            if result.succeeded:
                log.info(
                    "network %s: key epoch %d made for %s", net_id[:12], epoch, ", ".join(members)
                )
                return epoch
            # Someone else was first (or the network went): read what is there now.
            if await client.get(keys.network(net_id)) is None:
                return 0
            kv = await client.get(keys.crypt_epoch(net_id))
            if kv is not None:
                self._put(kv)
                now_doc = self.epochs.get(net_id)
                if now_doc is not None and now_doc.epoch >= epoch:
                    return now_doc.epoch
        raise RuntimeError("the cluster store kept changing")

    async def seal_missing(self, client: EtcdClient, net_id: str) -> int:
        """Give the current key to registered nodes that lack it (a node that joined after
        the key was made), if this node holds it.  Returns how many were given."""
        doc = self.epochs.get(net_id)
        if doc is None:
            return 0
        key = self.held.get(net_id, {}).get(doc.epoch)
        if key is None:
            return 0
        given = 0
        for n in self.missing(net_id):
            if len(n.pub) != 32:
                continue
            k = keys.crypt_key(net_id, doc.epoch, n.name)
            old = self.sealed.get(net_id, {}).get(doc.epoch, {}).get(n.name)
            compares = [Compare.mod_revision(keys.crypt_epoch(net_id), "=", doc.revision)]
            compares.append(Compare.absent(k) if old is None else Compare.value(k, "=", old))
            result = await client.txn(
                compares, [Op.put(k, seal_for(n.pub, net_id, doc.epoch, n.name, key))]
            )
            if result.succeeded:
                given += 1
                log.info("network %s: key epoch %d given to %s", net_id[:12], doc.epoch, n.name)
        return given

    async def register(self, client: EtcdClient, lease: int, addr: str, session: str) -> bool:
        """This node's public key, address and data-path session, under its lease (when
        what the store has differs).  Returns whether it wrote."""
        want = CryptNode(self.me, addr, self.pub, session)
        if self.nodes.get(self.me) == want:
            return False
        await client.put(
            keys.crypt_node(self.me),
            _json({"Addr": addr, "Pub": _b64(self.pub), "Session": session}),
            lease=lease,
        )
        self.nodes[self.me] = want
        return True

    async def unregister(self, client: EtcdClient) -> None:
        if self.me in self.nodes:
            await client.delete(keys.crypt_node(self.me))
            self.nodes.pop(self.me, None)

    async def acknowledge(self, client: EtcdClient, lease: int, net_id: str, epoch: int) -> bool:
        if self.acks.get(net_id, {}).get(self.me) == epoch:
            return False
        await client.txn(
            [Compare.version(keys.network(net_id), ">", 0)],
            [Op.put(keys.crypt_ack(net_id, self.me), str(epoch), lease)],
        )
        self.acks.setdefault(net_id, {})[self.me] = epoch
        return True


def _sealed_pub(value: bytes) -> bytes:
    try:
        return base64.b64decode(json.loads(value)["Pub"])
    except (ValueError, KeyError, TypeError):
        return b""
