"""tether cp: docker cp's paths, flags, archives and errors (cli/command/container/cp.go and
pkg/archive/copy.go), over the archive routes tetherd serves (GET/HEAD/PUT
/containers/{id}/archive)."""

from __future__ import annotations

import os
import posixpath
import sys

from tether.cli.context import CliError, Context
from tether.cli.flags import Command, Flag
from tether.cli.output import human_size
from tether.client import ApiError, quote

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

    from tether.client import ChunkWriter, Response


# Archives are read and written a megabyte at a time: tarfile's default (10 KiB records)
# made a 100 MB copy cost ten thousand HTTP chunks and pipe writes.
BUFSIZE = 1 << 20


def split_cp_arg(arg: str) -> tuple[str, str]:
    """(container, path): "c:/p" names a container; "/abs" and "./x:y" are local paths."""
    if arg.startswith("/"):
        return "", arg
    container, sep, path = arg.partition(":")
    if not sep or container.startswith("."):
        return "", arg
    return container, path


def resolve_local(path: str) -> str:
    """An absolute local path that keeps the user's trailing "/" or "/."."""
    from tether.runtime.cparchive import clean, preserve_trailing

    return preserve_trailing(clean(os.path.abspath(path)), path)


def _os_error(exc: OSError) -> CliError:
    """Go's *PathError text: "lstat /x: no such file or directory"."""
    op = "lstat"
    text = os.strerror(exc.errno or 0)
    return CliError(f"{op} {exc.filename}: {text[:1].lower() + text[1:]}")


def _validate_output_path(path: str) -> None:
    """docker's command.ValidateOutputPath."""
    import stat

    parent = os.path.dirname(os.path.normpath(path))
    if parent and parent != "." and not os.path.exists(parent):
        raise CliError(f'invalid output path: directory "{parent}" does not exist')
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _os_error(exc) from None
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return
    why = "got a device" if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode) else ""
    if why:
        raise CliError(
            f'invalid output path: "{path}" must be a directory or a regular file: {why}'
        )


def _go_mode_problem(mode: int) -> str:
    """ValidateOutputPathFileMode on a Go os.FileMode."""
    from tether.runtime.cparchive import GO_DEVICE, GO_IRREGULAR

    if mode & GO_DEVICE:
        return "got a device"
    if mode & GO_IRREGULAR:
        return "got an irregular file"
    return ""


def _stat(ctx: Context, container: str, path: str) -> dict[str, Any] | None:
    """HEAD archive: the path's stat, or None when it cannot be had (docker ignores why)."""
    import base64
    import json

    resp = ctx.open("HEAD", f"/containers/{quote(container)}/archive", query={"path": path})
    resp.close()
    if resp.status == 409:
        # tetherd's refusal (a stopped container's volume): a HEAD has no body to say so,
        # and docker's "ignore the stat" would hide it behind a misleading error.
        resp = ctx.open("GET", f"/containers/{quote(container)}/archive", query={"path": path})
        if resp.status >= 400:
            raise _api_failure(resp, container, path)
        resp.close()
    if resp.status >= 400:
        return None
    header = resp.headers.get("x-docker-container-path-stat", "")
    try:
        info = json.loads(base64.b64decode(header))
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _api_failure(resp: Response, container: str, path: str) -> CliError:
    from tether import wire

    data = resp.read()
    resp.close()
    if resp.status == 404:
        # The docker client's wrapResponseError: any 404 names the container:path pair.
        return CliError(f"Error: No such container:path: {container}:{path}")
    try:
        message = str(wire.loads(data).get("message"))
    except (ValueError, AttributeError):
        message = data.decode(errors="replace").strip()
    return CliError(f"Error response from daemon: {message}")


class _BodyReader:
    """A response body as the file object tarfile reads, counting what went by."""

    def __init__(self, resp: Response) -> None:
        self.chunks = resp.iter_body()
        self.buf = bytearray()  # deleting from its front costs nothing (CPython keeps a start)
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.buf += chunk
        if n < 0 or n >= len(self.buf):
            out = bytes(self.buf)
            self.buf.clear()
        else:
            out = bytes(self.buf[:n])
            del self.buf[:n]
        self.total += len(out)
        return out


def _say_copied(quiet: bool, size: int, where: str) -> None:
    if not quiet:
        sys.stderr.write(f"Successfully copied {human_size(size, 3)} to {where}\n")


def copy_info_destination(path: str) -> tuple[str, bool, bool]:
    """CopyInfoDestinationPath on this machine: (path, exists, is_dir), symlinks followed."""
    import stat

    original = path
    for _ in range(11):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            break
        except OSError as exc:
            raise _os_error(exc) from None
        if not stat.S_ISLNK(st.st_mode):
            return path, True, stat.S_ISDIR(st.st_mode)
        target = os.readlink(path)
        if not target.startswith("/"):
            from tether.runtime.cparchive import split_dir_entry

            target = posixpath.normpath(os.path.join(split_dir_entry(path)[0], target))
        path = target
    else:
        raise CliError(f"too many symlinks in {original}")
    from tether.runtime.cparchive import split_dir_entry

    parent = split_dir_entry(path)[0]
    try:
        st = os.lstat(parent)
    except OSError as exc:
        raise _os_error(exc) from None
    if not stat.S_ISDIR(st.st_mode):
        raise CliError("not a directory")
    return path, False, False


def prepare_archive_copy(
    src_path: str, src_is_dir: bool, rebase: str, dst_path: str, dst_exists: bool, dst_is_dir: bool
) -> tuple[str, tuple[str, str] | None]:
    """PrepareArchiveCopy: (the directory to extract into, (old, new) first-element rename)."""
    from tether.runtime.cparchive import asserts_directory, split_dir_entry

    dst_dir, dst_base = split_dir_entry(dst_path)
    src_base = rebase or split_dir_entry(src_path)[1]
    if dst_exists and dst_is_dir:
        return dst_path, None
    if dst_exists and src_is_dir:
        raise CliError("cannot copy directory")
    if dst_exists or src_is_dir:
        return dst_dir, (src_base, dst_base)
    if asserts_directory(dst_path):
        raise CliError("no such directory")
    return dst_dir, (src_base, dst_base)


def get_rebase_name(path: str, resolved: str) -> tuple[str, str]:
    """GetRebaseName: the resolved path with the user's trailing "/" or "/." kept, and the
    name entries must take when resolution changed the last element."""
    from tether.runtime.cparchive import has_trailing_sep, specifies_current_dir

    if specifies_current_dir(path) and not specifies_current_dir(resolved):
        resolved += "/."
    if has_trailing_sep(path) and not has_trailing_sep(resolved):
        resolved += "/"
    rebase = _go_base(path) if _go_base(path) != _go_base(resolved) else ""
    return resolved, rebase


def _go_base(path: str) -> str:
    """Go's filepath.Base: trailing slashes dropped first, "/" for the root."""
    stripped = path.rstrip("/")
    if not stripped:
        return "/" if path else "."
    return posixpath.basename(stripped)


def copy_info_source(path: str, follow: bool) -> tuple[str, bool, str]:
    """CopyInfoSourcePath: (the resolved local source, is_dir, rebase name)."""
    import stat

    try:
        if follow:
            resolved = os.path.realpath(path, strict=True)
            resolved, rebase = get_rebase_name(path, resolved)
        else:
            parent, base = os.path.split(path)
            real_parent = os.path.realpath(parent or ".", strict=True)
            resolved = real_parent.rstrip("/") + "/" + base
            rebase = ""
            if path.endswith("/") and _go_base(path) != _go_base(resolved):
                rebase = _go_base(path)
        st = os.lstat(resolved)
    except OSError as exc:
        raise _os_error(exc) from None
    return resolved, stat.S_ISDIR(st.st_mode), rebase


def tar_resource(out: Any, path: str, name: str) -> None:
    """TarResourceRebase with PrepareArchiveCopy's renaming folded in: the source's entries
    begin with `name` (its base, the -L link's name or the destination's; "." for a
    "dir/." source's content), written once instead of rewritten by a second tar pass."""
    import tarfile

    from tether.runtime.cparchive import split_dir_entry

    parent, base = split_dir_entry(path)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BUFSIZE) as tar:
        tar.copybufsize = BUFSIZE  # type: ignore[attr-defined]  # (typeshed lacks it)
        if base == ".":
            directory = path[: -len("/.")] or "/"
            tar.add(directory, arcname=name, recursive=False)
            for entry in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, entry), arcname=f"{name}/{entry}")
        else:
            tar.add(os.path.join(parent, base), arcname=name)


def copy_from_container(
    ctx: Context, container: str, src: str, dst: str, follow: bool, quiet: bool
) -> int:
    from tether.runtime.cparchive import CopyError, untar

    if dst != "-":
        dst = resolve_local(dst)
    _validate_output_path(dst)
    rebase = ""
    if follow:
        info = _stat(ctx, container, src)
        from tether.runtime.cparchive import GO_SYMLINK

        if info is not None and int(info.get("mode") or 0) & GO_SYMLINK:
            target = str(info.get("linkTarget") or "")
            if not target.startswith("/"):
                target = posixpath.join(posixpath.dirname(src.rstrip("/")) or "/", target)
            src, rebase = get_rebase_name(src, target)
    resp = ctx.open("GET", f"/containers/{quote(container)}/archive", query={"path": src})
    if resp.status >= 400:
        raise _api_failure(resp, container, src)
    import base64
    import json

    try:
        stat_info = json.loads(base64.b64decode(resp.headers["x-docker-container-path-stat"]))
    except (KeyError, ValueError):
        stat_info = {}
    if dst == "-":
        out = sys.stdout.buffer
        for chunk in resp.iter_body():
            out.write(chunk)
        out.flush()
        resp.close()
        return 0
    from tether.runtime.cparchive import GO_DIR

    src_is_dir = bool(int(stat_info.get("mode") or 0) & GO_DIR)
    dst_path, exists, is_dir = copy_info_destination(dst)
    dst_dir, rename = prepare_archive_copy(src, src_is_dir, rebase, dst_path, exists, is_dir)
    body = _BodyReader(resp)
    # The daemon names entries after `src` as asked; -L's rebase (the link's name instead of
    # its target's) and the destination's own name come on top, as docker's CLI does.
    if rebase:
        rename = (_go_base_dir(src), rename[1] if rename else rebase)
    try:
        untar(body, dst_dir, True, None, chown=False, rename=rename)
    except CopyError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)) from None
    finally:
        resp.close()
    _say_copied(quiet, body.total, dst)
    return 0


def _go_base_dir(path: str) -> str:
    from tether.runtime.cparchive import split_dir_entry

    return split_dir_entry(path)[1]


def copy_to_container(
    ctx: Context, container: str, src: str, dst: str, follow: bool, uidgid: bool, quiet: bool
) -> int:
    from tether.runtime.cparchive import GO_DIR, GO_SYMLINK, split_dir_entry

    if src != "-":
        src = resolve_local(src)
    dst_path = dst
    info = _stat(ctx, container, dst)
    if info is not None and int(info.get("mode") or 0) & GO_SYMLINK:
        target = str(info.get("linkTarget") or "")
        if not target.startswith("/"):
            target = posixpath.join(posixpath.dirname(dst.rstrip("/")) or "/", target)
        dst_path = target
        info = _stat(ctx, container, target)
    if info is not None:
        problem = _go_mode_problem(int(info.get("mode") or 0))
        if problem:
            raise CliError(
                f'destination "{container}:{dst}" must be a directory or a regular file: {problem}'
            )
    exists = info is not None
    is_dir = info is not None and bool(int(info.get("mode") or 0) & GO_DIR)
    query: dict[str, Any] = {"noOverwriteDirNonDir": "true"}
    if uidgid:
        query["copyUIDGID"] = "true"
    counted = [0]

    if src == "-":
        if not is_dir:
            raise CliError(f'destination "{container}:{dst}" must be a directory')
        resolved = dst_path

        def stream(w: ChunkWriter) -> None:
            inp = sys.stdin.buffer
            while True:
                data = inp.read(65536)
                if not data:
                    break
                w.write(data)

    else:
        local, src_is_dir, rebase = copy_info_source(src, follow)
        resolved, rename = prepare_archive_copy(local, src_is_dir, rebase, dst_path, exists, is_dir)

        def stream(w: ChunkWriter) -> None:
            class Counting:
                def write(self, data: bytes) -> int:
                    counted[0] += len(data)
                    return w.write(data)

                def flush(self) -> None:
                    pass

            first = rename[1] if rename else (rebase or split_dir_entry(local)[1])
            tar_resource(Counting(), local, first)

    query["path"] = resolved
    resp = ctx.open("PUT", f"/containers/{quote(container)}/archive", query=query, stream=stream)
    if resp.status >= 400:
        raise _api_failure(resp, container, resolved)
    resp.read()
    resp.close()
    _say_copied(quiet, counted[0], f"{container}:{dst_path}")
    return 0


def run_cp(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    source, destination = args
    if not source:
        raise CliError("source can not be empty")
    if not destination:
        raise CliError("destination can not be empty")
    # Progress is for terminals: without -q, quiet unless stdout is one (as docker).
    quiet = bool(o["quiet"]) or not sys.stdout.isatty()
    src_container, src_path = split_cp_arg(source)
    dst_container, dst_path = split_cp_arg(destination)
    if src_container and dst_container:
        raise CliError("copying between containers is not supported")
    try:
        if src_container:
            return copy_from_container(
                ctx, src_container, src_path, dst_path, o["follow_link"], quiet
            )
        if dst_container:
            return copy_to_container(
                ctx, dst_container, src_path, dst_path, o["follow_link"], o["archive"], quiet
            )
    except ApiError as exc:
        raise CliError(f"Error response from daemon: {exc.message}") from None
    raise CliError("must specify at least one container source")


CP = Command(
    "cp",
    "[OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n\ttether cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
    "Copy files/folders between a container and the local filesystem\n\n"
    "Use '-' as the source to read a tar archive from stdin\n"
    "and extract it to a directory destination in a container.\n"
    "Use '-' as the destination to stream a tar archive of a\n"
    "container source to stdout.",
    [
        Flag("archive", "a", kind="bool", help="Archive mode (copy all uid/gid information)"),
        Flag("follow-link", "L", kind="bool", help="Always follow symbol link in SRC_PATH"),
        Flag(
            "quiet",
            "q",
            kind="bool",
            help="Suppress progress output during copy. Progress output is automatically "
            "suppressed if no terminal is attached",
        ),
    ],
    min_args=2,
    max_args=2,
    handler=run_cp,
)
