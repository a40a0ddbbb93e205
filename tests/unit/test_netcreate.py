"""Network create validation: Docker's checks and messages, before anything changes."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest

from tether.api.networks import NetworkCreate
from tether.drivers.bridge import BridgeDriver, BridgeState
from tether.drivers.host import HostDriver, NullDriver
from tether.drivers.macvlan import MacvlanDriver
from tether.drivers.registry import DriverRegistry
from tether.engine import netcreate
from tether.errors import Conflict, Forbidden, InvalidParameter, NotFound, TetherError
from tether.ipam.config import consolidate
from tether.ipam.pools import DEFAULT_POOLS
from tether.kernel.rtnl import Rtnl
from tether.model import Network, Pool
from tether.options import OPT_MTU

# validate() is pure: the drivers never touch their netlink handle before create().
NO_KERNEL = cast(Rtnl, None)
DRIVERS = DriverRegistry(
    [BridgeDriver(NO_KERNEL), MacvlanDriver(NO_KERNEL), HostDriver(), NullDriver()]
)


def resolve(
    body: dict[str, Any], networks: list[Network] | None = None, routes: list[Any] | None = None
) -> netcreate.Resolved:
    driver = DRIVERS.get(str(body.get("Driver") or "bridge"))
    return netcreate.resolve(
        msgspec.convert(body, NetworkCreate),
        driver,
        networks or [],
        routes or [],
        list(DEFAULT_POOLS),
        {4: "172.17.0.0/16"},
    )


def predefined(name: str) -> Network:
    driver = DRIVERS.of({"bridge": "bridge", "host": "host", "none": "null"}[name])
    pool = Pool("172.17.0.0/16", "172.17.0.1") if name == "bridge" else None
    return netcreate.predefined(name, driver, driver.predefined_options(name), pool)


def existing() -> list[Network]:
    bridge = predefined("bridge")
    n1 = resolve({"Name": "n1", "IPAM": {"Config": [{"Subnet": "10.150.0.0/16"}]}}).network
    return [bridge, n1]


def test_full_option_set_resolves_like_docker() -> None:
    r = resolve(
        {
            "Name": "anc-custom",
            "Internal": True,
            "IPAM": {
                "Config": [
                    {
                        "Subnet": "10.123.0.0/16",
                        "Gateway": "10.123.0.254",
                        "IPRange": "10.123.5.0/24",
                        "AuxiliaryAddresses": {"reserved1": "10.123.5.7"},
                    }
                ]
            },
            "Options": {"com.docker.network.driver.mtu": "1450"},
            "Labels": {"tier": "test"},
        }
    )
    net = r.network
    st = BridgeState.of(net)
    assert len(net.id) == 64 and st.bridge_name == f"tb-{net.id[:12]}"
    assert st.mtu == 1450 and net.internal and net.user_subnets
    api = net.to_api()
    assert api["IPAM"] == {
        "Driver": "default",
        "Options": {},
        "Config": [
            {
                "Subnet": "10.123.0.0/16",
                "IPRange": "10.123.5.0/24",
                "Gateway": "10.123.0.254",
                "AuxiliaryAddresses": {"reserved1": "10.123.5.7"},
            }
        ],
    }
    assert api["Options"] == {"com.docker.network.driver.mtu": "1450"}
    assert sorted(api) == sorted(
        [
            "Name",
            "Id",
            "Created",
            "Scope",
            "Driver",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Attachable",
            "Ingress",
            "ConfigFrom",
            "ConfigOnly",
            "Containers",
            "Options",
            "Labels",
        ]
    )
    assert ("10.123.0.254", "gateway") in r.reservations and (
        "10.123.5.7",
        "aux:reserved1",
    ) in r.reservations


def test_auto_pool_shows_gateway_user_subnet_does_not() -> None:
    auto = resolve({"Name": "a"})
    assert auto.network.ipam_config == [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]
    assert auto.cursors == {4: "172.18.0.0/16"}
    user = resolve({"Name": "b", "IPAM": {"Config": [{"Subnet": "10.156.0.5/24"}]}})
    # Kept verbatim, as Docker does; the pool itself is canonical.
    assert user.network.ipam_config == [{"Subnet": "10.156.0.5/24"}]
    assert (
        user.network.pools[0].subnet == "10.156.0.0/24"
        and user.network.pools[0].gateway == "10.156.0.1"
    )
    ranged = resolve(
        {
            "Name": "c",
            "IPAM": {"Config": [{"Subnet": "10.140.0.0/24", "IPRange": "10.140.0.128/25"}]},
        }
    )
    assert ranged.network.pools[0].gateway == "10.140.0.128"
    assert "Gateway" not in ranged.network.ipam_config[0]


BAD: list[tuple[dict[str, Any], type[TetherError], str]] = [
    (
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.150.5.0/24"}]}},
        Forbidden,
        "Pool overlaps with other one on this address space",
    ),
    (
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "172.17.5.0/24"}]}},
        Forbidden,
        "Pool overlaps with other one on this address space",
    ),
    (
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.151.0.0/24", "Gateway": "10.152.0.1"}]}},
        InvalidParameter,
        "no matching subnet for gateway 10.152.0.1",
    ),
    (
        {
            "Name": "x",
            "IPAM": {"Config": [{"Subnet": "10.153.0.0/24", "IPRange": "10.154.0.0/25"}]},
        },
        InvalidParameter,
        "no matching subnet for range 10.154.0.0/25",
    ),
    (
        {
            "Name": "x",
            "IPAM": {
                "Config": [{"Subnet": "10.157.0.0/24", "AuxiliaryAddresses": {"a": "10.158.0.1"}}]
            },
        },
        InvalidParameter,
        "no matching subnet for aux-address 10.158.0.1",
    ),
    (
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.155.0.0/33"}]}},
        InvalidParameter,
        "Invalid subnet 10.155.0.0/33 : invalid CIDR address: 10.155.0.0/33",
    ),
    (
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "notacidr"}]}},
        InvalidParameter,
        "Invalid subnet notacidr : invalid CIDR address: notacidr",
    ),
    (
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.0.0.0"}]}},
        InvalidParameter,
        "Invalid subnet 10.0.0.0 : invalid CIDR address: 10.0.0.0",
    ),
    ({"Name": "n1"}, Conflict, "network with name n1 already exists"),
    (
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}, {"Subnet": "10.2.0.0/24"}]}},
        Forbidden,
        "bridge driver doesn't support multiple subnets",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.driver.mtu": "abc"}},
        InvalidParameter,
        'failed to parse com.docker.network.driver.mtu value: abc (strconv.Atoi: parsing "abc": invalid syntax)',
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.driver.mtu": "70000"}},
        InvalidParameter,
        "invalid MTU number: 70000",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.driver.mtu": "-5"}},
        InvalidParameter,
        "invalid MTU number: -5",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.enable_icc": "maybe"}},
        InvalidParameter,
        'failed to parse com.docker.network.bridge.enable_icc value: maybe (strconv.ParseBool: parsing "maybe": invalid syntax)',
    ),
    ({"Name": "x", "Driver": "nosuchdriver"}, NotFound, 'plugin "nosuchdriver" not found'),
    (
        {"Name": "x", "Driver": "overlay"},
        Forbidden,
        "overlay networks need a cluster store: start tetherd with --cluster-store",
    ),
    (
        {"Name": "x", "Driver": "ipvlan"},
        Forbidden,
        "the ipvlan driver is not available: this kernel lacks ipvlan links",
    ),
    (
        {"Name": "x", "Ingress": True},
        Forbidden,
        "the bridge driver cannot carry the routing mesh: an ingress network is an overlay",
    ),
    ({"Name": "x", "Scope": "swarm"}, Forbidden, "cannot create swarm-scope networks"),
    ({"Name": "x", "Options": {"encrypted": ""}}, Forbidden, "cannot encrypt traffic"),
    ({"Name": "x", "ConfigOnly": True}, Forbidden, "--config-only and --config-from"),
    (
        {"Name": "x", "Driver": "macvlan", "Options": {"macvlan_mode": "loud"}},
        InvalidParameter,
        "requested macvlan mode 'loud' is not valid",
    ),
    (
        {"Name": "x", "Driver": "macvlan", "Options": {"parent": "lo"}},
        InvalidParameter,
        "loopback interface is not a valid macvlan parent link",
    ),
    (
        {"Name": "x", "EnableIPv6": True},
        Forbidden,
        "could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network",
    ),
    (
        {"Name": "x", "EnableIPv6": True, "IPAM": {"Config": [{"Subnet": "fe80::/80"}]}},
        InvalidParameter,
        "'fe80::/80' clashes with the Link-Local prefix 'fe80::/64'",
    ),
    (
        {
            "Name": "x",
            "EnableIPv6": True,
            "IPAM": {"Config": [{"Subnet": "fd00:1::/64"}, {"Subnet": "fd00:2::/64"}]},
        },
        Forbidden,
        "bridge driver doesn't support multiple subnets",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.name": "tether0"}},
        Forbidden,
        "networks have same bridge name",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.name": "much-too-long-name"}},
        InvalidParameter,
        "invalid bridge name",
    ),
    ({"Name": ""}, InvalidParameter, "network name can't be empty"),
    # Options a driver does not act on: refused by name, never stored unused.
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.enable_icc_typo": "false"}},
        InvalidParameter,
        "the bridge driver has no option 'com.docker.network.bridge.enable_icc_typo' (its "
        "options: com.docker.network.bridge.enable_icc, com.docker.network.bridge.enable_ip_"
        "masquerade, com.docker.network.bridge.host_binding_ipv4, com.docker.network.bridge."
        "name, com.docker.network.driver.mtu)",
    ),
    (
        {"Name": "x", "Options": {"parent": "eth0"}},
        InvalidParameter,
        "the bridge driver has no option 'parent'",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.inhibit_ipv4": "true"}},
        InvalidParameter,
        "the bridge driver's option com.docker.network.bridge.inhibit_ipv4 is not supported "
        "by tether yet",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.default_bridge": "true"}},
        InvalidParameter,
        "the bridge driver has no option 'com.docker.network.bridge.default_bridge'",
    ),
    (
        {"Name": "x", "Driver": "macvlan", "Options": {"parent": "eth0", "mode": "bridge"}},
        InvalidParameter,
        "the macvlan driver has no option 'mode' (its options: com.docker.network.driver.mtu, "
        "macvlan_mode, parent)",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.host_binding_ipv4": "localhost"}},
        InvalidParameter,
        "failed to parse com.docker.network.bridge.host_binding_ipv4 value: localhost (nil ip)",
    ),
    # The reconcilers' own link names are not a bridge name a user may choose.
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.name": "tm-flap"}},
        InvalidParameter,
        "invalid bridge name: tm-flap: names starting with tb-, tz-, tm-, tv, ov-, vx- are "
        "tether's own",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.name": "tvbr"}},
        InvalidParameter,
        "invalid bridge name: tvbr",
    ),
    (
        {"Name": "x", "Options": {"com.docker.network.bridge.name": "tz-0123456789a"}},
        InvalidParameter,
        "invalid bridge name: tz-0123456789a",
    ),
    (
        {"Name": "x", "EnableIPv4": False, "EnableIPv6": True},
        InvalidParameter,
        "tether does not support IPv6-only networks yet: EnableIPv4 cannot be false",
    ),
]


@pytest.mark.parametrize(("body", "kind", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_input_gets_dockers_error(
    body: dict[str, Any], kind: type[TetherError], message: str
) -> None:
    with pytest.raises(kind) as info:
        resolve(body, existing())
    assert message in info.value.message


def test_only_one_host_and_null() -> None:
    nets = [predefined("host"), predefined("none")]
    with pytest.raises(Forbidden, match='only one instance of "host" network is allowed'):
        resolve({"Name": "h2", "Driver": "host"}, nets)
    with pytest.raises(Forbidden, match='only one instance of "null" network is allowed'):
        resolve({"Name": "n2", "Driver": "null"}, nets)


def test_ipv6_subnet_without_flag_is_listed_but_not_used() -> None:
    r = resolve({"Name": "x", "IPAM": {"Config": [{"Subnet": "fd00:9::/64"}]}})
    assert {"Subnet": "fd00:9::/64"} in r.network.ipam_config
    assert all(p.version == 4 for p in r.network.pools)
    r6 = resolve({"Name": "y", "EnableIPv6": True, "IPAM": {"Config": [{"Subnet": "fd00:9::/64"}]}})
    assert [p.subnet for p in r6.network.pools] == ["172.18.0.0/16", "fd00:9::/64"]


def test_cli_consolidation_messages() -> None:
    with pytest.raises(
        InvalidParameter, match="every ip-range or gateway must have a corresponding subnet"
    ):
        consolidate([], [], ["10.159.0.1"], [])
    with pytest.raises(
        InvalidParameter, match="multiple overlapping subnet configuration is not supported"
    ):
        consolidate(["10.0.0.0/16", "10.0.1.0/24"], [], [], [])
    with pytest.raises(InvalidParameter, match=r"cannot configure multiple ranges"):
        consolidate(["10.0.0.0/16", "10.1.0.0/16"], ["10.0.1.0/24", "10.0.2.0/24"], [], [])
    assert consolidate(
        ["10.0.0.0/16", "fd00::/64"], ["10.0.1.0/24"], ["10.0.0.9", "fd00::9"], [("a", "10.0.0.7")]
    ) == [
        {
            "Subnet": "10.0.0.0/16",
            "IPRange": "10.0.1.0/24",
            "Gateway": "10.0.0.9",
            "AuxiliaryAddresses": {"a": "10.0.0.7"},
        },
        {"Subnet": "fd00::/64", "Gateway": "fd00::9"},
    ]


def test_option_tables_match_the_drivers() -> None:
    """catalog's option table (compose reads it) is the drivers' own, and the reserved link
    prefixes cover every prefix a driver's reconcile or sweep owns."""
    from tether.drivers import bridge, catalog, macvlan, overlay, veth
    from tether.drivers.base import TETHER_LINK_PREFIXES

    assert catalog.DRIVER_OPTIONS["bridge"] == {
        bridge.OPT_BRIDGE_NAME,
        bridge.OPT_ICC,
        bridge.OPT_MASQ,
        bridge.OPT_HOST_BINDING,
        bridge.OPT_MTU,
    }
    assert catalog.DRIVER_OPTIONS["macvlan"] == {macvlan.OPT_PARENT, macvlan.OPT_MODE, OPT_MTU}
    assert catalog.BRIDGE_DEFAULT == bridge.OPT_DEFAULT_BRIDGE
    owned = {
        bridge.BRIDGE_PREFIX,
        bridge.TOMBSTONE_PREFIX,
        macvlan.PRIVATE_PREFIX,
        veth.HOST_PREFIX,
        overlay.BRIDGE_PREFIX,
        overlay.VXLAN_PREFIX,
    }
    assert owned == set(TETHER_LINK_PREFIXES)


def test_accepted_options_are_kept_and_the_predefined_bridge_keeps_its_own() -> None:
    opts = {
        "com.docker.network.bridge.name": "br-ok",
        "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.enable_ip_masquerade": "true",
        "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1",
        "com.docker.network.driver.mtu": "1400",
    }
    net = resolve({"Name": "x", "Options": opts}).network
    assert net.options == opts
    assert BridgeDriver(NO_KERNEL).default_host_ip(net) == "127.0.0.1"
    default = predefined("bridge")
    assert default.options and "com.docker.network.bridge.default_bridge" in default.options
    assert BridgeDriver(NO_KERNEL).default_host_ip(default) == ""
    mv = resolve(
        {"Name": "m", "Driver": "macvlan", "Options": {"parent": "eth0", "macvlan_mode": "vepa"}}
    ).network
    assert mv.driver_state["mode"] == "vepa"
