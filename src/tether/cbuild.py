"""Building tether's small C parts on first use: tether-shim, the DNS fast path and the
encrypted overlay's data path (tether-crypt's per-frame work, linked with libcrypto).

Each build is cached under a name carrying the hash of its source (and, for the extension,
the Python version), so an upgrade never runs a stale binary and many daemons share one
build; concurrent builders race harmlessly through an atomic rename.  `./run install` builds
both ahead of time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from types import ModuleType

from tether.errors import SystemFailure

CACHE_DIR = os.environ.get("TETHER_CACHE", "/var/cache/tether")


def _digest(source: str, extra: str = "") -> str:
    with open(source, "rb") as f:
        return hashlib.sha256(f.read() + extra.encode()).hexdigest()[:16]


def build(source: str, name: str, extension: bool = False, libs: tuple[str, ...] = ()) -> str:
    """The path of the built program (or CPython extension module), building it if needed.
    `libs`: libraries to link (["crypto"] for -lcrypto)."""
    if extension:
        tag = sys.implementation.cache_tag + " ".join(libs)
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
            *[f"-l{lib}" for lib in libs],
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


def load_extension(source: str, name: str, libs: tuple[str, ...] = ()) -> ModuleType:
    """The CPython extension built from `source` (building it if needed), imported."""
    path = build(source, name, extension=True, libs=libs)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemFailure(f"{path} is not a loadable extension")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
