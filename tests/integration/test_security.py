"""Containers confined as Docker confines them, tried as an attacker would.

Two small C programs written here and compiled in the test (static, so they run in the
busybox image): `shocker` (name_to_handle_at + open_by_handle_at on a handle for the root
inode of a filesystem the container shares with the host: the 2014 "shocker" escape) and
`probe` (makes the syscalls Docker's seccomp profile refuses and prints each errno).  Every
test here failed before tether confined containers (full capabilities, no seccomp, /proc and
the host image wide open).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator

import pytest

from nshost import NamespaceHost, busybox_tar, namespace_host
from tether.runtime.security import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS

pytestmark = pytest.mark.integration

SHOCKER_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* PATH is a file on a filesystem shared with the host (a bind mount).  A handle for inode 2,
 * generation 0 (the root directory of ext2/3/4) opens that filesystem's root, which is the
 * host's / when PATH lives on the root filesystem. */
int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/etc/hosts";
    struct { struct file_handle h; unsigned char bytes[128]; } fh;
    int mount_id;
    fh.h.handle_bytes = sizeof fh.bytes;
    if (name_to_handle_at(AT_FDCWD, path, &fh.h, &mount_id, 0) != 0) {
        printf("name_to_handle_at: %s\n", strerror(errno));
        return 2;
    }
    int mount_fd = open(path, O_RDONLY);
    unsigned int root[2] = {2, 0};
    memcpy(fh.h.f_handle, root, sizeof root);
    fh.h.handle_bytes = sizeof root;
    fh.h.handle_type = 1; /* FILEID_INO32_GEN */
    int fd = open_by_handle_at(mount_fd, &fh.h, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        printf("open_by_handle_at: %s\n", strerror(errno));
        return 1;
    }
    DIR *d = fdopendir(fd);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) printf("entry %s\n", e->d_name);
    return 0;
}
"""

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Each call is harmless if let through: bad pointers, bad magic, bad flags. */
int main(void) {
    struct { const char *name; long nr; long a[6]; } calls[] = {
        {"mount", SYS_mount, {0, 0, 0, 0, 0, 0}},
        {"umount2", SYS_umount2, {0, 0}},
        {"unshare", SYS_unshare, {0x20000000 /* CLONE_NEWUTS */}},
        {"setns", SYS_setns, {-1, 0}},
        {"keyctl", SYS_keyctl, {0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0}},
        {"add_key", SYS_add_key, {0, 0, 0, 0, 0}},
        {"bpf", SYS_bpf, {0, 0, 0}},
        {"kexec_load", SYS_kexec_load, {0, 0, 0, 0x7fff0000 /* no such architecture */}},
        {"init_module", SYS_init_module, {0, 0, 0}},
        {"reboot", SYS_reboot, {0, 0, 0, 0} /* wrong magic */},
        {"open_by_handle_at", SYS_open_by_handle_at, {-1, 0, 0}},
        {"clone3", SYS_clone3, {0, 0}},
        {"getpid", SYS_getpid, {0}},
    };
    for (unsigned i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        errno = 0;
        long r = syscall(calls[i].nr, calls[i].a[0], calls[i].a[1], calls[i].a[2], calls[i].a[3],
                         calls[i].a[4], calls[i].a[5]);
        printf("%s=%d\n", calls[i].name, r == -1 ? errno : 0);
    }
    return 0;
}
"""

EPERM, ENOSYS = 1, 38
# What Docker's default profile answers (clone3: its own errnoRet, so that libc falls back).
PROBE_EXPECTED = {
    "mount": EPERM,
    "umount2": EPERM,
    "unshare": EPERM,
    "setns": EPERM,
    "keyctl": EPERM,
    "add_key": EPERM,
    "bpf": EPERM,
    "kexec_load": EPERM,
    "init_module": EPERM,
    "reboot": EPERM,
    "open_by_handle_at": EPERM,
    "clone3": ENOSYS,
    "getpid": 0,
}
DOCKER_DEFAULT_CAPS = "00000000a80425fb"
DENY_CHMOD = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
        {"names": ["chmod", "fchmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}
    ],
}


@pytest.fixture(scope="module")
def tools() -> Iterator[str]:
    """A directory with the static `shocker` and `probe` programs and a busybox image with them."""
    d = tempfile.mkdtemp(prefix="tether-sec-")
    try:
        for name, source in (("shocker", SHOCKER_C), ("probe", PROBE_C)):
            with open(os.path.join(d, f"{name}.c"), "w") as f:
                f.write(source)
            subprocess.run(
                [
                    "gcc",
                    "-static",
                    "-O2",
                    "-o",
                    os.path.join(d, name),
                    os.path.join(d, f"{name}.c"),
                ],
                check=True,
                capture_output=True,
            )
        tar = os.path.join(d, "image.tar")
        shutil.copy(busybox_tar(), tar)
        with tarfile.open(tar, "a") as t:
            for name in ("shocker", "probe"):
                t.add(os.path.join(d, name), arcname=f"bin/{name}")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def shost(tools: str) -> Iterator[NamespaceHost]:
    with namespace_host() as h:
        h.ok(
            "image", "import", "--change", 'CMD ["sh"]', os.path.join(tools, "image.tar"), "busybox"
        )
        yield h


def status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def proc_status(h: NamespaceHost, *run_args: str) -> dict[str, str]:
    return status(h.ok("run", "--rm", *run_args, "busybox", "cat", "/proc/self/status"))


def mounts(text: str) -> dict[str, list[str]]:
    """mountinfo -> {mount point: options} (the last mount on a point wins)."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        out[fields[4]] = fields[5].split(",")
    return out


def probe(h: NamespaceHost, *run_args: str) -> dict[str, int]:
    out = h.ok("run", "--rm", *run_args, "busybox", "probe")
    return {k: int(v) for k, v in (line.split("=") for line in out.split())}


def test_shocker_cannot_open_the_hosts_root(shost: NamespaceHost, tools: str) -> None:
    h = shost
    # The program is a real escape where nothing stops it: on the host, from a file in
    # tether's state (the same filesystem as /), it lists the root directory of /.
    host_file = os.path.join(h.dir, "resolv.conf")
    shared_fs = os.stat(host_file).st_dev == os.stat("/").st_dev
    if shared_fs:
        r = subprocess.run(
            [os.path.join(tools, "shocker"), host_file], capture_output=True, text=True
        )
        assert r.returncode == 0
        assert {line[6:] for line in r.stdout.splitlines() if line.startswith("entry ")} >= set(
            os.listdir("/")
        )
    # In a container: /etc/hosts is a bind mount of a file on that filesystem.
    r = h.cli("run", "--rm", "busybox", "shocker", "/etc/hosts")
    assert (r.returncode, r.stdout) == (1, "open_by_handle_at: Operation not permitted\n")
    r = h.cli(
        "run", "--rm", "busybox", "sh", "-c", "shocker /etc/resolv.conf; shocker /etc/hostname"
    )
    assert "entry" not in r.stdout and r.stdout.count("Operation not permitted") == 2
    # As in Docker, only CAP_DAC_READ_SEARCH lets open_by_handle_at through its profile.
    if shared_fs:
        r = h.cli("run", "--rm", "--cap-add", "DAC_READ_SEARCH", "busybox", "shocker", "/etc/hosts")
        assert r.returncode == 0 and "entry" in r.stdout


def test_default_capabilities_and_seccomp_as_docker(shost: NamespaceHost) -> None:
    h = shost
    st = proc_status(h)
    assert (st["CapInh"], st["CapAmb"]) == ("0000000000000000", "0000000000000000")
    assert st["CapPrm"] == st["CapEff"] == st["CapBnd"] == DOCKER_DEFAULT_CAPS
    assert (st["Seccomp"], st["NoNewPrivs"]) == ("2", "0")
    assert probe(h) == PROBE_EXPECTED
    # No NET_ADMIN: a container cannot take a neighbour's address; --cap-add gives it.
    r = h.cli("run", "--rm", "busybox", "ip", "addr", "add", "10.99.0.9/32", "dev", "eth0")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    for name in ("NET_ADMIN", "net_admin", "cap_net_admin"):
        r = h.cli(
            "run",
            "--rm",
            "--cap-add",
            name,
            "busybox",
            "sh",
            "-c",
            "ip addr add 10.99.0.9/32 dev eth0 && ip -o addr show eth0",
        )
        assert r.returncode == 0 and "10.99.0.9/32" in r.stdout, (name, r.stderr)
    st = proc_status(h, "--cap-add", "NET_ADMIN", "--cap-drop", "mknod")
    assert st["CapEff"] == st["CapBnd"] == "00000000a00435fb"
    st = proc_status(h, "--cap-drop", "ALL", "--cap-add", "CHOWN")
    assert st["CapEff"] == st["CapBnd"] == "0000000000000001"
    # --cap-add SYS_ADMIN also opens what Docker's profile keeps for it (mount, unshare...).
    assert probe(h, "--cap-add", "SYS_ADMIN")["unshare"] == 0


def test_proc_sys_and_dev_as_docker(shost: NamespaceHost) -> None:
    h = shost
    info = mounts(h.ok("run", "--rm", "busybox", "cat", "/proc/self/mountinfo"))
    for path in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", "/sys"):
        if path == "/sys" or os.path.exists(path):
            assert "ro" in info[path], path
    masked = [p for p in DEFAULT_MASKED_PATHS if os.path.exists(p)]
    assert "/proc/keys" in masked and "/sys/firmware" in masked
    for path in masked:
        assert path in info, path
    script = (
        "for p in " + " ".join(masked) + "; do "
        'if [ -d $p ]; then echo "$p dir $(ls -A $p | wc -l)"; else echo "$p $(stat -c %t:%T $p) $(wc -c < $p)"; fi; '
        "done"
    )
    for line in h.ok("run", "--rm", "busybox", "sh", "-c", script).splitlines():
        path, kind, size = line.split()
        assert (kind, size) in (("dir", "0"), ("1:3", "0")), line  # empty tmpfs, or /dev/null
    r = h.cli("run", "--rm", "busybox", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    r = h.cli("run", "--rm", "busybox", "sh", "-c", "echo 1500 > /sys/class/net/eth0/mtu")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    # A minimal /dev of nodes made for the container (not the host's own, bound in).
    listing = h.ok("run", "--rm", "busybox", "ls", "-A", "/dev").split()
    want = {
        "fd",
        "full",
        "mqueue",
        "null",
        "ptmx",
        "pts",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "tty",
        "urandom",
        "zero",
    }
    assert set(listing) == want | ({"core"} if os.path.exists("/proc/kcore") else set())
    nodes = h.ok(
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "cd /dev; for n in null zero full random urandom tty; do echo $n $(stat -c '%t:%T %a %i' $n); done",
    )
    host_inodes = {
        n: os.stat(f"/dev/{n}").st_ino for n in ("null", "zero", "full", "random", "urandom", "tty")
    }
    got = {line.split()[0]: line.split()[1:] for line in nodes.splitlines()}
    assert {n: v[:2] for n, v in got.items()} == {
        "null": ["1:3", "666"],
        "zero": ["1:5", "666"],
        "full": ["1:7", "666"],
        "random": ["1:8", "666"],
        "urandom": ["1:9", "666"],
        "tty": ["5:0", "666"],
    }
    assert all(int(v[2]) != host_inodes[n] for n, v in got.items())


def test_exec_gets_the_containers_confinement(shost: NamespaceHost) -> None:
    h = shost
    h.ok("run", "-d", "--name", "box", "busybox", "sleep", "600")
    h.ok(
        "run",
        "-d",
        "--name",
        "nnp",
        "--security-opt",
        "no-new-privileges",
        "--cap-add",
        "NET_ADMIN",
        "busybox",
        "sleep",
        "600",
    )
    st = status(h.ok("exec", "box", "cat", "/proc/self/status"))
    assert st["CapEff"] == st["CapBnd"] == DOCKER_DEFAULT_CAPS
    assert (st["Seccomp"], st["NoNewPrivs"], st["CapInh"]) == ("2", "0", "0000000000000000")
    assert h.ok("exec", "box", "probe").split() == [f"{k}={v}" for k, v in PROBE_EXPECTED.items()]
    st = status(h.ok("exec", "nnp", "cat", "/proc/self/status"))
    assert (st["CapEff"], st["Seccomp"], st["NoNewPrivs"]) == ("00000000a80435fb", "2", "1")
    # exec --privileged: every capability, but the container's seccomp filter stays (Docker).
    st = status(h.ok("exec", "--privileged", "box", "cat", "/proc/self/status"))
    assert st["CapEff"] != DOCKER_DEFAULT_CAPS and int(st["CapEff"], 16) & (1 << 21)  # SYS_ADMIN
    assert st["Seccomp"] == "2"
    ex = h.api.post("/containers/box/exec", {"Cmd": ["true"], "Privileged": True})
    assert h.api.get(f"/exec/{ex['Id']}/json")["ProcessConfig"]["privileged"] is True


def test_privileged_and_unconfined(shost: NamespaceHost) -> None:
    h = shost
    with open("/proc/self/status") as f:  # tetherd runs with the same capabilities as we do
        tetherd_caps = status(f.read())["CapEff"]
    st = proc_status(h, "--privileged")
    assert st["CapEff"] == st["CapBnd"] == tetherd_caps
    assert (st["Seccomp"], st["NoNewPrivs"]) == ("0", "0")
    info = mounts(h.ok("run", "--rm", "--privileged", "busybox", "cat", "/proc/self/mountinfo"))
    assert "rw" in info["/sys"] and "/proc/keys" not in info and "/proc/sys" not in info
    # --cap-add ALL: every capability, but still Docker's profile (evaluated with them all)
    # and the masked paths.
    st = proc_status(h, "--cap-add", "all")
    assert (st["CapEff"], st["CapBnd"], st["Seccomp"]) == (tetherd_caps, tetherd_caps, "2")
    got = probe(h, "--cap-add", "ALL")
    assert got["unshare"] == 0 and got["keyctl"] == EPERM and got["clone3"] != ENOSYS
    st = proc_status(h, "--security-opt", "seccomp=unconfined")
    assert (st["Seccomp"], st["CapEff"]) == ("0", DOCKER_DEFAULT_CAPS)
    st = proc_status(h, "--security-opt", "no-new-privileges")
    assert (st["Seccomp"], st["NoNewPrivs"]) == ("2", "1")
    st = proc_status(h, "--security-opt", "no-new-privileges=false")
    assert st["NoNewPrivs"] == "0"
    # systempaths=unconfined (client side, as docker's CLI): no masked or read-only paths.
    info = mounts(
        h.ok(
            "run",
            "--rm",
            "--security-opt",
            "systempaths=unconfined",
            "busybox",
            "cat",
            "/proc/self/mountinfo",
        )
    )
    assert "/proc/keys" not in info and "/proc/sys" not in info and "ro" in info["/sys"]


def test_custom_seccomp_profile_from_a_file(
    shost: NamespaceHost, tmp_path: os.PathLike[str]
) -> None:
    h = shost
    profile = os.path.join(tmp_path, "deny-chmod.json")
    with open(profile, "w") as f:
        json.dump(DENY_CHMOD, f, indent=2)
    script = "touch /tmp/f && chmod 600 /tmp/f; echo rc=$?; stat -c %a /tmp/f"
    r = h.cli("run", "--rm", "--security-opt", f"seccomp={profile}", "busybox", "sh", "-c", script)
    assert "Operation not permitted" in r.stderr and r.stdout == "rc=1\n644\n"
    r = h.cli("run", "--rm", "busybox", "sh", "-c", script)
    assert r.stdout == "rc=0\n600\n"
    # The CLI sends the profile's text, as docker does; inspect shows it.
    h.ok("create", "--name", "custom", "--security-opt", f"seccomp={profile}", "busybox")
    hc = h.api.get("/containers/custom/json")["HostConfig"]
    assert hc["SecurityOpt"] == ["seccomp=" + json.dumps(DENY_CHMOD, separators=(",", ":"))]
    # What the default profile refuses, this one lets through.
    got = probe(h, "--security-opt", f"seccomp={profile}")
    assert got["clone3"] != ENOSYS and got["keyctl"] == 0


def test_inspect_shows_privileged_and_caps(shost: NamespaceHost) -> None:
    h = shost
    h.ok("create", "--name", "plain", "busybox")
    hc = h.api.get("/containers/plain/json")["HostConfig"]
    assert hc["Privileged"] is False
    assert (hc["CapAdd"], hc["CapDrop"], hc["SecurityOpt"]) == (None, None, None)
    assert hc["MaskedPaths"][: len(DEFAULT_MASKED_PATHS)] == list(DEFAULT_MASKED_PATHS)
    assert hc["ReadonlyPaths"] == list(DEFAULT_READONLY_PATHS)
    h.ok(
        "create",
        "--name",
        "tweaked",
        "--cap-add",
        "net_admin",
        "--cap-drop",
        "MKNOD",
        "--security-opt",
        "no-new-privileges",
        "busybox",
    )
    hc = h.api.get("/containers/tweaked/json")["HostConfig"]
    assert (hc["CapAdd"], hc["CapDrop"], hc["SecurityOpt"]) == (
        ["net_admin"],
        ["MKNOD"],
        ["no-new-privileges"],
    )
    h.ok("create", "--name", "priv", "--privileged", "busybox")
    hc = h.api.get("/containers/priv/json")["HostConfig"]
    assert hc["Privileged"] is True and hc["MaskedPaths"] is None and hc["ReadonlyPaths"] is None
    assert h.ok("inspect", "-f", "{{.HostConfig.Privileged}}", "plain", "priv").split() == [
        "false",
        "true",
    ]


BAD_OPTIONS = [
    (
        ["--cap-add", "FOO"],
        'Error response from daemon: invalid CapAdd: unknown capability: "CAP_FOO"',
    ),
    (
        ["--cap-drop", "cap_nope"],
        'Error response from daemon: invalid CapDrop: unknown capability: "CAP_NOPE"',
    ),
    (["--security-opt", "foo"], 'invalid --security-opt: "foo"'),
    (
        ["--security-opt", "foo=bar"],
        'Error response from daemon: invalid --security-opt 2: "foo=bar"',
    ),
    (
        ["--security-opt", "no-new-privileges=maybe"],
        'Error response from daemon: invalid --security-opt 2: "no-new-privileges=maybe"',
    ),
    (
        ["--security-opt", "apparmor=docker-default"],
        'Error response from daemon: invalid --security-opt: "apparmor=docker-default": '
        "tether applies no AppArmor profile",
    ),
    (
        ["--security-opt", "label=level:s0:c100,c200"],
        'Error response from daemon: invalid --security-opt: "label=level:s0:c100,c200": '
        "tether applies no SELinux label",
    ),
    (
        ["--security-opt", "seccomp=/no/such/profile.json"],
        "opening seccomp profile (/no/such/profile.json) failed: open /no/such/profile.json: "
        "no such file or directory",
    ),
]


def test_bad_security_options_create_nothing(
    shost: NamespaceHost, tmp_path: os.PathLike[str]
) -> None:
    h = shost
    bad_profile = os.path.join(tmp_path, "bad.json")
    with open(bad_profile, "w") as f:
        f.write('{"defaultAction": "SCMP_ACT_NOPE"}')
    cases = [
        *BAD_OPTIONS,
        (
            ["--security-opt", f"seccomp={bad_profile}"],
            "Error response from daemon: Decoding seccomp profile failed: defaultAction: "
            'unknown action "SCMP_ACT_NOPE"',
        ),
    ]
    containers_dir = os.path.join(h.root, "containers")
    for args, message in cases:
        r = h.cli("run", "-d", *args, "busybox", "true")
        assert r.returncode == 125, (args, r.stderr)
        first = r.stderr.splitlines()[0]
        assert first.startswith("tether: ") and message in first, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert h.ok("ps", "-aq") == "" and os.listdir(containers_dir) == []
    # The API answers such bodies with 400 and the daemon's message.
    for hc, message in (
        ({"CapAdd": ["FOO"]}, 'invalid CapAdd: unknown capability: \\"CAP_FOO\\"'),
        ({"CapDrop": "sys_nope"}, 'invalid CapDrop: unknown capability: \\"CAP_SYS_NOPE\\"'),
        ({"SecurityOpt": ["seccomp={"]}, "Decoding seccomp profile failed"),
        ({"MaskedPaths": ["proc/kcore"]}, "is not an absolute path"),
    ):
        resp = h.api.open("POST", "/containers/create", body={"Image": "busybox", "HostConfig": hc})
        data = resp.read().decode()
        resp.close()
        assert resp.status == 400 and message in data, (hc, data)
    assert h.ok("ps", "-aq") == "" and os.listdir(containers_dir) == []


def test_host_image_is_a_read_only_view_of_programs(shost: NamespaceHost) -> None:
    h = shost
    trees = [
        t
        for t in ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr")
        if os.path.lexists("/" + t)
    ]
    top = h.ok("run", "--rm", "host", "ls", "-A", "/").split()
    assert sorted(top) == sorted([*trees, "dev", "etc", "proc", "sys", "tmp"])
    assert os.path.exists("/etc/shadow")
    script = "; ".join(
        [
            "for p in /root /home /var /run /etc/shadow /etc/gshadow "
            f"{h.root} {h.exec_root} {h.socket} {h.dir}; do test -e $p && echo visible $p; done",
            "touch /usr/x 2>&1 | grep -q 'Read-only' && echo usr-ro",
            "touch /etc/x 2>&1 | grep -q 'Read-only' && echo etc-ro",
            "echo '10.1.2.3 extra' >> /etc/hosts && echo hosts-rw",
            "python3 -c 'print(\"py-ok\")'",
            "grep -c . /etc/passwd >/dev/null && echo passwd-ok",
        ]
    )
    r = h.cli("run", "--rm", "host", "sh", "-c", script)
    assert r.stdout.split("\n") == ["usr-ro", "etc-ro", "hosts-rw", "py-ok", "passwd-ok", ""], r
    st = status(h.ok("run", "--rm", "host", "cat", "/proc/self/status"))
    assert st["CapEff"] == DOCKER_DEFAULT_CAPS and st["Seccomp"] == "2"
    # Nothing the host image's containers do is left on the host.
    assert not os.path.exists("/usr/x") and not os.path.exists("/etc/x")


def test_compose_security_keys(shost: NamespaceHost, tmp_path: os.PathLike[str]) -> None:
    h = shost
    d = os.path.join(tmp_path, "app")
    os.makedirs(d)
    with open(os.path.join(d, "deny-chmod.json"), "w") as f:
        json.dump(DENY_CHMOD, f)
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(
            "services:\n"
            "  admin:\n    image: busybox\n    command: sleep 600\n    cap_add: [NET_ADMIN]\n"
            "    security_opt: [no-new-privileges, seccomp=deny-chmod.json]\n"
            "  plain:\n    image: busybox\n    command: sleep 600\n"
        )
    r = h.cli("compose", "-f", os.path.join(d, "compose.yaml"), "up", "-d")
    assert r.returncode == 0 and "not supported" not in r.stderr, r.stderr
    try:
        st = status(
            h.ok(
                "compose",
                "-f",
                os.path.join(d, "compose.yaml"),
                "exec",
                "admin",
                "cat",
                "/proc/self/status",
            )
        )
        assert (st["CapEff"], st["NoNewPrivs"], st["Seccomp"]) == ("00000000a80435fb", "1", "2")
        r = h.cli(
            "compose",
            "-f",
            os.path.join(d, "compose.yaml"),
            "exec",
            "admin",
            "chmod",
            "600",
            "/etc/hostname",
        )
        assert r.returncode != 0
        st = status(
            h.ok(
                "compose",
                "-f",
                os.path.join(d, "compose.yaml"),
                "exec",
                "plain",
                "cat",
                "/proc/self/status",
            )
        )
        assert (st["CapEff"], st["NoNewPrivs"]) == (DOCKER_DEFAULT_CAPS, "0")
    finally:
        h.ok("compose", "-f", os.path.join(d, "compose.yaml"), "down", "-t", "0")
