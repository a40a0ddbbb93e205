"""Images: the built-in `host` image, and rootfs tarballs imported like `docker import`.

An imported image is one read-only directory (ROOT/images/<id>/rootfs); each container gets a
copy-on-write overlayfs over it, mounted inside the container's own mount namespace (so no
mount is ever left on the host).  The `host` image is a read-only view of the host's programs
and libraries (see `host_view`): a fresh tmpfs root holding read-only binds of /usr, /bin,
/sbin and /lib*, and a copy-on-write view of /etc without its secrets; nothing else of the
host (no /root, /home, /var, /run, no tether state or socket) is there.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from tether import wire
from tether.errors import Conflict, InvalidParameter, NotFound, SystemFailure
from tether.runtime.shim import HostView
from tether.store import records
from tether.store.sqlite import Store

HOST_IMAGE_ID = "sha256:" + hashlib.sha256(b"tether built-in host image").hexdigest()
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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


@dataclass
class Image:
    id: str
    repo_tags: list[str]
    created: float
    size: int
    config: dict[str, Any] = field(default_factory=dict)
    builtin: bool = False

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    def to_list_api(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "ParentId": "",
            "RepoTags": list(self.repo_tags),
            "RepoDigests": [],
            "Created": int(self.created),
            "Size": self.size,
            "SharedSize": -1,
            "VirtualSize": self.size,
            "Labels": self.config.get("Labels") or {},
            "Containers": -1,
        }

    def to_inspect_api(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "RepoTags": list(self.repo_tags),
            "RepoDigests": [],
            "Parent": "",
            "Comment": "built-in: the host's own filesystem" if self.builtin else "Imported from -",
            "Created": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.created)) + "Z",
            "Container": "",
            "DockerVersion": "",
            "Author": "",
            "Config": {
                "Env": self.config.get("Env"),
                "Cmd": self.config.get("Cmd"),
                "Entrypoint": self.config.get("Entrypoint"),
                "WorkingDir": self.config.get("WorkingDir", ""),
                "ExposedPorts": self.config.get("ExposedPorts"),
                "Labels": self.config.get("Labels"),
                "StopSignal": self.config.get("StopSignal"),
            },
            "Architecture": "amd64",
            "Os": "linux",
            "Size": self.size,
            "VirtualSize": self.size,
            "GraphDriver": {"Name": "overlay2", "Data": None},
            "RootFS": {"Type": "layers", "Layers": [self.id]},
        }


def normalize_ref(ref: str) -> str:
    """`busybox` -> `busybox:latest`; `repo:tag` stays."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


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


class ImageStore:
    def __init__(self, store: Store, root: str) -> None:
        self.store = store
        self.dir = os.path.join(root, "images")
        os.makedirs(self.dir, exist_ok=True)
        self.by_id: dict[str, Image] = {}

    def load(self) -> None:
        loaded = records.parse_all(
            "image", self.store.load("image"), lambda doc: msgspec.convert(doc, Image)
        )
        self.by_id = {img.id: img for img in loaded}
        if HOST_IMAGE_ID not in self.by_id:
            host = Image(
                HOST_IMAGE_ID, ["host:latest"], time.time(), 0, {"Cmd": ["/bin/sh"]}, builtin=True
            )
            with self.store.transaction():
                self.store.put("image", host.id, None, host.to_doc())
            self.by_id[host.id] = host

    def rootfs(self, img: Image) -> str | None:
        return (
            None
            if img.builtin
            else os.path.join(self.dir, img.id.removeprefix("sha256:"), "rootfs")
        )

    def find(self, ref: str) -> Image:
        """By name:tag, full or short id (with or without sha256:)."""
        want = normalize_ref(ref)
        for img in self.by_id.values():
            if want in img.repo_tags:
                return img
        bare = ref.removeprefix("sha256:")
        if len(bare) >= 4 and all(c in "0123456789abcdef" for c in bare):
            found = [
                i for i in self.by_id.values() if i.id.removeprefix("sha256:").startswith(bare)
            ]
            if len(found) == 1:
                return found[0]
        raise NotFound(f"No such image: {want}")

    def all(self) -> list[Image]:
        return sorted(self.by_id.values(), key=lambda i: -i.created)

    def import_tar(
        self, tar_path: str, repo: str | None, tag: str | None, changes: list[str]
    ) -> Image:
        config = apply_changes(changes)
        h = hashlib.sha256()
        with open(tar_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(wire.dumps(config).encode())
        image_id = "sha256:" + h.hexdigest()
        ref = normalize_ref(f"{repo}:{tag}" if repo and tag else repo) if repo else None
        existing = self.by_id.get(image_id)
        if existing is None:
            dest = os.path.join(self.dir, image_id.removeprefix("sha256:"))
            tmp = tempfile.mkdtemp(prefix=".import-", dir=self.dir)
            rootfs = os.path.join(tmp, "rootfs")
            os.makedirs(rootfs)
            r = subprocess.run(
                ["tar", "-x", "-f", tar_path, "-C", rootfs, "--numeric-owner"],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise InvalidParameter(
                    f"cannot import the tarball: {r.stderr.strip() or 'not a tar archive'}"
                )
            size = sum(
                os.lstat(os.path.join(d, f)).st_size
                for d, _, files in os.walk(rootfs)
                for f in files
            )
            if os.path.exists(dest):
                shutil.rmtree(dest)
            os.rename(tmp, dest)
            existing = Image(image_id, [], time.time(), size, config)
        if ref:
            for other in self.by_id.values():
                if ref in other.repo_tags and other.id != image_id:
                    other.repo_tags.remove(ref)
                    self._save(other)
            if ref not in existing.repo_tags:
                existing.repo_tags.append(ref)
        self.by_id[image_id] = existing
        self._save(existing)
        return existing

    def _save(self, img: Image) -> None:
        with self.store.transaction():
            self.store.put("image", img.id, None, img.to_doc())

    def remove(self, ref: str, in_use: set[str], force: bool) -> list[dict[str, str]]:
        img = self.find(ref)
        if img.builtin:
            raise Conflict("the built-in host image cannot be removed")
        want = normalize_ref(ref)
        if want in img.repo_tags and len(img.repo_tags) > 1:
            img.repo_tags.remove(want)
            self._save(img)
            return [{"Untagged": want}]
        if img.id in in_use and not force:
            raise Conflict(
                f'conflict: unable to remove repository reference "{ref}" (must force) - '
                f"container is using its referenced image {img.short_id}"
            )
        if img.id in in_use:
            raise Conflict(
                f"conflict: unable to delete {img.short_id} (cannot be forced) - image is being used by running container"
            )
        out = [{"Untagged": t} for t in img.repo_tags] + [{"Deleted": img.id}]
        with self.store.transaction():
            self.store.delete("image", img.id)
        del self.by_id[img.id]
        path = os.path.join(self.dir, img.id.removeprefix("sha256:"))
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise SystemFailure(f"removing {path}: {exc}") from exc
        return out
