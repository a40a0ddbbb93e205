"""tether compose with volumes (short and long syntax, named, bind, external), tmpfs and
restart: data in a named volume survives a recreate and `down`, `down -v` removes it (never
an external one), binds are relative to the project directory."""

from __future__ import annotations

import os
import time

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  app:
    image: busybox
    # Exits when told to (a file on its tmpfs), so restart: always has something to do.
    command: ["sh", "-c", "while [ ! -e /scratch/stop ]; do sleep 0.2; done"]
    restart: always
    tmpfs: ["/scratch:size=1m"]
    volumes:
      - data:/data
      - ./site:/site:ro
      - type: volume
        source: shared
        target: /shared
        read_only: true
      - type: tmpfs
        target: /t2
  writer:
    image: busybox
    command: ["sh", "-c", "echo $$MSG > /shared/msg && sleep 300"]
    environment: {MSG: hello}
    volumes: [{type: volume, source: shared, target: /shared}]
volumes:
  data:
  shared:
    external: true
    name: pre-made
"""


def _compose(h: NamespaceHost, d: str, *args: str) -> str:
    r = h.cli("compose", "-f", os.path.join(d, "compose.yaml"), *args, timeout=120)
    assert r.returncode == 0, f"compose {args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def test_compose_volumes_tmpfs_restart(bhost: NamespaceHost) -> None:
    h = bhost
    d = os.path.join(h.dir, "proj")
    os.makedirs(os.path.join(d, "site"))
    with open(os.path.join(d, "site", "index.html"), "w") as f:
        f.write("site\n")
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(COMPOSE)
    # The external volume must exist first: nothing is created without it.
    r = h.cli("compose", "-f", os.path.join(d, "compose.yaml"), "up", "-d", timeout=120)
    assert r.returncode == 1 and 'external volume "pre-made" not found' in r.stderr, r.stderr
    assert h.api.get("/volumes")["Volumes"] in ([], None)
    assert [n["Name"] for n in h.api.get("/networks") if n["Name"].startswith("proj")] == []
    h.ok("volume", "create", "pre-made")
    out = _compose(h, d, "up", "-d")
    assert "Volume proj_data  Created" in out, out
    vol = h.api.get("/volumes/proj_data")
    assert vol["Labels"]["com.docker.compose.project"] == "proj"
    assert vol["Labels"]["com.docker.compose.volume"] == "data"
    app = "proj-app-1"
    h.ok("exec", app, "sh", "-c", "echo kept > /data/f")
    assert h.ok("exec", app, "cat", "/site/index.html") == "site\n"
    r = h.cli("exec", app, "sh", "-c", "touch /site/x")
    assert r.returncode != 0 and not os.path.exists(os.path.join(d, "site", "x"))
    mounts = h.ok("exec", app, "cat", "/proc/mounts")
    assert any(m.split()[1:3] == ["/scratch", "tmpfs"] for m in mounts.splitlines()), mounts
    assert any(m.split()[1:3] == ["/t2", "tmpfs"] for m in mounts.splitlines()), mounts
    deadline = time.monotonic() + 30
    while h.cli("exec", app, "cat", "/shared/msg").stdout != "hello\n":
        assert time.monotonic() < deadline, "writer's file never seen through the volume"
        time.sleep(0.5)
    info = h.api.get(f"/containers/{app}/json")
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "always"
    # restart: always: its process exits, the container comes back (with a fresh tmpfs).
    h.ok("exec", app, "touch", "/scratch/stop")
    deadline = time.monotonic() + 60
    while True:
        info = h.api.get(f"/containers/{app}/json")
        if info["RestartCount"] >= 1 and info["State"]["Running"]:
            break
        assert time.monotonic() < deadline, info["State"]
        time.sleep(0.5)
    # down without -v keeps the named volume and its data; up again sees it.
    _compose(h, d, "down")
    names = {v["Name"] for v in h.api.get("/volumes")["Volumes"]}
    assert names == {"proj_data", "pre-made"}, names
    _compose(h, d, "up", "-d")
    assert h.ok("exec", app, "cat", "/data/f") == "kept\n"
    # down -v removes the project's volume, never the external one.
    out = _compose(h, d, "down", "-v")
    assert "proj_data" in out, out
    names = {v["Name"] for v in h.api.get("/volumes")["Volumes"]}
    assert names == {"pre-made"}, names
    assert h.api.get("/containers/json", {"all": 1}) == []


def test_compose_config_and_bad_volumes(bhost: NamespaceHost) -> None:
    h = bhost
    d = os.path.join(h.dir, "cfg")
    os.makedirs(d)
    path = os.path.join(d, "compose.yaml")
    with open(path, "w") as f:
        f.write(COMPOSE)
    out = h.ok("compose", "-f", path, "config")
    assert f"source: {d}/site\n" in out and "create_host_path: true" in out, out
    assert "restart: always" in out and "name: cfg_data" in out and "name: pre-made" in out
    assert "is not supported by tether yet" not in h.cli("compose", "-f", path, "config").stderr
    cases = [
        ("services:\n  a:\n    image: busybox\n    volumes: [nope:/x]\n",
         'service "a" refers to undefined volume nope: invalid compose project'),
        ("services:\n  a:\n    image: busybox\n    restart: sometimes\n",
         "invalid restart policy: unknown policy 'sometimes'"),
        ("services:\n  a:\n    image: busybox\n    volumes: [':/x']\n",
         "invalid spec: :/x: empty section between colons"),
    ]  # fmt: skip
    for text, message in cases:
        with open(path, "w") as f:
            f.write(text)
        r = h.cli("compose", "-f", path, "up", "-d")
        assert r.returncode == 1 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert h.api.get("/containers/json", {"all": 1}) == []
    assert h.api.get("/volumes")["Volumes"] in ([], None)
    assert [n["Name"] for n in h.api.get("/networks") if n["Name"].startswith("cfg")] == []
