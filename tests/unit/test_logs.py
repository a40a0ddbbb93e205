"""Container logs across rotations (--log-opt max-size/max-file): tether.runtime.logs read
what tether-shim writes (frames in PATH, PATH.1 the newest rotated, ...).  Pure files."""

from __future__ import annotations

import os

import pytest

from tether.runtime import logs
from tether.runtime.logs import HEADER, LogReader, rotated


def frame(text: str, stream: int = 1) -> bytes:
    data = text.encode()
    return HEADER.pack(stream, len(data), 0) + data


def write(path: str, *texts: str) -> None:
    with open(path, "ab") as f:
        for t in texts:
            f.write(frame(t))


def rotate(path: str, max_file: int) -> None:
    """What the shim does when the file is full."""
    for i in range(max_file - 1, 0, -1):
        src = path if i == 1 else f"{path}.{i - 1}"
        if os.path.exists(src):
            os.replace(src, f"{path}.{i}")
    open(path, "wb").close()


def texts(frames: list) -> list[str]:
    return [f.data.decode() for f in frames]


def test_history_reads_the_rotated_files_oldest_first(tmp_path: os.PathLike[str]) -> None:
    log = os.path.join(tmp_path, "container.log")
    write(log, "a")
    rotate(log, 3)
    write(log, "b")
    rotate(log, 3)
    write(log, "c")
    assert rotated(log) == [f"{log}.2", f"{log}.1"]
    r = LogReader(log)
    assert texts(r.history()) == ["a", "b", "c"]
    r.close()
    rotate(log, 3)  # the oldest is dropped, as max-file says
    write(log, "d")
    r = LogReader(log)
    assert texts(r.history()) == ["b", "c", "d"]
    r.close()


def test_a_follower_crosses_a_rotation_without_losing_or_repeating(
    tmp_path: os.PathLike[str],
) -> None:
    log = os.path.join(tmp_path, "container.log")
    write(log, "1", "2")
    r = LogReader(log)
    assert texts(r.history()) == ["1", "2"]
    write(log, "3")  # written to the old file just before it rotates
    rotate(log, 2)
    write(log, "4")
    got = []
    for _ in range(4):
        got += texts(r.more())
    assert got == ["3", "4"]
    # A rotation between opening the log and reading its history: each file read once.
    r2 = LogReader(log)
    rotate(log, 3)
    write(log, "5")
    got = texts(r2.history())
    for _ in range(3):
        got += texts(r2.more())
    assert got == ["1", "2", "3", "4", "5"]
    r.close()
    r2.close()


def test_a_follower_several_rotations_behind_reads_the_files_between(
    tmp_path: os.PathLike[str],
) -> None:
    log = os.path.join(tmp_path, "container.log")
    write(log, "a")
    r = LogReader(log)
    assert texts(r.history()) == ["a"]
    write(log, "b")
    for text in ("c", "d", "e"):  # three rotations before the follower looks again
        rotate(log, 10)
        write(log, text)
    got = []
    for _ in range(3):
        got += texts(r.more())
    assert got == ["b", "c", "d", "e"]
    r.close()


def test_a_file_emptied_in_place_is_read_again_from_its_start(
    tmp_path: os.PathLike[str],
) -> None:
    log = os.path.join(tmp_path, "container.log")
    write(log, "old-1", "old-2")
    r = LogReader(log)
    assert texts(r.history()) == ["old-1", "old-2"]
    with open(log, "r+b") as f:  # max-file 1: the shim truncates
        f.truncate(0)
    write(log, "new")
    assert texts(r.more()) == ["new"]
    r.close()


def test_a_removed_log_still_gives_what_the_held_file_has(tmp_path: os.PathLike[str]) -> None:
    log = os.path.join(tmp_path, "container.log")
    write(log, "x")
    r = LogReader(log)
    assert texts(r.history()) == ["x"]
    write(log, "last")
    os.unlink(log)  # run --rm: removed as it ends
    assert texts(r.more()) == ["last"]
    assert r.more() == []
    r.close()


def test_a_follower_drains_what_the_held_file_got_just_before_it_rotated(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shim appends and rotates between the follower's read of the held file and its look
    at PATH's inode: the last lines of the old file still reach the follower."""
    log = os.path.join(tmp_path, "container.log")
    write(log, "1")
    r = LogReader(log)
    assert texts(r.history()) == ["1"]
    real = logs.read_frames
    calls = []

    def read_then_rotate(path: int | str, offset: int = 0) -> tuple[list[logs.Frame], int]:
        got = real(path, offset)
        if not calls:  # right after more()'s first read of the held file
            write(log, "2", "3")
            rotate(log, 3)
            write(log, "4")
        calls.append(path)
        return got

    monkeypatch.setattr(logs, "read_frames", read_then_rotate)
    got = texts(r.more())
    for _ in range(2):
        got += texts(r.more())
    assert got == ["2", "3", "4"]
    r.close()


def test_rotated_lists_the_files_while_the_rename_chain_has_a_gap(
    tmp_path: os.PathLike[str],
) -> None:
    log = os.path.join(tmp_path, "container.log")
    for name in (f"{log}.3", f"{log}.2", log, f"{log}.x", f"{log}.10"):
        write(name, "x")
    # Mid-rotation: .1 was renamed to .2 and PATH not yet to .1.
    assert rotated(log) == [f"{log}.10", f"{log}.3", f"{log}.2"]
    assert rotated(os.path.join(tmp_path, "absent", "container.log")) == []
