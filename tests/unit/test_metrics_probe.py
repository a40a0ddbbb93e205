"""/metrics on a cluster node reads the store once per scrape to say whether it answers
(tether_cluster_store_up): scrapes at the same time share one read, and one within
STORE_PROBE_TTL of the last read takes its answer, so scrapers cannot pile reads (each held
up to STORE_PROBE_TIMEOUT) onto a store that is slow or gone.  The store is a stand-in that
counts the reads; the gauge against a real etcd is tests/integration/test_metrics.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from tether import metrics
from tether.store.etcd import StoreError


class Store:
    def __init__(self) -> None:
        self.reads = 0
        self.down = False

    async def get(self, key: str) -> Any:
        self.reads += 1
        await asyncio.sleep(0.2)
        if self.down:
            raise StoreError("etcd: no member answers")
        return None


def test_concurrent_scrapes_share_one_store_read_and_the_answer_is_kept_briefly() -> None:
    async def main() -> None:
        store = Store()
        daemon = SimpleNamespace(
            cluster=SimpleNamespace(client=store, node=SimpleNamespace(name="n1"))
        )
        m = metrics.Metrics(daemon)  # type: ignore[arg-type]
        await asyncio.gather(*(m.probe_store() for _ in range(5)))
        assert store.reads == 1 and m.state.store_answers is True
        await m.probe_store()  # within the TTL: the same answer, no read
        assert store.reads == 1
        # A scraper that gives up does not cancel the read the others wait for.
        store.down = True
        await asyncio.sleep(metrics.STORE_PROBE_TTL)
        quitter = asyncio.create_task(m.probe_store())
        await asyncio.sleep(0.05)
        quitter.cancel()
        await m.probe_store()
        assert store.reads == 2 and m.state.store_answers is False

    asyncio.run(main())
