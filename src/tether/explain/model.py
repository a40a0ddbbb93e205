"""What `tether explain` answers: one verdict and the reasons for it, in order (pure).

The API shape (POST /tether/explain) is {"Reachable": bool, "Reasons": [{"Step", "Ok",
"Object", "Text", "Fix"}], ...}; steps come in this order: names, path, policy, port, probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Step = Literal["names", "path", "policy", "port", "probe"]
STEPS: tuple[Step, ...] = ("names", "path", "policy", "port", "probe")


@dataclass
class Reason:
    step: Step
    ok: bool
    object: str  # what the reason is about: a container, a network, an nft rule (handle)
    text: str
    fix: str = ""

    def to_api(self) -> dict[str, Any]:
        return {
            "Step": self.step,
            "Ok": self.ok,
            "Object": self.object,
            "Text": self.text,
            "Fix": self.fix,
        }


@dataclass
class Explanation:
    source: str
    dest: str
    port: str  # "80/tcp", or "" for ICMP echo
    reachable: bool = False
    reasons: list[Reason] = field(default_factory=list)
    # Where the packet was followed to: "10.0.0.3:80", or "10.0.0.1:8080" (a published port).
    target: str = ""
    by_name: bool = True  # the destination's name resolves (or it was given as an address)
    static: bool = False  # the verdict of the model (and the user's chain)
    probed: bool | None = None  # what the probe found (None: no probe, or it cannot tell)
    contradiction: bool = False

    def add(self, step: Step, ok: bool, obj: str, text: str, fix: str = "") -> Reason:
        r = Reason(step, ok, obj, text, fix)
        self.reasons.append(r)
        return r

    def ordered(self) -> list[Reason]:
        return sorted(self.reasons, key=lambda r: STEPS.index(r.step))

    def to_api(self) -> dict[str, Any]:
        return {
            "From": self.source,
            "To": self.dest,
            "Port": self.port,
            "Reachable": self.reachable,
            "Static": self.static,
            "ByName": self.by_name,
            "Target": self.target,
            "Probe": self.probed,
            "Contradiction": self.contradiction,
            "Reasons": [r.to_api() for r in self.ordered()],
        }


def parse_port(text: str) -> tuple[int, str] | None:
    """ "80", "80/tcp", "53/udp" -> (port, proto); "" -> None.  ValueError with the reason."""
    text = text.strip()
    if not text:
        return None
    port, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp"):
        raise ValueError(f"invalid proto: {proto}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid port: {text}")
    return int(port), proto
