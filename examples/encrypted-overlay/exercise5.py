"""Exercise 5 on the cluster demo's three nodes: an encrypted overlay, two services on it, and
a capture of the underlay that shows only ciphertext (a plain overlay beside it, for contrast,
shows its page in the clear).

    .venv/bin/python examples/encrypted-overlay/exercise5.py [--keep]

It builds the same one-machine cluster as `./run demo --cluster` (examples/onebox.py: three
node namespaces on an underlay bridge, a three-member etcd, a tetherd per node), then:

1. node1: `tether network create -d overlay --opt encrypted --attachable secure-net`, and a
   plain overlay `plain-net`;
2. a `vault` web server on node1 and a `client` on node2, on both networks, the vault's page
   carrying a marker string;
3. tcpdump -A on the underlay (node1's port on the bridge) while the client fetches the page
   over each network: the marker shows over `plain-net` (VXLAN, UDP 4789), never over
   `secure-net` (tether-crypt, UDP 4800);
4. what a node holds: its TAP port instead of a VXLAN device, the key epoch and who it is
   sealed for, the firewall rules; then `tether network rotate-key secure-net`.

Everything is removed at the end (also on Ctrl-C or a failure) unless --keep; the README
beside this file does the same by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cluster_demo import (  # noqa: E402
    BOLD,
    DIM,
    GREEN,
    RED,
    RESET,
    DemoFailed,
    cli,
    note,
    on_node,
    say,
    section,
    tether,
    wait_for,
)
from onebox import NETNS_DIR, Node, OneBox, SetupError  # noqa: E402

MARKER = "MARKER-" + secrets.token_hex(4)
SECURE, PLAIN = "secure-net", "plain-net"


def fetch(node: Node, network_alias: str) -> str:
    r = cli(node, "exec", "client", "timeout", "3", "wget", "-qO-", f"http://{network_alias}/")
    return r.stdout.strip()


def capture(box: OneBox, port: int, node: Node, target: str) -> tuple[str, int]:
    """tcpdump -A of UDP `port` on node1's underlay port while the client fetches `target`
    three times; returns tcpdump's output and how many packets it printed."""
    u = box.underlay
    cmd = ["nsenter", f"--net={NETNS_DIR}/{u}", "timeout", "20", "tcpdump", "-i", "n1", "-n",
           "-A", "-l", "--immediate-mode", "-s", "300", f"udp port {port}"]  # fmt: skip
    say(f"{BOLD}underlay# tcpdump -i n1 -n -A udp port {port}{RESET}   (node1's port on br0)")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    p.stderr.readline()  # "listening on n1": capturing from here on
    for _ in range(3):
        got = fetch(node, target)
        if MARKER not in got:
            raise DemoFailed(f"the client did not get the vault's page from {target}: {got!r}")
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    packets = [line for line in out.splitlines() if " IP " in line]
    shown = 0
    for line in out.splitlines():
        if " IP " in line:
            shown += 1
            if shown > 3:
                break
        if shown:
            say(f"  {line[:100]}")
    say(f"  ... {len(packets)} packets")
    return out, len(packets)


def scenario(box: OneBox, keep: bool) -> bool:
    n1, n2, _n3 = box.nodes
    section("An encrypted overlay (and a plain one beside it), made on node1")
    tether(n1, "network", "create", "-d", "overlay", "--opt", "encrypted", "--attachable", SECURE)
    tether(n1, "network", "create", "-d", "overlay", "--attachable", PLAIN)
    for node in box.nodes[1:]:
        for net in (SECURE, PLAIN):
            wait_for(
                f"{net} on {node.name}",
                lambda node=node, net=net: (
                    net in cli(node, "network", "ls", "--format", "{{.Name}}").stdout.split()
                ),
            )
    tether(n2, "network", "ls", "--filter", "driver=overlay")

    section("Two services: a vault on node1, a client on node2, on both networks")
    page = f"account 42 balance 1000000 {MARKER}"
    script = f"echo '{page}' > /www/index.html && exec httpd -f -p 80 -h /www"
    tether(n1, "run", "-d", "--name", "vault", "--network", SECURE, "--network-alias", "vault-sec",
           "busybox", "sh", "-c", script)  # fmt: skip
    tether(n1, "network", "connect", "--alias", "vault-plain", PLAIN, "vault")
    tether(n2, "run", "-d", "--name", "client", "--network", SECURE, "busybox", "sleep", "3600")
    tether(n2, "network", "connect", PLAIN, "client")
    wait_for("the vault over secure-net", lambda: MARKER in fetch(n2, "vault-sec"), 20)
    wait_for("the vault over plain-net", lambda: MARKER in fetch(n2, "vault-plain"), 20)
    tether(n2, "exec", "client", "wget", "-qO-", "http://vault-sec/")

    section("The underlay while the client fetches the page over secure-net")
    out_sec, n_sec = capture(box, 4800, n2, "vault-sec")
    sec_leak = MARKER in out_sec
    section("...and over plain-net (VXLAN in the clear)")
    out_plain, n_plain = capture(box, 4789, n2, "vault-plain")
    plain_leak = MARKER in out_plain
    say("")
    say(f"  marker seen on the underlay: secure-net {_yn(sec_leak)} ({n_sec} packets), "
        f"plain-net {_yn(plain_leak)} ({n_plain} packets)")  # fmt: skip
    note("secure-net's frames cross as tether-crypt datagrams: a 28-byte header, then AES-256-GCM")

    section("What node1 holds for secure-net")
    net_id = cli(n1, "network", "inspect", SECURE, "--format", "{{.Id}}").stdout.strip()
    on_node(n1, f"ip -br link show master ov-{net_id[:12]}")
    note("the bridge's ports: the containers' veths and ex-<id>, the TAP of tether-crypt "
         "(no VXLAN device: nothing of this network leaves in the clear)")  # fmt: skip
    enc = json.loads(
        cli(n1, "network", "inspect", SECURE, "--format", "{{json .Encryption}}").stdout
    )
    say(f"  key epoch {enc['KeyEpoch']}, made by {enc['KeyCreatedBy']}, sealed for "
        f"{', '.join(enc['KeyHolders'])}; next rotation {enc['NextRotation']}")  # fmt: skip
    counters = (enc.get("DataPath") or {}).get("Counters", {})
    say("  data path: " + ", ".join(f"{k}={v}" for k, v in counters.items() if v))
    on_node(n1, "nft list table inet tether | grep -E 'udp dport (4789|4800)'")
    note("UDP 4800 only from the cluster's nodes; plain VXLAN carrying secure-net's id "
         "dropped both ways")  # fmt: skip

    section("A new key now (it also changes every 12 h by itself)")
    tether(n1, "network", "rotate-key", SECURE)
    wait_for("the client still reads the vault", lambda: MARKER in fetch(n2, "vault-sec"), 20)
    tether(n2, "network", "inspect", SECURE, "--format",
           "{{.Encryption.KeyEpoch}} {{.Encryption.HeldEpochs}} {{.Encryption.SendEpoch}}")  # fmt: skip
    note("the epoch, the epochs node2 accepts, the one it sends with: senders switch once "
         "every node holds the new key; the old one is still accepted for 30 s")  # fmt: skip

    ok = not sec_leak and plain_leak and n_sec > 0
    if not keep:
        section("Take it down")
        tether(n2, "rm", "-f", "client")
        tether(n1, "rm", "-f", "vault")
        tether(n1, "network", "rm", SECURE, PLAIN)
    return ok


def _log(node: Node) -> str:
    try:
        with open(os.path.join(node.dir, "tetherd.log"), errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _yn(seen: bool) -> str:
    return f"{RED}yes{RESET}" if seen else f"{GREEN}no{RESET}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--keep", action="store_true", help="leave the cluster up at the end")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("the exercise needs root (network namespaces)", file=sys.stderr)
        return 1

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    box = OneBox()
    started = time.monotonic()
    rc, left_up = 1, False
    try:
        say(f"{DIM}building the cluster (three nodes, etcd, a tetherd each){RESET}")
        box.start()
        say(f"{DIM}run directory: {box.dir}{RESET}")
        rc = 0 if scenario(box, args.keep) else 1
        left_up = args.keep
    except KeyboardInterrupt:
        say(f"\n{RED}interrupted{RESET}")
        rc = 130
    except (SetupError, DemoFailed, subprocess.TimeoutExpired) as exc:
        say(f"\n{RED}failed: {exc}{RESET}")
        for node in box.nodes:  # what the daemons said, before they go with the teardown
            errors = [
                line
                for line in _log(node).splitlines()
                if "level=error" in line or "Traceback" in line or line.startswith("  ")
            ]
            if errors:
                say(f"{DIM}{node.name}'s tetherd log:\n" + "\n".join(errors[-30:]) + RESET)
    except Exception as exc:  # still one line, and still the teardown
        say(f"\n{RED}failed: {type(exc).__name__}: {exc}{RESET}")
    finally:
        if left_up:
            say(f"\n{BOLD}The cluster is still up.{RESET}")
            for node in box.nodes:
                say(f"  TETHER_HOST={node.host} tether ps")
            say(f"  the underlay: nsenter --net={NETNS_DIR}/{box.underlay} tcpdump -i n1 -n -A "
                "udp port 4800")  # fmt: skip
            say("Take it down: ./run demo --cluster --down")
        else:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            box.teardown()
    say(f"{DIM}took {time.monotonic() - started:.1f} s{RESET}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
