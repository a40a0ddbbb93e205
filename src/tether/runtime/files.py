"""The files each container gets: /etc/hosts, /etc/resolv.conf, /etc/hostname (pure).

Docker's formats, line for line (see ../shared/reference/docker-behavior.md, section 2).
"""

from __future__ import annotations

import ipaddress

from tether.textcheck import has_space_or_control, is_ip

EMBEDDED_DNS = "127.0.0.11"
# What Docker writes when the host offers no usable resolver (libnetwork's defaults).
DOCKER_DEFAULT_DNS = ("8.8.8.8", "8.8.4.4")

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hosts(
    hostname: str, domainname: str, addresses: list[str], extra_hosts: list[tuple[str, str]]
) -> str:
    """`addresses`: the container's own IPs in attach order; `extra_hosts`: --add-host pairs.

    The API refuses names with blanks or control characters; a value that still has one (a
    record stored before that check) is left out here rather than written, so no request can
    ever add a line of its own to the file.
    """
    out = [HOSTS_HEADER]
    for name, ip in extra_hosts:
        if _field(name) and (ip == "host-gateway" or _field(ip)):
            out.append(f"{ip}\t{name}\n")
    if not _field(hostname):
        return "".join(out)
    names = f"{hostname}.{domainname} {hostname}" if _field(domainname) else hostname
    for ip in addresses:
        out.append(f"{ip}\t{names}\n")
    return "".join(out)


def _field(value: str) -> bool:
    """One whitespace-free field of a hosts or resolv.conf line."""
    return bool(value) and not has_space_or_control(value)


def parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, search domains, options) of a resolv.conf."""
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            search = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return servers, search, options


def is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(
    host_resolv: str,
    dns: list[str],
    dns_search: list[str],
    dns_options: list[str],
    embedded: bool,
) -> tuple[str, list[str]]:
    """The container's resolv.conf, and the upstream servers its lookups should go to.

    With the embedded DNS (user-defined networks) the file names 127.0.0.11 and the upstreams
    are the --dns servers, else the host's; Docker adds `ndots:0` unless the user set ndots.
    A loopback resolver of the host (127.0.0.53, say) cannot be reached from a container's own
    namespace: the embedded DNS asks it from the host's namespace instead (as newer Docker
    does).  Without the embedded DNS (default bridge) the file names the upstreams directly,
    so loopback ones are dropped, and with none left Docker's defaults are used.
    """
    host_servers, host_search, host_options = parse_resolv(host_resolv)
    # Fields the API checked; anything that would still break a line is dropped (see hosts).
    dns = [s for s in dns if is_ip(s)]
    dns_search = [d for d in dns_search if _field(d)]
    dns_options = [o for o in dns_options if _field(o)]
    if dns:
        upstream = list(dns)
    elif embedded:
        upstream = list(host_servers)
    else:
        upstream = [s for s in host_servers if not is_loopback(s)]
    if not upstream:
        upstream = list(DOCKER_DEFAULT_DNS)
    search = list(dns_search) if dns_search else host_search
    options = list(dns_options) if dns_options else host_options
    lines: list[str] = []
    if search and search != ["."]:
        lines.append("search " + " ".join(search))
    if embedded:
        lines.append(f"nameserver {EMBEDDED_DNS}")
        if not any(o.startswith("ndots:") for o in options):
            options = [*options, "ndots:0"]
    else:
        lines += [f"nameserver {s}" for s in upstream]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n", upstream


def hostname_file(hostname: str) -> str:
    return hostname + "\n"
