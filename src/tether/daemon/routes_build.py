"""API routes for /build and /build/prune (the builder: tether.images.build).

POST /build takes the build context as a tar archive in the body (the CLI applies
.dockerignore), with docker's query parameters: t (repeated), dockerfile, buildargs and
labels (JSON objects), cachefrom (a JSON array), target, networkmode, nocache, q, rm, forcerm,
pull, platform.  The answer is docker's JSON message stream: the steps as {"stream": ...},
the image id as {"aux": {"ID": ...}}, a failure as the last message.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from typing import TYPE_CHECKING, Any

from tether.daemon.http import (
    Request,
    Response,
    Router,
    end_stream,
    json_response,
    start_stream,
    write_chunk,
)
from tether.errors import InvalidParameter, TetherError
from tether.images import oci
from tether.images.build import Builder, BuildError, BuildOptions
from tether.images.progress import Progress
from tether.images.reference import ReferenceError, parse

if TYPE_CHECKING:
    from tether.daemon.app import Daemon

NETWORK_MODES = ("default", "bridge", "host", "none")


def _json_map(req: Request, name: str) -> dict[str, str]:
    text = req.arg(name)
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidParameter(f"invalid {name} parameter: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidParameter(f"invalid {name} parameter: not a JSON object")
    return {str(k): "" if v is None else str(v) for k, v in doc.items()}


def _json_list(req: Request, name: str) -> list[str]:
    """dockerd's cachefrom: a JSON array of image names."""
    text = req.arg(name)
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidParameter(f"invalid {name} parameter: {exc}") from None
    if not isinstance(doc, list) or not all(isinstance(x, str) for x in doc):
        raise InvalidParameter(f"invalid {name} parameter: not a JSON array of strings")
    return list(doc)


def options(req: Request, daemon: Daemon) -> BuildOptions:
    tags = []
    for t in req.query.get("t", []):
        try:
            ref = parse(t)
        except ReferenceError as exc:
            raise InvalidParameter(f'invalid reference format: "{t}": {exc}') from None
        if ref.digest:
            raise InvalidParameter(f"invalid tag {t}: a build cannot be tagged with a digest")
        tags.append(ref.tagged_or_latest())
    network = req.arg("networkmode") or "default"
    if network not in NETWORK_MODES:
        daemon.networks.find(network)  # No such network: <name>, as docker's 404
    if network.startswith("container:"):
        raise InvalidParameter("a build's RUN steps cannot share a container's network")
    platform = req.arg("platform") or ""
    if req.arg("remote"):
        raise InvalidParameter(
            "tether's builder takes the build context in the request body; remote contexts "
            "(URLs, git repositories) are not fetched"
        )

    def flag(name: str, default: bool) -> bool:
        v = req.arg(name)
        return default if v is None else v.lower() in ("1", "true", "yes")

    return BuildOptions(
        tags=tags,
        dockerfile=req.arg("dockerfile") or "Dockerfile",
        build_args=_json_map(req, "buildargs"),
        target=req.arg("target") or "",
        network="default" if network == "bridge" else network,
        no_cache=flag("nocache", False),
        quiet=flag("q", False),
        labels=_json_map(req, "labels"),
        pull=flag("pull", False),
        platform=oci.parse_platform(platform) if platform else None,
        remove=flag("rm", True),
        force_remove=flag("forcerm", False),
        cache_from=_json_list(req, "cachefrom"),
    )


def register(router: Router, daemon: Daemon) -> None:
    builder = Builder(daemon)

    async def build(req: Request) -> Response | None:
        opts = options(req, daemon)
        work = tempfile.mkdtemp(prefix="context-", dir=daemon.images.content.tmpdir)
        try:
            archive = os.path.join(work, "context.tar")
            with open(archive, "wb") as f:
                async for chunk in req.body_chunks():
                    f.write(chunk)
            context = os.path.join(work, "context")
            os.makedirs(context)
            if os.path.getsize(archive):
                r = await asyncio.to_thread(
                    subprocess.run,
                    ["tar", "-x", "-f", archive, "-C", context, "--no-same-owner"],
                    capture_output=True,
                    text=True,
                )
                if r.returncode != 0:
                    lines = r.stderr.strip().splitlines()
                    raise InvalidParameter(
                        f"the build context is not a tar archive: {lines[0] if lines else ''}"
                    )
            os.unlink(archive)
            await start_stream(req, "application/json")
            progress = Progress(lambda data: write_chunk(req, data))
            try:
                await builder.build(context, opts, progress)
            except BuildError as exc:
                detail: dict[str, Any] = {"message": exc.message}
                if exc.code is not None:
                    detail["code"] = exc.code
                await progress.send({"errorDetail": detail, "error": exc.message})
            except TetherError as exc:
                await progress.error(exc.message)
            await end_stream(req)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return None

    async def prune(req: Request) -> Response:
        all_ = (req.arg("all") or "").lower() in ("1", "true", "yes")
        keys, space = builder.cache.prune(all_)
        return json_response({"CachesDeleted": keys or None, "SpaceReclaimed": space})

    router.add("POST", "/build", build, stream_body=True)
    router.add("POST", "/build/prune", prune)
