"""-v, --mount, --tmpfs and --restart parsed as docker's CLI parses them (opts/mount.go,
compose's ParseVolume, opts.ParseRestartPolicy), and what tether run sends for them."""

from __future__ import annotations

import os

import pytest

from tether.cli import mounts
from tether.cli.container import RUN, _container_body
from tether.cli.flags import UsageError, parse


def test_mount_csv_forms() -> None:
    assert mounts.parse_mount("type=bind,source=/srv,target=/data,readonly") == {
        "Type": "bind",
        "Source": "/srv",
        "Target": "/data",
        "ReadOnly": True,
    }
    assert mounts.parse_mount("src=v1,dst=/v,volume-opt=type=tmpfs,volume-label=a=b") == {
        "Type": "volume",
        "Source": "v1",
        "Target": "/v",
        "VolumeOptions": {"DriverConfig": {"Options": {"type": "tmpfs"}}, "Labels": {"a": "b"}},
    }
    assert mounts.parse_mount("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770") == {
        "Type": "tmpfs",
        "Target": "/t",
        "TmpfsOptions": {"SizeBytes": 1024 * 1024, "Mode": 0o1770},
    }
    assert mounts.parse_mount('"type=bind","src=/a,b",dst=/x,ro=false')["Source"] == "/a,b"
    assert mounts.parse_mount("type=bind,src=.,dst=/x")["Source"] == os.getcwd()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("type=bind", "target is required"),
        ("type=,target=/x", "type is required"),
        ("target=/x,bogus", "invalid field 'bogus' must be a key=value pair"),
        ("target=/x,size=3", "unexpected key 'size' in 'size=3'"),
        ("target=/x,ro=maybe", "invalid value for ro: maybe"),
        ("type=tmpfs,target=/x,tmpfs-size=lots", "invalid value for tmpfs-size: lots"),
        ("type=tmpfs,target=/x,tmpfs-mode=9", "invalid value for tmpfs-mode: 9"),
        ("type=bind,target=/x,volume-nocopy", "cannot mix 'volume-*' options with mount type 'bind'"),
        ("type=volume,target=/x,bind-propagation=shared", "cannot mix 'bind-*' options with mount type 'volume'"),
        ("type=bind,target=/x,tmpfs-size=1m", "cannot mix 'tmpfs-*' options with mount type 'bind'"),
    ],
)  # fmt: skip
def test_mount_errors_are_dockers(value: str, error: str) -> None:
    with pytest.raises(ValueError, match="^" + error.replace("*", r"\*") + "$"):
        mounts.parse_mount(value)


def test_unknown_mount_type_is_left_to_the_daemon() -> None:
    # docker's CLI sends type=foo on; dockerd (and tetherd) refuse it.
    assert mounts.parse_mount("type=foo,target=/x")["Type"] == "foo"


def test_volume_specs() -> None:
    assert mounts.parse_volume("/data") == {
        "Type": "volume", "Source": "", "Target": "/data", "ReadOnly": False,
    }  # fmt: skip
    assert mounts.parse_volume("vol:/data:ro")["Type"] == "volume"
    assert mounts.parse_volume("/srv:/data:ro,z") == {
        "Type": "bind", "Source": "/srv", "Target": "/data", "ReadOnly": True,
    }  # fmt: skip
    assert mounts.parse_volume("./x:/data")["Type"] == "bind"
    for spec, error in [
        (":/x", "invalid spec: :/x: empty section between colons"),
        ("/a::/x", "invalid spec: /a::/x: empty section between colons"),
        ("/a:/b:ro:x", "invalid spec: /a:/b:ro:x: too many colons"),
        ("", "invalid empty volume spec"),
    ]:
        with pytest.raises(ValueError) as exc:
            mounts.parse_volume(spec)
        assert str(exc.value) == error


def test_restart_policies() -> None:
    assert mounts.parse_restart("always") == {"Name": "always"}
    assert mounts.parse_restart("on-failure:3") == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert mounts.parse_restart("sometimes") == {"Name": "sometimes"}  # the daemon refuses it
    with pytest.raises(ValueError, match="no policy provided before colon"):
        mounts.parse_restart(":3")
    with pytest.raises(ValueError, match="maximum retry count must be an integer"):
        mounts.parse_restart("on-failure:x")


def _body(*argv: str) -> dict[str, object]:
    o, args = parse(RUN, [*argv, "busybox"])
    o["network"] = [*o["network"], *o.pop("net", [])]
    o["network_alias"] = [*o["network_alias"], *o.pop("net_alias", [])]
    return _container_body(o, args)[0]


def test_run_sends_what_docker_run_sends() -> None:
    body = _body(
        "-v", "/srv:/srv:ro", "-v", "data:/data", "-v", "/anon", "-v", "./rel:/rel",
        "--mount", "type=tmpfs,dst=/t", "--tmpfs", "/run:size=1m", "--tmpfs", "/cache",
        "--restart", "on-failure:2", "--volumes-from", "other:ro", "--group-add", "audio",
        "--shm-size", "128m",
    )  # fmt: skip
    hc = body["HostConfig"]
    assert isinstance(hc, dict)
    assert hc["Binds"] == ["/srv:/srv:ro", "data:/data", os.path.abspath("rel") + ":/rel"]
    assert body["Volumes"] == {"/anon": {}}
    assert hc["Mounts"] == [{"Type": "tmpfs", "Target": "/t"}]
    assert hc["Tmpfs"] == {"/run": "size=1m", "/cache": ""}
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert hc["VolumesFrom"] == ["other:ro"]
    assert hc["GroupAdd"] == ["audio"]
    assert hc["ShmSize"] == 128 * 1024 * 1024


def test_run_flag_errors() -> None:
    with pytest.raises(UsageError) as exc:
        parse(RUN, ["--mount", "type=bind", "busybox"])
    assert (
        exc.value.message == 'invalid argument "type=bind" for "--mount" flag: target is required'
    )
    with pytest.raises(UsageError) as exc:
        parse(RUN, ["--shm-size", "big", "busybox"])
    assert "invalid size: 'big'" in exc.value.message
    from tether.cli.context import CliError

    with pytest.raises(CliError, match="invalid spec: :/x: empty section between colons"):
        _body("-v", ":/x")
    with pytest.raises(CliError, match="Conflicting options: --restart and --rm"):
        _body("--restart", "always", "--rm")


def test_volume_prune_sizes_are_dockers_human_size() -> None:
    from tether.cli.volume import human_size

    assert [human_size(n) for n in (0, 999, 1500, 12345678, 10**12)] == [
        "0B", "999B", "1.5kB", "12.35MB", "1TB",
    ]  # fmt: skip
