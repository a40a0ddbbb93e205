"""tether network create|ls|inspect|rm|prune|connect|disconnect|rotate-key."""

from __future__ import annotations

import sys

from tether import netmodes
from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.cli.output import inspect_each, parse_filters, print_listing
from tether.cli.views import NETWORK_DEFAULT, NETWORK_HEADERS, network_rows
from tether.client import ApiError
from tether.textcheck import check_alias, check_label_arg

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def parse_map(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        out[key] = val if sep else ""
    return out


def run_create(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    configs: list[dict[str, Any]] = []
    if o["subnet"] or o["ip_range"] or o["gateway"] or o["aux_address"]:
        # Only then: ipaddress and typing cost `network create` ~25 ms of start-up here.
        from tether.errors import TetherError
        from tether.ipam.config import consolidate, parse_aux

        try:
            configs = consolidate(
                o["subnet"], o["ip_range"], o["gateway"], parse_aux(o["aux_address"])
            )
        except TetherError as exc:
            raise CliError(exc.message) from None
    body = {
        "Name": args[0],
        "CheckDuplicate": True,
        "Driver": o["driver"],
        "Scope": o["scope"] or "",
        "EnableIPv6": o["ipv6"],
        "IPAM": {
            "Driver": o["ipam_driver"],
            "Config": configs,
            "Options": parse_map(o["ipam_opt"], "ipam-opt"),
        },
        "Internal": o["internal"],
        "Attachable": o["attachable"],
        "Ingress": o["ingress"],
        "ConfigOnly": o["config_only"],
        "Options": parse_map(o["opt"], "opt"),
        "Labels": parse_map(o["label"], "label"),
    }
    try:
        resp = ctx.call("POST", "/networks/create", body=body)
    except ApiError as exc:
        raise api_error(exc) from None
    print(resp["Id"])
    return 0


def run_ls(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    filters = parse_filters(o["filter"])
    try:
        nets = ctx.call("GET", "/networks", query={"filters": filters} if filters else None)
    except ApiError as exc:
        raise api_error(exc) from None
    print_listing(o, network_rows(nets, o["no_trunc"]), NETWORK_HEADERS, NETWORK_DEFAULT, "ID")
    return 0


def run_inspect(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    query = {"verbose": "1"} if o["verbose"] else None
    fmt = o["format"] or ""
    inspect_each(
        "" if fmt == "json" else fmt,
        args,
        lambda name: ctx.call("GET", f"/networks/{_q(name)}", query=query),
    )
    return 0


def run_rm(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    status = 0
    for name in args:
        try:
            ctx.call("DELETE", f"/networks/{_q(name)}")
        except ApiError as exc:
            if o["force"] and exc.status == 404:
                continue
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            status = 1
            continue
        print(name)
    if status:
        raise CliError("exit status 1", status)
    return 0


def run_prune(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    filters: dict[str, list[str]] = {}
    for f in o["filter"]:
        key, _, val = f.partition("=")
        filters.setdefault(key, []).append(val)
    if not o["force"]:
        sys.stdout.write(
            "WARNING! This will remove all custom networks not used by at least one container.\n"
            "Are you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    try:
        resp = ctx.call("POST", "/networks/prune", query={"filters": filters} if filters else None)
    except ApiError as exc:
        raise api_error(exc) from None
    deleted = resp.get("NetworksDeleted") or []
    if deleted:
        sys.stdout.write("Deleted Networks:\n" + "".join(n + "\n" for n in deleted))
    return 0


def run_connect(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    endpoint: dict[str, Any] = {}
    ipam: dict[str, Any] = {}
    if o["ip"]:
        ipam["IPv4Address"] = o["ip"]
    if o["ip6"]:
        ipam["IPv6Address"] = o["ip6"]
    if o["link_local_ip"]:
        ipam["LinkLocalIPs"] = o["link_local_ip"]
    if ipam:
        endpoint["IPAMConfig"] = ipam
    if o["alias"]:
        endpoint["Aliases"] = o["alias"]
    if o["driver_opt"]:
        endpoint["DriverOpts"] = parse_map(o["driver_opt"], "driver-opt")
    try:
        ctx.call(
            "POST",
            f"/networks/{_q(args[0])}/connect",
            body={"Container": args[1], "EndpointConfig": endpoint},
        )
    except ApiError as exc:
        raise api_error(exc) from None
    return 0


def run_disconnect(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    try:
        ctx.call(
            "POST",
            f"/networks/{_q(args[0])}/disconnect",
            body={"Container": args[1], "Force": o["force"]},
        )
    except ApiError as exc:
        raise api_error(exc) from None
    return 0


def run_rotate_key(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    """A new key for an encrypted overlay now (tether's addition: Docker rotates only on
    its 12-hour schedule)."""
    try:
        reply = ctx.call("POST", f"/networks/{_q(args[0])}/rotate-key")
    except ApiError as exc:
        raise api_error(exc) from None
    print(f"{args[0]}: key epoch {reply['Epoch']}")
    return 0


def _q(text: str) -> str:
    from tether.client import quote

    return quote(text)


CREATE = Command(
    "network create",
    "[OPTIONS] NETWORK",
    "Create a network",
    [
        Flag("attachable", kind="bool", help="Enable manual container attachment"),
        Flag(
            "aux-address",
            kind="list",
            help="Auxiliary IPv4 or IPv6 addresses used by Network driver",
            metavar="map",
        ),
        Flag("config-from", help="The network from which to copy the configuration"),
        Flag("config-only", kind="bool", help="Create a configuration only network"),
        Flag(
            "driver",
            "d",
            default=netmodes.DEFAULT_DRIVER,
            help=f'Driver to manage the Network (default "{netmodes.DEFAULT_DRIVER}")',
        ),
        Flag(
            "gateway",
            kind="list",
            metavar="strings",
            help="IPv4 or IPv6 Gateway for the master subnet",
        ),
        Flag("ingress", kind="bool", help="Create swarm routing-mesh network"),
        Flag("internal", kind="bool", help="Restrict external access to the network"),
        Flag(
            "ip-range",
            kind="list",
            metavar="strings",
            help="Allocate container ip from a sub-range",
        ),
        Flag(
            "ipam-driver",
            default="default",
            help='IP Address Management Driver (default "default")',
        ),
        Flag("ipam-opt", kind="list", metavar="map", help="Set IPAM driver specific options"),
        Flag("ipv6", kind="bool", help="Enable IPv6 networking"),
        Flag("label", kind="list", help="Set metadata on a network", check=check_label_arg),
        Flag("opt", "o", kind="list", metavar="map", help="Set driver specific options"),
        Flag("scope", help="Control the network's scope"),
        Flag(
            "subnet",
            kind="list",
            metavar="strings",
            help="Subnet in CIDR format that represents a network segment",
        ),
    ],
    min_args=1,
    max_args=1,
    handler=run_create,
)

LS = Command(
    "network ls",
    "[OPTIONS]",
    "List networks",
    [
        Flag(
            "filter",
            "f",
            kind="list",
            metavar="filter",
            help="Provide filter values (e.g. 'driver=bridge')",
        ),
        Flag("format", help="Pretty-print networks using a Go template"),
        Flag("no-trunc", kind="bool", help="Do not truncate the output"),
        Flag("quiet", "q", kind="bool", help="Only display network IDs"),
    ],
    max_args=0,
    handler=run_ls,
    aliases=("network ls", "network list"),
)

INSPECT = Command(
    "network inspect",
    "[OPTIONS] NETWORK [NETWORK...]",
    "Display detailed information on one or more networks",
    [
        Flag("format", "f", help="Format output using a custom template"),
        Flag("verbose", "v", kind="bool", help="Verbose output for diagnostics"),
    ],
    min_args=1,
    handler=run_inspect,
)

RM = Command(
    "network rm",
    "NETWORK [NETWORK...]",
    "Remove one or more networks",
    [Flag("force", "f", kind="bool", help="Do not error if the network does not exist")],
    min_args=1,
    handler=run_rm,
    aliases=("network rm", "network remove"),
)

PRUNE = Command(
    "network prune",
    "[OPTIONS]",
    "Remove all unused networks",
    [
        Flag(
            "filter",
            kind="list",
            metavar="filter",
            help="Provide filter values (e.g. 'until=<timestamp>')",
        ),
        Flag("force", "f", kind="bool", help="Do not prompt for confirmation"),
    ],
    max_args=0,
    handler=run_prune,
)

CONNECT = Command(
    "network connect",
    "[OPTIONS] NETWORK CONTAINER",
    "Connect a container to a network",
    [
        Flag(
            "alias",
            kind="list",
            metavar="strings",
            help="Add network-scoped alias for the container",
            check=check_alias,
        ),
        Flag("driver-opt", kind="list", metavar="strings", help="driver options for the network"),
        Flag("ip", help='IPv4 address (e.g., "172.30.100.104")'),
        Flag("ip6", help='IPv6 address (e.g., "2001:db8::33")'),
        Flag("link", kind="list", metavar="list", help="Add link to another container"),
        Flag(
            "link-local-ip",
            kind="list",
            metavar="strings",
            help="Add a link-local address for the container",
        ),
    ],
    min_args=2,
    max_args=2,
    handler=run_connect,
)

DISCONNECT = Command(
    "network disconnect",
    "[OPTIONS] NETWORK CONTAINER",
    "Disconnect a container from a network",
    [Flag("force", "f", kind="bool", help="Force the container to disconnect from a network")],
    min_args=2,
    max_args=2,
    handler=run_disconnect,
)

ROTATE_KEY = Command(
    "network rotate-key",
    "NETWORK",
    "Give an encrypted overlay network a new key now",
    [],
    min_args=1,
    max_args=1,
    handler=run_rotate_key,
)

COMMANDS = {
    "create": CREATE,
    "ls": LS,
    "list": LS,
    "inspect": INSPECT,
    "rm": RM,
    "remove": RM,
    "prune": PRUNE,
    "connect": CONNECT,
    "disconnect": DISCONNECT,
    "rotate-key": ROTATE_KEY,
}
