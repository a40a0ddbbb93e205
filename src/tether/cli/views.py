"""What the everyday listings print, built from the daemon's answers: one copy for both paths.

`tether ps`, `network ls`, `images`, `volume ls` and `version` build their rows and text
here, whether the full command modules run them or the fast path (tether/cli/fast.py), so
the two cannot drift apart.  Every row value is a str: output.render_table_template lays
out a plain `{{.Field}}` table from them without the template engine.

Kept to `time`, `posix` (both loaded before any of our code runs) and output.py, and
without `from __future__`: that import alone is a real module load, a twentieth of the fast
path's budget.  Annotations naming typing-only types are therefore strings.
"""

import posix
import sys
import time

from tether.cli.output import natural_key
from tether.humanize import human_duration

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

# -- ps ----------------------------------------------------------------------------------------

PS_HEADERS = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "Status": "STATUS",
    "Size": "SIZE",
    "Names": "NAMES",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "Networks": "NETWORKS",
    "State": "STATE",
}
PS_DEFAULT = (
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
)
# docker 28's ps -q with any --format: the IDs, and this on stderr.
PS_QUIET_WARNING = "WARNING: Ignoring custom format, because both --format and --quiet are set.\n"


def _ellipsis(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def host_port(ip: str, port: object) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_ports(ports: "list[dict[str, Any]]") -> str:
    """docker ps's PORTS column (docker/cli DisplayablePorts, step for step).

    Ports published on the same number fold into ranges per address and protocol; the
    others are listed after them, one by one.
    """

    def key(p: "dict[str, Any]") -> tuple[int, str, int, str]:
        return (
            int(p["PrivatePort"]),
            str(p.get("IP") or ""),
            int(p.get("PublicPort") or 0),
            str(p.get("Type") or ""),
        )

    groups: dict[str, list[int]] = {}
    order: list[str] = []
    result: list[str] = []
    mappings: list[str] = []

    def form(k: str, first: int, last: int) -> str:
        ip, _, proto = k.rpartition("/")
        group = f"{first}" if first == last else f"{first}-{last}"
        return f"{host_port(ip, group)}->{group}/{proto}" if ip else f"{group}/{proto}"

    for p in sorted(ports, key=key):
        current = int(p["PrivatePort"])
        proto = str(p.get("Type") or "tcp")
        k = proto
        ip = str(p.get("IP") or "")
        if ip:
            public = int(p.get("PublicPort") or 0)
            if public != current:
                mappings.append(f"{host_port(ip, public)}->{current}/{proto}")
                continue
            k = f"{ip}/{proto}"
        g = groups.get(k)
        if g is None:
            groups[k] = [current, current]
            order.append(k)
            continue
        if current == g[1] + 1:
            g[1] = current
            continue
        result.append(form(k, g[0], g[1]))
        groups[k] = [current, current]
    result += [form(k, *groups[k]) for k in order]
    return ", ".join(result + mappings)


def ps_row(c: "dict[str, Any]", no_trunc: bool) -> "dict[str, Any]":
    labels = c.get("Labels") or {}
    command = c.get("Command") or ""
    created = int(c.get("Created") or 0)
    return {
        "ID": c["Id"] if no_trunc else c["Id"][:12],
        "Image": c.get("Image") or "",
        "Command": _go_quote(command if no_trunc else _ellipsis(command, 20)),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(created)),
        "RunningFor": human_duration(time.time() - created) + " ago",
        "Ports": format_ports(c.get("Ports") or []),
        "Status": c.get("Status") or "",
        "State": c.get("State") or "",
        "Size": "0B",
        "Names": ",".join(n.lstrip("/") for n in c.get("Names") or []),
        "Labels": ",".join(f"{k}={labels[k]}" for k in sorted(labels)),
        "Mounts": "",
        "Networks": ",".join(sorted((c.get("NetworkSettings") or {}).get("Networks") or {})),
        "Label": lambda key: labels.get(key, ""),
    }


# -- network ls --------------------------------------------------------------------------------

NETWORK_HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}
NETWORK_DEFAULT = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"


def network_rows(nets: "list[dict[str, Any]]", no_trunc: bool) -> "list[dict[str, Any]]":
    """`network ls` rows, sorted by name as docker sorts them."""
    return [network_row(n, no_trunc) for n in sorted(nets, key=lambda n: natural_key(n["Name"]))]


def network_row(net: "dict[str, Any]", no_trunc: bool) -> "dict[str, Any]":
    labels = net.get("Labels") or {}
    return {
        "ID": net["Id"] if no_trunc else net["Id"][:12],
        "Name": net["Name"],
        "Driver": net["Driver"],
        "Scope": net["Scope"],
        "IPv6": "true" if net.get("EnableIPv6") else "false",
        "Internal": "true" if net.get("Internal") else "false",
        "Labels": ",".join(f"{k}={labels[k]}" for k in sorted(labels)),
        "CreatedAt": net.get("Created", ""),
        "Label": lambda key: labels.get(key, ""),
    }


# -- volume ls ---------------------------------------------------------------------------------

VOLUME_HEADERS = {
    "Name": "VOLUME NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
    "Links": "LINKS",
    "Size": "SIZE",
    "CreatedAt": "CREATED AT",
    "Availability": "AVAILABILITY",
    "Group": "GROUP",
}
VOLUME_DEFAULT = "table {{.Driver}}\t{{.Name}}"


def volume_rows(answer: "dict[str, Any]") -> "list[dict[str, Any]]":
    """`volume ls` rows from GET /volumes, sorted by name as docker sorts them."""
    vols = sorted(answer.get("Volumes") or [], key=lambda v: natural_key(v["Name"]))
    return [volume_row(v) for v in vols]


def volume_row(vol: "dict[str, Any]") -> "dict[str, Any]":
    labels = vol.get("Labels") or {}
    return {
        "Name": vol["Name"],
        "Driver": vol["Driver"],
        "Scope": vol.get("Scope") or "local",
        "Mountpoint": vol.get("Mountpoint") or "",
        "Labels": ",".join(f"{k}={labels[k]}" for k in sorted(labels)),
        # docker prints N/A where the list does not carry usage data (only `system df` does).
        "Links": "N/A",
        "Size": "N/A",
        "CreatedAt": vol.get("CreatedAt") or "",
        "Availability": "N/A",
        "Group": "N/A",
        "Label": lambda key: labels.get(key, ""),
    }


# -- images ------------------------------------------------------------------------------------

IMAGE_HEADERS = {
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Containers": "CONTAINERS",
}
IMAGE_DEFAULT = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGE_DIGESTS = (
    "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
)


def image_size(n: float) -> str:
    """docker's units.HumanSizeWithPrecision(size, 3): decimal units."""
    units = ["B", "kB", "MB", "GB", "TB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    text = f"{n:.3g}"
    return f"{text}{units[i]}"


def since(ts: int) -> str:
    return human_duration(time.time() - ts) + " ago"


def image_rows(images: "list[dict[str, Any]]", no_trunc: bool) -> "list[dict[str, Any]]":
    """`images` rows: one per tag (an untagged image is <none>:<none>)."""
    rows = []
    for img in images:
        tags = img.get("RepoTags") or ["<none>:<none>"]
        digests = img.get("RepoDigests") or []
        for t in tags:
            repo, _, tag = t.rpartition(":")
            short = img["Id"] if no_trunc else img["Id"].removeprefix("sha256:")[:12]
            digest = next(
                (d.split("@", 1)[1] for d in digests if d.split("@", 1)[0] == repo), "<none>"
            )
            rows.append(
                {
                    "Repository": repo,
                    "Tag": tag,
                    "Digest": digest,
                    "ID": short,
                    "CreatedSince": since(img["Created"]),
                    "CreatedAt": time.strftime(
                        "%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(img["Created"])
                    ),
                    "Size": image_size(img.get("Size", 0)),
                    "Containers": "N/A",
                }
            )
    return rows


def image_ids(rows: "list[dict[str, Any]]") -> str:
    """`images -q`: each image once, in the order listed."""
    seen: list[str] = []
    for r in rows:
        if r["ID"] not in seen:
            seen.append(r["ID"])
    return "".join(i + "\n" for i in seen)


# -- version -----------------------------------------------------------------------------------


def client_info() -> "dict[str, Any]":
    from tether import API_VERSION, __version__

    machine = posix.uname().machine
    return {
        "Version": __version__,
        "ApiVersion": API_VERSION,
        # platform.python_version() without `platform` (it imports `re`): the same field.
        "PythonVersion": sys.version.split()[0],
        "Os": "linux",
        "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine),
    }


def version_text(client: "dict[str, Any]", server: "dict[str, Any] | None") -> str:
    out = [
        "Client:",
        f" Version:           {client['Version']}",
        f" API version:       {client['ApiVersion']}",
        f" Python version:    {client['PythonVersion']}",
        f" OS/Arch:           {client['Os']}/{client['Arch']}",
        "",
    ]
    if server is not None:
        out += [
            "Server: tether",
            " Engine:",
            f"  Version:          {server['Version']}",
            f"  API version:      {server['ApiVersion']} (minimum version {server['MinAPIVersion']})",
            f"  Python version:   {server['GoVersion'].removeprefix('python')}",
            f"  OS/Arch:          {server['Os']}/{server['Arch']}",
            f"  Kernel version:   {server['KernelVersion']}",
        ]
    return "\n".join(out) + "\n"


def version_format(fmt: str, client: "dict[str, Any]", server: "dict[str, Any] | None") -> str:
    """`version --format`: a template the engine refuses is one line and exit 1 (CliError),
    as every other --format says it."""
    from tether.cli.gotemplate import Template, TemplateError

    try:
        return Template(fmt).render({"Client": client, "Server": server})
    except TemplateError as exc:
        from tether.cli.context import CliError

        raise CliError(str(exc)) from None
