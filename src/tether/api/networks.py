"""Request objects of /networks: create, connect, disconnect (Engine API 1.41-1.47 shapes).

What is checked here needs no state: types, addresses that must parse, subnets no network
can use, and text that would end up in a file, an interface name or a rule.  What needs the
daemon's state (overlaps, names in use, drivers the registry knows) is the engine's.
"""

from __future__ import annotations

import ipaddress
import re

from tether.api.decode import Model
from tether.errors import InvalidParameter
from tether.ipam import config as ipamconfig
from tether.textcheck import check_alias, go_quote, has_control, ip_version, shown

MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")

_LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_network("255.255.255.255/32")
_LINK_LOCAL6 = ipaddress.ip_network("fe80::/64")
_MAPPED6 = ipaddress.ip_network("::ffff:0:0/96")


def check_text(what: str, value: str | None) -> None:
    """No control characters (newline, NUL...) in a value that lands in a file or a rule."""
    if value and has_control(value):
        raise InvalidParameter(
            f"invalid {what}: {go_quote(value)}: control characters are not allowed"
        )


def check_map(what: str, values: dict[str, str] | None) -> None:
    for k, v in (values or {}).items():
        check_text(f"{what} key", k)
        check_text(f"{what} value", v)


def check_labels(values: dict[str, str] | None) -> None:
    for k, v in (values or {}).items():
        if has_control(k) or has_control(v):
            raise InvalidParameter(
                f"invalid label {go_quote(k + '=' + v)}: control characters are not allowed"
            )


def check_mac(value: str | None) -> None:
    if value and not MAC_RE.fullmatch(value):
        raise InvalidParameter(f"invalid MAC address: {shown(value)}")


class EndpointIPAMConfig(Model):
    go_name = "network.EndpointIPAMConfig"
    IPv4Address: str | None = None
    IPv6Address: str | None = None
    LinkLocalIPs: list[str] | None = None


class EndpointSettings(Model):
    go_name = "network.EndpointSettings"
    IPAMConfig: EndpointIPAMConfig | None = None
    Links: list[str] | None = None
    Aliases: list[str] | None = None
    MacAddress: str | None = None
    DriverOpts: dict[str, str] | None = None
    # Operational data a client may echo back from inspect; accepted and ignored, as dockerd.
    NetworkID: str | None = None
    EndpointID: str | None = None
    Gateway: str | None = None
    IPAddress: str | None = None
    IPPrefixLen: int | None = None
    IPv6Gateway: str | None = None
    GlobalIPv6Address: str | None = None
    GlobalIPv6PrefixLen: int | None = None
    DNSNames: list[str] | None = None
    GwPriority: int | None = None

    def validate(self) -> None:
        ipam = self.IPAMConfig
        if ipam is not None:
            # Docker's texts (reference/docker-behavior.md, section 3).
            if ipam.IPv4Address and ip_version(ipam.IPv4Address) != 4:
                raise InvalidParameter(f"invalid IPv4 address: {shown(ipam.IPv4Address)}")
            if ipam.IPv6Address and ip_version(ipam.IPv6Address) != 6:
                raise InvalidParameter(f"invalid IPv6 address: {shown(ipam.IPv6Address)}")
            for addr in ipam.LinkLocalIPs or []:
                if not ip_version(addr):
                    raise InvalidParameter(f"invalid link-local IP address: {shown(addr)}")
        for alias in self.Aliases or []:
            try:
                check_alias(alias)
            except ValueError as exc:
                raise InvalidParameter(str(exc)) from None
        for link in self.Links or []:
            check_text("link", link)
        check_mac(self.MacAddress)
        check_map("driver option", self.DriverOpts)


class NetworkingConfig(Model):
    go_name = "network.NetworkingConfig"
    go_types = {"EndpointsConfig": "map[string]*network.EndpointSettings"}
    EndpointsConfig: dict[str, EndpointSettings | None] | None = None

    def validate(self) -> None:
        for name, ep in (self.EndpointsConfig or {}).items():
            check_text("network name", name)
            if ep is not None:
                ep.validate()


class IPAMConfig(Model):
    go_name = "network.IPAMConfig"
    Subnet: str | None = None
    IPRange: str | None = None
    Gateway: str | None = None
    AuxiliaryAddresses: dict[str, str] | None = None


class IPAM(Model):
    go_name = "network.IPAM"
    Driver: str | None = None
    Config: list[IPAMConfig] | None = None
    Options: dict[str, str] | None = None


_IPAM = IPAM


class ConfigReference(Model):
    go_name = "network.ConfigReference"
    Network: str | None = None


class NetworkCreate(Model):
    """POST /networks/create."""

    go_name = "network.CreateRequest"
    Name: str | None = None
    CheckDuplicate: bool | None = None
    Driver: str | None = None
    Scope: str | None = None
    EnableIPv4: bool | None = None
    EnableIPv6: bool | None = None
    IPAM: _IPAM | None = None
    Internal: bool | None = None
    Attachable: bool | None = None
    Ingress: bool | None = None
    ConfigOnly: bool | None = None
    ConfigFrom: ConfigReference | None = None
    Options: dict[str, str] | None = None
    Labels: dict[str, str] | None = None

    def validate(self) -> None:
        check_text("network name", self.Name)
        check_text("driver name", self.Driver)
        check_text("scope", self.Scope)
        check_map("driver option", self.Options)
        check_labels(self.Labels)
        ipam = self.IPAM
        if ipam is None:
            return
        check_text("IPAM driver name", ipam.Driver)
        check_map("IPAM option", ipam.Options)
        for cfg in ipam.Config or []:
            check_text("subnet", cfg.Subnet)
            check_text("IP range", cfg.IPRange)
            check_text("gateway", cfg.Gateway)
            check_map("auxiliary address", cfg.AuxiliaryAddresses)
            if cfg.Subnet:
                check_subnet(cfg.Subnet)

    def to_body(self) -> dict[str, object]:
        """The request as netcreate.resolve reads it: only the keys that were set."""
        out: dict[str, object] = {}
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None:
                out[name] = _plain(value)
        return out


def _plain(value: object) -> object:
    if isinstance(value, Model):
        return {
            k: _plain(getattr(value, k))
            for k in value.__struct_fields__
            if getattr(value, k) is not None
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_subnet(text: str) -> None:
    """Subnets no network can use: no address left, multicast, loopback, 0/8, broadcast.

    Docker's own texts where it has them (the IPv6 rules of its bridge driver, the
    IPAM's "no available addresses on this pool"); the same style for the IPv4 ranges it
    lets through only to fail later in the kernel.
    """
    try:
        addr, subnet = ipamconfig.parse_cidr(text)
    except ValueError as exc:
        raise InvalidParameter(f"Invalid subnet {shown(text)} : {exc}") from None
    if addr != subnet.network_address:
        # dockerd 25+ (ValidateIPAM); 20.10 took the network silently, which hid typos.
        raise InvalidParameter(
            f"invalid network config:\ninvalid subnet {addr}/{subnet.prefixlen}: "
            f"it should be {subnet}"
        )
    if subnet.num_addresses == 1:
        raise InvalidParameter(f"Invalid subnet {text} : no available addresses on this pool")
    if subnet.is_multicast:
        raise InvalidParameter(f"multicast subnet '{subnet}' is not allowed")
    if subnet.version == 4:
        for reserved, what in (
            (_LOOPBACK4, "the Loopback prefix"),
            (_THIS_NETWORK, "the reserved prefix"),
            (_BROADCAST, "the broadcast address"),
        ):
            if subnet.overlaps(reserved):
                raise InvalidParameter(f"'{subnet}' clashes with {what} '{reserved}'")
        return
    if subnet.overlaps(_MAPPED6):
        raise InvalidParameter(f"'{shown(text)}' is not a valid IPv6 subnet")
    if subnet != _LINK_LOCAL6 and subnet.overlaps(_LINK_LOCAL6):
        raise InvalidParameter(f"'{subnet}' clashes with the Link-Local prefix 'fe80::/64'")


class NetworkConnect(Model):
    """POST /networks/{id}/connect."""

    go_name = "network.ConnectOptions"
    Container: str | None = None
    EndpointConfig: EndpointSettings | None = None

    def validate(self) -> None:
        check_text("container name", self.Container)
        if self.EndpointConfig is not None:
            self.EndpointConfig.validate()


class NetworkDisconnect(Model):
    """POST /networks/{id}/disconnect."""

    go_name = "network.DisconnectOptions"
    Container: str | None = None
    Force: bool | None = None

    def validate(self) -> None:
        check_text("container name", self.Container)
