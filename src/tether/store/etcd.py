"""The cluster store: an asyncio client for etcd's v3 API (etcd >= 3.4).

It speaks the documented v3 JSON gateway (`/v3/kv/range|put|deleterange|txn|compaction`,
`/v3/watch`, `/v3/lease/grant|keepalive|revoke|timetolive`, base64 keys and values, int64s as
strings) over aiohttp, not gRPC.  Why: the maintained gRPC client (aetcd 1.0) opens an
insecure channel to one host:port (no TLS option, no failover across members), and tether
needs client certificates and several members; over the gateway a put+get round trip costs
2.1 ms against aetcd's 1.4 ms (one member on loopback, this VM), a watch event arrives in
2.5 ms against 2.0, and aiohttp beat httpx (5.7 ms, 3.9 ms).  On a three-member cluster
(bench/bench_etcd_client.py) a put+get is ~4 ms at the median, a put seen by a watch on
another member ~3.3 ms.  Importing this module adds ~0.25 s to tetherd's start (aiohttp;
aetcd with grpcio costs ~0.05 s): import it only with --cluster-store.  The gateway's two
known limits are designed around:

- a watch cannot be cancelled inside its stream (etcd-io/etcd#12333): every watch has a
  connection of its own, and cancelling it closes that connection;
- a streamed lease keepalive is ignored after its first message (etcd-io/etcd#8237): each
  renewal is one POST.

What the rest of tether sees is this module's types only (KeyValue, Event, Compare, Op,
Lease, KeepAlive, Watch, and the errors); nothing else imports aiohttp.

Every key the client writes or reads is under its prefix, so several clusters can share one
etcd; keys in and out of this API are relative to it.

Failures: a request goes to the member that answered last and, when that one is down (or
has no leader), to the next, within bounded timeouts; when no member answers it raises
StoreUnavailable, whose message names the store.  A transaction whose request may have
reached a member that then failed is not sent again (it may have been applied): the error
says so and the caller re-reads.  Puts and deletes are sent again (twice is the same as
once).  As with any etcd client, a write that timed out on a hung member can still be
applied when that member resumes, after later writes: where that matters (a delete that
must not be undone by a late put), guard writes with a transaction's compare, keep records
on leases, and re-list now and then.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from tether.errors import InvalidParameter, TetherError

log = logging.getLogger("tether.store.etcd")

DEFAULT_PORT = 2379

# etcd's gRPC interceptor rejects a request at once with "etcdserver: no leader" when this
# metadata is set and the member has lost its leader (the gateway passes Grpc-Metadata-*
# headers on as metadata): a member cut off from the others then fails fast instead of
# hanging until the request times out, and the client moves to the next member.  For
# watches it also makes the member cancel our stream when it loses its leader.
_HEADERS = {"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"}

# gRPC status codes the gateway reports in {"error", "message", "code"}.
_CANCELLED, _UNKNOWN, _INVALID, _DEADLINE, _NOT_FOUND = 1, 2, 3, 4, 5
_OUT_OF_RANGE, _UNAVAILABLE = 11, 14

# A single message of a watch stream may not exceed this (etcd's own request limit is
# 1.5 MiB, but a response gathering many events can be larger).
_MAX_MESSAGE = 256 * 1024 * 1024


# -- errors ---------------------------------------------------------------------------------


class StoreError(TetherError):
    """etcd answered with an error (bad request, quota, ...); `code` is its gRPC code."""

    status = 500

    def __init__(self, message: str, code: int = _UNKNOWN) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(StoreError):
    """No member of the cluster store answered (message: `cluster store URL unreachable:
    why`).  `outcome_unknown` is set when a write may have been applied all the same."""

    status = 503

    def __init__(self, message: str, outcome_unknown: bool = False) -> None:
        super().__init__(message, _UNAVAILABLE)
        self.outcome_unknown = outcome_unknown


class LeaseNotFound(StoreError):
    """The lease has expired or was revoked."""

    status = 404


class RevisionCompacted(StoreError):
    """The revision asked for has been compacted away.  Raised by get_prefix(revision=...)
    and, as the distinct signal, by a Watch's iteration: the watch is over; re-list the
    prefix and watch again from the listing's revision + 1."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message, _OUT_OF_RANGE)
        self.compact_revision = compact_revision


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Client TLS for etcd, Docker's --cluster-store-opt kv.cacertfile/kv.certfile/kv.keyfile."""

    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def context(self) -> ssl.SSLContext:
        if (self.certfile is None) != (self.keyfile is None):
            raise InvalidParameter(
                "cluster store TLS needs both kv.certfile and kv.keyfile, or neither"
            )
        try:
            ctx = ssl.create_default_context(cafile=self.cafile)
            if self.certfile is not None and self.keyfile is not None:
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidParameter(f"cluster store TLS: {_os_reason(exc)}") from None
        return ctx


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed --cluster-store value: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`, also with
    http:// or https://.  `etcd://` means https when TLS files are given, http otherwise."""

    scheme: str  # etcd, http or https as written
    members: tuple[str, ...]  # HOST:PORT, IPv6 hosts in brackets
    path: str  # the key prefix written after the members, "" if none

    @property
    def display(self) -> str:
        return f"{self.scheme}://{','.join(self.members)}{'/' + self.path if self.path else ''}"

    def base_urls(self, tls: bool) -> list[str]:
        scheme = self.scheme
        if scheme == "etcd":
            scheme = "https" if tls else "http"
        return [f"{scheme}://{m}" for m in self.members]


def parse_store_url(spec: str) -> StoreURL:
    def bad(why: str) -> InvalidParameter:
        return InvalidParameter(f"invalid cluster store {spec!r}: {why}")

    scheme, sep, rest = spec.strip().partition("://")
    if not sep:
        raise bad("expected etcd://HOST:PORT[,HOST:PORT...]")
    scheme = scheme.lower()
    if scheme not in ("etcd", "http", "https"):
        raise bad(f"unsupported scheme {scheme!r} (etcd, http or https)")
    members: list[str] = []
    path = ""
    items = rest.split(",")
    for i, item in enumerate(items):
        item = item.strip()
        if "://" in item:  # http://a:2379,http://b:2379
            item_scheme, _, item = item.partition("://")
            if item_scheme.lower() != scheme:
                raise bad("all members must use the same scheme")
        if i == len(items) - 1:
            item, _, path = item.partition("/")
        if not item:
            raise bad("empty member address")
        members.append(_host_port(item, bad))
    return StoreURL(scheme, tuple(members), path.strip("/"))


def _host_port(item: str, bad: Callable[[str], InvalidParameter]) -> str:
    if item.startswith("["):
        host, _, tail = item[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"invalid IPv6 address {host!r}") from None
        host = f"[{host}]"
        port_text = tail[1:] if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise bad(f"invalid member address {item!r}")
    else:
        host, _, port_text = item.partition(":")
        if not host or any(c in host for c in "/?#@ "):
            raise bad(f"invalid member address {item!r}")
    if not port_text:
        return f"{host}:{DEFAULT_PORT}"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad(f"invalid port {port_text!r}")
    return f"{host}:{int(port_text)}"


# -- data -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str  # relative to the client's prefix
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Range:
    kvs: list[KeyValue]
    revision: int  # the store's revision this listing is a snapshot of
    count: int  # matching keys (more than len(kvs) when a limit cut the listing)
    more: bool


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["put", "delete"]
    kv: KeyValue  # for a delete: the key and the deleting revision only
    prev_kv: KeyValue | None = None  # with prev_kv=True on the watch

    @property
    def key(self) -> str:
        return self.kv.key

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


_RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
_TARGETS = {
    "version": "VERSION",
    "create_revision": "CREATE",
    "mod_revision": "MOD",
    "value": "VALUE",
    "lease": "LEASE",
}
CompareOp = Literal["=", "!=", "<", ">"]
CompareTarget = Literal["version", "create_revision", "mod_revision", "value", "lease"]


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: `target(key) op operand`.  A key that does not exist
    has version, create_revision and mod_revision 0 (so `version(k) = 0` is "absent")."""

    key: str
    target: CompareTarget
    op: CompareOp
    operand: int | bytes
    # The condition holds for every key under `key` (etcd >= 3.3 range compares); an empty
    # range compares as one absent key, so `version = 0` over a prefix means "no key".
    prefix: bool = False

    @classmethod
    def version(cls, key: str, op: CompareOp, n: int) -> Compare:
        return cls(key, "version", op, n)

    @classmethod
    def prefix_absent(cls, prefix: str) -> Compare:
        """No key exists under `prefix`."""
        return cls(prefix, "version", "=", 0, prefix=True)

    @classmethod
    def create_revision(cls, key: str, op: CompareOp, n: int) -> Compare:
        return cls(key, "create_revision", op, n)

    @classmethod
    def mod_revision(cls, key: str, op: CompareOp, n: int) -> Compare:
        return cls(key, "mod_revision", op, n)

    @classmethod
    def value(cls, key: str, op: CompareOp, value: bytes | str) -> Compare:
        return cls(key, "value", op, _bytes(value))

    @classmethod
    def lease(cls, key: str, op: CompareOp, lease_id: int) -> Compare:
        return cls(key, "lease", op, lease_id)

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, "version", "=", 0)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction's then/else branch."""

    kind: Literal["get", "put", "delete"]
    key: str
    value: bytes = b""
    lease: int = 0
    prefix: bool = False
    prev_kv: bool = False

    @classmethod
    def get(cls, key: str) -> Op:
        return cls("get", key)

    @classmethod
    def get_prefix(cls, prefix: str) -> Op:
        return cls("get", prefix, prefix=True)

    @classmethod
    def put(cls, key: str, value: bytes | str, lease: int = 0) -> Op:
        return cls("put", key, _bytes(value), lease)

    @classmethod
    def delete(cls, key: str, prev_kv: bool = False) -> Op:
        return cls("delete", key, prev_kv=prev_kv)

    @classmethod
    def delete_prefix(cls, prefix: str, prev_kv: bool = False) -> Op:
        return cls("delete", prefix, prefix=True, prev_kv=prev_kv)


@dataclass(frozen=True, slots=True)
class OpResult:
    kind: Literal["get", "put", "delete"]
    kvs: list[KeyValue] = field(default_factory=list)  # get: found; delete: prev_kvs if asked
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool  # the compares held: the `success` branch ran
    revision: int
    results: list[OpResult]


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int  # as granted (etcd raises TTLs below its minimum)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl: int  # seconds left, -1 when the lease is gone
    granted_ttl: int
    keys: list[str]


# -- the client -----------------------------------------------------------------------------


class _Failed(Exception):
    """One member failed one request.  `sent`: the request may have been processed."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class EtcdClient:
    """One connection pool to an etcd cluster, with everything that runs in the background
    for it (lease keepalives, watches): close() stops them all.

    timeout: the most one call may take in all, across members; attempt_timeout: the most
    one member may take to answer before the next is tried (a member whose leader just died
    holds a write until etcd's own 7 s timeout: this is what bounds a write's stall when the
    leader dies; a transaction, which cannot be sent again, gets twice as long);
    connect_timeout: for one TCP (and TLS) connect.  watch_probe: after this long without a message, a watch checks that
    its member still answers (a member that is stopped or cut off sends nothing, and TCP
    does not notice), and moves to another member when it does not.
    """

    def __init__(
        self,
        endpoints: str | StoreURL,
        *,
        prefix: str | None = None,
        tls: TLSFiles | None = None,
        timeout: float = 5.0,
        attempt_timeout: float = 1.0,
        connect_timeout: float = 1.0,
        watch_probe: float = 5.0,
    ) -> None:
        url = endpoints if isinstance(endpoints, StoreURL) else parse_store_url(endpoints)
        self.url = url
        self.store = url.display
        self._ssl = tls.context() if tls is not None else None
        self._bases = url.base_urls(tls is not None)
        self._members = list(url.members)
        self._current = 0
        p = url.path + "/" if prefix is None and url.path else (prefix or "")
        self.prefix = p
        self._prefix = p.encode()
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.connect_timeout = connect_timeout
        self.watch_probe = watch_probe
        self._session: aiohttp.ClientSession | None = None
        self._keepalives: set[KeepAlive] = set()
        self._watches: set[Watch] = set()
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise StoreError(f"cluster store {self.store}: client closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=0,  # watches hold a connection each; unary calls must never queue
                ssl=self._ssl if self._ssl is not None else True,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    def _full(self, key: str) -> bytes:
        return self._prefix + key.encode()

    def _b64key(self, key: str) -> str:
        return _b64(self._full(key))

    def _range_end(self, prefix: str) -> str:
        return _b64(_prefix_end(self._full(prefix)))

    def _strip(self, raw: bytes) -> str:
        if raw.startswith(self._prefix):
            raw = raw[len(self._prefix) :]
        return raw.decode(errors="surrogateescape")

    def _kv(self, d: dict[str, Any]) -> KeyValue:
        return KeyValue(
            key=self._strip(_unb64(d.get("key", ""))),
            value=_unb64(d.get("value", "")),
            create_revision=int(d.get("create_revision", 0)),
            mod_revision=int(d.get("mod_revision", 0)),
            version=int(d.get("version", 0)),
            lease=int(d.get("lease", 0)),
        )

    async def _post_once(
        self, index: int, path: str, body: bytes, timeout: float
    ) -> dict[str, Any]:
        """One request to one member; its answer (which may be an etcd error), or _Failed."""
        session = self._ensure_session()
        connect = min(timeout, self.connect_timeout)
        try:
            async with session.post(
                self._bases[index] + path,
                data=body,
                headers=_HEADERS,
                timeout=aiohttp.ClientTimeout(total=timeout, connect=connect),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except aiohttp.ConnectionTimeoutError:
            raise _Failed(f"connect timed out after {connect:g} s", sent=False) from None
        except aiohttp.ClientConnectorError as exc:
            raise _Failed(_connector_reason(exc), sent=False) from None
        except TimeoutError:
            raise _Failed(f"no answer within {timeout:g} s", sent=True) from None
        except aiohttp.ClientError as exc:
            # Refused in the TLS handshake (a TLS 1.3 server rejects our certificate after
            # we think we are connected): the request was never read.
            refused = isinstance(exc.__cause__, ssl.SSLError)
            raise _Failed(_client_reason(exc), sent=not refused) from None
        except OSError as exc:
            raise _Failed(_os_reason(exc), sent=True) from None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            text = raw[:200].decode(errors="replace").strip()
            raise _Failed(f"HTTP {status} from a server that is not etcd's v3 API: {text}", True)
        return data

    async def _call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        idempotent: bool = True,
        timeout: float | None = None,
        attempt_timeout: float | None = None,
    ) -> dict[str, Any]:
        """POST to the current member, failing over to the others; the answer's JSON."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.timeout)
        per_attempt = attempt_timeout if attempt_timeout is not None else self.attempt_timeout
        if not idempotent:
            per_attempt *= 2
        payload = json.dumps(body).encode()
        reasons: dict[str, str] = {}
        # Members that failed at the transport level (refused, reset, TLS, no answer) this
        # round, as opposed to members that answered "cannot serve now" (an election).
        broken: set[str] = set()
        n = len(self._bases)
        start = self._current
        attempt = 0
        delay = 0.02
        while True:
            index = (start + attempt) % n
            member = self._members[index]
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                data = await self._post_once(index, path, payload, min(remaining, per_attempt))
            except _Failed as exc:
                reasons[member] = exc.reason
                broken.add(member)
                if exc.sent and not idempotent:
                    raise self._unavailable(reasons, outcome_unknown=True) from None
                data = None
            if data is not None:
                err = _error_of(data)
                if err is None:
                    self._current = index
                    return data
                code, message = err
                if code not in (_UNAVAILABLE, _DEADLINE, _CANCELLED):
                    self._current = index
                    raise _store_error(self.store, code, message)
                # The member is up but cannot serve: no leader (rejected before anything was
                # done), or a proposal timed out or lost its leader (it may yet be applied).
                reasons[member] = message.removeprefix("etcdserver: ")
                if "no leader" not in message and not idempotent:
                    raise self._unavailable(reasons, outcome_unknown=True)
            if attempt % n == 0:
                # A whole round failed.  When no member answered at all, the store is down
                # (or refuses us): say so now rather than at the deadline.
                if len(broken) == n:
                    break
                broken.clear()
                # Members that answer but cannot serve (an election) get a moment.
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 2, 0.5)
        raise self._unavailable(reasons)

    def _unavailable(
        self, reasons: dict[str, str], outcome_unknown: bool = False
    ) -> StoreUnavailable:
        by_reason: dict[str, list[str]] = {}
        for member, reason in reasons.items():
            by_reason.setdefault(reason, []).append(member)
        if not by_reason:
            detail = f"no answer within {self.timeout:g} s"
        elif len(by_reason) == 1 and len(self._members) == 1:
            detail = next(iter(by_reason))
        else:
            detail = "; ".join(f"{', '.join(m)}: {r}" for r, m in by_reason.items())
        if outcome_unknown:
            detail += " (the request may have been applied)"
        return StoreUnavailable(
            f"cluster store {self.store} unreachable: {detail}", outcome_unknown
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Check that the store answers (StoreUnavailable if not)."""
        await self._call("/v3/maintenance/status", {})

    async def close(self) -> None:
        """Stop every keepalive and watch of this client and close its connections.  Leases
        are not revoked: their keys expire with them unless another process renews them."""
        if self._closed:
            return
        self._closed = True
        for ka in list(self._keepalives):
            await ka.stop()
        for w in list(self._watches):
            await w.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- keys -------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        data = await self._call("/v3/kv/range", {"key": self._b64key(key)})
        kvs = data.get("kvs") or []
        return self._kv(kvs[0]) if kvs else None

    async def get_prefix(
        self,
        prefix: str = "",
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        start: str = "",
    ) -> Range:
        """Every key under prefix (sorted by key), as of `revision` (0: now).  `start`: the
        first key to return (under prefix), to page through a large prefix with `limit`
        at one `revision`."""
        body: dict[str, Any] = {
            "key": self._b64key(start or prefix),
            "range_end": self._range_end(prefix),
        }
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if keys_only:
            body["keys_only"] = True
        data = await self._call("/v3/kv/range", body)
        kvs = [self._kv(d) for d in data.get("kvs") or []]
        return Range(
            kvs=kvs,
            revision=_revision(data),
            count=int(data.get("count", 0)),
            more=bool(data.get("more", False)),
        )

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        """Write one key (attached to a lease if given); the store's new revision."""
        body: dict[str, Any] = {"key": self._b64key(key), "value": _b64(_bytes(value))}
        if lease:
            body["lease"] = str(lease)
        return _revision(await self._call("/v3/kv/put", body))

    async def delete(self, key: str) -> int:
        """Delete one key; how many were deleted (0 or 1)."""
        data = await self._call("/v3/kv/deleterange", {"key": self._b64key(key)})
        return int(data.get("deleted", 0))

    async def delete_prefix(self, prefix: str) -> int:
        data = await self._call(
            "/v3/kv/deleterange",
            {"key": self._b64key(prefix), "range_end": self._range_end(prefix)},
        )
        return int(data.get("deleted", 0))

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """If every compare holds, run `success`, else `failure`, atomically.  Never resent
        after a failure that may have let it through (StoreUnavailable.outcome_unknown)."""
        body = {
            "compare": [self._compare_json(c) for c in compare],
            "success": [self._op_json(o) for o in success],
            "failure": [self._op_json(o) for o in failure],
        }
        data = await self._call("/v3/kv/txn", body, idempotent=False)
        ran = success if data.get("succeeded") else failure
        results = []
        for op, resp in zip(ran, data.get("responses") or [], strict=False):
            if op.kind == "get":
                r = resp.get("response_range", {})
                results.append(OpResult("get", [self._kv(d) for d in r.get("kvs") or []]))
            elif op.kind == "put":
                results.append(OpResult("put"))
            else:
                r = resp.get("response_delete_range", {})
                prev = [self._kv(d) for d in r.get("prev_kvs") or []]
                results.append(OpResult("delete", prev, int(r.get("deleted", 0))))
        return TxnResult(bool(data.get("succeeded")), _revision(data), results)

    async def create(self, key: str, value: bytes | str, *, lease: int = 0) -> bool:
        """Write key only if it does not exist (compare-and-set allocation): True if this
        call created it.

        When a member fails after the request was sent, the outcome is read back rather
        than guessed: the key holding exactly `value` (on `lease`) means it was created,
        another value means someone else has it, and no key means the create is sent again
        (a late copy of the first one can then only fail its compare).  So give values no
        other writer would (the owner's id): a failover then neither loses an allocation
        nor reports a false conflict."""
        want = _bytes(value)
        for _ in range(3):
            try:
                r = await self.txn([Compare.absent(key)], [Op.put(key, want, lease)])
            except StoreUnavailable as exc:
                if not exc.outcome_unknown:
                    raise
                kv = await self.get(key)
                if kv is None:
                    continue
                return kv.value == want and kv.lease == lease
            return r.succeeded
        raise StoreUnavailable(
            f"cluster store {self.store} unreachable: creating {self.prefix}{key} kept failing "
            "(the request may have been applied)",
            outcome_unknown=True,
        )

    async def replace(
        self, key: str, value: bytes | str, mod_revision: int, *, lease: int = 0
    ) -> bool:
        """Write key only if nobody changed it since `mod_revision` (from a get)."""
        r = await self.txn(
            [Compare.mod_revision(key, "=", mod_revision)], [Op.put(key, value, lease)]
        )
        return r.succeeded

    async def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete key only if nobody changed it since `mod_revision`."""
        r = await self.txn([Compare.mod_revision(key, "=", mod_revision)], [Op.delete(key)])
        return r.succeeded

    async def compact(self, revision: int) -> None:
        """Drop the history before `revision` (what etcd's auto-compaction does)."""
        await self._call("/v3/kv/compaction", {"revision": str(revision)})

    def _compare_json(self, c: Compare) -> dict[str, Any]:
        d: dict[str, Any] = {
            "key": self._b64key(c.key),
            "result": _RESULTS[c.op],
            "target": _TARGETS[c.target],
        }
        if c.prefix:
            d["range_end"] = self._range_end(c.key)
        if c.target == "value":
            d["value"] = _b64(c.operand if isinstance(c.operand, bytes) else b"")
        else:
            d[c.target] = str(int(c.operand) if isinstance(c.operand, int) else 0)
        return d

    def _op_json(self, o: Op) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self._b64key(o.key)}
        if o.prefix:
            d["range_end"] = self._range_end(o.key)
        if o.kind == "get":
            return {"request_range": d}
        if o.kind == "put":
            d["value"] = _b64(o.value)
            if o.lease:
                d["lease"] = str(o.lease)
            return {"request_put": d}
        if o.prev_kv:
            d["prev_kv"] = True
        return {"request_delete_range": d}

    # -- leases -----------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        data = await self._call("/v3/lease/grant", {"TTL": str(int(ttl))})
        return Lease(int(data["ID"]), int(data.get("TTL", ttl)))

    async def refresh(self, lease_id: int, *, attempt_timeout: float | None = None) -> int:
        """Renew a lease once (one POST: see the module's notes); the TTL it now has.
        LeaseNotFound if it has expired or was revoked."""
        data = await self._call(
            "/v3/lease/keepalive", {"ID": str(lease_id)}, attempt_timeout=attempt_timeout
        )
        result = data.get("result", data)
        ttl = int(result.get("TTL", 0))
        if ttl <= 0:
            raise LeaseNotFound(f"lease {lease_id:x} not found (expired or revoked)", _NOT_FOUND)
        return ttl

    async def revoke(self, lease_id: int) -> bool:
        """Revoke a lease, deleting its keys; False if it was already gone."""
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease_id)})
        except LeaseNotFound:
            return False
        return True

    async def time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        data = await self._call("/v3/lease/timetolive", {"ID": str(lease_id), "keys": keys})
        return LeaseInfo(
            id=lease_id,
            ttl=int(data.get("TTL", -1)),
            granted_ttl=int(data.get("grantedTTL", 0)),
            keys=[self._strip(_unb64(k)) for k in data.get("keys") or []],
        )

    def keep_alive(
        self, lease: Lease, on_lost: Callable[[Lease, str], None] | None = None
    ) -> KeepAlive:
        """Renew `lease` in the background every TTL/3 until stopped or lost."""
        ka = KeepAlive(self, lease, on_lost)
        self._keepalives.add(ka)
        ka._start()
        return ka

    # -- watches ----------------------------------------------------------------------------

    def watch(self, key: str, *, start_revision: int = 0, prev_kv: bool = False) -> Watch:
        return self._watch(key, False, start_revision, prev_kv)

    def watch_prefix(self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False) -> Watch:
        """Events on every key under prefix from `start_revision` (0: from now on), in order,
        in batches (`async for events in watch`); see Watch."""
        return self._watch(prefix, True, start_revision, prev_kv)

    def _watch(self, key: str, prefix: bool, start_revision: int, prev_kv: bool) -> Watch:
        self._ensure_session()
        w = Watch(self, key, prefix, start_revision, prev_kv)
        self._watches.add(w)
        w._start()
        return w

    async def _probe(self, index: int) -> str | None:
        """Can member `index` serve a linearizable read?  None if so, else why not."""
        body = json.dumps(
            {"key": self._b64key(""), "range_end": self._range_end(""), "count_only": True}
        ).encode()
        try:
            data = await self._post_once(index, "/v3/kv/range", body, self.attempt_timeout)
        except _Failed as exc:
            return exc.reason
        err = _error_of(data)
        return None if err is None else err[1]


class KeepAlive:
    """The background renewal of one lease, owned by the client (close() stops it).

    Renews every TTL/3 (sooner again after a failure).  While no member answers it keeps
    trying: etcd extends leases when a new leader takes over, so a lease can outlive an
    outage of the whole store.  The lease is reported lost (on_lost(lease, reason), `lost`,
    wait_lost()) only when etcd says it no longer exists: it expired while we could not
    reach etcd, or someone revoked it.  It is never granted again behind the owner's back:
    the owner decides what to re-register under a new lease.
    """

    def __init__(
        self, client: EtcdClient, lease: Lease, on_lost: Callable[[Lease, str], None] | None
    ) -> None:
        self.client = client
        self.lease = lease
        self._on_lost = on_lost
        self._lost = asyncio.Event()
        self.reason: str | None = None
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self.renewed_at = loop.time()
        self.expires_at = self.renewed_at + lease.ttl  # our estimate, from the last renewal

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    async def wait_lost(self) -> str:
        await self._lost.wait()
        return self.reason or "lost"

    async def stop(self, *, revoke: bool = False) -> None:
        """Stop renewing (and revoke the lease, deleting its keys, if asked)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.client._keepalives.discard(self)
        if revoke and not self.lost:
            await self.client.revoke(self.lease.id)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ttl = max(self.lease.ttl, 1)
        interval = ttl / 3
        # One member may take this long before the next is tried: a renewal stuck on a
        # stopped member must not eat the lease's whole TTL.
        attempt = max(0.5, min(self.client.attempt_timeout, ttl / 6))
        failing = False
        while True:
            sent = loop.time()
            try:
                got = await self.client.refresh(self.lease.id, attempt_timeout=attempt)
            except LeaseNotFound:
                self._lose(f"lease {self.lease.id:x} expired or was revoked")
                return
            except StoreError as exc:
                if not failing:
                    log.warning("lease %x not renewed: %s", self.lease.id, exc.message)
                failing = True
                await asyncio.sleep(min(interval, 0.5))
                continue
            if failing:
                log.info("lease %x renewed again", self.lease.id)
                failing = False
            self.renewed_at = sent
            self.expires_at = sent + got
            await asyncio.sleep(max(0.0, interval - (loop.time() - sent)))

    def _lose(self, reason: str) -> None:
        self.reason = reason
        self._lost.set()
        self._task = None
        self.client._keepalives.discard(self)
        log.warning("%s", reason)
        if self._on_lost is not None:
            try:
                self._on_lost(self.lease, reason)
            except Exception:
                log.exception("on_lost callback of lease %x failed", self.lease.id)


class Watch:
    """Ordered events on a key or prefix: `async for events in watch:` gives non-empty lists
    of Event (one list per message from etcd; the events of one transaction arrive
    together).  `revision` is the revision of the last event delivered.

    The stream is resumed from `revision + 1` on another member when its member fails, is
    cut off, or the connection drops, so no event is lost or repeated; with every member
    down it keeps retrying (backoff up to 1 s) until the store returns or the watch is
    cancelled.  When the revision to resume from has been compacted, iteration raises
    RevisionCompacted: re-list, then watch again from the listing's revision + 1.
    cancel() (or the client's close()) ends the iteration.
    """

    def __init__(
        self, client: EtcdClient, key: str, prefix: bool, start_revision: int, prev_kv: bool
    ) -> None:
        self.client = client
        self.key = key
        self.prefix = prefix
        self.prev_kv = prev_kv
        self._next = start_revision  # the revision to (re)start from; 0: now
        self.revision = start_revision - 1 if start_revision > 0 else 0
        self._queue: asyncio.Queue[list[Event] | BaseException | None] = asyncio.Queue(1024)
        self._task: asyncio.Task[None] | None = None
        self._cancelled = False
        self._done = False
        self._created = False
        self._started = asyncio.Event()
        self.member: str | None = None  # the member the stream is on now
        self.reconnects = 0  # how many times the stream was resumed

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def __aiter__(self) -> Watch:
        return self

    async def wait_started(self) -> None:
        """Wait until a member has confirmed the watch (an event written after this returns
        is delivered even when the watch started "from now")."""
        await self._started.wait()

    async def __anext__(self) -> list[Event]:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if self._cancelled or item is None:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self.revision = item[-1].revision
        return item

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()

    async def cancel(self) -> None:
        """Stop the watch: its connection is closed, and iteration ends (what was received
        but not yet taken is dropped)."""
        self._cancelled = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.client._watches.discard(self)
        # Wake an owner waiting for the next batch (a full queue means none is waiting).
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def _request(self) -> bytes:
        c = self.client
        req: dict[str, Any] = {"key": c._b64key(self.key)}
        if self.prefix:
            req["range_end"] = c._range_end(self.key)
        if self._next > 0:
            req["start_revision"] = str(self._next)
        if self.prev_kv:
            req["prev_kv"] = True
        return json.dumps({"create_request": req}).encode()

    async def _run(self) -> None:
        c = self.client
        n = len(c._bases)
        index = c._current
        delay = 0.05
        in_outage = False
        while True:
            self._created = False
            reason = await self._stream(index)
            if reason is None:  # compacted: the owner has been told
                return
            self.member = None
            self.reconnects += 1
            if self._created:  # it was working: a fresh failure, resume at once elsewhere
                delay = 0.0
                in_outage = False
            if not in_outage:
                log.warning(
                    "watch on %s%s: %s: %s; resuming from revision %d on another member",
                    c.prefix,
                    self.key,
                    c._members[index],
                    reason,
                    self._next,
                )
                in_outage = True
            index = (index + 1) % n
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.05), 1.0)

    async def _stream(self, index: int) -> str | None:
        """Follow the stream on member `index` until it fails (the reason) or etcd says the
        revision is compacted (None)."""
        c = self.client
        session = c._ensure_session()
        try:
            async with session.post(
                c._bases[index] + "/v3/watch",
                data=self._request(),
                headers=_HEADERS,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=c.connect_timeout, sock_read=None
                ),
            ) as resp:
                try:
                    return await self._follow(index, resp)
                finally:
                    resp.close()  # the only way to cancel a gateway watch: drop its connection
        except aiohttp.ConnectionTimeoutError:
            return f"connect timed out after {c.connect_timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            return _connector_reason(exc)
        except aiohttp.ClientError as exc:
            return _client_reason(exc)
        except TimeoutError:
            return "timed out"

    async def _follow(self, index: int, resp: aiohttp.ClientResponse) -> str | None:
        c = self.client
        buf = bytearray()
        while True:
            try:
                chunk = await asyncio.wait_for(resp.content.readany(), c.watch_probe)
            except TimeoutError:
                # Quiet for a while: normal, unless the member is stopped or cut off.
                why = await c._probe(index)
                if why is not None:
                    return f"member does not answer ({why})"
                continue
            if not chunk:
                return "stream ended"
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > _MAX_MESSAGE:
                        return "message too large"
                    break
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    return f"bad message: {line[:100]!r}"
                outcome = await self._message(index, msg)
                if outcome is not None:
                    return outcome or None

    async def _message(self, index: int, msg: Any) -> str | None:
        """Handle one message: None to go on, "" when the watch is over (compacted), or why
        the stream must be resumed elsewhere."""
        c = self.client
        if not isinstance(msg, dict):
            return "bad message"
        if "error" in msg:
            err = msg["error"]
            return str(err.get("message", err)) if isinstance(err, dict) else str(err)
        result = msg.get("result")
        if not isinstance(result, dict):
            return "bad message"
        compact = int(result.get("compact_revision", 0))
        if compact:
            c._watches.discard(self)
            self._task = None
            await self._queue.put(
                RevisionCompacted(
                    f"cluster store {c.store}: watch on {c.prefix}{self.key} cannot resume "
                    f"from revision {self._next}: compacted up to {compact}",
                    compact,
                )
            )
            return ""
        if result.get("canceled"):
            return str(result.get("cancel_reason") or "watch cancelled by the member")
        if result.get("created"):
            if self._next <= 0:
                # Watching "from now": pin now, so a resume cannot skip what happens between.
                self._next = _revision(result) + 1
            if self.reconnects:
                log.info("watch on %s%s resumed on %s", c.prefix, self.key, c._members[index])
            self.member = c._members[index]
            self._created = True
            self._started.set()
            return None
        events = result.get("events")
        if events:
            batch = [
                Event(
                    "delete" if e.get("type") == "DELETE" else "put",
                    c._kv(e.get("kv", {})),
                    c._kv(e["prev_kv"]) if e.get("prev_kv") else None,
                )
                for e in events
            ]
            self._next = batch[-1].revision + 1
            await self._queue.put(batch)
        return None


# -- helpers --------------------------------------------------------------------------------


def _bytes(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else v


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s) if s else b""


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with prefix (etcd's range_end)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"  # every key


def _revision(data: dict[str, Any]) -> int:
    header = data.get("header") or {}
    return int(header.get("revision", 0))


def _error_of(data: dict[str, Any]) -> tuple[int, str] | None:
    if "error" not in data or "header" in data:
        return None
    err = data["error"]
    if isinstance(err, dict):  # some gateway versions nest it
        code: Any = err.get("grpc_code", err.get("code", _UNKNOWN))
        return int(code), str(err.get("message"))
    return int(data.get("code", _UNKNOWN)), str(data.get("message") or err)


def _store_error(store: str, code: int, message: str) -> StoreError:
    text = f"cluster store {store}: {message}"
    if code == _NOT_FOUND and "lease" in message:
        return LeaseNotFound(text, code)
    if code == _OUT_OF_RANGE and "compacted" in message:
        return RevisionCompacted(text, 0)
    return StoreError(text, code)


def _os_reason(exc: BaseException) -> str:
    tls = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(tls, ssl.SSLError):
        return _tls_reason(tls)
    if isinstance(exc, OSError) and exc.errno:
        # asyncio's own text ("Connect call failed ('10.0.0.1', 2379)") says less than errno
        text = os.strerror(exc.errno).lower()
        return text + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    # "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:2546)"
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    text = text.split("] ", 1)[-1].split(" (_ssl.c", 1)[0]
    return f"TLS: {text}"


def _connector_reason(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError) and isinstance(
        exc.certificate_error, ssl.SSLError
    ):
        return _tls_reason(exc.certificate_error)
    return _os_reason(exc.os_error)


def _client_reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the member"
    if isinstance(exc, aiohttp.ClientOSError | ssl.SSLError):
        return _os_reason(exc)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection lost mid-answer"
    return str(exc) or type(exc).__name__
