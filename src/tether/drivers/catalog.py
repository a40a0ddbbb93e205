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


# The -o options each driver acts on.  Any other is refused by name, never stored unused
# (Docker's bridge driver ignores unknown keys; an option that silently does nothing is
# worse than an error).  The drivers check their options against these, and compose checks
# a file's driver_opts the same way before it creates anything.
BRIDGE_NAME = "com.docker.network.bridge.name"
BRIDGE_ICC = "com.docker.network.bridge.enable_icc"
BRIDGE_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
BRIDGE_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"
BRIDGE_DEFAULT = "com.docker.network.bridge.default_bridge"  # the predefined network's own
DRIVER_MTU = "com.docker.network.driver.mtu"
OVERLAY_VNI = "com.docker.network.driver.overlay.vxlanid_list"
OVERLAY_ENCRYPTED = "encrypted"  # Docker's: an encrypted overlay (crypt/, not IPsec here)
DRIVER_OPTIONS: dict[str, frozenset[str]] = {
    "bridge": frozenset(
        {BRIDGE_NAME, BRIDGE_ICC, BRIDGE_MASQUERADE, BRIDGE_HOST_BINDING, DRIVER_MTU}
    ),
    "macvlan": frozenset({"parent", "macvlan_mode", DRIVER_MTU}),
    "overlay": frozenset({OVERLAY_VNI, OVERLAY_ENCRYPTED, DRIVER_MTU}),
}
# Options Docker's drivers have that tether does not act on (yet): refused with that reason.
NOT_SUPPORTED: dict[str, frozenset[str]] = {
    "bridge": frozenset(
        {
            "com.docker.network.bridge.gateway_mode_ipv4",
            "com.docker.network.bridge.gateway_mode_ipv6",
            "com.docker.network.bridge.inhibit_ipv4",
            "com.docker.network.bridge.trusted_host_interfaces",
            "com.docker.network.container_iface_prefix",
            "com.docker.network.enable_ipv4",
            "com.docker.network.enable_ipv6",
        }
    ),
}


def option_refusal(driver: str, key: str, predefined: bool = False) -> str | None:
    """The one-line error for an -o option `driver` does not act on (None: it does).

    Drivers not in the table (third-party names) check their own options."""
    known = DRIVER_OPTIONS.get(driver)
    if known is None or key in known or (predefined and key == BRIDGE_DEFAULT):
        return None
    if key in NOT_SUPPORTED.get(driver, ()):
        return f"the {driver} driver's option {key} is not supported by tether yet"
    return f"the {driver} driver has no option {key!r} (its options: {', '.join(sorted(known))})"


def refusal(name: str) -> str:
    """The one-line error for a driver name that this daemon does not serve."""
    return REASONS.get(name) or f'plugin "{name}" not found'
