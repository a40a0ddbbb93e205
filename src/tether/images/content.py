"""Blobs by digest: manifests, configs and layer archives, each stored once and verified.

ROOT/images/blobs/sha256/<hex> holds every blob tether keeps: what it pulled (compressed
layers exactly as the registry sent them, so a push or a save gives the same bytes back),
the uncompressed layer archives of loaded and built images, configs and manifests.  A blob
is written to a temporary file beside its place, hashed as it is written, and renamed into
place only when its digest matches: a half-written or corrupted blob never becomes visible.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from tether.errors import InvalidParameter


class DigestMismatch(InvalidParameter):
    pass


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise InvalidParameter(f"invalid digest {digest!r}")
    return hexpart


class Writer:
    """One blob being written: hashed as it comes, committed only if the digest holds."""

    def __init__(self, store: ContentStore, expected: str | None) -> None:
        self.store = store
        self.expected = expected
        fd, self.tmp = tempfile.mkstemp(prefix=".ingest-", dir=store.tmpdir)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def commit(self, mismatch: str = "") -> str:
        """Into place; `mismatch` is the error text when the digest differs."""
        self.file.close()
        digest = self.digest
        if self.expected and digest != self.expected:
            os.unlink(self.tmp)
            raise DigestMismatch(mismatch or f"digest mismatch: want {self.expected}, got {digest}")
        os.rename(self.tmp, self.store.path(digest))
        return digest

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


class ContentStore:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "blobs", "sha256")
        self.tmpdir = os.path.join(root, "tmp")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.makedirs(self.tmpdir, mode=0o700, exist_ok=True)

    def path(self, digest: str) -> str:
        return os.path.join(self.dir, hex_of(digest))

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        return os.stat(self.path(digest)).st_size

    def writer(self, expected: str | None = None) -> Writer:
        return Writer(self, expected)

    def put(self, data: bytes, expected: str | None = None) -> str:
        w = self.writer(expected)
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        return w.commit()

    def put_file(self, path: str, expected: str | None = None) -> str:
        """A file already on disk (a layer archive being loaded), copied in and verified."""
        w = self.writer(expected)
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    w.write(chunk)
        except BaseException:
            w.abort()
            raise
        return w.commit()

    def get(self, digest: str) -> bytes:
        with open(self.path(digest), "rb") as f:
            return f.read()

    def open(self, digest: str) -> BinaryIO:
        return open(self.path(digest), "rb")

    def chunks(self, digest: str, size: int = 1 << 20) -> Iterator[bytes]:
        with self.open(digest) as f:
            yield from iter(lambda: f.read(size), b"")

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def all(self) -> list[str]:
        return ["sha256:" + h for h in os.listdir(self.dir)]

    def clean_tmp(self) -> None:
        """Leftovers of writes a crash interrupted."""
        for name in os.listdir(self.tmpdir):
            try:
                os.unlink(os.path.join(self.tmpdir, name))
            except OSError:
                pass
