"""Driver names and why a driver cannot serve: pure, shared by the daemon and by compose.

The daemon's registry holds the drivers that run; this table says, for a name that is not
among them, exactly why (the kernel lacks something, a flag is missing) instead of Docker's
bare `plugin "x" not found`.  Compose imports it to refuse the same names with the same words
before creating anything, given the driver list from `/info`.
"""

from __future__ import annotations

# Names Docker knows whose absence has a reason worth telling.
REASONS = {
    "ipvlan": (
        "the ipvlan driver is not available: this kernel lacks ipvlan links "
        "(CONFIG_IPVLAN); use -d macvlan for containers on the LAN"
    ),
    "overlay": (
        "overlay networks need a cluster store: start tetherd with "
        "--cluster-store etcd://HOST:2379[,HOST:2379...] --cluster-advertise IP"
    ),
}


def refusal(name: str) -> str:
    """The one-line error for a driver name that this daemon does not serve."""
    return REASONS.get(name) or f'plugin "{name}" not found'
