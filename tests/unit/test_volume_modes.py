"""-v's MODE words, --mount's bind propagation and volume options, and which volumes a new
container fills from its image, checked as dockerd's linux_parser and oci_linux check them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tether.api.containers import HostConfig
from tether.engine.volumes import Volumes, check_propagation
from tether.errors import InvalidParameter, SystemFailure
from tether.model import Container
from tether.mountmodes import valid_mode
from tether.store.sqlite import Store


@pytest.mark.parametrize(
    ("mode", "ok"),
    [
        ("", True),
        ("ro", True),
        ("ro,rshared", True),
        ("rw,Z,rslave,nocopy,cached", True),
        ("z,private", True),
        ("ro,rw", False),  # two of a kind
        ("shared,rslave", False),
        ("z,Z", False),
        ("copy", False),  # dockerd knows nocopy only
        ("bogus", False),
        ("ro,", False),
    ],
)
def test_valid_mode(mode: str, ok: bool) -> None:
    assert valid_mode(mode) is ok


def _volumes(tmp_path: Path) -> Volumes:
    v = Volumes(Store(str(tmp_path / "db")), str(tmp_path))
    v.load()
    return v


def _resolve(
    v: Volumes, hc: dict[str, Any], image_volumes: list[str] | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    def find(name: str) -> Container:
        raise AssertionError(name)

    return v.resolve(msgspec.convert(hc, HostConfig), image_volumes or [], find)


def test_bind_propagation_is_recorded_as_inspect_shows_it(tmp_path: Path) -> None:
    v = _volumes(tmp_path)
    src = str(tmp_path)
    mounts, fill = _resolve(
        v,
        {
            "Binds": [f"{src}:/a:ro,rshared", f"{src}:/b", f"{src}:/c:slave"],
            "Mounts": [
                {"Type": "bind", "Source": src, "Target": "/d", "BindOptions": {"Propagation": "rslave"}},
                {"Type": "bind", "Source": src, "Target": "/e"},
            ],
        },
    )  # fmt: skip
    by_dst = {m["Destination"]: m for m in mounts}
    assert {d: m["Propagation"] for d, m in by_dst.items()} == {
        "/a": "rshared", "/b": "rprivate", "/c": "slave", "/d": "rslave", "/e": "rprivate",
    }  # fmt: skip
    assert by_dst["/a"]["Mode"] == "ro,rshared" and not by_dst["/a"]["RW"]
    assert fill == []


@pytest.mark.parametrize(
    ("hc", "error"),
    [
        ({"Binds": ["/tmp:/x:ro,rw"]}, "invalid mode: ro,rw"),
        ({"Binds": ["/tmp:/x:copy"]}, "invalid mode: copy"),
        (
            {"Binds": ["data:/x:rshared"]},
            "invalid volume specification: 'data:/x:rshared': invalid mount config for type "
            '"volume": field BindOptions must not be specified',
        ),
        (
            {"Binds": ["/tmp:/x:nocopy"]},
            "invalid volume specification: '/tmp:/x:nocopy': invalid mount config for type "
            '"bind": field VolumeOptions must not be specified',
        ),
        (
            {"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/x", "BindOptions": {"Propagation": "sideways"}}]},
            'invalid mount config for type "bind": invalid propagation mode: sideways',
        ),
        (
            {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/x", "BindOptions": {"Propagation": "rshared"}}]},
            'invalid mount config for type "volume": field BindOptions must not be specified',
        ),
        (
            {"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/x", "VolumeOptions": {"NoCopy": True}}]},
            'invalid mount config for type "bind": field VolumeOptions must not be specified',
        ),
        (
            {"Mounts": [{"Type": "tmpfs", "Target": "/x", "BindOptions": {}}]},
            'invalid mount config for type "tmpfs": field BindOptions must not be specified',
        ),
    ],
)  # fmt: skip
def test_refused_in_dockerds_words(tmp_path: Path, hc: dict[str, Any], error: str) -> None:
    v = _volumes(tmp_path)
    with pytest.raises(InvalidParameter) as exc:
        _resolve(v, hc)
    assert exc.value.message == error
    assert v.by_name == {}  # nothing made


def test_create_mountpoint(tmp_path: Path) -> None:
    v = _volumes(tmp_path)
    src = tmp_path / "new" / "dir"
    mount = {"Type": "bind", "Source": str(src), "Target": "/x"}
    with pytest.raises(InvalidParameter, match="bind source path does not exist"):
        _resolve(v, {"Mounts": [mount]})
    _resolve(v, {"Mounts": [{**mount, "BindOptions": {"CreateMountpoint": True}}]})
    assert src.is_dir()


def test_which_volumes_are_filled_from_the_image(tmp_path: Path) -> None:
    v = _volumes(tmp_path)
    mounts, fill = _resolve(
        v,
        {
            "Binds": ["va:/a", "vb:/b:nocopy", "vc:/c:ro,nocopy", f"{tmp_path}:/bind"],
            "Mounts": [
                {"Type": "volume", "Source": "vd", "Target": "/d"},
                {"Type": "volume", "Source": "ve", "Target": "/e", "VolumeOptions": {"NoCopy": True}},
                {"Type": "tmpfs", "Target": "/t"},
            ],
        },
        image_volumes=["/anon", "/a"],
    )  # fmt: skip
    anon = next(m["Name"] for m in mounts if m["Destination"] == "/anon")
    assert sorted(fill) == sorted([("va", "/a"), ("vd", "/d"), (anon, "/anon")])


MOUNTINFO = """\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:50 / /srv/shared rw shared:7 - tmpfs tmpfs rw
41 27 0:51 / /srv/slave rw master:7 - tmpfs tmpfs rw
42 27 0:52 / /srv/private rw - tmpfs tmpfs rw
43 27 0:53 / /srv/with\\040space rw - tmpfs tmpfs rw
44 42 0:54 / /srv/private/over rw shared:9 - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("source", "propagation", "error"),
    [
        ("/srv/shared/x", "rshared", None),
        ("/srv/shared", "shared", None),
        ("/srv/shared/x", "rslave", None),
        ("/srv/slave/x", "slave", None),
        ("/srv/private/over/y", "rshared", None),  # the longest mount point decides
        ("/srv/slave/x", "rshared", "path /srv/slave/x is mounted on /srv/slave but it is not a shared mount"),
        ("/srv/private", "rslave", "path /srv/private is mounted on /srv/private but it is not a shared or slave mount"),
        ("/srv/with space/a", "shared", "path /srv/with space/a is mounted on /srv/with space but it is not a shared mount"),
        ("/srv/privateer", "rslave", None),  # on / (shared), not on /srv/private
        ("/srv/private/x", "rprivate", None),  # private binds need nothing
    ],
)  # fmt: skip
def test_check_propagation(
    tmp_path: Path, source: str, propagation: str, error: str | None
) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    mounts = [{"Type": "bind", "Source": source, "Propagation": propagation}]
    if error is None:
        check_propagation(mounts, str(info))
    else:
        with pytest.raises(SystemFailure) as exc:
            check_propagation(mounts, str(info))
        assert exc.value.message == error
