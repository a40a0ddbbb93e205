"""The fast path against a real tetherd: the launcher, `python -m tether.cli.main` (fast path
first) and the full CLI alone print the same for the everyday commands, errors included.

`ps` shows ages in seconds ("Up 3 seconds", "4 seconds ago"), for three containers started
at different moments: three runs in a row almost always see one of them turn a second.
Those ages are replaced by <age>, and runs of spaces (the table's padding, which follows the
ages' widths) by two, before comparing; tests/unit/test_cli_fast.py compares the same
tables at fixed times, byte for byte.  Everything else is compared as printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

FULL = "import sys; from tether.cli.main import main; sys.exit(main(sys.argv[1:], fast=False))"


def _launcher() -> str:
    from tether.cli import launcher

    path = os.path.join(tempfile.mkdtemp(prefix="tether-fast-"), "tether")
    launcher.write(path)
    return path


def _three(h: NamespaceHost, launcher: str, argv: list[str]) -> list[tuple[int, str, str]]:
    env = dict(os.environ, TETHER_HOST=f"unix://{h.socket}")
    out = []
    for cmd in (
        [launcher, *argv],
        [sys.executable, "-m", "tether.cli.main", *argv],
        [sys.executable, "-c", FULL, *argv],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        out.append((r.returncode, _ages(r.stdout), r.stderr))
    return out


def _ages(text: str) -> str:
    if not text.startswith(("CONTAINER ID", "REPOSITORY")):
        return text
    return re.sub(r" {2,}", "  ", _age(text))


def _age(text: str) -> str:
    return re.sub(
        r"\b(\d+ seconds?|Less than a second|About a minute|\d+ minutes)\b", "<age>", text
    )


def test_everyday_commands_print_the_same_on_both_paths(bhost: NamespaceHost) -> None:
    h = bhost
    launcher = _launcher()
    try:
        h.ok("network", "create", "--label", "team=x", "front10")
        h.ok("network", "create", "front9")
        h.ok("volume", "create", "data1")
        h.ok(
            "run", "-d", "--name", "web", "--network", "front10", "-p", "8080:80",
            "-p", "127.0.0.1:5353:53/udp", "--label", "b=2", "--label", "a=1",
            "busybox", "sh", "-c", "echo out; echo err >&2; exec sleep 300",
        )  # fmt: skip
        h.ok("run", "-d", "--name", "quiet", "busybox", "sleep", "300")
        assert (
            h.cli("run", "--name", "gone", "busybox", "sh", "-c", "echo bye; exit 3").returncode
            == 3
        )
        commands = [
            ["ps"],
            ["ps", "-a"],
            ["ps", "-aq"],
            ["ps", "--no-trunc"],
            ["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Ports}}"],
            ["ps", "-q", "--filter", "name=web"],
            ["network", "ls", "--filter", "name=front", "--format", "{{.Name}}"],
            ["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "web", "gone"],
            ["version", "--format", "{{.Server.ApiVersion}}"],
            ["container", "ls", "-a"],
            ["network", "ls"],
            ["network", "ls", "-q", "--no-trunc"],
            ["network", "inspect", "front10"],
            ["network", "inspect", "bridge", "front9"],
            ["inspect", "web"],
            ["inspect", "web", "quiet"],
            ["images"],
            ["images", "-q"],
            ["volume", "ls"],
            ["version"],
            ["logs", "web"],
            ["logs", "gone"],
            ["exec", "web", "sh", "-c", "echo in; echo oops >&2; exit 4"],
            # refusals: the fast path hands over or words them as the full CLI does
            ["inspect", "front9"],
            ["inspect", "nosuch"],
            ["network", "inspect", "nosuch"],
            ["logs", "nosuch"],
            ["exec", "nosuch", "true"],
            ["exec", "gone", "true"],
            ["exec", "web", "nosuchcommand"],
            # each run of these leaves the state the next one finds: the same answers
            ["stop", "-t", "0", "quiet"],
            ["start", "quiet"],
            ["rm", "web"],  # running: refused
            ["rm", "-f", "nosuch"],
            ["stop", "nosuch", "quiet"],
            ["kill", "gone"],  # not running
            ["start", "nosuch"],
        ]
        for argv in commands:
            runs = _three(h, launcher, argv)
            assert runs[0] == runs[1] == runs[2], (argv, runs)
            _, out, err = runs[0]
            assert "Traceback" not in err, (argv, err)
            assert out or err, argv
        by = {
            " ".join(a): _three(h, launcher, a)[0]
            for a in (
                ["exec", "web", "sh", "-c", "exit 4"],
                ["logs", "web"],
                ["ps", "-a"],
                ["exec", "gone", "true"],
            )
        }
        assert by["exec web sh -c exit 4"][0] == 4
        assert by["logs web"][1] == "out\n" and by["logs web"][2] == "err\n"
        assert "gone" in by["ps -a"][1] and "Exited (3)" in by["ps -a"][1]
        assert by["exec gone true"][0] == 1 and "is not running" in by["exec gone true"][2]
    finally:
        os.unlink(launcher)
        os.rmdir(os.path.dirname(launcher))
