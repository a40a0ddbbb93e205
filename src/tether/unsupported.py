"""Container settings that Docker's request shapes carry and tether cannot enforce yet (pure).

Each is refused by name when it asks for anything but Docker's default, never stored and
silently not applied: a user who asked for `--user nobody` or `--memory 512m` would otherwise
believe a process runs confined when it runs as root with no limit.  The API edge refuses
them (so the CLI, which sends them on, prints the daemon's words), and compose refuses the
same keys with the same words before it creates anything.
"""

from __future__ import annotations

import re

ROOT = ("", "root", "0")

USER = "tether does not support User yet: containers run as root"
EXEC_USER = "tether does not support User yet: exec runs commands as root"
READONLY_ROOTFS = "tether does not support ReadonlyRootfs yet: the root filesystem is writable"
PIDS_LIMIT = "tether does not support PidsLimit yet: containers have no process limit"
MEMORY = "tether does not support Memory yet: containers have no memory limit"


def runs_as_root(user: str | None) -> bool:
    """Docker's USER[:GROUP] naming root (or nothing, which is root in tether's images)."""
    name, _, group = (user or "").partition(":")
    return name in ROOT and group in ROOT


def container_refusal(
    user: str | None, readonly_rootfs: bool | None, pids_limit: int | None, memory: int | None
) -> str | None:
    """The one-line refusal for the first setting tether cannot honour (None: all default).

    Defaults as Docker reads them: PidsLimit 0 or -1 is unlimited, Memory 0 is no limit."""
    if not runs_as_root(user):
        return USER
    if readonly_rootfs:
        return READONLY_ROOTFS
    if pids_limit not in (None, 0, -1):
        return PIDS_LIMIT
    if memory:
        return MEMORY
    return None


def exec_refusal(user: str | None) -> str | None:
    return None if runs_as_root(user) else EXEC_USER


# docker's units.RAMInBytes: a number, an optional binary unit, optional "i" and "b".
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """`-m 512m`, `1g`, `1024`: bytes, or ValueError in docker's words."""
    found = _SIZE.fullmatch(text)
    if found is None:
        raise ValueError(f"invalid size: '{text}'")
    return int(float(found[1]) * _UNITS[(found[2] or "").lower()])
