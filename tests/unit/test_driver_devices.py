"""Drivers name their own host devices; nothing outside drivers/ tests a driver's name.

Troubleshooting (network inspect --verbose, doctor, topology, capture) asks a network's driver
which host devices its traffic crosses (`NetworkDriver.host_devices`); these tests hold the
drivers to what they make, and hold the rest of the code to issue 10's rule that the name
"bridge" appears only in the bridge driver, the default network's definition and
compatibility tables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import msgspec

from tether.api.networks import NetworkCreate
from tether.drivers.bridge import BridgeDriver
from tether.drivers.host import HostDriver, NullDriver
from tether.drivers.macvlan import MacvlanDriver
from tether.drivers.registry import DriverRegistry
from tether.engine import netcreate
from tether.ipam.pools import DEFAULT_POOLS
from tether.kernel.rtnl import Rtnl
from tether.model import Network
from tether.topology import model

NO_KERNEL = cast(Rtnl, None)  # validate() and host_devices() never touch the kernel
DRIVERS = DriverRegistry(
    [BridgeDriver(NO_KERNEL), MacvlanDriver(NO_KERNEL), HostDriver(), NullDriver()]
)
SRC = Path(__file__).resolve().parents[2] / "src" / "tether"


def network(body: dict[str, Any]) -> Network:
    req = msgspec.convert(body, NetworkCreate)
    driver = DRIVERS.get(str(body.get("Driver") or "bridge"))
    return netcreate.resolve(req, driver, [], [], list(DEFAULT_POOLS), {4: "172.17.0.0/16"}).network


def test_a_bridge_network_crosses_its_bridge_with_its_gateways_and_mtu() -> None:
    net = network(
        {
            "Name": "b",
            "IPAM": {"Config": [{"Subnet": "10.60.0.0/24", "Gateway": "10.60.0.254"}]},
            "Options": {
                "com.docker.network.bridge.name": "br-mine",
                "com.docker.network.driver.mtu": "1400",
            },
        }
    )
    (dev,) = DRIVERS.of("bridge").host_devices(net)
    assert (dev.name, dev.kind, dev.role, dev.mtu) == ("br-mine", "bridge", "bridge", 1400)
    assert dev.addresses == ("10.60.0.254/24",)
    assert dev.endpoints_master


def test_a_macvlan_network_crosses_its_parent_or_its_private_stand_in() -> None:
    lan = network(
        {"Name": "m", "Driver": "macvlan", "Options": {"parent": "eth7"},
         "IPAM": {"Config": [{"Subnet": "192.168.50.0/24"}]}}
    )  # fmt: skip
    (dev,) = DRIVERS.of("macvlan").host_devices(lan)
    # The user's parent may be of any kind; no endpoint's host end hangs off it.
    assert (dev.name, dev.kind, dev.role, dev.endpoints_master) == (
        "eth7", "", "macvlan parent", False,
    )  # fmt: skip
    inside = network(
        {"Name": "i", "Driver": "macvlan", "Internal": True,
         "IPAM": {"Config": [{"Subnet": "192.168.51.0/24"}]}}
    )  # fmt: skip
    (dev,) = DRIVERS.of("macvlan").host_devices(inside)
    assert dev.name == f"tm-{inside.id[:12]}" and dev.kind == "bridge"


def test_modes_cross_no_device_and_the_topology_draws_them_only_in_use() -> None:
    for name in ("host", "null"):
        net = netcreate.predefined(name, DRIVERS.of(name), {}, None)
        assert DRIVERS.of(name).host_devices(net) == []
    bridge = network({"Name": "b", "IPAM": {"Config": [{"Subnet": "10.61.0.0/24"}]}})
    host = netcreate.predefined("host", DRIVERS.of("host"), {}, None)
    doc = model.build(
        {"Name": "n1", "Addr": ""}, [bridge, host], [],
        driver_of=lambda n: DRIVERS.by_name.get(n.driver),
    )  # fmt: skip
    (shown,) = doc["Networks"]
    assert shown["Name"] == "b"
    assert shown["Devices"] == [{"Name": f"tb-{bridge.id[:12]}", "Kind": "bridge"}]
    assert shown["ICC"] is True


def test_topology_takes_icc_from_the_drivers_firewall_facts() -> None:
    net = network(
        {"Name": "quiet", "IPAM": {"Config": [{"Subnet": "10.62.0.0/24"}]},
         "Options": {"com.docker.network.bridge.enable_icc": "false"}}
    )  # fmt: skip
    view = model.network_view(net, DRIVERS.of("bridge"))
    assert view["ICC"] is False


# Where the string "bridge" may appear outside drivers/, and why: none of these is a driver
# tested by name.
ALLOWED = {
    "netmodes.py": "the default network's definition and Docker's network modes",
    "daemon/routes_build.py": "docker build's --network modes (a compatibility table)",
    "kernel/rtnl.py": "the kernel's link kind",
    "kernel/observe.py": "the kernel's link kind, macvlan mode and nftables family names",
}
# A macvlan mode, not the driver (the mode's default).
ALLOWED_LINES = [re.compile(r'st\.get\("mode", "bridge"\)')]


def test_bridge_is_named_only_by_its_driver_the_default_network_and_compat_tables() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("drivers/") or rel in ALLOWED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if '"bridge"' in line and not any(rx.search(line) for rx in ALLOWED_LINES):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
