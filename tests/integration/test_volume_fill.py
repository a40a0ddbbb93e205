"""Named and anonymous volumes filled from the image as dockerd fills them (not with nocopy,
never binds, never a volume with content), and bind propagation (shared, slave, private)
with real mounts made on the host after the container started, and inside it."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

MOUNT_POINTS = ["hostname", "hosts", "resolv.conf"]  # tether's own files, bound into /etc


def volume_dir(h: NamespaceHost, name: str) -> str:
    return str(h.api.get(f"/volumes/{name}")["Mountpoint"])


def test_a_new_volume_gets_the_images_files(bhost: NamespaceHost) -> None:
    h = bhost
    # The image's /etc (passwd, group) in the new volume, and on the host in its directory.
    out = h.ok("run", "--rm", "-v", "data:/etc", "busybox", "ls", "/etc")
    assert out.split() == sorted(["group", "passwd", *MOUNT_POINTS]), out
    d = volume_dir(h, "data")
    with open(os.path.join(d, "passwd")) as f:
        assert f.read().startswith("root:x:0:0:")
    st = os.stat(os.path.join(d, "passwd"))
    assert (st.st_mode & 0o777, st.st_uid) == (0o644, 0)
    # Once: what a container changed stays (the volume has content: nothing is copied).
    h.ok(
        "run", "--rm", "-v", "data:/etc", "busybox", "sh", "-c", "rm /etc/group; echo x > /etc/new"
    )
    out = h.ok("run", "--rm", "-v", "data:/etc", "busybox", "ls", "/etc")
    assert out.split() == sorted(["new", "passwd", *MOUNT_POINTS]), out
    # A volume with content is not filled, whatever the image has there.
    h.ok("run", "--rm", "-v", "mine:/x", "busybox", "sh", "-c", "echo mine > /x/f")
    out = h.ok("run", "--rm", "-v", "mine:/etc", "busybox", "ls", "/etc")
    assert out.split() == sorted(["f", *MOUNT_POINTS]), out
    # An anonymous volume (-v /etc) is filled too: the image's passwd is there.
    out = h.ok("run", "--rm", "-v", "/etc", "busybox", "cat", "/etc/passwd")
    assert out.startswith("root:x:0:0:"), out
    # docker create fills it (dockerd's create does), before any start.
    h.ok("create", "--name", "made", "-v", "early:/etc", "busybox")
    assert sorted(os.listdir(volume_dir(h, "early"))) == ["group", "passwd"]
    h.ok("rm", "made")


def test_nocopy_and_binds_are_not_filled(bhost: NamespaceHost) -> None:
    h = bhost
    out = h.ok("run", "--rm", "-v", "empty1:/etc:nocopy", "busybox", "ls", "/etc")
    assert out.split() == MOUNT_POINTS, out
    out = h.ok(
        "run", "--rm", "--mount", "source=empty2,target=/etc,volume-nocopy", "busybox", "ls", "/etc"
    )
    assert out.split() == MOUNT_POINTS, out
    for name in ("empty1", "empty2"):
        assert sorted(os.listdir(volume_dir(h, name))) == MOUNT_POINTS
    with tempfile.TemporaryDirectory(prefix="tt-bind-") as d:
        out = h.ok("run", "--rm", "-v", f"{d}:/etc", "busybox", "ls", "/etc")
        assert out.split() == MOUNT_POINTS, out
    # nocopy on a bind is refused in dockerd's words, and nothing is made.
    with tempfile.TemporaryDirectory(prefix="tt-bind-") as d:
        r = h.cli("run", "--rm", "-v", f"{d}:/etc:nocopy", "busybox", "true")
        assert r.returncode == 125, r
        assert (
            f"invalid volume specification: '{d}:/etc:nocopy': invalid mount config for type "
            '"bind": field VolumeOptions must not be specified'
        ) in r.stderr
    assert h.api.get("/containers/json", {"all": 1}) == []


def test_layers_whiteouts_owners_modes_symlinks(bhost: NamespaceHost) -> None:
    h = bhost
    with tempfile.TemporaryDirectory(prefix="tt-ctx-") as ctx:
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(
                "FROM busybox\n"
                "RUN mkdir -p /data/sub && echo one > /data/a && echo two > /data/b"
                " && ln -s a /data/link && ln -s /etc /data/abs && chmod 750 /data"
                " && chown 65534:65534 /data/a && chmod 600 /data/a && mkfifo /data/fifo\n"
                "RUN rm /data/b && echo three > /data/c && ln -s /etc /evil\n"
            )
        h.ok("build", "-t", "layered", ctx, timeout=180)
    out = h.ok("run", "--rm", "-v", "lay:/data", "layered", "ls", "-A", "/data")
    assert out.split() == ["a", "abs", "c", "fifo", "link", "sub"], out  # b: deleted above
    d = volume_dir(h, "lay")
    assert oct(os.stat(d).st_mode & 0o7777) == oct(0o750)  # the directory's own mode
    st = os.lstat(os.path.join(d, "a"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)
    assert os.readlink(os.path.join(d, "link")) == "a"
    assert os.readlink(os.path.join(d, "abs")) == "/etc"  # copied as a link, not followed
    assert os.path.isdir(os.path.join(d, "sub")) and not os.path.islink(os.path.join(d, "sub"))
    with open(os.path.join(d, "c")) as f:
        assert f.read() == "three\n"
    # The image's symlink /evil -> /etc resolves in the image, never on the host: the
    # volume gets the image's /etc (passwd, group), not the host's.  (Its hosts, hostname
    # and resolv.conf are the build's RUN containers' mount points, kept in the layers.)
    h.ok("run", "--rm", "-v", "ev:/evil", "layered", "true")
    ev = volume_dir(h, "ev")
    assert {"group", "passwd"} <= set(os.listdir(ev)) <= {"group", "passwd", *MOUNT_POINTS}
    with open(os.path.join(ev, "passwd")) as f, open("/etc/passwd") as host_passwd:
        assert f.read() != host_passwd.read()


def test_two_containers_created_at_once_copy_once(bhost: NamespaceHost) -> None:
    h = bhost

    def create(i: int) -> str:
        body = {"Image": "busybox", "HostConfig": {"Binds": ["both:/etc"]}}
        return str(h.api.post(f"/containers/create?name=c{i}", body)["Id"])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(create, range(4)))
    assert len(set(ids)) == 4
    assert sorted(os.listdir(volume_dir(h, "both"))) == ["group", "passwd"]
    for i in range(4):
        h.ok("rm", f"c{i}")


# -- bind propagation ---------------------------------------------------------------------


def sh(cmd: str) -> None:
    subprocess.run(["sh", "-c", cmd], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def tmpfs_dir(propagation: str) -> Iterator[str]:
    """A tmpfs of our own on the host with the given propagation (the machine's / may be
    either), unmounted with everything under it at the end."""
    d = tempfile.mkdtemp(prefix="tt-prop-")
    try:
        sh(f"mount -t tmpfs tt-prop {d} && mount --make-{propagation} {d}")
        yield d
    finally:
        subprocess.run(["umount", "-R", "-l", d], capture_output=True, timeout=30)
        os.rmdir(d)


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def test_bind_propagation_shared_slave_private(bhost: NamespaceHost) -> None:
    h = bhost
    with tmpfs_dir("shared") as d:
        # --privileged: the containers mount things themselves below.
        h.ok("run", "-d", "--name", "sh", "--privileged", "--mount",
             f"type=bind,src={d},dst=/m,bind-propagation=rshared", "busybox", "sleep", "600")  # fmt: skip
        h.ok("run", "-d", "--name", "sl", "--privileged", "-v", f"{d}:/m:rslave",
             "busybox", "sleep", "600")  # fmt: skip
        h.ok("run", "-d", "--name", "pr", "--mount", f"type=bind,src={d},dst=/m",
             "busybox", "sleep", "600")  # fmt: skip
        # A mount made on the host after they started.
        os.mkdir(os.path.join(d, "late"))
        sh(f"mount -t tmpfs late {d}/late && echo hello > {d}/late/f")
        assert h.ok("exec", "sh", "cat", "/m/late/f") == "hello\n"
        assert h.ok("exec", "sl", "cat", "/m/late/f") == "hello\n"
        r = h.cli("exec", "pr", "cat", "/m/late/f")
        assert r.returncode != 0 and "No such file" in r.stderr, r  # private: not seen
        assert h.ok("exec", "pr", "ls", "-A", "/m/late") == ""
        # A mount made in the container: back on the host from the shared one only.
        h.ok("exec", "sh", "sh", "-c",
             "mkdir /m/in1 && mount -t tmpfs in1 /m/in1 && echo back > /m/in1/g")  # fmt: skip
        h.ok("exec", "sl", "sh", "-c",
             "mkdir /m/in2 && mount -t tmpfs in2 /m/in2 && echo not > /m/in2/g")  # fmt: skip
        with open(os.path.join(d, "in1", "g")) as f:
            assert f.read() == "back\n"
        assert mounted(os.path.join(d, "in1"))
        assert os.listdir(os.path.join(d, "in2")) == [] and not mounted(os.path.join(d, "in2"))
        # inspect: Mounts[].Propagation (and -v's Mode) as dockerd shows them.
        got = {}
        for name in ("sh", "sl", "pr"):
            m = json.loads(h.ok("inspect", "-f", "{{json .Mounts}}", name))[0]
            got[name] = (m["Type"], m["Source"], m["Destination"], m["Mode"], m["Propagation"])
        assert got == {
            "sh": ("bind", d, "/m", "", "rshared"),
            "sl": ("bind", d, "/m", "rslave", "rslave"),
            "pr": ("bind", d, "/m", "", "rprivate"),
        }
        h.ok("rm", "-f", "sh", "sl", "pr")
        # The container's mounts were not detached from the host by its exit.
        assert mounted(os.path.join(d, "late")) and mounted(os.path.join(d, "in1"))


def test_propagation_refused_as_dockerd_refuses_it(bhost: NamespaceHost) -> None:
    h = bhost
    with tmpfs_dir("private") as d:
        r = h.cli("run", "--rm", "--mount", f"type=bind,src={d},dst=/m,bind-propagation=rshared",
                  "busybox", "true")  # fmt: skip
        assert r.returncode != 0
        assert f"path {d} is mounted on {d} but it is not a shared mount" in r.stderr, r
        r = h.cli("run", "--rm", "-v", f"{d}/sub:/m:slave", "busybox", "true")
        assert r.returncode != 0
        assert (
            f"path {d}/sub is mounted on {d} but it is not a shared or slave mount" in r.stderr
        ), r
        r = h.cli("run", "--rm", "--mount", f"type=bind,src={d},dst=/m,bind-propagation=up",
                  "busybox", "true")  # fmt: skip
        assert r.returncode == 125
        assert 'invalid mount config for type "bind": invalid propagation mode: up' in r.stderr
        r = h.cli("run", "--rm", "-v", "vol:/m:rshared", "busybox", "true")
        assert r.returncode == 125
        assert "field BindOptions must not be specified" in r.stderr, r
        # private propagation needs nothing of the host's mount.
        assert h.ok("run", "--rm", "-v", f"{d}:/m:private", "busybox", "echo", "ok") == "ok\n"


def test_compose_nocopy_and_bind_propagation(bhost: NamespaceHost) -> None:
    h = bhost
    with tmpfs_dir("shared") as shared, tempfile.TemporaryDirectory(prefix="tt-proj-") as proj:
        with open(os.path.join(proj, "compose.yaml"), "w") as f:
            f.write(
                "services:\n"
                "  app:\n"
                "    image: busybox\n"
                "    command: [sh, -c, 'trap \"exit 0\" TERM; sleep 600 & wait']\n"
                "    volumes:\n"
                "      - filled:/etc\n"
                "      - {type: volume, source: bare, target: /opt/etc, volume: {nocopy: true}}\n"
                f"      - {{type: bind, source: {shared}, target: /m, bind: {{propagation: rslave}}}}\n"
                "volumes: {filled: {}, bare: {}}\n"
            )
        r = h.cli("compose", "-f", f"{proj}/compose.yaml", "-p", "pr", "up", "-d")
        assert r.returncode == 0, r
        assert "propagation" not in r.stderr  # honoured, not warned about
        assert {"group", "passwd"} <= set(os.listdir(volume_dir(h, "pr_filled")))
        assert os.listdir(volume_dir(h, "pr_bare")) == []
        os.mkdir(os.path.join(shared, "late"))
        sh(f"mount -t tmpfs late {shared}/late && echo seen > {shared}/late/f")
        assert h.ok("compose", "-f", f"{proj}/compose.yaml", "-p", "pr", "exec", "app",
                    "cat", "/m/late/f") == "seen\n"  # fmt: skip
        h.ok("compose", "-f", f"{proj}/compose.yaml", "-p", "pr", "down", "-v")
