"""`exec` sessions: a command run inside a running container through tether-shim exec.

The process is tetherd's child; its stdout/stderr (or a pty, with -t) are relayed over the
hijacked API connection in Docker's stream format, and its exit status becomes ExitCode.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tether.api.exec import ExecCreate
from tether.engine.containers import Containers
from tether.engine.supervisor import Supervisor
from tether.errors import Conflict, NotFound
from tether.runtime import cgroups, shim
from tether.runtime.logs import docker_frame


@dataclass
class Exec:
    id: str
    container_id: str
    cmd: list[str]
    env: list[str]
    workdir: str
    tty: bool
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    privileged: bool = False  # exec --privileged: every capability, the container's seccomp
    user: str = ""  # exec -u (else the container's own User)
    pid: int = 0
    running: bool = False
    exit_code: int | None = None
    pty_master: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


Write = Callable[[bytes], Awaitable[None]]
Read = Callable[[], Awaitable[bytes]]


class Execs:
    def __init__(self, containers: Containers, supervisor: Supervisor) -> None:
        self.containers = containers
        self.supervisor = supervisor
        self.by_id: dict[str, Exec] = {}

    def create(self, term: str, req: ExecCreate) -> Exec:
        """An exec session from a request already checked at the API edge (tether.api)."""
        c = self.containers.find(term)
        if not c.state.running:
            raise Conflict(f"Container {c.id} is not running")
        cmd = list(req.Cmd or [])
        if not cmd:
            raise Conflict("No exec command specified")
        env = list(c.config.get("Env") or [])
        for e in req.Env or []:
            key = e.split("=", 1)[0]
            env = [x for x in env if x.split("=", 1)[0] != key] + [e]
        if not any(e.startswith("HOSTNAME=") for e in env):
            env.append(f"HOSTNAME={c.hostname}")
        if not any(e.startswith("HOME=") for e in env) and not (req.User or c.config.get("User")):
            env.append("HOME=/root")  # with a user, the shim takes it from passwd
        if req.Tty and not any(e.startswith("TERM=") for e in env):
            env.append("TERM=xterm")
        ex = Exec(
            id=secrets.token_hex(32),
            container_id=c.id,
            cmd=cmd,
            env=env,
            workdir=req.WorkingDir or c.config.get("WorkingDir") or "/",
            tty=bool(req.Tty),
            attach_stdin=bool(req.AttachStdin),
            attach_stdout=req.AttachStdout is not False,
            attach_stderr=req.AttachStderr is not False,
            privileged=bool(req.Privileged),
            user=req.User or str(c.config.get("User") or ""),
        )
        self.by_id[ex.id] = ex
        # Keep the table small: finished sessions older than the last 200 go.
        if len(self.by_id) > 256:
            for old in [e for e in self.by_id.values() if e.exit_code is not None][:-200]:
                self.by_id.pop(old.id, None)
        return ex

    def find(self, exec_id: str) -> Exec:
        ex = self.by_id.get(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return ex

    def ids_of(self, container_id: str) -> list[str]:
        return [e.id for e in self.by_id.values() if e.container_id == container_id and e.running]

    def inspect(self, ex: Exec) -> dict[str, Any]:
        return {
            "ID": ex.id,
            "Running": ex.running,
            "ExitCode": ex.exit_code,
            "ProcessConfig": {
                "tty": ex.tty,
                "entrypoint": ex.cmd[0],
                "arguments": ex.cmd[1:],
                "privileged": ex.privileged,
                "user": ex.user,
            },
            "OpenStdin": ex.attach_stdin,
            "OpenStderr": ex.attach_stderr,
            "OpenStdout": ex.attach_stdout,
            "CanRemove": False,
            "ContainerID": ex.container_id,
            "DetachKeys": "",
            "Pid": ex.pid,
        }

    def resize(self, ex: Exec, height: int, width: int) -> None:
        if ex.pty_master is not None:
            fcntl.ioctl(ex.pty_master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def run(self, ex: Exec, write: Write, read: Read | None) -> None:
        """Run the session: relay output through `write`, input from `read` (if attached)."""
        c = self.containers.find(ex.container_id)
        if not c.state.running:
            raise Conflict(f"Container {c.id} is not running")
        if ex.running or ex.exit_code is not None:
            raise Conflict(f"Exec {ex.id} has already run")
        shim_path = self.supervisor.ensure_shim()
        # The container's own confinement (capabilities, no_new_privs, seccomp), as in Docker.
        security = self.containers.confiner.shim_security(c.host_config, ex.privileged)
        # The environment goes through a descriptor, never the shim's (world-readable) argv.
        argv, env_fd = shim.exec_command(
            shim_path,
            c.state.pid,
            ex.workdir,
            ex.env,
            ex.tty,
            ex.cmd,
            security,
            cgroup=cgroups.existing(c.id),
            pid_start=c.state.pid_start,
            user=ex.user,
            group_add=[str(g) for g in c.host_config.get("GroupAdd") or []],
        )
        loop = asyncio.get_running_loop()
        to_close: list[int] = [env_fd]
        outputs: list[tuple[int, int]] = []  # (fd, stream)
        stdin_w: int | None = None
        if ex.tty:
            master, slave = os.openpty()
            ex.pty_master = master
            child_fds = (slave, slave, slave)
            to_close.append(slave)
            outputs.append((master, 0))
            stdin_w = master
        else:
            null = os.open(os.devnull, os.O_RDWR)
            to_close.append(null)
            if ex.attach_stdin and read is not None:
                in_r, stdin_w = os.pipe()
                to_close.append(in_r)
            else:
                in_r = null
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            to_close += [out_w, err_w]
            outputs += [(out_r, 1), (err_r, 2)]
            child_fds = (in_r, out_w, err_w)
        try:
            pid = os.posix_spawn(
                shim_path,
                argv,
                {},
                file_actions=[
                    *[(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(child_fds)],
                    shim.spawn_env_action(env_fd),
                ],
                setsid=True,
            )
        finally:
            for fd in to_close:
                os.close(fd)
        ex.pid = pid
        ex.running = True

        pending = len(outputs)
        outputs_done = asyncio.Event()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        def on_readable(fd: int, stream: int) -> None:
            nonlocal pending
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:  # a pty master reads EIO once the last slave is closed
                data = b""
            if data:
                if ex.tty:
                    queue.put_nowait(data)
                elif (stream == 1 and ex.attach_stdout) or (stream == 2 and ex.attach_stderr):
                    queue.put_nowait(docker_frame(stream, data))
                return
            loop.remove_reader(fd)
            pending -= 1
            if pending == 0:
                outputs_done.set()

        for fd, stream in outputs:
            os.set_blocking(fd, False)
            loop.add_reader(fd, on_readable, fd, stream)

        async def pump_out() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                await write(item)

        async def pump_in() -> None:
            assert read is not None and stdin_w is not None
            try:
                while True:
                    data = await read()
                    if not data:
                        break
                    await loop.run_in_executor(None, _write_all, stdin_w, data)
            except (ConnectionError, OSError):
                pass
            finally:
                if not ex.tty:
                    os.close(stdin_w)

        sender = asyncio.create_task(pump_out())
        receiver = (
            asyncio.create_task(pump_in())
            if (stdin_w is not None and read is not None and ex.attach_stdin)
            else None
        )
        pidfd = os.pidfd_open(pid)
        exited = asyncio.Event()
        loop.add_reader(pidfd, exited.set)

        def ended(status: int) -> None:
            code = os.waitstatus_to_exitcode(status)
            ex.exit_code = 128 - code if code < 0 else code
            ex.running = False
            ex.done.set()

        reaped = False
        try:
            await exited.wait()
            _, status = os.waitpid(pid, 0)  # it has ended: this does not wait
            reaped = True
            ended(status)
            if ex.tty:
                # Output still buffered in the pty: drain what is there, then stop.
                await asyncio.sleep(0.01)
                on_readable(outputs[0][0], 0)
            else:
                try:
                    await asyncio.wait_for(outputs_done.wait(), 5)
                except TimeoutError:
                    pass  # a grandchild kept stdout open: stop relaying anyway
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            for fd, _ in outputs:
                loop.remove_reader(fd)
                try:
                    os.close(fd)
                except OSError:
                    pass
            if stdin_w is not None and not ex.tty and receiver is None:
                try:
                    os.close(stdin_w)
                except OSError:
                    pass
            queue.put_nowait(None)
            if receiver is not None:
                receiver.cancel()
            ex.pty_master = None
            if not reaped:
                # Cancelled mid-run (tetherd stopping, the session's task cancelled): the
                # command runs on, as Docker's does without its client, and is reaped when
                # it ends instead of staying a zombie of tetherd.
                shim.reap_later(pid, ended)
            await sender


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
