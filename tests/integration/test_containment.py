"""What must never cross from the host into a container, tried as an attacker would.

Each test here failed before its fix (issue 9's review): a netlink socket to the host's
nftables inherited by every container and exec, device nodes a container could make and open,
an exec entering whatever process had a reused pid, a relay socket anyone could talk to, a
sysctl left on a user's bridge, and the shim's leaks and limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from nshost import NamespaceHost, busybox_tar, namespace_host
from tether.client import ApiError
from tether.engine.execs import Exec, Execs
from tether.engine.supervisor import Supervisor, first_child, proc_start_time
from tether.firewall.relayctl import RelayClient, relay_pids
from tether.runtime import cgroups, shim

pytestmark = pytest.mark.integration

O_CLOEXEC = 0o2000000


def fd_table(pid: int) -> dict[int, str]:
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
    return out


def inheritable_fds(pid: int) -> list[int]:
    """Descriptors of `pid` that a program it starts would get (not close-on-exec)."""
    out = []
    for fd in fd_table(pid):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
        except (OSError, StopIteration):
            continue
        if not flags & O_CLOEXEC:
            out.append(fd)
    return sorted(out)


def netlink_sockets(pid: int) -> list[str]:
    """The netlink sockets `pid` holds, as "fd:protocol" (12 is NETLINK_NETFILTER)."""
    with open(f"/proc/{pid}/net/netlink") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    protocol = {row[9]: row[1] for row in rows}
    return [
        f"{fd}:{protocol[target[8:-1]]}"
        for fd, target in fd_table(pid).items()
        if target.startswith("socket:[") and target[8:-1] in protocol
    ]


def wait_for_process(cmdline: bytes, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == cmdline:
                        return int(entry)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no process {cmdline!r}")


# -- S1: descriptors ------------------------------------------------------------------------


def test_nothing_but_stdio_reaches_containers_execs_and_the_relay(bhost: NamespaceHost) -> None:
    h = bhost
    assert h.proc is not None
    # tetherd itself: whatever it starts can inherit its stdio and nothing else (libnftables'
    # socket to the host's nftables was inheritable).
    assert inheritable_fds(h.proc.pid) == [0, 1, 2]
    h.ok("run", "-d", "--name", "fds", "-p", "[::1]:8081:80", "busybox", "sleep", "300")
    pid1 = int(h.api.get("/containers/fds/json")["State"]["Pid"])
    assert sorted(fd_table(pid1)) == [0, 1, 2], fd_table(pid1)
    # An exec, seen from inside as a user would look (`; true` keeps sh from exec'ing ls)...
    assert h.ok("exec", "fds", "sh", "-c", "ls /proc/$$/fd; true").split() == ["0", "1", "2"]
    # ... and from the host.
    h.ok("exec", "-d", "fds", "sleep", "31.5")
    sleeper = wait_for_process(b"sleep\x0031.5\x00")
    assert sorted(fd_table(sleeper)) == [0, 1, 2], fd_table(sleeper)
    # The port relay (started for the [::1] port) holds no netlink socket at all.
    relays = relay_pids(h.exec_root)
    assert relays
    for relay in relays:
        assert netlink_sockets(relay) == [], fd_table(relay)
    # With NET_ADMIN a container could use such a socket; it has none to use.
    h.ok("run", "-d", "--name", "admin", "--cap-add", "NET_ADMIN", "busybox", "sleep", "300")
    admin = int(h.api.get("/containers/admin/json")["State"]["Pid"])
    assert netlink_sockets(admin) == []


# -- S2: devices ----------------------------------------------------------------------------

DEVPROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* Each argument, one answer line "ARG=ERRNO" (0: it worked):
 *   mknod:PATH:c|b:MAJOR:MINOR   make a device node
 *   open:PATH:r|w                open it (and close it: nothing is read or written)
 *   pty                          a pseudo-terminal pair of the container's own devpts */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char buf[512], *f[5] = {0};
        int n = 0, err = 0;
        snprintf(buf, sizeof buf, "%s", argv[i]);
        for (char *p = strtok(buf, ":"); p && n < 5; p = strtok(NULL, ":")) f[n++] = p;
        if (strcmp(f[0], "mknod") == 0 && n == 5) {
            mode_t type = f[2][0] == 'b' ? S_IFBLK : S_IFCHR;
            unlink(f[1]);
            if (mknod(f[1], type | 0666, makedev(atoi(f[3]), atoi(f[4]))) != 0) err = errno;
        } else if (strcmp(f[0], "open") == 0 && n == 3) {
            int fd = open(f[1], (f[2][0] == 'w' ? O_WRONLY : O_RDONLY) | O_NONBLOCK | O_NOCTTY);
            if (fd < 0) err = errno;
            else close(fd);
        } else if (strcmp(f[0], "pty") == 0) {
            int m = posix_openpt(O_RDWR | O_NOCTTY), s = -1;
            if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) err = errno;
            else if ((s = open(ptsname(m), O_RDWR | O_NOCTTY)) < 0) err = errno;
            else if (write(m, "x\n", 2) != 2) err = errno;
        } else {
            err = -1;
        }
        printf("%s=%d\n", argv[i], err);
    }
    return 0;
}
"""

EPERM, ENXIO = 1, 6
# Made anywhere the container can write (as Docker allows: CAP_MKNOD, "c *:* m", "b *:* m"),
# opened nowhere: /dev/kmsg (the host's kernel log) and /dev/loop0 (a block device; with
# `b 8 0` on a normal host it would be the host's disk).
FORBIDDEN = [("c", 1, 11), ("b", 7, 0)]


@pytest.fixture(scope="module")
def devprobe_image() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="tether-dev-")
    try:
        with open(os.path.join(d, "devprobe.c"), "w") as f:
            f.write(DEVPROBE_C)
        subprocess.run(
            ["gcc", "-static", "-O2", "-o", os.path.join(d, "devprobe"), f"{d}/devprobe.c"],
            check=True,
            capture_output=True,
        )
        tar = os.path.join(d, "image.tar")
        shutil.copy(busybox_tar(), tar)
        with tarfile.open(tar, "a") as t:
            t.add(os.path.join(d, "devprobe"), arcname="bin/devprobe")
        yield tar
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dhost(devprobe_image: str) -> Iterator[NamespaceHost]:
    with namespace_host() as h:
        h.ok("image", "import", "--change", 'CMD ["sh"]', devprobe_image, "busybox")
        yield h


def devprobe(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.rsplit("=", 1) for line in out.split())}


def device_args() -> list[str]:
    args = []
    for where in ("/tmp", "", "/dev"):
        for kind, major, minor in FORBIDDEN:
            node = f"{where}/node-{kind}{major}-{minor}"
            args += [f"mknod:{node}:{kind}:{major}:{minor}", f"open:{node}:r", f"open:{node}:w"]
    return args


STANDARD = [
    "open:/dev/null:w",
    "open:/dev/zero:r",
    "open:/dev/full:w",
    "open:/dev/random:r",
    "open:/dev/urandom:r",
    "open:/dev/ptmx:r",
    "pty",
]


def test_device_nodes_can_be_made_but_not_opened(dhost: NamespaceHost) -> None:
    h = dhost
    out = devprobe(h.ok("run", "--rm", "busybox", "devprobe", *device_args(), *STANDARD))
    for arg, err in out.items():
        if arg.startswith("mknod:"):
            assert err == 0, (arg, err)  # as in Docker: CAP_MKNOD and "c/b *:* m"
        elif arg.startswith("open:/dev/node-") or arg.startswith(("open:/tmp/", "open:/node-")):
            assert err == EPERM, (arg, err)  # the device cgroup refuses the open
        else:
            assert err == 0, (arg, err)  # runc's default devices work
    # An exec is in the container's cgroup too.
    h.ok("run", "-d", "--name", "devs", "busybox", "sleep", "300")
    out = devprobe(h.ok("exec", "devs", "devprobe", *device_args(), *STANDARD))
    assert {a: e for a, e in out.items() if a.startswith("open:") and "node-" in a} == {
        a: EPERM for a in out if a.startswith("open:") and "node-" in a
    }
    assert all(out[a] == 0 for a in STANDARD), out
    # /dev/tty is the controlling terminal of an exec with one (-t), as in Docker.
    assert h.ok("exec", "-t", "devs", "sh", "-c", "echo hi > /dev/tty && echo ok").split() == [
        "hi",
        "ok",
    ]
    # Its cgroup is the container's own and goes with it.
    cid = h.api.get("/containers/devs/json")["Id"]
    cgroup = cgroups.path_for(cid)
    assert cgroup is not None
    with open(os.path.join(cgroup, "cgroup.procs")) as f:
        assert int(h.api.get("/containers/devs/json")["State"]["Pid"]) in map(int, f.read().split())
    h.ok("rm", "-f", "devs")
    assert not os.path.exists(cgroup)


def test_privileged_containers_open_any_device(dhost: NamespaceHost) -> None:
    h = dhost
    out = devprobe(
        h.ok("run", "--rm", "--privileged", "busybox", "devprobe", *device_args(), *STANDARD)
    )
    for arg, err in out.items():
        if arg.startswith("open:") and "node-b7" in arg:
            assert err in (0, ENXIO), (
                arg,
                err,
            )  # loop0 may have no backing file: the driver says so
        else:
            assert err == 0, (arg, err)


# -- S5: exec's way in, the relay's socket, a user's bridge ---------------------------------


def test_exec_enters_only_the_process_it_was_meant_for() -> None:
    shim_path = shim.ensure_built()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        start = proc_start_time(sleeper.pid)

        def shim_exec(pid_start: int, *prefix: str) -> subprocess.CompletedProcess[str]:
            argv = [shim_path, "exec", "--pid", str(sleeper.pid), "--pid-start", str(pid_start)]
            return subprocess.run(
                [*prefix, *argv, "--", "true"], capture_output=True, text=True, timeout=30
            )

        assert shim_exec(start).returncode == 0
        # Another start time: the pid now names someone else's process; nothing is entered.
        r = shim_exec(start + 1)
        assert r.returncode == 126 and "has ended" in r.stderr, r
        assert "not running" in r.stderr
        # A pid namespace that cannot be joined (from a child pid namespace, the process's is
        # an ancestor: EINVAL) is an error, not a reason to run the command where the shim is.
        r = shim_exec(start, "unshare", "--pid", "--fork")
        assert r.returncode == 126 and "join pid namespace: Invalid argument" in r.stderr, r
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_relay_answers_root_only(bhost: NamespaceHost, monkeypatch: pytest.MonkeyPatch) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "web6", "-p", "[::1]:8082:80", "busybox", "sleep", "300")
    sock = os.path.join(h.exec_root, "relay.sock")
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
    # Whatever way another user finds to the socket (here: its mode opened up, and the
    # test's private directory made traversable), the relay hangs up on them.
    os.chmod(h.dir, 0o755)
    os.chmod(sock, 0o666)
    ask = (
        "import json, socket\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        f"s.connect({sock!r})\n"
        "s.settimeout(5)\n"
        "try:\n"
        "    s.send(json.dumps({'op': 'list', 'offset': 0}).encode())\n"
        "    print(repr(s.recv(65536)))\n"
        "except OSError as e:\n"
        "    print('refused', e)\n"
    )
    r = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable],
        input=ask,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r
    assert "8082" not in r.stdout, r
    assert r.stdout.split()[0] in ("b''", "refused"), r  # hung up on, or not even connected
    # tetherd itself still talks to it.
    assert RelayClient(h.exec_root).held()
    # The socket is 0600 from the moment it exists: bind happens under umask 077, whatever
    # tetherd's own umask (the mode is seen as the chmod after the bind would find it).
    seen: list[int] = []
    real_chmod = os.chmod

    def chmod(path: str, mode: int) -> None:
        seen.append(stat.S_IMODE(os.lstat(path).st_mode))
        real_chmod(path, mode)

    d = tempfile.mkdtemp(prefix="tether-relay-", dir=h.dir)
    client = RelayClient(d)
    old = os.umask(0)
    monkeypatch.setattr(os, "chmod", chmod)
    try:
        client.ensure()
    finally:
        monkeypatch.undo()
        os.umask(old)
        client.quit()
    assert seen and seen[0] & 0o077 == 0, [oct(m) for m in seen]


def test_a_users_bridge_gets_its_route_localnet_back(bhost: NamespaceHost) -> None:
    h = bhost
    h.sh("ip link add usrbr0 type bridge")
    knob = "/proc/sys/net/ipv4/conf/usrbr0/route_localnet"
    assert h.sh(f"cat {knob}").stdout.strip() == "0"
    h.ok("network", "create", "-o", "com.docker.network.bridge.name=usrbr0", "usrnet")
    assert h.sh(f"cat {knob}").stdout.strip() == "1"  # for ports published on 127.0.0.1
    h.ok("network", "rm", "usrnet")
    assert h.sh(f"cat {knob}").stdout.strip() == "0"
    assert "usrbr0" in h.links()  # the user's bridge stays, as in Docker


# -- B7, B11: nothing tetherd starts is left running unwatched or unreaped ------------------


def process_state(pid: int) -> str:
    """'' once the process is gone (reaped), else its state letter (Z: a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[data.rindex(b")") + 2 :].split()[0].decode()


async def until(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


def hanging_spec(d: str) -> shim.RunSpec:
    """A container whose start never completes: its network namespace "file" is a FIFO,
    whose open blocks until a writer comes (none does)."""
    fifo = os.path.join(d, "netns")
    os.mkfifo(fifo)
    os.makedirs(os.path.join(d, "rootfs"))
    return shim.RunSpec(
        log=os.path.join(d, "log"),
        exit_file=os.path.join(d, "exit"),
        netns=fifo,
        hostname=None,
        rootfs=os.path.join(d, "rootfs"),
        overlay=None,
        binds=[],
        cwd="/",
        env=[],
        argv=["true"],
        security=shim.Security(all_devices=True),
    )


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
def test_a_start_cut_short_leaves_no_shim(
    how: str, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shim_path = shim.ensure_built()
    spec = hanging_spec(str(tmp_path))
    monkeypatch.setattr(shim, "START_TIMEOUT", 1.0)

    async def main() -> tuple[int, int]:
        task = asyncio.create_task(shim.start(shim_path, spec))
        marker = spec.exit_file.encode()
        found: list[int] = []

        def spawned() -> bool:
            found[:] = [p for p in pids_of_child_processes() if marker in cmdline(p)]
            return bool(found) and first_child(found[0]) != 0

        assert await until(spawned)
        shim_pid = found[0]
        child = first_child(shim_pid)  # the container's pid 1, blocked in open()
        if how == "cancelled":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(shim.StartError, match="did not answer in 1 s"):
                await task
        # Killed, and reaped by the loop (no zombie left for tetherd): both processes.
        assert await until(lambda: process_state(shim_pid) == "" and process_state(child) in "Z")
        return shim_pid, child

    try:
        shim_pid, child = asyncio.run(main())
    finally:  # should the fix fail: nothing of this test may outlive it
        for pid in os.listdir("/proc"):
            if pid.isdigit() and spec.exit_file.encode() in cmdline(int(pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    assert process_state(shim_pid) == ""
    assert process_state(child) in ("", "Z")  # a zombie of init's, which reaps it


def pids_of_child_processes() -> list[int]:
    with open(f"/proc/self/task/{os.getpid()}/children") as f:
        return [int(p) for p in f.read().split()]


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


class OneContainer:
    """The engine's container registry reduced to one running container (Execs' view)."""

    def __init__(self, info: dict[str, Any]) -> None:
        pid = int(info["State"]["Pid"])
        self.c = SimpleNamespace(
            id=info["Id"],
            host_config={},
            config={},
            state=SimpleNamespace(running=True, pid=pid, pid_start=proc_start_time(pid)),
        )
        self.confiner = SimpleNamespace(shim_security=lambda hc, privileged: shim.Security())

    def find(self, term: str) -> SimpleNamespace:
        return self.c


def test_an_exec_cancelled_mid_run_is_reaped(bhost: NamespaceHost, tmp_path: Any) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "execd", "busybox", "sleep", "300")
    registry = OneContainer(h.api.get("/containers/execd/json"))

    async def main() -> Exec:
        supervisor = Supervisor(str(tmp_path), lambda cid: asyncio.sleep(0))
        execs = Execs(registry, supervisor)  # type: ignore[arg-type]
        ex = Exec(
            id="e1",
            container_id=registry.c.id,
            cmd=["sleep", "1.5"],
            env=[],
            workdir="/",
            tty=False,
            attach_stdin=False,
            attach_stdout=True,
            attach_stderr=True,
        )

        async def write(data: bytes) -> None:
            return None

        task = asyncio.create_task(execs.run(ex, write, None))
        assert await until(lambda: ex.pid != 0)
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert process_state(ex.pid) not in ("", "Z")  # it runs on, as Docker's would
        # When it ends it is reaped (it stayed a zombie of tetherd's before) and recorded.
        assert await until(lambda: process_state(ex.pid) == "", 10)
        return ex

    ex = asyncio.run(main())
    assert ex.exit_code == 0 and not ex.running


# -- B9: as many masked and read-only paths as a user gives ----------------------------------


def test_hundreds_of_masked_and_read_only_paths(bhost: NamespaceHost) -> None:
    h = bhost
    # The shim held at most 256 of each: the start failed with a 500 ("tether-shim exited
    # without a word").  The last of 300 is applied like the first.
    masked = [f"/nonexistent/m{i}" for i in range(299)] + ["/www"]
    readonly = [f"/nonexistent/r{i}" for i in range(299)] + ["/tmp"]
    body = {
        "Image": "busybox",
        "Cmd": ["sh", "-c", "ls -A /www; touch /tmp/x"],
        "HostConfig": {"MaskedPaths": masked, "ReadonlyPaths": readonly},
    }
    cid = h.api.post("/containers/create", body, {"name": "manypaths"})["Id"]
    h.api.post(f"/containers/{cid}/start")
    assert h.api.post(f"/containers/{cid}/wait")["StatusCode"] == 1
    out = h.ok("logs", "manypaths") + h.cli("logs", "manypaths").stderr
    assert "index.html" not in out and "Read-only file system" in out, out
    # More than tether-shim's command line can carry: refused at create, nothing stored.
    huge = [f"/nonexistent/{'x' * 40}/{i}" for i in range(20000)]
    before = h.api.get("/containers/json", {"all": 1})
    with pytest.raises(ApiError) as refused:
        h.api.post(
            "/containers/create",
            {"Image": "busybox", "HostConfig": {"MaskedPaths": huge}},
            {"name": "toomany"},
        )
    assert refused.value.status == 400
    assert "more than tether-shim can take" in refused.value.message
    assert h.api.get("/containers/json", {"all": 1}) == before
    too_long = "/" + "x" * 5000
    with pytest.raises(ApiError) as refused:
        h.api.post(
            "/containers/create",
            {"Image": "busybox", "HostConfig": {"ReadonlyPaths": [too_long]}},
        )
    assert refused.value.status == 400 and "longer than 4095 bytes" in refused.value.message
