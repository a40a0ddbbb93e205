"""Which endpoint may reach which: decided once, from one topology snapshot (pure).

Every verdict tether's firewall enforces is a `Decision` made here, with its reason and the
fix a user would apply: containers on one network (ICC), between networks (isolation), to
and from the outside (internal networks, replies only), to the host (internal networks),
published ports, the user's own chain, the host's loopback.  `firewall/render.py` turns the
decisions into one nftables transaction, and `path()` answers "may A reach B, and why" from
the same decisions, so what the kernel does and what tether explains cannot disagree.

Networks whose traffic never crosses the host's IP stack (macvlan: frames leave through the
parent) are not in the snapshot: their drivers give no firewall facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["accept", "drop", "continue"]
Scope = Literal[
    "user",  # the user's own chain, before everything else
    "published",  # traffic to a published port (DNAT), from anywhere
    "same-network",  # from a container to another on the same network
    "other-network",  # from a container to one on another tether network
    "outside",  # from a container to anything not a tether network
    "from-outside",  # into a network from anything not on it
    "host",  # from a container to the host's own addresses
    "loopback",  # to 127.0.0.0/8 or ::1 from anything but the host's lo
    "underlay",  # VXLAN packets (and the node listener's TCP) from anything but the nodes
    "encrypted",  # encrypted overlays: never plain VXLAN, their data port from nodes only
]


@dataclass(frozen=True)
class Net:
    """What the policy needs to know of one network that routes through the host."""

    key: str  # the network id prefix, for chain names
    iface: str  # the host device its traffic enters and leaves by (the bridge)
    subnets4: tuple[str, ...] = ()
    subnets6: tuple[str, ...] = ()
    internal: bool = False
    icc: bool = True
    masquerade: bool = True
    # The addresses the host's device carries (an internal network may reach only these).
    gateways4: tuple[str, ...] = ()
    gateways6: tuple[str, ...] = ()
    name: str = ""  # the network's name, for reasons (the key if not given)
    # The routing mesh's network: the node has an address on it that services' published
    # ports are DNATed from (cluster/ingress.py), which its containers must not use to
    # reach the host.
    ingress: bool = False

    @property
    def label(self) -> str:
        return self.name or self.key


@dataclass(frozen=True)
class Underlay:
    """A cluster node's underlay: VXLAN's UDP port and the addresses of every node, and the
    TCP port where other nodes read task logs (cluster/nodeapi.py; 0: no listener)."""

    port: int
    vteps: tuple[str, ...]
    node_port: int = 0
    # Encrypted overlays (crypt/): tether-crypt's UDP port, and the VNIs that must never
    # cross the underlay as plain VXLAN.
    crypt_port: int = 0
    encrypted_vnis: tuple[int, ...] = ()


@dataclass(frozen=True)
class Decision:
    scope: Scope
    verdict: Verdict
    reason: str
    network: str = ""  # the network key it belongs to ("" for the whole host)
    fix: str = ""
    # For "host": addresses of the host that stay reachable despite the verdict.
    allowed: tuple[str, ...] = ()


@dataclass
class Policy:
    networks: list[Net]
    decisions: list[Decision] = field(default_factory=list)
    underlay: Underlay | None = None

    def of(self, scope: Scope, network: str = "") -> Decision | None:
        for d in self.decisions:
            if d.scope == scope and d.network == network:
                return d
        return None

    def net(self, key: str) -> Net | None:
        return next((n for n in self.networks if n.key == key), None)


def decide(networks: list[Net], underlay: Underlay | None = None) -> Policy:
    """The decisions for this set of networks, in evaluation order."""
    nets = sorted(networks, key=lambda n: n.key)
    p = Policy(nets, underlay=underlay)
    add = p.decisions.append
    add(
        Decision(
            "user",
            "continue",
            "rules you add to chain `user` (nft add rule inet tether user ...) see every "
            "forwarded packet first; their accept or drop is final",
        )
    )
    add(
        Decision(
            "published",
            "accept",
            "traffic to a published port (-p) is let through to its container from anywhere",
            fix="publish the port with -p HOST:CONTAINER",
        )
    )
    add(
        Decision(
            "host",
            "accept",
            "containers reach the host's own addresses (but from --internal networks)",
        )
    )
    for n in nets:
        if n.icc:
            add(Decision("same-network", "accept", f"{n.label}: ICC is on", n.key))
        else:
            add(
                Decision(
                    "same-network",
                    "drop",
                    f"{n.label}: ICC is off (com.docker.network.bridge.enable_icc=false): "
                    "its containers resolve each other's names but cannot connect",
                    n.key,
                    fix="recreate the network without enable_icc=false, or publish a port",
                )
            )
        if n.internal:
            add(
                Decision(
                    "other-network",
                    "drop",
                    f"{n.label} is --internal: nothing leaves it",
                    n.key,
                    fix="connect the container to a second, non-internal network",
                )
            )
            add(
                Decision(
                    "outside",
                    "drop",
                    f"{n.label} is --internal: it has no way out (and no default route)",
                    n.key,
                    fix="connect the container to a second, non-internal network",
                )
            )
            add(
                Decision(
                    "from-outside",
                    "drop",
                    f"{n.label} is --internal: nothing from elsewhere enters it",
                    n.key,
                )
            )
            add(
                Decision(
                    "host",
                    "drop",
                    f"{n.label} is --internal: its containers reach the host only at their "
                    "own gateway address",
                    n.key,
                    allowed=n.gateways4 + n.gateways6,
                )
            )
            continue
        add(
            Decision(
                "other-network",
                "drop",
                f"networks are isolated from each other: {n.label} reaches no other network",
                n.key,
                fix="connect both containers to one network (tether network connect NET CTR)",
            )
        )
        add(
            Decision(
                "outside",
                "accept",
                f"{n.label} reaches the outside through the host"
                + (" (masqueraded)" if n.masquerade else " (not masqueraded)"),
                n.key,
            )
        )
        add(
            Decision(
                "from-outside",
                "drop",
                f"nothing from outside {n.label} enters it but replies and published ports",
                n.key,
                fix="publish the port with -p HOST:CONTAINER",
            )
        )
        if n.ingress:
            add(
                Decision(
                    "host",
                    "drop",
                    f"{n.label} is the routing mesh's network: the node's address on it only "
                    "sends services' published ports to their tasks; nothing from it reaches "
                    "the host but replies",
                    n.key,
                )
            )
    if underlay is not None:
        add(
            Decision(
                "underlay",
                "drop",
                f"VXLAN (UDP {underlay.port}) is accepted only from the cluster's nodes: "
                "nobody else can inject frames into an overlay network"
                + (
                    f"; the node listener (TCP {underlay.node_port}, task logs) likewise"
                    if underlay.node_port
                    else ""
                ),
            )
        )
    if underlay is not None and underlay.encrypted_vnis:
        add(
            Decision(
                "encrypted",
                "drop",
                f"encrypted overlays (VXLAN ids {', '.join(map(str, underlay.encrypted_vnis))}) "
                f"cross the underlay only sealed, over UDP {underlay.crypt_port} from the "
                "cluster's nodes: plain VXLAN carrying their ids is dropped, in and out",
            )
        )
    add(
        Decision(
            "loopback",
            "drop",
            "127.0.0.0/8 and ::1 belong to the host itself: packets to them that arrive on "
            "any interface but lo are dropped, before NAT (CVE-2020-8558)",
        )
    )
    return p


Endpoint = Literal["container", "host", "outside"]


@dataclass(frozen=True)
class Where:
    """One side of a question: a container (its network keys), the host, or the outside."""

    kind: Endpoint
    networks: tuple[str, ...] = ()


def path(p: Policy, src: Where, dst: Where, published: bool = False) -> list[Decision]:
    """The decisions a packet from `src` to `dst` meets, in order; the last one decides.

    `published`: the destination is a published port of `dst` (DNAT), reached at a host
    address.  Rules in the user chain are not known here (they are the kernel's): the `user`
    decision is listed first as the place they would act.
    """
    chain: list[Decision] = [d for d in p.decisions if d.scope == "user"]
    if src.kind == "container" and dst.kind == "container":
        shared = [k for k in src.networks if k in dst.networks]
        if shared:
            same = [p.of("same-network", k) for k in shared]
            ok = [d for d in same if d is not None and d.verdict == "accept"]
            chosen = ok[0] if ok else next((d for d in same if d is not None), None)
            return [*chain, chosen] if chosen is not None else chain
        if published and not _only_internal(p, src):
            pub = p.of("published")
            return [*chain, pub] if pub is not None else chain
        first = p.of("other-network", src.networks[0]) if src.networks else None
        return [*chain, first] if first is not None else chain
    if src.kind == "container" and dst.kind == "outside":
        outs = [p.of("outside", k) for k in src.networks]
        ok = [d for d in outs if d is not None and d.verdict == "accept"]
        chosen = ok[0] if ok else next((d for d in outs if d is not None), None)
        return [*chain, chosen] if chosen is not None else chain
    if src.kind == "container" and dst.kind == "host":
        limits = [d for k in src.networks if (d := p.of("host", k)) is not None]
        # One non-internal network is enough to reach the host.
        if len(limits) < len(src.networks) or not limits:
            every = p.of("host")
            return [*chain, every] if every is not None else chain
        return [*chain, limits[0]]
    if dst.kind == "container":  # from the host or the outside
        if published:
            pub = p.of("published")
            return [*chain, pub] if pub is not None else chain
        if src.kind == "host":
            return chain  # the host routes straight onto its bridges
        ins = [p.of("from-outside", k) for k in dst.networks]
        chosen = next((d for d in ins if d is not None), None)
        return [*chain, chosen] if chosen is not None else chain
    return chain


def _only_internal(p: Policy, src: Where) -> bool:
    nets = [p.net(k) for k in src.networks]
    return bool(nets) and all(n is not None and n.internal for n in nets)


def allowed(decisions: list[Decision]) -> bool:
    """The outcome of `path`: the last decision that is not `continue` decides."""
    final = [d for d in decisions if d.verdict != "continue"]
    return not final or final[-1].verdict == "accept"
