"""`docker run --network a --network b` (API 1.44+): the extra networks a container on host,
none or container:X (or one joining host) cannot have are refused at create, in dockerd's
words, before anything is recorded.  Pure: engine.specs.build with networks in a dict."""

from __future__ import annotations

import json

import pytest

from tether.api.containers import ContainerCreate
from tether.api.decode import decode
from tether.engine.specs import build
from tether.errors import InvalidParameter, NotFound
from tether.images.store import Image
from tether.model import Container, Network

NETWORKS = {
    name: Network(id=f"{name}-id", name=name, driver=driver, created="")
    for name, driver in (
        ("bridge", "bridge"),
        ("host", "host"),
        ("none", "null"),
        ("foo", "bridge"),
    )
}
SHARED = (
    "container sharing network namespace with another container or host cannot be connected"
    " to any other network"
)
HOST = "container cannot be disconnected from host network or connected to host network"
NONE = (
    "container cannot be connected to multiple networks with one of the networks in private"
    " (none) mode"
)


def find(term: str) -> Network:
    for n in NETWORKS.values():
        if term in (n.name, n.id):
            return n
    raise NotFound(f"network {term} not found")


def create(*networks: str) -> Container:
    """What docker's CLI sends for `run --network A --network B ...` (API 1.44+)."""
    body = {
        "Image": "busybox",
        "Cmd": ["true"],
        "HostConfig": {"NetworkMode": networks[0]},
        "NetworkingConfig": {"EndpointsConfig": {n: {} for n in networks}},
    }
    req = decode(json.dumps(body).encode(), ContainerCreate)
    img = Image(id="sha256:" + "0" * 64, repo_tags=["busybox:latest"], created=0.0, size=0)
    return build(req, "c", img, find, {})


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        (("host", "foo"), SHARED),
        (("container:other", "foo"), SHARED),
        (("none", "foo"), NONE),
        (("bridge", "host"), HOST),
        (("foo", "host"), HOST),
        (("foo", "none"), NONE),
    ],
)
def test_extra_networks_a_container_cannot_join_are_refused(
    networks: tuple[str, ...], message: str
) -> None:
    with pytest.raises(InvalidParameter) as info:
        create(*networks)
    assert info.value.status == 400
    assert info.value.message == message


def test_extra_networks_of_a_private_container_are_kept() -> None:
    assert sorted(create("bridge", "foo").networks) == ["bridge", "foo"]
    assert sorted(create("host").networks) == ["host"]
