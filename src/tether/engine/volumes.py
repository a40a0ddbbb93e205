"""Volumes and mounts: `docker volume create|ls|inspect|rm|prune`, and -v/--mount/--tmpfs of a
container resolved into what tether-shim mounts.

A volume is a directory, `ROOT/volumes/<name>/_data`, as Docker's local driver keeps them;
its record (name, labels, creation time) is in the store.  A container's mounts are resolved
once, at create, into the records inspect shows (`Mounts`), with Docker's rules and words:
-v with a host path makes a missing directory, --mount type=bind does not; a name (or a
VOLUME of the image, or Config.Volumes) is a volume, made when first named.  What the local
driver's options would do (nfs, a device) and what tether cannot mount is refused by name.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from typing import Any

from tether.api.containers import HostConfig, Mount
from tether.engine.filters import Filters, check_keys, label_match
from tether.errors import Conflict, InvalidParameter, NotFound, SystemFailure
from tether.model import Container
from tether.mountmodes import DEFAULT_PROPAGATION, PROPAGATIONS, valid_mode
from tether.store.sqlite import Store
from tether.timefmt import now_iso

VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
ANONYMOUS = "com.docker.volume.anonymous"
VOLUME_FILTERS = {"name", "label", "driver", "dangling", "all"}


class Volumes:
    def __init__(self, store: Store, root: str) -> None:
        self.store = store
        self.dir = os.path.join(root, "volumes")
        os.makedirs(self.dir, mode=0o701, exist_ok=True)
        self.by_name: dict[str, dict[str, Any]] = {}

    def load(self) -> None:
        self.by_name = {v["Name"]: v for v in self.store.load("volume")}

    # -- the volume API ----------------------------------------------------------------------

    def create(
        self,
        name: str | None,
        driver: str | None = None,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        driver = driver or "local"
        if driver != "local":
            raise NotFound(f'error looking up volume plugin {driver}: plugin "{driver}" not found')
        if options:
            raise InvalidParameter(
                "tether does not support options of the local volume driver yet "
                f"({', '.join(sorted(options))}): volumes are directories under its root"
            )
        anonymous = not name
        if not name:
            name = secrets.token_hex(32)
        if not VOLUME_NAME.fullmatch(name):
            raise InvalidParameter(
                f'create {name}: "{name}" includes invalid characters for a local volume name, '
                'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                "directory, use absolute path"
            )
        existing = self.by_name.get(name)
        if existing is not None:
            return self.view(existing)
        data = os.path.join(self.dir, name, "_data")
        os.makedirs(data, mode=0o755, exist_ok=True)
        os.chmod(os.path.join(self.dir, name), 0o701)
        labels = dict(labels or {})
        if anonymous:
            labels[ANONYMOUS] = ""
        vol = {
            "Name": name,
            "Driver": "local",
            "Mountpoint": data,
            "CreatedAt": now_iso(),
            "Labels": labels,
            "Scope": "local",
            "Options": None,
        }
        with self.store.transaction():
            self.store.put("volume", name, name, vol)
        self.by_name[name] = vol
        return self.view(vol)

    def view(self, vol: dict[str, Any]) -> dict[str, Any]:
        return {**vol, "Labels": vol.get("Labels") or None}

    def find(self, name: str) -> dict[str, Any]:
        vol = self.by_name.get(name)
        if vol is None:
            raise NotFound(f"get {name}: no such volume")
        return vol

    def users(self, name: str, containers: Iterable[Container]) -> list[str]:
        return [c.id for c in containers if any(m.get("Name") == name for m in c.mounts or [])]

    def remove(self, name: str, containers: Iterable[Container], force: bool = False) -> None:
        vol = self.by_name.get(name)
        if vol is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        users = self.users(name, containers)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        with self.store.transaction():
            self.store.delete("volume", name)
        self.by_name.pop(name, None)
        shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)

    def query(self, filters: Filters, containers: list[Container]) -> list[dict[str, Any]]:
        check_keys(filters, VOLUME_FILTERS)
        out = []
        for vol in sorted(self.by_name.values(), key=lambda v: v["Name"]):
            if "name" in filters and not any(n in vol["Name"] for n in filters["name"]):
                continue
            if "driver" in filters and vol["Driver"] not in filters["driver"]:
                continue
            if "label" in filters and not label_match(filters["label"], vol.get("Labels") or {}):
                continue
            if "dangling" in filters:
                dangling = not self.users(vol["Name"], containers)
                want = {v.lower() in ("1", "true") for v in filters["dangling"]}
                if dangling not in want:
                    continue
            out.append(self.view(vol))
        return out

    def prune(
        self, filters: Filters, containers: list[Container], anonymous_only: bool
    ) -> tuple[list[str], int]:
        check_keys(filters, {"label", "all"})
        if any(v.lower() in ("1", "true") for v in filters.get("all", [])):
            anonymous_only = False
        deleted: list[str] = []
        space = 0
        for vol in list(self.by_name.values()):
            labels = vol.get("Labels") or {}
            if anonymous_only and ANONYMOUS not in labels:
                continue
            if "label" in filters and not label_match(filters["label"], labels):
                continue
            if self.users(vol["Name"], containers):
                continue
            space += _du(vol["Mountpoint"])
            self.remove(vol["Name"], containers)
            deleted.append(vol["Name"])
        return deleted, space

    # -- a container's mounts ------------------------------------------------------------------

    def resolve(
        self,
        hc: HostConfig,
        volumes: Iterable[str],
        find_container: Callable[[str], Container],
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """HostConfig.Binds, Mounts, Tmpfs, VolumesFrom and Config/image Volumes as the
        records inspect shows (volumes made as named); the later of two on one path wins,
        as dockerd's do (explicit ones over anonymous ones).  Also the (volume, path) pairs
        to fill from the image (runtime/volfill.py): volumes but those of --volumes-from
        and those mounted with nocopy."""
        out: dict[str, dict[str, Any]] = {}
        copy: dict[str, bool] = {}  # destination -> filled from the image
        for entry in hc.VolumesFrom or []:
            name, _, mode = entry.partition(":")
            if mode not in ("", "ro", "rw"):
                raise InvalidParameter(f"invalid mode for volumes-from: {mode}")
            try:
                other = find_container(name)
            except NotFound:
                raise NotFound(f"No such container: {name}") from None
            for m in other.mounts:
                theirs = dict(m)
                if mode:
                    theirs["RW"] = mode == "rw"
                out[m["Destination"]] = theirs
                copy[m["Destination"]] = False
        for spec in hc.Binds or []:
            m = self._bind_spec(spec)
            out[m["Destination"]] = m
            copy[m["Destination"]] = "nocopy" not in str(m["Mode"]).split(",")
        for mount in hc.Mounts or []:
            m = self._mount(mount)
            if m["Destination"] in out:
                raise InvalidParameter(f"Duplicate mount point: {m['Destination']}")
            out[m["Destination"]] = m
            copy[m["Destination"]] = not (mount.VolumeOptions and mount.VolumeOptions.NoCopy)
        for dst, options in (hc.Tmpfs or {}).items():
            _check_target(dst, "tmpfs")
            out[dst] = _tmpfs(dst, options)
        for dst in volumes:
            if dst not in out:
                _check_target(dst, "volume")
                vol = self.create(None)
                out[dst] = _volume(vol, dst, True, "")
                copy[dst] = True
        fill = [
            (str(m["Name"]), dst)
            for dst, m in out.items()
            if m["Type"] == "volume" and copy.get(dst, False)
        ]
        return list(out.values()), fill

    def _bind_spec(self, spec: str) -> dict[str, Any]:
        """One -v SRC:DST[:MODE] (or DST alone: an anonymous volume)."""
        parts = spec.split(":")
        if len(parts) == 1:
            _check_target(parts[0], "volume", spec)
            return _volume(self.create(None), parts[0], True, "")
        if len(parts) > 3 or not parts[0] or not parts[1]:
            raise InvalidParameter(f"invalid volume specification: '{spec}'")
        src, dst = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else ""
        if not valid_mode(mode):
            raise InvalidParameter(f"invalid mode: {mode}")
        words = mode.split(",")
        rw = "ro" not in words
        propagation = next((w for w in words if w in PROPAGATIONS), "")
        if src.startswith("/"):
            _check_target(dst, "bind", spec)
            if "nocopy" in words:
                raise InvalidParameter(
                    f"invalid volume specification: '{spec}': invalid mount config for type "
                    '"bind": field VolumeOptions must not be specified'
                )
            if not os.path.exists(src):
                # -v makes a missing host directory (--mount does not), as dockerd does.
                os.makedirs(src, mode=0o755, exist_ok=True)
            return {
                "Type": "bind",
                "Source": src,
                "Destination": dst,
                "Mode": mode,
                "RW": rw,
                "Propagation": propagation or DEFAULT_PROPAGATION,
            }
        _check_target(dst, "volume", spec)
        if propagation:
            raise InvalidParameter(
                f"invalid volume specification: '{spec}': invalid mount config for type "
                '"volume": field BindOptions must not be specified'
            )
        if not VOLUME_NAME.fullmatch(src):
            raise InvalidParameter(
                f'create {src}: "{src}" includes invalid characters for a local volume name, '
                'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                "directory, use absolute path"
            )
        return _volume(self.create(src), dst, rw, mode or "z")

    def _mount(self, m: Mount) -> dict[str, Any]:
        kind = m.Type or ""
        target = m.Target or ""
        if kind not in ("bind", "volume", "tmpfs"):
            if kind in ("npipe", "cluster", "image"):
                raise InvalidParameter(f"tether does not support mounts of type {kind!r}")
            raise InvalidParameter(
                f"mount type unknown: {kind!r}" if kind else "mount type unknown"
            )
        if not target:
            raise InvalidParameter(
                f'invalid mount config for type "{kind}": field Target must not be empty'
            )
        _check_target(target, kind)
        # dockerd's validateExclusiveOptions: each type's options on that type only.
        for field, owner in (
            ("BindOptions", "bind"),
            ("VolumeOptions", "volume"),
            ("TmpfsOptions", "tmpfs"),
        ):
            if kind != owner and getattr(m, field) is not None:
                raise InvalidParameter(
                    f'invalid mount config for type "{kind}": field {field} must not be specified'
                )
        rw = not m.ReadOnly
        if kind == "bind":
            src = m.Source or ""
            if not src:
                raise InvalidParameter(
                    'invalid mount config for type "bind": field Source must not be empty'
                )
            opts = m.BindOptions
            propagation = (opts.Propagation or "") if opts is not None else ""
            if propagation and propagation not in PROPAGATIONS:
                raise InvalidParameter(
                    f'invalid mount config for type "bind": invalid propagation mode: {propagation}'
                )
            if not os.path.exists(src):
                if opts is None or not opts.CreateMountpoint:
                    raise InvalidParameter(
                        'invalid mount config for type "bind": bind source path does not '
                        f"exist: {src}"
                    )
                os.makedirs(src, mode=0o755, exist_ok=True)
            if opts is not None and (opts.NonRecursive or opts.ReadOnlyNonRecursive):
                raise InvalidParameter(
                    "tether does not support non-recursive bind mounts yet: binds are recursive"
                )
            return {
                "Type": "bind",
                "Source": src,
                "Destination": target,
                "Mode": "",
                "RW": rw,
                "Propagation": propagation or DEFAULT_PROPAGATION,
            }
        if kind == "volume":
            vo = m.VolumeOptions
            driver = vo.DriverConfig.Name if vo and vo.DriverConfig else None
            driver_opts = vo.DriverConfig.Options if vo and vo.DriverConfig else None
            if vo is not None and vo.Subpath:
                raise InvalidParameter("tether does not support volume subpaths yet")
            vol = self.create(m.Source or None, driver, driver_opts, vo.Labels if vo else None)
            return _volume(vol, target, rw, "z")
        t = m.TmpfsOptions
        options = []
        if t is not None and t.SizeBytes:
            options.append(f"size={t.SizeBytes}")
        if t is not None and t.Mode:
            options.append(f"mode={t.Mode:o}")
        entry = _tmpfs(target, ",".join(options))
        entry["RW"] = rw
        return entry


def check_propagation(
    mounts: list[dict[str, Any]], mountinfo: str = "/proc/self/mountinfo"
) -> None:
    """dockerd's ensureShared / ensureSharedOrSlave at start: a bind that shares its mounts
    needs its source on a shared mount of the host, one that receives them a shared or slave
    one (the kernel would otherwise give the container a mount that propagates nothing)."""
    binds = [
        m
        for m in mounts
        if m.get("Type") == "bind" and m.get("Propagation") not in ("", "private", "rprivate")
    ]
    if not binds:
        return
    with open(mountinfo) as f:
        table = [_mountinfo_entry(line) for line in f]
    for m in binds:
        path = os.path.realpath(str(m["Source"]))
        best, optional = "", ""
        for point, opts in table:
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(
                best
            ):
                best, optional = point, opts  # later entries win: they are mounted on top
        fields = optional.split()
        shared = any(f.startswith("shared:") for f in fields)
        slave = any(f.startswith("master:") for f in fields)
        if "shared" in m["Propagation"] and not shared:
            raise SystemFailure(
                f"path {m['Source']} is mounted on {best} but it is not a shared mount"
            )
        if "slave" in m["Propagation"] and not (shared or slave):
            raise SystemFailure(
                f"path {m['Source']} is mounted on {best} but it is not a shared or slave mount"
            )


def _mountinfo_entry(line: str) -> tuple[str, str]:
    """(mount point, optional fields) of a /proc/self/mountinfo line."""
    fields = line.split()
    end = fields.index("-")
    point = re.sub(r"\\([0-7]{3})", lambda x: chr(int(x[1], 8)), fields[4])
    return point, " ".join(fields[6:end])


def _check_target(dst: str, kind: str, spec: str = "") -> None:
    if not dst.startswith("/"):
        what = f"invalid mount config for type \"{kind}\": invalid mount path: '{dst}' mount path must be absolute"
        raise InvalidParameter(f"invalid volume specification: '{spec}': {what}" if spec else what)
    if os.path.normpath(dst) == "/":
        raise InvalidParameter(
            f"invalid volume specification: '{spec or dst}': invalid mount config for type "
            f"\"{kind}\": invalid specification: destination can't be '/'"
        )


def _volume(vol: dict[str, Any], dst: str, rw: bool, mode: str) -> dict[str, Any]:
    return {
        "Type": "volume",
        "Name": vol["Name"],
        "Source": vol["Mountpoint"],
        "Destination": dst,
        "Driver": "local",
        "Mode": mode,
        "RW": rw,
        "Propagation": "",
    }


def _tmpfs(dst: str, options: str) -> dict[str, Any]:
    return {
        "Type": "tmpfs",
        "Source": "",
        "Destination": dst,
        "Mode": options,
        "RW": "ro" not in options.split(","),
        "Propagation": "",
    }


def _du(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
