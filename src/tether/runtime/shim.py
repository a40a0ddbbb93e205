"""Starting tether-shim (see shim.c for what it does and why it is C; cbuild.py builds it)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from tether.cbuild import build

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.c")


def ensure_built() -> str:
    return build(SOURCE, "tether-shim")


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
