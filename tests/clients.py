"""The real clients of the Docker Engine API, as the tests drive them against a tetherd.

- the docker CLI: Debian's `docker.io` (its `docker` binary only; no dockerd is started), or
  whichever `docker` is first on PATH;
- docker-py: the `docker` package of the dev dependencies;
- docker-compose 1.29 (the Python one): in a virtualenv of its own, because its pins
  (PyYAML<6, docker-py 5/6, requests<2.32) clash with ours.  `./run test` and `./run bench`
  make it in CACHE; `compose_bin()` makes it there on first use otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from nshost import NamespaceHost

CACHE = os.environ.get("TETHER_COMPOSE_VENV", "/var/cache/tether/compose-1.29")
# PyYAML 5.4 no longer builds with Cython 3; compose 1.29 runs on PyYAML 6 unchanged, so it is
# installed without its dependencies and these are given instead.
COMPOSE_DEPS = [
    "docker==6.1.3",
    "requests<2.32",
    "urllib3<2",
    "PyYAML>=6,<7",
    "jsonschema>=2.5.1,<4",
    "websocket-client<1",
    "texttable>=0.9.0,<2",
    "dockerpty>=0.4.1,<1",
    "docopt>=0.6.1,<1",
    "python-dotenv>=0.13.0,<1",
    "distro>=1.5.0,<2",
]


def docker_cli() -> str | None:
    return shutil.which("docker")


def docker(h: NamespaceHost, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The docker CLI against this host's tetherd (never a dockerd: DOCKER_HOST is set)."""
    env = dict(os.environ)
    env["DOCKER_HOST"] = f"unix://{h.socket}"
    env["DOCKER_CONFIG"] = os.path.join(h.dir, "docker-config")
    env.update(kw.pop("env", {}))
    kw.setdefault("timeout", 60)
    return subprocess.run(
        [docker_cli() or "docker", *args], capture_output=True, text=True, env=env, **kw
    )


def docker_ok(h: NamespaceHost, *args: str, **kw: Any) -> str:
    r = docker(h, *args, **kw)
    assert r.returncode == 0, f"docker {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def compose_bin() -> str:
    """docker-compose 1.29, made in CACHE if it is not there yet."""
    exe = os.path.join(CACHE, "bin", "docker-compose")
    if os.path.exists(exe):
        return exe
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".compose-", dir=os.path.dirname(CACHE))
    pip = [os.path.join(tmp, "bin", "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run(["/usr/bin/python3", "-m", "venv", tmp], check=True)
    subprocess.run([*pip, "--no-deps", "docker-compose==1.29.2"], check=True, timeout=600)
    subprocess.run([*pip, *COMPOSE_DEPS], check=True, timeout=600)
    try:
        os.rename(tmp, CACHE)
    except OSError:  # made meanwhile by another run
        shutil.rmtree(tmp, ignore_errors=True)
    return exe


def compose(
    h: NamespaceHost, project_dir: str, *args: str, **kw: Any
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["DOCKER_HOST"] = f"unix://{h.socket}"
    env["COMPOSE_INTERACTIVE_NO_CLI"] = "1"
    kw.setdefault("timeout", 120)
    return subprocess.run(
        [compose_bin(), "--no-ansi", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=project_dir,
        **kw,
    )


def run_in_pty(
    argv: list[str],
    inputs: list[bytes],
    env: dict[str, str],
    timeout: float = 30,
    ready: bytes | None = None,
) -> tuple[bytes, int]:
    """Run argv on a pseudo-terminal of 33x101, typing each input once the output has been
    quiet for a moment (and, with `ready`, once that has been printed: a shell's prompt,
    since ash takes typeahead for the answer to its cursor query); (everything it printed,
    its exit code)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover (the child)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.environ.update(env)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    out = b""
    pending = list(inputs)
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.1)
        if readable:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
            last = time.monotonic()
        elif pending and time.monotonic() - last > 0.5 and (ready is None or ready in out):
            os.write(fd, pending.pop(0))
            last = time.monotonic()
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return out, os.waitstatus_to_exitcode(status)


PYTHON = sys.executable
