"""Compose storage and restart: a service's `volumes:` (short and long syntax), `tmpfs:`,
`restart:`, and the top-level `volumes:`, resolved as docker compose resolves them (binds
relative to the project directory, named volumes as <project>_<key> with compose's labels,
external ones used as they are).  Pure: the runner creates and removes the volumes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.compose.model import ComposeError, go_bool, resource_name
from tether.mountmodes import PROPAGATIONS, valid_mode

RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
VOLUME_LABEL = "com.docker.compose.volume"


@dataclass
class VolumeMount:
    type: str  # bind | volume | tmpfs
    target: str
    source: str = ""  # a host path (bind), the top-level key (volume), "" (anonymous, tmpfs)
    read_only: bool = False
    create_host_path: bool = False  # short syntax binds: the host directory is made
    nocopy: bool = False
    tmpfs_size: int = 0
    # Short syntax's options other than ro/rw that the daemon honours (z, Z, a propagation),
    # passed on in Binds as docker compose does; long syntax's bind.propagation too.
    options: list[str] = field(default_factory=list)


@dataclass
class VolumeDef:
    key: str
    name: str
    external: bool = False
    driver: str = ""
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def _host_path(source: str, working_dir: str, env: Mapping[str, str]) -> str:
    if source == "~" or source.startswith("~/"):
        source = env.get("HOME", os.path.expanduser("~")) + source[1:]
    return os.path.normpath(os.path.join(working_dir, source))


def service_volumes(
    raw: Any, where: str, working_dir: str, env: Mapping[str, str]
) -> list[VolumeMount]:
    from tether.cli.mounts import parse_volume
    from tether.unsupported import ram_in_bytes

    out: list[VolumeMount] = []
    for i, item in enumerate(raw or []):
        at = f"{where}.volumes.{i}"
        if isinstance(item, str):
            try:
                spec = parse_volume(item)
            except ValueError as exc:
                raise ComposeError(f"{at}: {exc}") from None
            m = VolumeMount(
                type=spec["Type"],
                target=spec["Target"],
                source=spec["Source"],
                read_only=spec["ReadOnly"],
                create_host_path=spec["Type"] == "bind",
            )
            sections = item.split(":")
            if len(sections) == 3:  # SRC:DST:OPTIONS (parse_volume refused more colons)
                _short_options(m, sections[2], at)
        else:
            kind = str(item.get("type") or "volume")
            m = VolumeMount(
                type=kind,
                target=str(item.get("target") or ""),
                source=str(item.get("source") or ""),
                read_only=go_bool(item.get("read_only") or False, f"{at}.read_only"),
                create_host_path=go_bool(
                    (item.get("bind") or {}).get("create_host_path") or False, f"{at}.bind"
                ),
                nocopy=go_bool((item.get("volume") or {}).get("nocopy") or False, f"{at}.volume"),
            )
            propagation = (item.get("bind") or {}).get("propagation")
            if propagation:
                if propagation not in PROPAGATIONS:
                    raise ComposeError(
                        f'{at}.bind.propagation: invalid mount config for type "bind": '
                        f"invalid propagation mode: {propagation}"
                    )
                m.options.append(str(propagation))
            size = (item.get("tmpfs") or {}).get("size")
            if size is not None:
                try:
                    m.tmpfs_size = size if isinstance(size, int) else ram_in_bytes(str(size))
                except ValueError as exc:
                    raise ComposeError(f"{at}.tmpfs.size: {exc}") from None
            if kind not in ("bind", "volume", "tmpfs"):
                raise ComposeError(
                    f"{at}.type: tether does not support volumes of type {kind!r} "
                    "(bind, volume and tmpfs only)"
                )
        if not m.target:
            raise ComposeError(f"{at}: invalid mount config: missing target")
        if m.type == "bind":
            if not m.source:
                raise ComposeError(f'{at}: invalid mount config for type "bind": missing source')
            m.source = _host_path(m.source, working_dir, env)
        out.append(m)
    return out


def service_tmpfs(raw: Any) -> list[str]:
    if raw is None:
        return []
    return [str(raw)] if isinstance(raw, str) else [str(t) for t in raw]


def service_restart(raw: Any, where: str) -> str:
    """restart: checked here (as the daemon would check it) so that a bad policy makes
    nothing, not a network and then an error."""
    if raw is None:
        return ""
    text = str(raw)
    name, _, count = text.partition(":")
    if name not in RESTART_POLICIES:
        raise ComposeError(
            f"{where}.restart: invalid restart policy: unknown policy '{name}'; use one of "
            "'no', 'always', 'on-failure', or 'unless-stopped'"
        )
    if count:
        if name != "on-failure":
            raise ComposeError(
                f"{where}.restart: invalid restart policy: maximum retry count can only be "
                "used with 'on-failure'"
            )
        if not count.isdigit():
            raise ComposeError(
                f"{where}.restart: invalid restart policy format: maximum retry count must be "
                "an integer"
            )
    return text


def _short_options(m: VolumeMount, section: str, at: str) -> None:
    """The OPTIONS of a short-syntax volume: what the daemon refuses in `-v SRC:DST:OPTIONS`
    (words it does not know, two of a kind, a propagation on a volume) is refused here in
    its words, before anything is created; nocopy is the volume's; the rest goes on with
    the bind."""
    words = section.split(",")
    if not valid_mode(section):
        raise ComposeError(f"{at}: invalid mode: {section}")
    if m.type == "volume" and any(w in PROPAGATIONS for w in words):
        raise ComposeError(
            f'{at}: invalid mount config for type "volume": field BindOptions must not be specified'
        )
    for w in words:
        if w == "nocopy" and m.type == "volume":
            m.nocopy = True
        elif w not in ("ro", "rw", "nocopy") and w not in m.options:
            m.options.append(w)


def volume_def(project: str, key: str, raw: Any) -> VolumeDef:
    raw = raw or {}
    where = f"volumes.{key}"
    name, is_external = resource_name(project, key, raw, where)
    return VolumeDef(
        key=key,
        name=name,
        external=is_external,
        driver=str(raw.get("driver") or ""),
        driver_opts={str(k): str(v) for k, v in (raw.get("driver_opts") or {}).items()},
        labels={
            str(k): str(v or "")
            for k, v in (
                raw["labels"].items()
                if isinstance(raw.get("labels"), dict)
                else (x.partition("=")[::2] for x in raw.get("labels") or [])
            )
        },
    )


def check_references(services: Mapping[str, Any], volumes: Mapping[str, VolumeDef]) -> None:
    """A named volume must be declared at the top level, as in docker compose."""
    for name, svc in services.items():
        for m in svc.volumes:
            if m.type == "volume" and m.source and m.source not in volumes:
                raise ComposeError(
                    f'service "{name}" refers to undefined volume {m.source}: '
                    "invalid compose project"
                )


def host_config(svc: Any, volumes: Mapping[str, VolumeDef]) -> dict[str, Any]:
    """HostConfig's Binds, Mounts, Tmpfs and RestartPolicy, as docker compose sends them:
    short-syntax binds as Binds (the host directory is made), the rest as Mounts."""
    hc: dict[str, Any] = {}
    binds: list[str] = []
    mounts: list[dict[str, Any]] = []
    for m in svc.volumes:
        if m.type == "bind" and m.create_host_path:
            mode = ",".join(["ro" if m.read_only else "rw", *m.options])
            binds.append(f"{m.source}:{m.target}:{mode}")
            continue
        mount: dict[str, Any] = {"Type": m.type, "Target": m.target}
        if m.type == "volume" and m.source:
            mount["Source"] = volumes[m.source].name
        elif m.type == "bind":
            mount["Source"] = m.source
        if m.read_only:
            mount["ReadOnly"] = True
        if m.type == "volume" and m.nocopy:
            mount["VolumeOptions"] = {"NoCopy": True}
        propagation = next((o for o in m.options if o in PROPAGATIONS), "")
        if m.type == "bind" and propagation:
            mount["BindOptions"] = {"Propagation": propagation}
        if m.type == "tmpfs" and m.tmpfs_size:
            mount["TmpfsOptions"] = {"SizeBytes": m.tmpfs_size}
        mounts.append(mount)
    if binds:
        hc["Binds"] = binds
    if mounts:
        hc["Mounts"] = mounts
    if svc.tmpfs:
        hc["Tmpfs"] = {t.partition(":")[0]: t.partition(":")[2] for t in svc.tmpfs}
    if svc.restart:
        name, _, count = svc.restart.partition(":")
        policy: dict[str, Any] = {"Name": name}
        if count:
            policy["MaximumRetryCount"] = int(count)
        hc["RestartPolicy"] = policy
    return hc


def render_mounts(svc: Any) -> list[dict[str, Any]]:
    """`compose config`'s long form of a service's volumes."""
    out: list[dict[str, Any]] = []
    for m in svc.volumes:
        entry: dict[str, Any] = {"type": m.type}
        if m.source:
            entry["source"] = m.source
        entry["target"] = m.target
        if m.read_only:
            entry["read_only"] = True
        if m.type == "bind":
            bind: dict[str, Any] = {"create_host_path": True} if m.create_host_path else {}
            for o in m.options:  # compose's long form of the short syntax's options
                bind["selinux" if o in ("z", "Z") else "propagation"] = o
            entry["bind"] = bind
        elif m.type == "volume":
            entry["volume"] = {"nocopy": True} if m.nocopy else {}
        elif m.tmpfs_size:
            entry["tmpfs"] = {"size": m.tmpfs_size}
        out.append(entry)
    return out


def render_volume(vol: VolumeDef) -> dict[str, Any]:
    out: dict[str, Any] = {"name": vol.name}
    if vol.external:
        out["external"] = True
        return out
    if vol.driver:
        out["driver"] = vol.driver
    if vol.driver_opts:
        out["driver_opts"] = vol.driver_opts
    if vol.labels:
        out["labels"] = vol.labels
    return out


def _labels(project: str, vol: VolumeDef) -> dict[str, str]:
    from tether import __version__
    from tether.compose.plan import PROJECT, VERSION

    return {**vol.labels, PROJECT: project, VOLUME_LABEL: vol.key, VERSION: __version__}


def ensure_volumes(runner: Any, services: list[str]) -> None:
    """Create the named volumes the services use (before their containers), as `up` does:
    an existing one is used as it is (its data survives), an external one must exist."""
    from tether.client import ApiError, quote

    project = runner.project
    used = sorted(
        {
            m.source
            for n in services
            for m in project.services[n].volumes
            if m.type == "volume" and m.source
        }
    )
    found: dict[str, Any] = {}
    for key in used:
        vol = project.volumes[key]
        try:
            found[key] = runner.api.call("GET", f"/volumes/{quote(vol.name)}")
        except ApiError as exc:
            if exc.status != 404:
                raise ComposeError(f"Error response from daemon: {exc.message}") from None
            if vol.external:
                raise ComposeError(f'external volume "{vol.name}" not found') from None
    for key in used:
        vol = project.volumes[key]
        have = found.get(key)
        if vol.external:
            continue
        if have is not None:
            if (have.get("Labels") or {}).get(VOLUME_LABEL) != key:
                runner.warn(
                    f'volume "{vol.name}" already exists but was not created by Docker '
                    "Compose. Use `external: true` to use an existing volume"
                )
            continue
        body = {
            "Name": vol.name,
            "Driver": vol.driver or "local",
            "DriverOpts": vol.driver_opts,
            "Labels": _labels(project.name, vol),
        }
        try:
            runner.api.call("POST", "/volumes/create", body=body)
        except ApiError as exc:
            raise ComposeError(
                f"Error response from daemon: {exc.message} (volume {vol.name})"
            ) from None
        runner.progress("Volume", vol.name, "Created")


def remove_volumes(runner: Any) -> int:
    """`down -v`: the project's named volumes (those compose made; never external ones)."""
    from tether.client import ApiError, quote

    project = runner.project
    status = 0
    for vol in sorted(project.volumes.values(), key=lambda v: v.key):
        if vol.external:
            continue
        try:
            have = runner.api.call("GET", f"/volumes/{quote(vol.name)}")
        except ApiError:
            continue  # never made, or gone already
        if (have.get("Labels") or {}).get("com.docker.compose.project") != project.name:
            continue  # not this project's: left alone, as compose does
        try:
            runner.api.call("DELETE", f"/volumes/{quote(vol.name)}")
        except ApiError as exc:
            runner.err.write(f"Error response from daemon: {exc.message}\n")
            status = 1
            continue
        runner.progress("Volume", vol.name, "Removed")
    return status
