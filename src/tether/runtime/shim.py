"""Starting tether-shim (see shim.c for what it does and why it is C; cbuild.py builds it)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from tether.cbuild import build

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.c")
START_TIMEOUT = 30.0  # seconds for a container's command to be executing


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
    all_devices: bool = False  # run only: no device filter on the cgroup (--privileged)

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
    log_max_size: int = 0  # --log-opt max-size in bytes (0: one file, never rotated)
    log_max_file: int = 1  # --log-opt max-file
    security: Security = field(default_factory=Security)
    cgroup: str | None = None  # the container's cgroup2 directory (runtime/cgroups.py)
    # (read-only, path in the container, host path, propagation or ""): -v/--mount binds
    # and volumes, in mount order (parents before what is mounted inside them).
    volumes: list[tuple[bool, str, str, str]] = field(default_factory=list)
    tmpfs: list[tuple[str, str]] = field(default_factory=list)  # (path, options)
    readonly_root: bool = False  # --read-only
    shm_size: int = 0  # bytes of /dev/shm (0: Docker's 64 MiB)
    user: str = ""  # -u USER[:GROUP], resolved by the shim in the container's /etc
    group_add: list[str] = field(default_factory=list)
    stdin: bool = False  # -i: stdin is a pipe the shim holds (fed by attach clients)
    tty: bool = False  # -t: a pseudo-terminal
    tty_size: tuple[int, int] | None = None  # (rows, columns)
    # Descriptors the shim inherits: a connected attach client (the one that was waiting
    # for the start) and the listening socket of later ones (runtime/attach.py).
    attach_fd: int = -1
    listen_fd: int = -1


def env_fd(env: list[str]) -> int:
    """A memfd holding `env` for tether-shim's --env-fd: K=V entries, each ended by a NUL.

    Never as arguments: a command line is readable by every local user (/proc/PID/cmdline,
    ps) for as long as the shim runs, and `-e` is where secrets go; a memfd is seen only
    through the shim's /proc/PID/fd, which is root's.  It is close-on-exec here: the spawn
    hands it over with spawn_env_action, so no other process tetherd starts meanwhile (the
    port relay, another shim) inherits it.  The caller closes it once the shim is spawned.
    """
    data = os.fsencode("".join(e + "\0" for e in env))
    if data.count(b"\0") != len(env):
        raise ValueError("embedded null byte")  # what posix_spawn said of an --env argument
    fd = os.memfd_create("tether-env", os.MFD_CLOEXEC)
    try:
        if fd < 3:  # tetherd started without stdio: keep clear of the 0-2 the spawn redirects
            low, fd = fd, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(low)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def spawn_env_action(fd: int) -> tuple[int, int, int]:
    """The posix_spawn file action that lets the shim inherit env_fd's descriptor under its own
    number (dup2 onto itself clears close-on-exec: POSIX, glibc 2.29+)."""
    return (os.POSIX_SPAWN_DUP2, fd, fd)


def run_argv(shim: str, spec: RunSpec, sync_fd: int, env_in: int) -> list[str]:
    argv = [shim, "run", "--sync", str(sync_fd), "--exit", spec.exit_file]
    if spec.log:  # none with --log-driver none
        argv += ["--log", spec.log]
        if spec.log_max_size:
            argv += ["--log-max-size", str(spec.log_max_size)]
            argv += ["--log-max-file", str(spec.log_max_file)]
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
    for readonly, dst, src, propagation in spec.volumes:
        flags = ",".join(["ro" if readonly else "rw", *([propagation] if propagation else [])])
        argv += ["--volume", f"{flags}:{dst}:{src}"]
    for dst, options in spec.tmpfs:
        argv += ["--tmpfs", f"{dst}:{options}"]
    if spec.readonly_root:
        argv.append("--read-only")
    if spec.shm_size:
        argv += ["--shm-size", str(spec.shm_size)]
    if spec.user:
        argv += ["--user", spec.user]
    for group in spec.group_add:
        argv += ["--group-add", group]
    if spec.stdin:
        argv.append("--stdin")
    if spec.tty:
        argv.append("--tty")
        if spec.tty_size:
            argv += ["--tty-size", f"{spec.tty_size[0]}x{spec.tty_size[1]}"]
    if spec.attach_fd >= 0:
        argv += ["--attach-fd", str(spec.attach_fd)]
    if spec.listen_fd >= 0:
        argv += ["--attach-listen", str(spec.listen_fd)]
    sec = spec.security
    for path in sec.masked:
        argv += ["--mask", path]
    for path in [*sec.readonly, *(view.readonly if view is not None else [])]:
        argv += ["--readonly", path]
    if sec.sys_writable:
        argv.append("--sys-rw")
    if spec.cgroup:
        argv += ["--cgroup", spec.cgroup]
        if sec.all_devices:
            argv.append("--all-devices")
    argv += sec.argv()
    argv += ["--cwd", spec.cwd or "/", "--env-fd", str(env_in)]
    return [*argv, "--", *spec.argv]


async def start(shim: str, spec: RunSpec) -> tuple[int, int]:
    """Start a container; returns (shim pid, container pid) once its command is executing."""
    if spec.cgroup is None and not spec.security.all_devices:
        # Without a cgroup there is nothing to hold Docker's device rules: every device node
        # the container makes (it has CAP_MKNOD) would open.  Refused, not run unconfined.
        raise StartError(
            "device cgroup: no cgroup2 hierarchy is mounted, so the device rules cannot be "
            "enforced (mount -t cgroup2 none /sys/fs/cgroup)"
        )
    env = env_fd(spec.env)
    r = w = null = -1
    try:
        r, w = os.pipe()
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            shim_pid = os.posix_spawn(
                shim,
                run_argv(shim, spec, w, env),
                {},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, null, 1),
                    (os.POSIX_SPAWN_DUP2, null, 2),
                    # The sync pipe, like the environment, is inherited by this spawn only
                    # (dup2 onto itself), never by another process started meanwhile.
                    (os.POSIX_SPAWN_DUP2, w, w),
                    spawn_env_action(env),
                    *[
                        (os.POSIX_SPAWN_DUP2, fd, fd)
                        for fd in (spec.attach_fd, spec.listen_fd)
                        if fd >= 0
                    ],
                ],
                setsid=True,
            )
        except OSError as exc:  # E2BIG: a command line the kernel will not take, say
            raise StartError(f"exec tether-shim: {exc.strerror}") from None
    except BaseException:
        if r >= 0:
            os.close(r)
        raise
    finally:
        for fd in (w, null, env):
            if fd >= 0:
                os.close(fd)
    try:
        try:
            line = await _read_line(r)
        finally:
            os.close(r)
        if line.startswith("ok "):
            return shim_pid, int(line.split()[1])
        raise StartError(
            line[4:] if line.startswith("err ") else line or "tether-shim exited without a word"
        )
    except BaseException:
        # Failed, timed out or cancelled: the shim (and the container's pid 1, in its
        # process group) must not live on unwatched, and is reaped without blocking the loop.
        abandon(shim_pid)
        raise


def abandon(shim_pid: int) -> None:
    """SIGKILL a shim that was not started through (it and its process group: the container's
    pid 1 until it execs) and reap it once it has ended, from the event loop."""
    for kill in (os.killpg, os.kill):
        try:
            kill(shim_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reap_later(shim_pid)


def reap_later(pid: int, on_exit: Callable[[int], None] | None = None) -> None:
    """Reap our child `pid` now if it has ended, else when its pidfd says it has (never a
    blocking waitpid on the event loop); `on_exit` gets its wait status."""

    def reap() -> bool:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done and on_exit is not None:
            on_exit(status)
        return bool(done)

    if reap():
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()

    def ended() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        reap()

    loop.add_reader(fd, ended)


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
        await asyncio.wait_for(done, START_TIMEOUT)
    except TimeoutError:
        raise StartError(f"tether-shim did not answer in {START_TIMEOUT:g} s") from None
    finally:
        loop.remove_reader(fd)
    return buf.decode(errors="replace").strip()


def exec_command(
    shim: str,
    pid: int,
    cwd: str,
    env: list[str],
    tty: bool,
    argv: list[str],
    security: Security | None = None,
    cgroup: str | None = None,
    pid_start: int = 0,
    user: str = "",
    group_add: list[str] | None = None,
) -> tuple[list[str], int]:
    """tether-shim exec's argv and the descriptor holding `env` (see env_fd): the caller adds
    spawn_env_action(fd) to the spawn's file actions and closes fd afterwards.  `cgroup`: the
    container's, which the exec joins (its device rules apply to the exec too).  `pid_start`:
    the start time of `pid` as recorded when the container started; the shim refuses to enter
    a process whose start time differs (the container ended and its pid was reused)."""
    fd = env_fd(env)
    out = [shim, "exec", "--pid", str(pid), "--cwd", cwd or "/", "--env-fd", str(fd)]
    if pid_start:
        out += ["--pid-start", str(pid_start)]
    if cgroup:
        out += ["--cgroup", cgroup]
    if security is not None:
        out += security.argv()
    if user:
        out += ["--user", user]
    for group in group_add or []:
        out += ["--group-add", group]
    if tty:
        out.append("--tty")
    return [*out, "--", *argv], fd


if __name__ == "__main__":
    print(ensure_built())
