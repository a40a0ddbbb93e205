"""Container confinement decisions (runtime/security.py), the CLI's --security-opt
(secopts.py), compose's security keys and the host image's view, without root.

The compiled seccomp filter is also checked here, for real: a forked child loads it under
no_new_privs (no privilege needed) and makes the syscalls Docker's profile refuses.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tether.compose import loader, plan, render
from tether.errors import InvalidParameter
from tether.runtime import images, security
from tether.runtime.security import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    Host,
    ProfileError,
)
from tether.secopts import SecurityOptError, resolve

ALL_CAPS = list(security.CAPABILITIES)
# The environment this suite runs in lacks CAP_SYS_RESOURCE: a host that does is modelled too.
HOST = Host(
    available_caps=tuple(c for c in ALL_CAPS if c != "CAP_SYS_RESOURCE"),
    machine="x86_64",
    kernel=(6, 18),
)


def err(fn: Any, *args: Any) -> str:
    with pytest.raises(InvalidParameter) as exc:
        fn(*args)
    return str(exc.value.message)


# -- capabilities -----------------------------------------------------------------------


def test_docker_default_set_is_the_mask_docker_containers_show() -> None:
    assert f"{security.cap_mask(DEFAULT_CAPABILITIES):016x}" == "00000000a80425fb"
    assert security.tweak_caps([], [], False, ALL_CAPS) == list(DEFAULT_CAPABILITIES)


@pytest.mark.parametrize(
    ("given", "want"),
    [
        (["net_admin"], ["CAP_NET_ADMIN"]),
        (["CAP_net_raw"], ["CAP_NET_RAW"]),
        (["Sys_Admin", "all"], ["CAP_SYS_ADMIN", "ALL"]),
    ],
)
def test_capability_names_normalise_as_docker(given: list[str], want: list[str]) -> None:
    assert security.normalize_caps(given, ALL_CAPS) == want


def test_unknown_or_unavailable_capabilities_are_docker_errors() -> None:
    assert err(security.check_caps, ["foo"], [], ALL_CAPS) == (
        'invalid CapAdd: unknown capability: "CAP_FOO"'
    )
    assert err(security.check_caps, [], ["CAP_BAR"], ALL_CAPS) == (
        'invalid CapDrop: unknown capability: "CAP_BAR"'
    )
    assert err(security.check_caps, ["sys_resource"], [], HOST.available_caps) == (
        "invalid CapAdd: capability not supported by your kernel or not available in the "
        'current environment: "CAP_SYS_RESOURCE"'
    )


def test_tweak_caps_follows_moby() -> None:
    avail = list(HOST.available_caps)
    assert security.tweak_caps(["NET_ADMIN"], ["MKNOD"], False, avail) == [
        *(c for c in DEFAULT_CAPABILITIES if c != "CAP_MKNOD"),
        "CAP_NET_ADMIN",
    ]
    assert security.tweak_caps(["chown"], ["ALL"], False, avail) == ["CAP_CHOWN"]
    assert security.tweak_caps([], ["ALL"], False, avail) == []
    assert security.tweak_caps(["ALL"], ["sys_admin"], False, avail) == [
        c for c in avail if c != "CAP_SYS_ADMIN"
    ]
    assert security.tweak_caps(["CHOWN"], [], False, avail) == list(DEFAULT_CAPABILITIES)
    # --privileged: everything tetherd holds, whatever else was asked.
    assert security.tweak_caps([], ["ALL"], True, avail) == avail


def test_caps_of_mask_reads_proc_status_bitmaps() -> None:
    assert security.caps_of_mask(0xA80425FB) == sorted(
        DEFAULT_CAPABILITIES, key=security.CAP_NUMBER.__getitem__
    )


# -- security options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "nnp", "seccomp"),
    [
        ([], False, ""),
        (["no-new-privileges"], True, ""),
        (["no-new-privileges=true"], True, ""),
        (["no-new-privileges", "no-new-privileges=false"], False, ""),
        (["no-new-privileges:1"], True, ""),
        (["seccomp=unconfined"], False, "unconfined"),
        (
            ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}'],
            False,
            '{"defaultAction":"SCMP_ACT_ALLOW"}',
        ),
        (["apparmor=unconfined", "label=disable", "disable"], False, ""),
    ],
)
def test_security_opts(opts: list[str], nnp: bool, seccomp: str) -> None:
    assert security.parse_security_opts(opts) == security.SecurityOptions(nnp, seccomp)


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ("foo", 'invalid --security-opt 1: "foo"'),
        ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
        ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
        (
            "apparmor=docker-default",
            'invalid --security-opt: "apparmor=docker-default": tether applies no AppArmor '
            'profile (only "apparmor=unconfined" is accepted)',
        ),
        (
            "label=type:svirt_apache_t",
            'invalid --security-opt: "label=type:svirt_apache_t": tether applies no SELinux '
            'label (only "label=disable" is accepted)',
        ),
        (
            "writable-cgroups=true",
            'invalid --security-opt: "writable-cgroups=true": tether mounts no cgroup filesystem',
        ),
    ],
)
def test_security_opts_tether_cannot_honour_are_refused(opt: str, message: str) -> None:
    assert err(security.parse_security_opts, [opt]) == message


def test_client_reads_seccomp_profiles_and_systempaths(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(
        '{\n  "defaultAction": "SCMP_ACT_ALLOW",\n  "syscalls": []\n}\n'
    )
    opts, unconfined = resolve(
        ["seccomp=" + str(tmp_path / "p.json"), "no-new-privileges", "systempaths=unconfined"]
    )
    assert opts == ['seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}', "no-new-privileges"]
    assert unconfined
    assert resolve(["seccomp=unconfined", "seccomp=builtin"]) == (
        ["seccomp=unconfined", "seccomp=builtin"],
        False,
    )
    with pytest.raises(SecurityOptError, match=r'^invalid --security-opt: "seccomp="$'):
        resolve(["seccomp="])
    with pytest.raises(SecurityOptError, match=r'^invalid --security-opt: "label"$'):
        resolve(["label"])
    with pytest.raises(
        SecurityOptError,
        match=r"^opening seccomp profile \(/no/such.json\) failed: open /no/such.json: "
        "no such file or directory$",
    ):
        resolve(["seccomp=/no/such.json"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SecurityOptError, match=r"^compacting json for seccomp profile"):
        resolve(["seccomp=" + str(tmp_path / "bad.json")])


# -- seccomp profiles ---------------------------------------------------------------------


def names(f: security.Filter | None) -> dict[str, list[security.Rule]]:
    assert f is not None
    out: dict[str, list[security.Rule]] = {}
    for r in f.rules:
        for n in r.names:
            out.setdefault(n, []).append(r)
    return out


def test_default_profile_for_default_caps_on_amd64() -> None:
    f = security.resolve_profile(
        security.default_profile(), DEFAULT_CAPABILITIES, "x86_64", (6, 18)
    )
    assert f is not None
    assert (f.default_action, f.default_errno_ret) == ("SCMP_ACT_ERRNO", 1)
    assert f.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    calls = names(f)
    for refused in (
        "open_by_handle_at",
        "mount",
        "umount2",
        "unshare",
        "setns",
        "bpf",
        "keyctl",
        "add_key",
        "kexec_load",
        "init_module",
        "reboot",
        "clock_settime",
        "clone3",
    ):
        assert refused not in calls or all(r.action != "SCMP_ACT_ALLOW" for r in calls[refused])
    assert [(r.action, r.errno_ret) for r in calls["clone3"]] == [("SCMP_ACT_ERRNO", 38)]
    # clone is allowed only without namespace flags (arg 0 masked with CLONE_NEW*).
    assert [r.args for r in calls["clone"]] == [
        (security.Arg(0, 2114060288, 0, "SCMP_CMP_MASKED_EQ"),)
    ]
    for allowed in ("read", "chmod", "name_to_handle_at", "ptrace", "arch_prctl", "chroot"):
        assert any(r.action == "SCMP_ACT_ALLOW" for r in calls[allowed])
    assert "riscv_flush_icache" not in calls and "set_tls" not in calls


def test_profile_conditions_on_caps_arch_and_kernel() -> None:
    prof = security.default_profile()
    admin = security.resolve_profile(
        prof, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], "x86_64", (6, 18)
    )
    calls = names(admin)
    assert calls["mount"][0].action == "SCMP_ACT_ALLOW" and "clone3" in calls
    assert all(r.args == () for r in calls["clone"])  # the unconditional rule only
    assert "clone3" not in {n for r in admin.rules if r.action == "SCMP_ACT_ERRNO" for n in r.names}  # type: ignore[union-attr]
    dac = names(security.resolve_profile(prof, ["CAP_DAC_READ_SEARCH"], "x86_64", (6, 18)))
    assert "open_by_handle_at" in dac
    old = names(security.resolve_profile(prof, DEFAULT_CAPABILITIES, "x86_64", (4, 4)))
    assert "ptrace" not in old
    arm = security.resolve_profile(prof, DEFAULT_CAPABILITIES, "aarch64", (6, 18))
    assert arm is not None and arm.architectures == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert "arch_prctl" not in names(arm) and "set_tls" in names(arm)


def test_empty_profile_confines_nothing_as_in_moby() -> None:
    assert security.resolve_profile({}, [], "x86_64", (6, 18)) is None


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"defaultAction": "SCMP_ACT_NOPE"}, 'defaultAction: unknown action "SCMP_ACT_NOPE"'),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86"],
                "archMap": [{"architecture": "SCMP_ARCH_X86"}],
            },
            "both 'architectures' and 'archMap' are specified",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ERRNO"}],
            },
            "both 'name' and 'names' are specified",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": "chmod", "action": "SCMP_ACT_ERRNO"}],
            },
            "syscalls[0].names must be a list of strings",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["chmod"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 9, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
            "syscalls[0].args[0].index must be an integer from 0 to 5",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["chmod"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "op": "LIKE"}],
                    }
                ],
            },
            'unknown operator "LIKE"',
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["x"], "action": "SCMP_ACT_NOTIFY"}],
            },
            "SCMP_ACT_NOTIFY needs a seccomp agent",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["x"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "6"}}
                ],
            },
            'invalid kernel version: "6"',
        ),
    ],
)
def test_bad_profiles_are_refused(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError) as exc:
        security.resolve_profile(profile, DEFAULT_CAPABILITIES, "x86_64", (6, 18))
    assert exc.value.message.startswith("Decoding seccomp profile failed: ")
    assert message in exc.value.message


def test_profile_text_must_be_json() -> None:
    with pytest.raises(ProfileError, match="Decoding seccomp profile failed"):
        security.load_profile_text("{nope")


# -- the whole decision ---------------------------------------------------------------------


def test_host_config_fields_as_docker_records_them() -> None:
    fields = security.host_config_fields({}, HOST)
    assert fields == {
        "Privileged": False,
        "CapAdd": None,
        "CapDrop": None,
        "SecurityOpt": None,
        "MaskedPaths": list(DEFAULT_MASKED_PATHS),
        "ReadonlyPaths": list(DEFAULT_READONLY_PATHS),
    }
    priv = security.host_config_fields({"Privileged": True, "CapAdd": ["net_admin"]}, HOST)
    assert priv["MaskedPaths"] is None and priv["ReadonlyPaths"] is None
    assert priv["CapAdd"] == ["net_admin"]  # kept as given, as dockerd does
    unconfined = security.host_config_fields({"MaskedPaths": [], "ReadonlyPaths": []}, HOST)
    assert unconfined["MaskedPaths"] == [] and unconfined["ReadonlyPaths"] == []
    assert err(security.host_config_fields, {"MaskedPaths": ["proc/kcore"]}, HOST) == (
        'invalid MaskedPaths: "proc/kcore" is not an absolute path'
    )
    assert "Decoding seccomp profile failed" in err(
        security.host_config_fields, {"SecurityOpt": ["seccomp={"]}, HOST
    )


def test_confinement_default_privileged_and_exec_privileged() -> None:
    def conf(hc: dict[str, Any], exec_priv: bool = False) -> security.Confinement:
        return security.confinement(
            security.host_config_fields(hc, HOST), HOST, exec_privileged=exec_priv
        )

    c = conf({})
    assert c.cap_mask == 0xA80425FB and c.seccomp is not None and not c.no_new_privileges
    assert c.masked_paths == DEFAULT_MASKED_PATHS and c.readonly_paths == DEFAULT_READONLY_PATHS
    assert not c.sys_writable
    p = conf({"Privileged": True})
    assert p.caps == HOST.available_caps and p.seccomp is None
    assert p.masked_paths == () and p.readonly_paths == () and p.sys_writable
    # moby: a privileged container with an explicit profile gets that profile.
    custom = '{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}'
    pc = conf({"Privileged": True, "SecurityOpt": ["seccomp=" + custom]})
    assert pc.seccomp is not None and pc.seccomp.rules[0].names == ("chmod",)
    # exec --privileged: every capability, the container's filter and no_new_privs stay.
    e = conf({"SecurityOpt": ["no-new-privileges"]}, exec_priv=True)
    assert e.caps == HOST.available_caps and e.seccomp is not None and e.no_new_privileges
    assert conf({"SecurityOpt": ["seccomp=unconfined"]}).seccomp is None
    # A record written before tether confined containers said "Privileged": true by itself.
    legacy = security.confinement({"NetworkMode": "default", "Privileged": True}, HOST)
    assert legacy.cap_mask == 0xA80425FB and legacy.seccomp is not None
    assert legacy.masked_paths == HOST.masked_paths


def test_masked_paths_add_thermal_throttle_of_cpus_that_have_it() -> None:
    present = {"/sys/devices/system/cpu/cpu1/thermal_throttle"}
    got = security.default_masked_paths(security.parse_cpu_list("0-1\n"), present.__contains__)
    assert got == [*DEFAULT_MASKED_PATHS, "/sys/devices/system/cpu/cpu1/thermal_throttle"]
    assert security.parse_cpu_list("0-3,5") == [0, 1, 2, 3, 5]
    assert security.kernel_version("6.18.44-fc-v1045") == (6, 18)


# -- the compiled filter, loaded for real in a child ----------------------------------------


def _probe_in_filtered_child(
    program: bytes, calls: list[tuple[str, int, tuple[int, ...]]]
) -> dict[str, int]:
    """Fork; the child sets no_new_privs, loads `program`, makes each syscall; errno of each."""
    libc = ctypes.CDLL(None, use_errno=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)

            class Prog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

            buf = ctypes.create_string_buffer(program, len(program))
            prog = Prog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
            if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:
                os._exit(3)
            out = {}
            for name, nr, args in calls:
                ctypes.set_errno(0)
                rc = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
                out[name] = ctypes.get_errno() if rc == -1 else 0
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, int] = json.loads(data)
    return result


# x86_64 syscall numbers.
NR = {
    "getpid": 39,
    "mount": 165,
    "unshare": 272,
    "keyctl": 250,
    "bpf": 321,
    "kexec_load": 246,
    "open_by_handle_at": 304,
    "clone3": 435,
    "chmod": 90,
    "future": 499,
}


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64's")
def test_compiled_default_filter_refuses_what_docker_refuses() -> None:
    confine = pytest.importorskip("tether.runtime.confine")
    f = security.resolve_profile(
        security.default_profile(), DEFAULT_CAPABILITIES, "x86_64", (6, 18)
    )
    assert f is not None
    program = confine.compile_filter(f)
    got = _probe_in_filtered_child(
        program,
        [
            ("getpid", NR["getpid"], ()),
            ("mount", NR["mount"], (0, 0, 0, 0, 0)),
            ("unshare", NR["unshare"], (0x20000,)),
            ("keyctl", NR["keyctl"], (0, -3, 0)),
            ("bpf", NR["bpf"], (0, 0, 0)),
            ("kexec_load", NR["kexec_load"], (0, 0, 0, 0x7FFF0000)),
            ("open_by_handle_at", NR["open_by_handle_at"], (0, 0, 0)),
            ("clone3", NR["clone3"], (0, 0)),
            ("future", NR["future"], ()),
        ],
    )
    assert got == {
        "getpid": 0,
        "mount": errno.EPERM,
        "unshare": errno.EPERM,
        "keyctl": errno.EPERM,
        "bpf": errno.EPERM,
        "kexec_load": errno.EPERM,
        "open_by_handle_at": errno.EPERM,
        "clone3": errno.ENOSYS,  # the profile's own errnoRet, so that libc falls back to clone
        "future": errno.ENOSYS,  # newer than anything the profile names: runc's -ENOSYS stub
    }


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64's")
def test_compiled_custom_filter_denies_chmod_only() -> None:
    confine = pytest.importorskip("tether.runtime.confine")
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }
    f = security.resolve_profile(profile, DEFAULT_CAPABILITIES, "x86_64", (6, 18))
    assert f is not None
    program = confine.compile_filter(f)
    got = _probe_in_filtered_child(
        program, [("chmod", NR["chmod"], (0, 0)), ("getpid", NR["getpid"], ())]
    )
    assert got == {"chmod": errno.EACCES, "getpid": 0}
    # The default action lets calls through: no -ENOSYS stub in front (runc's rule).
    assert confine.enosys_stub(f, confine.libseccomp()) == b""


# -- compose --------------------------------------------------------------------------------


def test_compose_security_keys_reach_the_host_config(tmp_path: Path) -> None:
    d = tmp_path / "app"
    d.mkdir()
    (d / "deny-chmod.json").write_text(
        '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]}'
    )
    (d / "compose.yaml").write_text(
        "services:\n  web:\n    image: busybox\n    privileged: false\n    cap_add: [NET_ADMIN]\n"
        "    cap_drop: [MKNOD]\n    security_opt: [no-new-privileges, seccomp=deny-chmod.json]\n"
        "  plain:\n    image: busybox\n"
    )
    p = loader.load([], cwd=str(d), environ={})
    assert p.warnings == []
    hc = plan.container_body(p, p.services["web"], 1, "sha256:abc")["HostConfig"]
    assert (
        hc["Privileged"] is False and hc["CapAdd"] == ["NET_ADMIN"] and hc["CapDrop"] == ["MKNOD"]
    )
    assert hc["SecurityOpt"] == [
        "no-new-privileges",
        'seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}',
    ]
    out = render.model_dict(p)["services"]["web"]
    assert out["security_opt"] == ["no-new-privileges", "seccomp=deny-chmod.json"]
    assert out["cap_add"] == ["NET_ADMIN"] and "privileged" not in out
    plain = plan.container_body(p, p.services["plain"], 1, "sha256:abc")["HostConfig"]
    assert plain["Privileged"] is False and plain["CapAdd"] is None


def test_compose_missing_seccomp_profile_is_refused_before_anything(tmp_path: Path) -> None:
    d = tmp_path / "app"
    d.mkdir()
    (d / "compose.yaml").write_text(
        "services:\n  web:\n    image: busybox\n    security_opt: [seccomp=nope.json]\n"
    )
    with pytest.raises(
        Exception, match=r"services.web.security_opt: opening seccomp profile \(nope.json\) failed"
    ):
        loader.load([], cwd=str(d), environ={})


# -- the host image's view ------------------------------------------------------------------


def test_host_view_hides_secrets_and_tether_paths(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "ssl" / "private").mkdir(parents=True)
    (etc / "ssl" / "certs").mkdir()
    (etc / "ssl" / "certs" / "ca.pem").write_text("public")
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (etc / "shadow").write_text("root:$6$secret\n")
    (etc / "app.key").write_text("secret")
    (etc / "ssl" / "private").chmod(0o700)
    (etc / "shadow").chmod(0o640)
    (etc / "app.key").chmod(0o600)
    (etc / "link").symlink_to("/etc/passwd")
    view = images.host_view("/scratch", ["/usr/lib/tether-state", "/var/lib/tether"], str(etc))
    assert view.cow_binds == [(str(etc), "/etc", "/scratch")]
    assert view.readonly == ["/etc"]
    for hidden in ("/etc/shadow", "/etc/ssl/private", "/etc/app.key", "/etc/gshadow"):
        assert hidden in view.hidden
    assert "/etc/passwd" not in view.hidden and "/etc/ssl/certs/ca.pem" not in view.hidden
    # tether's own paths are hidden only where the view would show them.
    assert ("/usr/lib/tether-state" in view.hidden) == os.path.isdir("/usr")
    assert "/var/lib/tether" not in view.hidden
    # Only program and library trees, read-only (merged /usr shows as symlinks).
    shown = {dst for _, dst in view.ro_binds} | {dst for _, dst in view.symlinks}
    assert shown <= {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr"}
    assert "/usr" in shown
    assert stat.S_ISDIR(os.stat("/usr").st_mode)
