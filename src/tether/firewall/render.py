"""State -> nftables: tether's one table, rendered as text by a pure function.

    table inet tether
      chain user          the user's own rules, evaluated first, never flushed (DOCKER-USER)
      chain forward       user -> published ports -> per-network verdicts (vmaps)
      chain net_<id>_out  traffic leaving a network's bridge: ICC, isolation, internal
      chain net_<id>_in   traffic entering a network's bridge from elsewhere
      chain prerouting / output / publish   DNAT for published ports (maps)
      chain postrouting   masquerade, hairpin, loopback
      chain guard         loopback destinations only from lo (before any NAT: CVE-2020-8558)
      chain input         internal networks reach only their own gateway address on the host

Every verdict comes from a Decision of the reachability model (firewall/policy.py), whose
path() answers "may A reach B, and why" from the same objects: this module only says how
each decision is written in nftables.  Every
update is one `nft -f` transaction that declares the table, flushes and refills tether's own
sets, maps and chains, and never touches `user`, so it is atomic and keeps the user's rules.
Published ports live in maps: adding or removing one is an element change whose cost does not
grow with the number of ports (see port_elements).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.firewall.policy import Decision, Net, Policy, Underlay, decide

TABLE = "inet tether"
USER_CHAIN = "user"
# iptables' DOCKER-USER (firewall/dockeruser.py): iptables' FORWARD chain marks a packet
# SEEN before it jumps to DOCKER-USER and RETURNED after, so a packet that carries SEEN alone
# was ACCEPTed there, which in Docker skips every later verdict: ours too.  Our forward
# chain runs after iptables' (priority filter + 10) and clears both bits.
DOCKER_USER_SEEN = 0x01000000
DOCKER_USER_RETURNED = 0x02000000
FORWARD_PRIORITY = 10
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}


# A network as the firewall sees it (the driver's FirewallFacts, keyed): the policy's Net.
NetRule = Net


@dataclass(frozen=True)
class PortRule:
    """One kernel-NATed published port: IPv4 host side (IPv6 host addresses are served by the port relay)."""

    proto: str
    host_ip: str  # "" for any address
    host_port: int
    target_ip: str
    target_port: int


@dataclass(frozen=True)
class IngressPort:
    """One port of the routing mesh (a service's ingress-published port) on this node:
    connections to it at any of the node's addresses go to one of `backends` (task address,
    target port), chosen at random per connection."""

    proto: str
    port: int
    backends: tuple[tuple[str, int], ...]

    @property
    def count_set(self) -> str:
        """The set its port is an element of: one per protocol and number of tasks, shared
        by every port with that many, each with one rule in chain `mesh` (a port is
        elements, never a chain or a verdict of its own)."""
        return f"ing_{self.proto}_n{len(self.backends)}"

    @property
    def tasks_map(self) -> str:
        return f"ingress_{self.proto}"


@dataclass
class FirewallState:
    networks: list[NetRule] = field(default_factory=list)
    ports: list[PortRule] = field(default_factory=list)
    # A cluster node: VXLAN's UDP port and the nodes' addresses (the only senders allowed).
    underlay: Underlay | None = None
    # The routing mesh's ports (a cluster node with services that publish in ingress mode).
    ingress: list[IngressPort] = field(default_factory=list)


def _q(name: str) -> str:
    return '"' + name.replace('"', "") + '"'


def port_element(p: PortRule) -> tuple[str, str]:
    """(map name, element text) for one published port."""
    value = f"{p.target_ip} . {p.target_port}"
    if p.host_ip:
        return "pub4ip", f"{p.host_ip} . {p.proto} . {p.host_port} : {value}"
    return "pub4", f"{p.proto} . {p.host_port} : {value}"


def port_elements(ports: list[PortRule], op: str) -> str:
    """`add element`/`delete element` commands for a set of ports (one transaction)."""
    by_map: dict[str, list[str]] = {}
    for p in ports:
        name, elem = port_element(p)
        if op == "delete":
            elem = elem.split(" : ", 1)[0]
        by_map.setdefault(name, []).append(elem)
    return "".join(
        f"{op} element {TABLE} {name} {{ {', '.join(elems)} }}\n"
        for name, elems in sorted(by_map.items())
    )


def chain_names(state: FirewallState) -> set[str]:
    names = {"forward", "publish", "prerouting", "output", "postrouting", "guard", "input"}
    for n in state.networks:
        names |= {f"net_{n.key}_out", f"net_{n.key}_in"}
        if n.internal or n.ingress:
            names.add(f"net_{n.key}_host")
    names.add(MESH_CHAIN)
    if state.underlay is not None and state.underlay.encrypted_vnis:
        names.add("guard_out")  # plain VXLAN of encrypted networks never leaves
    return names


# The chain the nat hooks send connections to the node's own addresses through, first: one
# rule per (protocol, task count) in use, `tcp dport @ing_tcp_n3 dnat ...`.
MESH_CHAIN = "mesh"


def ingress_rule(p: IngressPort) -> str:
    """The set of mesh ports with `len(p.backends)` tasks (made empty) and its rule: the
    DNAT to a task at random per new connection (conntrack keeps an established one on its
    task when the set changes).  Ports are elements of plain sets and a map, so a change
    costs the same with 10 ports as with 10,000: a chain with its own anonymous map per port
    took ~50 ms per change at 1,000 ports (the kernel and libnftables walk every set of the
    table), and an element of a verdict map (`tcp . 8080 : jump ing_tcp_n3`, the layout
    before this one) makes the kernel validate the chain graph over every element of the
    map on each addition, which grows with the ports (bench/README.md)."""
    n = len(p.backends)
    return (
        f"add set {TABLE} {p.count_set} {{ type inet_service; }}\n"
        f"flush set {TABLE} {p.count_set}\n"
        f"add rule {TABLE} {MESH_CHAIN} {p.proto} dport @{p.count_set} "
        f"dnat ip to {p.proto} dport . numgen random mod {n} map @{p.tasks_map}\n"
    )


def ingress_elements(p: IngressPort, op: str) -> str:
    """`add`/`delete` of one mesh port's elements: its tasks, then its entry (or the reverse
    for a deletion, which names keys only)."""
    if op == "delete":
        keys = ", ".join(f"{p.port} . {i}" for i in range(len(p.backends)))
        return (
            f"delete element {TABLE} {p.count_set} {{ {p.port} }}\n"
            f"delete element {TABLE} {p.tasks_map} {{ {keys} }}\n"
        )
    pairs = ", ".join(f"{p.port} . {i} : {ip} . {port}" for i, (ip, port) in enumerate(p.backends))
    return (
        f"add element {TABLE} {p.tasks_map} {{ {pairs} }}\n"
        f"add element {TABLE} {p.count_set} {{ {p.port} }}\n"
    )


def mesh_counts(ports: list[IngressPort]) -> set[tuple[str, int]]:
    """(protocol, task count) of the sets (and rules) a full render makes for `ports`."""
    return {(p.proto, len(p.backends)) for p in ports if p.backends}


def ingress_changes(
    have: list[IngressPort], want: list[IngressPort], made: set[tuple[str, int]] | None = None
) -> str:
    """The transaction that turns the mesh's ports `have` into `want`: the elements of the
    ports that changed, nothing for the others, and the set and rule for a number of tasks
    the table has none for.  `made`: the (protocol, count) the table has sets and rules for
    (default: those `have` uses), updated with the ones this transaction makes; unused ones
    stay until the next full render.  A port whose task count changes leaves one set for
    the other in this one transaction.  A port without a running task has no element (the
    connection meets whatever else the host has on that port)."""
    # Backends compared as tuples (a dataclass's generated __eq__ is ~5x slower: 10,000
    # ports took ~50 ms to compare).
    old = {(p.proto, p.port): p.backends for p in have if p.backends}
    new = {(p.proto, p.port): p.backends for p in want if p.backends}
    if made is None:
        made = {(proto, len(b)) for (proto, _port), b in old.items()}
    out: list[str] = []
    for key, b in old.items():
        if new.get(key) != b:
            out.append(ingress_elements(IngressPort(*key, b), "delete"))
    for key, b in new.items():
        if old.get(key) == b:
            continue
        p = IngressPort(*key, b)
        if (p.proto, len(b)) not in made:
            out.append(ingress_rule(p))
            made.add((p.proto, len(b)))
        out.append(ingress_elements(p, "add"))
    return "".join(out)


SETS = {
    "bridges": "type ifname;",
    "subnets4": "type ipv4_addr; flags interval;",
    "pub4": "type inet_proto . inet_service : ipv4_addr . inet_service;",
    "pub4ip": "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;",
    "leaving": "type ifname : verdict;",
    "entering": "type ifname : verdict;",
    "hostbound": "type ifname : verdict;",
    "vteps": "type ipv4_addr;",
    # The routing mesh's tasks, a map per protocol: port . index -> task address . target
    # port (the key's type is that of `... numgen random mod N` whatever N; `th dport` in a
    # typeof does not survive libnftables reading the map back from the kernel).
    **{
        f"ingress_{proto}": f"typeof {proto} dport . numgen random mod 2 : ip daddr . {proto} dport;"
        for proto in ("tcp", "udp", "sctp")
    },
}
OLD_INGRESS_MAP = "type inet_proto . inet_service : verdict;"
BASE_CHAINS = {
    "forward": f"type filter hook forward priority filter + {FORWARD_PRIORITY}; policy accept;",
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "guard": "type filter hook prerouting priority raw; policy accept;",
    "input": "type filter hook input priority filter; policy accept;",
    "guard_out": "type filter hook output priority raw; policy accept;",
}


def render(state: FirewallState, stale_chains: set[str] | None = None) -> str:
    """The whole transaction: declare, flush ours, refill; delete chains nothing wants."""
    out: list[str] = [f"add table {TABLE}\n", f"add chain {TABLE} {USER_CHAIN}\n"]
    for name, spec in SETS.items():
        out.append(f"add {'map' if ':' in spec else 'set'} {TABLE} {name} {{ {spec} }}\n")
        out.append(f"flush {'map' if ':' in spec else 'set'} {TABLE} {name}\n")
    wanted = chain_names(state)
    for name in sorted(wanted):
        spec = BASE_CHAINS.get(name, "")
        out.append(f"add chain {TABLE} {name}" + (f" {{ {spec} }}\n" if spec else "\n"))
        out.append(f"flush chain {TABLE} {name}\n")
    if stale_chains:
        # The routing mesh's verdict map of the layout before (its elements jump to the
        # chains deleted just below): gone once the rules naming it are flushed above.
        out.append(f"add map {TABLE} ingress {{ {OLD_INGRESS_MAP} }}\n")
        out.append(f"delete map {TABLE} ingress\n")
    for name in sorted((stale_chains or set()) - wanted - {USER_CHAIN}):
        out.append(f"flush chain {TABLE} {name}\n")
        out.append(f"delete chain {TABLE} {name}\n")

    nets = sorted(state.networks, key=lambda n: n.key)
    rules: list[str] = []

    def rule(chain: str, text: str) -> None:
        rules.append(f"add rule {TABLE} {chain} {text}\n")

    # Sets and maps.
    elements: list[str] = []
    decls, elems, counting = network_counters(nets, stale_chains or set())
    out.append(decls)
    elements.append(elems)
    rules.extend(counting)
    if nets:
        elements.append(
            f"add element {TABLE} bridges {{ {', '.join(_q(n.iface) for n in nets)} }}\n"
        )
        subnets = sorted({s for n in nets for s in n.subnets4})
        if subnets:
            elements.append(f"add element {TABLE} subnets4 {{ {', '.join(subnets)} }}\n")
        elements.append(
            f"add element {TABLE} leaving {{ {', '.join(f'{_q(n.iface)} : jump net_{n.key}_out' for n in nets)} }}\n"
        )
        elements.append(
            f"add element {TABLE} entering {{ {', '.join(f'{_q(n.iface)} : jump net_{n.key}_in' for n in nets)} }}\n"
        )
        internal = [n for n in nets if n.internal or n.ingress]
        if internal:
            elements.append(
                f"add element {TABLE} hostbound {{ {', '.join(f'{_q(n.iface)} : jump net_{n.key}_host' for n in internal)} }}\n"
            )
    if state.ports:
        elements.append(port_elements(state.ports, "add"))
    counts: set[str] = set()
    for ip in state.ingress:
        if ip.backends:
            if ip.count_set not in counts:
                counts.add(ip.count_set)
                # Before the elements: it makes the set (empty, whatever it held).
                out.append(ingress_rule(ip))
            elements.append(ingress_elements(ip, "add"))

    policy = decide(nets, state.underlay)
    if state.underlay is not None and state.underlay.vteps:
        elements.append(
            f"add element {TABLE} vteps {{ {', '.join(sorted(state.underlay.vteps))} }}\n"
        )
    for d in policy.decisions:
        for chain, text in _nft(d, policy):
            rule(chain, text)
    # NAT that is not a reachability verdict: masquerading out of each network, and the
    # hairpin a container needs to reach a published port of its own network.
    for n in nets:
        br = _q(n.iface)
        for s in n.subnets4:
            if n.masquerade and not n.internal:
                rule("postrouting", f"ip saddr {s} oifname != {br} masquerade")
            if n.ingress:
                # The routing mesh: a connection DNATed to a task leaves from the node's
                # address on the network, so the task's answer comes back through this node.
                rule("postrouting", f"ct status dnat ip daddr {s} oifname {br} masquerade")
            # Hairpin: a container reaching a published port of its own network must see the
            # answer come back through the host, or the reply would skip the reverse NAT.
            rule("postrouting", f"ct status dnat ip saddr {s} oifname {br} masquerade")
        # IPv6 too (Docker 27+ with ip6tables on by default): a ULA /64 from the default
        # pool is not routed anywhere, so its traffic out must carry the host's address.
        for s in n.subnets6:
            if n.masquerade and not n.internal:
                rule("postrouting", f"ip6 saddr {s} oifname != {br} masquerade")
    rule("postrouting", "ct status dnat ip saddr 127.0.0.0/8 masquerade")
    return "".join(out) + "".join(elements) + "".join(rules)


def _nft(d: Decision, p: Policy) -> list[tuple[str, str]]:
    """How one decision is written: (chain, rule text) in the order they must appear."""
    if d.scope == "user":
        both = DOCKER_USER_SEEN | DOCKER_USER_RETURNED
        keep = 0xFFFFFFFF ^ both
        return [
            (
                "forward",
                f"meta mark & 0x{both:08x} == 0x{DOCKER_USER_SEEN:08x} "
                f"meta mark set meta mark & 0x{keep:08x} accept",
            ),
            (
                "forward",
                f"meta mark & 0x{both:08x} != 0 meta mark set meta mark & 0x{keep:08x}",
            ),
            ("forward", f"jump {USER_CHAIN}"),
        ]
    if d.scope == "published":
        # An internal network's containers reach nothing beyond their bridge, not even a
        # published port of another network's container through the host's address (Docker
        # drops this in DOCKER-ISOLATION, before any DNAT is accepted).
        internal = [
            ("forward", f"iifname {_q(n.iface)} oifname != {_q(n.iface)} drop")
            for n in p.networks
            if n.internal
        ]
        # Then dispatch by the bridge a packet leaves or enters by (the networks' verdicts).
        return [
            *internal,
            ("forward", "ct status dnat accept"),
            ("forward", "iifname vmap @leaving"),
            ("forward", "oifname vmap @entering"),
            ("publish", "dnat ip to ip daddr . meta l4proto . th dport map @pub4ip"),
            ("publish", "dnat ip to meta l4proto . th dport map @pub4"),
            # The routing mesh's ports first, as Docker's DOCKER-INGRESS chain comes first.
            ("prerouting", f"fib daddr type local jump {MESH_CHAIN}"),
            ("prerouting", "fib daddr type local jump publish"),
            ("output", f"fib daddr type local jump {MESH_CHAIN}"),
            ("output", "fib daddr type local jump publish"),
        ]
    if d.scope == "loopback":
        # Raw prerouting, before conntrack and before the DNAT of ports published on
        # 127.0.0.1 (which would otherwise turn such a packet into an ordinary forwarded one:
        # CVE-2020-8558, moby#45610).  route_localnet is on for the bridges (the host's own
        # 127.0.0.1 ports are DNATed out through them); this also keeps it from exposing the
        # host's loopback services.  Replies to those DNATed connections arrive addressed to
        # the gateway (they were masqueraded), so this never sees them.
        return [
            ("guard", 'iifname != "lo" ip daddr 127.0.0.0/8 drop'),
            ("guard", 'iifname != "lo" ip6 daddr ::1 drop'),
        ]
    if d.scope == "underlay":
        port = p.underlay.port if p.underlay is not None else 0
        # Raw prerouting: before anything else, so a forged packet never reaches the VXLAN
        # device (Calico does the same for its VTEPs).
        rules = [("guard", f"udp dport {port} ip saddr != @vteps drop")]
        if p.underlay is not None and p.underlay.node_port:
            # The node listener (task logs for `service logs`): nodes only, before it is
            # accepted by anything; the listener checks the address again (and TLS).
            rules.append(("input", f"tcp dport {p.underlay.node_port} ip saddr != @vteps drop"))
        return rules
    if d.scope == "encrypted" and p.underlay is not None:
        u = p.underlay
        # VXLAN's header follows UDP's: the VNI is bits 96..119 of the transport header.
        # Such a packet would be an encrypted network's traffic in the clear (a VXLAN device
        # someone made by hand, a node that lost its data path): dropped both ways, as
        # Docker's `--pol none` xfrm rule does for its encrypted overlays.
        vnis = ", ".join(str(v) for v in u.encrypted_vnis)
        # (Counted: `nft list chain inet tether guard` shows what was refused.)
        plain = f"udp dport {u.port} @th,96,24 {{ {vnis} }} counter drop"
        rules = [("guard", plain), ("guard_out", plain)]
        if u.crypt_port:
            rules.insert(0, ("guard", f"udp dport {u.crypt_port} ip saddr != @vteps counter drop"))
        return rules
    if d.scope == "host" and not d.network:
        # Traffic from an internal network's bridge to the host goes to its own chain.
        return [("input", "iifname vmap @hostbound")]
    n = p.net(d.network)
    assert n is not None
    out_chain, in_chain = f"net_{n.key}_out", f"net_{n.key}_in"
    if d.scope == "same-network":
        return [(out_chain, f"oifname {_q(n.iface)} {d.verdict}")]
    if d.scope == "other-network":
        # An internal network drops everything that is not for its own bridge.
        return [(out_chain, "drop" if n.internal else "oifname @bridges drop")]
    if d.scope == "outside":
        return [] if n.internal else [(out_chain, d.verdict)]
    if d.scope == "from-outside":
        if n.internal:
            return [(in_chain, "drop")]
        return [(in_chain, "ct state established,related accept"), (in_chain, "drop")]
    if d.scope == "host":
        # As Docker 25.0.4+ (moby#47356): only the gateway address of the network's own
        # bridge, never the host's other addresses (the LAN side, other bridges' gateways).
        chain = f"net_{n.key}_host"
        rules = [(chain, "ct state established,related accept")]
        if n.gateways4:
            rules.append((chain, f"ip daddr {{ {', '.join(n.gateways4)} }} accept"))
        # IPv6 needs the bridge's link-local address and multicast for neighbour discovery.
        v6 = ", ".join((*n.gateways6, "fe80::/10", "ff00::/8"))
        rules.append((chain, f"ip6 daddr {{ {v6} }} accept"))
        rules.append((chain, "meta pkttype { broadcast, multicast } accept"))
        rules.append((chain, d.verdict))
        return rules
    raise AssertionError(f"no nftables form for {d.scope}")


def network_counters(nets: list[NetRule], stale_chains: set[str]) -> tuple[str, str, list[str]]:
    """Packet and byte counts per network for metrics.py: (declarations, elements, rules).

    Named counters `tx_<key>` (forwarded from the network's bridge) and `rx_<key>` (to it),
    picked per packet by one map lookup at the top of `forward`, before any verdict, so
    what the user chain drops is counted too.  Counter objects outlive a re-render (it
    flushes rules and maps, not counters); those of networks gone are deleted (add, then
    delete: one that was never made is not an error).
    """
    out = []
    for name in ("net_tx", "net_rx"):
        out.append(f"add map {TABLE} {name} {{ type ifname : counter; }}\n")
        out.append(f"flush map {TABLE} {name}\n")
    keys = {n.key for n in nets}
    for key in sorted(keys):
        out.append(f"add counter {TABLE} tx_{key}\nadd counter {TABLE} rx_{key}\n")
    stale = {c[4:-4] for c in stale_chains if c.startswith("net_") and c.endswith("_out")}
    for key in sorted(stale - keys):
        for d in ("tx", "rx"):
            out.append(f"add counter {TABLE} {d}_{key}\ndelete counter {TABLE} {d}_{key}\n")
    elements = ""
    if nets:
        for d, name in (("tx", "net_tx"), ("rx", "net_rx")):
            pairs = ", ".join(f'{_q(n.iface)} : "{d}_{n.key}"' for n in nets)
            elements += f"add element {TABLE} {name} {{ {pairs} }}\n"
    rules = [
        f"add rule {TABLE} forward counter name iifname map @net_tx\n",
        f"add rule {TABLE} forward counter name oifname map @net_rx\n",
    ]
    return "".join(out), elements, rules
