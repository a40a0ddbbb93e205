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


# The drivers every tetherd serves (its registry may add more, e.g. overlay with a cluster
# store); compose assumes these when it has not asked a daemon yet.
LOCAL_DRIVERS = frozenset({"bridge", "host", "macvlan", "null"})
# Drivers of the predefined network modes: one network each, made by the daemon itself.
SINGLETONS = frozenset({"host", "null", "none"})


# For a kernel that does have ipvlan links: the reason is then tether's, not the kernel's.
IPVLAN_NOT_BUILT = (
    "tether has no ipvlan driver (this kernel has ipvlan links, but tether does not drive "
    "them yet); use -d macvlan for containers on the LAN"
)


def refusal(name: str) -> str:
    """The one-line error for a driver name that this daemon does not serve."""
    return REASONS.get(name) or f'plugin "{name}" not found'
