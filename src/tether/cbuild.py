"""Building tether's two small C parts on first use: tether-shim and the DNS fast path.

Each build is cached under a name carrying the hash of its source (and, for the extension,
the Python version), so an upgrade never runs a stale binary and many daemons share one
build; concurrent builders race harmlessly through an atomic rename.  `./run install` builds
both ahead of time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from tether.errors import SystemFailure

CACHE_DIR = os.environ.get("TETHER_CACHE", "/var/cache/tether")


def _digest(source: str, extra: str = "") -> str:
    with open(source, "rb") as f:
        return hashlib.sha256(f.read() + extra.encode()).hexdigest()[:16]


def build(source: str, name: str, extension: bool = False) -> str:
    """The path of the built program (or CPython extension module), building it if needed."""
    if extension:
        tag = sys.implementation.cache_tag
        path = os.path.join(
            CACHE_DIR, f"{name}-{_digest(source, tag)}{sysconfig.get_config_var('EXT_SUFFIX')}"
        )
    else:
        path = os.path.join(CACHE_DIR, f"{name}-{_digest(source)}")
    if os.path.exists(path):
        return path
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemFailure(f"building {name} needs a C compiler (apt-get install gcc libc6-dev)")
    os.makedirs(CACHE_DIR, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=CACHE_DIR)
    os.close(fd)
    if extension:
        args = [
            cc,
            "-O2",
            "-shared",
            "-fPIC",
            f"-I{sysconfig.get_paths()['include']}",
            "-o",
            tmp,
            source,
        ]
    else:
        args = [cc, "-O2", "-static", "-Wall", "-o", tmp, source]
    try:
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemFailure(f"building {name} failed: {r.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
