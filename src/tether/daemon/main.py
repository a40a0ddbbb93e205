"""tetherd: the tether daemon's command line."""

from __future__ import annotations

import argparse
import sys

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
    p.add_argument("--version", "-v", action="version", version=f"tetherd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from tether.daemon import logs
    from tether.daemon.app import Options, run
    from tether.errors import TetherError
    from tether.ipam.pools import DEFAULT_POOLS, parse_pool_flag

    logs.setup(args.debug)
    try:
        pools = [parse_pool_flag(p) for p in args.default_address_pool] or list(DEFAULT_POOLS)
    except TetherError as exc:
        print(f"tetherd: {exc.message}", file=sys.stderr)
        return 2
    return run(
        Options(
            root=args.root,
            exec_root=args.exec_root,
            debug=args.debug,
            default_pools=pools,
            resolv_conf=args.resolv_conf,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
