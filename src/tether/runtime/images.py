"""Images at run time: the built-in `host` image's view of the host, and `--change`.

The image store itself (layers, names, pulls, builds) is tether.images; what a container
gets from it is `ImageStore.rootfs(img)`: the overlay lowerdirs of the image's layers, top
first, which tether-shim mounts with a copy-on-write upper directory inside the container's
own mount namespace (so no mount is ever left on the host).  The `host` image is a
read-only view of the host's programs and libraries (see `host_view`): a fresh tmpfs root
holding read-only binds of /usr, /bin, /sbin and /lib*, and a copy-on-write view of /etc
without its secrets; nothing else of the host (no /root, /home, /var, /run, no tether state
or socket) is there.
"""

from __future__ import annotations

import os
import shlex
import stat
from typing import Any

from tether import wire
from tether.errors import InvalidParameter
from tether.images.store import DEFAULT_PATH, HOST_IMAGE_ID, Image, ImageStore
from tether.runtime.shim import HostView

__all__ = ["DEFAULT_PATH", "HOST_IMAGE_ID", "Image", "ImageStore", "apply_changes", "host_view"]

# What the host image shows of the host: its program and library trees, and /etc.
HOST_TREES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr")
# Secrets of /etc, hidden whatever their mode; anything else there that "other" may not read
# is hidden too (the host's admin already judged it private).
ETC_SECRETS = (
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "security/opasswd",
    "ssl/private",
    "sudoers",
    "sudoers.d",
    "krb5.keytab",
    "wireguard",
    "NetworkManager/system-connections",
    "ppp/chap-secrets",
    "ppp/pap-secrets",
    "credstore",
    "credstore.encrypted",
)


def _private_entries(top: str) -> list[str]:
    """Entries under `top` that other users cannot read (not descending into hidden dirs)."""
    out: list[str] = []
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode):
                if st.st_mode & 0o005 != 0o005:
                    out.append(e.path)
                else:
                    stack.append(e.path)
            elif not st.st_mode & 0o004:
                out.append(e.path)
    return out


def host_view(scratch: str, private: list[str], etc: str = "/etc") -> HostView:
    """The host image's root for one container.

    `scratch` is a directory the shim mounts the /etc view's upper layer on (inside the
    container's mount namespace only); `private` are tether's own paths (state, exec-root,
    caches), hidden should they lie inside a tree the view shows.
    """
    ro_binds: list[tuple[str, str]] = []
    symlinks: list[tuple[str, str]] = []
    shown: list[str] = []
    for name in HOST_TREES:
        path = "/" + name
        if os.path.islink(path):
            symlinks.append((os.readlink(path), path))  # merged /usr: /bin -> usr/bin
        elif os.path.isdir(path):
            ro_binds.append((path, path))
            shown.append(path)
    hidden = [os.path.join(etc, name) for name in ETC_SECRETS]
    hidden += [p for p in _private_entries(etc) if p not in hidden]
    hidden = ["/etc" + p[len(etc) :] for p in hidden]
    for p in private:
        real = os.path.realpath(p)
        if any(real == t or real.startswith(t + "/") for t in [*shown, "/etc"]):
            hidden.append(real)
    return HostView(
        ro_binds=ro_binds,
        symlinks=symlinks,
        cow_binds=[(etc, "/etc", scratch)],
        hidden=hidden,
        readonly=["/etc"],
    )


def apply_changes(changes: list[str]) -> dict[str, Any]:
    """`docker import --change` Dockerfile instructions: CMD, ENTRYPOINT, ENV, EXPOSE, WORKDIR, LABEL, STOPSIGNAL."""
    config: dict[str, Any] = {}
    for change in changes:
        instr, _, rest = change.strip().partition(" ")
        instr = instr.upper()
        rest = rest.strip()

        def as_list(text: str, instr: str = instr) -> list[str]:
            if text.startswith("["):
                try:
                    value = wire.loads(text)
                except ValueError:
                    raise InvalidParameter(f"invalid JSON in {instr}: {text}") from None
                return [str(v) for v in value]
            return ["/bin/sh", "-c", text]

        if instr == "CMD":
            config["Cmd"] = as_list(rest)
        elif instr == "ENTRYPOINT":
            config["Entrypoint"] = as_list(rest)
        elif instr == "ENV":
            env = config.setdefault("Env", [])
            if "=" in rest.split(" ", 1)[0]:
                env.extend(shlex.split(rest))
            else:
                key, _, val = rest.partition(" ")
                env.append(f"{key}={val.strip()}")
        elif instr == "EXPOSE":
            ports = config.setdefault("ExposedPorts", {})
            for p in rest.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
        elif instr == "WORKDIR":
            config["WorkingDir"] = rest
        elif instr == "LABEL":
            labels = config.setdefault("Labels", {})
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                labels[k] = v
        elif instr == "STOPSIGNAL":
            config["StopSignal"] = rest
        else:
            raise InvalidParameter(f"{instr} is not a valid change command")
    return config
