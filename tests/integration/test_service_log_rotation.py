"""`service logs` of tasks whose json-file log rotates (TaskTemplate.LogDriver max-size,
max-file): the rotated files are read too, oldest first, on the local node and through the
node listener from the other one."""

from __future__ import annotations

import os

import pytest
from test_overlay import three_nodes, wait_for

from nshost import NamespaceHost
from tether.client import ApiError
from tether.runtime import logs as logfile

pytestmark = pytest.mark.integration

LINES = 60
# Lines spaced out: tether-shim logs what each read of the pipe brings as one entry (a fast
# loop could arrive in one read, one entry, one file however large, never rotated).
CHATTY = [
    "sh",
    "-c",
    f"for i in $(seq 1 {LINES}); do echo $i ........................................; "
    "usleep 3000; done; trap 'exit 0' TERM; sleep 600 & wait",
]


def test_service_logs_read_the_rotated_files(host: NamespaceHost) -> None:
    del host
    with three_nodes(2) as c:
        a, b = c.hosts
        # As a user types it: the options reach each task's container.
        a.ok("service", "create", "-d", "--name", "chatty", "--replicas", "2",
             "--log-driver", "json-file", "--log-opt", "max-size=1k", "--log-opt", "max-file=100",
             "busybox", *CHATTY)  # fmt: skip

        def task_logs(h: NamespaceHost) -> list[str]:
            out = []
            for ctr in h.api.get("/containers/json", {"all": 1}):
                if "com.docker.swarm.task.id" in (ctr.get("Labels") or {}):
                    info = h.api.get(f"/containers/{ctr['Id']}/json")
                    assert info["HostConfig"]["LogConfig"] == {
                        "Type": "json-file",
                        "Config": {"max-size": "1k", "max-file": "100"},
                    }
                    out.append(info["LogPath"])
            return out

        wait_for("a task on each node", lambda: all(task_logs(h) for h in (a, b)), 30)
        paths = [task_logs(h)[0] for h in (a, b)]
        for path in paths:
            # The task's own line count is what the rotated files must add up to.
            wait_for(f"{path} done", lambda p=path: _numbers(p)[-1:] == [LINES], 30)
            # Rotated: the first lines are no longer in the current file.
            assert os.path.exists(f"{path}.1"), path
            assert 1 not in _numbers(path), _numbers(path)
        # Both tasks' every line, from node a: its own task's files and node b's (through
        # the node listener), each task's lines in order.
        raw = a.ok("service", "logs", "--raw", "chatty")
        nums = [int(line.split()[0]) for line in raw.splitlines() if line.strip()]
        assert sorted(nums) == sorted(list(range(1, LINES + 1)) * 2), raw
        pretty = a.ok("service", "logs", "chatty")
        by_task: dict[str, list[int]] = {}
        for line in pretty.splitlines():
            task, _, text = line.partition("|")
            by_task.setdefault(task.strip(), []).append(int(text.split()[0]))
        assert sorted(by_task.values()) == [list(range(1, LINES + 1))] * 2, pretty
        # --tail counts lines across the files too.
        tail = a.ok("service", "logs", "--raw", "--tail", "2", "chatty").split()
        assert sorted(int(x) for x in tail if x.isdigit()) == [LINES - 1, LINES - 1, LINES, LINES]
        # A bad option is refused at create, in the words of a container's --log-opt.
        spec2 = {
            "Name": "bad",
            "TaskTemplate": {
                "ContainerSpec": {"Image": "busybox", "Args": CHATTY},
                "LogDriver": {"Name": "json-file", "Options": {"max-file": "0"}},
            },
        }
        with pytest.raises(ApiError, match="max-file cannot be less than 1"):
            a.api.post("/services/create", spec2)
        assert [s["Spec"]["Name"] for s in a.api.get("/services")] == ["chatty"]


def _numbers(path: str) -> list[int]:
    """The line numbers in one log file (tether-shim's frames)."""
    frames, _ = logfile.read_frames(path)
    return [int(f.data.split()[0]) for f in logfile.split_lines(frames) if f.data.strip()]
