"""The cluster demo: one overlay network across three tether nodes, on this one machine.

Three "machines" (network namespaces on an underlay bridge, examples/onebox.py) each run an
etcd member and a tetherd started with --cluster-store/--cluster-advertise.  The demo makes
an overlay network on node1, starts a web server on every node, shows that every container
reaches every other by name (through its own node's 127.0.0.11) and by address, and shows
what tether programmed for that (VXLAN FDB and neighbour entries, the keys in etcd).  Then it
removes everything it made, also on Ctrl-C or a failure; --keep leaves the cluster up and
says how to reach each node, --down removes clusters left up.

    ./run demo --cluster [--keep]        (or: .venv/bin/python examples/cluster_demo.py)
    ./run demo --cluster --down
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from types import FrameType

from onebox import NETNS_DIR, PY, RUN_PREFIX, Node, OneBox, SetupError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NET = "app-net"
PREFIX = "/tether"  # tetherd's default key prefix (kv.path)

COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
BOLD, DIM, GREEN, RED, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if COLOR else ("",) * 5
)


def say(text: str = "") -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # The reader (`| head`) is gone: go on quietly, so the teardown still runs to its end.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def section(title: str) -> None:
    say(f"\n{BOLD}{GREEN}== {title}{RESET}")


def note(text: str) -> None:
    say(f"{DIM}  {text}{RESET}")


def _q(a: str) -> str:
    return a if a and all(c.isalnum() or c in "-_./:=,@" for c in a) else "'" + a + "'"


def cli(node: Node, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """tether against one node's daemon, quietly."""
    return subprocess.run(
        [PY, "-m", "tether.cli.main", "-H", node.host, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def tether(node: Node, *args: str) -> str:
    """`tether ...` on a node, printed as a user would type it there, with its output."""
    say(f"{BOLD}{node.name}$ tether {' '.join(_q(a) for a in args)}{RESET}")
    r = cli(node, *args)
    out = r.stdout + r.stderr
    if out:
        say(out.rstrip("\n"))
    if r.returncode != 0:
        raise DemoFailed(f"tether {' '.join(args)} on {node.name} failed")
    return r.stdout


def on_node(
    node: Node, cmd: str, show: str | None = None, edit: Callable[[str], str] = lambda s: s
) -> str:
    """A shell command in a node's network namespace (what an admin would run on that
    machine), printed as `show` (default: cmd) with its output passed through `edit`."""
    say(f"{BOLD}{node.name}# {show or cmd}{RESET}")
    r = subprocess.run(
        ["nsenter", f"--net={NETNS_DIR}/{node.netns}", "sh", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = edit(r.stdout + r.stderr).rstrip("\n")
    if out:
        say(out)
    return r.stdout


class DemoFailed(Exception):
    pass


def wait_for(what: str, fn: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise DemoFailed(f"timed out after {timeout} s waiting for {what}")


def has_net(node: Node, present: bool = True) -> bool:
    names = cli(node, "network", "ls", "--format", "{{.Name}}").stdout.split()
    return (NET in names) == present


def short_ids(text: str) -> str:
    """64-hex ids cut to 12 characters, as docker prints them."""
    return re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1", text)


def vxlan_lines(text: str) -> str:
    """`ip -d link show` of a VXLAN device, cut to what matters here: its MTU and bridge,
    and the VXLAN parameters (the bridge port's twenty settings left out)."""
    out = []
    for line in text.splitlines():
        if " mtu " in line:
            out.append(
                line.split(" qdisc ")[0]
                + " ... "
                + line[line.index("master ") :].split(" state ")[0]
            )
        elif line.strip().startswith("vxlan id"):
            out.append(line.split(" ttl ")[0] + " ...")
    return "\n".join(out)


def page(i: int) -> str:
    return f"web{i} on node{i}"


# -- the scenario -------------------------------------------------------------------------


def show_cluster(box: OneBox, started: float) -> None:
    section("Three machines on this one: an underlay bridge and three network namespaces")
    say(f"  underlay  {box.underlay:<16} bridge br0 10.99.0.1/24: the LAN the machines share")
    for node in box.nodes:
        say(
            f"  {node.name:<9} {node.netns:<16} eth0 {node.ip}: etcd member etcd{node.index}, tetherd"
        )
    note(f"each node's --root and --exec-root are under {box.dir}")
    note(f"etcd: 3 members (data in {box.etcd_root}), tetherds up, busybox imported on each: "
         f"{time.monotonic() - started:.1f} s")  # fmt: skip
    say("  node1's tetherd, as a real machine would start it:")
    args = box.tetherd_args(box.nodes[0])
    cluster_args = args[args.index("--cluster-store") :]
    say(f"    {BOLD}tetherd {' '.join(cluster_args)}{RESET}")


def scenario(box: OneBox, started: float, keep: bool) -> bool:
    n1, n2, n3 = box.nodes
    show_cluster(box, started)

    section("The nodes: each tetherd registered itself in etcd, under a lease")
    tether(n1, "node", "ls")
    note("'*' is the node you asked; a node whose lease runs out (10 s) is Down for all")

    section("One network for the whole cluster: made on node1, there on every node")
    tether(n1, "network", "create", "-d", "overlay", "--attachable", NET)
    for node in (n2, n3):
        wait_for(f"{NET} on {node.name}", partial(has_net, node))
    tether(n3, "network", "ls", "--filter", "driver=overlay")
    tether(
        n2, "network", "inspect", NET, "--format", "{{.Scope}} {{(index .IPAM.Config 0).Subnet}}"
    )
    note("the subnet, and the VXLAN id shown below, were claimed in one etcd transaction")

    section("A web server on each node, on the overlay")
    for i, node in enumerate(box.nodes, 1):
        script = f"echo {page(i)} > /www/index.html && exec httpd -f -p 80 -h /www"
        tether(node, "run", "-d", "--name", f"web{i}", "--network", NET, "busybox",
               "sh", "-c", script)  # fmt: skip
    tether(n1, "exec", "web1", "nslookup", "-type=a", "web3")
    note("node1's 127.0.0.11 answers for a container on node3: it follows the endpoints in etcd")

    section("Reachability across nodes: by name, then by address")
    ips = [
        cli(node, "inspect", "--format",
            f"{{{{(index .NetworkSettings.Networks \"{NET}\").IPAddress}}}}", f"web{i}")
        .stdout.strip()
        for i, node in enumerate(box.nodes, 1)
    ]  # fmt: skip
    names = [f"web{i}" for i in range(1, 4)]
    by_name = matrix(box, names)
    by_addr = matrix(box, ips)
    render("by name", names, by_name)
    render("by address", ips, by_addr)
    total = len(by_name)
    ok_name = sum(v == "ok" for v in by_name.values())
    ok_addr = sum(v == "ok" for v in by_addr.values())
    say(
        f"  {ok_name} of {total} cross-node pairs answered by name, {ok_addr} of {total} by address"
    )
    note("each cell: `tether exec ROW wget -qO- http://COLUMN/` on ROW's node returned "
         "COLUMN's own page")  # fmt: skip

    section("What tether programmed on node1 for the containers on node2 and node3")
    net_id = cli(n1, "network", "inspect", NET, "--format", "{{.Id}}").stdout.strip()
    vx = f"vx-{net_id[:12]}"
    on_node(n1, f"ip -d link show dev {vx}", edit=vxlan_lines)
    note("on bridge ov-<id>: MTU = the underlay's 1500 - 50; no learning, no flooding: "
         "tether programs every entry from etcd")  # fmt: skip
    on_node(n1, f"bridge fdb show dev {vx}")
    note(f"dst: a remote container's MAC -> its node's VTEP ({n2.ip}, {n3.ip}); "
         "master: the bridge's own table")  # fmt: skip
    on_node(n1, f"ip neigh show dev {vx}")
    note("its address -> MAC, so node1's containers need no ARP across the underlay")
    on_node(n1, "nft list chain inet tether guard | grep 4789", edit=str.strip)
    note("VXLAN is taken only from the cluster's nodes (the set vteps follows etcd)")
    keys_cmd = f"etcdctl --endpoints={n1.etcd_url} get {PREFIX}/ --prefix --keys-only"
    on_node(n1, keys_cmd + " | grep .", show=keys_cmd, edit=short_ids)
    note("(ids cut to 12 characters) an endpoint's keys, endpoints/ and its ipam/ address, "
         "live on its node's lease: a dead node's endpoints vanish by themselves")  # fmt: skip

    if keep:
        return ok_name == ok_addr == total

    section("Take it down: containers and network first (their keys leave etcd)")
    for i, node in enumerate(box.nodes, 1):
        tether(node, "rm", "-f", f"web{i}")
    tether(n1, "network", "rm", NET)
    for node in (n2, n3):
        wait_for(f"{NET} gone on {node.name}", partial(has_net, node, False))
    on_node(n1, keys_cmd + " | grep .", show=keys_cmd, edit=short_ids)
    note("only the nodes' registrations are left; they go with the daemons")
    return ok_name == ok_addr == total


def matrix(box: OneBox, targets: list[str]) -> dict[tuple[int, int], str]:
    """(client i, server j) -> "ok" if web<i> fetched web<j>'s page from targets[j]."""
    cells = {}
    for i, node in enumerate(box.nodes):
        for j, target in enumerate(targets):
            if i == j:
                continue
            r = cli(
                node, "exec", f"web{i + 1}", "timeout", "3", "wget", "-qO-", f"http://{target}/"
            )
            got = r.stdout.strip()
            cells[i, j] = "ok" if got == page(j + 1) else ("wrong page" if got else "no answer")
    return cells


def render(title: str, columns: list[str], cells: dict[tuple[int, int], str]) -> None:
    width = max(12, *(len(c) + 2 for c in columns))
    say((f"  {title:<12}" + "".join(f"{c:<{width}}" for c in columns)).rstrip())
    for i in range(len(columns)):
        row = ""
        for j in range(len(columns)):
            v = "-" if i == j else cells[i, j]
            colored = f"{GREEN if v == 'ok' else RED}{v}{RESET}" if v != "-" else v
            row += colored + " " * (width - len(v))
        say(f"  {f'web{i + 1}':<12}{row.rstrip()}")


# -- running it -----------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def down(run_dir: str) -> int:
    """Take down the demo clusters left up (all of them, or the one in run_dir)."""
    found = OneBox.leftovers()
    if run_dir:
        found = [f for f in found if os.path.dirname(f) == os.path.abspath(run_dir)]
    if not found:
        say("no demo cluster is up")
        return 0
    for path in found:
        try:
            box = OneBox.load(path)
        except (OSError, ValueError, TypeError) as exc:
            say(f"{path}: unreadable ({exc}); left alone")
            continue
        say(f"taking down the demo cluster in {box.dir}")
        box.teardown()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--keep", action="store_true", help="leave the cluster up at the end")
    p.add_argument(
        "--down",
        nargs="?",
        const="",
        metavar="RUN_DIR",
        help="take down the demo clusters left up (or only the one in RUN_DIR)",
    )
    args = p.parse_args()
    if os.geteuid() != 0:
        print("the cluster demo needs root (network namespaces)", file=sys.stderr)
        return 1
    if args.down is not None:
        return down(args.down)
    missing = [b for b in ("etcd", "etcdctl", "nsenter", "ip", "bridge") if not shutil.which(b)]
    if missing:
        print(f"missing: {', '.join(missing)} (./run demo --cluster installs etcd-server "
              "and etcd-client)", file=sys.stderr)  # fmt: skip
        return 1
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = time.monotonic()
    box = OneBox()
    left_up = False
    rc = 1
    try:
        run_dir = os.path.join(tempfile.gettempdir(), f"{RUN_PREFIX}{box.token}-...")
        say(f"{DIM}building the cluster (run directory: {run_dir}){RESET}")
        box.start()
        ok = scenario(box, started, args.keep)
        rc = 0 if ok else 1
        left_up = args.keep
    except KeyboardInterrupt:
        say(f"\n{RED}interrupted{RESET}")
        rc = 130
    except (SetupError, DemoFailed, subprocess.TimeoutExpired) as exc:
        say(f"\n{RED}failed: {exc}{RESET}")
    except Exception as exc:  # anything else: still one line, and still the teardown
        say(f"\n{RED}failed: {type(exc).__name__}: {exc}{RESET}")
    finally:
        if left_up:
            say(f"\n{BOLD}The cluster is still up.{RESET} Each node's tetherd:")
            for node in box.nodes:
                say(f"  TETHER_HOST={node.host} tether ps")
            say(f"  a shell on node1's network: nsenter --net={NETNS_DIR}/{box.nodes[0].netns} sh")
            say(f"  etcd: nsenter --net={NETNS_DIR}/{box.nodes[0].netns} "
                f"etcdctl --endpoints={box.etcd_endpoints} get {PREFIX}/ --prefix --keys-only")  # fmt: skip
            say("Take it down: ./run demo --cluster --down")
        else:
            # The teardown runs to its end: a second Ctrl-C would leave half a cluster.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            t = time.monotonic()
            box.teardown()
            say(
                f"{DIM}daemons, etcd, namespaces and files removed in {time.monotonic() - t:.1f} s{RESET}"
            )
    say(f"{DIM}the demo took {time.monotonic() - started:.1f} s{RESET}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
