"""Manifests, indexes and image configs (Docker's and the OCI's), pure.

What a registry and a `docker save` archive hold: a manifest names one config blob and the
layer blobs; an index (a Docker "manifest list") names one manifest per platform.  The JSON
tether writes is laid out as Go's encoding/json lays it out (compact, struct field order,
<>& escaped), so that what it saves, loads and pushes has the digests docker's tools expect.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from tether.errors import InvalidParameter

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
)

MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
LAYERS = (
    DOCKER_LAYER,
    DOCKER_FOREIGN_LAYER,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    *OCI_NONDIST,
)
# What a pull asks a registry for, as dockerd's Accept header.
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"


def go_json(value: Any) -> bytes:
    """Go's json.Marshal: compact, and <, > and & escaped (keys keep the given order)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def go_json_indent(value: Any, indent: str = "   ") -> bytes:
    """json.MarshalIndent(v, "", indent): distribution's schema2 manifests use 3 spaces."""
    text = json.dumps(value, indent=len(indent), ensure_ascii=False, separators=(",", ": "))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] | None = None
    urls: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            out["urls"] = self.urls
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.platform:
            out["platform"] = self.platform
        return out

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Descriptor:
        if not isinstance(doc, dict):
            raise InvalidParameter(f"invalid {where}: a descriptor is not an object")
        digest = doc.get("digest")
        size = doc.get("size")
        if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
            raise InvalidParameter(f"invalid {where}: bad digest {digest!r}")
        if not isinstance(size, int) or size < 0:
            raise InvalidParameter(f"invalid {where}: bad size {size!r}")
        return cls(
            str(doc.get("mediaType") or ""),
            digest,
            size,
            doc.get("platform") if isinstance(doc.get("platform"), dict) else None,
            doc.get("annotations") if isinstance(doc.get("annotations"), dict) else None,
            doc.get("urls") if isinstance(doc.get("urls"), list) else None,
        )


@dataclass
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass
class Index:
    media_type: str
    manifests: list[Descriptor]


def parse(data: bytes, content_type: str = "") -> Manifest | Index:
    """A manifest or an index, whatever the registry called it (its own mediaType wins)."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InvalidParameter(f"invalid manifest: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidParameter("invalid manifest: not a JSON object")
    media = str(doc.get("mediaType") or "") or content_type.split(";")[0].strip()
    if media in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) or doc.get("schemaVersion") == 1:
        raise InvalidParameter(
            "Docker Image Format v1 and Docker Image manifest version 2, schema 1 support "
            "has been removed. Suggest the author of the image to upgrade the image to "
            "image manifest version 2, schema 2. More information at "
            "https://docs.docker.com/go/deprecated-image-specs/"
        )
    if "manifests" in doc and media not in MANIFESTS:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise InvalidParameter("invalid index: manifests is not a list")
        return Index(media or OCI_INDEX, [Descriptor.from_json(m, "index entry") for m in items])
    if "config" in doc:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidParameter("invalid manifest: layers is not a list")
        return Manifest(
            media or OCI_MANIFEST,
            Descriptor.from_json(doc["config"], "manifest config"),
            [Descriptor.from_json(x, "manifest layer") for x in layers],
        )
    raise InvalidParameter(f"unsupported media type {media or 'unknown'}")


def host_platform() -> dict[str, str]:
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )
    out = {"os": "linux", "architecture": arch}
    if arch == "arm64":
        out["variant"] = "v8"
    return out


def parse_platform(text: str) -> dict[str, str]:
    """`linux/amd64`, `linux/arm64/v8`, `amd64`: containerd's platforms.Parse, simplified."""
    parts = [p.strip().lower() for p in text.split("/")]
    if not text or any(not p for p in parts) or len(parts) > 3:
        raise InvalidParameter(
            f'"{text}": unknown operating system or architecture: invalid argument'
        )
    archs = {
        "x86_64": "amd64",
        "x86-64": "amd64",
        "aarch64": "arm64",
        "armhf": "arm",
        "i386": "386",
    }
    if len(parts) == 1:
        if parts[0] in ("linux", "windows", "darwin", "freebsd"):
            return {"os": parts[0], "architecture": host_platform()["architecture"]}
        return {"os": "linux", "architecture": archs.get(parts[0], parts[0])}
    out = {"os": parts[0], "architecture": archs.get(parts[1], parts[1])}
    if len(parts) == 3:
        out["variant"] = parts[2]
    elif out["architecture"] == "arm64":
        out["variant"] = "v8"
    return out


def format_platform(p: dict[str, Any]) -> str:
    out = f"{p.get('os', 'linux')}/{p.get('architecture', '')}"
    if p.get("variant"):
        out += f"/{p['variant']}"
    return out


def platform_matches(want: dict[str, str], have: dict[str, Any] | None) -> bool:
    if not have:
        return False
    if have.get("os") != want.get("os") or have.get("architecture") != want.get("architecture"):
        return False
    wv, hv = want.get("variant", ""), str(have.get("variant") or "")
    if want.get("architecture") == "arm64":
        return (wv or "v8") == (hv or "v8")
    return not wv or wv == hv


def choose(index: Index, want: dict[str, str]) -> Descriptor | None:
    """The index entry for platform `want` (attestations and other platforms left out)."""
    for d in index.manifests:
        if d.annotations and "vnd.docker.reference.type" in d.annotations:
            continue  # BuildKit's attestation manifests
        if platform_matches(want, d.platform):
            return d
    return None


@dataclass
class ImageConfig:
    """The parts of an image config JSON tether reads; `raw` is the parsed document."""

    raw: dict[str, Any]
    diff_ids: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        c = self.raw.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def created(self) -> float:
        return parse_time(str(self.raw.get("created") or ""))

    @property
    def history(self) -> list[dict[str, Any]]:
        h = self.raw.get("history")
        return [x for x in h if isinstance(x, dict)] if isinstance(h, list) else []

    @property
    def platform(self) -> dict[str, str]:
        out = {
            "os": str(self.raw.get("os") or "linux"),
            "architecture": str(self.raw.get("architecture") or ""),
        }
        if self.raw.get("variant"):
            out["variant"] = str(self.raw["variant"])
        return out


def parse_config(data: bytes) -> ImageConfig:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InvalidParameter(f"invalid image config: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidParameter("invalid image config: not a JSON object")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidParameter("invalid rootfs in image configuration")
    diff_ids = rootfs.get("diff_ids") or []
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and d.startswith("sha256:") and len(d) == 71 for d in diff_ids
    ):
        raise InvalidParameter("invalid rootfs in image configuration")
    return ImageConfig(doc, list(diff_ids))


def make_config(
    config: dict[str, Any],
    diff_ids: list[str],
    history: list[dict[str, Any]],
    created: float | None = None,
    platform: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """An image config as docker writes one (compact; Go's field order)."""
    plat = platform or host_platform()
    doc: dict[str, Any] = {"architecture": plat["architecture"]}
    for key in ("author", "comment"):
        if extra and extra.get(key):
            doc[key] = extra[key]
    doc["config"] = config
    doc["created"] = format_time(time.time() if created is None else created)
    doc["history"] = history
    doc["os"] = plat.get("os", "linux")
    doc["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    if plat.get("variant"):
        doc["variant"] = plat["variant"]
    return go_json(doc)


def format_time(t: float) -> str:
    """RFC 3339 with nanoseconds trimmed as Go's time.RFC3339Nano does."""
    whole = int(t)
    frac = f"{t - whole:.9f}"[2:].rstrip("0")
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def parse_time(text: str) -> float:
    if not text:
        return 0.0
    import calendar

    main, _, rest = text.partition(".")
    frac = 0.0
    tz = ""
    if rest:
        digits = ""
        for i, ch in enumerate(rest):
            if ch.isdigit():
                digits += ch
            else:
                tz = rest[i:]
                break
        frac = float("0." + digits) if digits else 0.0
    else:
        for sep in ("Z", "+", "-"):
            idx = main.find(sep, 10)
            if idx > 0:
                main, tz = main[:idx], main[idx:]
                break
    try:
        base = calendar.timegm(time.strptime(main[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    offset = 0
    if tz and tz not in ("Z", "z"):
        sign = -1 if tz[0] == "-" else 1
        hh, _, mm = tz[1:].partition(":")
        try:
            offset = sign * (int(hh) * 3600 + int(mm or 0) * 60)
        except ValueError:
            offset = 0
    return base + frac - offset


def manifest_json(config: Descriptor, layers: list[Descriptor], media_type: str) -> bytes:
    """A Docker schema2 manifest laid out as distribution does (3-space indent), or an OCI
    manifest as containerd does (compact)."""
    if media_type == DOCKER_MANIFEST:
        doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.to_json(),
            "layers": [x.to_json() for x in layers],
        }
        return go_json_indent(doc)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [x.to_json() for x in layers],
    }
    return go_json(doc)


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Each layer's ChainID, as docker names layers in `rmi` output and `inspect`."""
    import hashlib

    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out
