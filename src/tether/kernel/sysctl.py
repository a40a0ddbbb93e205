"""sysctl through /proc/sys, for the network namespace of the calling thread."""

from __future__ import annotations


def set_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
    except FileNotFoundError:
        return
    with open(path, "w") as f:
        f.write(value)


def get_sysctl(key: str) -> str | None:
    path = "/proc/sys/" + key
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
