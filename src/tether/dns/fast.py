"""Loading the C fast path (_fastdns.c), or None: the server then runs its Python loop."""

from __future__ import annotations

import importlib.util
import logging
import os
from types import ModuleType

from tether.cbuild import build

log = logging.getLogger("tether.dns")
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fastdns.c")


def load() -> ModuleType | None:
    if os.environ.get("TETHER_DNS_PURE_PYTHON"):
        return None
    try:
        path = build(SOURCE, "_fastdns", extension=True)
        spec = importlib.util.spec_from_file_location("_fastdns", path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception as exc:
        log.warning("DNS fast path unavailable, answering from Python only: %s", exc)
        return None


if __name__ == "__main__":
    print(build(SOURCE, "_fastdns", extension=True))
