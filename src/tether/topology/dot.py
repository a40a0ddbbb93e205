"""The topology document (topology/model.py) as a Graphviz graph: pure text in, text out.

Drawn for a person with 50 containers on 8 networks in front of them:

- each network is one box (a table): its name, driver, subnets, gateway and host device,
  red marks for `internal` and `ICC off`, then one row per container that is on this
  network only (name, address, published ports, state, and the node when it runs elsewhere);
- a container on several networks is a box of its own outside them, joined to each network
  by an edge labelled with its address there: the containers that bridge networks are what
  a reader looks for first, and they stand out;
- a service is a hexagon with its VIP on each network (dashed edges) and its tasks (dotted
  edges to their containers); the cluster's nodes are a small table of their own.

Rows carry `HREF="#c-<id>"` and networks `HREF="#n-<id>"`: the live page (tether ui) turns
clicks on them into an inspect.  Everything user-given is escaped for Graphviz's HTML labels.
"""

from __future__ import annotations

import html
from typing import Any

FONT = "DejaVu Sans"
NET_COLOR = "#2b6cb0"
NET_FILL = "#ebf4ff"
OVERLAY_COLOR = "#2f855a"
OVERLAY_FILL = "#f0fff4"
MARK_COLOR = "#c53030"
CTR_COLOR = "#4a5568"
SVC_COLOR = "#6b46c1"
MAX_PORTS = 3


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _id(prefix: str, ident: str) -> str:
    return f"{prefix}_{ident[:12]}"


def port_text(ports: list[dict[str, Any]]) -> str:
    parts = []
    for p in ports:
        host = p["HostIP"]
        where = (
            "" if host in ("", "0.0.0.0", "::") else (f"[{host}]:" if ":" in host else f"{host}:")
        )
        parts.append(f"{where}{p['HostPort']}→{p['ContainerPort']}/{p['Proto']}")
    # Two bindings of one port (0.0.0.0 and ::) read as one.
    seen = list(dict.fromkeys(parts))
    if len(seen) > MAX_PORTS:
        seen = [*seen[:MAX_PORTS], f"+{len(seen) - MAX_PORTS}"]
    return ", ".join(seen)


def _state_font(c: dict[str, Any], text: str) -> str:
    if c["State"] != "running":
        return f'<FONT COLOR="#a0aec0">{text}</FONT>'
    return text


def _where(c: dict[str, Any]) -> str:
    return "" if c["Local"] else f" @{_e(c['Node'])}"


def _title(c: dict[str, Any]) -> str:
    bits = [c["Name"], c["Id"][:12], c["Image"], c["State"]]
    if not c["Local"]:
        bits.append("on " + c["Node"])
    return _e(" · ".join(b for b in bits if b))


def _addr(ep: dict[str, Any]) -> str:
    return ep["IPv4"] or ep["IPv6"] or ""


def _net_label(
    net: dict[str, Any], rows: list[tuple[dict[str, Any], dict[str, Any]]], bridged: bool
) -> str:
    overlay = net["Driver"] == "overlay"
    color = OVERLAY_COLOR if overlay else NET_COLOR
    fill = OVERLAY_FILL if overlay else NET_FILL
    facts = [net["Driver"], *net["Subnets"]]
    if net["Gateways"]:
        facts.append("gw " + ", ".join(net["Gateways"]))
    if net["Devices"]:
        facts.append(" ".join(d["Name"] for d in net["Devices"]))
    marks = []
    if net["Internal"]:
        marks.append("internal: no way out")
    if not net["ICC"]:
        marks.append("ICC off: members cannot talk")
    out = [
        f'<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" COLOR="{color}" '
        f'BGCOLOR="{fill}" STYLE="rounded">',
        f'<TR><TD COLSPAN="3" BGCOLOR="{color}" PORT="h" HREF="#n-{_e(net["Id"])}" '
        f'TITLE="network {_e(net["Name"])}"><FONT COLOR="white"><B>{_e(net["Name"])}</B></FONT></TD></TR>',
        f'<TR><TD COLSPAN="3"><FONT POINT-SIZE="9">{_e(" · ".join(facts))}</FONT></TD></TR>',
    ]
    if marks:
        out.append(
            f'<TR><TD COLSPAN="3"><FONT COLOR="{MARK_COLOR}" POINT-SIZE="9"><B>'
            f"{_e(' · '.join(marks))}</B></FONT></TD></TR>"
        )
    for c, ep in rows:
        name = _state_font(c, f"<B>{_e(c['Name'])}</B>{_where(c)}")
        addr = _state_font(c, _e(_addr(ep) or c["State"]))
        ports = port_text(c["Ports"])
        ports = f'<FONT POINT-SIZE="9">{_e(ports)}</FONT>' if ports else ""
        out.append(
            f'<TR><TD ALIGN="LEFT" PORT="{_id("c", c["Id"])}" HREF="#c-{_e(c["Id"])}" '
            f'TITLE="{_title(c)}">{name}</TD><TD ALIGN="LEFT">{addr}</TD>'
            f'<TD ALIGN="LEFT">{ports}</TD></TR>'
        )
    if not rows and not bridged:
        out.append('<TR><TD COLSPAN="3"><FONT COLOR="#a0aec0">no containers</FONT></TD></TR>')
    out.append("</TABLE>")
    return "".join(out)


def _ctr_label(c: dict[str, Any]) -> str:
    lines = [f"<B>{_e(c['Name'])}</B>{_where(c)}"]
    ports = port_text(c["Ports"])
    if ports:
        lines.append(f'<FONT POINT-SIZE="9">{_e(ports)}</FONT>')
    if c["State"] != "running":
        lines.append(_e(c["State"]))
    text = _state_font(c, "<BR/>".join(lines))
    return (
        f'<TABLE BORDER="1" CELLBORDER="0" CELLPADDING="4" COLOR="{CTR_COLOR}" BGCOLOR="#f7fafc">'
        f'<TR><TD HREF="#c-{_e(c["Id"])}" TITLE="{_title(c)}">{text}</TD></TR></TABLE>'
    )


def _nodes_label(nodes: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<TR><TD ALIGN="LEFT"><B>{_e(n["Name"])}</B>{" (this node)" if n["Self"] else ""}</TD>'
        f'<TD ALIGN="LEFT">{_e(n["Addr"])}</TD>'
        f'<TD ALIGN="LEFT"><FONT COLOR="{"#2f855a" if n["Status"] == "ready" else MARK_COLOR}">'
        f"{_e(n['Status'])}</FONT></TD></TR>"
        for n in nodes
    )
    return (
        '<TABLE BORDER="1" CELLBORDER="0" CELLPADDING="3" COLOR="#718096">'
        '<TR><TD COLSPAN="3"><B>nodes</B></TD></TR>' + rows + "</TABLE>"
    )


def render(topo: dict[str, Any]) -> str:
    nets = {n["Id"]: n for n in topo["Networks"]}
    by_name = {n["Name"]: n for n in topo["Networks"]}
    rows: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {i: [] for i in nets}
    multi: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    loose: list[dict[str, Any]] = []
    where: dict[str, str] = {}  # container id -> node (or node:port) its edges go to
    for c in topo["Containers"]:
        eps = [ep for ep in c["Endpoints"] if ep["NetworkID"] in nets]
        if not eps and c["NetworkMode"] in by_name:  # host / none mode
            mode_net = by_name[c["NetworkMode"]]
            eps = [{"NetworkID": mode_net["Id"], "IPv4": "", "IPv6": ""}]
        if len(eps) == 1:
            rows[eps[0]["NetworkID"]].append((c, eps[0]))
            where[c["Id"]] = f"{_id('n', eps[0]['NetworkID'])}:{_id('c', c['Id'])}"
        elif eps:
            multi.append((c, eps))
            where[c["Id"]] = _id("c", c["Id"])
        else:
            loose.append(c)
            where[c["Id"]] = _id("c", c["Id"])

    bridged = {ep["NetworkID"] for _, eps in multi for ep in eps}
    counts = (
        f"{len(nets)} network{'s' if len(nets) != 1 else ''}, "
        f"{len(topo['Containers'])} container{'s' if len(topo['Containers']) != 1 else ''}"
    )
    if topo["Services"]:
        counts += f", {len(topo['Services'])} service{'s' if len(topo['Services']) != 1 else ''}"
    title = f"tether on {topo['Node']['Name']}: {counts}"
    out = [
        "digraph tether {",
        f'  graph [rankdir=LR, fontname="{FONT}", fontsize=12, nodesep=0.3, ranksep=1.1, '
        f'labelloc=t, label="{_e(title)}", bgcolor="white", pad=0.3];',
        f'  node [fontname="{FONT}", fontsize=10, shape=plaintext, margin=0];',
        f'  edge [fontname="{FONT}", fontsize=9, color="#718096", fontcolor="#2d3748", '
        "arrowhead=none];",
    ]
    if topo["Nodes"]:
        out.append(f"  cluster_nodes [label=<{_nodes_label(topo['Nodes'])}>];")
    for net_id, net in nets.items():
        out.append(
            f'  {_id("n", net_id)} [id="n-{_e(net_id)}", label=<{_net_label(net, rows[net_id], net_id in bridged)}>];'
        )
    for c, eps in multi:
        out.append(f'  {_id("c", c["Id"])} [id="c-{_e(c["Id"])}", label=<{_ctr_label(c)}>];')
        for ep in eps:
            addr = _addr(ep)
            out.append(
                f"  {_id('c', c['Id'])} -> {_id('n', ep['NetworkID'])}:h "
                f'[label="{_e(addr)}", color="{CTR_COLOR}"];'
            )
    for c in loose:
        out.append(f'  {_id("c", c["Id"])} [id="c-{_e(c["Id"])}", label=<{_ctr_label(c)}>];')
    for s in topo["Services"]:
        sid = _id("s", s["Id"])
        running = sum(1 for t in s["Tasks"] if t["State"] == "running")
        want = s["Replicas"] if s["Mode"] == "replicated" else len(s["Tasks"])
        label = f"{s['Name']}\\n{s['Mode']} {running}/{want}"
        out.append(
            f'  {sid} [id="s-{_e(s["Id"])}", shape=hexagon, style=filled, fillcolor="#faf5ff", '
            f'color="{SVC_COLOR}", margin=0.05, label="{_e(label)}"];'
        )
        for v in s["VIPs"]:
            if v["NetworkID"] in nets:
                out.append(
                    f'  {sid} -> {_id("n", v["NetworkID"])}:h [label="VIP {_e(v["Addr"])}", '
                    f'style=dashed, color="{SVC_COLOR}", fontcolor="{SVC_COLOR}"];'
                )
        for t in s["Tasks"]:
            target = where.get(t["Container"])
            if target:
                out.append(
                    f'  {sid} -> {target} [style=dotted, color="{SVC_COLOR}", constraint=false];'
                )
    out.append("}")
    return "\n".join(out) + "\n"
