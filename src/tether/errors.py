"""Errors that cross the API, each carrying the HTTP status Docker's engine would use.

The message is the one-line text Docker prints (without the "Error response from daemon: "
prefix, which the CLI adds), so users see the words they already know.
"""

from __future__ import annotations

# Docker's answer for an overlay network on a host that is not a swarm manager; the daemon
# gives it, and compose checks for it before it creates anything.
SWARM_MESSAGE = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to '
    "connect this node to swarm and try again."
)


class TetherError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(TetherError):
    status = 400


class NotFound(TetherError):
    status = 404


class Conflict(TetherError):
    status = 409


class Forbidden(TetherError):
    status = 403


class NotModified(TetherError):
    status = 304


class SystemFailure(TetherError):
    status = 500
