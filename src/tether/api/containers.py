"""Request objects of POST /containers/create (Engine API 1.41-1.47: Config + HostConfig +
NetworkingConfig), with dockerd's checks and the ones a file or rule needs.

Every value that ends up in the container's /etc/hosts, /etc/resolv.conf or /etc/hostname,
in an nftables element, or in the process's argv and environment is checked here, before the
engine sees the request; a refused request changes nothing.
"""

from __future__ import annotations

import re
import signal
from typing import Any

from tether.api import ports
from tether.api.decode import Model, StrSlice, strslice
from tether.api.networks import (
    EndpointSettings,
    NetworkingConfig,
    check_labels,
    check_mac,
    check_map,
    check_text,
)
from tether.errors import InvalidParameter
from tether.textcheck import (
    check_dns_option,
    check_dns_search,
    check_domainname,
    check_env,
    check_extra_host,
    check_hostname,
    go_quote,
    has_control,
    is_ip,
    shown,
)
from tether.unsupported import container_refusal

SIGNALS = {s.name: int(s.value) for s in signal.Signals}
# Signal numbers Linux has (SIGRTMAX is 64).
MAX_SIGNAL = 64
RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
# tether writes one log format, json-file's equivalent (runtime/logs.py), or none at all.
LOG_DRIVERS = ("json-file", "none")
# Docker's other drivers: known names, refused as tether's (not as unknown ones).
OTHER_LOG_DRIVERS = (
    "local",
    "syslog",
    "journald",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "etwlogs",
    "gcplogs",
    "logentries",
)
JSON_FILE_OPTS = frozenset(
    {"max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag"}
)


def parse_signal(value: str | int | None, default: int = signal.SIGKILL) -> int:
    """docker's signal.ParseSignal: a number, or a name with or without SIG."""
    if value is None or value == "":
        return int(default)
    text = str(value).upper()
    if text.isascii() and text.isdigit():
        number = int(text)
        if not 0 < number <= MAX_SIGNAL:
            raise InvalidParameter(f"Invalid signal: {value}")
        return number
    if not text.startswith("SIG"):
        text = "SIG" + text
    if text not in SIGNALS:
        raise InvalidParameter(
            f"Invalid signal: {go_quote(str(value)) if has_control(str(value)) else value}"
        )
    return SIGNALS[text]


def _ok(check: Any, value: str) -> str:
    try:
        return str(check(value))
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None


class PortBinding(Model):
    go_name = "nat.PortBinding"
    HostIp: str | None = None
    HostPort: str | None = None


class RestartPolicy(Model):
    go_name = "container.RestartPolicy"
    Name: str | None = None
    MaximumRetryCount: int | None = None


class LogConfig(Model):
    go_name = "container.LogConfig"
    Type: str | None = None
    Config: dict[str, str] | None = None


class BindOptions(Model):
    go_name = "mount.BindOptions"
    Propagation: str | None = None
    NonRecursive: bool | None = None
    CreateMountpoint: bool | None = None
    ReadOnlyNonRecursive: bool | None = None
    ReadOnlyForceRecursive: bool | None = None


class VolumeDriverConfig(Model):
    go_name = "mount.Driver"
    Name: str | None = None
    Options: dict[str, str] | None = None


class VolumeOptions(Model):
    go_name = "mount.VolumeOptions"
    NoCopy: bool | None = None
    Labels: dict[str, str] | None = None
    Subpath: str | None = None
    DriverConfig: VolumeDriverConfig | None = None


class TmpfsOptions(Model):
    go_name = "mount.TmpfsOptions"
    go_types = {"SizeBytes": "int64"}
    SizeBytes: int | None = None
    Mode: int | None = None


class Mount(Model):
    """One entry of HostConfig.Mounts (--mount)."""

    go_name = "mount.Mount"
    Type: str | None = None
    Source: str | None = None
    Target: str | None = None
    ReadOnly: bool | None = None
    Consistency: str | None = None
    BindOptions: BindOptions | None = None
    VolumeOptions: VolumeOptions | None = None
    TmpfsOptions: TmpfsOptions | None = None


_RestartPolicy = RestartPolicy
_LogConfig = LogConfig


class HealthConfig(Model):
    go_name = "container.HealthConfig"
    Test: list[str] | None = None
    Interval: int | None = None
    Timeout: int | None = None
    StartPeriod: int | None = None
    StartInterval: int | None = None
    Retries: int | None = None
    go_types = {"Interval": "time.Duration", "Timeout": "time.Duration"}


class HostConfig(Model):
    go_name = "container.HostConfig"
    go_types = {
        "CapAdd": "strslice.StrSlice",
        "CapDrop": "strslice.StrSlice",
        "ShmSize": "int64",
        "Memory": "int64",
        "MemorySwap": "int64",
        "MemoryReservation": "int64",
        "NanoCpus": "int64",
        "CpuShares": "int64",
        "CpuPeriod": "int64",
        "CpuQuota": "int64",
        "PidsLimit": "int64",
        "BlkioWeight": "uint16",
        "ConsoleSize": "[2]uint",
        "PortBindings": "nat.PortMap",
    }
    # What tether reads.
    NetworkMode: str | None = None
    PortBindings: dict[str, list[PortBinding] | None] | None = None
    PublishAllPorts: bool | None = None
    Dns: list[str] | None = None
    DnsOptions: list[str] | None = None
    DnsSearch: list[str] | None = None
    ExtraHosts: list[str] | None = None
    AutoRemove: bool | None = None
    RestartPolicy: _RestartPolicy | None = None
    Links: list[str] | None = None
    LogConfig: _LogConfig | None = None
    Privileged: bool | None = None
    CapAdd: StrSlice = None
    CapDrop: StrSlice = None
    SecurityOpt: list[str] | None = None
    # Typed as dockerd types them (so a wrong type is the same 400), not acted on.
    Binds: list[str] | None = None
    ContainerIDFile: str | None = None
    VolumeDriver: str | None = None
    VolumesFrom: list[str] | None = None
    ConsoleSize: list[int] | None = None
    Annotations: dict[str, str] | None = None
    CgroupnsMode: str | None = None
    GroupAdd: list[str] | None = None
    IpcMode: str | None = None
    Cgroup: str | None = None
    OomScoreAdj: int | None = None
    PidMode: str | None = None
    ReadonlyRootfs: bool | None = None
    StorageOpt: dict[str, str] | None = None
    Tmpfs: dict[str, str] | None = None
    UTSMode: str | None = None
    UsernsMode: str | None = None
    ShmSize: int | None = None
    Sysctls: dict[str, str] | None = None
    Runtime: str | None = None
    Isolation: str | None = None
    MaskedPaths: list[str] | None = None
    ReadonlyPaths: list[str] | None = None
    Init: bool | None = None
    CgroupParent: str | None = None
    Memory: int | None = None
    MemorySwap: int | None = None
    MemoryReservation: int | None = None
    NanoCpus: int | None = None
    CpuShares: int | None = None
    CpuPeriod: int | None = None
    CpuQuota: int | None = None
    CpusetCpus: str | None = None
    CpusetMems: str | None = None
    PidsLimit: int | None = None
    BlkioWeight: int | None = None
    OomKillDisable: bool | None = None
    # Typed so that a value is seen and refused by name (tether.unsupported), never dropped.
    Mounts: list[Mount] | None = None
    Devices: list[dict[str, Any]] | None = None
    DeviceCgroupRules: list[str] | None = None
    DeviceRequests: list[dict[str, Any]] | None = None
    Ulimits: list[dict[str, Any]] | None = None
    BlkioWeightDevice: list[dict[str, Any]] | None = None
    BlkioDeviceReadBps: list[dict[str, Any]] | None = None
    BlkioDeviceWriteBps: list[dict[str, Any]] | None = None
    BlkioDeviceReadIOps: list[dict[str, Any]] | None = None
    BlkioDeviceWriteIOps: list[dict[str, Any]] | None = None
    CpuRealtimePeriod: int | None = None
    CpuRealtimeRuntime: int | None = None
    KernelMemory: int | None = None
    KernelMemoryTCP: int | None = None
    MemorySwappiness: int | None = None
    CpuCount: int | None = None
    CpuPercent: int | None = None
    IOMaximumIOps: int | None = None
    IOMaximumBandwidth: int | None = None

    def validate(self) -> None:
        mode = self.NetworkMode or ""
        check_text("network mode", mode)
        if mode.startswith("container:") and not mode[len("container:") :]:
            raise InvalidParameter(
                "Invalid network mode: invalid container format container:<name|id>"
            )
        for key, bindings in (self.PortBindings or {}).items():
            ports.port_key(key)
            for b in bindings or []:
                ports.host_ip(b.HostIp or "")
                ports.host_port(b.HostPort or "")
        for server in self.Dns or []:
            if not is_ip(server):
                # dockerd 25+ decodes Dns into netip.Addr; this is its error.
                raise InvalidParameter(
                    f"invalid JSON: ParseAddr({go_quote(server)}): unable to parse IP"
                )
        for domain in self.DnsSearch or []:
            if _ok(check_dns_search, domain) != domain.strip(" ") or has_control(domain):
                raise InvalidParameter(f"{shown(domain)} is not a valid domain")
        for option in self.DnsOptions or []:
            _ok(check_dns_option, option)
        for entry in self.ExtraHosts or []:
            _ok(check_extra_host, entry)
        for link in self.Links or []:
            check_text("link", link)
        for item in [*(strslice(self.CapAdd) or []), *(strslice(self.CapDrop) or [])]:
            check_text("capability", item)
        for opt in self.SecurityOpt or []:
            check_text("security option", opt)
        self._check_restart_policy()
        self._check_log_config()

    def _check_restart_policy(self) -> None:
        policy = self.RestartPolicy
        name = (policy.Name or "") if policy else ""
        retries = (policy.MaximumRetryCount or 0) if policy else 0
        if self.AutoRemove and name not in ("", "no"):
            raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
        # api/types/container.ValidateRestartPolicy, its texts.
        if name in ("", "no", "always", "unless-stopped"):
            if retries != 0:
                raise InvalidParameter(
                    "invalid restart policy: maximum retry count can only be used with 'on-failure'"
                )
        elif name == "on-failure":
            if retries < 0:
                raise InvalidParameter(
                    "invalid restart policy: maximum retry count cannot be negative"
                )
        else:
            raise InvalidParameter(
                f"invalid restart policy: unknown policy '{go_quote(name)[1:-1]}'; use one of "
                "'no', 'always', 'on-failure', or 'unless-stopped'"
            )

    def _check_log_config(self) -> None:
        cfg = self.LogConfig
        if cfg is None:
            return
        kind = cfg.Type or ""
        if kind in OTHER_LOG_DRIVERS:
            raise InvalidParameter(
                f"tether does not support the {kind} log driver: use json-file or none"
            )
        if kind and kind not in LOG_DRIVERS:
            raise InvalidParameter(
                f"logger: no log driver named '{go_quote(kind)[1:-1]}' is registered"
            )
        opts = cfg.Config or {}
        for key in opts:
            if kind == "none" or key not in JSON_FILE_OPTS:
                raise InvalidParameter(
                    f"unknown log opt '{go_quote(key)[1:-1]}' for {kind or 'json-file'} log driver"
                )
            if key == "compress" and opts[key] in ("", "false"):
                continue
            if key not in ("max-size", "max-file"):
                # compress and the attributes (labels, env, tag) change what `logs --details`
                # and the rotated files hold, which tether's log does not carry.
                raise InvalidParameter(f"tether does not support the log opt '{key}'")
        check_map("log option", cfg.Config)
        log_rotation(opts)


def human_size(value: str) -> int:
    """go-units' FromHumanSize (dockerd's max-size): decimal units, k = 1000."""
    m = re.fullmatch(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?", value)
    if m is None:
        raise InvalidParameter(f"invalid size: '{value}'")
    power = "kmgtp".find(m.group(2).lower()) + 1 if m.group(2) else 0
    try:
        number = float(m.group(1))
    except ValueError:
        # "1.2.3m": the pattern takes it, Go's ParseFloat does not; go-units passes its error on.
        raise InvalidParameter(
            f"strconv.ParseFloat: parsing {go_quote(m.group(1))}: invalid syntax"
        ) from None
    return int(number * 1000**power)


def log_rotation(opts: dict[str, str]) -> tuple[int, int]:
    """(max-size in bytes, 0 for never; max-file) of json-file's options, checked with
    dockerd's words."""
    size = 0
    if "max-size" in opts:
        size = human_size(opts["max-size"])
        if size <= 0:
            raise InvalidParameter("max-size must be a positive number")
    files = 1
    if "max-file" in opts:
        raw = opts["max-file"]
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise InvalidParameter(f'strconv.Atoi: parsing "{raw}": invalid syntax')
        files = int(raw)
        if files < 1:
            raise InvalidParameter("max-file cannot be less than 1")
    # max-file without max-size: accepted and without effect, as by dockerd (never rotated).
    return size, files


_HostConfig = HostConfig
_NetworkingConfig = NetworkingConfig


class ContainerCreate(Model):
    """POST /containers/create: Docker's Config with HostConfig and NetworkingConfig."""

    go_name = "container.CreateRequest"
    go_types = {
        "Cmd": "strslice.StrSlice",
        "Entrypoint": "strslice.StrSlice",
        "ExposedPorts": "nat.PortSet",
        "Volumes": "map[string]struct {}",
    }
    Hostname: str | None = None
    Domainname: str | None = None
    User: str | None = None
    AttachStdin: bool | None = None
    AttachStdout: bool | None = None
    AttachStderr: bool | None = None
    ExposedPorts: dict[str, dict[str, Any] | None] | None = None
    Tty: bool | None = None
    OpenStdin: bool | None = None
    StdinOnce: bool | None = None
    Env: list[str] | None = None
    Cmd: StrSlice = None
    Healthcheck: HealthConfig | None = None
    ArgsEscaped: bool | None = None
    Image: str | None = None
    Volumes: dict[str, dict[str, Any] | None] | None = None
    WorkingDir: str | None = None
    Entrypoint: StrSlice = None
    NetworkDisabled: bool | None = None
    MacAddress: str | None = None
    OnBuild: list[str] | None = None
    Labels: dict[str, str] | None = None
    StopSignal: str | None = None
    StopTimeout: int | None = None
    Shell: StrSlice = None
    HostConfig: _HostConfig | None = None
    NetworkingConfig: _NetworkingConfig | None = None

    @property
    def host(self) -> _HostConfig:
        return self.HostConfig or _HostConfig()

    @property
    def endpoints(self) -> dict[str, EndpointSettings]:
        nc = self.NetworkingConfig
        return {
            k: v or EndpointSettings()
            for k, v in ((nc.EndpointsConfig or {}) if nc else {}).items()
        }

    @property
    def cmd(self) -> list[str] | None:
        return strslice(self.Cmd)

    @property
    def entrypoint(self) -> list[str] | None:
        return strslice(self.Entrypoint)

    def validate(self) -> None:
        if all(getattr(self, f) is None for f in CONFIG_FIELDS):
            # runconfig.DecodeCreateRequest: no field of Config at all.
            raise InvalidParameter("config cannot be empty in order to create a container")
        check_text("image name", self.Image)
        if self.Hostname:
            _ok(check_hostname, self.Hostname)
        if self.Domainname:
            _ok(check_domainname, self.Domainname)
        check_text("user", self.User)
        for e in self.Env or []:
            _ok(check_env, e)
        for arg in [*(self.cmd or []), *(self.entrypoint or [])]:
            if "\x00" in arg:
                raise InvalidParameter(
                    f"invalid argument {go_quote(arg)}: NUL characters cannot be passed to a process"
                )
        wd = self.WorkingDir or ""
        if wd and (not wd.startswith("/") or has_control(wd)):
            raise InvalidParameter(
                f"the working directory '{go_quote(wd)[1:-1]}' is invalid, it needs to be an absolute path"
            )
        check_labels(self.Labels)
        for key in self.ExposedPorts or {}:
            ports.port_key(key)
        check_mac(self.MacAddress)
        if self.StopSignal:
            parse_signal(self.StopSignal)
        hc = self.host
        hc.validate()
        mode = hc.NetworkMode or ""
        if mode.startswith("container:") and self.Hostname:
            raise InvalidParameter("conflicting options: hostname and the network mode")
        if self.NetworkingConfig is not None:
            self.NetworkingConfig.validate()
        refused = container_refusal(self, hc)
        if refused:
            raise InvalidParameter(refused)


# The fields of Docker's Config (the request's top level but HostConfig and NetworkingConfig).
CONFIG_FIELDS = tuple(
    f for f in ContainerCreate.__struct_fields__ if f not in ("HostConfig", "NetworkingConfig")
)


def exposed_ports(values: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """ExposedPorts with canonical keys ("80" -> "80/tcp", "53/UDP" -> "53/udp")."""
    out: dict[str, dict[str, Any]] = {}
    for key in values or {}:
        port, proto = ports.port_key(key)
        out[f"{port}/{proto}"] = {}
    return out


def port_bindings(
    values: dict[str, list[PortBinding] | None] | None,
) -> dict[str, list[dict[str, str]]]:
    """PortBindings as stored and shown by inspect, with canonical keys."""
    out: dict[str, list[dict[str, str]]] = {}
    for key, bindings in (values or {}).items():
        port, proto = ports.port_key(key)
        out.setdefault(f"{port}/{proto}", []).extend(
            {"HostIp": b.HostIp or "", "HostPort": b.HostPort or ""} for b in bindings or []
        )
    return out
