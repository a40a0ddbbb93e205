"""Checks on text that ends up in a file, a kernel object or a firewall rule (pure).

Shared by the CLI (docker's client-side checks, before any call) and the daemon's API edge
(`tether.api`), so both refuse the same values.  A newline in a hostname or a DNS search
domain is a new line in the container's /etc/hosts or /etc/resolv.conf, and a NUL cannot
cross execve or a C string at all; so every value that lands in such a place is checked
here, once.  Kept free of `re`, `ipaddress` and `typing`: the CLI imports it at start-up.
"""

from __future__ import annotations

import _socket

# Linux's HOST_NAME_MAX: sethostname(2) refuses longer names.
HOSTNAME_MAX = 64
_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F))
_SPACE = frozenset(" \t\n\r\x0b\x0c")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def has_control(text: str) -> bool:
    """Any ASCII control character (newline, carriage return, tab, NUL, escape, DEL...)."""
    return not _CONTROL.isdisjoint(text)


def has_space_or_control(text: str) -> bool:
    return has_control(text) or " " in text


def go_quote(text: str) -> str:
    """Go's %q of a string: how docker shows a value with newlines in an error message."""
    out = ['"']
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch in _CONTROL:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def shown(text: str) -> str:
    """A value as an error message shows it: as is, or Go-quoted if it holds control chars
    (so an injected line never becomes a line of its own in the message)."""
    return go_quote(text) if has_control(text) else text


def is_ip(text: str) -> bool:
    """Go's net.ParseIP: dotted IPv4 (no leading zeros) or IPv6 without a zone."""
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, text)
            return True
        except (OSError, ValueError):
            continue
    return False


def ip_version(text: str) -> int:
    """4 or 6 for an address is_ip accepts, else 0."""
    for family, version in ((_socket.AF_INET, 4), (_socket.AF_INET6, 6)):
        try:
            _socket.inet_pton(family, text)
            return version
        except (OSError, ValueError):
            continue
    return 0


def check_ip(value: str) -> str:
    """docker's opts.ValidateIPAddress (--dns): surrounding blanks allowed, returned trimmed."""
    text = value.strip(" \t\n\r\x0b\x0c")
    if not is_ip(text):
        raise ValueError(f"IP address is not correctly formatted: {shown(value)}")
    return text


def _domain_label(label: str) -> bool:
    # docker's domainRegexp writes "(:?" where it means "(?:", so each label may start with
    # one ':'; kept for the same answers as docker.
    if label.startswith(":"):
        label = label[1:]
    if not label or not _ALNUM.issuperset(label.replace("-", "")):
        return False
    return label[0] in _ALNUM and label[-1] in _ALNUM


def check_dns_search(value: str) -> str:
    """docker's opts.ValidateDNSSearch: "." or a domain name, returned normalized.

    Docker's regular expression allows trailing whitespace (newlines included) and strips
    it; anything after a newline makes the domain invalid, so an injected resolv.conf line
    never passes.
    """
    val = value.strip(" ")
    if val == ".":
        return val
    if _LETTERS.isdisjoint(val):
        raise ValueError(f"{shown(value)} is not a valid domain")
    name = val.rstrip(" \t\n\r\x0b\x0c")
    body = name[:-1] if name.endswith(".") else name
    if body and len(name) < 255 and all(_domain_label(part) for part in body.split(".")):
        return name
    raise ValueError(f"{shown(value)} is not a valid domain")


def check_dns_option(value: str) -> str:
    """A resolv.conf option (ndots:2, rotate, ...): one word, no blanks or control chars."""
    if not value or has_space_or_control(value):
        raise ValueError(f"invalid DNS option: {go_quote(value)}")
    return value


def check_hostname(value: str) -> str:
    """A hostname that sethostname(2) takes and that fits one /etc/hosts field."""
    if has_space_or_control(value) or len(value.encode()) > HOSTNAME_MAX:
        raise ValueError(f"invalid hostname format: {shown(value)}")
    return value


def check_domainname(value: str) -> str:
    if has_space_or_control(value) or len(value.encode()) > 255:
        raise ValueError(f"invalid domainname format: {shown(value)}")
    return value


def check_extra_host(value: str) -> str:
    """The daemon's opts.ValidateExtraHost: NAME:IP (or NAME:host-gateway).

    Docker checks only the address; the name is one field of an /etc/hosts line, so blanks
    and control characters in it are refused too, with docker's message for a bad entry.
    """
    name, sep, ip = value.partition(":")
    if not sep or not name or has_space_or_control(name):
        raise ValueError(f"bad format for add-host: {go_quote(value)}")
    if ip != "host-gateway":
        addr = ip[1:-1] if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]" else ip
        if not is_ip(addr):
            raise ValueError(f"invalid IP address in add-host: {go_quote(ip)}")
    return value


def check_env(value: str) -> str:
    """docker's opts.ValidateEnv (an empty name), plus what execve and a shell cannot take:
    NUL anywhere, control characters in the name.  Values may hold newlines, as in docker."""
    key, _, _ = value.partition("=")
    if not key:
        raise ValueError(f"invalid environment variable: {shown(value)}")
    if "\x00" in value or has_control(key):
        raise ValueError(f"invalid environment variable: {go_quote(value)}")
    return value


def check_label(key: str, value: str) -> None:
    """Label keys and values: no control characters (docker's CLI also refuses blanks in keys)."""
    if not key:
        raise ValueError(f"invalid label '{shown(key)}={shown(value)}': empty name")
    if has_control(key) or has_control(value):
        raise ValueError(
            f"invalid label {go_quote(key + '=' + value)}: control characters are not allowed"
        )


def check_alias(value: str) -> str:
    """A network alias is a DNS name the embedded resolver answers: one word."""
    if not value or has_space_or_control(value):
        raise ValueError(f"invalid network alias: {go_quote(value)}")
    return value


def check_extra_host_arg(value: str) -> str:
    """docker's client-side opts.ValidateExtraHost for --add-host: NAME:IP or NAME=IP, the
    address optionally in brackets; returned as the daemon takes it (NAME:IP)."""
    name, sep, ip = value.partition("=")
    if not sep:
        name, sep, ip = value.partition(":")
    if not sep or not name or ":" in name or has_space_or_control(name):
        raise ValueError(f"bad format for add-host: {go_quote(value)}")
    if ip != "host-gateway":
        if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
            ip = ip[1:-1]
        if not is_ip(ip.strip(" \t\n\r\x0b\x0c")) or has_control(ip):
            raise ValueError(f"invalid IP address in add-host: {go_quote(ip)}")
    return f"{name}:{ip}"


def check_label_arg(value: str) -> str:
    """docker's opts.ValidateLabel for --label KEY[=VALUE], and no control characters."""
    key, _, val = value.partition("=")
    key = key.lstrip(" \t")
    if not key:
        raise ValueError(f"invalid label '{shown(value)}': empty name")
    if " " in key or "\t" in key:
        raise ValueError(f"label '{shown(key)}' contains whitespaces")
    check_label(key, val)
    return value


def check_plain(value: str) -> str:
    """Any value that lands in a file or a rule: no control characters."""
    if has_control(value):
        raise ValueError(f"{go_quote(value)}: control characters are not allowed")
    return value
