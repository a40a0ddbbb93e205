"""What tether made in the kernel for one network or one container (`inspect --verbose`).

Read live, never from the store: the devices with their state, MTU and counters, the veth
pairs and their peers inside the sandboxes, the sandbox's routes and neighbours, the overlay's
FDB and neighbour entries, and the nft rules and map elements that concern the object, with
their handles and counters.  Added to the Docker-shaped inspect answer under "Kernel".
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import TYPE_CHECKING, Any

from tether.explain.nftrules import counters, rule_texts
from tether.firewall.render import TABLE
from tether.kernel import observe
from tether.model import Container, Network

if TYPE_CHECKING:
    from tether.daemon.app import Daemon

log = logging.getLogger("tether.kernelview")


class HostTable:
    """tether's table in the daemon's namespace, read once: rules, elements, counters."""

    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []  # {Chain, Handle, Rule, Packets?, Bytes?}
        self.elements: dict[str, list[str]] = {}
        self.counters: dict[str, tuple[int, int]] = {}
        self.error = ""
        try:
            listing = json.loads(observe.nft_list(f"list table {TABLE}", json=True))
            texts = rule_texts(observe.nft_list(f"list table {TABLE}", handles=True))
        except (OSError, ValueError) as exc:
            self.error = str(exc)
            return
        from tether.explain.doctor import _json_elem
        from tether.explain.nftrules import Rule

        for item in listing.get("nftables", []):
            if "rule" in item:
                r = item["rule"]
                h = int(r.get("handle", 0))
                entry: dict[str, Any] = {
                    "Chain": r["chain"],
                    "Handle": h,
                    "Rule": _clean(texts.get(h, "")),
                }
                c = counters(Rule(r["chain"], h, tuple(r.get("expr") or ())))
                if c is not None:
                    entry["Packets"], entry["Bytes"] = c
                self.rules.append(entry)
            elif "set" in item or "map" in item:
                s = item.get("set") or item.get("map")
                self.elements[s["name"]] = [_json_elem(e) for e in s.get("elem") or []]
            elif "counter" in item:
                c = item["counter"]
                self.counters[c["name"]] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))

    def chain(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rules if r["Chain"] == name]

    def mentioning(
        self, words: list[str], chains: tuple[str, ...] = ("user",)
    ) -> list[dict[str, Any]]:
        return [
            r
            for r in self.rules
            if r["Chain"] in chains and any(_mentions(r["Rule"], w) for w in words)
        ]


def _clean(text: str) -> str:
    import re

    return re.sub(r"\s*counter packets \d+ bytes \d+", " counter", text).strip()


def _mentions(text: str, word: str) -> bool:
    """Whether a rule names `word`: an interface, an address, or a subnet holding it."""
    if word in text:
        return True
    try:
        addr = ipaddress.ip_address(word)
    except ValueError:
        return False
    for token in text.replace("{", " ").replace("}", " ").replace(",", " ").split():
        if "/" in token:
            try:
                if addr in ipaddress.ip_network(token, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _link(v: observe.View, name: str) -> observe.Link | None:
    return next((link for link in v.links() if link.name == name), None)


def _addresses(v: observe.View, index: int) -> list[str]:
    return [a.cidr for a in v.addresses() if a.index == index]


def network_view(daemon: Daemon, net: Network) -> dict[str, Any]:
    out: dict[str, Any] = {"Namespace": "tetherd's own (where the host side lives)"}
    table = HostTable()
    devices: list[dict[str, Any]] = []
    driver = daemon.drivers.of(net.driver)
    f = driver.firewall(net)
    names = [(dev.name, dev.role) for dev in driver.host_devices(net)]
    with observe.View() as v:
        links = {link.name: link for link in v.links()}
        by_index = {link.index: link for link in links.values()}
        for name, role in names:
            link = links.get(name)
            if link is None:
                devices.append({"Name": name, "Role": role, "State": "missing"})
                continue
            dev = link.to_api()
            dev["Role"] = role
            dev["Addresses"] = _addresses(v, link.index)
            if link.master:
                dev["Master"] = (
                    by_index[link.master].name if link.master in by_index else link.master
                )
            devices.append(dev)
            if link.kind == "vxlan":
                out["FDB"] = [
                    {"MacAddress": e.mac, "Vtep": e.dst, "State": e.state}
                    for e in v.neighbours(link.index, bridge_fdb=True)
                ]
                out["Neighbours"] = [
                    {"IPAddress": e.dst, "MacAddress": e.mac, "State": e.state}
                    for e in v.neighbours(link.index)
                ]
        out["Devices"] = devices
        eps = []
        for c in daemon.containers.by_id.values():
            ep = c.endpoints.get(net.name)
            if ep is None or not c.state.running:
                continue
            entry: dict[str, Any] = {"Container": c.name, "EndpointID": ep.id[:12]}
            if ep.host_ifname:
                host = links.get(ep.host_ifname)
                entry["HostSide"] = (
                    host.to_api()
                    if host is not None
                    else {
                        "Name": ep.host_ifname,
                        "State": "missing",
                    }
                )
            entry["ContainerSide"] = _inner(c, ep.ifname)
            eps.append(entry)
        out["Endpoints"] = eps
    nft: dict[str, Any] = {}
    if table.error:
        nft["Error"] = table.error
    elif f is not None:
        chains = {}
        for suffix in ("out", "in", "host"):
            name = f"net_{f.key}_{suffix}"
            rules = table.chain(name)
            if rules:
                chains[name] = rules
        nft["Chains"] = chains
        words = [f.iface, *f.subnets4, *f.subnets6]
        elements = {}
        for name, elems in table.elements.items():
            mine = [e for e in elems if any(_mentions(e, w) for w in words) or f.key in e]
            if name in ("pub4", "pub4ip"):
                mine = [
                    e for e in elems if _in_subnets(e.split(" : ")[-1].split(" . ")[0], f.subnets4)
                ]
            if mine:
                elements[name] = mine
        nft["Elements"] = elements
        nft["Rules"] = table.mentioning(words, ("user", "forward", "postrouting", "input"))
        named = {}
        for key in (f"tx_{f.key}", f"rx_{f.key}"):
            if key in table.counters:
                p, b = table.counters[key]
                named[key] = {"Packets": p, "Bytes": b}
        if named:
            nft["Counters"] = named
    else:
        nft["Note"] = (
            f"{net.driver} traffic never crosses the host's IP stack: no rule of tether's applies"
        )
    out["Nftables"] = nft
    return out


def _in_subnets(ip: str, subnets: tuple[str, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(s) for s in subnets)


def _inner(c: Container, ifname: str) -> dict[str, Any]:
    if not c.sandbox_key:
        return {"Name": ifname, "State": "no sandbox"}
    try:
        with observe.View(c.sandbox_key) as v:
            link = _link(v, ifname)
            if link is None:
                return {"Name": ifname, "Namespace": c.sandbox_key, "State": "missing"}
            out = link.to_api()
            out["Namespace"] = c.sandbox_key
            out["Addresses"] = _addresses(v, link.index)
            return out
    except OSError as exc:
        return {"Name": ifname, "Namespace": c.sandbox_key, "State": f"unreadable: {exc}"}


def container_view(daemon: Daemon, c: Container) -> dict[str, Any]:
    out: dict[str, Any] = {"Sandbox": c.sandbox_key}
    if not c.state.running or not c.sandbox_key:
        out["Note"] = "not running: nothing of it is in the kernel"
        return out
    table = HostTable()
    try:
        with observe.View(c.sandbox_key) as v:
            links = v.links()
            names = {link.index: link.name for link in links}
            addrs = v.addresses()
            ifaces = []
            with observe.View() as hv:
                host = {link.name: link for link in hv.links()}
                host_names = {link.index: link.name for link in host.values()}
            for link in links:
                entry = link.to_api()
                entry["Addresses"] = [a.cidr for a in addrs if a.index == link.index]
                ep = next((e for e in c.endpoints.values() if e.ifname == link.name), None)
                if ep is not None:
                    net = daemon.networks.by_id.get(ep.network_id)
                    entry["Network"] = net.name if net is not None else ep.network_id[:12]
                    peer = host.get(ep.host_ifname) if ep.host_ifname else None
                    if peer is not None:
                        side = peer.to_api()
                        side["Bridge"] = host_names.get(peer.master, "")
                        entry["HostPeer"] = side
                ifaces.append(entry)
            out["Interfaces"] = ifaces
            out["Routes"] = [r.text(names) for r in v.routes()]
            out["Neighbours"] = [
                {
                    "IPAddress": n.dst,
                    "MacAddress": n.mac,
                    "Device": names.get(n.index, ""),
                    "State": n.state,
                }
                for n in v.neighbours()
                if n.dst
            ]
        out["Listening"] = [s.text() for s in observe.listeners(c.sandbox_key)]
    except OSError as exc:
        out["Error"] = f"cannot read the sandbox: {exc}"
        return out
    sandbox_tables: dict[str, Any] = {}
    for name in ("ip tether_dns", "ip tether_svc"):
        try:
            text = observe.nft_list(f"list table {name}", c.sandbox_key, handles=True)
        except OSError:
            continue
        sandbox_tables[name] = [
            line.strip() for line in text.splitlines() if "# handle" in line and "{" not in line
        ]
    ips = [e.ipv4.split("/")[0] for e in c.endpoints.values() if e.ipv4]
    ips += [e.ipv6.split("/")[0] for e in c.endpoints.values() if e.ipv6]
    host_nft: dict[str, Any] = {}
    if table.error:
        host_nft["Error"] = table.error
    else:
        host_nft["Rules"] = table.mentioning(ips)
        published = {}
        for name in ("pub4", "pub4ip"):
            mine = [
                e for e in table.elements.get(name, []) if e.split(" : ")[-1].split(" . ")[0] in ips
            ]
            if mine:
                published[name] = mine
        host_nft["Elements"] = published
    out["Nftables"] = {"Sandbox": sandbox_tables, "Host": host_nft}
    return out
