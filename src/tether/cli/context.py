"""What every command gets: the API client (starting tetherd if nobody answers) and output."""

from __future__ import annotations

import os
import sys

from tether.client import (
    DEFAULT_ROOT,
    DEFAULT_SOCKET,
    ApiError,
    Client,
    DaemonUnavailable,
    start_daemon,
)

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


class CliError(Exception):
    """A failure to report as one line and an exit code (docker's 1 or 125)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Context:
    def __init__(self, host: str | None, debug: bool = False) -> None:
        from tether.client import socket_from_host

        self.explicit_host = host is not None or bool(os.environ.get("TETHER_HOST"))
        self.socket_path = socket_from_host(host or os.environ.get("TETHER_HOST"))
        self.debug = debug
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.socket_path)
        return self._client

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            return self.client.call(method, path, **kw)
        except DaemonUnavailable:
            self._autostart()
            return self.client.call(method, path, **kw)

    def open(self, method: str, path: str, **kw: Any) -> Any:
        try:
            return self.client.open(method, path, **kw)
        except DaemonUnavailable:
            self._autostart()
            return self.client.open(method, path, **kw)

    def _autostart(self) -> None:
        """No daemon on the default socket: start one and say so (docker would just fail)."""
        if self.explicit_host or self.socket_path != DEFAULT_SOCKET:
            raise CliError(
                f"Cannot connect to the tether daemon at unix://{self.socket_path}. "
                "Is the tether daemon running?"
            )
        root = os.environ.get("TETHER_ROOT", DEFAULT_ROOT)
        try:
            pid = start_daemon(self.socket_path, root)
        except DaemonUnavailable as exc:
            raise CliError(str(exc)) from None
        except PermissionError:
            raise CliError("tetherd needs root: run tether as root to start the daemon") from None
        sys.stderr.write(
            f"tether: no daemon was answering on unix://{self.socket_path}; started tetherd "
            f"(pid {pid}, logs in {os.path.join(root, 'tetherd.log')})\n"
        )


def api_error(exc: ApiError) -> CliError:
    return CliError(f"Error response from daemon: {exc.message}")
