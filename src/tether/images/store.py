"""tether's image store: images by id, their names, and the layers they share.

    ROOT/images/blobs/sha256/<hex>   every blob (content.py): configs, manifests, layer archives
    ROOT/images/layers/<diff id>/    each layer unpacked once, as overlayfs reads it (layers.py)
    store (SQLite)                   "image" records (id, tags, digests, layers, config cache)
                                     and "layer" records (diff id, sizes, the blobs it has)

An image's id is the digest of its config (as docker's); its layers are diff ids, bottom
first.  A container's root is an overlay of those layer directories (rootfs()), so starting a
container copies nothing and a layer is on disk once, whatever the number of images using
it.  Removing the last image that uses a layer removes the layer, its blobs and its record.

The built-in `host` image (a read-only view of the host's programs, runtime/images.py) is an
image with no layers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from tether.errors import Conflict, InvalidParameter, NotFound, SystemFailure
from tether.images import oci
from tether.images.content import ContentStore
from tether.images.layers import LayerStore, unpack_file, write_diff
from tether.images.reference import Reference, ReferenceError, parse
from tether.store import records
from tether.store.sqlite import Store

log = logging.getLogger("tether.images")

HOST_IMAGE_ID = "sha256:" + hashlib.sha256(b"tether built-in host image").hexdigest()
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class BlobRef:
    digest: str
    media_type: str
    size: int


@dataclass
class LayerInfo:
    diff_id: str
    size: int = 0  # bytes of regular files (what docker counts)
    tar_size: int = 0  # bytes of the uncompressed archive (what `save` writes)
    blobs: list[BlobRef] = field(default_factory=list)
    # Repositories (full names) known to hold a blob of this layer: a push to another
    # repository on the same registry mounts it from one of them instead of uploading.
    repos: list[str] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Source:
    """Where an image came from: a repository and the manifest (and index) it had there."""

    repo: str  # full name: docker.io/library/busybox
    manifest: str
    manifest_type: str
    index: str = ""


@dataclass
class Image:
    id: str
    repo_tags: list[str]
    created: float
    size: int
    config: dict[str, Any] = field(default_factory=dict)
    builtin: bool = False
    layers: list[str] = field(default_factory=list)  # diff ids, bottom first
    repo_digests: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    # The config blob's digest when it is not the id (images of an older tether's store).
    config_digest: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    variant: str = ""
    last_tag_time: float = 0.0
    # A build step's image, made for a RUN container only (listed by `images -a` alone).
    intermediate: bool = False

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    @property
    def config_blob(self) -> str:
        return self.config_digest or self.id

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def platform(self) -> dict[str, str]:
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        return out


def familiar_tag(ref: Reference) -> str:
    return ref.tagged_or_latest().familiar()


class ImageStore:
    def __init__(self, store: Store, root: str) -> None:
        self.store = store
        self.dir = os.path.join(root, "images")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.content = ContentStore(self.dir)
        self.layers = LayerStore(self.dir)
        self.by_id: dict[str, Image] = {}
        self.layer_info: dict[str, LayerInfo] = {}
        # Layers an operation in flight (a pull, a load, a build) holds: never removed.
        self.leases: Counter[str] = Counter()
        # Layers the build cache holds (images/build.py registers its holder).
        self.cache_layers: set[str] = set()
        self._configs: dict[str, oci.ImageConfig] = {}

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        self.content.clean_tmp()
        self.layers.sweep()
        for info in records.parse_all(
            "layer", self.store.load("layer"), lambda doc: msgspec.convert(doc, LayerInfo)
        ):
            self.layer_info[info.diff_id] = info
        loaded = records.parse_all(
            "image", self.store.load("image"), lambda doc: msgspec.convert(doc, Image)
        )
        self.by_id = {img.id: img for img in loaded}
        for img in list(self.by_id.values()):
            if not img.builtin and not img.layers:
                self._migrate(img)
        if HOST_IMAGE_ID not in self.by_id:
            host = Image(
                HOST_IMAGE_ID, ["host:latest"], time.time(), 0, {"Cmd": ["/bin/sh"]}, builtin=True
            )
            self._save(host)
            self.by_id[host.id] = host

    def _migrate(self, img: Image) -> None:
        """An image an older tether imported (one directory, ROOT/images/<id>/rootfs): its
        directory becomes a layer (archived once for its diff id), its id stays."""
        old = os.path.join(self.dir, img.id.removeprefix("sha256:"))
        rootfs = os.path.join(old, "rootfs")
        if not os.path.isdir(rootfs):
            log.error("image %s has no layers and no files; dropping its record", img.id)
            with self.store.transaction():
                self.store.delete("image", img.id)
            del self.by_id[img.id]
            return
        w = self.content.writer()
        try:
            diff_id, tar_size = write_diff(rootfs, w.write, overlay_whiteouts=False)
        except BaseException:
            w.abort()
            raise
        blob = w.commit()
        info = LayerInfo(diff_id, img.size, tar_size, [BlobRef(blob, oci.OCI_LAYER, tar_size)])
        self.layers.adopt_dir(rootfs, diff_id)
        shutil.rmtree(old, ignore_errors=True)
        history = [{"created": oci.format_time(img.created), "comment": "Imported from -"}]
        cfg = oci.make_config(img.config, [diff_id], history, img.created)
        img.config_digest = self.content.put(cfg)
        img.layers = [diff_id]
        with self.store.transaction():
            self.store.put("layer", diff_id, None, info.to_doc())
            self.store.put("image", img.id, None, img.to_doc())
        self.layer_info[diff_id] = info
        log.info("image %s moved to the layer store (layer %s)", img.id, diff_id)

    # -- reading -----------------------------------------------------------------------------

    def rootfs(self, img: Image) -> str | None:
        """The overlay lowerdirs of the image's root, top layer first (None: the host view).

        An image with no layer at all (FROM scratch with metadata only) gets an empty
        directory as its one lower layer."""
        if img.builtin:
            return None
        if not img.layers:
            empty = os.path.join(self.dir, "empty")
            os.makedirs(empty, mode=0o755, exist_ok=True)
            return empty
        return ":".join(self.layers.path(d) for d in reversed(img.layers))

    def layer_dirs(self, img: Image) -> list[str]:
        """Top first, as overlayfs stacks them."""
        return [self.layers.path(d) for d in reversed(img.layers)]

    def config_of(self, img: Image) -> oci.ImageConfig:
        cached = self._configs.get(img.id)
        if cached is None:
            if img.builtin or not self.content.has(img.config_blob):
                cached = oci.ImageConfig({"config": img.config, "history": []}, img.layers)
            else:
                cached = oci.parse_config(self.content.get(img.config_blob))
            self._configs[img.id] = cached
        return cached

    def lookup(self, text: str) -> Image | None:
        """By name[:tag], name@digest, full id or an unambiguous id prefix."""
        bare = text.removeprefix("sha256:")
        if len(bare) == 64 and all(c in "0123456789abcdef" for c in bare):
            return self.by_id.get("sha256:" + bare)
        try:
            ref = parse(text)
        except ReferenceError:
            ref = None
        if ref is not None:
            if ref.digest:
                want = ref.repo_digest
                for img in self.by_id.values():
                    if want in img.repo_digests:
                        return img
                if not ref.tag:
                    return None
            want = familiar_tag(Reference(ref.domain, ref.path, ref.tag))
            for img in self.by_id.values():
                if want in img.repo_tags:
                    return img
        by_prefix = text.startswith("sha256:") or ref is None or not (ref.tag or ref.digest)
        if by_prefix and 1 <= len(bare) <= 64 and all(c in "0123456789abcdef" for c in bare):
            found = [
                i for i in self.by_id.values() if i.id.removeprefix("sha256:").startswith(bare)
            ]
            if len(found) == 1:
                return found[0]
        return None

    def find(self, text: str) -> Image:
        img = self.lookup(text)
        if img is not None:
            return img
        raise NotFound(f"No such image: {not_found_name(text)}")

    def all(self, intermediate: bool = False) -> list[Image]:
        found = [i for i in self.by_id.values() if intermediate or not i.intermediate]
        return sorted(found, key=lambda i: -i.created)

    def layer_blob(self, diff_id: str) -> BlobRef | None:
        """The blob a layer's archive can be read back from (compressed ones first)."""
        info = self.layer_info.get(diff_id)
        if info is None:
            return None
        for b in sorted(info.blobs, key=lambda b: b.digest == diff_id):
            if self.content.has(b.digest):
                return b
        return None

    # -- writing -----------------------------------------------------------------------------

    def _save(self, img: Image) -> None:
        with self.store.transaction():
            self.store.put("image", img.id, None, img.to_doc())

    def save_layer(self, info: LayerInfo) -> None:
        old = self.layer_info.get(info.diff_id)
        if old is not None:
            for b in info.blobs:
                if all(x.digest != b.digest for x in old.blobs):
                    old.blobs.append(b)
            old.size = old.size or info.size
            old.tar_size = old.tar_size or info.tar_size
            old.repos = [*old.repos, *(r for r in info.repos if r not in old.repos)]
            info = old
        self.layer_info[info.diff_id] = info
        with self.store.transaction():
            self.store.put("layer", info.diff_id, None, info.to_doc())

    def add_repo(self, diff_id: str, repo: str) -> None:
        info = self.layer_info.get(diff_id)
        if info is not None and repo not in info.repos:
            info.repos = [*info.repos[-7:], repo]
            self.save_layer(info)

    def add_blob(self, diff_id: str, blob: BlobRef) -> None:
        info = self.layer_info.get(diff_id)
        if info is not None and all(b.digest != blob.digest for b in info.blobs):
            info.blobs.append(blob)
            self.save_layer(info)

    def commit(
        self,
        config: bytes,
        tags: Iterable[Reference] = (),
        digests: Iterable[str] = (),
        source: Source | None = None,
    ) -> Image:
        """An image whose layers are all in the layer store, from its config JSON."""
        parsed = oci.parse_config(config)
        missing = [d for d in parsed.diff_ids if d not in self.layer_info]
        if missing:
            raise SystemFailure(f"layer {missing[0]} is not in the layer store")
        image_id = self.content.put(config)
        img = self.by_id.get(image_id)
        if img is not None and img.intermediate and tags:
            img.intermediate = False
        if img is None:
            plat = parsed.platform
            img = Image(
                image_id,
                [],
                parsed.created or time.time(),
                sum(self.layer_info[d].size for d in parsed.diff_ids),
                parsed.config,
                layers=list(parsed.diff_ids),
                architecture=plat["architecture"] or "amd64",
                os=plat["os"],
                variant=plat.get("variant", ""),
            )
            self.by_id[image_id] = img
        if source is not None and all(
            (s.repo, s.manifest) != (source.repo, source.manifest) for s in img.sources
        ):
            img.sources.append(source)
        for d in digests:
            if d not in img.repo_digests:
                img.repo_digests.append(d)
        for ref in tags:
            self._tag(img, ref)
        self._save(img)
        return img

    def _tag(self, img: Image, ref: Reference) -> None:
        name = familiar_tag(ref)
        for other in self.by_id.values():
            if other is not img and name in other.repo_tags:
                other.repo_tags.remove(name)
                self._save(other)
        if name not in img.repo_tags:
            img.repo_tags.append(name)
        img.last_tag_time = time.time()

    def tag(self, img: Image, ref: Reference) -> None:
        if img.builtin:
            raise InvalidParameter("the built-in host image cannot be tagged")
        self._tag(img, ref)
        self._save(img)

    async def import_tar(
        self,
        tar_path: str,
        repo: str | None,
        tag: str | None,
        config: dict[str, Any],
        message: str,
        platform: dict[str, str] | None = None,
    ) -> Image:
        """`docker import`: one layer from a (possibly compressed) rootfs archive, of the
        host's platform or the one `import --platform` names."""
        ref = None
        if repo:
            try:
                ref = parse(f"{repo}:{tag}" if tag else repo).tagged_or_latest()
            except ReferenceError as exc:
                raise InvalidParameter(str(exc)) from None
        tmp = self.layers.new_tmp()
        try:
            diff_id, size = await unpack_file(tar_path, tmp)
        except InvalidParameter as exc:
            raise InvalidParameter(
                exc.message.replace("failed to register layer: ", "cannot import the tarball: ")
            ) from None
        with open(tar_path, "rb") as f:
            head = f.read(4)
        from tether.images.layers import compression_of

        kind = compression_of(head)
        blob = self.content.put_file(tar_path)
        media = {"gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD}.get(kind, oci.OCI_LAYER)
        tar_size = os.path.getsize(tar_path) if not kind else 0
        self.layers.commit(tmp, diff_id)
        if not tar_size:
            tar_size = _archive_size(self.content.path(blob))
        self.save_layer(
            LayerInfo(diff_id, size, tar_size, [BlobRef(blob, media, self.content.size(blob))])
        )
        now = time.time()
        history = [{"created": oci.format_time(now), "comment": message or "Imported from -"}]
        cfg = oci.make_config(config, [diff_id], history, now, platform, extra={"comment": message})
        return self.commit(cfg, [ref] if ref else [])

    # -- removing ----------------------------------------------------------------------------

    def remove(
        self, text: str, containers: list[tuple[str, str, bool]], force: bool, prune: bool = True
    ) -> list[dict[str, str]]:
        """`docker rmi`, with dockerd's rules and words.  `containers`: (id, image id,
        running) of every container."""
        img = self.find(text)
        if img.builtin:
            raise Conflict("conflict: unable to delete the built-in host image")
        records_: list[dict[str, str]] = []
        using = [c for c in containers if c[1] == img.id]
        refs = [*img.repo_tags, *img.repo_digests]
        by_id = _is_id_prefix(img.id, text)
        removed_ref = False
        if not by_id:
            if not force and _single_reference(refs) and using:
                # Untagging would leave the container's image dangling: docker wants -f.
                raise Conflict(
                    f'conflict: unable to remove repository reference "{text}" (must force) '
                    f"- container {using[0][0][:12]} is using its referenced image {img.short_id}"
                )
            name = self._untag(img, text)
            records_.append({"Untagged": name})
            if "@" not in name:
                repo = name.rsplit(":", 1)[0]
                if not any(t.rsplit(":", 1)[0] == repo for t in img.repo_tags):
                    for d in [d for d in img.repo_digests if d.split("@", 1)[0] == repo]:
                        img.repo_digests.remove(d)
                        records_.append({"Untagged": d})
            self._save(img)
            if img.repo_tags or img.repo_digests:
                return records_
            removed_ref = True
        elif _single_reference(refs):
            conflict = self._conflict(img, using, hard_only=force, tags=False)
            if conflict is not None:
                raise Conflict(conflict[0])
            for t in list(img.repo_tags):
                records_.append({"Untagged": t})
            for d in list(img.repo_digests):
                records_.append({"Untagged": d})
            img.repo_tags.clear()
            img.repo_digests.clear()
            self._save(img)
        conflict = self._conflict(img, using, hard_only=force, tags=True)
        if conflict is not None:
            if removed_ref:
                return records_  # untagged: the image stays, dangling, for its containers
            raise Conflict(conflict[0])
        # Forced: every name it still has goes first (dockerd's removeAllReferencesToImageID).
        records_ += [{"Untagged": t} for t in [*img.repo_tags, *img.repo_digests]]
        records_.append({"Deleted": img.id})
        for chain in self._delete(img):
            records_.append({"Deleted": chain})
        return records_

    def _conflict(
        self, img: Image, using: list[tuple[str, str, bool]], hard_only: bool, tags: bool
    ) -> tuple[str, bool] | None:
        running = [c for c in using if c[2]]
        if running:
            return (
                f"conflict: unable to delete {img.short_id} (cannot be forced) - image is "
                f"being used by running container {running[0][0][:12]}",
                True,
            )
        if hard_only:
            if using:
                # dockerd deletes it and lets the container's layer references keep the
                # files; a tether container needs its image's record to start again, so the
                # image stays (untagged, when a name was given) until the container goes.
                return (
                    f"conflict: unable to delete {img.short_id} (cannot be forced) - image is "
                    f"being used by stopped container {using[0][0][:12]}",
                    True,
                )
            return None
        if tags and (img.repo_tags or img.repo_digests):
            return (
                f"conflict: unable to delete {img.short_id} (must be forced) - image is "
                "referenced in multiple repositories",
                False,
            )
        if using:
            return (
                f"conflict: unable to delete {img.short_id} (must be forced) - image is "
                f"being used by stopped container {using[0][0][:12]}",
                True,
            )
        return None

    def _untag(self, img: Image, text: str) -> str:
        try:
            ref = parse(text)
        except ReferenceError as exc:
            raise InvalidParameter(str(exc)) from None
        if ref.digest and not ref.tag:
            name = ref.repo_digest
            if name in img.repo_digests:
                img.repo_digests.remove(name)
                return name
        name = familiar_tag(ref)
        if name in img.repo_tags:
            img.repo_tags.remove(name)
            return name
        raise NotFound(f"No such image: {not_found_name(text)}")

    def _delete(self, img: Image) -> list[str]:
        """The image and what only it used; the chain ids of the layers removed."""
        del self.by_id[img.id]
        self._configs.pop(img.id, None)
        with self.store.transaction():
            self.store.delete("image", img.id)
        self.content.delete(img.config_blob)
        removed = self.gc(candidates=img.layers, manifests=[img.sources])
        chains = oci.chain_ids(img.layers)
        return [c for d, c in reversed(list(zip(img.layers, chains, strict=True))) if d in removed]

    def layers_in_use(self) -> set[str]:
        used = set(self.cache_layers)
        for other in self.by_id.values():
            used.update(other.layers)
        used.update(d for d, n in self.leases.items() if n > 0)
        return used

    def gc(
        self, candidates: Iterable[str] | None = None, manifests: Iterable[list[Source]] = ()
    ) -> set[str]:
        """Layers (of `candidates`, or all) no image, lease or build cache uses: gone, with
        their blobs.  Returns the diff ids removed."""
        used = self.layers_in_use()
        pool = set(candidates) if candidates is not None else set(self.layer_info)
        removed: set[str] = set()
        for d in pool - used:
            info = self.layer_info.pop(d, None)
            if info is not None:
                for b in info.blobs:
                    self.content.delete(b.digest)
            self.layers.remove(d)
            with self.store.transaction():
                self.store.delete("layer", d)
            removed.add(d)
        kept = {s.manifest for i in self.by_id.values() for s in i.sources}
        kept |= {s.index for i in self.by_id.values() for s in i.sources if s.index}
        for sources in manifests:
            for s in sources:
                for dg in (s.manifest, s.index):
                    if dg and dg not in kept:
                        self.content.delete(dg)
        return removed

    # -- views -------------------------------------------------------------------------------

    def list_view(self, img: Image, containers: int = -1) -> dict[str, Any]:
        return {
            "Id": img.id,
            "ParentId": "",
            "RepoTags": list(img.repo_tags),
            "RepoDigests": list(img.repo_digests),
            "Created": int(img.created),
            "Size": img.size,
            "SharedSize": -1,
            "VirtualSize": img.size,
            "Labels": img.config.get("Labels") or {},
            "Containers": containers,
        }

    def inspect_view(self, img: Image) -> dict[str, Any]:
        cfg = self.config_of(img)
        raw = cfg.raw
        c = img.config
        config = {
            "Hostname": c.get("Hostname", ""),
            "Domainname": c.get("Domainname", ""),
            "User": c.get("User", ""),
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "ExposedPorts": c.get("ExposedPorts"),
            "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False,
            "Env": c.get("Env"),
            "Cmd": c.get("Cmd"),
            "Image": c.get("Image", ""),
            "Volumes": c.get("Volumes"),
            "WorkingDir": c.get("WorkingDir", ""),
            "Entrypoint": c.get("Entrypoint"),
            "OnBuild": c.get("OnBuild"),
            "Labels": c.get("Labels"),
        }
        for key in ("StopSignal", "Shell", "Healthcheck", "ArgsEscaped"):
            if key in c:
                config[key] = c[key]
        dirs = self.layer_dirs(img)
        graph: dict[str, Any] = {"Name": "overlay2", "Data": None}
        if dirs:
            graph["Data"] = {
                "LowerDir": ":".join(dirs[1:]) or None,
                "UpperDir": dirs[0],
                "MergedDir": "",
                "WorkDir": "",
            }
        out: dict[str, Any] = {
            "Id": img.id,
            "RepoTags": list(img.repo_tags),
            "RepoDigests": list(img.repo_digests),
            "Parent": "",
            "Comment": (
                "built-in: the host's own filesystem"
                if img.builtin
                else str(raw.get("comment") or _last_comment(cfg))
            ),
            "Created": oci.format_time(img.created),
            "Container": str(raw.get("container") or ""),
            "DockerVersion": str(raw.get("docker_version") or ""),
            "Author": str(raw.get("author") or ""),
            "Config": config,
            "Architecture": img.architecture,
            "Os": img.os,
            "Size": img.size,
            "VirtualSize": img.size,
            "GraphDriver": graph,
            "RootFS": {"Type": "layers", "Layers": list(img.layers)}
            if img.layers
            else {"Type": "layers"},
            "Metadata": {
                "LastTagTime": oci.format_time(img.last_tag_time)
                if img.last_tag_time
                else "0001-01-01T00:00:00Z"
            },
        }
        if img.variant:
            out["Variant"] = img.variant
        return out

    def history_view(self, img: Image) -> list[dict[str, Any]]:
        """GET /images/{name}/history: newest first; the top entry carries the id and tags."""
        cfg = self.config_of(img)
        entries = cfg.history
        layers = list(img.layers)
        out: list[dict[str, Any]] = []
        li = 0
        for h in entries:
            size = 0
            if not h.get("empty_layer"):
                if li < len(layers):
                    info = self.layer_info.get(layers[li])
                    size = info.size if info else 0
                li += 1
            out.append(
                {
                    "Id": "<missing>",
                    "Created": int(oci.parse_time(str(h.get("created") or ""))),
                    "CreatedBy": str(h.get("created_by") or ""),
                    "Tags": None,
                    "Size": size,
                    "Comment": str(h.get("comment") or ""),
                }
            )
        if not out:
            out.append(
                {
                    "Id": "<missing>",
                    "Created": int(img.created),
                    "CreatedBy": "",
                    "Tags": None,
                    "Size": img.size,
                    "Comment": "",
                }
            )
        out.reverse()
        out[0]["Id"] = img.id
        out[0]["Tags"] = list(img.repo_tags) or None
        return out


def _last_comment(cfg: oci.ImageConfig) -> str:
    h = cfg.history
    return str(h[-1].get("comment") or "") if h else ""


def _archive_size(path: str) -> int:
    from tether.images.layers import decompressed_chunks

    total = 0
    with open(path, "rb") as f:
        for chunk in decompressed_chunks(f):
            total += len(chunk)
    return total


def _single_reference(refs: list[str]) -> bool:
    """dockerd's isSingleReference: all from one repository, at most one tag."""
    if len(refs) <= 1:
        return len(refs) == 1
    tags = [r for r in refs if "@" not in r]
    if len(tags) > 1:
        return False
    repos = {r.split("@", 1)[0] if "@" in r else r.rsplit(":", 1)[0] for r in refs}
    return len(repos) == 1


def _is_id_prefix(image_id: str, text: str) -> bool:
    """dockerd's isImageIDPrefix: the name given is (a prefix of) the id, not a tag."""
    return image_id.startswith(text) or image_id.removeprefix("sha256:").startswith(text)


def not_found_name(text: str) -> str:
    """How dockerd names an image it cannot find: busybox:latest, or the id as given."""
    bare = text.removeprefix("sha256:")
    if text.startswith("sha256:") or (
        len(bare) == 64 and all(c in "0123456789abcdef" for c in bare)
    ):
        return text
    try:
        ref = parse(text)
    except ReferenceError:
        return text
    return ref.tagged_or_latest().familiar()
