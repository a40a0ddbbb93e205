"""The cluster store client (tether.store.etcd) against a real three-member etcd cluster.

Each test gets its own cluster (tests/cluster.py: an underlay namespace, three node
namespaces with an etcd member each; about 0.3 s to build) and runs its client code in the
underlay namespace, as a fourth machine would.  A test leaves no key behind: the fixture
checks the store is empty before it tears the cluster down.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from cluster import SUBNET, Cluster, etcd_cluster, make_tls
from nshost import sh
from tether.store.etcd import (
    Compare,
    EtcdClient,
    Event,
    LeaseNotFound,
    Op,
    RevisionCompacted,
    StoreUnavailable,
    TLSFiles,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with etcd_cluster(nodes=3, members=3) as c:
        yield c
        c.ensure_all_running()
        assert c.keys("") == [], "the test left keys in etcd"


async def next_events(w: object, timeout: float) -> list[Event]:
    return await asyncio.wait_for(w.__anext__(), timeout)  # type: ignore[attr-defined]


async def collect(w: object, n: int, timeout: float) -> list[Event]:
    """The next n events of a watch, within timeout."""
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        out += await next_events(w, max(0.01, deadline - time.monotonic()))
    return out


def established_to_etcd() -> int:
    """TCP connections of this thread's network namespace to port 2379 that are open."""
    count = 0
    with open("/proc/thread-self/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[2].endswith(":094B") and fields[3] == "01":  # remote :2379, ESTABLISHED
                count += 1
    return count


def test_cas_allocation_under_contention_never_duplicates(cluster: Cluster) -> None:
    """3 clients, one per member, allocate 50 numbers each from one pool at the same time
    ("create only if absent"), and increment one counter 20 times each ("update only if
    unchanged"): no number twice, none lost, the counter exact."""

    async def main() -> None:
        clients = [EtcdClient(cluster.endpoints_from(i), prefix="cas/") for i in range(3)]
        wins = [0, 0, 0]
        try:

            async def allocate(ci: int) -> list[int]:
                # Docker's IPAM way: the next free number after the last one handed out;
                # all three race for the same numbers all along.
                c = clients[ci]
                mine = []
                n = 1
                for _ in range(50):
                    while not await c.create(f"pool/{n:04d}", f"client{ci}"):
                        n += 1
                    mine.append(n)
                return mine

            async def increment(ci: int) -> None:
                c = clients[ci]
                for _ in range(20):
                    while True:
                        kv = await c.get("counter")
                        assert kv is not None
                        if await c.replace("counter", str(int(kv.value) + 1), kv.mod_revision):
                            wins[ci] += 1
                            break

            assert await clients[0].create("counter", "0")
            results, _ = await asyncio.gather(
                asyncio.gather(*(allocate(i) for i in range(3))),
                asyncio.gather(*(increment(i) for i in range(3))),
            )
            got = [n for mine in results for n in mine]
            assert len(got) == 150 and len(set(got)) == 150
            assert sorted(got) == list(range(1, 151))  # first-free: dense, nothing lost
            listing = await clients[1].get_prefix("pool/")
            assert len(listing.kvs) == 150
            owner = {int(kv.key.split("/")[1]): kv.value.decode() for kv in listing.kvs}
            for ci, mine in enumerate(results):
                assert all(owner[n] == f"client{ci}" for n in mine)
            counter = await clients[2].get("counter")
            assert counter is not None and counter.value == b"60" and sum(wins) == 60

            # Several keys at once, atomically, and the failure branch's reads.
            r = await clients[0].txn(
                [Compare.value("counter", "=", "60"), Compare.version("pool/0001", ">", 0)],
                [Op.put("a", "1"), Op.put("b", "2"), Op.delete_prefix("pool/")],
            )
            assert r.succeeded and r.results[2].deleted == 150
            r = await clients[0].txn(
                [Compare.absent("a")], [Op.put("a", "again")], [Op.get("a"), Op.get_prefix("")]
            )
            assert not r.succeeded
            assert r.results[0].kvs[0].value == b"1"
            assert [kv.key for kv in r.results[1].kvs] == ["a", "b", "counter"]
            assert await clients[0].delete_prefix("") == 3
        finally:
            for c in clients:
                await c.close()

    cluster.arun(main, timeout=60)


def test_lease_expiry_deletes_keys_and_watchers_see_it(cluster: Cluster) -> None:
    """Keys on a 2 s lease live while it is kept alive (well past its TTL); once renewals
    stop, etcd deletes them and a watcher sees both deletes within TTL + 1 s."""

    async def main() -> None:
        async with EtcdClient(cluster.endpoints, prefix="lease/") as c:
            lease = await c.grant(2)
            assert lease.ttl == 2
            await c.put("node/a", "x", lease=lease.id)
            rev = await c.put("node/b", "y", lease=lease.id)
            lost: list[str] = []
            ka = c.keep_alive(lease, on_lost=lambda _lease, why: lost.append(why))
            w = c.watch_prefix("node/", start_revision=rev + 1)
            await asyncio.sleep(2.5)  # beyond the TTL: only the keepalive holds them
            assert {kv.key for kv in (await c.get_prefix("node/")).kvs} == {"node/a", "node/b"}
            assert not ka.lost and not lost
            info = await c.time_to_live(lease.id, keys=True)
            assert info.granted_ttl == 2 and sorted(info.keys) == ["node/a", "node/b"]

            await ka.stop()  # renewals stop: the lease runs out
            t0 = time.monotonic()
            events = await collect(w, 2, timeout=3.0)
            elapsed = time.monotonic() - t0
            assert [(e.type, e.key) for e in events] == [
                ("delete", "node/a"),
                ("delete", "node/b"),
            ]
            assert elapsed <= 3.0
            assert (await c.get_prefix("node/")).kvs == []
            assert (await c.time_to_live(lease.id)).ttl == -1
            with pytest.raises(LeaseNotFound):
                await c.refresh(lease.id)
            await w.cancel()

    cluster.arun(main, timeout=30)


def test_lost_lease_is_reported_and_not_granted_again(cluster: Cluster) -> None:
    """A lease revoked behind the owner's back, and one that expired while its keeper could
    reach no member: both reported lost (on_lost, wait_lost), neither replaced."""

    async def main() -> None:
        async with EtcdClient(cluster.endpoints, prefix="lost/") as admin:
            # Revoked by someone else: noticed at the next renewal (TTL/3).
            async with EtcdClient(cluster.endpoints, prefix="lost/") as c:
                lease = await c.grant(3)
                await c.put("k", "v", lease=lease.id)
                reports: list[tuple[int, str]] = []
                ka = c.keep_alive(lease, on_lost=lambda lz, why: reports.append((lz.id, why)))
                assert await admin.revoke(lease.id)
                why = await asyncio.wait_for(ka.wait_lost(), 3.0)
                assert "expired or was revoked" in why
                assert reports == [(lease.id, why)] and ka.lost
                assert await admin.get("k") is None

            # Expired while the keeper's only member was down.
            only_first = "etcd://" + cluster.members[0].ip + ":2379"
            async with EtcdClient(only_first, prefix="lost/") as c:
                lease = await c.grant(2)
                await c.put("k2", "v", lease=lease.id)
                ka = c.keep_alive(lease)
                await asyncio.sleep(0.5)
                await asyncio.to_thread(cluster.kill_member, 0)
                # The other two keep the cluster, and the lease runs out there.
                deadline = time.monotonic() + 5
                while await admin.get("k2") is not None:
                    assert time.monotonic() < deadline, "lease did not expire"
                    await asyncio.sleep(0.1)
                assert not ka.lost  # the keeper cannot know yet
                await asyncio.to_thread(cluster.start_member, 0)
                why = await asyncio.wait_for(ka.wait_lost(), 5.0)
                assert "expired" in why
                # Nothing was re-granted or re-written behind the owner's back.
                assert await admin.get("k2") is None
                assert (await admin.get_prefix("")).kvs == []

    cluster.arun(main, timeout=40)


def test_watch_resumes_on_another_member_when_its_member_is_killed(cluster: Cluster) -> None:
    """kill -9 of the member a watch streams from: the watch goes on from another member,
    every event written meanwhile delivered once, in order."""

    async def main() -> None:
        async with (
            EtcdClient(cluster.endpoints_from(0), prefix="w/") as c,
            EtcdClient(cluster.endpoints_from(1), prefix="w/") as writer,
        ):
            rev = await writer.put("k/0", "0")
            w = c.watch_prefix("k/", start_revision=rev, prev_kv=True)
            first = await next_events(w, 3.0)
            assert [e.key for e in first] == ["k/0"]
            assert w.member == f"{cluster.members[0].ip}:2379"

            await asyncio.to_thread(cluster.kill_member, 0)
            for i in range(1, 21):
                await writer.put(f"k/{i}", str(i))
            await writer.put("k/1", "updated")
            events = await collect(w, 21, timeout=10.0)
            assert [e.key for e in events] == [f"k/{i}" for i in range(1, 21)] + ["k/1"]
            revs = [e.revision for e in events]
            assert revs == sorted(set(revs))  # ordered, no repeats
            assert events[-1].prev_kv is not None and events[-1].prev_kv.value == b"1"
            assert w.member is not None and w.member != f"{cluster.members[0].ip}:2379"
            assert w.reconnects >= 1

            await asyncio.to_thread(cluster.start_member, 0)
            await writer.delete_prefix("")
            deletes = await collect(w, 21, timeout=5.0)
            assert {e.type for e in deletes} == {"delete"}
            await w.cancel()
            with pytest.raises(StopAsyncIteration):
                await next_events(w, 1.0)

    cluster.arun(main, timeout=60)


async def exercise(c: EtcdClient, tag: str) -> None:
    """Every kind of call, through whichever members answer."""
    t0 = time.monotonic()
    lease = await c.grant(5)
    ka = c.keep_alive(lease)
    rev = await c.put(f"{tag}/a", "1", lease=lease.id)
    assert (await c.get(f"{tag}/a")) is not None
    assert await c.create(f"{tag}/b", "2")
    w = c.watch_prefix(f"{tag}/", start_revision=rev)
    got = await collect(w, 2, timeout=5.0)
    assert [e.key for e in got] == [f"{tag}/a", f"{tag}/b"]
    await c.delete_prefix(f"{tag}/")
    await collect(w, 2, timeout=5.0)
    await w.cancel()
    await ka.stop(revoke=True)
    assert time.monotonic() - t0 < 8


def test_one_member_down_of_three_everything_works(cluster: Cluster) -> None:
    """With the first member of a client's list stopped, then hung (SIGSTOP, holding its
    connections): every kind of call works through the others, and watches move off it."""

    async def main() -> None:
        await asyncio.to_thread(cluster.stop_member, 0)
        async with EtcdClient(cluster.endpoints_from(0), prefix="down/") as c:
            await exercise(c, "stopped")
        await asyncio.to_thread(cluster.start_member, 0)

        # Hung: connections to it open, nothing answered.  The client must give up on it
        # within its attempt timeout, and a watch on it must move after its probe.
        async with EtcdClient(
            cluster.endpoints_from(0), prefix="down/", attempt_timeout=0.5, watch_probe=0.5
        ) as c:
            w = c.watch_prefix("hung/")
            await c.put("warm", "1")  # connections to member 1 exist now
            await asyncio.wait_for(w.wait_started(), 3)
            assert w.member == f"{cluster.members[0].ip}:2379"
            await asyncio.to_thread(cluster.pause_member, 0)
            t0 = time.monotonic()
            # A read: a write sent to the hung member would be applied when it resumes.
            assert await c.get("warm") is not None
            assert time.monotonic() - t0 < 3
            async with EtcdClient(cluster.endpoints_from(1), prefix="down/") as writer:
                await writer.put("hung/x", "1")
            events = await collect(w, 1, timeout=5.0)
            assert events[0].key == "hung/x" and w.member != f"{cluster.members[0].ip}:2379"
            await exercise(c, "hung")
            await w.cancel()
            await c.delete_prefix("")
            await asyncio.to_thread(cluster.resume_member, 0)
            await asyncio.to_thread(cluster.wait_healthy)

    cluster.arun(main, timeout=60)


def test_member_cut_off_from_its_peers_is_left_behind(cluster: Cluster) -> None:
    """A member cut off from its peers but not from the client has no leader: it refuses
    requests at once and ends our watch (the client asks members to do both), so calls and
    the watch move to the other members well before the watch's own probe (30 s here)."""
    node = cluster.members[0].node.netns

    async def main() -> None:
        async with EtcdClient(cluster.endpoints_from(0), prefix="cut/", watch_probe=30) as c:
            w = c.watch_prefix("w/")
            await c.put("warm", "1")
            await asyncio.wait_for(w.wait_started(), 3)
            assert w.member == f"{cluster.members[0].ip}:2379"
            await asyncio.to_thread(
                sh,
                f"ip netns exec {node} nft 'add table inet cut; "
                "add chain inet cut in { type filter hook input priority 0; }; "
                "add rule inet cut in tcp dport 2380 drop; add rule inet cut in tcp sport 2380 drop'",
            )
            try:
                await asyncio.sleep(1.0)  # the member notices it lost its leader
                t0 = time.monotonic()
                await c.put("w/x", "1")
                events = await collect(w, 1, timeout=8.0)
                assert events[0].key == "w/x" and w.member != f"{cluster.members[0].ip}:2379"
                assert time.monotonic() - t0 < 8
                await exercise(c, "cut")
                await w.cancel()
                await c.delete_prefix("")
            finally:
                await asyncio.to_thread(sh, f"ip netns exec {node} nft delete table inet cut")

    cluster.arun(main, timeout=60)


def test_create_through_a_member_that_hangs_mid_request(cluster: Cluster) -> None:
    """A compare-and-set create sent to a member that then hangs: the client cannot know
    whether it was applied, reads back, creates through another member, and the hung
    member's late copy, applied when it resumes, fails its compare: one allocation, ours."""

    async def main() -> None:
        async with EtcdClient(cluster.endpoints_from(0), prefix="hang/", attempt_timeout=0.5) as c:
            await c.put("warm", "1")
            await asyncio.to_thread(cluster.pause_member, 0)
            t0 = time.monotonic()
            assert await c.create("ip/10.0.0.5", "endpoint-1")
            assert time.monotonic() - t0 < 4
            kv = await c.get("ip/10.0.0.5")
            assert kv is not None and kv.value == b"endpoint-1" and kv.version == 1
            await asyncio.to_thread(cluster.resume_member, 0)
            await asyncio.to_thread(cluster.wait_healthy)
            await asyncio.sleep(0.3)  # the resumed member handles what it had queued
            after = await c.get("ip/10.0.0.5")
            assert after == kv  # the late copy changed nothing
            # Someone else's allocation is reported as such.
            assert not await c.create("ip/10.0.0.5", "endpoint-2")
            await c.delete_prefix("")

    cluster.arun(main, timeout=60)


def test_all_members_down_fails_promptly_naming_the_store(cluster: Cluster) -> None:
    """With every member killed, each call fails within 3 s with StoreUnavailable naming the
    store; a watch and a keepalive wait, and catch up when the store returns."""

    async def main() -> None:
        async with EtcdClient(cluster.endpoints, prefix="all/") as c:
            lease = await c.grant(10)
            ka = c.keep_alive(lease)
            rev = await c.put("k", "before", lease=lease.id)
            w = c.watch_prefix("", start_revision=rev + 1)
            await asyncio.sleep(0.2)
            for i in range(3):
                await asyncio.to_thread(cluster.kill_member, i)

            store = "etcd://10.99.0.11:2379,10.99.0.12:2379,10.99.0.13:2379"
            for call in (
                c.get("k"),
                c.put("k", "x"),
                c.create("k2", "x"),
                c.grant(5),
                c.get_prefix(""),
            ):
                t0 = time.monotonic()
                with pytest.raises(StoreUnavailable) as err:
                    await call
                assert time.monotonic() - t0 < 3.0
                assert err.value.message.startswith(f"cluster store {store} unreachable: ")
                assert "connection refused" in err.value.message
                assert err.value.status == 503
            # A fresh client (nothing pooled): the same.
            async with EtcdClient(store) as fresh:
                t0 = time.monotonic()
                with pytest.raises(StoreUnavailable, match="unreachable"):
                    await fresh.connect()
                assert time.monotonic() - t0 < 3.0

            await asyncio.to_thread(cluster.ensure_all_running)
            # The lease survived the outage (a new leader extends leases), the watch resumes.
            await c.put("k", "after", lease=lease.id)
            events = await collect(w, 1, timeout=5.0)
            assert events[0].kv.value == b"after"
            assert not ka.lost
            await ka.stop(revoke=True)
            assert await c.get("k") is None
            await w.cancel()

    cluster.arun(main, timeout=60)


def test_compacted_revision_is_a_distinct_signal(cluster: Cluster) -> None:
    """A watch asked to start (or resume) from a compacted revision raises RevisionCompacted
    with the compaction's revision; re-listing and watching from the listing goes on."""

    async def main() -> None:
        async with EtcdClient(cluster.endpoints, prefix="cmp/") as c:
            first = await c.put("k", "1")
            for i in range(2, 6):
                last = await c.put("k", str(i))
            await c.compact(last)
            w = c.watch_prefix("", start_revision=first)
            with pytest.raises(RevisionCompacted) as err:
                await next_events(w, 3.0)
            assert err.value.compact_revision == last
            with pytest.raises(StopAsyncIteration):
                await next_events(w, 1.0)
            with pytest.raises(RevisionCompacted):
                await c.get_prefix("", revision=first)
            # flannel's recovery: list, then watch from the listing's revision + 1.
            listing = await c.get_prefix("")
            assert [kv.value for kv in listing.kvs] == [b"5"]
            w2 = c.watch_prefix("", start_revision=listing.revision + 1)
            await c.put("k", "6")
            events = await next_events(w2, 3.0)
            assert [e.kv.value for e in events] == [b"6"]
            await w2.cancel()
            await c.delete("k")

    cluster.arun(main, timeout=30)


def test_a_prefix_read_in_pages_is_one_snapshot(cluster: Cluster) -> None:
    """get_prefix(start=, limit=, revision=) pages through a prefix: the pages together are
    exactly the keys as of the first page's revision, whatever is written meanwhile (the
    cluster store's relist reads 10,000 keys this way, cluster/state.py _list_all)."""

    async def main() -> None:
        async with EtcdClient(cluster.endpoints, prefix="pg/") as c:
            for i in range(7):
                await c.put(f"k{i}", str(i))
            await c.put("other", "x")  # outside the paged prefix, after it in key order
            first = await c.get_prefix("k", limit=3)
            assert [kv.key for kv in first.kvs] == ["k0", "k1", "k2"] and first.more
            await c.put("k3", "changed")  # after the snapshot: not seen
            await c.put("k9", "new")
            got = list(first.kvs)
            page = first
            while page.more:
                page = await c.get_prefix(
                    "k", start=page.kvs[-1].key + "\0", revision=first.revision, limit=3
                )
                got.extend(page.kvs)
            assert [(kv.key, kv.value) for kv in got] == [
                (f"k{i}", str(i).encode()) for i in range(7)
            ]
            await c.delete_prefix("")

    cluster.arun(main, timeout=30)


def test_close_stops_everything_it_started(cluster: Cluster) -> None:
    """close() ends keepalives and watches: no task left, no connection to etcd open, and
    the watch's iteration ends.  A cancelled watch closes its connection at once."""

    async def main() -> None:
        before = established_to_etcd()
        tasks_before = asyncio.all_tasks()
        c = EtcdClient(cluster.endpoints, prefix="close/")
        lease = await c.grant(5)
        c.keep_alive(lease)
        w1 = c.watch_prefix("a/")
        w2 = c.watch("b")
        await c.put("x", "1")
        await asyncio.wait_for(asyncio.gather(w1.wait_started(), w2.wait_started()), 3)
        assert established_to_etcd() >= before + 3  # two watches and a pooled connection
        n = established_to_etcd()
        await w2.cancel()
        await asyncio.sleep(0.1)
        assert established_to_etcd() == n - 1
        await c.close()
        await asyncio.sleep(0.1)
        assert asyncio.all_tasks() == tasks_before
        assert established_to_etcd() == before
        with pytest.raises(StopAsyncIteration):
            await next_events(w1, 1.0)
        async with EtcdClient(cluster.endpoints, prefix="close/") as other:
            await other.revoke(lease.id)
            await other.delete("x")

    cluster.arun(main, timeout=30)


def test_tls_client_certificates(tmp_path: object) -> None:
    """A member that requires client certificates: served with the CA, cert and key
    (Docker's kv.cacertfile/kv.certfile/kv.keyfile); refused without them."""
    ip = f"{SUBNET}.11"  # node 1's address
    tls = make_tls(os.path.join(str(tmp_path), "tls"), [ip])
    with etcd_cluster(nodes=1, members=1, tls=tls) as c:
        files = TLSFiles(cafile=tls.ca, certfile=tls.client_cert, keyfile=tls.client_key)
        assert c.endpoints == f"https://{ip}:2379"
        etcd_url = f"etcd://{ip}:2379"

        async def main() -> None:
            # etcd:// with TLS files means https.
            async with EtcdClient(etcd_url, prefix="tls/", tls=files) as good:
                rev = await good.put("k", "v")
                w = good.watch_prefix("", start_revision=rev)
                assert [e.key for e in await next_events(w, 3.0)] == ["k"]
                await w.cancel()
            # The CA but no client certificate: refused, promptly, naming the store.
            async with EtcdClient(etcd_url, tls=TLSFiles(cafile=tls.ca)) as nocert:
                t0 = time.monotonic()
                with pytest.raises(StoreUnavailable) as err:
                    await nocert.get("tls/k")
                assert time.monotonic() - t0 < 3.0
                assert err.value.message.startswith(f"cluster store {etcd_url} unreachable: ")
            # Without TLS at all.
            async with EtcdClient(etcd_url) as plain:
                with pytest.raises(StoreUnavailable):
                    await plain.get("tls/k")
            # A server certificate from another CA is not trusted.
            other = make_tls(os.path.join(str(tmp_path), "other"), [ip])
            async with EtcdClient(
                etcd_url,
                tls=TLSFiles(cafile=other.ca, certfile=other.client_cert, keyfile=other.client_key),
            ) as wrong:
                with pytest.raises(StoreUnavailable, match="TLS"):
                    await wrong.get("tls/k")
            async with EtcdClient(etcd_url, prefix="tls/", tls=files) as good:
                assert await good.delete("k") == 1

        c.arun(main, timeout=30)
        assert c.keys("") == []
