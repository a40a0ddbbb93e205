"""Loading the C fast path (_fastdns.c), or None: the server then runs its Python loop."""

from __future__ import annotations

import logging
import os
from types import ModuleType

from tether.cbuild import build, load_extension

log = logging.getLogger("tether.dns")
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fastdns.c")


def load() -> ModuleType | None:
    if os.environ.get("TETHER_DNS_PURE_PYTHON"):
        return None
    try:
        return load_extension(SOURCE, "_fastdns")
    except Exception as exc:
        log.warning("DNS fast path unavailable, answering from Python only: %s", exc)
        return None


if __name__ == "__main__":
    print(build(SOURCE, "_fastdns", extension=True))
