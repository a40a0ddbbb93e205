"""Container confinement as Docker does it by default: the pure part.

What a container may do is decided here, from its HostConfig (`Privileged`, `CapAdd`,
`CapDrop`, `SecurityOpt`, `MaskedPaths`, `ReadonlyPaths`) and a few facts about the host
(the capabilities tetherd holds, the architecture, the kernel version).  Nothing here touches
the kernel: `runtime/confine.py` compiles the seccomp filter with libseccomp and tether-shim
applies the result (see shim.c for the order and why).

The rules and messages follow moby: `daemon/pkg/oci/caps` (default set, CAP_ normalisation,
TweakCapabilities), `daemon/pkg/oci/defaults.go` (masked and read-only paths),
`daemon/daemon_unix.go` parseSecurityOpt, `daemon/seccomp_linux.go` and
`github.com/moby/profiles/seccomp` (profile conditions on capabilities, architecture and
kernel version).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tether.errors import InvalidParameter

# Linux capabilities by number (include/uapi/linux/capability.h; 40 is the last in 6.x).
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBER = {name: i for i, name in enumerate(CAPABILITIES)}

# moby daemon/pkg/oci/caps/defaults.go, in its order.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# moby daemon/pkg/oci/defaults.go (the per-CPU thermal_throttle entries are added by
# default_masked_paths when the host has them).
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

ALL = "ALL"
# The HostConfig fields the confinement depends on.
SECURITY_FIELDS = ("Privileged", "CapAdd", "CapDrop", "SecurityOpt", "MaskedPaths", "ReadonlyPaths")
SECCOMP_DEFAULT = "builtin"  # moby's name for its built-in profile (dconfig.SeccompProfileDefault)
SECCOMP_UNCONFINED = "unconfined"

DEFAULT_PROFILE_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json"
)


def default_masked_paths(possible_cpus: Iterable[int], exists: Callable[[str], bool]) -> list[str]:
    """Docker's masked paths, with the thermal_throttle directory of every CPU that has one."""
    out = list(DEFAULT_MASKED_PATHS)
    for cpu in possible_cpus:
        path = f"/sys/devices/system/cpu/cpu{cpu}/thermal_throttle"
        if exists(path):
            out.append(path)
    return out


def parse_cpu_list(text: str) -> list[int]:
    """`0-3,5` (as in /sys/devices/system/cpu/possible) -> [0, 1, 2, 3, 5]."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


# -- capabilities -----------------------------------------------------------------------------


def cap_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAP_NUMBER[name]
    return mask


def caps_of_mask(mask: int) -> list[str]:
    """Capability names of a bitmap (as /proc/PID/status prints it), in kernel order."""
    return [name for i, name in enumerate(CAPABILITIES) if mask >> i & 1]


def normalize_caps(values: Iterable[str], available: Iterable[str]) -> list[str]:
    """moby's NormalizeLegacyCapabilities: upper case, `CAP_` prefixed, `ALL` kept as it is.

    A name the kernel does not know is refused, and so is one it knows that tetherd itself
    does not hold (it could not be given to a container).
    """
    have = set(available)
    out: list[str] = []
    for value in values:
        name = str(value).upper()
        if name == ALL:
            out.append(name)
            continue
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if name not in CAP_NUMBER:
            raise InvalidParameter(f'unknown capability: "{name}"')
        if name not in have:
            raise InvalidParameter(
                "capability not supported by your kernel or not available in the current "
                f'environment: "{name}"'
            )
        out.append(name)
    return out


def check_caps(cap_add: list[str], cap_drop: list[str], available: Iterable[str]) -> None:
    """moby's validateCapabilities (daemon/container.go), at create."""
    have = list(available)
    try:
        normalize_caps(cap_add, have)
    except InvalidParameter as exc:
        raise InvalidParameter(f"invalid CapAdd: {exc.message}") from None
    try:
        normalize_caps(cap_drop, have)
    except InvalidParameter as exc:
        raise InvalidParameter(f"invalid CapDrop: {exc.message}") from None


def tweak_caps(
    cap_add: list[str], cap_drop: list[str], privileged: bool, available: list[str]
) -> list[str]:
    """moby's TweakCapabilities: the capability set a container runs with.

    `available` is what tetherd holds, in kernel order: "all" for --privileged and
    --cap-add ALL means these, as in Docker (containerd's cap.Current()).
    """
    if privileged:
        return list(available)
    if not cap_add and not cap_drop:
        return list(DEFAULT_CAPABILITIES)
    drops = normalize_caps(cap_drop, available)
    adds = normalize_caps(cap_add, available)
    if ALL in adds:
        return [c for c in available if c not in drops]
    if ALL in drops:
        caps = list(adds)
    else:
        caps = [c for c in DEFAULT_CAPABILITIES if c not in drops] + adds
    # Duplicates are harmless to the kernel; keep the first of each for a stable mask.
    return list(dict.fromkeys(caps))


# -- security options -------------------------------------------------------------------------


@dataclass(frozen=True)
class SecurityOptions:
    no_new_privileges: bool = False
    # "" (the default profile), SECCOMP_DEFAULT, SECCOMP_UNCONFINED, or a profile's JSON text.
    seccomp: str = ""


def _parse_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def parse_security_opts(opts: Iterable[str]) -> SecurityOptions:
    """moby's parseSecurityOpt, with tether's answer for what it cannot honour.

    tether applies no Linux security module, so `apparmor=unconfined`, `label=disable` (and
    the bare `disable`) describe exactly what it does and are accepted; any other AppArmor
    profile or SELinux label is refused, because accepting it would let the user believe the
    container is confined by it (Docker on a host without AppArmor/SELinux accepts and
    ignores them).  `writable-cgroups` is refused: tether mounts no cgroup filesystem.
    """
    nnp = False
    seccomp = ""
    for raw in opts:
        opt = str(raw)
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "disable":
            continue
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")
        else:
            raise InvalidParameter(f"invalid --security-opt 1: {_go_quote(opt)}")
        if key == "no-new-privileges":
            parsed = _parse_bool(value)
            if parsed is None:
                raise InvalidParameter(f"invalid --security-opt 2: {_go_quote(opt)}")
            nnp = parsed
        elif key == "seccomp":
            seccomp = value
        elif key == "apparmor":
            if value != "unconfined":
                raise InvalidParameter(
                    f"invalid --security-opt: {_go_quote(opt)}: tether applies no AppArmor "
                    'profile (only "apparmor=unconfined" is accepted)'
                )
        elif key == "label":
            if value != "disable":
                raise InvalidParameter(
                    f"invalid --security-opt: {_go_quote(opt)}: tether applies no SELinux "
                    'label (only "label=disable" is accepted)'
                )
        elif key == "writable-cgroups":
            if _parse_bool(value) is None:
                raise InvalidParameter(f"invalid --security-opt 2: {_go_quote(opt)}")
            raise InvalidParameter(
                f"invalid --security-opt: {_go_quote(opt)}: tether mounts no cgroup filesystem"
            )
        else:
            raise InvalidParameter(f"invalid --security-opt 2: {_go_quote(opt)}")
    return SecurityOptions(nnp, seccomp)


def _go_quote(text: str) -> str:
    """Go's %q for the printable strings these messages carry."""
    return json.dumps(text, ensure_ascii=False)


# -- seccomp profiles -------------------------------------------------------------------------

ACTIONS = (
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
)
OPERATORS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)
FLAGS = (
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
)
# Go's GOARCH (what a profile's includes/excludes "arches" name) -> the seccomp architecture
# of moby's nativeToSeccomp table, for the machines tether may run on.
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "x86", "riscv64": "riscv64"}
NATIVE_SCMP_ARCH = {
    "amd64": "SCMP_ARCH_X86_64",
    "arm64": "SCMP_ARCH_AARCH64",
    "x86": "SCMP_ARCH_X86",
    "riscv64": "SCMP_ARCH_RISCV64",
}
MAX_ERRNO = 4095
U64 = (1 << 64) - 1


class ProfileError(InvalidParameter):
    pass


@dataclass(frozen=True)
class Arg:
    index: int
    value: int
    value_two: int
    op: str


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[Arg, ...] = ()


@dataclass(frozen=True)
class Filter:
    """A profile resolved for one container (runtime-spec's LinuxSeccomp)."""

    default_action: str
    default_errno_ret: int | None
    architectures: tuple[str, ...]
    flags: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "defaultAction": self.default_action,
            "defaultErrnoRet": self.default_errno_ret,
            "architectures": list(self.architectures),
            "flags": list(self.flags),
            "syscalls": [
                {
                    "names": list(r.names),
                    "action": r.action,
                    "errnoRet": r.errno_ret,
                    "args": [
                        {"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}
                        for a in r.args
                    ],
                }
                for r in self.rules
            ],
        }

    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _fail(message: str) -> ProfileError:
    # moby's LoadProfile wraps every decoding error in these words.
    return ProfileError(f"Decoding seccomp profile failed: {message}")


def load_profile_text(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not isinstance(doc, dict):
        raise _fail("the profile must be a JSON object")
    return doc


def default_profile() -> dict[str, Any]:
    with open(DEFAULT_PROFILE_PATH) as f:
        return load_profile_text(f.read())


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"{where} must be a list of strings")
    return list(value)


def _uint(value: Any, where: str, top: int = U64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise _fail(f"{where} must be an integer from 0 to {top}")
    return value


def _kernel_version(value: Any, where: str) -> tuple[int, int] | None:
    """moby's KernelVersion: "<kernel>.<major>"."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(f'invalid kernel version in {where}: {value!r}, expected "<kernel>.<major>"')
    parts = value.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise _fail(f'invalid kernel version: "{value}", expected "<kernel>.<major>"')
    version = (int(parts[0]), int(parts[1]))
    if version == (0, 0) or max(version) > 255:
        raise _fail(f'invalid kernel version: "{value}", expected "<kernel>.<major>"')
    return version


def _condition(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(f"{where} must be an object")
    return {
        "caps": _str_list(value.get("caps"), f"{where}.caps"),
        "arches": _str_list(value.get("arches"), f"{where}.arches"),
        "minKernel": _kernel_version(value.get("minKernel"), f"{where}.minKernel"),
    }


def _action(value: Any, where: str) -> str:
    if value not in ACTIONS:
        raise _fail(f"{where}: unknown action {json.dumps(value)}")
    if value == "SCMP_ACT_NOTIFY":
        raise _fail(f"{where}: SCMP_ACT_NOTIFY needs a seccomp agent, which tether does not run")
    return str(value)


def resolve_profile(
    profile: dict[str, Any], caps: Iterable[str], machine: str, kernel: tuple[int, int]
) -> Filter | None:
    """moby's setupSeccomp: the profile's rules that apply to this container and host.

    `caps` is the container's bounding set, `machine` os.uname().machine, `kernel` the
    running kernel's (version, major revision).  None: the profile confines nothing (no
    default action and no rules, as moby reads an empty profile).
    """
    bounding = set(caps)
    arch = GO_ARCH.get(machine, machine)
    default_action = profile.get("defaultAction") or ""
    syscalls = profile.get("syscalls")
    if syscalls is not None and not isinstance(syscalls, list):
        raise _fail("syscalls must be a list")
    syscalls = syscalls or []
    if default_action == "" and not syscalls:
        return None
    default_action = _action(default_action, "defaultAction")
    default_errno = profile.get("defaultErrnoRet")
    if default_errno is not None:
        default_errno = _uint(default_errno, "defaultErrnoRet", MAX_ERRNO)
    architectures = _str_list(profile.get("architectures"), "architectures")
    arch_map = profile.get("archMap")
    if architectures and arch_map:
        raise _fail(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, "
            "use either 'architectures' or 'archMap'"
        )
    if arch_map is not None and not isinstance(arch_map, list):
        raise _fail("archMap must be a list")
    native = NATIVE_SCMP_ARCH.get(arch)
    for entry in arch_map or []:
        if not isinstance(entry, dict):
            raise _fail("archMap entries must be objects")
        sub = _str_list(entry.get("subArchitectures"), "archMap.subArchitectures")
        if native is not None and entry.get("architecture") == native:
            architectures = [native, *sub]
            break
    flags = _str_list(profile.get("flags"), "flags")
    for flag in flags:
        if flag not in FLAGS:
            raise _fail(f"unknown flag {json.dumps(flag)}")
    rules: list[Rule] = []
    for i, call in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(call, dict):
            raise _fail(f"{where} must be an object")
        names = _str_list(call.get("names"), f"{where}.names")
        name = call.get("name")
        if name:
            if names:
                raise _fail(
                    "both 'name' and 'names' are specified in the seccomp profile, "
                    "use either 'name' or 'names'"
                )
            if not isinstance(name, str):
                raise _fail(f"{where}.name must be a string")
            names = [name]
        action = _action(call.get("action"), f"{where}.action")
        errno_ret = call.get("errnoRet")
        if errno_ret is not None:
            errno_ret = _uint(errno_ret, f"{where}.errnoRet", MAX_ERRNO)
        raw_args = call.get("args")
        if raw_args is not None and not isinstance(raw_args, list):
            raise _fail(f"{where}.args must be a list")
        args: list[Arg] = []
        for j, a in enumerate(raw_args or []):
            if not isinstance(a, dict):
                raise _fail(f"{where}.args[{j}] must be an object")
            op = a.get("op")
            if op not in OPERATORS:
                raise _fail(f"{where}.args[{j}]: unknown operator {json.dumps(op)}")
            args.append(
                Arg(
                    _uint(a.get("index", 0), f"{where}.args[{j}].index", 5),
                    _uint(a.get("value", 0), f"{where}.args[{j}].value"),
                    _uint(a.get("valueTwo", 0), f"{where}.args[{j}].valueTwo"),
                    str(op),
                )
            )
        excludes = _condition(call.get("excludes"), f"{where}.excludes")
        includes = _condition(call.get("includes"), f"{where}.includes")
        if excludes:
            if arch in excludes["arches"]:
                continue
            if any(c in bounding for c in excludes["caps"]):
                continue
            if excludes["minKernel"] is not None and kernel >= excludes["minKernel"]:
                continue
        if includes:
            if includes["arches"] and arch not in includes["arches"]:
                continue
            if not all(c in bounding for c in includes["caps"]):
                continue
            if includes["minKernel"] is not None and kernel < includes["minKernel"]:
                continue
        if names:
            rules.append(Rule(tuple(names), action, errno_ret, tuple(args)))
    return Filter(default_action, default_errno, tuple(architectures), tuple(flags), tuple(rules))


def kernel_version(release: str) -> tuple[int, int]:
    """`6.18.44-fc-v1045` -> (6, 18): moby compares the version and major revision only."""
    head = release.split("-", 1)[0].split(".")
    try:
        return int(head[0]), int(head[1]) if len(head) > 1 else 0
    except ValueError:
        return 0, 0


# -- the whole decision -----------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """The facts about the host the decision depends on."""

    available_caps: tuple[str, ...]  # what tetherd holds (its CapEff), kernel order
    machine: str
    kernel: tuple[int, int]
    masked_paths: tuple[str, ...] = DEFAULT_MASKED_PATHS


@dataclass(frozen=True)
class Confinement:
    """What tether-shim applies to a container's process (and to every exec in it)."""

    caps: tuple[str, ...]
    no_new_privileges: bool
    seccomp: Filter | None
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    sys_writable: bool
    all_devices: bool = False  # no device cgroup rules (--privileged)

    @property
    def cap_mask(self) -> int:
        return cap_mask(self.caps)


def host_config_fields(hc: dict[str, Any], host: Host) -> dict[str, Any]:
    """Check a create request's security fields; what the container records, in Docker's shapes.

    As moby: CapAdd/CapDrop and SecurityOpt are kept as given (after their checks), and
    MaskedPaths/ReadonlyPaths get the defaults unless the container is privileged or the
    request set them.  A seccomp profile is resolved here too, so that a bad one is refused
    before anything is created (moby only finds out at start).
    """
    privileged = hc.get("Privileged")
    if privileged is not None and not isinstance(privileged, bool):
        raise InvalidParameter("invalid Privileged: must be a boolean")
    cap_add = _opt_str_list(hc.get("CapAdd"), "CapAdd")
    cap_drop = _opt_str_list(hc.get("CapDrop"), "CapDrop")
    security_opt = _opt_str_list(hc.get("SecurityOpt"), "SecurityOpt")
    masked = _opt_path_list(hc.get("MaskedPaths"), "MaskedPaths")
    readonly = _opt_path_list(hc.get("ReadonlyPaths"), "ReadonlyPaths")
    _check_paths_fit(masked or [], readonly or [])
    check_caps(cap_add or [], cap_drop or [], host.available_caps)
    opts = parse_security_opts(security_opt or [])
    fields: dict[str, Any] = {
        "Privileged": bool(privileged),
        "CapAdd": cap_add,
        "CapDrop": cap_drop,
        "SecurityOpt": security_opt,
        "MaskedPaths": masked,
        "ReadonlyPaths": readonly,
    }
    if not privileged:
        if masked is None:
            fields["MaskedPaths"] = list(host.masked_paths)
        if readonly is None:
            fields["ReadonlyPaths"] = list(DEFAULT_READONLY_PATHS)
    caps = tweak_caps(cap_add or [], cap_drop or [], bool(privileged), list(host.available_caps))
    seccomp_filter(opts, bool(privileged), caps, host, default_profile)
    return fields


def _opt_str_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"invalid {name}: must be a list of strings")
    for v in value:
        if "\x00" in v:
            raise InvalidParameter(f"invalid {name}: {_go_quote(v)}")
    return list(value)


def _opt_path_list(value: Any, name: str) -> list[str] | None:
    paths = _opt_str_list(value, name)
    for p in paths or []:
        if not p.startswith("/") or "\n" in p:
            raise InvalidParameter(f"invalid {name}: {_go_quote(p)} is not an absolute path")
    return paths


# Both lists travel on tether-shim's command line (one `--mask P`/`--readonly P` each), which
# the kernel takes up to ARG_MAX (2 MiB here, pointers included); half of it is theirs.
PATHS_BUDGET = 1 << 20
PATH_MAX = 4096


def _check_paths_fit(masked: list[str], readonly: list[str]) -> None:
    """Docker sets no limit; tether's is far past any real use, and refusing at create beats a
    container whose start fails."""
    for name, paths in (("MaskedPaths", masked), ("ReadonlyPaths", readonly)):
        for p in paths:
            if len(p.encode()) >= PATH_MAX:
                raise InvalidParameter(
                    f"invalid {name}: {_go_quote(p[:32] + '...')} is longer than "
                    f"{PATH_MAX - 1} bytes"
                )
    # Per path: its bytes and NUL, the option's, and two argv pointers.
    size = sum(len(p.encode()) + 1 + len("--readonly") + 1 + 16 for p in [*masked, *readonly])
    if size > PATHS_BUDGET:
        raise InvalidParameter(
            f"invalid MaskedPaths and ReadonlyPaths: {len(masked) + len(readonly)} paths "
            f"({size} bytes of arguments) are more than tether-shim can take (1 MiB)"
        )


def seccomp_filter(
    opts: SecurityOptions,
    privileged: bool,
    caps: list[str],
    host: Host,
    default: Callable[[], dict[str, Any]],
) -> Filter | None:
    """moby's WithSeccomp: unconfined, the default profile, or the container's own."""
    if opts.seccomp == SECCOMP_UNCONFINED:
        return None
    if privileged and not opts.seccomp:
        return None
    if opts.seccomp in ("", SECCOMP_DEFAULT):
        profile = default()
    else:
        profile = load_profile_text(opts.seccomp)
    return resolve_profile(profile, caps, host.machine, host.kernel)


def confinement(
    host_config: dict[str, Any],
    host: Host,
    default: Callable[[], dict[str, Any]] = default_profile,
    exec_privileged: bool = False,
) -> Confinement:
    """What a container created with `host_config` runs with.

    `exec_privileged` is `docker exec --privileged`: every capability, but the container's
    seccomp filter and no_new_privs stay, as in Docker (runc applies the container's
    filter to every process it starts in it).
    """
    # A record written before tether confined containers has no CapAdd key and says
    # "Privileged": true, which was not a choice of the user's: it gets the defaults.
    legacy = "CapAdd" not in host_config
    privileged = bool(host_config.get("Privileged")) and not legacy
    opts = parse_security_opts(host_config.get("SecurityOpt") or [])
    caps = tweak_caps(
        list(host_config.get("CapAdd") or []),
        list(host_config.get("CapDrop") or []),
        privileged,
        list(host.available_caps),
    )
    seccomp = seccomp_filter(opts, privileged, caps, host, default)
    if exec_privileged:
        caps = list(host.available_caps)
    masked = host.masked_paths if legacy else host_config.get("MaskedPaths")
    readonly = DEFAULT_READONLY_PATHS if legacy else host_config.get("ReadonlyPaths")
    return Confinement(
        caps=tuple(caps),
        no_new_privileges=opts.no_new_privileges,
        seccomp=seccomp,
        masked_paths=() if privileged else tuple(masked or ()),
        readonly_paths=() if privileged else tuple(readonly or ()),
        sys_writable=privileged,
        all_devices=privileged,
    )
