"""tetherd: the tether daemon's command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tether import __version__


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tetherd", description="tether daemon")
    p.add_argument("--root", default="/var/lib/tether", help="state directory")
    p.add_argument(
        "--exec-root", default="/run/tether", help="runtime directory (API socket, netns files)"
    )
    p.add_argument("--debug", "-D", action="store_true", help="debug logging")
    p.add_argument(
        "--default-address-pool",
        action="append",
        default=[],
        metavar="base=CIDR,size=N",
        help="default address pool for networks without --subnet (repeatable)",
    )
    p.add_argument(
        "--resolv-conf",
        default="/etc/resolv.conf",
        help="resolv.conf whose nameservers containers use upstream (default /etc/resolv.conf)",
    )
    r = p.add_argument_group("registries")
    r.add_argument(
        "--registry-mirror",
        action="append",
        default=[],
        metavar="URL",
        help="a mirror of docker.io to pull from first (repeatable)",
    )
    r.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]|CIDR",
        help="a registry reached without TLS verification, or over plain HTTP (repeatable; "
        "127.0.0.0/8 always is)",
    )
    r.add_argument(
        "--block-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a registry never contacted, its mirrors still are (repeatable; docker.io: "
        "pull Docker Hub's names only through --registry-mirror)",
    )
    r.add_argument(
        "--registry-certs-dir",
        default="/etc/tether/certs.d",
        metavar="DIR",
        help="CA certificates per registry: DIR/HOST:PORT/*.crt (default /etc/tether/certs.d)",
    )
    g = p.add_argument_group("cluster (multi-host: global networks, the overlay driver)")
    g.add_argument(
        "--cluster-store",
        default="",
        metavar="etcd://HOST:PORT[,HOST:PORT...]",
        help="the etcd cluster that holds the cluster's state",
    )
    g.add_argument(
        "--cluster-advertise",
        default="",
        metavar="IP|IFACE[:PORT]",
        help="the address other nodes reach this one at (its VXLAN tunnel endpoint)",
    )
    g.add_argument(
        "--cluster-store-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kv.cacertfile, kv.certfile, kv.keyfile (TLS), kv.path (key prefix, default "
        "/tether), discovery.ttl (node lease, default 10s)",
    )
    g.add_argument("--node-name", default="", help="this node's name (default: the host name)")
    g.add_argument(
        "--data-path-port",
        type=int,
        default=4789,
        metavar="PORT",
        help="UDP port of the overlay's VXLAN traffic (default 4789)",
    )
    g.add_argument(
        "--cluster-node-port",
        type=int,
        default=7946,
        metavar="PORT",
        help="TCP port on the advertise address where other nodes read this node's task "
        "logs (default 7946; 0: off)",
    )
    g.add_argument(
        "--encrypted-data-port",
        type=int,
        default=0,
        metavar="PORT",
        help="UDP port of encrypted overlays' traffic (default 4800)",
    )
    g.add_argument(
        "--encryption-key-rotation",
        default="12h",
        metavar="DURATION",
        help="how often encrypted overlays get a new key (default 12h)",
    )
    p.add_argument(
        "--metrics-addr",
        default="",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (unauthenticated, as "
        "Docker's: prefer 127.0.0.1)",
    )
    p.add_argument("--version", "-v", action="version", version=f"tetherd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from tether.daemon import logs
    from tether.daemon.app import Options, run
    from tether.errors import TetherError
    from tether.ipam.pools import DEFAULT_POOLS, parse_pool_flag

    logs.setup(args.debug)
    cluster = None
    try:
        pools = [parse_pool_flag(p) for p in args.default_address_pool] or list(DEFAULT_POOLS)
        registry = _registry_options(args)
        if args.cluster_store:
            cluster = _cluster_options(args)
        elif args.cluster_advertise or args.cluster_store_opt:
            print(
                "tetherd: --cluster-advertise and --cluster-store-opt need --cluster-store",
                file=sys.stderr,
            )
            return 2
    except TetherError as exc:
        print(f"tetherd: {exc.message}", file=sys.stderr)
        return 2
    if args.metrics_addr:
        from tether.metrics import parse_addr

        try:
            parse_addr(args.metrics_addr)
        except ValueError as exc:
            print(f"tetherd: {exc}", file=sys.stderr)
            return 2
    return run(
        Options(
            root=args.root,
            exec_root=args.exec_root,
            debug=args.debug,
            default_pools=pools,
            resolv_conf=args.resolv_conf,
            cluster=cluster,
            registry=registry,
            metrics_addr=args.metrics_addr,
        )
    )


def _registry_options(args: argparse.Namespace) -> Any:
    from tether.images.registry import (
        RegistryOptions,
        check_blocked,
        check_insecure,
        check_mirror,
    )

    return RegistryOptions(
        mirrors=[check_mirror(m) for m in args.registry_mirror],
        insecure=[check_insecure(i) for i in args.insecure_registry],
        certs_dir=args.registry_certs_dir,
        blocked=[check_blocked(b) for b in args.block_registry],
    )


def _cluster_options(args: argparse.Namespace) -> Any:
    """The cluster flags, checked (an interface name is read from this namespace)."""
    from tether.cluster.config import build
    from tether.kernel.rtdump import Dumper

    dumper = Dumper()
    try:
        names = {link.index: link.name for link in dumper.links()}
        by_iface: dict[str, str] = {}
        for a in dumper.addresses():
            if ":" not in a.cidr and names.get(a.index) not in by_iface:
                by_iface.setdefault(names.get(a.index, ""), a.cidr.split("/")[0])
    finally:
        dumper.close()
    from tether.cluster.config import set_encryption

    opts = build(
        args.cluster_store,
        args.cluster_advertise,
        args.node_name,
        args.cluster_store_opt,
        args.data_path_port,
        by_iface,
        args.cluster_node_port,
    )
    set_encryption(opts, args.encrypted_data_port, args.encryption_key_rotation)
    return opts


if __name__ == "__main__":
    sys.exit(main())
