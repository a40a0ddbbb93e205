"""The tether command itself: autostart, help, usage errors, version."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from nshost import NamespaceHost, delete_netns, make_netns
from tether import API_VERSION

pytestmark = pytest.mark.integration


def test_cli_starts_a_daemon_when_none_answers() -> None:
    """No daemon on the default socket: the CLI starts one, says so, and the next call uses it.

    Runs in a private mount namespace with a tmpfs on /run, so the default socket path
    /run/tether/tether.sock is free and the host's own /run is never touched.
    """
    netns = make_netns()
    tmp = tempfile.mkdtemp(prefix="tether-autostart-")
    script = f"""
set -e
mount -t tmpfs tmpfs /run
export TETHER_ROOT={tmp}/root
{sys.executable} -m tether.cli.main network ls > {tmp}/out1 2> {tmp}/err1
{sys.executable} -m tether.cli.main network ls --format '{{{{.Name}}}}' > {tmp}/out2 2> {tmp}/err2
pid=$(head -1 /run/tether/tetherd.lock)
kill -TERM $pid
for i in $(seq 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done
exit 1
"""
    try:
        r = subprocess.run(
            [
                "nsenter",
                f"--net=/run/netns/{netns}",
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr

        def read(name: str) -> str:
            with open(os.path.join(tmp, name)) as f:
                return f.read()

        assert "no daemon was answering on unix:///run/tether/tether.sock; started tetherd" in read(
            "err1"
        )
        assert read("out1").splitlines()[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
        assert read("err2") == ""
        assert read("out2") == "bridge\nhost\nnone\n"
    finally:
        delete_netns(netns)
        subprocess.run(["rm", "-rf", tmp])


def test_explicit_host_without_daemon_fails_clearly(tmp_path: object) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tether.cli.main",
            "-H",
            "unix:///tmp/nonexistent/tether.sock",
            "network",
            "ls",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        == "Cannot connect to the tether daemon at unix:///tmp/nonexistent/tether.sock. Is the tether daemon running?"
    )


def test_help_usage_errors_and_version(host: NamespaceHost) -> None:
    r = host.cli("network", "create")
    assert r.returncode == 1
    assert r.stderr.startswith(
        "\"tether network create\" requires exactly 1 argument.\nSee 'tether network create --help'."
    )
    r = host.cli("network", "ls", "--bogus")
    assert r.returncode == 125 and r.stderr.startswith("unknown flag: --bogus")
    assert "Create a network" in host.ok("network", "create", "--help")
    assert "Commands:" in host.ok("network")
    r = host.cli("nosuchcommand")
    assert r.returncode == 1 and "is not a tether command" in r.stderr
    out = host.ok("version")
    assert out.startswith("Client:\n Version:") and "Server: tether" in out
    assert host.ok("version", "--format", "{{.Server.ApiVersion}}") == f"{API_VERSION}\n"
    assert host.ok("--version").startswith("tether version ")
