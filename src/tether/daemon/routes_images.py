"""API routes for /images, /auth and /build, in the Docker Engine API's shapes.

    GET    /images/json                     list (all, digests, filters)
    POST   /images/create?fromImage=&tag=   pull (a JSON message stream), or
           /images/create?fromSrc=-          import of a rootfs tarball (the body)
    GET    /images/{name}/json              inspect
    GET    /images/{name}/history           history
    POST   /images/{name}/tag?repo=&tag=    tag
    POST   /images/{name}/push?tag=         push (a JSON message stream)
    GET    /images/{name}/get, /images/get  save (a tarball)
    POST   /images/load                     load (the body is the tarball)
    DELETE /images/{name}                   remove
    POST   /images/prune                    remove unused images
    POST   /auth                            check credentials against a registry
    POST   /build, /build/prune             build (images/build.py), the build cache

Errors a pull meets before its stream starts (a missing tag, no access) are HTTP errors with
dockerd's status and words (docker-py turns them into ImageNotFound / NotFound / APIError);
after it starts they are the stream's last message, as dockerd does.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from typing import TYPE_CHECKING

from tether import wire
from tether.api.images import ImageImport, ImagePull
from tether.daemon.http import (
    Request,
    Response,
    Router,
    end_stream,
    json_response,
    start_stream,
    write_chunk,
)
from tether.errors import InvalidParameter, NotFound, TetherError
from tether.images import archive, oci
from tether.images.progress import Progress
from tether.images.reference import Reference, ReferenceError, check_tag, parse, registry_of
from tether.images.registry import AuthConfig, Unauthorized
from tether.runtime.images import apply_changes

if TYPE_CHECKING:
    from tether.daemon.app import Daemon


def _auth(req: Request) -> AuthConfig | None:
    return AuthConfig.from_header(req.headers.get("x-registry-auth"))


def _platform(req: Request) -> dict[str, str] | None:
    """`platform`: "os/arch[/variant]", or the OCI platform object as JSON (API 1.48's save,
    load and push)."""
    text = req.arg("platform")
    if not text:
        return None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InvalidParameter(f"invalid platform: {exc}") from None
        if not isinstance(doc, dict) or not doc.get("architecture"):
            raise InvalidParameter(f"invalid platform: {text}")
        text = "/".join(str(doc[k]) for k in ("os", "architecture", "variant") if doc.get(k))
    return oci.parse_platform(text)


def until_timestamp(text: str) -> float:
    """docker's `until` filter value: a Unix timestamp, a date (RFC 3339, or without a time),
    or a Go duration before now (`24h`, `1h30m`)."""
    import re
    import time
    from datetime import UTC, datetime

    value = text.strip()
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    if parts and "".join(n + u for n, u in parts) == value:
        return time.time() - sum(float(n) * units[u] for n, u in parts)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"Cannot parse until filter: {text}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _labels_match(patterns: list[str], labels: dict[str, str]) -> bool:
    for label in patterns:
        k, eq, v = label.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


def _filters(text: str | None) -> dict[str, list[str]]:
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        raise InvalidParameter(f"invalid filter '{text}'") from None
    if not isinstance(doc, dict):
        raise InvalidParameter(f"invalid filter '{text}'")
    out: dict[str, list[str]] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out[str(k)] = [str(x) for x, on in v.items() if on]
        elif isinstance(v, list):
            out[str(k)] = [str(x) for x in v]
        else:
            raise InvalidParameter(f"invalid filter '{text}'")
    return out


def register(router: Router, daemon: Daemon) -> None:
    images = daemon.images
    registries = daemon.registries

    def using() -> list[tuple[str, str, bool]]:
        return [(c.id, c.image_id, c.state.running) for c in daemon.containers.by_id.values()]

    # -- list, inspect, history ---------------------------------------------------------------

    async def list_(req: Request) -> Response:
        filters = _filters(req.arg("filters"))
        known = {"dangling", "label", "reference", "before", "since", "until"}
        for k in filters:
            if k not in known:
                raise InvalidParameter(f"invalid filter '{k}'")
        found = images.all(intermediate=req.flag("all"))
        if "dangling" in filters:
            want = filters["dangling"][-1].lower()
            if want not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"Invalid filter 'dangling={want}'")
            dangling = want in ("true", "1")
            found = [i for i in found if (not i.repo_tags) == dangling]
        if "label" in filters:
            found = [
                i for i in found if _labels_match(filters["label"], i.config.get("Labels") or {})
            ]
        if "until" in filters:
            limit = until_timestamp(filters["until"][-1])
            found = [i for i in found if i.created < limit]
        if "before" in filters:
            ref = images.find(filters["before"][-1])
            found = [i for i in found if i.created < ref.created]
        if "since" in filters:
            ref = images.find(filters["since"][-1])
            found = [i for i in found if i.created > ref.created]
        views = []
        for img in found:
            view = images.list_view(img)
            if "reference" in filters:
                pats = filters["reference"]
                tags = [t for t in img.repo_tags if _ref_match(pats, t)]
                if not tags:
                    continue
                view["RepoTags"] = tags
            views.append(view)
        return json_response(views)

    async def inspect(req: Request) -> Response:
        return json_response(images.inspect_view(images.find(req.params["name"])))

    async def history(req: Request) -> Response:
        return json_response(images.history_view(images.find(req.params["name"])))

    # -- create: pull or import ---------------------------------------------------------------

    async def create(req: Request) -> Response | None:
        if req.arg("fromImage") is None and req.arg("fromSrc") is None:
            raise InvalidParameter("fromImage or fromSrc=- is required")
        if req.arg("fromImage") is None:
            return await import_(req)
        spec = ImagePull.from_query(req.query)
        auth = _auth(req)
        from tether.images.pull import pull, resolve

        if spec.all_tags:
            await pull_all(req, spec, auth)
            return None
        resolved = await resolve(registries, spec.ref, spec.platform, auth)
        await start_stream(req, "application/json")
        progress = Progress(lambda data: write_chunk(req, data))
        try:
            await pull(images, registries, spec.ref, spec.platform, auth, progress, resolved)
        except TetherError as exc:
            await progress.error(exc.message)
        await end_stream(req)
        return None

    async def pull_all(req: Request, spec: ImagePull, auth: AuthConfig | None) -> None:
        from tether.images.pull import pull, resolve

        tags = await _list_tags(daemon, spec.ref, auth)
        await start_stream(req, "application/json")
        progress = Progress(lambda data: write_chunk(req, data))
        try:
            for tag in tags:
                ref = spec.ref.with_tag(tag)
                resolved = await resolve(registries, ref, spec.platform, auth)
                await pull(images, registries, ref, spec.platform, auth, progress, resolved)
        except TetherError as exc:
            await progress.error(exc.message)
        await end_stream(req)

    async def import_(req: Request) -> Response:
        spec = ImageImport.from_query(req.query)
        config = apply_changes(spec.changes)
        spec.check_config(config)
        # The tarball goes to disk as it arrives (it may be far larger than a JSON body).
        fd, tmp = tempfile.mkstemp(prefix="import-", dir=images.content.tmpdir)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in req.body_chunks():
                    f.write(chunk)
            img = await images.import_tar(
                tmp,
                spec.repo or None,
                spec.tag or None,
                config,
                req.arg("message") or "",
                _platform(req),
            )
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return Response(200, wire.dumps({"status": img.id}).encode() + b"\n")

    # -- tag, remove, prune -------------------------------------------------------------------

    async def tag(req: Request) -> Response:
        img = images.find(req.params["name"])
        repo, tag_ = req.arg("repo") or "", req.arg("tag") or ""
        try:
            ref = parse(repo)
            if ref.digest or (ref.tag and tag_):
                raise InvalidParameter(
                    "refusing to create an ambiguous tag using digest algorithm as name"
                )
            if tag_:
                ref = ref.with_tag(check_tag(tag_))
        except ReferenceError as exc:
            raise InvalidParameter(str(exc)) from None
        images.tag(img, ref.tagged_or_latest())
        return Response(201, b"")

    async def remove(req: Request) -> Response:
        return json_response(
            images.remove(req.params["name"], using(), req.flag("force"), not req.flag("noprune"))
        )

    async def prune(req: Request) -> Response:
        filters = _filters(req.arg("filters"))
        for k in filters:
            if k not in ("dangling", "label", "label!", "until"):
                raise InvalidParameter(f"invalid filter '{k}'")
        dangling_only = True
        if "dangling" in filters:
            dangling_only = filters["dangling"][-1].lower() in ("true", "1")
        limit = until_timestamp(filters["until"][-1]) if "until" in filters else None
        used = {c[1] for c in using()}
        deleted: list[dict[str, str]] = []
        before = sum(i.size for i in images.by_id.values())
        for img in list(images.all()):
            if img.builtin or img.id in used:
                continue
            if dangling_only and img.repo_tags:
                continue
            labels = img.config.get("Labels") or {}
            if "label" in filters and not _labels_match(filters["label"], labels):
                continue
            if "label!" in filters and any(_labels_match([x], labels) for x in filters["label!"]):
                continue
            if limit is not None and img.created >= limit:
                continue
            for t in list(img.repo_tags) + list(img.repo_digests):
                deleted.append({"Untagged": t})
            img.repo_tags.clear()
            img.repo_digests.clear()
            deleted += [{"Deleted": img.id}] + [{"Deleted": c} for c in images._delete(img)]
        after = sum(i.size for i in images.by_id.values())
        return json_response(
            {"ImagesDeleted": deleted or None, "SpaceReclaimed": max(before - after, 0)}
        )

    # -- push ---------------------------------------------------------------------------------

    async def push(req: Request) -> Response | None:
        name = req.params["name"]
        tag_ = req.arg("tag") or ""
        try:
            ref = parse(name)
            if tag_:
                ref = ref.with_tag(check_tag(tag_))
        except ReferenceError as exc:
            raise InvalidParameter(str(exc)) from None
        if ref.digest:
            raise InvalidParameter("cannot push a digest reference")
        from tether.images.push import push as do_push

        tags = [ref.tagged_or_latest()]
        if not ref.tag and not tag_:
            # dockerd: no tag is every tag of the repository (`push --all-tags`).
            tags = sorted(
                (parse(t) for i in images.all() for t in i.repo_tags if parse(t).name == ref.name),
                key=lambda r: r.tag,
            )
        if not tags or images.lookup(tags[0].familiar()) is None:
            raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
        platform = _platform(req)
        if platform is not None:
            for t in tags:
                img = images.find(t.familiar())
                archive.check_platform(t.familiar(), platform, img.platform)
        await start_stream(req, "application/json")
        progress = Progress(lambda data: write_chunk(req, data))
        try:
            for t in tags:
                await do_push(images, registries, t, _auth(req), progress)
        except TetherError as exc:
            await progress.error(exc.message)
        await end_stream(req)
        return None

    # -- save, load ---------------------------------------------------------------------------

    async def save(req: Request) -> Response | None:
        names = [req.params["name"]] if "name" in req.params else list(req.query.get("names", []))
        if not names:
            raise InvalidParameter("no images to save: give names=")
        items = archive.select(images, names)
        platform = _platform(req)
        if platform is not None:
            for item in items:
                name = item.tags[0].familiar() if item.tags else item.image.id
                archive.check_platform(name, platform, item.image.platform)
        await start_stream(req, "application/x-tar")
        async for chunk in archive.save_stream(images, items):
            await write_chunk(req, chunk)
        await end_stream(req)
        return None

    async def load(req: Request) -> Response | None:
        quiet = req.flag("quiet")
        platform = _platform(req)
        fd, tmp = tempfile.mkstemp(prefix="load-", dir=images.content.tmpdir)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in req.body_chunks():
                    f.write(chunk)
            if os.path.getsize(tmp) == 0:
                raise InvalidParameter("unexpected EOF")
            await start_stream(req, "application/json")
            progress = Progress(lambda data: write_chunk(req, data))
            try:
                lines = await archive.load(images, tmp, progress, quiet, platform)
                for line in lines:
                    await progress.stream(line + "\n")
            except TetherError as exc:
                await progress.error(exc.message)
            await end_stream(req)
        finally:
            os.unlink(tmp)
        return None

    # -- auth ---------------------------------------------------------------------------------

    async def auth(req: Request) -> Response:
        try:
            doc = json.loads(req.body or b"{}")
        except ValueError as exc:
            raise InvalidParameter(f"invalid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidParameter("invalid JSON: not an object")
        cfg = AuthConfig(
            str(doc.get("username") or ""),
            str(doc.get("password") or ""),
            str(doc.get("identitytoken") or ""),
            str(doc.get("registrytoken") or ""),
            str(doc.get("serveraddress") or ""),
        )
        domain = registry_of(cfg.serveraddress)
        last: TetherError | None = None
        for ep in registries.endpoints(domain, push=True):
            repo = registries.repository(ep, "", cfg, ())
            try:
                await repo.ping()
                return json_response({"Status": "Login Succeeded", "IdentityToken": ""})
            except Unauthorized:
                raise
            except TetherError as exc:
                if repo.transport_ok:
                    raise
                last = exc
        assert last is not None
        raise last

    router.add("GET", "/images/json", list_)
    router.add("POST", "/images/create", create, stream_body=True)
    router.add("GET", "/images/get", save)
    router.add("POST", "/images/load", load, stream_body=True)
    router.add("POST", "/images/prune", prune)
    router.add("GET", "/images/{name*}/json", inspect)
    router.add("GET", "/images/{name*}/history", history)
    router.add("POST", "/images/{name*}/tag", tag)
    router.add("POST", "/images/{name*}/push", push)
    router.add("GET", "/images/{name*}/get", save)
    router.add("DELETE", "/images/{name*}", remove)
    router.add("POST", "/auth", auth)

    from tether.daemon import routes_build

    routes_build.register(router, daemon)


def _ref_match(patterns: list[str], repo_tag: str) -> bool:
    """docker's reference filter: path.Match on the familiar name, or on name:tag."""
    name = repo_tag.rsplit(":", 1)[0]
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(repo_tag, p) for p in patterns)


async def _list_tags(daemon: Daemon, ref: Reference, auth: AuthConfig | None) -> list[str]:
    """GET /v2/<name>/tags/list on the first endpoint that answers."""
    from tether.images.pull import translate
    from tether.images.registry import RegistryError, TransportError

    last: TetherError | None = None
    for ep in daemon.registries.endpoints(ref.domain):
        repo = daemon.registries.repository(ep, ref.path, auth, ("pull",))
        try:
            resp = await repo.request("GET", repo.url("tags/list"))
            await repo.check(resp, (200,))
            body = await resp.read()
            resp.release()
            tags = json.loads(body).get("tags") or []
            return sorted(str(t) for t in tags)
        except TransportError as exc:
            last = exc
        except RegistryError as exc:
            raise translate(exc, ref) from None
    assert last is not None
    raise last
