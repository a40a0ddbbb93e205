"""tether cp, stats, diff and attach, as a user checks them: the bytes and modes of files
copied in and out, NET I/O that is the sandbox's own interface counters after real pings,
a created file shown as `A`, and a shell attached on a terminal that answers, detaches
with ctrl-p ctrl-q (the container keeps running) and returns the container's exit code."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import tarfile
import tempfile
import time

import pytest

from clients import run_in_pty
from nshost import PYTHON, NamespaceHost

pytestmark = pytest.mark.integration


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _tree(root: str) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256 or 'dir', permission bits)} of a local tree."""
    out: dict[str, tuple[str, int]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            kind = "dir" if os.path.isdir(full) else _sha(full)
            out[os.path.relpath(full, root)] = (kind, st.st_mode & 0o7777)
    return out


def test_cp_in_and_out_keeps_bytes_and_modes(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "box", "busybox", "sleep", "3600")
    with tempfile.TemporaryDirectory(prefix="tt-cp-") as d:
        src = os.path.join(d, "src")
        os.makedirs(os.path.join(src, "sub"))
        with open(os.path.join(src, "blob.bin"), "wb") as f:
            f.write(os.urandom(300_000))
        os.chmod(os.path.join(src, "blob.bin"), 0o751)
        with open(os.path.join(src, "sub", "note"), "w") as f:
            f.write("note\n")
        os.chmod(os.path.join(src, "sub", "note"), 0o600)
        os.chmod(os.path.join(src, "sub"), 0o710)
        os.chown(os.path.join(src, "sub", "note"), 1234, 5678)
        want = _tree(src)

        # In: /data does not exist, so it is created with the directory's content.
        h.ok("cp", src, "box:/data")
        inside = h.ok("exec", "box", "sh", "-c",
                      "sha256sum /data/blob.bin; stat -c '%a %u:%g' /data/blob.bin "
                      "/data/sub /data/sub/note")  # fmt: skip
        lines = inside.splitlines()
        assert lines[0].split()[0] == want["blob.bin"][0], inside
        # Modes as on the host; the archive's owners kept (docker cp without -a does too).
        assert lines[1:] == ["751 0:0", "710 0:0", "600 1234:5678"], inside

        # Out: into an existing directory, then the content only ("/."), then as a tar on
        # stdout; each one the same bytes and modes as the source.
        back = os.path.join(d, "back")
        os.mkdir(back)
        h.ok("cp", "box:/data", back)
        assert _tree(os.path.join(back, "data")) == want
        h.ok("cp", "box:/data/.", os.path.join(d, "flat"))
        assert _tree(os.path.join(d, "flat")) == want
        h.ok("cp", "box:/data/blob.bin", os.path.join(d, "renamed.bin"))
        assert _sha(os.path.join(d, "renamed.bin")) == want["blob.bin"][0]
        assert os.stat(os.path.join(d, "renamed.bin")).st_mode & 0o777 == 0o751
        r = subprocess.run(
            [PYTHON, "-m", "tether.cli.main", "cp", "box:/data/sub", "-"],
            capture_output=True,
            env={**os.environ, "TETHER_HOST": f"unix://{h.socket}"},
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
            assert sorted(t.getnames()) == ["sub", "sub/note"]
            assert t.extractfile("sub/note").read() == b"note\n"  # type: ignore[union-attr]

        # A tar on stdin goes into a directory; docker's errors for what cannot be done,
        # and nothing made by them.
        buf = os.path.join(d, "in.tar")
        with tarfile.open(buf, "w") as t:
            t.add(os.path.join(src, "sub", "note"), arcname="from-stdin")
        with open(buf, "rb") as f:
            r = subprocess.run(
                [PYTHON, "-m", "tether.cli.main", "cp", "-", "box:/tmp"],
                stdin=f,
                capture_output=True,
                env={**os.environ, "TETHER_HOST": f"unix://{h.socket}"},
                timeout=60,
            )
        assert r.returncode == 0, r.stderr
        assert h.ok("exec", "box", "cat", "/tmp/from-stdin") == "note\n"
        cases = [
            (["box:/nope", d], "Error: No such container:path: box:/nope"),
            (["nosuch:/x", d], "Error: No such container:path: nosuch:/x"),
            (["box:/data/blob.bin", os.path.join(d, "nodir") + "/"], "no such directory"),
            ([src, "box:/data/blob.bin"], "cannot copy directory"),
            (["-", "box:/data/blob.bin"], 'destination "box:/data/blob.bin" must be a directory'),
            ([d, "x"], "must specify at least one container source"),
            (["box:/a", "box:/b"], "copying between containers is not supported"),
            ([os.path.join(d, "missing"), "box:/tmp"], f"lstat {d}/missing: no such file"),
        ]
        for args, message in cases:
            r = h.cli("cp", *args)
            assert r.returncode == 1 and r.stderr.startswith(message), (args, r.stderr)
            assert "Traceback" not in r.stderr
        assert not os.path.exists(os.path.join(d, "nodir"))
        # A file over an existing directory: dockerd's refusal, the directory intact.
        with open(os.path.join(d, "sub"), "w") as f:
            f.write("a file\n")
        r = h.cli("cp", os.path.join(d, "sub"), "box:/data")
        assert r.returncode == 1, r
        assert r.stderr.strip() == (
            "Error response from daemon: Error processing tar file(exit status 1): cannot "
            'overwrite directory "/data/sub" with non-directory "/data"'
        )
        assert h.ok("exec", "box", "cat", "/data/sub/note") == "note\n"

        # A stopped container: its filesystem mounted for the copy (as dockerd does), what
        # went in is there when it starts again, and nothing stays mounted.
        h.ok("run", "-d", "--name", "stopped", "-v", "vol:/vol", "busybox", "sh", "-c",
             "echo made-inside > /made; sleep 3600")  # fmt: skip
        deadline = time.monotonic() + 30
        while h.cli("exec", "stopped", "cat", "/made").stdout != "made-inside\n":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        h.ok("stop", "-t", "0", "stopped")
        mounts_before = _mounts(h)
        h.ok("cp", os.path.join(src, "blob.bin"), "stopped:/in.bin")
        h.ok("cp", "stopped:/made", os.path.join(d, "made"))
        with open(os.path.join(d, "made")) as f:
            assert f.read() == "made-inside\n"
        # Its volume is not mounted then: refused, not copied to or from the wrong place.
        r = h.cli("cp", os.path.join(src, "blob.bin"), "stopped:/vol/x")
        assert r.returncode == 1 and "/vol of stopped is mounted when it runs" in r.stderr, r
        assert _mounts(h) == mounts_before
        h.ok("start", "stopped")
        inside = h.ok("exec", "stopped", "sh", "-c", "sha256sum /in.bin; ls /vol")
        assert inside.split() == [want["blob.bin"][0], "/in.bin"], inside

        # --read-only: only its read-write volumes take a copy (dockerd's words otherwise).
        h.ok("run", "-d", "--read-only", "--name", "ro", "-v", "rov:/vol", "busybox",
             "sleep", "3600")  # fmt: skip
        r = h.cli("cp", os.path.join(src, "sub", "note"), "ro:/tmp")
        assert (r.returncode, r.stderr) == (
            1,
            "Error response from daemon: container rootfs is marked read-only\n",
        )
        h.ok("cp", os.path.join(src, "sub", "note"), "ro:/vol")
        assert h.ok("exec", "ro", "cat", "/vol/note") == "note\n"
    h.ok("rm", "-f", "box", "stopped", "ro")


def _mounts(h: NamespaceHost) -> list[str]:
    """This host's mounts as the machine sees them (others' tests come and go meanwhile)."""
    with open("/proc/self/mounts") as f:
        return sorted(p for p in (line.split()[1] for line in f) if p.startswith(h.dir))


def _counters(h: NamespaceHost, container: str) -> tuple[int, int]:
    """(rx, tx) bytes of the container's eth0, read by the kernel in its namespace."""
    for line in h.in_sandbox(container, "cat /proc/net/dev").stdout.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "eth0":
            fields = rest.split()
            return int(fields[0]), int(fields[8])
    raise AssertionError(f"no eth0 in {container}")


def _bytes(text: str) -> float:
    """ "5.72kB" -> 5720.0 (go-units' decimal units, as docker stats prints NET I/O)."""
    m = re.fullmatch(r"([\d.]+)(B|kB|MB|GB)", text)
    assert m, text
    return float(m.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)]


def test_stats_net_io_is_the_sandboxes_own_counters(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.77.0.0/24", "statnet")
    for name in ("pinger", "target"):
        h.ok("run", "-d", "--name", name, "--network", "statnet", "busybox", "sleep", "3600")
    h.ok("run", "-d", "--name", "idle", "busybox", "sleep", "3600")
    h.ok("create", "--name", "never", "busybox", "true")
    before = _counters(h, "target")
    h.ok("exec", "pinger", "ping", "-c", "5", "-s", "1000", "-W", "2", "target")
    rx, tx = _counters(h, "target")
    # Five echo requests of 1,028 bytes of IP in, five replies out, at least.
    assert rx - before[0] >= 5 * 1042 and tx - before[1] >= 5 * 1042, (before, rx, tx)

    # What stats shows is what the kernel counted, read before and after it (other frames
    # may cross meanwhile), to the 3 significant digits docker prints.
    fmt = "{{.Name}}|{{.NetIO}}|{{.PIDs}}|{{.MemUsage}}"
    first = {c: _counters(h, c) for c in ("target", "pinger")}
    out = h.ok("stats", "--no-stream", "--format", fmt, "target", "pinger")
    last = {c: _counters(h, c) for c in ("target", "pinger")}
    rows = {line.split("|")[0]: line.split("|") for line in out.splitlines()}
    for c in ("target", "pinger"):
        shown = [_bytes(v) for v in rows[c][1].split(" / ")]
        for i in (0, 1):
            low, high = first[c][i], last[c][i]
            assert low * 0.995 - 1 <= shown[i] <= high * 1.005 + 1, (c, out, first, last)
            assert shown[i] >= 5 * 1042, out
    assert rows["target"][2] == "1", out
    assert re.fullmatch(r"[\d.]+(B|KiB|MiB) / [\d.]+GiB", rows["target"][3]), out

    # The default table: running containers only, docker's header; -a adds the stopped one.
    table = h.ok("stats", "--no-stream").splitlines()
    assert re.split(" {3,}", table[0]) == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT",
                                           "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]  # fmt: skip
    assert sorted(line.split()[1] for line in table[1:]) == ["idle", "pinger", "target"]
    names = h.ok("stats", "--no-stream", "-a", "--format", "{{.Name}}").split()
    assert sorted(names) == ["idle", "never", "pinger", "target"]
    assert (
        h.ok("stats", "--no-stream", "--no-trunc", "--format", "{{.ID}}", "idle").strip()
        == (h.api.get("/containers/idle/json")["Id"])
    )
    # CPU %: a shell spinning shows its share of the machine's CPU time over a second.
    h.ok("run", "-d", "--name", "busy", "busybox", "sh", "-c", "while :; do :; done")
    busy = h.ok("stats", "--no-stream", "--format", "{{.CPUPerc}}", "busy").strip()
    assert busy.endswith("%") and float(busy[:-1]) > 10, busy
    idle = h.ok("stats", "--no-stream", "--format", "{{.CPUPerc}}", "idle").strip()
    assert float(idle[:-1]) < 5, idle
    h.ok("rm", "-f", "busy")
    r = h.cli("stats", "--no-stream", "nosuch", "idle")
    assert (r.returncode, r.stderr) == (
        1,
        "Error response from daemon: No such container: nosuch\n",
    )

    # Streaming: the screen cleared and the table drawn again and again, until Ctrl-C (0).
    proc = subprocess.Popen(
        [PYTHON, "-m", "tether.cli.main", "stats", "target"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TETHER_HOST": f"unix://{h.socket}"},
    )
    try:
        time.sleep(3)
    finally:
        proc.send_signal(signal.SIGINT)
        out_b, err_b = proc.communicate(timeout=20)
    assert proc.returncode == 0, err_b
    frames = out_b.decode().split("\x1b[2J\x1b[H")
    assert frames[0] == "" and len(frames) >= 3, out_b[:500]
    for frame in frames[1:]:
        lines = frame.splitlines()
        assert lines[0].startswith("CONTAINER ID") and lines[1].split()[1] == "target", frame
    assert err_b == b""
    h.ok("rm", "-f", "pinger", "target", "idle", "never")
    h.ok("network", "rm", "statnet")


def test_diff_shows_added_changed_deleted(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "changer", "busybox", "sh", "-c",
         "echo made > /made.txt && mkdir -p /srv/new && rm /bin/zcat && sleep 3600")  # fmt: skip
    deadline = time.monotonic() + 30
    while "made.txt" not in h.ok("exec", "changer", "ls", "/") and time.monotonic() < deadline:
        time.sleep(0.1)
    out = h.ok("diff", "changer").splitlines()
    for line in ("A /made.txt", "A /srv", "A /srv/new", "D /bin/zcat", "C /bin"):
        assert line in out, out
    assert not any(line.endswith(("/etc/hosts", "/etc/resolv.conf")) for line in out), out
    assert all(line[:2] in ("A ", "C ", "D ") for line in out), out
    r = h.cli("diff", "nosuch")
    assert (r.returncode, r.stderr) == (
        1,
        "Error response from daemon: No such container: nosuch\n",
    )
    r = h.cli("diff")
    assert r.returncode == 1 and r.stderr.startswith('"tether diff" requires exactly 1 argument.')
    h.ok("rm", "-f", "changer")


def _env(h: NamespaceHost) -> dict[str, str]:
    return {"TETHER_HOST": f"unix://{h.socket}"}


def test_attach_to_a_shell_on_a_terminal(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-dit", "--name", "shell", "busybox", "sh")
    argv = [PYTHON, "-m", "tether.cli.main", "attach", "shell"]
    # Typed input reaches the shell, its answers come back; the terminal's size is the
    # container's; ctrl-p ctrl-q detaches as docker attach does ("read escape sequence", 1).
    out, code = run_in_pty(argv, [b"echo hi$((40+2))\r", b"stty size\r", b"\x10\x11"], _env(h))
    assert b"hi42" in out and b"33 101" in out, out
    assert out.rstrip().endswith(b"read escape sequence"), out
    assert code == 1
    state = h.api.get("/containers/shell/json")["State"]
    assert state["Running"], state
    # Attached again, the same shell (what it kept) and its exit code as ours.
    out, code = run_in_pty(argv, [b"echo again$((1+1))\r", b"exit 3\r"], _env(h))
    assert b"again2" in out, out
    assert code == 3, out
    state = h.api.get("/containers/shell/json")["State"]
    assert (state["Running"], state["ExitCode"]) == (False, 3)
    r = h.cli("attach", "shell")
    assert (r.returncode, r.stderr) == (
        1,
        "You cannot attach to a stopped container, start it first\n",
    )
    r = h.cli("attach", "nosuch")
    assert (r.returncode, r.stderr) == (1, "Error: No such container: nosuch\n")
    h.ok("rm", "shell")


def test_attach_without_a_terminal_streams_and_proxies_signals(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "talker", "busybox", "sh", "-c",
         "trap 'echo got TERM; echo bye >&2; exit 7' TERM; while :; do sleep 0.1; done")  # fmt: skip
    proc = subprocess.Popen(
        [PYTHON, "-m", "tether.cli.main", "attach", "--no-stdin", "talker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **_env(h)},
    )
    try:
        time.sleep(3)  # attached by then (the CLI starts in well under a second)
        proc.send_signal(signal.SIGTERM)  # --sig-proxy (default): to the container
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out, err, proc.returncode) == (b"got TERM\n", b"bye\n", 7)
    h.ok("rm", "talker")


def test_start_attached_streams_input_and_exit_code(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("create", "--name", "once", "busybox", "sh", "-c", "echo out; echo err >&2; exit 6")
    r = h.cli("start", "-a", "once")
    assert (r.stdout, r.stderr, r.returncode) == ("out\n", "err\n", 6)
    h.ok("create", "-i", "--name", "cat1", "busybox", "cat")
    r = h.cli("start", "-ai", "cat1", input="through stdin\n")
    assert (r.stdout, r.returncode) == ("through stdin\n", 0), r
    r = h.cli("start", "-a", "once", "cat1")
    assert (r.returncode, r.stderr) == (
        1,
        "you cannot start and attach multiple containers at once\n",
    )
    h.ok("rm", "once", "cat1")
