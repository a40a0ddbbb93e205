"""Building and starting tether-shim (see shim.c for what it does and why it is C).

The binary is compiled from the packaged source on first use and cached under a name that
includes the source's hash, so an upgraded tether never runs a stale shim and several daemons
share one build.  `./run install` builds it ahead of time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from tether.errors import SystemFailure

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.c")
CACHE_DIR = os.environ.get("TETHER_CACHE", "/var/cache/tether")


def binary_path() -> str:
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return os.path.join(CACHE_DIR, f"tether-shim-{digest}")


def ensure_built() -> str:
    path = binary_path()
    if os.access(path, os.X_OK):
        return path
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemFailure(
            "building tether-shim needs a C compiler (apt-get install gcc libc6-dev)"
        )
    os.makedirs(CACHE_DIR, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tether-shim-", dir=CACHE_DIR)
    os.close(fd)
    try:
        r = subprocess.run(
            [cc, "-O2", "-static", "-Wall", "-o", tmp, SOURCE], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise SystemFailure(f"building tether-shim failed: {r.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)  # atomic: concurrent builders all end with one good binary
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@dataclass
class RunSpec:
    log: str
    exit_file: str
    netns: str | None
    hostname: str | None
    rootfs: str | None
    overlay: tuple[str, str, str] | None
    binds: list[tuple[str, str]]
    cwd: str
    env: list[str]
    argv: list[str]


def run_argv(shim: str, spec: RunSpec, sync_fd: int) -> list[str]:
    argv = [shim, "run", "--sync", str(sync_fd), "--log", spec.log, "--exit", spec.exit_file]
    if spec.netns:
        argv += ["--netns", spec.netns]
    if spec.hostname:
        argv += ["--hostname", spec.hostname]
    if spec.rootfs:
        argv += ["--rootfs", spec.rootfs]
        if spec.overlay:
            argv += ["--overlay", ":".join(spec.overlay)]
    for src, dst in spec.binds:
        argv += ["--bind", f"{src}:{dst}"]
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
    shim: str, pid: int, cwd: str, env: list[str], tty: bool, argv: list[str]
) -> list[str]:
    out = [shim, "exec", "--pid", str(pid), "--cwd", cwd or "/"]
    for e in env:
        out += ["--env", e]
    if tty:
        out.append("--tty")
    return [*out, "--", *argv]


if __name__ == "__main__":
    print(ensure_built())
