"""A new volume filled from the image, as dockerd fills one: the image's files at the mount
point are copied into an empty volume when a container that mounts it is created (not for
`nocopy`, binds, --volumes-from, or a volume with content already).

The image's view is a read-only overlay of its layers mounted nowhere: fsopen/fsmount give a
descriptor of a detached mount, which no other process sees and which is gone when the
descriptor is closed (no mount namespace, no temporary mount point, nothing to clean up
after a crash).  The mount point's path is resolved inside that view with openat2's
RESOLVE_IN_ROOT, so an image's symlink (/data -> /etc) resolves in the image, never on the
host.  The copy is GNU cp -a from that directory: modes, owners, times, symlinks, hard
links, device nodes and extended attributes as the layers have them (whiteouts and opaque
directories are the overlay's to apply, so deleted files stay deleted).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# Unified syscall numbers (the same on every architecture since Linux 5.1).
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_OPENAT2 = 437
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1
MOUNT_ATTR_RDONLY = 1
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class FillError(Exception):
    pass


def _check(ret: int, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def _fsconfig(fs: int, key: str, value: str | None, cmd: int = FSCONFIG_SET_STRING) -> None:
    _check(
        _libc.syscall(
            ctypes.c_long(SYS_FSCONFIG),
            ctypes.c_int(fs),
            ctypes.c_uint(cmd),
            ctypes.c_char_p(os.fsencode(key) if key else None),
            ctypes.c_char_p(os.fsencode(value) if value is not None else None),
            ctypes.c_int(0),
        ),
        f"overlay {key or 'create'}",
    )


def _fsopen(fstype: str) -> int:
    return _check(
        _libc.syscall(ctypes.c_long(SYS_FSOPEN), ctypes.c_char_p(fstype.encode()), FSOPEN_CLOEXEC),
        f"fsopen {fstype}",
    )


def _fsmount(fs: int, fstype: str) -> int:
    """The configured filesystem `fs` created and mounted read-only, detached: a descriptor
    of its root, attached nowhere, gone when it is closed."""
    _fsconfig(fs, "", None, FSCONFIG_CMD_CREATE)
    return _check(
        _libc.syscall(
            ctypes.c_long(SYS_FSMOUNT),
            ctypes.c_int(fs),
            ctypes.c_uint(FSMOUNT_CLOEXEC),
            ctypes.c_uint(MOUNT_ATTR_RDONLY),
        ),
        f"fsmount {fstype}",
    )


def image_view(lowerdirs: list[str]) -> int:
    """A descriptor of a detached read-only overlay of `lowerdirs` (top layer first)."""
    fs = _fsopen("overlay")
    try:
        try:
            # One layer at a time (Linux 6.8+): no limit on the number of layers.
            for d in lowerdirs:
                _fsconfig(fs, "lowerdir+", d)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            os.close(fs)
            fs = _fsopen("overlay")
            _fsconfig(fs, "lowerdir", ":".join(lowerdirs))
        return _fsmount(fs, "overlay")
    finally:
        os.close(fs)


def _empty_fs() -> int:
    """A descriptor of a detached, empty, read-only tmpfs (gone when it is closed)."""
    fs = _fsopen("tmpfs")
    try:
        return _fsmount(fs, "tmpfs")
    finally:
        os.close(fs)


def open_in_root(root: int, path: str) -> int | None:
    """The directory `path` of the tree under `root`, symlinks resolved inside it; None if
    there is none (absent, or not a directory: dockerd copies directories only)."""
    how = _OpenHow(os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT)
    ret = _libc.syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(root),
        ctypes.c_char_p(os.fsencode(path.lstrip("/") or ".")),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if ret < 0:
        e = ctypes.get_errno()
        if e in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise OSError(e, f"open {path} in the image: {os.strerror(e)}")
    return int(ret)


def is_empty(path: str) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is None


def might_have(lowerdirs: list[str], path: str) -> bool:
    """Whether any layer has the first component of `path` (cheap: most volumes are
    mounted where the image has nothing, and then no overlay is mounted at all)."""
    first = path.strip("/").split("/", 1)[0]
    return bool(first) and any(os.path.lexists(os.path.join(d, first)) for d in lowerdirs)


async def fill(data: str, dest: str, lowerdirs: list[str]) -> bool:
    """Copy the image's `dest` into the volume directory `data` if it is empty; whether
    anything was copied."""
    if not lowerdirs or not might_have(lowerdirs, dest) or not is_empty(data):
        return False
    if len(lowerdirs) > 1:
        view = image_view(lowerdirs)
    else:
        # overlayfs wants two layers without an upper one: an empty one goes under a lone
        # layer.  The layer is not its own view: a whiteout of its tar (.wh.NAME) is an
        # overlay 0/0 device in it, hidden in the container, and cp would copy it.
        empty = _empty_fs()
        try:
            view = image_view([lowerdirs[0], f"/proc/self/fd/{empty}"])
        finally:
            os.close(empty)
    try:
        src = open_in_root(view, dest)
        if src is None:
            return False
        try:
            proc = await asyncio.create_subprocess_exec(
                "cp",
                "-a",
                "--",
                f"/proc/self/fd/{src}/.",
                data + "/",
                pass_fds=(src,),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "LC_ALL": "C"},
            )
            _, err = await proc.communicate()
        finally:
            os.close(src)
    finally:
        os.close(view)
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        # overlayfs lists a whiteout in a directory that no other layer has (nothing for it
        # to hide) as a name that cannot be looked up: the container sees no such file, and
        # cp, which says so and copies the rest, has copied what the container sees.  The
        # layers are read-only and never change, so ENOENT here means nothing else.
        if not lines or not all(_is_phantom(line) for line in lines):
            raise FillError(lines[-1] if lines else f"cp exited with {proc.returncode}")
    return True


def _is_phantom(line: str) -> bool:
    # (cp's words in the C locale, which it runs in; a name is quoted as the shell would)
    return line.startswith("cp: cannot stat ") and line.endswith(": No such file or directory")
