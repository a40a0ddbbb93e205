"""Errors that cross the API, each carrying the HTTP status Docker's engine would use.

The message is the one-line text Docker prints (without the "Error response from daemon: "
prefix, which the CLI adds), so users see the words they already know.
"""

from __future__ import annotations


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


class SubnetTaken(Forbidden):
    """A subnet a global network wanted is held by another (claimed first in the cluster)."""

    def __init__(self, subnet: str) -> None:
        super().__init__("Pool overlaps with other one on this address space")
        self.subnet = subnet


class ClaimTaken(Forbidden):
    """A value that must be unique across the cluster (a VXLAN id) is already held."""

    def __init__(self, claim: str, message: str) -> None:
        super().__init__(message)
        self.claim = claim
