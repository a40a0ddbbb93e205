"""`docker pull`: a manifest (an index first, when it is one: the platform's entry), the
config, then the layers tether does not have yet, three at a time.

Each layer is unpacked while it downloads (layers.Unpacker): the bytes go to the content
store (hashed: the blob digest) and through the decompressor to tar (hashed: the diff id) in
one pass, so a pull costs one read of the network and one write of the files.  The blob's
digest is checked when the last byte is in, the diff id against the image config; a layer
that fails either is removed and never becomes visible.  Layers tether already has (by diff
id, from any image) are "Already exists" and not fetched at all.

Messages and errors are dockerd's (distribution/pull_v2.go, errors.go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from tether.errors import InvalidParameter, NotFound, TetherError
from tether.images import oci
from tether.images.content import DigestMismatch, sha256_bytes
from tether.images.layers import LayerError, Unpacker
from tether.images.progress import Progress
from tether.images.reference import Reference
from tether.images.registry import (
    AuthConfig,
    Registries,
    RegistryError,
    Repository,
    TransportError,
    Unauthorized,
)
from tether.images.store import BlobRef, Image, ImageStore, LayerInfo, Source

log = logging.getLogger("tether.pull")

CONCURRENT_DOWNLOADS = 3
RETRIES = 3


class PullNotFound(NotFound):
    pass


def translate(exc: RegistryError, ref: Reference) -> TetherError:
    """dockerd's translatePullError."""
    if exc.code == "DENIED":
        return PullNotFound(
            f"pull access denied for {ref.familiar_name}, repository does not exist or may "
            f"require 'docker login': {exc.message}"
        )
    if exc.code == "MANIFEST_UNKNOWN":
        return PullNotFound(f"manifest for {ref.familiar()} not found: {exc.message}")
    if exc.code == "NAME_UNKNOWN":
        return PullNotFound(f"repository {ref.familiar_name} not found: {exc.message}")
    if exc.http_status == 404:
        return PullNotFound(f"manifest for {ref.familiar()} not found: {exc.message}")
    return exc


@dataclass
class Resolved:
    repo: Repository
    manifest: oci.Manifest
    manifest_bytes: bytes
    manifest_digest: str
    index_bytes: bytes | None
    index_digest: str
    config: bytes


async def resolve(
    registries: Registries,
    ref: Reference,
    platform: dict[str, str] | None,
    auth: AuthConfig | None,
) -> Resolved:
    """The manifest for `ref` and its config, from the first endpoint that has them."""
    last: TetherError | None = None
    for ep in registries.endpoints(ref.domain):
        repo = registries.repository(ep, ref.path, auth, ("pull",))
        try:
            found = await _resolve_on(repo, ref, platform)
            registries.worked(ref.domain, ep)
            return found
        except TransportError as exc:
            log.info("pull %s from %s: %s", ref, ep.url, exc.message)
            last = last if isinstance(last, RegistryError) else exc
            continue
        except RegistryError as exc:
            if ep.mirror:
                log.info("pull %s from mirror %s: %s", ref, ep.url, exc.message)
                last = exc
                continue
            registries.worked(ref.domain, ep)
            raise translate(exc, ref) from None
        except Unauthorized as exc:
            if ep.mirror:
                last = exc
                continue
            raise
    assert last is not None
    if isinstance(last, RegistryError):
        raise translate(last, ref)
    raise last


async def _resolve_on(
    repo: Repository, ref: Reference, platform: dict[str, str] | None
) -> Resolved:
    body, media, given = await repo.get_manifest(ref.digest or ref.tag or "latest")
    digest = sha256_bytes(body)
    if ref.digest and digest != ref.digest:
        raise InvalidParameter(f"manifest verification failed for digest {ref.digest}")
    if given and given != digest and not ref.digest:
        log.warning("registry digest %s differs from the manifest's %s", given, digest)
    parsed = oci.parse(body, media)
    index_bytes: bytes | None = None
    index_digest = ""
    want = platform or oci.host_platform()
    if isinstance(parsed, oci.Index):
        index_bytes, index_digest = body, digest
        entry = oci.choose(parsed, want)
        if entry is None:
            raise PullNotFound(
                f"no matching manifest for {oci.format_platform(want)} in the manifest list entries"
            )
        body, media, _ = await repo.get_manifest(entry.digest)
        digest = sha256_bytes(body)
        if digest != entry.digest:
            raise InvalidParameter(f"manifest verification failed for digest {entry.digest}")
        inner = oci.parse(body, media or entry.media_type)
        if not isinstance(inner, oci.Manifest):
            raise InvalidParameter(f"unsupported media type {media}: an index inside an index")
        parsed = inner
    for layer in parsed.layers:
        if layer.media_type and layer.media_type not in oci.LAYERS:
            raise InvalidParameter(f"unsupported media type {layer.media_type}")
    config = await repo.blob_bytes(parsed.config.digest)
    if sha256_bytes(config) != parsed.config.digest:
        raise InvalidParameter(
            f"image config verification failed for digest {parsed.config.digest}"
        )
    cfg = oci.parse_config(config)
    if len(cfg.diff_ids) != len(parsed.layers):
        raise InvalidParameter("layers from manifest don't match image configuration")
    if (
        platform is not None
        and index_bytes is None
        and not oci.platform_matches(platform, cfg.platform)
    ):
        raise PullNotFound(
            f"image with reference {ref.familiar()} was found but does not match the specified "
            f"platform: wanted {oci.format_platform(platform)}, actual: {oci.format_platform(cfg.platform)}"
        )
    return Resolved(repo, parsed, body, digest, index_bytes, index_digest, config)


def _drop_orphan_blob(store: ImageStore, digest: str) -> None:
    """A blob committed for a layer that then failed, unless another layer has it."""
    if not any(b.digest == digest for i in store.layer_info.values() for b in i.blobs):
        store.content.delete(digest)


async def _fetch_layer(
    store: ImageStore,
    repo: Repository,
    desc: oci.Descriptor,
    diff_id: str,
    progress: Progress,
    slots: asyncio.Semaphore,
    repo_name: str,
) -> None:
    ident = desc.digest.removeprefix("sha256:")[:12]
    if slots.locked():
        await progress.update(ident, "Waiting")
    async with slots:
        for attempt in range(1, RETRIES + 1):
            tmp = store.layers.new_tmp()
            unpacker = Unpacker(tmp)
            writer = store.content.writer(desc.digest)
            done = 0
            # A corrupted blob usually breaks the decompressor first: the download goes on
            # (hashed) so that the error is the digest's, as docker reports it.
            broken: LayerError | None = None
            try:
                resp = await repo.blob(desc.digest)
                try:
                    async for chunk in resp.content.iter_chunked(1 << 18):
                        writer.write(chunk)
                        if broken is None:
                            try:
                                await unpacker.feed(chunk)
                            except LayerError as exc:
                                broken = exc
                        done += len(chunk)
                        await progress.progress(ident, "Downloading", done, desc.size)
                finally:
                    resp.release()
                await progress.progress(ident, "Downloading", done, desc.size, force=True)
                await progress.update(ident, "Verifying Checksum")
                blob = writer.commit(
                    f"filesystem layer verification failed for digest {desc.digest}"
                )
                if broken is not None:
                    raise broken
                await progress.update(ident, "Download complete")
                await progress.progress(ident, "Extracting", done, desc.size, force=True)
                got, size = await unpacker.finish()
                if got != diff_id:
                    raise InvalidParameter("layers from manifest don't match image configuration")
                store.layers.commit(tmp, diff_id)
                store.save_layer(
                    LayerInfo(
                        diff_id,
                        size,
                        unpacker.raw_size,
                        [BlobRef(blob, desc.media_type or oci.DOCKER_LAYER, desc.size)],
                        [repo_name],
                    )
                )
                await progress.update(ident, "Pull complete")
                return
            except (DigestMismatch, LayerError, InvalidParameter, RegistryError, Unauthorized):
                writer.abort()
                await unpacker.abort()
                _drop_orphan_blob(store, desc.digest)
                raise
            except (TimeoutError, TransportError, OSError) as exc:
                writer.abort()
                await unpacker.abort()
                if attempt == RETRIES:
                    if isinstance(exc, TransportError):
                        raise
                    raise TransportError(f"download of layer {desc.digest} failed: {exc}") from None
                delay = 5 * attempt
                for left in range(delay, 0, -1):
                    await progress.update(
                        ident, f"Retrying in {left} second{'s' if left > 1 else ''}"
                    )
                    await asyncio.sleep(1)
            except BaseException:
                writer.abort()
                await unpacker.abort()
                raise


async def pull(
    store: ImageStore,
    registries: Registries,
    ref: Reference,
    platform: dict[str, str] | None,
    auth: AuthConfig | None,
    progress: Progress,
    resolved: Resolved | None = None,
) -> Image:
    """Pull `ref` (a tag or a digest) into the store; the image, named as docker would.

    `resolved`: what resolve() found, when the caller resolved first (the API answers a
    missing image with a 404 before its stream starts, as dockerd does)."""
    r = resolved or await resolve(registries, ref, platform, auth)
    tag_or_digest = ref.digest or ref.tag or "latest"
    # The repository as the registry names it (docker: "Pulling from library/busybox").
    await progress.status(tag_or_digest, f"Pulling from {ref.path}")
    cfg = oci.parse_config(r.config)
    before = store.lookup(ref.familiar()) if ref.tag or ref.digest else None
    leased = list(cfg.diff_ids)
    for d in leased:
        store.leases[d] += 1
    try:
        slots = asyncio.Semaphore(CONCURRENT_DOWNLOADS)
        tasks: list[asyncio.Task[None]] = []
        fetched = 0
        seen: set[str] = set()
        have_image = r.manifest.config.digest in store.by_id and all(
            store.layers.has(d) and d in store.layer_info for d in cfg.diff_ids
        )
        for desc, diff_id in zip(r.manifest.layers, cfg.diff_ids, strict=True):
            ident = desc.digest.removeprefix("sha256:")[:12]
            if have_image:
                break  # docker says nothing of the layers of an image it has
            if diff_id in seen:
                continue
            seen.add(diff_id)
            if store.layers.has(diff_id) and diff_id in store.layer_info:
                await progress.update(ident, "Already exists")
                if store.content.has(desc.digest):
                    store.add_blob(diff_id, BlobRef(desc.digest, desc.media_type, desc.size))
                    store.add_repo(diff_id, ref.name)
                continue
            await progress.update(ident, "Pulling fs layer")
            fetched += 1
            tasks.append(
                asyncio.create_task(
                    _fetch_layer(store, r.repo, desc, diff_id, progress, slots, ref.name)
                )
            )
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            raise
        store.content.put(r.manifest_bytes, r.manifest_digest)
        if r.index_bytes is not None:
            store.content.put(r.index_bytes, r.index_digest)
        shown_digest = r.index_digest or r.manifest_digest
        img = store.commit(
            r.config,
            tags=[ref] if ref.tag or not ref.digest else [],
            digests=[f"{ref.familiar_name}@{shown_digest}"],
            source=Source(ref.name, r.manifest_digest, r.manifest.media_type, r.index_digest),
        )
    finally:
        for d in leased:
            store.leases[d] -= 1
            if store.leases[d] <= 0:
                del store.leases[d]
    await progress.status("", f"Digest: {shown_digest}")
    newer = fetched > 0 or before is None or before.id != img.id
    name = ref.familiar() if (ref.tag or ref.digest) else ref.tagged_or_latest().familiar()
    if newer:
        await progress.status("", f"Status: Downloaded newer image for {name}")
    else:
        await progress.status("", f"Status: Image is up to date for {name}")
    return img
