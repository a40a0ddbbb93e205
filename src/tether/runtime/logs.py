"""Container logs as tether-shim writes them, and Docker's stream framing for the API.

A log file is a sequence of frames: 1 byte stream (1 stdout, 2 stderr), 4 bytes length and
8 bytes nanosecond wall-clock time (both big-endian), then the data.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = struct.Struct(">BIQ")


@dataclass
class Frame:
    stream: int
    time_ns: int
    data: bytes


def open_log(path: str) -> int | str:
    """A descriptor of the log (read_frames takes it), or the path if there is none yet."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return path


def close_log(log: int | str) -> None:
    if isinstance(log, int):
        os.close(log)


def read_frames(path: int | str, offset: int = 0) -> tuple[list[Frame], int]:
    """Whole frames from `offset` (of a path, or of a descriptor from open_log); returns them
    and the offset after the last whole one."""
    if isinstance(path, int):
        chunks = []
        pos = offset
        while True:
            data = os.pread(path, 1 << 20, pos)
            if not data:
                break
            chunks.append(data)
            pos += len(data)
        buf = b"".join(chunks)
    else:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                buf = f.read()
        except FileNotFoundError:
            return [], offset
    frames: list[Frame] = []
    pos = 0
    while pos + HEADER.size <= len(buf):
        stream, length, t = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + length
        if end > len(buf):
            break
        frames.append(Frame(stream, t, buf[pos + HEADER.size : end]))
        pos = end
    return frames, offset + pos


def docker_frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed stream: [stream, 0, 0, 0, size BE] + data."""
    return struct.pack(">BxxxI", stream, len(data)) + data


def split_lines(frames: list[Frame]) -> Iterator[Frame]:
    """One frame per line (for --tail and --timestamps, which count and stamp lines)."""
    for f in frames:
        start = 0
        data = f.data
        while start < len(data):
            nl = data.find(b"\n", start)
            end = len(data) if nl < 0 else nl + 1
            yield Frame(f.stream, f.time_ns, data[start:end])
            start = end


def rfc3339_nano(ns: int) -> str:
    import time

    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def rotated(path: str) -> list[str]:
    """The rotated files of a log (--log-opt max-size/max-file: PATH.1 the newest), oldest
    first."""
    # Listed, not probed from .1 upwards: during the shim's rename chain (.2 -> .3, .1 -> .2,
    # PATH -> .1) .1 is briefly absent, and stopping there would hide every older file.
    d, base = os.path.split(path)
    prefix = base + "."
    try:
        names = os.listdir(d or ".")
    except FileNotFoundError:
        return []
    tails = [n[len(prefix) :] for n in names if n.startswith(prefix)]
    nums = [int(t) for t in tails if t.isascii() and t.isdigit()]
    return [f"{path}.{n}" for n in sorted(nums, reverse=True)]


class LogReader:
    """A container's log across its rotations, as `logs` and `logs -f` read it.

    The current file is held open from the start: an auto-removed container's files are
    deleted as it ends, and what it wrote last must still reach a follower (run --rm).  When
    the shim rotates (PATH becomes PATH.1, a new PATH begins), the held file is read to its
    end before the reader moves on to the new one; a file emptied in place (max-file 1) is
    read again from its start.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = open_log(path)
        self.offset = 0

    def history(self) -> list[Frame]:
        """Everything there is: the rotated files, oldest first, then the current one."""
        held = os.fstat(self.fd).st_ino if isinstance(self.fd, int) else None
        frames: list[Frame] = []
        for p in rotated(self.path):
            fd = open_log(p)
            if not isinstance(fd, int):
                continue  # dropped by a rotation meanwhile
            try:
                if os.fstat(fd).st_ino != held:  # rotated since we opened it: read below
                    frames += read_frames(fd)[0]
            finally:
                close_log(fd)
        return frames + self.more()

    def more(self) -> list[Frame]:
        """What was written since the last call."""
        if not isinstance(self.fd, int):
            self.fd = open_log(self.path)
            if not isinstance(self.fd, int):
                return []
        frames, self.offset = read_frames(self.fd, self.offset)
        if frames:
            return frames
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return []  # removed with its container: what we hold is all there is
        held = os.fstat(self.fd)
        if now.st_ino != held.st_ino:
            # Rotated since.  The shim may have appended to the held file after the read
            # above and then renamed it: drain it first.  What came after it is
            # in the rotated files newer than it (a follower can fall several rotations
            # behind), then in the current file, opened first so that a rotation meanwhile
            # cannot slip a file between the two.
            frames, self.offset = read_frames(self.fd, self.offset)
            new = open_log(self.path)
            new_ino = os.fstat(new).st_ino if isinstance(new, int) else None
            between: list[tuple[str, int]] = []
            for p in rotated(self.path):
                try:
                    between.append((p, os.stat(p).st_ino))
                except FileNotFoundError:
                    continue
            inodes = [ino for _, ino in between]
            start = inodes.index(held.st_ino) + 1 if held.st_ino in inodes else 0
            end = inodes.index(new_ino) if new_ino in inodes else len(between)
            for p, _ in between[start:end]:
                fd = open_log(p)
                if isinstance(fd, int):
                    try:
                        frames += read_frames(fd)[0]
                    finally:
                        close_log(fd)
            os.close(self.fd)
            self.fd = new
            self.offset = 0
            if isinstance(self.fd, int):
                more, self.offset = read_frames(self.fd)
                frames += more
        elif held.st_size < self.offset:
            self.offset = 0
            frames, self.offset = read_frames(self.fd)
        return frames

    def close(self) -> None:
        close_log(self.fd)
        self.fd = self.path
