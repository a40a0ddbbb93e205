"""-v/--volume, --mount, --tmpfs and --restart as docker's CLI parses them, before it calls
the daemon: docker/cli's opts/mount.go (MountOpt.Set), compose's loader.ParseVolume (which
`docker run -v` uses) and opts.ParseRestartPolicy, with their words.  What the CLI lets
through (an unknown mount type, an unknown restart policy) the daemon refuses, as dockerd
does, so both clients get the same answer from tetherd.  Pure: no imports beyond os.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

_BIND_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


def _absolute(src: str) -> str:
    # docker makes "./x" and "." absolute against the caller's directory; "~" and "x/y" not.
    if src == "." or src.startswith("./"):
        return os.path.abspath(src)
    return src


def _csv_fields(value: str) -> list[str]:
    """One CSV record (Go's encoding/csv: quotes around a field, "" inside)."""
    fields: list[str] = []
    buf: list[str] = []
    i, n = 0, len(value)
    at_start = True
    while i < n:
        c = value[i]
        if at_start and c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError(
                        f'parse error on line 1, column {n + 1}: extraneous or missing " '
                        "in quoted-field"
                    )
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(value[i])
                i += 1
            at_start = False
            continue
        if c == ",":
            fields.append("".join(buf))
            buf = []
            at_start = True
        else:
            buf.append(c)
            at_start = False
        i += 1
    fields.append("".join(buf))
    return fields


def _parse_bool(text: str) -> bool:
    # Go's strconv.ParseBool
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def parse_mount(value: str) -> dict[str, Any]:
    """One --mount value as the API's Mount object, or ValueError in docker's words."""
    from tether.unsupported import ram_in_bytes

    mount: dict[str, Any] = {"Type": "volume"}  # docker's default: a volume mount
    volume: dict[str, Any] | None = None
    bind: dict[str, Any] | None = None
    tmpfs: dict[str, Any] | None = None

    def volume_options() -> dict[str, Any]:
        nonlocal volume
        if volume is None:
            volume = {}
        return volume

    def bind_options() -> dict[str, Any]:
        nonlocal bind
        if bind is None:
            bind = {}
        return bind

    def tmpfs_options() -> dict[str, Any]:
        nonlocal tmpfs
        if tmpfs is None:
            tmpfs = {}
        return tmpfs

    def set_on_map(target: dict[str, str], text: str) -> None:
        k, _, v = text.partition("=")
        if k:
            target[k] = v

    for field in _csv_fields(value):
        key, eq, val = field.partition("=")
        key = key.lower()  # docker: keys are case-insensitive (for now)
        if not eq:
            if key in ("readonly", "ro"):
                mount["ReadOnly"] = True
            elif key == "volume-nocopy":
                volume_options()["NoCopy"] = True
            elif key == "bind-nonrecursive":
                bind_options()["NonRecursive"] = True
            else:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
            continue
        if key == "type":
            mount["Type"] = val.lower()
        elif key in ("source", "src"):
            mount["Source"] = _absolute(val)
        elif key in ("target", "dst", "destination"):
            mount["Target"] = val
        elif key in ("readonly", "ro"):
            try:
                mount["ReadOnly"] = _parse_bool(val)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {val}") from None
        elif key == "consistency":
            mount["Consistency"] = val.lower()
        elif key == "bind-propagation":
            bind_options()["Propagation"] = val.lower()
        elif key == "bind-nonrecursive":
            try:
                bind_options()["NonRecursive"] = _parse_bool(val)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {val}") from None
        elif key == "volume-nocopy":
            try:
                volume_options()["NoCopy"] = _parse_bool(val)
            except ValueError:
                raise ValueError(f"invalid value for volume-nocopy: {val}") from None
        elif key == "volume-label":
            set_on_map(volume_options().setdefault("Labels", {}), val)
        elif key == "volume-driver":
            volume_options().setdefault("DriverConfig", {})["Name"] = val
        elif key == "volume-opt":
            config = volume_options().setdefault("DriverConfig", {})
            set_on_map(config.setdefault("Options", {}), val)
        elif key == "volume-subpath":
            volume_options()["Subpath"] = val
        elif key == "tmpfs-size":
            try:
                tmpfs_options()["SizeBytes"] = ram_in_bytes(val)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {val}") from None
        elif key == "tmpfs-mode":
            try:
                mode = int(val, 8)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {val}") from None
            if not 0 <= mode < 1 << 32:
                raise ValueError(f"invalid value for {key}: {val}")
            tmpfs_options()["Mode"] = mode
        else:
            raise ValueError(f"unexpected key '{key}' in '{field}'")

    if not mount["Type"]:
        raise ValueError("type is required")
    if not mount.get("Target"):
        raise ValueError("target is required")
    if volume is not None and mount["Type"] != "volume":
        raise ValueError(f"cannot mix 'volume-*' options with mount type '{mount['Type']}'")
    if bind is not None and mount["Type"] != "bind":
        raise ValueError(f"cannot mix 'bind-*' options with mount type '{mount['Type']}'")
    if tmpfs is not None and mount["Type"] != "tmpfs":
        raise ValueError(f"cannot mix 'tmpfs-*' options with mount type '{mount['Type']}'")
    if volume is not None:
        mount["VolumeOptions"] = volume
    if bind is not None:
        mount["BindOptions"] = bind
    if tmpfs is not None:
        mount["TmpfsOptions"] = tmpfs
    return mount


def check_mount(value: str) -> str:
    """The --mount flag's validator (pflag Value.Set): the value, or ValueError."""
    parse_mount(value)
    return value


def _is_file_path(source: str) -> bool:
    return bool(source) and source[0] in "./~"


def parse_volume(spec: str) -> dict[str, Any]:
    """One -v value as compose's loader.ParseVolume reads it: {Type, Source, Target,
    ReadOnly}; ValueError "invalid spec: SPEC: ..." as docker says it."""
    out: dict[str, Any] = {"Type": "volume", "Source": "", "Target": "", "ReadOnly": False}
    if not spec:
        raise ValueError("invalid empty volume spec")
    if len(spec) <= 2:
        out["Target"] = spec
        return out
    sections = spec.split(":")
    for i, section in enumerate(sections):
        last = i == len(sections) - 1
        if not section:
            raise ValueError(f"invalid spec: {spec}: empty section between colons")
        if not out["Source"] and last and not out["Target"]:
            out["Target"] = section  # an anonymous volume
        elif not out["Source"]:
            out["Source"] = section
        elif not out["Target"]:
            out["Target"] = section
        elif not last:
            raise ValueError(f"invalid spec: {spec}: too many colons")
        else:
            for option in section.split(","):
                if option == "ro":
                    out["ReadOnly"] = True
                elif option == "rw":
                    out["ReadOnly"] = False
                # other options (z, Z, nocopy, propagation) go on to the daemon unread
    if out["Source"] and _is_file_path(out["Source"]):
        out["Type"] = "bind"
    return out


def volume_binds(values: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """-v values -> (HostConfig.Binds, Config.Volumes) as docker run sends them: a value with
    a source is a bind (a relative "./x" made absolute), one without an anonymous volume."""
    binds: list[str] = []
    anonymous: dict[str, dict[str, Any]] = {}
    for spec in values:
        parsed = parse_volume(spec)
        if not parsed["Source"]:
            anonymous[spec] = {}
            continue
        if parsed["Type"] == "bind":
            host, _, rest = spec.partition(":")
            spec = f"{_absolute(host)}:{rest}"
        binds.append(spec)
    return binds, anonymous


def parse_tmpfs(values: list[str]) -> dict[str, str]:
    """--tmpfs /run[:OPTIONS] -> HostConfig.Tmpfs."""
    out: dict[str, str] = {}
    for value in values:
        path, _, options = value.partition(":")
        out[path] = options
    return out


def parse_restart(policy: str) -> dict[str, Any]:
    """--restart -> HostConfig.RestartPolicy (opts.ParseRestartPolicy); the policy's name is
    checked by the daemon, as docker's CLI leaves it to dockerd."""
    if not policy:
        return {}
    name, colon, count = policy.partition(":")
    if colon and not name:
        raise ValueError("invalid restart policy format: no policy provided before colon")
    out: dict[str, Any] = {"Name": name}
    if count:
        try:
            out["MaximumRetryCount"] = int(count)
        except ValueError:
            raise ValueError(
                "invalid restart policy format: maximum retry count must be an integer"
            ) from None
    return out
