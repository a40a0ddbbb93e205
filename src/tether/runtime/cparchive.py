"""docker cp's archives: the daemon's helper chrooted into a running container, and the
tar extraction both sides of `cp` share.

    python -m tether.runtime.cparchive stat|get PID PATH
    python -m tether.runtime.cparchive put PID PATH [noOverwriteDirNonDir] [copyUIDGID] [user=U]

PID "offline" with overlay=JSON: a container that is not running, whose overlay the helper
mounts in a mount namespace of its own first.

The helper chroots into /proc/PID/root, so every path, and every symlink in it, resolves
inside the container's own root (and its mounts): `/x -> /etc` names the container's /etc,
never the host's.  Everything it needs is imported before the chroot.  The first line on
stderr is the JSON stat of PATH (docker's X-Docker-Container-Path-Stat) or {"error": ...};
`get` writes the tar to stdout; `put` reads one on stdin and ends with {"error": ...} on
stderr if the extraction fails.

Paths follow dockerd's archive.go: a PATH ending in "/" or "/." follows a symlink in its
last element, and the archive's entries are named after the PATH as given (`lnk/` archives
the directory lnk points to as "lnk/..."; `dir/.` archives dir's content as "./...").
"""

from __future__ import annotations

import bz2  # noqa: F401 (tarfile imports these lazily: after the chroot they are gone)
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import posixpath
import shutil
import stat
import sys
import tarfile
import zlib  # noqa: F401

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Any

# Go's os.FileMode bits, which docker's CLI reads from the stat header.
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
GO_DEVICE = 1 << 26
GO_PIPE = 1 << 25
GO_SOCKET = 1 << 24
GO_SETUID = 1 << 23
GO_SETGID = 1 << 22
GO_CHARDEV = 1 << 21
GO_STICKY = 1 << 20
GO_IRREGULAR = 1 << 19


# A megabyte per read and write of an archive (tarfile's own default is 10 KiB).
BUFSIZE = 1 << 20


class CopyError(Exception):
    """A copy that cannot be done, in docker's words."""


def go_mode(st: os.stat_result) -> int:
    """st_mode as Go's os.FileMode (what `stat.Mode` means to docker's CLI)."""
    m = st.st_mode
    mode = m & 0o777
    if stat.S_ISDIR(m):
        mode |= GO_DIR
    elif stat.S_ISLNK(m):
        mode |= GO_SYMLINK
    elif stat.S_ISBLK(m):
        mode |= GO_DEVICE
    elif stat.S_ISCHR(m):
        mode |= GO_DEVICE | GO_CHARDEV
    elif stat.S_ISFIFO(m):
        mode |= GO_PIPE
    elif stat.S_ISSOCK(m):
        mode |= GO_SOCKET
    elif not stat.S_ISREG(m):
        mode |= GO_IRREGULAR
    if m & stat.S_ISUID:
        mode |= GO_SETUID
    if m & stat.S_ISGID:
        mode |= GO_SETGID
    if m & stat.S_ISVTX:
        mode |= GO_STICKY
    return mode


def rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC (trailing zeros of the fraction dropped)."""
    import time

    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    fraction = f"{frac:09d}".rstrip("0")
    return text + (f".{fraction}" if fraction else "") + "Z"


# -- docker's path rules (pkg/archive/copy.go), shared with the CLI --------------------------


def has_trailing_sep(path: str) -> bool:
    return path.endswith("/")


def specifies_current_dir(path: str) -> bool:
    return posixpath.basename(path) == "."


def asserts_directory(path: str) -> bool:
    return has_trailing_sep(path) or specifies_current_dir(path)


def clean(path: str) -> str:
    """Go's filepath.Clean."""
    if not path:
        return "."
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/") if out.startswith("//") else out


def preserve_trailing(cleaned: str, original: str) -> str:
    """PreserveTrailingDotOrSeparator: keep the "/." or "/" the user wrote after cleaning."""
    if not specifies_current_dir(cleaned) and specifies_current_dir(original):
        if not has_trailing_sep(cleaned):
            cleaned += "/"
        cleaned += "."
    if not has_trailing_sep(cleaned) and has_trailing_sep(original):
        cleaned += "/"
    return cleaned


def split_dir_entry(path: str) -> tuple[str, str]:
    """SplitPathDirEntry: (dir, base) of the cleaned path, a trailing "." kept as the base."""
    cleaned = clean(path)
    if specifies_current_dir(path):
        cleaned += "/."
    return clean(posixpath.dirname(cleaned)), posixpath.basename(cleaned) or "/"


def rebase_name(name: str, old: str, new: str) -> str:
    """RebaseArchiveEntries for one entry: its first path element `old` becomes `new`."""
    if old == "/":
        old = ""
    if not old:
        return new + name if name.startswith("/") else name
    if name == old or name.startswith(old + "/"):
        return new + name[len(old) :]
    return name


# -- the archive of a path ------------------------------------------------------------------


def resolve(path: str) -> tuple[str, str]:
    """(the path to archive, the name its entries start with), as dockerd's ResolvePath and
    archivePath: symlinks resolved in every element but the last, the last one too when the
    path asserts a directory."""
    absolute = preserve_trailing(clean("/" + path), path)
    parent, base = split_dir_entry(absolute)
    real_parent = os.path.realpath(parent)
    if asserts_directory(absolute):
        target = os.path.realpath(os.path.join(real_parent, base))
        if specifies_current_dir(absolute):
            target = target.rstrip("/") + "/."
    else:
        target = os.path.join(real_parent, base)
    name = posixpath.basename(absolute.rstrip("/")) if base != "." else "."
    return target, name or "/"


def _base(path: str) -> str:
    """The directory a "dir/." names."""
    return path.removesuffix("/.") or "/"


def path_stat(path: str, name: str) -> dict[str, object]:
    st = os.lstat(_base(path))
    link = ""
    if stat.S_ISLNK(st.st_mode):
        # dockerd sends the link fully resolved inside the container, not as written.
        link = os.path.realpath(path)
    return {
        "name": name,
        "size": st.st_size,
        "mode": go_mode(st),
        "mtime": rfc3339nano(st.st_mtime_ns),
        "linkTarget": link,
    }


def write_tar(out: IO[bytes], path: str, name: str) -> None:
    """`path` as a tar stream whose entries begin with `name` ("." for a directory's content)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BUFSIZE) as tar:
        tar.copybufsize = BUFSIZE  # type: ignore[attr-defined]  # (typeshed lacks it)
        base = _base(path)
        if name == "." or base == "/":
            tar.add(base, arcname=".", recursive=False)
            for entry in sorted(os.listdir(base)):
                tar.add(os.path.join(base, entry), arcname=f"./{entry}")
        else:
            tar.add(base, arcname=name)


# -- extraction (dockerd's Untar with NoOverwriteDirNonDir; the CLI's CopyTo) ----------------


def _members(
    tar: tarfile.TarFile,
    dest: str,
    no_overwrite: bool,
    owner: tuple[int, int] | None,
    forbidden: tuple[list[str], str],
    rename: tuple[str, str] | None,
) -> Iterator[tarfile.TarInfo]:
    root = os.path.realpath(dest)
    for member in tar:
        if rename is not None:
            member.name = rebase_name(member.name, *rename)
            if member.islnk():
                member.linkname = rebase_name(member.linkname, *rename)
        rel = posixpath.normpath(member.name.lstrip("/"))
        if rel == ".":
            rel = ""
        if rel.startswith("../") or rel == "..":
            raise CopyError(f"invalid archive entry {member.name!r}: outside of {dest!r}")
        target = os.path.join(root, rel) if rel else root
        for mount in forbidden[0]:
            if (target.rstrip("/") + "/").startswith(mount.rstrip("/") + "/"):
                raise CopyError(
                    f"tether copies to a container's mounts only while it runs: {mount} "
                    f"of {forbidden[1]} is mounted when it runs"
                )
        parent = os.path.dirname(target)
        # No entry may write through a symlink an earlier entry (or the destination) made.
        if rel and not (os.path.realpath(parent) + "/").startswith(root.rstrip("/") + "/"):
            raise CopyError(f"invalid archive entry {member.name!r}: outside of {dest!r}")
        try:
            st: os.stat_result | None = os.lstat(target)
        except OSError:
            st = None
        if st is not None:
            is_dir = stat.S_ISDIR(st.st_mode)
            if no_overwrite and is_dir and not member.isdir():
                raise CopyError(
                    f"cannot overwrite directory {json.dumps(target)} with non-directory "
                    f"{json.dumps(dest)}"
                )
            if no_overwrite and not is_dir and member.isdir():
                raise CopyError(
                    f"cannot overwrite non-directory {json.dumps(target)} with directory "
                    f"{json.dumps(dest)}"
                )
            if is_dir and not rel:
                continue  # "." onto an existing directory: its attributes stay
            if not (is_dir and member.isdir()):
                if is_dir:
                    shutil.rmtree(target)
                else:
                    os.unlink(target)
        member.name = rel or "."
        if member.islnk():
            link = posixpath.normpath(member.linkname.lstrip("/"))
            if link == ".." or link.startswith("../"):
                raise CopyError(f"invalid hardlink {member.linkname!r}: outside of {dest!r}")
            member.linkname = link
        if owner is not None:
            member.uid, member.gid = owner
            member.uname = member.gname = ""
        yield member


class _Tar(tarfile.TarFile):
    keep_owner = True

    def chown(self, tarinfo: tarfile.TarInfo, targetpath: Any, numeric_owner: bool) -> None:
        if self.keep_owner:
            super().chown(tarinfo, targetpath, numeric_owner)


def untar(
    stream: Any,
    dest: str,
    no_overwrite_dir_nondir: bool = True,
    owner: tuple[int, int] | None = None,
    chown: bool = True,
    forbidden: tuple[list[str], str] = ([], ""),
    rename: tuple[str, str] | None = None,
) -> None:
    """Extract a tar stream into the directory `dest` as dockerd's Untar does: an existing
    directory is never replaced by a file (nor a file by a directory) when
    `no_overwrite_dir_nondir`; other existing entries are replaced; `owner` (uid, gid) for
    every entry, or the archive's own; `chown` False leaves ownership to the process (the
    CLI's NoLchown); no entry may land in the `forbidden` paths (a stopped container's
    mount points, with its name); `rename` (old, new): entries' first element renamed on
    the way (docker's RebaseArchiveEntries)."""
    tar = _Tar.open(fileobj=stream, mode="r|*", bufsize=BUFSIZE)
    tar.copybufsize = BUFSIZE  # type: ignore[attr-defined]  # (typeshed lacks it)
    tar.keep_owner = chown
    if hasattr(tarfile, "fully_trusted_filter"):
        # _members checks every path itself; the newer default filter would change modes.
        tar.extraction_filter = staticmethod(tarfile.fully_trusted_filter)
    try:
        tar.extractall(
            dest,
            members=_members(tar, dest, no_overwrite_dir_nondir, owner, forbidden, rename),
            numeric_owner=True,
        )
    except tarfile.ReadError as exc:
        raise CopyError(f"invalid tar stream: {exc}") from None
    finally:
        tar.close()


def _lookup(path: str, key: str) -> list[str] | None:
    try:
        with open(path) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 3 and key in (fields[0], fields[2]):
                    return fields
    except OSError:
        pass
    return None


def lookup_owner(spec: str) -> tuple[int, int]:
    """(uid, gid) of a container's `User` ("name|uid[:group|gid]"), read from the container's
    own /etc/passwd and /etc/group (dockerd asks the host's: a name only the container knows
    would fail there)."""
    name, _, group = spec.partition(":")
    entry = _lookup("/etc/passwd", name)
    if entry is not None:
        uid, gid = int(entry[2]), int(entry[3])
    elif name.isdigit():
        uid, gid = int(name), 0
    else:
        raise CopyError(f'getent unable to find entry "{spec}" in passwd database')
    if group:
        g = _lookup("/etc/group", group)
        if g is not None:
            gid = int(g[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise CopyError(f'getent unable to find entry "{group}" in group database')
    return uid, gid


# -- the helper -------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(json.dumps({"error": message}, separators=(",", ":")) + "\n")
    return code


def _say(info: dict[str, object]) -> None:
    sys.stderr.write(json.dumps(info, separators=(",", ":")) + "\n")
    sys.stderr.flush()


def _mount_offline(spec: dict[str, Any]) -> str:
    """A stopped container's filesystem, as its shim mounts it (the image's layers below,
    its own upper directory), in a mount namespace of this helper's own: nothing stays
    mounted once it exits."""
    from tether.images import copyin

    copyin._check(copyin._libc.unshare(copyin.CLONE_NEWNS), "unshare")
    copyin._check(
        copyin._libc.mount(None, b"/", None, copyin.MS_REC | copyin.MS_PRIVATE, None),
        "make / private",
    )
    copyin._mount_overlay(spec["lower"], spec["upper"], spec["work"], spec["target"])
    return str(spec["target"])


def main() -> int:
    op, pid, path = sys.argv[1], sys.argv[2], sys.argv[3]
    flags = set(sys.argv[4:])
    overlay = next((f[len("overlay=") :] for f in flags if f.startswith("overlay=")), "")
    try:
        root = _mount_offline(json.loads(overlay)) if overlay else f"/proc/{pid}/root"
    except Exception as exc:  # the one line the daemon hands on
        return fail(f"mounting the container's filesystem failed: {exc}")
    os.chroot(root)
    os.chdir("/")
    wanted = "/" + path.lstrip("/")
    if op in ("stat", "get"):
        target, name = resolve(path)
        try:
            info = path_stat(target, name)
        except FileNotFoundError:
            return fail(f"Could not find the file {wanted} in container", 2)
        except OSError as exc:
            return fail(f"lstat {wanted}: {os.strerror(exc.errno or 0).lower()}")
        if asserts_directory(wanted) and not stat.S_ISDIR(os.stat(_base(target)).st_mode):
            return fail(f"lstat {wanted}: not a directory")
        _say(info)
        if op == "stat":
            return 0
        write_tar(sys.stdout.buffer, target, name)
        return 0
    if op == "put":
        target = os.path.realpath(wanted)
        try:
            st = os.stat(target)
        except OSError:
            return fail(f"Could not find the file {wanted} in container", 2)
        if not stat.S_ISDIR(st.st_mode):
            return fail("extraction point is not a directory", 3)
        _say(path_stat(target, posixpath.basename(target) or "/"))
        # As dockerd: entries keep the archive's owners, unless copyUIDGID (cp -a) and the
        # container has a user: then everything is that user's.
        user = next((f[5:] for f in flags if f.startswith("user=")), "")
        try:
            owner = lookup_owner(user) if "copyUIDGID" in flags and user else None
        except CopyError as exc:
            return fail(str(exc), 4)
        mounts = json.loads(
            next((f[len("mounts=") :] for f in flags if f.startswith("mounts=")), "{}")
        )
        forbidden = (list(mounts.get("paths") or []), str(mounts.get("name") or ""))
        try:
            untar(
                sys.stdin.buffer,
                target,
                "noOverwriteDirNonDir" in flags,
                owner,
                forbidden=forbidden,
            )
        except (CopyError, OSError, tarfile.TarError) as exc:
            return fail(f"Error processing tar file(exit status 1): {exc}", 4)
        return 0
    return fail(f"unknown operation {op}")


if __name__ == "__main__":
    sys.exit(main())
