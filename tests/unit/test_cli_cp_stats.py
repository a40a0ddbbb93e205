"""tether cp's path rules (docker's cp.go and pkg/archive/copy.go), its flags, and the
numbers and table of tether stats (docker's formatter/stats.go), without a daemon."""

from __future__ import annotations

import io
import os
import re
import tarfile

import pytest

from tether.cli import cp, stats
from tether.cli.attach import ATTACH
from tether.cli.context import CliError
from tether.cli.flags import UsageError, parse
from tether.runtime import cparchive as ca


def test_split_cp_arg_as_docker() -> None:
    assert cp.split_cp_arg("web:/etc/hosts") == ("web", "/etc/hosts")
    assert cp.split_cp_arg("web:") == ("web", "")
    assert cp.split_cp_arg("/abs/file:name") == ("", "/abs/file:name")
    assert cp.split_cp_arg("./file:name") == ("", "./file:name")
    assert cp.split_cp_arg("file") == ("", "file")
    assert cp.split_cp_arg("-") == ("", "-")
    assert cp.split_cp_arg(":/x") == ("", "/x")  # no container: "must specify at least one"


def test_trailing_slash_and_dot_survive_cleaning() -> None:
    assert ca.preserve_trailing(ca.clean("/a//b/"), "/a//b/") == "/a/b/"
    assert ca.preserve_trailing(ca.clean("/a/b/."), "/a/b/.") == "/a/b/."
    assert ca.preserve_trailing(ca.clean("/a/b"), "/a/b") == "/a/b"
    assert ca.clean("//x/../y") == "/y"
    assert ca.split_dir_entry("/a/b/.") == ("/a/b", ".")
    assert ca.split_dir_entry("/a/b/") == ("/a", "b")
    assert ca.split_dir_entry("/") == ("/", "/")
    assert ca.asserts_directory("/x/") and ca.asserts_directory("/x/.")
    assert not ca.asserts_directory("/x")
    os.chdir("/tmp")
    assert cp.resolve_local("out/") == "/tmp/out/"
    assert cp.resolve_local("out/.") == "/tmp/out/."


def test_prepare_archive_copy_cases() -> None:
    # (src, src_is_dir, rebase, dst, exists, is_dir) -> (dir to extract into, rename)
    prep = cp.prepare_archive_copy
    assert prep("/s/f", False, "", "/d", True, True) == ("/d", None)
    assert prep("/s/f", False, "", "/d/new", False, False) == ("/d", ("f", "new"))
    assert prep("/s/f", False, "", "/d/file", True, False) == ("/d", ("f", "file"))
    assert prep("/s/dir", True, "", "/d/new", False, False) == ("/d", ("dir", "new"))
    assert prep("/s/dir/.", True, "", "/d/new", False, False) == ("/d", (".", "new"))
    assert prep("/s/target", False, "link", "/d/new", False, False) == ("/d", ("link", "new"))
    with pytest.raises(CliError, match=r"^cannot copy directory$"):
        prep("/s/dir", True, "", "/d/file", True, False)
    with pytest.raises(CliError, match=r"^no such directory$"):
        prep("/s/f", False, "", "/d/nodir/", False, False)


def test_rebase_names_first_element_only() -> None:
    assert ca.rebase_name("dir/a.txt", "dir", "new") == "new/a.txt"
    assert ca.rebase_name("dir", "dir", "new") == "new"
    assert ca.rebase_name("./a.txt", ".", "new") == "new/a.txt"
    assert ca.rebase_name(".", ".", "new") == "new"
    assert ca.rebase_name("dirx/a", "dir", "new") == "dirx/a"
    assert cp.get_rebase_name("/lnk/", "/d") == ("/d/", "lnk")
    assert cp.get_rebase_name("/lnk/.", "/d") == ("/d/.", "")
    assert cp.get_rebase_name("/d/l", "/d/a.txt") == ("/d/a.txt", "l")


def test_untar_refuses_dir_nondir_swaps_and_escapes(tmp_path: object) -> None:
    dest = str(tmp_path)
    os.mkdir(os.path.join(dest, "sub"))

    def archive(*members: tuple[str, bytes | None]) -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                if data is None:
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    t.addfile(info)
                else:
                    info.size = len(data)
                    info.mode = 0o640
                    t.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf

    with pytest.raises(ca.CopyError, match=r'cannot overwrite directory ".*/sub" with non-'):
        ca.untar(archive(("sub", b"x")), dest, True, chown=False)
    with pytest.raises(ca.CopyError, match="outside of"):
        ca.untar(archive(("../evil", b"x")), dest, True, chown=False)
    assert not os.path.exists(os.path.join(os.path.dirname(dest), "evil"))
    ca.untar(archive(("f.txt", b"one")), dest, True, chown=False)
    ca.untar(archive(("f.txt", b"two"), ("sub", None), ("sub/g", b"g")), dest, True, chown=False)
    with open(os.path.join(dest, "f.txt"), "rb") as f:
        assert f.read() == b"two"
    assert os.stat(os.path.join(dest, "sub", "g")).st_mode & 0o777 == 0o640
    with pytest.raises(ca.CopyError, match=r'cannot overwrite non-directory ".*/f\.txt" with dir'):
        ca.untar(archive(("f.txt", None)), dest, True, chown=False)


def test_go_mode_bits() -> None:
    st = os.stat("/dev/null")
    assert ca.go_mode(st) & ca.GO_DEVICE and ca.go_mode(st) & ca.GO_CHARDEV
    assert cp._go_mode_problem(ca.go_mode(st)) == "got a device"
    assert ca.go_mode(os.stat("/tmp")) & ca.GO_DIR
    assert ca.rfc3339nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert ca.rfc3339nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_cp_and_attach_flags() -> None:
    opts, args = parse(cp.CP, ["-aLq", "c:/x", "-"])
    assert (opts["archive"], opts["follow_link"], opts["quiet"]) == (True, True, True)
    assert args == ["c:/x", "-"]
    with pytest.raises(UsageError, match=r'"tether cp" requires exactly 2 arguments\.'):
        parse(cp.CP, ["c:/x"])
    opts, args = parse(ATTACH, ["--no-stdin", "--sig-proxy=false", "--detach-keys", "ctrl-a", "c"])
    assert (opts["no_stdin"], opts["sig_proxy"], opts["detach_keys"]) == (True, False, "ctrl-a")
    assert parse(ATTACH, ["c"])[0]["sig_proxy"] is True


def _doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "name": "/web",
        "id": "a" * 64,
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000_000},
            "system_cpu_usage": 120_000_000_000,
            "online_cpus": 2,
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": 2_000_000_000},
            "system_cpu_usage": 100_000_000_000,
        },
        "memory_stats": {"usage": 10 * 1024 * 1024, "limit": 2 * 1024**3, "stats": {}},
        "networks": {
            "eth0": {"rx_bytes": 1500, "tx_bytes": 980},
            "eth1": {"rx_bytes": 500, "tx_bytes": 20},
        },
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "Read", "value": 4096},
                {"major": 8, "minor": 0, "op": "write", "value": 2_500_000},
            ]
        },
        "pids_stats": {"current": 3},
    }
    doc.update(over)
    return doc


def test_stats_numbers_as_docker_computes_them() -> None:
    e = stats.entry("web", _doc())
    assert e["cpu"] == pytest.approx(10.0)  # 1 s of 20 s of host CPU time, times 2 CPUs
    r = stats.row(e, trunc=True)
    assert r == {
        "Container": "web",
        "Name": "web",
        "ID": "a" * 12,
        "CPUPerc": "10.00%",
        "MemUsage": "10MiB / 2GiB",
        "MemPerc": "0.49%",
        "NetIO": "2kB / 1kB",
        "BlockIO": "4.1kB / 2.5MB",
        "PIDs": "3",
    }
    # cgroup v2's inactive_file is not counted as used (docker's "no cache" usage)
    doc = _doc(memory_stats={"usage": 3000, "limit": 0, "stats": {"inactive_file": 1000}})
    r = stats.row(stats.entry("web", doc), trunc=False)
    assert (r["MemUsage"], r["MemPerc"], r["ID"]) == ("1.953KiB / 0B", "0.00%", "a" * 64)
    # the first sample of a stream (no previous): 0% rather than a division by nothing
    assert stats.cpu_percent({"cpu_stats": {}, "precpu_stats": {}}) == 0.0
    assert stats.row({**e, "invalid": True}, True)["MemUsage"] == "-- / --"


def test_stats_table_and_formats() -> None:
    e = stats.entry("web", _doc())
    table = stats.render(stats.DEFAULT_FORMAT, [e], True).splitlines()
    assert re.split(" {3,}", table[0]) == [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ]
    assert table[1].startswith("aaaaaaaaaaaa   web       10.00%    10MiB / 2GiB")
    assert stats.render("{{.Name}} {{.NetIO}}", [e], True) == "web 2kB / 1kB\n"
    assert stats.render("table {{.Container}}\t{{.PIDs}}", [e], True) == (
        "CONTAINER   PIDS\nweb         3\n"
    )
    assert stats.render("json", [e], True).startswith('{"BlockIO":"4.1kB / 2.5MB","CPUPerc"')
    assert stats.human_size(999) == "999B" and stats.human_size(1_234_567) == "1.23MB"
    assert stats.bytes_size(1536) == "1.5KiB"


def test_block_io_from_cgroup_io_stat() -> None:
    from tether.daemon.routes_containers import io_service_bytes

    entries = io_service_bytes(
        "8:0 rbytes=4096 wbytes=2500000 rios=1 wios=9 dbytes=0 dios=0\n"
        "253:1 rbytes=1000 wbytes=0 rios=2 wios=0 dbytes=0 dios=0\n"
    )
    assert entries[0] == {"major": 8, "minor": 0, "op": "read", "value": 4096}
    e = stats.entry("web", _doc(blkio_stats={"io_service_bytes_recursive": entries}))
    assert stats.row(e, True)["BlockIO"] == "5.1kB / 2.5MB"
