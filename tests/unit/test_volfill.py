"""runtime/volfill.py on real layer directories (an overlay mounted nowhere, GNU cp): what
lands in a new volume is what the container sees at that path, never a host file, never an
overlay marker."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from tether.images.layers import OPAQUE_XATTR
from tether.runtime import volfill

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay and mknod need root")


def _fill(data: Path, dest: str, layers: list[Path]) -> bool:
    return asyncio.run(volfill.fill(str(data), dest, [str(d) for d in layers]))


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def test_a_lone_layers_whiteouts_and_opaque_marks_are_not_copied(tmp_path: Path) -> None:
    # An image of one layer whose tar had /data/.wh.gone and /data/sub/.wh..wh..opq:
    # layers.convert_whiteouts made them overlayfs's markers, which the container's overlay
    # hides; the volume must not get a 0/0 character device nor trusted.overlay.* attributes.
    layer = tmp_path / "layer"
    (layer / "data" / "sub").mkdir(parents=True)
    (layer / "data" / "kept").write_text("k")
    _whiteout(layer / "data" / "gone")
    os.setxattr(layer / "data" / "sub", OPAQUE_XATTR, b"y")
    data = tmp_path / "vol"
    data.mkdir()
    assert _fill(data, "/data", [layer])
    assert sorted(os.listdir(data)) == ["kept", "sub"]
    assert OPAQUE_XATTR not in os.listxattr(data / "sub")


def test_whiteouts_of_an_upper_layer_hide_the_lower_ones_files(tmp_path: Path) -> None:
    low, up = tmp_path / "low", tmp_path / "up"
    (low / "data").mkdir(parents=True)
    (low / "data" / "a").write_text("a")
    (low / "data" / "b").write_text("b")
    (up / "data").mkdir(parents=True)
    _whiteout(up / "data" / "a")
    data = tmp_path / "vol"
    data.mkdir()
    assert _fill(data, "/data", [up, low])
    assert os.listdir(data) == ["b"]


def test_the_images_symlinks_resolve_inside_the_image(tmp_path: Path) -> None:
    # /data -> /etc and /up -> ../../.. in the image: the image's /etc, never the host's, and
    # a symlink inside the copied tree is copied as a symlink, not followed.
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "only-in-image").write_text("x")
    os.symlink("/etc", layer / "data")
    os.symlink("../../..", layer / "up")
    os.symlink("/etc/passwd", layer / "etc" / "pw")
    for dest in ("/data", "/up/etc", "/../../etc"):
        data = tmp_path / f"vol{len(os.listdir(tmp_path))}"
        data.mkdir()
        assert _fill(data, dest, [layer]), dest
        assert sorted(os.listdir(data)) == ["only-in-image", "pw"], dest
        assert os.readlink(data / "pw") == "/etc/passwd"


def test_nothing_is_copied_into_a_volume_with_content(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "data").mkdir(parents=True)
    (layer / "data" / "f").write_text("image")
    data = tmp_path / "vol"
    data.mkdir()
    (data / "mine").write_text("mine")
    assert not _fill(data, "/data", [layer])
    assert os.listdir(data) == ["mine"]


def test_a_whiteout_in_a_directory_of_one_layer_is_skipped_not_fatal(tmp_path: Path) -> None:
    # overlayfs lists a whiteout in a directory no other layer has (a crafted or squashed
    # image's) as an entry that cannot be looked up; the container sees no such file, and
    # the create must neither fail on it nor copy it.
    low, up = tmp_path / "low", tmp_path / "up"
    (low / "etc").mkdir(parents=True)
    (up / "data" / "deep").mkdir(parents=True)
    (up / "data" / "f").write_text("f")
    _whiteout(up / "data" / "gone")
    _whiteout(up / "data" / "deep" / "gone2")
    data = tmp_path / "vol"
    data.mkdir()
    assert _fill(data, "/data", [up, low])
    assert sorted(os.listdir(data)) == ["deep", "f"]
    assert os.listdir(data / "deep") == []
