"""Starting tether-shim (see shim.c for what it does and why it is C; cbuild.py builds it)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from tether.cbuild import build

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.c")


def ensure_built() -> str:
    return build(SOURCE, "tether-shim")


@dataclass
class Security:
    """What tether-shim applies to a container's process and to every exec in it."""

    caps: int | None = None  # capability mask kept (bounding, effective, permitted); None: all
    no_new_privs: bool = False
    seccomp: str | None = None  # file of the compiled filter (struct sock_filter array)
    seccomp_flags: int = 0
    masked: list[str] = field(default_factory=list)  # run only: Docker's masked paths
    readonly: list[str] = field(default_factory=list)  # run only: Docker's read-only paths
    sys_writable: bool = False  # run only: /sys read-write (--privileged)

    def argv(self) -> list[str]:
        out: list[str] = []
        if self.caps is not None:
            out += ["--caps", f"{self.caps:x}"]
        if self.no_new_privs:
            out.append("--no-new-privs")
        if self.seccomp:
            out += ["--seccomp", self.seccomp]
            if self.seccomp_flags:
                out += ["--seccomp-flags", str(self.seccomp_flags)]
        return out


@dataclass
class HostView:
    """The built-in host image's root: a tmpfs with the host's trees bound read-only."""

    ro_binds: list[tuple[str, str]]  # (host directory, path in the container)
    symlinks: list[tuple[str, str]]  # (target, path in the container)
    cow_binds: list[tuple[str, str, str]]  # (host directory, path in the container, scratch)
    hidden: list[str]  # removed from the view (secrets), paths in the container
    readonly: list[str]  # made read-only once the container's own files are in place


@dataclass
class RunSpec:
    log: str
    exit_file: str
    netns: str | None
    hostname: str | None
    rootfs: str
    overlay: tuple[str, str, str] | None
    binds: list[tuple[str, str]]
    cwd: str
    env: list[str]
    argv: list[str]
    host_view: HostView | None = None
    security: Security = field(default_factory=Security)


def run_argv(shim: str, spec: RunSpec, sync_fd: int) -> list[str]:
    argv = [shim, "run", "--sync", str(sync_fd), "--log", spec.log, "--exit", spec.exit_file]
    if spec.netns:
        argv += ["--netns", spec.netns]
    if spec.hostname:
        argv += ["--hostname", spec.hostname]
    argv += ["--rootfs", spec.rootfs]
    if spec.overlay:
        argv += ["--overlay", ":".join(spec.overlay)]
    view = spec.host_view
    if view is not None:
        argv.append("--root-tmpfs")
        for src, dst in view.ro_binds:
            argv += ["--ro-bind", f"{src}:{dst}"]
        for target, dst in view.symlinks:
            argv += ["--symlink", f"{target}:{dst}"]
        for src, dst, scratch in view.cow_binds:
            argv += ["--cow-bind", f"{src}:{dst}:{scratch}"]
        for path in view.hidden:
            argv += ["--hide", path]
    for src, dst in spec.binds:
        argv += ["--bind", f"{src}:{dst}"]
    sec = spec.security
    for path in sec.masked:
        argv += ["--mask", path]
    for path in [*sec.readonly, *(view.readonly if view is not None else [])]:
        argv += ["--readonly", path]
    if sec.sys_writable:
        argv.append("--sys-rw")
    argv += sec.argv()
    argv += ["--cwd", spec.cwd or "/"]
    for e in spec.env:
        argv += ["--env", e]
    return [*argv, "--", *spec.argv]


async def start(shim: str, spec: RunSpec) -> tuple[int, int]:
    """Start a container; returns (shim pid, container pid) once its command is executing."""
    r, w = os.pipe()
    os.set_inheritable(w, True)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        shim_pid = os.posix_spawn(
            shim,
            run_argv(shim, spec, w),
            {},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, null, 1),
                (os.POSIX_SPAWN_DUP2, null, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(w)
        os.close(null)
    try:
        line = await _read_line(r)
    finally:
        os.close(r)
    if line.startswith("ok "):
        return shim_pid, int(line.split()[1])
    try:
        os.waitpid(shim_pid, 0)
    except ChildProcessError:
        pass
    raise StartError(
        line[4:] if line.startswith("err ") else line or "tether-shim exited without a word"
    )


class StartError(Exception):
    pass


async def _read_line(fd: int) -> str:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    buf = bytearray()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            buf.extend(data)
            if b"\n" not in data:
                return
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(done, 30)
    finally:
        loop.remove_reader(fd)
    return buf.decode(errors="replace").strip()


def exec_argv(
    shim: str,
    pid: int,
    cwd: str,
    env: list[str],
    tty: bool,
    argv: list[str],
    security: Security | None = None,
) -> list[str]:
    out = [shim, "exec", "--pid", str(pid), "--cwd", cwd or "/"]
    if security is not None:
        out += security.argv()
    for e in env:
        out += ["--env", e]
    if tty:
        out.append("--tty")
    return [*out, "--", *argv]


if __name__ == "__main__":
    print(ensure_built())
