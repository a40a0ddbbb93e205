"""COPY and ADD of a build, done by a short-lived helper process in a mount namespace of its
own (so its mounts vanish with it and nothing is ever left mounted on the host):

    python -m tether.images.copyin < REQUEST.json

1. the image being built is mounted as an overlay (its layers below, the new layer's
   directory as the upper directory), and every --from source (another stage, an image) as
   a read-only overlay;
2. each source is found and opened *before* the helper chroots into the image (a context
   path may not leave the context: docker's "forbidden path outside the build context");
3. in the chroot every destination path is resolved by the kernel inside the image's root,
   whatever symlinks the image holds (`/bin -> usr/bin` works, `/x -> /etc` of the host is
   impossible), and the sources are read through their descriptors.

What the upper directory holds afterwards is the step's layer: the files copied and their
parent directories, with the metadata overlayfs copied up.  Docker's rules: a directory's
contents are copied, not the directory; a destination ending in `/` (or several sources) is
a directory; files keep their mode and time, owners become 0:0 unless --chown; ADD unpacks
local tar archives (plain, gzip, bzip2, xz).  Errors: one line on stdout (JSON), exit 1.
"""

from __future__ import annotations

import bz2  # noqa: F401 (tarfile imports these lazily: after the chroot they are gone)
import ctypes
import errno
import fnmatch
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import stat
import sys
import tarfile
import zlib  # noqa: F401
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


class CopyError(Exception):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise CopyError(f"{what}: {os.strerror(e)}")


def _mount_overlay(lower: list[str], upper: str | None, work: str | None, target: str) -> None:
    lowers = ":".join(lower)
    data = f"lowerdir={lowers}"
    if upper and work:
        data += f",upperdir={upper},workdir={work}"
    flags = 0 if upper else MS_RDONLY
    if len(data) < 4000:
        ret = _libc.mount(b"overlay", target.encode(), b"overlay", flags, data.encode())
        _check(ret, f"mount overlay on {target}")
        return
    # Past one page of options: the layers one by one (fsconfig "lowerdir+", Linux 6.8).
    sys_fsopen, sys_fsconfig, sys_fsmount, sys_move_mount = 430, 431, 432, 429
    fs = _libc.syscall(sys_fsopen, b"overlay", 1)
    if fs < 0:
        _check(-1, "fsopen overlay")
    for layer in lower:
        _check(
            _libc.syscall(sys_fsconfig, fs, 1, b"lowerdir+", layer.encode(), 0), f"layer {layer}"
        )
    if upper and work:
        _check(_libc.syscall(sys_fsconfig, fs, 1, b"upperdir", upper.encode(), 0), "upperdir")
        _check(_libc.syscall(sys_fsconfig, fs, 1, b"workdir", work.encode(), 0), "workdir")
    else:
        _check(_libc.syscall(sys_fsconfig, fs, 0, b"ro", None, 0), "ro")
    _check(_libc.syscall(sys_fsconfig, fs, 6, None, None, 0), "overlay create")
    mnt = _libc.syscall(sys_fsmount, fs, 1, 0)
    if mnt < 0:
        _check(-1, "fsmount")
    _check(_libc.syscall(sys_move_mount, mnt, b"", -100, target.encode(), 4), "move_mount")
    os.close(mnt)
    os.close(fs)


def _clean(rel: str) -> str:
    """A path inside a root, cleaned as Go's filepath.Clean of "/"+rel, without the "/"."""
    parts: list[str] = []
    for p in rel.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/".join(parts)


def _escapes(rel: str) -> bool:
    depth = 0
    for p in rel.split("/"):
        if p in ("", "."):
            continue
        depth += -1 if p == ".." else 1
        if depth < 0:
            return True
    return False


def _scoped(root: str, rel: str, follow_last: bool = True) -> str:
    """root/rel with symlinks resolved inside root, `..` clamped at it (moby's
    FollowSymlinkInScope)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, name)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode) and (parts or follow_last):
            hops += 1
            if hops > 40:
                raise CopyError(f"too many levels of symbolic links in {rel}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(name)
    return os.path.join(root, *resolved)


def _glob(root: str, pattern: str) -> list[str]:
    """Paths under root matching pattern (filepath.Match per component), relative."""
    parts = [p for p in _clean(pattern).split("/") if p]
    if not any(ch in pattern for ch in "*?["):
        return ["/".join(parts)]
    found = [""]
    for part in parts:
        nxt = []
        for base in found:
            here = _scoped(root, base) if base else root
            if not any(ch in part for ch in "*?["):
                nxt.append(f"{base}/{part}" if base else part)
                continue
            try:
                names = sorted(os.listdir(here))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for n in names:
                if fnmatch.fnmatchcase(n, part):
                    nxt.append(f"{base}/{n}" if base else n)
        found = nxt
    return [f for f in found if os.path.lexists(_scoped(root, f, follow_last=False))]


def _ids(spec: str | None) -> tuple[int, int] | None:
    """--chown user[:group], names read from the image's /etc/passwd and /etc/group (in the
    chroot)."""
    if not spec:
        return None
    user, _, group = spec.partition(":")

    def lookup(path: str, name: str, what: str) -> int:
        if name.isdigit():
            return int(name)
        try:
            with open(path) as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if len(fields) > 2 and fields[0] == name:
                        return int(fields[2])
        except OSError:
            pass
        raise CopyError(
            f"unable to find {what} {name}: no matching entries in {os.path.basename(path)} file"
        )

    uid = lookup("/etc/passwd", user, "user")
    if group:
        gid = lookup("/etc/group", group, "group")
    elif user.isdigit():
        gid = uid
    else:
        gid = 0
        try:
            with open("/etc/passwd") as f:
                for line in f:
                    fields = line.split(":")
                    if len(fields) > 3 and fields[0] == user:
                        gid = int(fields[3])
        except OSError:
            pass
    return uid, gid


def _mkdirs(path: str) -> None:
    """mkdir -p inside the chroot: new directories 0755, root's."""
    parts = [p for p in path.split("/") if p]
    cur = ""
    for p in parts:
        cur += "/" + p
        try:
            os.mkdir(cur, 0o755)
            os.chown(cur, 0, 0)
        except FileExistsError:
            if not os.path.isdir(cur):
                raise CopyError(f"cannot copy to {path}: {cur} is not a directory") from None


def _copy_file(
    src_fd: int, st: os.stat_result, dest: str, ids: tuple[int, int] | None, mode: int | None
) -> None:
    if os.path.isdir(dest) and not os.path.islink(dest):
        raise CopyError(f"cannot overwrite directory {dest} with a file")
    try:
        os.unlink(dest)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise CopyError(f"cannot overwrite directory {dest} with a file") from None
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.lseek(src_fd, 0, os.SEEK_SET)
        while os.sendfile(fd, src_fd, None, 1 << 24) > 0:
            pass
        uid, gid = ids if ids else (0, 0)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode if mode is not None else stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_entry(
    dir_fd: int, name: str, dest: str, ids: tuple[int, int] | None, mode: int | None
) -> None:
    """One entry (by name in an open directory) to dest; directories recursively."""
    st = os.lstat(name, dir_fd=dir_fd)
    uid, gid = ids if ids else (0, 0)
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
        )
        try:
            _copy_dir(fd, st, dest, ids, mode)
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            _copy_file(fd, st, dest, ids, mode)
        finally:
            os.close(fd)
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=dir_fd)
        if os.path.lexists(dest):
            if os.path.isdir(dest) and not os.path.islink(dest):
                raise CopyError(f"cannot overwrite directory {dest} with a symlink")
            os.unlink(dest)
        os.symlink(target, dest)
        os.chown(dest, uid, gid, follow_symlinks=False)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    else:
        return  # sockets, devices, fifos of a build context are skipped, as docker does


def _copy_dir(
    fd: int, st: os.stat_result, dest: str, ids: tuple[int, int] | None, mode: int | None
) -> None:
    uid, gid = ids if ids else (0, 0)
    if not os.path.isdir(dest):
        if os.path.lexists(dest):
            raise CopyError(f"cannot copy a directory to {dest}: it is not a directory")
        os.mkdir(dest, 0o755)
    os.chown(dest, uid, gid)
    os.chmod(dest, mode if mode is not None else stat.S_IMODE(st.st_mode))
    for entry in sorted(os.listdir(fd)):
        _copy_entry(fd, entry, os.path.join(dest, entry), ids, mode)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))


def _extract(src_fd: int, dest: str, ids: tuple[int, int] | None) -> None:
    """ADD of a local archive: its members under dest (inside the chroot: links cannot
    leave the image's root)."""
    _mkdirs(dest)
    with os.fdopen(os.dup(src_fd), "rb") as f, tarfile.open(fileobj=f, mode="r:*") as tar:
        for member in tar:
            name = _clean(member.name)
            if not name:
                continue
            path = os.path.join(dest, name)
            parent = os.path.dirname(path)
            _mkdirs(parent)
            if member.isdir():
                if not os.path.isdir(path):
                    if os.path.lexists(path):
                        os.unlink(path)
                    os.mkdir(path, 0o755)
                os.chmod(path, member.mode & 0o7777)
            elif member.isreg():
                data = tar.extractfile(member)
                if os.path.lexists(path) and not os.path.isdir(path):
                    os.unlink(path)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    if data is not None:
                        while chunk := data.read(1 << 20):
                            out.write(chunk)
                os.chmod(path, member.mode & 0o7777)
            elif member.issym():
                if os.path.lexists(path):
                    os.unlink(path)
                os.symlink(member.linkname, path)
            elif member.islnk():
                target = os.path.join(dest, _clean(member.linkname))
                if os.path.lexists(path):
                    os.unlink(path)
                os.link(target, path, follow_symlinks=False)
            else:
                continue
            uid, gid = ids if ids else (member.uid, member.gid)
            os.chown(path, uid, gid, follow_symlinks=False)
            if not member.issym():
                os.utime(path, (member.mtime, member.mtime))


def _is_archive(fd: int) -> bool:
    head = os.pread(fd, 512, 0)
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def run(req: dict[str, Any]) -> None:
    libc_unshare = _libc.unshare
    _check(libc_unshare(CLONE_NEWNS), "unshare")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    target = req["mountpoint"]
    _mount_overlay(req["lower"], req["upper"], req["work"], target)
    roots: dict[str, str] = {"context": req["context"]}
    for i, (name, lower) in enumerate(sorted(req.get("sources", {}).items())):
        point = os.path.join(req["scratch"], f"src{i}")
        os.makedirs(point, exist_ok=True)
        _mount_overlay(lower, None, None, point)
        roots[name] = point
    # Every source found and opened before the chroot.
    plan: list[tuple[dict[str, Any], list[tuple[int, str, os.stat_result]]]] = []
    for op in req["ops"]:
        root = roots[op.get("from") or "context"]
        opened: list[tuple[int, str, os.stat_result]] = []
        for pattern in op["src"]:
            if op.get("from") is None and _escapes(pattern):
                raise CopyError(f"forbidden path outside the build context: {pattern} ()")
            matches = _glob(root, pattern)
            wildcard = any(ch in pattern for ch in "*?[")
            if wildcard and not matches:
                raise CopyError(f"{op['cmd']} failed: no source files were specified")
            before = len(opened)
            for rel in matches:
                path = _scoped(root, rel)
                try:
                    st = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                if stat.S_ISDIR(st.st_mode):
                    flags |= os.O_DIRECTORY
                fd = os.open(path, flags)
                opened.append((fd, rel, st))
            if len(opened) == before:
                where = (
                    "build context or excluded by .dockerignore"
                    if op.get("from") is None
                    else "source image or stage"
                )
                raise CopyError(
                    f"{op['cmd']} failed: file not found in {where}: stat {pattern}: file does not exist"
                )
        plan.append((op, opened))
    os.chroot(target)
    os.chdir("/")
    for op, opened in plan:
        ids = _ids(op.get("chown"))
        mode = int(op["chmod"], 8) if op.get("chmod") else None
        dest = op["dest"]
        dest_dir = dest.endswith("/") or len(opened) > 1
        if len(opened) > 1 and not dest.endswith("/"):
            raise CopyError(
                f"When using {op['cmd']} with more than one source file, the destination must be "
                "a directory and end with a /"
            )
        for fd, rel, st in opened:
            if stat.S_ISDIR(st.st_mode):
                _mkdirs(dest)
                _copy_dir(fd, st, dest.rstrip("/") or "/", ids, mode)
                continue
            if op["cmd"] == "ADD" and _is_archive(fd):
                _extract(fd, dest.rstrip("/") or "/", ids)
                continue
            base = os.path.basename(rel)
            if dest_dir or os.path.isdir(dest):
                _mkdirs(dest)
                target_path = os.path.join(dest, base)
            else:
                _mkdirs(os.path.dirname(dest) or "/")
                target_path = dest
            _copy_file(fd, st, target_path, ids, mode)


def main() -> int:
    try:
        req = json.load(sys.stdin)
        run(req)
    except CopyError as exc:
        sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
        return 1
    except OSError as exc:
        what = exc.filename or ""
        text = f"{what}: {exc.strerror}" if what else str(exc)
        if exc.errno == errno.ENOSPC:
            text = "no space left on device"
        sys.stdout.write(json.dumps({"error": text}) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
