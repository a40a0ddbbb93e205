"""Container confinement, the daemon's side: host facts, seccomp compilation, shim arguments.

The decision is pure (`runtime/security.py`); this module turns it into what tether-shim
loads.  A seccomp filter is compiled by libseccomp, the real library (through ctypes: the
same calls runc makes through libseccomp-golang), exported as raw BPF with
`seccomp_export_bpf`, prefixed with runc's -ENOSYS stub, and cached by content under
ROOT/seccomp.  tether-shim only reads that file and hands it to the kernel, so it stays small
and static, and a container start pays for a file read, not for a compilation.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import os
import struct
import tempfile
import threading
from typing import Any

from tether.runtime import security, shim
from tether.runtime.security import Confinement, Filter, Host, ProfileError

# libseccomp's action values (seccomp.h) and attribute/operator enums.
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000
EPERM = 1
ENOSYS = 38
FLTATR_CTL_NNP = 3
FLTATR_CTL_OPTIMIZE = 8
OPERATOR_CODE = {name: i + 1 for i, name in enumerate(security.OPERATORS)}  # NE=1 .. MASKED_EQ=7
# seccomp(2) flags; TSYNC is meaningless for the single-threaded shim (runc ignores it too).
FLAG_BITS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 0,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
X32_BIT = 0x40000000
AUDIT_ARCH_X86_64 = 0xC000003E
SCMP_ARCH_X32 = 0x4000003E  # libseccomp's own token; the kernel reports x32 as x86_64
BPF_MAXINSNS = 4096
STUB_VERSION = "enosys-1"


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class Libseccomp:
    """The few libseccomp calls a compilation needs."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as exc:
            raise ProfileError(
                f"seccomp profiles need libseccomp (apt-get install libseccomp2): {exc}"
            ) from None
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.restype = None
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_native.argtypes = []
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        ]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_version.argtypes = []
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        self.lib = lib
        v = lib.seccomp_version().contents
        self.version = f"{v.major}.{v.minor}.{v.micro}"
        self.native = int(lib.seccomp_arch_native())

    def arch(self, name: str) -> int:
        """`SCMP_ARCH_X86_64` (runtime-spec) -> libseccomp's token (`x86_64`)."""
        token = int(
            self.lib.seccomp_arch_resolve_name(name.removeprefix("SCMP_ARCH_").lower().encode())
        )
        if token == 0:
            raise ProfileError(
                f"error validating Seccomp architecture: unknown architecture {name!r}"
            )
        return token

    def syscall(self, name: str) -> int | None:
        nr = int(self.lib.seccomp_syscall_resolve_name(name.encode()))
        return None if nr == -1 else nr  # __NR_SCMP_ERROR: unknown to libseccomp

    def syscall_on(self, arch: int, name: str) -> int:
        return int(self.lib.seccomp_syscall_resolve_name_arch(arch, name.encode()))


_LIB: Libseccomp | None = None
_LIB_LOCK = threading.Lock()


def libseccomp() -> Libseccomp:
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            _LIB = Libseccomp()
        return _LIB


def _action(name: str, errno_ret: int | None) -> int:
    """runc's getAction: errno and trace default to EPERM."""
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return ACT_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return ACT_TRAP
    if name == "SCMP_ACT_ERRNO":
        return ACT_ERRNO | (EPERM if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_TRACE":
        return ACT_TRACE | (EPERM if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_LOG":
        return ACT_LOG
    if name == "SCMP_ACT_ALLOW":
        return ACT_ALLOW
    raise ProfileError(f"invalid action {name!r}, cannot use in rule")


def flags_of(f: Filter) -> int:
    bits = 0
    for flag in f.flags:
        bits |= FLAG_BITS[flag]
    return bits


def compile_filter(f: Filter, lib: Libseccomp | None = None) -> bytes:
    """The filter as the kernel takes it: an array of struct sock_filter (host endian).

    The rules go into libseccomp as runc's InitSeccomp puts them: the default action, the
    extra architectures, binary-tree optimisation for long rule sets, one rule per syscall
    name (skipped when its action is the default, or when libseccomp does not know the
    name), conditions on the same argument split into separate rules.
    """
    lib = lib or libseccomp()
    default = _action(f.default_action, f.default_errno_ret)
    ctx = lib.lib.seccomp_init(default)
    if not ctx:
        raise ProfileError("error creating filter: seccomp_init failed")
    try:
        for name in f.architectures:
            rc = lib.lib.seccomp_arch_add(ctx, lib.arch(name))
            if rc < 0 and rc != -17:  # EEXIST: the native architecture is there already
                raise ProfileError(
                    f"error adding architecture to seccomp filter: {os.strerror(-rc)}"
                )
        if sum(len(r.names) for r in f.rules) > 32:
            lib.lib.seccomp_attr_set(ctx, FLTATR_CTL_OPTIMIZE, 2)  # older libseccomp: ignored
        lib.lib.seccomp_attr_set(ctx, FLTATR_CTL_NNP, 0)  # the shim sets no_new_privs itself
        for rule in f.rules:
            action = _action(rule.action, rule.errno_ret)
            if action == default:
                continue
            groups: list[list[security.Arg]]
            indexes = [a.index for a in rule.args]
            if len(set(indexes)) != len(indexes):
                groups = [[a] for a in rule.args]  # an OR of conditions on one argument
            else:
                groups = [list(rule.args)]
            for name in rule.names:
                nr = lib.syscall(name)
                if nr is None:
                    continue  # not known to this libseccomp: as runc, ignore it
                for group in groups:
                    conds = (_ArgCmp * max(len(group), 1))()
                    for i, a in enumerate(group):
                        conds[i] = _ArgCmp(a.index, OPERATOR_CODE[a.op], a.value, a.value_two)
                    rc = lib.lib.seccomp_rule_add_array(ctx, action, nr, len(group), conds)
                    if rc < 0:
                        raise ProfileError(
                            f"error adding seccomp filter rule for syscall {name}: {os.strerror(-rc)}"
                        )
        fd = os.memfd_create("tether-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise ProfileError(f"error exporting seccomp filter: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            program = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.lib.seccomp_release(ctx)
    program = enosys_stub(f, lib) + program
    if len(program) // 8 > BPF_MAXINSNS:
        raise ProfileError(
            f"the seccomp filter has {len(program) // 8} instructions; the kernel takes {BPF_MAXINSNS}"
        )
    return program


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


LD_ABS_W = 0x20
JEQ = 0x15
JGT = 0x25
JSET = 0x45
JA = 0x05
RET = 0x06


def enosys_stub(f: Filter, lib: Libseccomp) -> bytes:
    """runc's -ENOSYS stub (libcontainer/seccomp/patchbpf), in front of libseccomp's program.

    A syscall newer than every syscall the profile names gets ENOSYS instead of the default
    action's EPERM, so that a libc probing a new syscall (clone3, fchmodat2...) falls back to
    the old one, as it does on a kernel that lacks it.  Not added when the default action
    lets calls through or already answers ENOSYS.
    """
    if f.default_action in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"):
        return b""
    if f.default_errno_ret == ENOSYS:
        return b""
    arches = {lib.arch(name) for name in f.architectures} | {lib.native}
    # Largest syscall number named by the profile, per architecture (x32 numbers carry
    # bit 30; x32 shares the x86_64 audit architecture).
    largest: dict[int, dict[int, int]] = {}
    for token in sorted(arches):
        top = 0
        for rule in f.rules:
            for name in rule.names:
                nr = lib.syscall_on(token, name)
                if nr > top:
                    top = nr
        if top:
            audit = AUDIT_ARCH_X86_64 if token == SCMP_ARCH_X32 else token
            largest.setdefault(audit, {})[token] = top
    if not largest:
        return b""
    # A symbolic program: instructions (code, jump-if-true, jump-if-false, k), where jumps
    # and `ja`'s k may name a label; a bare string in the list places a label.
    prog: list[Insn | str] = [(LD_ABS_W, 0, 0, 4)]
    for audit in sorted(largest):
        prog.append((JEQ, f"arch{audit}", 0, audit))
    prog.append((JA, 0, 0, "filter"))
    for audit in sorted(largest):
        tops = largest[audit]
        prog += [f"arch{audit}", (LD_ABS_W, 0, 0, 0)]
        if audit == AUDIT_ARCH_X86_64:
            native64 = tops.get(AUDIT_ARCH_X86_64)
            x32 = tops.get(SCMP_ARCH_X32)
            if native64 and x32:
                prog += [
                    (JSET, "x32", 0, X32_BIT),
                    (JGT, "enosys", "filter", native64),
                    "x32",
                    (JGT, "enosys", "filter", x32),
                ]
            elif native64:
                prog += [(JSET, "filter", 0, X32_BIT), (JGT, "enosys", "filter", native64)]
            elif x32:
                prog += [(JSET, 0, "filter", X32_BIT), (JGT, "enosys", "filter", x32)]
        else:
            prog.append((JGT, "enosys", "filter", max(tops.values())))
    prog += ["enosys", (RET, 0, 0, ACT_ERRNO | ENOSYS)]
    return _assemble(prog)


Insn = tuple[int, str | int, str | int, str | int]


def _assemble(prog: list[Insn | str]) -> bytes:
    """Resolve labels into relative jumps; "filter" is the first instruction after the stub."""
    where: dict[str, int] = {}
    insns: list[Insn] = []
    for item in prog:
        if isinstance(item, str):
            where[item] = len(insns)
        else:
            insns.append(item)
    where["filter"] = len(insns)

    def rel(target: str | int, at: int) -> int:
        return target if isinstance(target, int) else where[target] - (at + 1)

    out = bytearray()
    for at, (code, jt, jf, k) in enumerate(insns):
        t, f_, kk = rel(jt, at), rel(jf, at), rel(k, at)
        if not (0 <= t <= 255 and 0 <= f_ <= 255 and kk >= 0):
            raise ProfileError("the -ENOSYS stub does not fit classic BPF jumps")
        out += _insn(code, t, f_, kk)
    return bytes(out)


def host_facts() -> Host:
    """What tetherd holds and runs on: its effective capabilities, architecture, kernel."""
    mask = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            cpus = security.parse_cpu_list(f.read())
    except (OSError, ValueError):
        cpus = []
    uname = os.uname()
    return Host(
        available_caps=tuple(security.caps_of_mask(mask)),
        machine=uname.machine,
        kernel=security.kernel_version(uname.release),
        masked_paths=tuple(security.default_masked_paths(cpus, os.path.exists)),
    )


class Confiner:
    """Checks containers' security settings at create; what tether-shim applies at start/exec."""

    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "seccomp")
        self.host = host_facts()
        self._default: dict[str, Any] | None = None
        self._compiled: dict[str, str] = {}  # Filter digest -> path of its BPF
        self._shim: dict[str, shim.Security] = {}  # settings -> what the shim gets
        self._checked: dict[str, dict[str, Any]] = {}  # create's settings -> recorded fields
        self._lock = threading.Lock()

    def default_profile(self) -> dict[str, Any]:
        if self._default is None:
            self._default = security.default_profile()
        return self._default

    def check(self, host_config: dict[str, Any]) -> dict[str, Any]:
        """The security fields a new container records (raises InvalidParameter).

        Settings already seen are answered from memory: resolving Docker's profile and
        hashing the result costs ~2 ms, which every `create` would otherwise pay."""
        key = json.dumps([host_config.get(k) for k in security.SECURITY_FIELDS])
        found = self._checked.get(key)
        if found is not None:
            return copy.deepcopy(found)
        fields = security.host_config_fields(host_config, self.host)
        self.shim_security(fields)  # libseccomp's own refusals count as bad input too
        if len(self._checked) > 256:
            self._checked.clear()
        self._checked[key] = fields
        return copy.deepcopy(fields)

    def confinement(
        self, host_config: dict[str, Any], exec_privileged: bool = False
    ) -> Confinement:
        return security.confinement(host_config, self.host, self.default_profile, exec_privileged)

    def shim_security(
        self, host_config: dict[str, Any], exec_privileged: bool = False
    ) -> shim.Security:
        """The shim's arguments for a container (or an exec in it): the same settings give the
        same answer, remembered, so a start costs a dictionary lookup here."""
        key = json.dumps(
            [host_config.get(k) for k in security.SECURITY_FIELDS]
            + ["CapAdd" in host_config, exec_privileged]
        )
        found = self._shim.get(key)
        if found is not None and (found.seccomp is None or os.path.exists(found.seccomp)):
            return found
        c = self.confinement(host_config, exec_privileged)
        out = shim.Security(
            caps=c.cap_mask,
            no_new_privs=c.no_new_privileges,
            seccomp=self.bpf_path(c.seccomp) if c.seccomp is not None else None,
            seccomp_flags=flags_of(c.seccomp) if c.seccomp is not None else 0,
            masked=list(c.masked_paths),
            readonly=list(c.readonly_paths),
            sys_writable=c.sys_writable,
            all_devices=c.all_devices,
        )
        if len(self._shim) > 256:
            self._shim.clear()
        self._shim[key] = out
        return out

    def bpf_path(self, f: Filter) -> str:
        """The compiled filter's file, compiled on first use (also by an earlier tetherd)."""
        digest = f.digest()
        with self._lock:
            path = self._compiled.get(digest)
            if path is not None and os.path.exists(path):
                return path
            lib = libseccomp()
            key = hashlib.sha256(
                f"{digest} {lib.version} {lib.native} {STUB_VERSION}".encode()
            ).hexdigest()[:32]
            path = os.path.join(self.dir, f"{key}.bpf")
            if not os.path.exists(path):
                program = compile_filter(f, lib)
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".bpf-", dir=self.dir)
                try:
                    os.write(fd, program)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            self._compiled[digest] = path
            return path
