"""`docker push`: layers the registry lacks (a cross-repository mount when it has them in
another repository it knows tether got them from), the config, then the manifest.

An image pulled from a registry is pushed with the same blobs and, when its layers are
unchanged, the same manifest bytes: its digest is the same everywhere.  Images tether made
(import, load, build) get a Docker schema2 manifest over gzip blobs, made once and kept, so
pushing again gives the same digest.  Messages are dockerd's (distribution/push_v2.go).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os

from tether.errors import NotFound, TetherError
from tether.images import oci
from tether.images.content import Writer, sha256_bytes
from tether.images.layers import decompressed_chunks
from tether.images.progress import Progress
from tether.images.reference import Reference
from tether.images.registry import (
    AuthConfig,
    Registries,
    Repository,
    TransportError,
    Unauthorized,
)
from tether.images.store import BlobRef, Image, ImageStore, Source

CONCURRENT_UPLOADS = 5


class _Sink:
    def __init__(self, w: Writer) -> None:
        self.w = w

    def write(self, data: bytes) -> int:
        self.w.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def gzip_blob(store: ImageStore, diff_id: str) -> BlobRef:
    """A gzip blob of the layer (made from its archive once, then kept)."""
    info = store.layer_info.get(diff_id)
    if info is None:
        raise NotFound(f"layer {diff_id} is not in the layer store")
    for b in info.blobs:
        if b.media_type in (oci.DOCKER_LAYER, oci.OCI_LAYER_GZIP) and store.content.has(b.digest):
            return b
    src = store.layer_blob(diff_id)
    if src is None:
        raise NotFound(f"no archive of layer {diff_id} is left to push")
    w = store.content.writer()
    try:
        # Deterministic (no name, no time), so the same layer always gives the same blob.
        with (
            store.content.open(src.digest) as f,
            gzip.GzipFile(filename="", mode="wb", fileobj=_Sink(w), mtime=0) as z,
        ):
            for chunk in decompressed_chunks(f):
                z.write(chunk)
    except BaseException:
        w.abort()
        raise
    digest = w.commit()
    blob = BlobRef(digest, oci.DOCKER_LAYER, store.content.size(digest))
    store.add_blob(diff_id, blob)
    return blob


def _reusable_source(store: ImageStore, img: Image, repo_name: str) -> Source | None:
    """A manifest the image was pulled with whose blobs are all here: pushed as it is."""
    ordered = sorted(img.sources, key=lambda s: s.repo != repo_name)
    for s in ordered:
        if not store.content.has(s.manifest):
            continue
        try:
            m = oci.parse(store.content.get(s.manifest), s.manifest_type)
        except TetherError:
            continue
        if not isinstance(m, oci.Manifest) or m.config.digest != img.config_blob:
            continue
        if all(store.content.has(x.digest) for x in m.layers):
            return s
    return None


async def push(
    store: ImageStore,
    registries: Registries,
    ref: Reference,
    auth: AuthConfig | None,
    progress: Progress,
) -> str:
    """Push the image named `ref` (with its tag); returns the manifest digest."""
    tagged = ref.tagged_or_latest()
    img = store.lookup(tagged.familiar())
    if img is None:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
    await progress.status("", f"The push refers to repository [{ref.name}]")
    endpoints = registries.endpoints(ref.domain, push=True)
    last: TetherError | None = None
    for ep in endpoints:
        repo = registries.repository(ep, ref.path, auth, ("pull", "push"))
        try:
            digest = await _push_to(store, repo, img, tagged, progress)
            registries.worked(ref.domain, ep)
            return digest
        except TransportError as exc:
            if repo.transport_ok:
                raise
            last = exc
    assert last is not None
    raise last


async def _push_to(
    store: ImageStore, repo: Repository, img: Image, ref: Reference, progress: Progress
) -> str:
    source = _reusable_source(store, img, ref.name)
    if source is not None:
        manifest_bytes = store.content.get(source.manifest)
        media = source.manifest_type
        parsed = oci.parse(manifest_bytes, media)
        assert isinstance(parsed, oci.Manifest)
        blobs = [BlobRef(x.digest, x.media_type, x.size) for x in parsed.layers]
    else:
        blobs = [await asyncio.to_thread(gzip_blob, store, d) for d in img.layers]
        media = oci.DOCKER_MANIFEST
        config_desc = oci.Descriptor(
            oci.DOCKER_CONFIG, img.config_blob, store.content.size(img.config_blob)
        )
        manifest_bytes = oci.manifest_json(
            config_desc, [oci.Descriptor(b.media_type, b.digest, b.size) for b in blobs], media
        )

    def mount_from(diff_id: str) -> list[str]:
        """Repositories on this registry known to hold the layer's blob (paths)."""
        info = store.layer_info.get(diff_id)
        known = [*(info.repos if info else []), *(s.repo for s in img.sources)]
        return sorted(
            {
                r.split("/", 1)[1]
                for r in known
                if r.split("/", 1)[0] == ref.domain and r != ref.name
            }
        )

    # Ask once before anything runs in parallel: the auth challenge is answered here.
    await repo.has_blob(img.config_blob)
    idents = [d.removeprefix("sha256:")[:12] for d in img.layers]
    for ident in reversed(idents):
        await progress.update(ident, "Preparing")
    slots = asyncio.Semaphore(CONCURRENT_UPLOADS)

    async def one(ident: str, diff_id: str, blob: BlobRef) -> None:
        if slots.locked():
            await progress.update(ident, "Waiting")
        async with slots:
            if await repo.has_blob(blob.digest):
                await progress.update(ident, "Layer already exists")
            else:
                for src in mount_from(diff_id):
                    if await repo.mount_blob(blob.digest, src):
                        await progress.update(ident, f"Mounted from {src}")
                        break
                else:
                    await _upload(store, repo, blob, ident, progress)
                    await progress.update(ident, "Pushed")
            store.add_repo(diff_id, ref.name)

    tasks = [
        asyncio.create_task(one(ident, diff_id, blob))
        for ident, diff_id, blob in reversed(list(zip(idents, img.layers, blobs, strict=True)))
    ]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        raise
    if not await repo.has_blob(img.config_blob):
        data = store.content.get(img.config_blob)
        await repo.upload_blob(img.config_blob, len(data), data)
    await repo.put_manifest(ref.tag, manifest_bytes, media)
    digest = sha256_bytes(manifest_bytes)
    if not store.content.has(digest):
        store.content.put(manifest_bytes, digest)
    await progress.status("", f"{ref.tag}: digest: {digest} size: {len(manifest_bytes)}")
    await progress.aux({"Tag": ref.tag, "Digest": digest, "Size": len(manifest_bytes)})
    _remember(store, img, ref, digest, media)
    return digest


def _remember(store: ImageStore, img: Image, ref: Reference, digest: str, media: str) -> None:
    name = f"{ref.familiar_name}@{digest}"
    if name not in img.repo_digests:
        img.repo_digests.append(name)
    if all(s.manifest != digest or s.repo != ref.name for s in img.sources):
        img.sources.append(Source(ref.name, digest, media))
    store._save(img)


async def _upload(
    store: ImageStore, repo: Repository, blob: BlobRef, ident: str, progress: Progress
) -> None:
    path = store.content.path(blob.digest)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        done = asyncio.Event()

        async def report() -> None:
            while not done.is_set():
                with contextlib.suppress(ValueError, OSError):
                    await progress.progress(ident, "Pushing", f.tell(), size, force=True)
                try:
                    await asyncio.wait_for(done.wait(), 0.25)
                except TimeoutError:
                    pass

        reporter = asyncio.create_task(report())
        try:
            await repo.upload_blob(blob.digest, size, f)
        except Unauthorized:
            raise
        finally:
            done.set()
            await reporter
    await progress.progress(ident, "Pushing", size, size, force=True)
