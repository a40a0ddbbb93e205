"""Images made by hand for the tests and the bench: layer archives, docker-save tarballs and
OCI layouts, written here byte by byte so that what tether reads is not what tether wrote.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from typing import Any


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(
    files: dict[str, bytes] | None = None,
    dirs: list[str] | None = None,
    symlinks: dict[str, str] | None = None,
    whiteouts: list[str] | None = None,
    opaque: list[str] | None = None,
) -> bytes:
    """An uncompressed layer archive (OCI whiteouts: .wh.NAME, .wh..wh..opq)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs or []:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in (files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        for name in whiteouts or []:
            parent, _, base = name.rpartition("/")
            info = tarfile.TarInfo(f"{parent}/.wh.{base}" if parent else f".wh.{base}")
            tar.addfile(info, io.BytesIO(b""))
        for d in opaque or []:
            info = tarfile.TarInfo(f"{d}/.wh..wh..opq")
            tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def config(
    layers: list[bytes],
    arch: str = "amd64",
    variant: str = "",
    cmd: list[str] | None = None,
    env: list[str] | None = None,
) -> bytes:
    doc: dict[str, Any] = {
        "architecture": arch,
        "config": {"Cmd": cmd or ["sh"], "Env": env or ["PATH=/bin"]},
        "created": "2024-01-02T03:04:05Z",
        "history": [
            {"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"}
            for i in range(len(layers))
        ],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(x) for x in layers]},
    }
    if variant:
        doc["variant"] = variant
    return json.dumps(doc, separators=(",", ":")).encode()


def docker_save(path: str, layers: list[bytes], cfg: bytes, tags: list[str]) -> None:
    """A docker-save tarball (Docker 25's layout: blobs named by digest, manifest.json)."""
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(f"blobs/sha256/{sha256(cfg)[7:]}", cfg)
        for data in layers:
            add(f"blobs/sha256/{sha256(data)[7:]}", data)
        manifest = [
            {
                "Config": f"blobs/sha256/{sha256(cfg)[7:]}",
                "RepoTags": tags,
                "Layers": [f"blobs/sha256/{sha256(x)[7:]}" for x in layers],
            }
        ]
        add("manifest.json", json.dumps(manifest).encode())


def oci_index_layout(
    directory: str, images: list[tuple[dict[str, str], list[bytes], bytes]], tag: str
) -> str:
    """An OCI layout holding one index (tagged `tag`) of several platform images (gzip
    layers); returns the index's digest."""
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes) -> str:
        d = sha256(data)
        with open(os.path.join(blobs, d[7:]), "wb") as f:
            f.write(data)
        return d

    entries = []
    for platform, layers, cfg in images:
        compressed = [gz(x) for x in layers]
        for c in compressed:
            put(c)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": put(cfg),
                    "size": len(cfg),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256(c),
                        "size": len(c),
                    }
                    for c in compressed
                ],
            }
        ).encode()
        entries.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(manifest),
                "size": len(manifest),
                "platform": platform,
            }
        )
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }
    ).encode()
    index_digest = put(index)
    top = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": index_digest,
                "size": len(index),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump(top, f)
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    return index_digest


def busybox_layer(busybox_tar: str) -> bytes:
    with open(busybox_tar, "rb") as f:
        return f.read()
