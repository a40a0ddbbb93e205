"""ps -q with --format, as docker 28's CLI prints it (cli/command/container/list.go): the
IDs, and on stderr a warning that the format was ignored; fast path and full CLI alike."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from test_cli_fast import CID, CID2, StubDaemon, daemon  # noqa: F401 (the fixture)

from tether.cli import fast
from tether.cli.main import main

WARNING = "WARNING: Ignoring custom format, because both --format and --quiet are set.\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["ps", "-q", "--format", "{{.Names}}"],
        ["ps", "--format=table", "--quiet"],
        ["container", "ls", "-aq", "--format", "json"],
    ],
)
def test_quiet_wins_over_a_format_with_a_warning(
    daemon: StubDaemon,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    runs: list[Callable[[], int | None]] = [
        lambda: fast.attempt(argv),
        lambda: main(argv, fast=False),
    ]
    for run in runs:
        capfd.readouterr()
        code = run()
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = capfd.readouterr()
        assert code == 0
        assert out.split()[:2] == [CID[:12], CID2[:12]], out
        assert err == WARNING
