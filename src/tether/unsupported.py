"""Container settings that Docker's request shapes carry and tether cannot enforce (pure).

Each is refused by name when it asks for anything but Docker's default, never stored and
silently not applied: a user who asked for `--memory 512m` would otherwise believe a process
runs confined when it runs with no limit.  The API edge refuses them (so the CLI, which sends
them on, prints the daemon's words), and compose refuses the same keys with the same words
before it creates anything.  What tether honours (User, GroupAdd, ReadonlyRootfs, Tmpfs,
ShmSize, Binds, Mounts, Volumes, RestartPolicy, LogConfig json-file|none, ...) is not here.
"""

from __future__ import annotations

import re
from typing import Any

ROOT = ("", "root", "0")


def _not(field: str, flag: str, what: str) -> str:
    return f"tether does not support {field} ({flag}) yet: {what}"


PIDS_LIMIT = _not("PidsLimit", "--pids-limit", "containers have no process limit")
MEMORY = _not("Memory", "--memory", "containers have no memory limit")


def _set(value: Any) -> bool:
    """Anything but Go's zero value (or docker's "unset" spellings)."""
    return value not in (None, "", 0, False, [], {}, -1)


# HostConfig fields tether does not act on: (field, docker flag, what happens instead).
HOST_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("Memory", "--memory", "containers have no memory limit"),
    ("MemorySwap", "--memory-swap", "containers have no memory limit"),
    ("MemoryReservation", "--memory-reservation", "containers have no memory limit"),
    ("MemorySwappiness", "--memory-swappiness", "containers have no memory limit"),
    ("KernelMemory", "--kernel-memory", "containers have no memory limit"),
    ("KernelMemoryTCP", "--kernel-memory-tcp", "containers have no memory limit"),
    ("OomKillDisable", "--oom-kill-disable", "containers have no memory limit"),
    ("NanoCpus", "--cpus", "containers have no CPU limit"),
    ("CpuShares", "--cpu-shares", "containers have no CPU limit"),
    ("CpuPeriod", "--cpu-period", "containers have no CPU limit"),
    ("CpuQuota", "--cpu-quota", "containers have no CPU limit"),
    ("CpuRealtimePeriod", "--cpu-rt-period", "containers have no CPU limit"),
    ("CpuRealtimeRuntime", "--cpu-rt-runtime", "containers have no CPU limit"),
    ("CpusetCpus", "--cpuset-cpus", "containers may run on every CPU"),
    ("CpusetMems", "--cpuset-mems", "containers may use every memory node"),
    ("CpuCount", "--cpu-count", "containers have no CPU limit"),
    ("CpuPercent", "--cpu-percent", "containers have no CPU limit"),
    ("BlkioWeight", "--blkio-weight", "containers have no I/O limit"),
    ("BlkioWeightDevice", "--blkio-weight-device", "containers have no I/O limit"),
    ("BlkioDeviceReadBps", "--device-read-bps", "containers have no I/O limit"),
    ("BlkioDeviceWriteBps", "--device-write-bps", "containers have no I/O limit"),
    ("BlkioDeviceReadIOps", "--device-read-iops", "containers have no I/O limit"),
    ("BlkioDeviceWriteIOps", "--device-write-iops", "containers have no I/O limit"),
    ("IOMaximumIOps", "--io-maxiops", "containers have no I/O limit"),
    ("IOMaximumBandwidth", "--io-maxbandwidth", "containers have no I/O limit"),
    ("PidsLimit", "--pids-limit", "containers have no process limit"),
    ("Ulimits", "--ulimit", "containers get the daemon's limits"),
    ("Devices", "--device", "containers get Docker's default devices only"),
    ("DeviceCgroupRules", "--device-cgroup-rule", "containers get Docker's default devices only"),
    ("DeviceRequests", "--gpus", "no device requests are served"),
    ("CgroupParent", "--cgroup-parent", "containers' cgroups are under tether/"),
    ("Cgroup", "--cgroup", "containers' cgroups are their own"),
    ("StorageOpt", "--storage-opt", "the root filesystem is an overlay without options"),
    ("Sysctls", "--sysctl", "containers get the kernel's defaults"),
    ("OomScoreAdj", "--oom-score-adj", "containers keep the daemon's OOM score"),
    ("Init", "--init", "the command runs as the container's pid 1"),
    ("VolumeDriver", "--volume-driver", "volumes are local directories"),
)

# Modes: the values tether serves (Docker's default first); others refused by name.
MODES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("PidMode", "--pid", ("",), "containers have a pid namespace of their own"),
    (
        "IpcMode",
        "--ipc",
        ("", "private", "shareable"),
        "containers have an IPC namespace of their own",
    ),
    ("UTSMode", "--uts", ("",), "containers have a UTS namespace of their own"),
    ("UsernsMode", "--userns", ("",), "containers share the host's user namespace"),
    (
        "CgroupnsMode",
        "--cgroupns",
        ("", "private"),
        "containers have a cgroup namespace of their own",
    ),
    ("Runtime", "--runtime", ("", "runc"), "containers run under tether-shim"),
    ("Isolation", "--isolation", ("", "default"), "Linux namespaces"),
)


def container_refusal(req: Any, hc: Any) -> str | None:
    """The one-line refusal for the first setting tether cannot honour (None: all fine).

    `req` is the create request (its Config fields), `hc` its HostConfig; defaults as
    Docker reads them: PidsLimit 0 or -1 is unlimited, Memory 0 is no limit."""
    for field, flag, what in HOST_FIELDS:
        if _set(getattr(hc, field, None)):
            return _not(field, flag, what)
    for field, flag, allowed, what in MODES:
        value = getattr(hc, field, None) or ""
        if value not in allowed:
            return f"tether does not support {field} {value!r} ({flag}) yet: {what}"
    if getattr(req, "Healthcheck", None) is not None and (req.Healthcheck.Test or [""])[0] not in (
        "NONE",
    ):
        return "tether does not support Healthcheck yet: no health checks are run"
    if getattr(req, "NetworkDisabled", None):
        return "tether does not support NetworkDisabled yet: use --network none"
    return None


def compose_refusal(pids_limit: int | None, memory: int | None) -> str | None:
    """compose's pids_limit and mem_limit, refused as the API refuses them."""
    if pids_limit not in (None, 0, -1):
        return PIDS_LIMIT
    if memory:
        return MEMORY
    return None


# docker's units.RAMInBytes: a number, an optional binary unit, optional "i" and "b".
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """`-m 512m`, `1g`, `1024`: bytes, or ValueError in docker's words."""
    found = _SIZE.fullmatch(text)
    if found is None:
        raise ValueError(f"invalid size: '{text}'")
    return int(float(found[1]) * _UNITS[(found[2] or "").lower()])
