"""`service create|update --log-driver/--log-opt`: TaskTemplate.LogDriver as docker's CLI
sends it, checked by the daemon as a container's --log-opt."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tether.cli.flags import parse
from tether.cli.service import CREATE, UPDATE, _log_driver, build_spec
from tether.cluster.agent import container_body
from tether.cluster.servicespec import check
from tether.errors import InvalidParameter


def spec_of(*argv: str) -> dict[str, Any]:
    o, args = parse(CREATE, ["--name", "web", *argv])
    return build_spec(o, args)


def test_create_sends_the_log_driver_and_the_daemon_checks_it() -> None:
    spec = spec_of(
        "--log-driver", "json-file", "--log-opt", "max-size=1k", "--log-opt", "max-file=3",
        "busybox",
    )  # fmt: skip
    assert spec["TaskTemplate"]["LogDriver"] == {
        "Name": "json-file",
        "Options": {"max-size": "1k", "max-file": "3"},
    }
    check(spec)
    assert "LogDriver" not in spec_of("busybox")["TaskTemplate"]
    # --log-opt alone: kept for json-file (docker's CLI drops it without --log-driver).
    assert spec_of("--log-opt", "max-size=2m", "busybox")["TaskTemplate"]["LogDriver"] == {
        "Name": "json-file",
        "Options": {"max-size": "2m"},
    }
    for argv, error in (
        (["--log-driver", "syslog"], "log driver 'syslog' is not supported"),
        (["--log-opt", "max-file=0"], "max-file cannot be less than 1"),
        (["--log-opt", "max-size=x"], "invalid size: 'x'"),
        (["--log-opt", "labels=a"], "tether does not support the log opt 'labels'"),
        (["--log-opt", "nope=1"], "unknown log opt 'nope' for json-file log driver"),
    ):
        with pytest.raises(InvalidParameter, match=error):
            check(spec_of(*argv, "busybox"))


def test_update_replaces_the_options_and_keeps_the_driver() -> None:
    o, _ = parse(UPDATE, ["--log-opt", "max-size=5k", "web"])
    assert _log_driver(o, {"Name": "json-file", "Options": {"max-file": "2"}}) == {
        "Name": "json-file",
        "Options": {"max-size": "5k"},
    }
    o, _ = parse(UPDATE, ["--replicas", "2", "web"])
    assert _log_driver(o, {"Name": "json-file"}) is None


def test_the_tasks_container_gets_the_options() -> None:
    from tether.cluster.services import Service, Task

    spec = spec_of("--log-opt", "max-size=1k", "--log-opt", "max-file=4", "busybox")
    body = container_body(
        Service(id="s1", spec=spec), Task(id="t1", service="s1", slot=1, node="n1"), {}
    )
    assert body["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "1k", "max-file": "4"},
    }


def test_inspect_pretty_shows_the_log_driver_as_docker() -> None:
    from tether.cli.service import pretty

    spec = spec_of("--log-opt", "max-size=1k", "--log-opt", "max-file=4", "busybox")
    text = pretty({"ID": "x1", "Spec": spec}, {})
    # (tabs become docker's tabwriter columns)
    assert re.search(
        r"\n Image: +busybox\nLog Driver:\n Name: +json-file\n LogOpts:\n"
        r"  max-file:       4\n  max-size:       1k\n\nEndpoint Mode:",
        text,
    ), text
    assert "Log Driver" not in pretty({"ID": "x1", "Spec": spec_of("busybox")}, {})
