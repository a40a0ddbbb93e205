"""Layers: unpacked once per diff id, shared by every image that has them.

ROOT/images/layers/<diff id hex>/ is one layer's files, as overlayfs reads a lower layer:
OCI whiteouts (`.wh.NAME` files, `.wh..wh..opq`) are turned into overlayfs's (a 0/0
character device, the `trusted.overlay.opaque` attribute) when the layer is unpacked.  A
container's root is an overlay whose lowerdirs are its image's layers, top first, so a layer
is on disk once however many images use it, and nothing is copied to start a container.

Unpacking: the archive (gzip and zstd decompressed here) is fed to GNU tar, which refuses
members with `..`, strips leading `/` and extracts symlinks that point outside as
placeholders until the end, so a layer cannot write outside its directory; tar also keeps
owners (numerically), modes and extended attributes (file capabilities).  The bytes tar reads
are hashed on the way: that is the layer's diff id, checked against the image's config.

Diffs (a build's RUN step): a container's upper directory turned back into an OCI layer
archive, deterministic (sorted, numeric owners, no user or group names).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from tether.errors import InvalidParameter, SystemFailure

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
XATTRS_KEPT = ("security.capability",)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

TAR_ARGS = [
    "tar",
    "-x",
    "-f",
    "-",
    "--numeric-owner",
    "--same-owner",
    "--same-permissions",
    "--xattrs",
    "--xattrs-include=security.capability",
]


class LayerError(InvalidParameter):
    pass


def compression_of(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return ""


class _Decompressor:
    """gzip in process (zlib), zstd through the zstd program, plain as it is."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS) if kind == "gzip" else None
        self.proc: subprocess.Popen[bytes] | None = None

    def feed(self, data: bytes) -> bytes:
        if self.z is not None:
            out = self.z.decompress(data)
            # A gzip stream may be several members back to back (pigz, some registries).
            while self.z.eof and self.z.unused_data:
                rest = self.z.unused_data
                self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += self.z.decompress(rest)
            return out
        return data

    def flush(self) -> bytes:
        if self.z is not None:
            return self.z.flush()
        return b""


class Unpacker:
    """One layer archive streamed into a new directory (async: fed as a download arrives).

    feed() takes the archive's bytes as they come (compressed or not); finish() returns the
    diff id and the unpacked size.  On any error abort() leaves nothing behind.
    """

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self.diff_hash = hashlib.sha256()
        self.kind: str | None = None
        self.dec: _Decompressor | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.zstd: asyncio.subprocess.Process | None = None
        self._head = b""
        self._pump: asyncio.Task[None] | None = None
        self.raw_size = 0

    async def _start(self, head: bytes) -> None:
        self.kind = compression_of(head)
        os.makedirs(self.dest, mode=0o755)
        self.proc = await asyncio.create_subprocess_exec(
            *TAR_ARGS,
            "-C",
            self.dest,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        if self.kind == "zstd":
            # zstd -> (this process: hash) -> tar
            self.zstd = await asyncio.create_subprocess_exec(
                "zstd",
                "-d",
                "-c",
                "-q",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            self._pump = asyncio.create_task(self._pump_zstd())
        else:
            self.dec = _Decompressor(self.kind)

    async def _pump_zstd(self) -> None:
        assert self.zstd is not None and self.zstd.stdout is not None
        while True:
            data = await self.zstd.stdout.read(1 << 18)
            if not data:
                break
            await self._to_tar(data)

    async def _to_tar(self, data: bytes) -> None:
        if not data:
            return
        self.diff_hash.update(data)
        self.raw_size += len(data)
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # tar gave up: its status and message say why, in finish()

    async def feed(self, data: bytes) -> None:
        if self.kind is None:
            self._head += data
            if len(self._head) < 4:
                return
            data, self._head = self._head, b""
            await self._start(data)
        if self.zstd is not None:
            assert self.zstd.stdin is not None
            self.zstd.stdin.write(data)
            await self.zstd.stdin.drain()
            return
        assert self.dec is not None
        try:
            out = self.dec.feed(data)
        except zlib.error as exc:
            raise LayerError(f"invalid gzip stream: {exc}") from None
        await self._to_tar(out)

    async def finish(self) -> tuple[str, int]:
        if self.kind is None:
            data, self._head = self._head, b""
            await self._start(data)
            if data:
                await self.feed(data)
        if self.zstd is not None:
            assert self.zstd.stdin is not None
            self.zstd.stdin.close()
            assert self._pump is not None
            await self._pump
            err = await self.zstd.stderr.read() if self.zstd.stderr else b""
            if await self.zstd.wait() != 0:
                raise LayerError(f"invalid zstd stream: {err.decode(errors='replace').strip()}")
        elif self.dec is not None:
            try:
                await self._to_tar(self.dec.flush())
            except zlib.error as exc:
                raise LayerError(f"invalid gzip stream: {exc}") from None
            if self.dec.z is not None and not self.dec.z.eof:
                raise LayerError("invalid gzip stream: unexpected end of data")
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        err = await self.proc.stderr.read() if self.proc.stderr else b""
        rc = await self.proc.wait()
        if rc != 0:
            text = err.decode(errors="replace").strip().splitlines()
            raise LayerError(
                f"failed to register layer: {text[0] if text else f'tar exited with {rc}'}"
            )
        size = await asyncio.to_thread(convert_whiteouts, self.dest)
        return "sha256:" + self.diff_hash.hexdigest(), size

    async def abort(self) -> None:
        for p in (self.zstd, self.proc):
            if p is not None and p.returncode is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
                await p.wait()
        if self._pump is not None:
            self._pump.cancel()
        shutil.rmtree(self.dest, ignore_errors=True)


def convert_whiteouts(top: str) -> int:
    """OCI whiteouts to overlayfs's, in place; returns the bytes of regular files (the
    layer's size as docker counts it)."""
    size = 0
    stack = [top]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            entries = list(it)
        for e in entries:
            name = e.name
            if name.startswith(WHITEOUT_PREFIX):
                os.unlink(e.path)
                if name == OPAQUE:
                    os.setxattr(d, OPAQUE_XATTR, b"y")
                else:
                    target = os.path.join(d, name[len(WHITEOUT_PREFIX) :])
                    if os.path.lexists(target):
                        _remove(target)
                    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                continue
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append(e.path)
            elif stat.S_ISREG(st.st_mode):
                size += st.st_size
    return size


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class _HashingWriter:
    """A file-like sink for tarfile: hashes what passes and hands it on in 1 MiB pieces."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.buf += data
        if len(self.buf) >= 1 << 20:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if self.buf:
            self.sink(bytes(self.buf))
            self.buf.clear()


def walk_sorted(top: str) -> Iterator[tuple[str, str]]:
    """(path, name in the archive) of every entry under top: depth first, names sorted,
    a directory before its contents (Go's filepath.Walk order)."""
    stack: list[Iterator[tuple[str, str, bool]]] = [_entries(top, "")]
    while stack:
        try:
            path, name, is_dir = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        yield path, name
        if is_dir:
            stack.append(_entries(path, name + "/"))


def _entries(path: str, prefix: str) -> Iterator[tuple[str, str, bool]]:
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        yield e.path, prefix + e.name, e.is_dir(follow_symlinks=False)


def write_diff(
    top: str,
    out: Callable[[bytes], None],
    overlay_whiteouts: bool = True,
    mtime: float | None = None,
) -> tuple[str, int]:
    """The archive of directory `top` (an overlay upper, or a plain tree) into `out`.

    Returns (sha256 of the archive = its diff id, archive size).  Deterministic: sorted
    entries, numeric owners, no names, PAX headers only for what needs them; `mtime`
    (seconds) replaces every file's time when given, so the same content gives the same
    digest.
    """
    sink = _HashingWriter(out)
    inodes: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path, name in walk_sorted(top):
            st = os.lstat(path)
            if overlay_whiteouts and is_whiteout(st):
                parent, _, base = name.rpartition("/")
                info = tarfile.TarInfo((parent + "/" if parent else "") + WHITEOUT_PREFIX + base)
                info.mtime = int(mtime if mtime is not None else st.st_mtime)
                info.mode = 0o644
                tar.addfile(info)
                continue
            info = _tarinfo(path, name, st, inodes, mtime)
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if overlay_whiteouts and info.isdir() and _opaque(path):
                marker = tarfile.TarInfo(f"{name}/{OPAQUE}")
                marker.mtime = info.mtime
                marker.mode = 0o644
                tar.addfile(marker)
    sink.flush()
    return "sha256:" + sink.hash.hexdigest(), sink.size


def _tarinfo(
    path: str,
    name: str,
    st: os.stat_result,
    inodes: dict[tuple[int, int], str],
    mtime: float | None,
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(mtime if mtime is not None else st.st_mtime)
    mode = st.st_mode
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in inodes:
            info.type = tarfile.LNKTYPE
            info.linkname = inodes[key]
        else:
            if st.st_nlink > 1:
                inodes[key] = name
            info.type = tarfile.REGTYPE
            info.size = st.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    elif stat.S_ISCHR(mode):
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISBLK(mode):
        info.type = tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        raise SystemFailure(f"cannot archive {path}: a socket or unknown file type")
    for attr in XATTRS_KEPT:
        try:
            value = os.getxattr(path, attr, follow_symlinks=False)
        except OSError:
            continue
        info.pax_headers = {**info.pax_headers, "SCHILY.xattr." + attr: value.decode("latin-1")}
    return info


def decompressed_chunks(f: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """A layer blob's archive bytes (gzip or zstd undone; plain as it is)."""
    head = f.read(4)
    kind = compression_of(head)
    if kind == "zstd":
        f.seek(0)
        proc = subprocess.Popen(["zstd", "-d", "-c", "-q"], stdin=f, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            yield from iter(lambda: proc.stdout.read(size), b"")  # type: ignore[union-attr]
        finally:
            proc.stdout.close()
            if proc.wait() != 0:
                raise LayerError("invalid zstd stream")
        return
    dec = _Decompressor(kind)
    data = head
    while True:
        out = dec.feed(data)
        if out:
            yield out
        data = f.read(size)
        if not data:
            break
    tail = dec.flush()
    if tail:
        yield tail


class LayerStore:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "layers")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    def path(self, diff_id: str) -> str:
        return os.path.join(self.dir, diff_id.removeprefix("sha256:"))

    def has(self, diff_id: str) -> bool:
        return os.path.isdir(self.path(diff_id))

    def new_tmp(self) -> str:
        """A fresh name for a layer being unpacked (not yet created)."""
        return os.path.join(self.dir, f".tmp-{os.urandom(8).hex()}")

    def commit(self, tmp: str, diff_id: str) -> str:
        dest = self.path(diff_id)
        if os.path.isdir(dest):
            # Another pull unpacked the same layer meanwhile: keep one.
            shutil.rmtree(tmp, ignore_errors=True)
            return dest
        os.rename(tmp, dest)
        return dest

    def adopt_dir(self, src: str, diff_id: str) -> str:
        """A directory already holding the layer's files (an older store), moved in."""
        dest = self.path(diff_id)
        if os.path.isdir(dest):
            shutil.rmtree(src, ignore_errors=True)
        else:
            os.rename(src, dest)
        return dest

    def remove(self, diff_id: str) -> None:
        path = self.path(diff_id)
        if os.path.isdir(path):
            # Renamed first, so a crash half-way leaves a .tmp- name the next start sweeps.
            tmp = self.new_tmp()
            os.rename(path, tmp)
            shutil.rmtree(tmp, ignore_errors=True)

    def sweep(self) -> None:
        """Layers a crash left half unpacked or half removed."""
        for name in os.listdir(self.dir):
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)

    def all(self) -> list[str]:
        return ["sha256:" + n for n in os.listdir(self.dir) if not n.startswith(".")]


async def unpack_file(path: str, dest: str) -> tuple[str, int]:
    """A layer archive already on disk, unpacked into `dest` (new)."""
    u = Unpacker(dest)
    try:
        with open(path, "rb") as f:
            while True:
                data = await asyncio.to_thread(f.read, 1 << 20)
                if not data:
                    break
                await u.feed(data)
        return await u.finish()
    except BaseException:
        await u.abort()
        raise


def mkdtemp_in(parent: str, prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=parent)
