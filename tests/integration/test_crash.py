"""kill -9 of tetherd in the middle of concurrent changes leaves nothing stray, lost or doubled."""

from __future__ import annotations

import ipaddress
import os
import sqlite3
import threading

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration


def audit_networks(host: NamespaceHost) -> None:
    """The store and the kernel agree, and no allocation is lost or held twice."""
    nets = host.api.get("/networks")
    bridges = {n["Name"]: n for n in nets if n["Driver"] == "bridge"}
    links = host.links()
    # Every bridge network has its bridge, with its gateway on it.
    db = sqlite3.connect(f"file:{os.path.join(host.root, 'tether.db')}?mode=ro", uri=True)
    docs = {
        row[0]: row[1] for row in db.execute("SELECT id, data FROM objects WHERE kind='network'")
    }
    import json

    wanted_bridges = set()
    for n in bridges.values():
        doc = json.loads(docs[n["Id"]])
        bridge = doc["driver_state"]["bridge_name"]  # the bridge driver's own state
        wanted_bridges.add(bridge)
        assert bridge in links, f"network {n['Name']} lost its bridge"
        addrs = {
            f"{a['local']}/{a['prefixlen']}"
            for a in links[bridge]["addr_info"]
            if a["scope"] != "link"
        }
        for pool in doc["pools"]:
            assert f"{pool['gateway']}/{ipaddress.ip_network(pool['subnet']).prefixlen}" in addrs
    # No tether bridge that nothing wants.
    stray = [name for name in links if name.startswith("tb-") and name not in wanted_bridges]
    assert not stray, f"stray bridges: {stray}"
    # Subnets never overlap.
    subnets = [
        ipaddress.ip_network(p["subnet"]) for d in docs.values() for p in json.loads(d)["pools"]
    ]
    for i, a in enumerate(subnets):
        for b in subnets[i + 1 :]:
            assert not a.overlaps(b), f"{a} overlaps {b}"
    # Allocations: each network holds exactly its gateway, and nothing is held for a network
    # that no longer exists.
    rows = list(db.execute("SELECT network_id, address, owner FROM addresses"))
    by_net: dict[str, list[tuple[str, str]]] = {}
    for net_id, addr, owner in rows:
        assert net_id in docs, f"address {addr} held for a removed network"
        by_net.setdefault(net_id, []).append((addr, owner))
    for net_id, doc_text in docs.items():
        doc = json.loads(doc_text)
        want = sorted((p["gateway"], "gateway") for p in doc["pools"])
        assert sorted(by_net.get(net_id, [])) == want, f"allocations of {doc['name']}"
    db.close()


@pytest.mark.parametrize("kill_after", [5, 20, 35])
def test_kill9_during_concurrent_creates_and_removes(host: NamespaceHost, kill_after: int) -> None:
    for i in range(25):
        host.api.post("/networks/create", {"Name": f"old{i}"})
    done = 0
    lock = threading.Lock()
    reached = threading.Event()

    def work(i: int) -> None:
        nonlocal done
        try:
            if i % 2:
                host.api.post("/networks/create", {"Name": f"new{i}"})
            else:
                host.api.delete(f"/networks/old{i // 2}")
        except Exception:
            return  # the daemon died under it: that is the point
        with lock:
            done += 1
            if done >= kill_after:
                reached.set()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    assert reached.wait(60)
    host.kill()
    for t in threads:
        t.join()
    assert done < 50, "the kill came after all the work; it proves nothing"
    host.start()
    audit_networks(host)
    # And the restarted daemon works normally.
    host.ok("network", "create", "after")
    audit_networks(host)
