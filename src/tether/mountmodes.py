"""The words of a bind or volume's MODE (`-v SRC:DST:MODE`, compose's short syntax) as
dockerd's linux_parser reads them; pure, shared by the engine and compose."""

from __future__ import annotations

# A bind's propagation (rprivate unless given).  Consistency modes mean something on Docker
# Desktop only; they are accepted and without effect on Linux, as by dockerd.
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
DEFAULT_PROPAGATION = "rprivate"
MODE_KINDS = {
    **dict.fromkeys(("ro", "rw"), "rw"),
    **dict.fromkeys(("z", "Z"), "label"),
    **dict.fromkeys(PROPAGATIONS, "propagation"),
    "nocopy": "copy",
    **dict.fromkeys(("consistent", "cached", "delegated"), "consistency"),
}


def valid_mode(mode: str) -> bool:
    """dockerd's linuxValidMountMode: known words only, at most one of each kind."""
    if not mode:
        return True
    kinds = [MODE_KINDS.get(w) for w in mode.split(",")]
    return None not in kinds and len(kinds) == len(set(kinds))
