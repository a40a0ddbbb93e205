"""Docker's network modes and predefined networks: one compatibility table (pure, no imports).

`--network` takes a network name or id, or one of the modes below; the predefined networks
`bridge`, `host` and `none` exist on every daemon.  Docker's client and daemon both apply
these rules (docker's `container.NetworkMode.IsUserDefined`), so the CLI, compose and the
engine read them from here instead of keeping their own copies.
"""

from __future__ import annotations

# The network every daemon starts with for each mode, and the driver that makes it.
DEFAULT_NETWORK = "bridge"  # `--network default` and no --network at all
DEFAULT_DRIVER = "bridge"  # `network create` without -d
PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}
CONTAINER_PREFIX = "container:"
# The local bridge network that gives containers on overlay networks their way out (and
# their published ports), made on a node when the first such container starts: Docker's.
GATEWAY_BRIDGE = "docker_gwbridge"
GATEWAY_BRIDGE_OPTIONS = {
    "com.docker.network.bridge.enable_icc": "false",
    "com.docker.network.bridge.enable_ip_masquerade": "true",
}


def normalize(mode: str) -> str:
    """Docker's NetworkMode: "" and "default" mean the default bridge network."""
    return DEFAULT_NETWORK if mode in ("", "default") else mode


def is_container(mode: str) -> bool:
    return mode.startswith(CONTAINER_PREFIX)


def is_user_defined(mode: str) -> bool:
    """A mode naming a user's network: not default/bridge/host/none, not container:X.

    Only such networks take --network-alias, --ip and --ip6 (docker's client checks this
    before it asks the daemon).
    """
    return normalize(mode) not in PREDEFINED and not is_container(mode)


def is_host(mode: str) -> bool:
    return mode == "host"


def is_none(mode: str) -> bool:
    return mode == "none"


def own_endpoints(mode: str) -> bool:
    """The container gets interfaces of its own on networks (not host, none or container:X);
    only such containers publish ports."""
    return not is_host(mode) and not is_none(mode) and not is_container(mode)
