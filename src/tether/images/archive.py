"""`docker save` and `docker load`: image tarballs in docker's format and OCI layouts.

save writes what Docker 25+ writes: an OCI image layout (oci-layout, index.json,
blobs/sha256/...) whose layers are the uncompressed archives (named by diff id), plus
docker's manifest.json ([{"Config", "RepoTags", "Layers", "LayerSources"}]) so that older
tools load it too.  Every entry has a fixed time, owner and mode and the entries are sorted,
so saving the same image twice, or saving what was just loaded, gives the same bytes.  The
legacy `repositories` file (read only by Docker before 1.10) is not written.

load reads the same format, the older docker-save format (<id>/layer.tar, <id>.json) and
OCI layouts (index.json, possibly nested indexes, compressed layers), each file checked:
the config's digest is the image id, each layer's archive must have the diff id the config
names ("invalid diffID for layer N: expected X, got Y", as dockerd says).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from tether.errors import InvalidParameter, NotFound
from tether.images import oci
from tether.images.content import sha256_bytes
from tether.images.layers import compression_of, decompressed_chunks, unpack_file
from tether.images.progress import Progress
from tether.images.reference import Reference, ReferenceError, parse
from tether.images.store import BlobRef, Image, ImageStore, LayerInfo

OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'


@dataclass
class SaveItem:
    image: Image
    tags: list[Reference]


def select(store: ImageStore, names: list[str]) -> list[SaveItem]:
    """dockerd's parseNames: a name alone is every tag of that repository; name:tag one; an
    id the image without names."""
    items: dict[str, SaveItem] = {}
    order: list[str] = []

    def add(img: Image, ref: Reference | None) -> None:
        if img.id not in items:
            items[img.id] = SaveItem(img, [])
            order.append(img.id)
        if ref is not None and all(str(t) != str(ref) for t in items[img.id].tags):
            items[img.id].tags.append(ref)

    for name in names:
        try:
            ref = parse(name)
        except ReferenceError:
            ref = None
        if ref is not None and not ref.tag and not ref.digest:
            found = False
            for img in store.all():
                for t in img.repo_tags:
                    tref = parse(t)
                    if tref.name == ref.name:
                        add(img, tref)
                        found = True
            if found:
                continue
        img = store.find(name)
        if img.builtin:
            raise InvalidParameter(
                "the built-in host image cannot be saved: it is the host's own files"
            )
        if ref is not None and ref.tag and not ref.digest:
            add(img, ref)
        else:
            add(img, None)
    return [items[i] for i in order]


def _layer_stream(store: ImageStore, diff_id: str) -> tuple[int, Callable[[], Any]]:
    """(size, opener) of a layer's uncompressed archive, from the blob tether kept."""
    info = store.layer_info.get(diff_id)
    blob = store.layer_blob(diff_id)
    if info is None or blob is None:
        raise NotFound(f"layer {diff_id} has no archive left to save")
    size = info.tar_size
    digest = blob.digest
    if digest == diff_id:
        return store.content.size(digest), lambda: store.content.open(digest)

    class _Reader:
        def __init__(self) -> None:
            self.f = store.content.open(digest)
            self.it = decompressed_chunks(self.f)
            self.buf = b""

        def read(self, n: int = -1) -> bytes:
            while n < 0 or len(self.buf) < n:
                try:
                    self.buf += next(self.it)
                except StopIteration:
                    break
            if n < 0:
                out, self.buf = self.buf, b""
            else:
                out, self.buf = self.buf[:n], self.buf[n:]
            return out

        def close(self) -> None:
            self.f.close()

        def __enter__(self) -> _Reader:
            return self

        def __exit__(self, *a: object) -> None:
            self.close()

    return size, _Reader


def write_save(store: ImageStore, items: list[SaveItem], out: Callable[[bytes], None]) -> None:
    """The archive of `items` into `out` (sync: run it in a thread)."""
    blobs: dict[str, tuple[int, Callable[[], Any], float]] = {}
    manifest_items: list[dict[str, Any]] = []
    index_entries: list[dict[str, Any]] = []
    for item in items:
        img = item.image
        config = store.content.get(img.config_blob)
        created = int(img.created)
        blobs[img.config_blob] = (len(config), _bytes_opener(config), created)
        layer_sources: dict[str, Any] = {}
        layer_descs = []
        for d in img.layers:
            size, opener = _layer_stream(store, d)
            blobs.setdefault(d, (size, opener, created))
            layer_sources[d] = {"mediaType": oci.OCI_LAYER, "digest": d, "size": size}
            layer_descs.append(oci.Descriptor(oci.OCI_LAYER, d, size))
        manifest = oci.go_json(
            {
                "schemaVersion": 2,
                "mediaType": oci.OCI_MANIFEST,
                "config": {
                    "mediaType": oci.OCI_CONFIG,
                    "digest": img.config_blob,
                    "size": len(config),
                },
                "layers": [x.to_json() for x in layer_descs],
            }
        )
        mdigest = sha256_bytes(manifest)
        blobs[mdigest] = (len(manifest), _bytes_opener(manifest), 0)
        desc = {"mediaType": oci.OCI_MANIFEST, "digest": mdigest, "size": len(manifest)}
        for ref in item.tags:
            index_entries.append(
                {
                    **desc,
                    "annotations": {
                        oci.ANNOTATION_IMAGE_NAME: str(ref),
                        oci.ANNOTATION_REF_NAME: ref.tag,
                    },
                }
            )
        if not item.tags:
            index_entries.append(desc)
        entry: dict[str, Any] = {
            "Config": f"blobs/sha256/{img.config_blob.removeprefix('sha256:')}",
            "RepoTags": [r.familiar() for r in item.tags] or None,
            "Layers": [f"blobs/sha256/{d.removeprefix('sha256:')}" for d in img.layers],
        }
        if layer_sources:
            entry["LayerSources"] = dict(sorted(layer_sources.items()))
        manifest_items.append(entry)
    index = oci.go_json(
        {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": index_entries}
    )
    manifest_json = oci.go_json(manifest_items) + b"\n"

    class _Sink:
        def write(self, data: bytes) -> int:
            out(bytes(data))
            return len(data)

    with tarfile.open(fileobj=_Sink(), mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        _add_dir(tar, "blobs/", 0)
        _add_dir(tar, "blobs/sha256/", 0)
        for digest in sorted(blobs):
            size, opener, mtime = blobs[digest]
            info = _info(f"blobs/sha256/{digest.removeprefix('sha256:')}", size, mtime)
            with opener() as f:
                tar.addfile(info, f)
        for name, data in (
            ("index.json", index),
            ("manifest.json", manifest_json),
            ("oci-layout", OCI_LAYOUT),
        ):
            tar.addfile(_info(name, len(data), 0), _BytesReader(data))


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out = self.data[self.pos : end]
        self.pos += len(out)
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> _BytesReader:
        return self

    def __exit__(self, *a: object) -> None:
        pass


def _bytes_opener(data: bytes) -> Callable[[], _BytesReader]:
    return lambda: _BytesReader(data)


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_dir(tar: tarfile.TarFile, name: str, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = int(mtime)
    info.uname = info.gname = ""
    tar.addfile(info)


async def save_stream(store: ImageStore, items: list[SaveItem]) -> AsyncIterator[bytes]:
    """The archive, chunk by chunk, made in a thread (bounded: it waits for the reader)."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
    buf = bytearray()

    def out(data: bytes) -> None:
        buf.extend(data)
        if len(buf) >= 1 << 20:
            q.put(bytes(buf))
            buf.clear()

    def work() -> None:
        try:
            write_save(store, items, out)
            if buf:
                q.put(bytes(buf))
            q.put(None)
        except BaseException as exc:
            q.put(exc)

    # The layers are held while the thread reads them: an rmi meanwhile cannot remove them.
    held = [d for it in items for d in it.image.layers]
    for d in held:
        store.leases[d] += 1
    thread = threading.Thread(target=work, name="image-save", daemon=True)
    thread.start()
    try:
        while True:
            item = await asyncio.to_thread(q.get)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # A client gone mid-way: let the thread finish into nowhere.
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.01)
        for d in held:
            store.leases[d] -= 1
            if store.leases[d] <= 0:
                del store.leases[d]


# -- load ------------------------------------------------------------------------------------


@dataclass
class LoadEntry:
    config: str  # path of the config file
    layers: list[str]  # paths of the layer archives, bottom first
    tags: list[Reference]


def _inside(top: str, rel: str) -> str:
    """A path named inside the archive, resolved; refused if it leaves the archive."""
    path = os.path.realpath(os.path.join(top, rel))
    if path != top and not path.startswith(top + os.sep):
        raise InvalidParameter(f"invalid archive: {rel} points outside the archive")
    if not os.path.isfile(path):
        raise InvalidParameter(f"invalid archive: {rel} is missing")
    return path


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except ValueError as exc:
        raise InvalidParameter(f"invalid archive: {os.path.basename(path)}: {exc}") from None


def check_platform(name: str, want: dict[str, str], have: dict[str, str]) -> None:
    """--platform of save, load and push: the image must be of that platform (tether keeps
    one platform per image), in dockerd's words otherwise."""
    if not oci.platform_matches(want, have):
        raise NotFound(
            f"image with reference {name} was found but does not match the specified "
            f"platform: wanted {oci.format_platform(want)}, actual: {oci.format_platform(have)}"
        )


def entries(top: str, platform: dict[str, str] | None = None) -> list[LoadEntry]:
    """What an unpacked archive holds: docker's manifest.json, else an OCI index.json."""
    top = os.path.realpath(top)
    manifest_path = os.path.join(top, "manifest.json")
    if os.path.isfile(manifest_path):
        doc = _read_json(manifest_path)
        if not isinstance(doc, list):
            raise InvalidParameter("invalid archive: manifest.json is not a list")
        out = []
        for item in doc:
            if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
                raise InvalidParameter("invalid archive: a manifest.json entry has no Config")
            layers = item.get("Layers") or []
            if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
                raise InvalidParameter("invalid archive: a manifest.json entry has bad Layers")
            tags = []
            for t in item.get("RepoTags") or []:
                try:
                    tags.append(parse(str(t)).tagged_or_latest())
                except ReferenceError as exc:
                    raise InvalidParameter(f"invalid tag {t!r} in manifest.json: {exc}") from None
            out.append(
                LoadEntry(_inside(top, item["Config"]), [_inside(top, x) for x in layers], tags)
            )
        return out
    index_path = os.path.join(top, "index.json")
    if os.path.isfile(index_path):
        return _oci_entries(top, _read_json(index_path), platform)
    raise InvalidParameter(
        "invalid archive: no manifest.json or index.json (not a docker save or OCI layout tarball)"
    )


def _blob_path(top: str, digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return _inside(top, f"blobs/{algo}/{hexpart}")


def _oci_entries(
    top: str, index_doc: Any, platform: dict[str, str] | None = None
) -> list[LoadEntry]:
    want = platform or oci.host_platform()
    out: list[LoadEntry] = []

    def visit(desc: oci.Descriptor, names: list[Reference]) -> None:
        path = _blob_path(top, desc.digest)
        with open(path, "rb") as f:
            data = f.read()
        if sha256_bytes(data) != desc.digest:
            raise InvalidParameter(f"invalid archive: blob {desc.digest} does not match its digest")
        parsed = oci.parse(data, desc.media_type)
        if isinstance(parsed, oci.Index):
            entry = oci.choose(parsed, want)
            if entry is None:
                raise NotFound(
                    f"no matching manifest for {oci.format_platform(want)} in the manifest list entries"
                )
            visit(entry, names)
            return
        out.append(
            LoadEntry(
                _blob_path(top, parsed.config.digest),
                [_blob_path(top, x.digest) for x in parsed.layers],
                names,
            )
        )

    if not isinstance(index_doc, dict):
        raise InvalidParameter("invalid archive: index.json is not an object")
    index = oci.parse(json.dumps(index_doc).encode(), oci.OCI_INDEX)
    if not isinstance(index, oci.Index):
        raise InvalidParameter("invalid archive: index.json is not an index")
    groups: dict[str, tuple[oci.Descriptor, list[Reference]]] = {}
    for d in index.manifests:
        names = []
        ann = d.annotations or {}
        name = ann.get(oci.ANNOTATION_IMAGE_NAME) or ann.get(oci.ANNOTATION_REF_NAME) or ""
        if name and (":" in name or "/" in name):
            try:
                names.append(parse(name).tagged_or_latest())
            except ReferenceError:
                pass
        if d.digest in groups:
            groups[d.digest][1].extend(names)
        else:
            groups[d.digest] = (d, names)
    for d, names in groups.values():
        visit(d, names)
    return out


async def load(
    store: ImageStore,
    archive: str,
    progress: Progress,
    quiet: bool,
    platform: dict[str, str] | None = None,
) -> list[str]:
    """Load the archive at path `archive`; the lines docker prints ("Loaded image: ...").
    `platform` (load --platform): the entry of an index for it, and every image of it."""
    tmp = tempfile.mkdtemp(prefix="load-", dir=store.content.tmpdir)
    try:
        r = await asyncio.to_thread(
            subprocess.run,
            ["tar", "-x", "-f", archive, "-C", tmp, "--no-same-owner", "--no-same-permissions"],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            text = r.stderr.strip().splitlines()
            raise InvalidParameter(f"invalid archive: {text[0] if text else 'not a tar archive'}")
        found = entries(tmp, platform)
        lines: list[str] = []
        for entry in found:
            lines += await _load_one(store, entry, progress, quiet, platform)
        return lines
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _load_one(
    store: ImageStore,
    entry: LoadEntry,
    progress: Progress,
    quiet: bool,
    platform: dict[str, str] | None = None,
) -> list[str]:
    with open(entry.config, "rb") as f:
        config = f.read()
    cfg = oci.parse_config(config)
    if platform is not None:
        name = entry.tags[0].familiar() if entry.tags else sha256_bytes(config)
        check_platform(name, platform, cfg.platform)
    if len(cfg.diff_ids) != len(entry.layers):
        raise InvalidParameter(
            "invalid manifest, layers length mismatch: expected "
            f"{len(cfg.diff_ids)}, got {len(entry.layers)}"
        )
    for d in cfg.diff_ids:
        store.leases[d] += 1
    try:
        for i, (path, want) in enumerate(zip(entry.layers, cfg.diff_ids, strict=True)):
            ident = want.removeprefix("sha256:")[:12]
            with open(path, "rb") as f:
                kind = compression_of(f.read(4))
            size = os.path.getsize(path)
            if not quiet:
                await progress.progress(ident, "Loading layer", 0, size, force=True)
            if store.layers.has(want) and want in store.layer_info:
                got = await asyncio.to_thread(_diff_id_of, path)
                if got != want:
                    raise InvalidParameter(
                        f'invalid diffID for layer {i}: expected "{want}", got "{got}"'
                    )
            else:
                tmp = store.layers.new_tmp()
                got, unpacked = await unpack_file(path, tmp)
                if got != want:
                    import shutil as _sh

                    _sh.rmtree(tmp, ignore_errors=True)
                    raise InvalidParameter(
                        f'invalid diffID for layer {i}: expected "{want}", got "{got}"'
                    )
                store.layers.commit(tmp, want)
                tar_size = size if not kind else await asyncio.to_thread(_archive_size, path)
                store.save_layer(LayerInfo(want, unpacked, tar_size, []))
            blob = await asyncio.to_thread(store.content.put_file, path)
            media = {"gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD}.get(
                kind, oci.OCI_LAYER
            )
            store.add_blob(want, BlobRef(blob, media, size))
            if not quiet:
                await progress.progress(ident, "Loading layer", size, size, force=True)
        lines = []
        old_ids = {t.familiar(): store.lookup(t.familiar()) for t in entry.tags}
        img = store.commit(config, entry.tags)
        for t in entry.tags:
            old = old_ids[t.familiar()]
            if old is not None and old.id != img.id:
                lines.append(
                    f"The image {t.familiar()} already exists, renaming the old one with ID "
                    f"{old.id} to empty string"
                )
            lines.append(f"Loaded image: {t.familiar()}")
        if not entry.tags:
            lines.append(f"Loaded image ID: {img.id}")
        return lines
    finally:
        for d in cfg.diff_ids:
            store.leases[d] -= 1
            if store.leases[d] <= 0:
                del store.leases[d]


def _diff_id_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in decompressed_chunks(f):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _archive_size(path: str) -> int:
    total = 0
    with open(path, "rb") as f:
        for chunk in decompressed_chunks(f):
            total += len(chunk)
    return total
