"""The resolved compose model: a validated document turned into services and networks.

Every short form becomes its long form here (ports, environment, depends_on, networks,
extra_hosts, command strings), so the planner and `tether compose config` see one shape.
Pure: no daemon, no kernel.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether import portspec

DEFAULT_NETWORK = "default"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ComposeError(ValueError):
    """A compose file mistake, reported as one line before anything is created."""


@dataclass
class PortSpec:
    target: int
    published: str = ""  # "", "8080" or a host range "8000-8010"
    host_ip: str = ""
    protocol: str = "tcp"
    mode: str = "ingress"


@dataclass
class Attachment:
    network: str  # key under the top-level networks
    aliases: list[str] = field(default_factory=list)
    ipv4_address: str = ""
    ipv6_address: str = ""
    priority: int = 0
    configured: bool = False  # written in the map form (shown as such by `config`)


@dataclass
class Dependency:
    condition: str = "service_started"
    required: bool = True
    restart: bool = False


@dataclass
class Service:
    name: str
    image: str = ""
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    environment: dict[str, str | None] = field(default_factory=dict)
    hostname: str = ""
    domainname: str = ""
    container_name: str = ""
    working_dir: str = ""
    mac_address: str = ""
    stop_signal: str = ""
    stop_grace_period: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    networks: list[Attachment] = field(default_factory=list)
    network_mode: str = ""
    ports: list[PortSpec] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    depends_on: dict[str, Dependency] = field(default_factory=dict)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_opt: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)  # as written (a profile by file name)
    user: str = ""
    read_only: bool = False
    log_driver: str = ""  # logging.driver
    log_options: dict[str, str] = field(default_factory=dict)  # logging.options
    # volumes (compose/volumes.py: VolumeMount, long form), tmpfs, restart as written.
    volumes: list[Any] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    restart: str = ""
    # What the container's HostConfig gets for the four above, profile files read (secopts).
    security: dict[str, Any] = field(default_factory=dict)
    replicas: int = 1
    replicas_set: bool = False
    has_build: bool = False
    # The build section (compose/images.py: BuildSpec), pull_policy, and whether `image` was
    # written (a build-only service's image is named <project>-<service>).
    build: Any = None
    pull_policy: str = ""
    image_given: bool = True


@dataclass
class NetworkDef:
    key: str
    name: str
    external: bool = False
    driver: str = ""
    driver_opts: dict[str, str] = field(default_factory=dict)
    ipam_driver: str = ""
    ipam_config: list[dict[str, Any]] = field(default_factory=list)
    ipam_options: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Project:
    name: str
    working_dir: str
    config_files: list[str]
    services: dict[str, Service]
    networks: dict[str, NetworkDef]
    warnings: list[str] = field(default_factory=list)
    order: list[list[str]] = field(default_factory=list)  # start order, set by loader.load
    volumes: dict[str, Any] = field(default_factory=dict)  # key -> compose/volumes.VolumeDef


def normalize_project_name(text: str) -> str:
    """docker compose's normalization of a folder name: lower case, [a-z0-9_-] only."""
    return re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")


def check_project_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ComposeError(
            f'invalid project name "{name}": must consist only of lowercase alphanumeric '
            "characters, hyphens, and underscores as well as start with a letter or number"
        )
    return name


def go_bool(value: Any, where: str) -> bool:
    """Booleans may arrive as strings after interpolation: compose parses them like Go."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value)
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ComposeError(f"{where}: invalid boolean value {text!r}")


def resource_name(project: str, key: str, raw: Mapping[str, Any], where: str) -> tuple[str, bool]:
    """A top-level network's or volume's name, and whether it is external: an external one
    (`external: {name: x}`, the old form, names it too) is used as it is named, any other
    is <project>_<key> unless `name:` says otherwise."""
    external = raw.get("external")
    ext_name = ""
    if isinstance(external, dict):
        ext_name = str(external.get("name") or "")
        external = True
    is_external = go_bool(external, f"{where}.external") if external is not None else False
    name = str(raw.get("name") or ext_name or (key if is_external else f"{project}_{key}"))
    return name, is_external


def as_int(value: Any, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ComposeError(f"{where}: invalid integer value {value!r}") from None


def scalar_text(value: Any) -> str:
    """A YAML scalar as compose writes it into a string: true, 1.5, 80."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def duration_seconds(text: Any, where: str) -> float:
    """Go durations as compose takes them: 10s, 1m30s, 500ms, 1h."""
    s = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ComposeError(f'{where}: invalid duration "{s}"')
    return sum(float(n) * units[u] for n, u in parts)


def _command(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [scalar_text(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError as exc:
        raise ComposeError(f"{where}: {exc}") from None


def _list_or_dict(value: Any) -> dict[str, str | None]:
    """environment/labels: ["K=V", "K"] or {K: V, K: null}, in the order written."""
    out: dict[str, str | None] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out[str(k)] = None if v is None else scalar_text(v)
    elif isinstance(value, list):
        for item in value:
            k, sep, v = str(item).partition("=")
            out[k] = v if sep else None
    return out


def _string_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [scalar_text(v) for v in value]
    return [scalar_text(value)]


def _extra_hosts(value: Any) -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        for host, ips in value.items():
            for ip in ips if isinstance(ips, list) else [ips]:
                out.append(f"{host}:{ip}")
        return out
    for item in value or []:
        text = str(item)
        # compose accepts host=ip (unambiguous with IPv6) as well as host:ip
        host, sep, ip = text.partition("=")
        if not sep:
            host, _, ip = text.partition(":")
        out.append(f"{host}:{ip.strip('[]')}")
    return out


def _ports(value: Any, where: str) -> list[PortSpec]:
    out: list[PortSpec] = []
    for i, item in enumerate(value or []):
        at = f"{where}.{i}"
        if isinstance(item, dict):
            target_text = str(item.get("target", "")).strip()
            if not target_text:
                raise ComposeError(f"{at}: target is required")
            lo, _, hi = target_text.partition("-")
            if hi and hi != lo:
                raise ComposeError(f"{at}: target must be a single port, got {target_text}")
            published = item.get("published")
            proto = str(item.get("protocol") or "tcp").lower()
            if proto not in portspec.PROTOCOLS:
                raise ComposeError(f"{at}: invalid proto: {proto}")
            spec = PortSpec(
                target=as_int(lo, f"{at}.target"),
                published="" if published in (None, "") else str(published),
                host_ip=str(item.get("host_ip") or ""),
                protocol=proto,
                mode=str(item.get("mode") or "ingress"),
            )
            try:
                host = f"[{spec.host_ip}]:" if spec.host_ip else ""
                portspec.parse_one(f"{host}{spec.published}:{spec.target}/{spec.protocol}")
            except ValueError as exc:
                raise ComposeError(f"{at}: {exc}") from None
            out.append(spec)
            continue
        text = scalar_text(item)
        try:
            parsed = portspec.parse_one(text)
        except ValueError as exc:
            raise ComposeError(f"{at}: {exc}") from None
        for ip, host_port, cport, proto in parsed:
            out.append(PortSpec(target=cport, published=host_port, host_ip=ip, protocol=proto))
    return out


def _expose(value: Any, where: str) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(value or []):
        text = scalar_text(item)
        try:
            portspec.parse_publish([], [text])
        except ValueError as exc:
            raise ComposeError(f"{where}.{i}: {exc}") from None
        out.append(text)
    return out


def _depends_on(value: Any) -> dict[str, Dependency]:
    if isinstance(value, list):
        return {str(s): Dependency() for s in value}
    out: dict[str, Dependency] = {}
    for name, cfg in (value or {}).items():
        cfg = cfg or {}
        out[str(name)] = Dependency(
            condition=str(cfg.get("condition") or "service_started"),
            required=go_bool(cfg.get("required", True), f"depends_on.{name}.required"),
            restart=go_bool(cfg.get("restart", False), f"depends_on.{name}.restart"),
        )
    return out


def _attachments(value: Any, where: str) -> list[Attachment]:
    out: list[Attachment] = []
    if isinstance(value, list):
        out = [Attachment(network=str(n)) for n in value]
    elif isinstance(value, dict):
        for key, cfg in value.items():
            cfg = cfg or {}
            out.append(
                Attachment(
                    network=str(key),
                    aliases=_string_list(cfg.get("aliases")),
                    ipv4_address=str(cfg.get("ipv4_address") or ""),
                    ipv6_address=str(cfg.get("ipv6_address") or ""),
                    priority=as_int(cfg.get("priority", 0), f"{where}.{key}.priority"),
                    configured=bool(cfg),
                )
            )
    # compose's NetworksByPriority: highest priority first, then by name.
    out.sort(key=lambda a: (-a.priority, a.network))
    return out


def _replicas(raw: dict[str, Any], where: str) -> tuple[int, bool]:
    deploy = raw.get("deploy") or {}
    replicas = deploy.get("replicas")
    scale = raw.get("scale")
    if (
        replicas is not None
        and scale is not None
        and as_int(replicas, where) != as_int(scale, where)
    ):
        raise ComposeError(f"{where}: can't set distinct values on 'scale' and 'deploy.replicas'")
    value = replicas if replicas is not None else scale
    if value is None:
        return 1, False
    n = as_int(value, f"{where}.deploy.replicas")
    if n < 0:
        raise ComposeError(f"{where}.deploy.replicas: must be 0 or more, got {n}")
    return n, True


def _service(
    name: str,
    raw: dict[str, Any],
    env: Mapping[str, str],
    read_file: Callable[[str], str],
    warn: Callable[[str], None],
) -> Service:
    where = f"services.{name}"
    environment: dict[str, str | None] = {}
    env_files = raw.get("env_file")
    for item in env_files if isinstance(env_files, list) else [env_files] if env_files else []:
        path, required = (
            (item, True) if isinstance(item, str) else (item["path"], item.get("required", True))
        )
        try:
            text = read_file(str(path))
        except FileNotFoundError:
            if go_bool(required, f"{where}.env_file"):
                raise ComposeError(f"env file {path} not found") from None
            continue
        from tether.compose.interpolate import parse_env_file

        environment.update(parse_env_file(text, env))
    environment.update(_list_or_dict(raw.get("environment")))
    for k, v in list(environment.items()):
        if v is None:  # `KEY` alone: the value comes from the shell, or the key is dropped
            if k in env:
                environment[k] = env[k]
            else:
                del environment[k]
    labels = {k: v or "" for k, v in _list_or_dict(raw.get("labels")).items()}
    replicas, replicas_set = _replicas(raw, where)
    svc = Service(
        name=name,
        image=str(raw.get("image") or ""),
        command=_command(raw.get("command"), f"{where}.command"),
        entrypoint=_command(raw.get("entrypoint"), f"{where}.entrypoint"),
        environment=environment,
        hostname=str(raw.get("hostname") or ""),
        domainname=str(raw.get("domainname") or ""),
        container_name=str(raw.get("container_name") or ""),
        working_dir=str(raw.get("working_dir") or ""),
        mac_address=str(raw.get("mac_address") or ""),
        stop_signal=str(raw.get("stop_signal") or ""),
        stop_grace_period=(
            duration_seconds(raw["stop_grace_period"], f"{where}.stop_grace_period")
            if raw.get("stop_grace_period") is not None
            else None
        ),
        labels=labels,
        network_mode=str(raw.get("network_mode") or ""),
        ports=_ports(raw.get("ports"), f"{where}.ports"),
        expose=_expose(raw.get("expose"), f"{where}.expose"),
        depends_on=_depends_on(raw.get("depends_on")),
        dns=_string_list(raw.get("dns")),
        dns_search=_string_list(raw.get("dns_search")),
        dns_opt=_string_list(raw.get("dns_opt")),
        extra_hosts=_extra_hosts(raw.get("extra_hosts")),
        privileged=go_bool(raw.get("privileged") or False, f"{where}.privileged"),
        cap_add=_string_list(raw.get("cap_add")),
        cap_drop=_string_list(raw.get("cap_drop")),
        security_opt=_string_list(raw.get("security_opt")),
        user=str(raw.get("user") or ""),
        read_only=go_bool(raw.get("read_only") or False, f"{where}.read_only"),
        log_driver=str((raw.get("logging") or {}).get("driver") or ""),
        log_options={
            str(k): str(v) for k, v in ((raw.get("logging") or {}).get("options") or {}).items()
        },
        replicas=replicas,
        replicas_set=replicas_set,
        has_build=raw.get("build") is not None,
    )
    from tether import secopts

    try:
        svc.security = secopts.host_config(
            svc.privileged, svc.cap_add, svc.cap_drop, svc.security_opt, read_file
        )
    except secopts.SecurityOptError as exc:
        raise ComposeError(f"{where}.security_opt: {exc}") from None
    _refuse_unenforced(raw, where)
    if svc.log_driver or svc.log_options:
        _check_logging(svc, where)
    if svc.network_mode and raw.get("networks") is not None:
        raise ComposeError(
            f"service {name} declares mutually exclusive `network_mode` and `networks`"
        )
    if not svc.network_mode:
        svc.networks = (
            _attachments(raw["networks"], f"{where}.networks")
            if raw.get("networks") is not None
            else [Attachment(network=DEFAULT_NETWORK)]
        )
    if svc.network_mode.startswith("service:"):
        target = svc.network_mode.partition(":")[2]
        svc.depends_on.setdefault(target, Dependency())
    return svc


def _check_logging(svc: Service, where: str) -> None:
    """logging: the daemon's own check (json-file with max-size/max-file, or none; other
    drivers and options refused), before anything is created."""
    from tether.api.containers import HostConfig
    from tether.api.decode import decode
    from tether.errors import InvalidParameter
    from tether.wire import dumps

    body = {"LogConfig": {"Type": svc.log_driver, "Config": svc.log_options}}
    try:
        decode(dumps(body).encode(), HostConfig)
    except InvalidParameter as exc:
        raise ComposeError(f"{where}.logging: {exc.message}") from None


def _refuse_unenforced(raw: dict[str, Any], where: str) -> None:
    """pids_limit, mem_limit: refused unless they ask for the default, in the daemon's words
    (tether.unsupported), before anything is created."""
    from tether import unsupported as u

    pids = raw.get("pids_limit")
    memory = raw.get("mem_limit")
    if isinstance(memory, str):
        try:
            memory = u.ram_in_bytes(memory)
        except ValueError as exc:
            raise ComposeError(f"{where}.mem_limit: {exc}") from None
    refused = u.compose_refusal(
        as_int(pids, f"{where}.pids_limit") if pids is not None else None,
        as_int(memory, f"{where}.mem_limit") if memory is not None else None,
    )
    if refused:
        key = "pids_limit" if refused == u.PIDS_LIMIT else "mem_limit"
        raise ComposeError(f"{where}.{key}: {refused}")


def _network(project: str, key: str, raw: Any) -> NetworkDef:
    raw = raw or {}
    where = f"networks.{key}"
    name, is_external = resource_name(project, key, raw, where)
    ipam = raw.get("ipam") or {}
    configs: list[dict[str, Any]] = []
    for cfg in ipam.get("config") or []:
        entry: dict[str, Any] = {}
        for k in ("subnet", "ip_range", "gateway"):
            if cfg.get(k):
                entry[k] = str(cfg[k])
        if cfg.get("aux_addresses"):
            entry["aux_addresses"] = {str(k): str(v) for k, v in cfg["aux_addresses"].items()}
        configs.append(entry)
    return NetworkDef(
        key=key,
        name=name,
        external=is_external,
        driver=str(raw.get("driver") or ""),
        driver_opts={str(k): scalar_text(v) for k, v in (raw.get("driver_opts") or {}).items()},
        ipam_driver=str(ipam.get("driver") or ""),
        ipam_config=configs,
        ipam_options={str(k): str(v) for k, v in (ipam.get("options") or {}).items()},
        internal=go_bool(raw.get("internal"), f"{where}.internal"),
        attachable=go_bool(raw.get("attachable"), f"{where}.attachable"),
        enable_ipv6=go_bool(raw.get("enable_ipv6"), f"{where}.enable_ipv6"),
        labels={k: v or "" for k, v in _list_or_dict(raw.get("labels")).items()},
    )


def build(
    document: dict[str, Any],
    name: str,
    working_dir: str,
    config_files: list[str],
    env: Mapping[str, str],
    read_file: Callable[[str], str],
    warnings: list[str],
) -> Project:
    services = {
        str(k): _service(str(k), v or {}, env, read_file, warnings.append)
        for k, v in (document.get("services") or {}).items()
    }
    from tether.compose import volumes as compose_volumes

    for k, v in (document.get("services") or {}).items():
        svc, where = services[str(k)], f"services.{k}"
        svc.volumes = compose_volumes.service_volumes(
            (v or {}).get("volumes"), where, working_dir, env
        )
        svc.tmpfs = compose_volumes.service_tmpfs((v or {}).get("tmpfs"))
        svc.restart = compose_volumes.service_restart((v or {}).get("restart"), where)
    volume_defs = {
        str(k): compose_volumes.volume_def(name, str(k), v)
        for k, v in (document.get("volumes") or {}).items()
    }
    compose_volumes.check_references(services, volume_defs)
    from tether.compose import images

    for k, v in (document.get("services") or {}).items():
        images.attach(services[str(k)], v or {}, name, working_dir, dict(env))
    networks = {
        str(k): _network(name, str(k), v) for k, v in (document.get("networks") or {}).items()
    }
    uses_default = any(a.network == DEFAULT_NETWORK for s in services.values() for a in s.networks)
    if uses_default and DEFAULT_NETWORK not in networks:
        networks[DEFAULT_NETWORK] = _network(name, DEFAULT_NETWORK, None)
    return Project(
        name=name,
        working_dir=working_dir,
        config_files=config_files,
        services=services,
        networks=networks,
        warnings=warnings,
        volumes=volume_defs,
    )
