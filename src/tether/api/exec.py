"""Request objects of POST /containers/{id}/exec and POST /exec/{id}/start."""

from __future__ import annotations

from tether.api.decode import Model
from tether.api.networks import check_text
from tether.errors import InvalidParameter
from tether.textcheck import check_env, go_quote


class ExecCreate(Model):
    go_name = "container.ExecOptions"
    go_types = {"ConsoleSize": "*[2]uint"}
    User: str | None = None
    Privileged: bool | None = None
    Tty: bool | None = None
    ConsoleSize: list[int] | None = None
    AttachStdin: bool | None = None
    AttachStderr: bool | None = None
    AttachStdout: bool | None = None
    Detach: bool | None = None
    DetachKeys: str | None = None
    Env: list[str] | None = None
    WorkingDir: str | None = None
    Cmd: list[str] | None = None

    def validate(self) -> None:
        check_text("user", self.User)
        check_text("working directory", self.WorkingDir)
        for e in self.Env or []:
            try:
                check_env(e)
            except ValueError as exc:
                raise InvalidParameter(str(exc)) from None
        for arg in self.Cmd or []:
            if "\x00" in arg:
                raise InvalidParameter(
                    f"invalid argument {go_quote(arg)}: NUL characters cannot be passed to a process"
                )


class ExecStart(Model):
    go_name = "container.ExecStartOptions"
    go_types = {"ConsoleSize": "*[2]uint"}
    Detach: bool | None = None
    Tty: bool | None = None
    ConsoleSize: list[int] | None = None
