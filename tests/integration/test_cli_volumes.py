"""tether's own CLI with docker's storage and restart flags: -v/--mount named volumes and
binds, --tmpfs, --restart, and docker's errors for bad input (nothing made)."""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration


def test_named_volume_bind_and_tmpfs(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    # A second container (through --mount this time) reads what the first wrote.
    out = h.ok("run", "--rm", "--mount", "source=data,target=/d,readonly", "busybox",
               "sh", "-c", "cat /d/f; touch /d/g 2>/dev/null || echo read-only")  # fmt: skip
    assert out.split() == ["kept", "read-only"], out
    vols = h.api.get("/volumes")["Volumes"]
    assert [v["Name"] for v in vols] == ["data"], vols
    with tempfile.TemporaryDirectory(prefix="tt-bind-") as d:
        with open(os.path.join(d, "host.txt"), "w") as f:
            f.write("from-host\n")
        out = h.ok("run", "--rm", "-v", f"{d}:/h", "busybox", "sh", "-c",
                   "cat /h/host.txt && echo from-container > /h/back.txt")  # fmt: skip
        assert out == "from-host\n"
        with open(os.path.join(d, "back.txt")) as f:
            assert f.read() == "from-container\n"
        out = h.ok("run", "--rm", "--mount", f"type=bind,src={d},dst=/h,ro", "busybox",
                   "sh", "-c", "touch /h/x 2>/dev/null || echo read-only")  # fmt: skip
        assert out == "read-only\n" and not os.path.exists(os.path.join(d, "x"))
    out = h.ok("run", "--rm", "--tmpfs", "/scratch:size=1m", "--mount",
               "type=tmpfs,dst=/t2,tmpfs-size=2m", "busybox", "sh", "-c",
               "grep -E ' /(scratch|t2) ' /proc/mounts")  # fmt: skip
    lines = sorted(out.splitlines())
    assert len(lines) == 2, out
    assert lines[0].split()[1:3] == ["/scratch", "tmpfs"] and "size=1024k" in lines[0], out
    assert lines[1].split()[1:3] == ["/t2", "tmpfs"] and "size=2048k" in lines[1], out


def test_restart_always_brings_the_container_back(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "flaky", "--restart=always", "busybox", "sh", "-c", "sleep 1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = h.api.get("/containers/flaky/json")
        if info["RestartCount"] >= 2 and info["State"]["Running"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"not restarted: {info['RestartCount']} {info['State']}")
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    h.ok("rm", "-f", "flaky")


def test_bad_input_gets_dockers_error_and_makes_nothing(bhost: NamespaceHost) -> None:
    h = bhost
    cases = [
        (["-v", ":/x"], "tether: invalid spec: :/x: empty section between colons."),
        (["--mount", "type=foo,target=/x"], "mount type unknown"),
        (["--mount", "type=bind"],
         'invalid argument "type=bind" for "--mount" flag: target is required'),
        (["--restart=sometimes"], "invalid restart policy: unknown policy 'sometimes'"),
        (["--restart=on-failure:x"], "maximum retry count must be an integer"),
        (["-v", "bad name:/x"], "includes invalid characters for a local volume name"),
    ]  # fmt: skip
    for args, message in cases:
        r = h.cli("run", "-d", *args, "busybox", "true")
        assert r.returncode == 125, (args, r.returncode, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
        # One line, then docker's pointer to the help (its words differ for the daemon's errors).
        assert r.stderr.splitlines()[1:] in (
            ["See 'tether run --help'."],
            ["Run 'tether run --help' for more information"],
        ), r.stderr
    assert h.ok("ps", "-aq") == ""
    assert h.api.get("/volumes")["Volumes"] in ([], None)


def test_volume_commands(bhost: NamespaceHost) -> None:
    h = bhost
    assert h.ok("volume", "create", "--label", "team=a", "v1") == "v1\n"
    assert h.ok("volume", "create", "--name", "v2") == "v2\n"
    r = h.cli("volume", "create", "--name", "v3", "v4")
    assert r.returncode == 1 and r.stderr == (
        "Conflicting options: either specify --name or provide positional arg, not both\n"
    )
    r = h.cli("volume", "create", "bad/name")
    assert r.returncode == 1 and "includes invalid characters" in r.stderr
    assert r.stderr.count("\n") == 1
    h.ok("run", "-d", "--name", "user", "-v", "v1:/v1", "-v", "/anon", "busybox", "sleep", "300")
    anon = [n for n in h.ok("volume", "ls", "-q").split() if n not in ("v1", "v2")]
    assert len(anon) == 1 and len(anon[0]) == 64, anon
    table = h.ok("volume", "ls").splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"], table
    assert sorted(line.split()[1] for line in table[1:]) == sorted([anon[0], "v1", "v2"])
    assert h.ok("volume", "ls", "-q", "-f", "label=team=a") == "v1\n"
    assert h.ok("volume", "ls", "-q", "--filter", "dangling=true") == "v2\n"
    assert h.ok("volume", "ls", "--format", '{{.Name}} {{.Label "team"}}', "-f", "name=v1") == (
        "v1 a\n"
    )
    mountpoint = h.ok("volume", "inspect", "-f", "{{.Mountpoint}}", "v1").strip()
    h.ok("exec", "user", "sh", "-c", "echo via-volume > /v1/f")
    with open(os.path.join(mountpoint, "f")) as f:
        assert f.read() == "via-volume\n"
    r = h.cli("volume", "inspect", "nope")
    assert r.returncode == 1 and r.stdout == "[]\n"
    assert r.stderr == "Error response from daemon: get nope: no such volume\n", r.stderr
    r = h.cli("volume", "rm", "v1", "nope")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("Error response from daemon: remove v1: volume is in use - [")
    assert "get nope: no such volume" in r.stderr
    assert h.ok("volume", "rm", "-f", "nope") == "nope\n"
    # Without -a prune takes anonymous volumes only, and never one in use.
    out = h.ok("volume", "prune", "-f")
    assert out == "Total reclaimed space: 0B\n", out
    h.ok("rm", "-f", "user")
    out = h.ok("volume", "prune", "-f")
    assert out == f"Deleted Volumes:\n{anon[0]}\n\nTotal reclaimed space: 0B\n", out
    r = h.cli("volume", "prune", input="n\n")
    assert r.stdout.startswith("WARNING! This will remove anonymous local volumes")
    out = h.ok("volume", "prune", "-a", "-f")
    assert out.startswith("Deleted Volumes:\n") and "Total reclaimed space: " in out, out
    assert sorted(out.split("\n\n")[0].splitlines()[1:]) == ["v1", "v2"]
    assert not os.path.exists(mountpoint)
    assert h.ok("volume", "ls", "-q") == ""


def test_pause_rename_top_update(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("run", "-d", "--name", "c1", "busybox", "sleep", "300")
    pid = h.api.get("/containers/c1/json")["State"]["Pid"]
    top = h.ok("top", "c1").splitlines()
    assert top[0].split()[:2] == ["UID", "PID"], top
    assert any(line.split()[1] == str(pid) and line.endswith("sleep 300") for line in top[1:])
    assert h.ok("pause", "c1") == "c1\n"
    assert h.api.get("/containers/c1/json")["State"]["Paused"] is True
    # Frozen by the cgroup freezer: the kernel says so for the container's cgroup.
    with open(f"/proc/{pid}/cgroup") as f:
        cgroup = f.read().strip().rpartition("::")[2]
    roots = [r for r in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup") if os.path.exists(
        f"{r}{cgroup}/cgroup.freeze")]  # fmt: skip
    with open(f"{roots[0]}{cgroup}/cgroup.freeze") as f:
        assert f.read().strip() == "1"
    assert h.ok("unpause", "c1") == "c1\n"
    assert h.api.get("/containers/c1/json")["State"]["Paused"] is False
    r = h.cli("rename", "c1", "")
    assert r.returncode == 1 and r.stderr == "Error: Neither old nor new names may be empty\n"
    assert h.ok("rename", "c1", "c2") == ""
    assert h.api.get("/containers/c2/json")["Name"] == "/c2"
    r = h.cli("rename", "nope", "c3")
    assert r.returncode == 1 and r.stderr.endswith("Error: failed to rename container named nope\n")
    assert h.ok("update", "--restart", "on-failure:2", "c2") == "c2\n"
    policy = h.api.get("/containers/c2/json")["HostConfig"]["RestartPolicy"]
    assert policy == {"Name": "on-failure", "MaximumRetryCount": 2}
    r = h.cli("update", "--restart", "sometimes", "c2")
    assert r.returncode == 1 and "unknown policy 'sometimes'" in r.stderr, r.stderr
    assert h.api.get("/containers/c2/json")["HostConfig"]["RestartPolicy"] == policy
    h.ok("rm", "-f", "c2")


def test_rm_v_and_run_rm_remove_anonymous_volumes_only(bhost: NamespaceHost) -> None:
    """docker rm -v (and --rm's auto-remove, which dockerd does with RemoveVolume) removes
    the container's anonymous volumes, data and all; named ones stay, and so does an
    anonymous one another container still mounts (--volumes-from)."""
    h = bhost
    h.ok("run", "-d", "--name", "c1", "-v", "/anon", "-v", "keep:/named", "busybox",
         "sleep", "300")  # fmt: skip
    anon = [n for n in h.ok("volume", "ls", "-q").split() if n != "keep"]
    assert len(anon) == 1, anon
    mountpoint = h.ok("volume", "inspect", "-f", "{{.Mountpoint}}", anon[0]).strip()
    h.ok("exec", "c1", "sh", "-c", "echo x > /anon/f")
    assert os.path.exists(os.path.join(mountpoint, "f"))
    assert h.ok("rm", "-f", "-v", "c1") == "c1\n"
    assert h.ok("volume", "ls", "-q") == "keep\n"
    assert not os.path.exists(mountpoint)
    # --rm: the anonymous volume goes with the container.
    h.ok("run", "--rm", "-v", "/scratch", "busybox", "sh", "-c", "echo y > /scratch/f")
    assert h.ok("volume", "ls", "-q") == "keep\n"
    # Still mounted by another container: it stays (no error), as with dockerd.
    h.ok("run", "-d", "--name", "c2", "-v", "/shared", "busybox", "sleep", "300")
    h.ok("run", "-d", "--name", "c3", "--volumes-from", "c2", "busybox", "sleep", "300")
    shared = [n for n in h.ok("volume", "ls", "-q").split() if n != "keep"]
    assert len(shared) == 1, shared
    assert h.ok("rm", "-f", "-v", "c2") == "c2\n"
    assert sorted(h.ok("volume", "ls", "-q").split()) == sorted(["keep", shared[0]])
    # Without -v nothing is removed.
    h.ok("rm", "-f", "c3")
    assert sorted(h.ok("volume", "ls", "-q").split()) == sorted(["keep", shared[0]])
