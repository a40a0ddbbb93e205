"""The Engine API version of the request being served (a context variable: one per task).

Set by the HTTP server for every request (/v1.44/... or the newest); read where a response's
shape differs by version (container_views: short ids among the aliases before 1.44).
"""

from __future__ import annotations

from contextvars import ContextVar

from tether import API_VERSION

# Outside a request (and for requests without /vX.Y): the newest, as dockerd answers them.
requested: ContextVar[tuple[int, int]] = ContextVar(
    "requested", default=(int(API_VERSION.split(".")[0]), int(API_VERSION.split(".")[1]))
)


def at_least(major: int, minor: int) -> bool:
    return requested.get() >= (major, minor)
