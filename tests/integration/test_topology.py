"""tether topology on a real host (50 containers on 8 networks), and Docker's /events stream."""

from __future__ import annotations

import json
import os
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(path: str) -> list[str]:
    root = ET.parse(path).getroot()
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_topology_of_50_containers_on_8_networks(bhost: NamespaceHost) -> None:
    h = bhost
    nets = [f"net{i}" for i in range(8)]
    for i, net in enumerate(nets):
        extra = []
        if i == 2:
            extra = ["--internal"]
        if i == 5:
            extra = ["-o", "com.docker.network.bridge.enable_icc=false"]
        h.ok("network", "create", "--subnet", f"10.90.{i}.0/24", *extra, net)
    multi = {}
    for j in range(50):
        args = ["run", "-d", "--name", f"app{j:02d}", "--network", nets[j % 8]]
        if j % 10 == 0:
            args += ["-p", f"{18000 + j}:80"]
        h.ok(*args, "busybox", "sleep", "600")
        if j % 7 == 0:
            other = nets[(j + 3) % 8]
            h.ok("network", "connect", other, f"app{j:02d}")
            multi[f"app{j:02d}"] = other
    with tempfile.TemporaryDirectory(prefix="tether-topology-") as d:
        svg, png, dot = (os.path.join(d, f"t.{ext}") for ext in ("svg", "png", "dot"))
        r = h.cli("topology", "-o", svg)
        assert r.returncode == 0, r.stderr
        assert "9 networks, 50 containers" in r.stderr  # (8 + the default bridge)
        texts = svg_texts(svg)
        joined = "\n".join(texts)
        for j in range(50):
            assert f"app{j:02d}" in texts, f"app{j:02d} missing from the picture"
        for net in nets:
            assert net in texts
        # Addresses: a single-network container's row, a multi-homed one's edge label on each.
        assert h.ip_of("app01", "net1") in texts
        for name, other in multi.items():
            assert h.ip_of(name, other) in texts
            assert h.ip_of(name, nets[int(name[3:]) % 8]) in texts
        assert "internal: no way out" in joined
        assert "ICC off: members cannot talk" in joined
        assert "18000→80/tcp" in joined
        # One box per network, one per multi-homed container: the shape that keeps it readable.
        root = ET.parse(svg).getroot()
        nodes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
        assert len(nodes) == 9 + len(multi)
        width, height = (float(root.get(k, "0").rstrip("pt")) for k in ("width", "height"))
        # A page a person reads at 1:1 (drawn: 671 x 1246 pt): a layout that spreads the
        # containers out as boxes of their own, or stacks the tables, fails this.
        assert width < 1000 and height < 1800, (width, height)

        assert h.cli("topology", "-o", png).returncode == 0
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert h.cli("topology", "-o", dot).returncode == 0
        with open(dot) as f:
            assert f.read().startswith("digraph tether {")
        model = json.loads(h.ok("topology", "--format", "json"))
        assert len(model["Containers"]) == 50
        net2 = next(n for n in model["Networks"] if n["Name"] == "net2")
        assert net2["Internal"] and net2["Devices"][0]["Kind"] == "bridge"
        # Bad input: one line, exit 125, no file.
        r = h.cli("topology", "-o", os.path.join(d, "t.jpg"))
        assert r.returncode == 125 and "unsupported output format '.jpg'" in r.stderr
        assert not os.path.exists(os.path.join(d, "t.jpg"))


def test_events_stream_reports_containers_and_networks(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "evnet")
    resp = h.api.open("GET", "/events")
    assert resp.status == 200
    try:
        h.ok("run", "-d", "--name", "ev1", "--network", "evnet", "busybox", "sleep", "600")
        h.ok("rm", "-f", "ev1")
        want = [("container", "create"), ("network", "connect"), ("container", "start")]
        want += [("network", "disconnect"), ("container", "die"), ("container", "destroy")]
        got: list[tuple[str, str]] = []
        buf = b""
        deadline = time.monotonic() + 10
        for chunk in resp.iter_body():
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                got.append((msg["Type"], msg["Action"]))
                if msg["Type"] == "container":
                    assert msg["Actor"]["Attributes"]["name"] == "ev1"
                if msg["Type"] == "network":
                    assert msg["Actor"]["Attributes"]["type"] == "bridge"
            if all(w in got for w in want) or time.monotonic() > deadline:
                break
        assert [g for g in got if g in want] == want, got
    finally:
        resp.close()
    # Filters as Docker's; history is not kept, and since= says so.
    from tether.client import ApiError

    with pytest.raises(ApiError) as exc:
        h.api.get("/events", {"since": "1"})
    assert exc.value.status == 400 and "no history" in exc.value.message
    with pytest.raises(ApiError) as exc:
        h.api.get("/events", {"filters": json.dumps({"colour": ["red"]})})
    assert exc.value.status == 400
    until = str(time.time() + 1)
    started = time.monotonic()
    assert (
        h.api.get("/events", {"until": until, "filters": json.dumps({"type": ["network"]})}) is None
    )
    assert time.monotonic() - started < 5
