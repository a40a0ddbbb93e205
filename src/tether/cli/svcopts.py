"""Parsing of `service create|update` values as docker's CLI reads them (pure).

--publish (short `8080:80/udp` and long `published=8080,target=80,protocol=tcp,mode=host`),
--network (a name, or `name=X,alias=Y,driver-opt=K=V`), Go durations (`1m30s`), --env-file.
"""

from __future__ import annotations

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

PROTOCOLS = ("tcp", "udp", "sctp")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_UNITS["h"] = 3600 * 10**9


def parse_duration_ns(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds ("0", "10s", "1m30s", "500ms", "1.5h")."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    neg = s.startswith("-")
    s = s.lstrip("+-")
    total = 0.0
    i = 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    while i < len(s):
        j = i
        while j < len(s) and (s[j].isdigit() or s[j] == "."):
            j += 1
        if j == i:
            raise ValueError(f'time: invalid duration "{text}"')
        number = s[i:j]
        k = j
        while k < len(s) and not (s[k].isdigit() or s[k] == "."):
            k += 1
        unit = s[j:k]
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        try:
            total += float(number) * _UNITS[unit]
        except ValueError:
            raise ValueError(f'time: invalid duration "{text}"') from None
        i = k
    return -int(total) if neg else int(total)


def format_duration(ns: int) -> str:
    """Go's Duration.String(): 5s, 1m30s, 500ms, 0s."""
    if ns == 0:
        return "0s"
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                v = ns / size
                return f"{v:g}{unit}"
    secs = ns / 1e9
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    out = ""
    if h:
        out += f"{int(h)}h"
    if h or m:
        out += f"{int(m)}m"
    return out + f"{s:g}s"


def _port_number(text: str, what: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"invalid {what} port: {text}")
    return int(text)


def _port_range(text: str, what: str) -> list[int]:
    lo, sep, hi = text.partition("-")
    a = _port_number(lo, what)
    b = _port_number(hi, what) if sep else a
    if b < a:
        raise ValueError(f"invalid range specified for {what} port: {text}")
    return list(range(a, b + 1))


def parse_publish(value: str) -> list[dict[str, Any]]:
    """One --publish value as swarm PortConfigs (docker's opts.PortOpt.Set)."""
    if "=" in value:
        port: dict[str, Any] = {"Protocol": "tcp", "PublishMode": "ingress"}
        for field in value.split(","):
            key, sep, val = field.partition("=")
            key = key.strip().lower()
            if not sep or not val:
                raise ValueError(f"invalid field {field}: must be a key=value pair")
            if key == "mode":
                if val not in ("ingress", "host"):
                    raise ValueError(
                        f"invalid publish mode value ({val}): must be either 'ingress' or 'host'"
                    )
                port["PublishMode"] = val
            elif key == "target":
                port["TargetPort"] = _port_number(val, "target")
            elif key == "published":
                port["PublishedPort"] = _port_number(val, "published")
            elif key == "protocol":
                if val not in PROTOCOLS:
                    raise ValueError(f"invalid protocol value '{val}'")
                port["Protocol"] = val
            else:
                raise ValueError(f"invalid field key: {key}")
        if not port.get("TargetPort"):
            raise ValueError(f"missing mandatory field 'target': {value}")
        return [port]
    spec, _, proto = value.partition("/")
    proto = proto or "tcp"
    if proto not in PROTOCOLS:
        raise ValueError(f"invalid proto: {proto}")
    parts = spec.split(":")
    if len(parts) > 2:
        raise ValueError("hostip is not supported")
    if len(parts) == 2:
        published, target = parts
    else:
        published, target = "", parts[0]
    targets = _port_range(target, "container")
    publisheds = _port_range(published, "host") if published else []
    if publisheds and len(publisheds) != len(targets) and len(targets) != 1:
        raise ValueError(f"invalid ranges specified for container and host Ports: {value}")
    out = []
    for i, p in enumerate(publisheds or [0] * len(targets)):
        out.append(
            {
                "Protocol": proto,
                "TargetPort": targets[i] if len(targets) > 1 else targets[0],
                "PublishedPort": p,
                "PublishMode": "ingress",
            }
        )
    return out


def parse_network(value: str) -> dict[str, Any]:
    """One --network value as a NetworkAttachmentConfig (docker's opts.NetworkOpt.Set)."""
    if "=" not in value:
        return {"Target": value}
    att: dict[str, Any] = {}
    aliases: list[str] = []
    opts: dict[str, str] = {}
    for field in value.split(","):
        key, sep, val = field.partition("=")
        if not sep:
            raise ValueError(f"invalid field '{field}' must be a key=value pair")
        key = key.strip().lower()
        if key == "name":
            att["Target"] = val
        elif key == "alias":
            aliases.append(val)
        elif key == "driver-opt":
            k, sep2, v = val.partition("=")
            if not sep2:
                raise ValueError(f"invalid key value pair format in driver options: {val}")
            opts[k] = v
        else:
            raise ValueError(f"invalid field key {key}")
    if not att.get("Target"):
        raise ValueError("network name/id is not specified")
    if aliases:
        att["Aliases"] = aliases
    if opts:
        att["DriverOpts"] = opts
    return att


def read_env_file(path: str, environ: dict[str, str]) -> list[str]:
    """docker's --env-file: KEY=VALUE lines; KEY alone takes the shell's value (or is left
    out); '#' comments and blank lines skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(f"open {path}: no such file or directory") from None
    except OSError as exc:
        raise ValueError(f"open {path}: {exc.strerror or exc}") from None
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, val = line.partition("=")
        if not key:
            raise ValueError(f"no variable name on line '{raw}'")
        if " " in key.strip() or "\t" in key:
            raise ValueError(f"variable '{key}' contains whitespaces")
        if sep:
            out.append(f"{key}={val}")
        elif key.strip() in environ:
            out.append(f"{key.strip()}={environ[key.strip()]}")
        del n
    return out


def trim_image(image: str) -> str:
    """The image as docker's tables show it: no digest, familiar name."""
    name = image.split("@", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def ports_text(ports: list[dict[str, Any]]) -> str:
    """`service ls`'s PORTS: ingress ports, consecutive ones grouped (docker's portRange)."""
    ingress = sorted(
        (p for p in ports or [] if (p.get("PublishMode") or "ingress") == "ingress"),
        key=lambda p: (p.get("Protocol") or "tcp", p.get("PublishedPort") or 0),
    )
    out: list[str] = []
    cur: list[Any] | None = None  # [pStart, pEnd, tStart, tEnd, proto]

    def show(r: list[Any]) -> str:
        pub = f"{r[0]}-{r[1]}" if r[1] > r[0] else str(r[0])
        tgt = f"{r[2]}-{r[3]}" if r[3] > r[2] else str(r[2])
        return f"*:{pub}->{tgt}/{r[4]}"

    for p in ingress:
        pub, tgt, proto = p.get("PublishedPort") or 0, p["TargetPort"], p.get("Protocol") or "tcp"
        if cur is None:
            cur = [pub, pub, tgt, tgt, proto]
            continue
        is_range = cur[3] != cur[2]
        if proto != cur[4] or pub - cur[1] > 1 or tgt - cur[3] > 1 or (is_range and tgt <= cur[3]):
            if cur[0] > 0:
                out.append(show(cur))
            cur = [pub, pub, tgt, tgt, proto]
            continue
        cur[1], cur[3] = pub, tgt
    if cur is not None and cur[0] > 0:
        out.append(show(cur))
    return ", ".join(out)
