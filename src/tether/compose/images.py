"""Compose's images: `build:` sections, `pull_policy`, and the images `up`, `build` and
`pull` make sure of (client-side, through the Engine API, as docker compose does).

    build: ./dir                      context only
    build:
      context: ./dir                  relative to the project directory
      dockerfile: Dockerfile.prod     relative to the context
      dockerfile_inline: |            or the Dockerfile itself
      args: {VERSION: "1.2"}          or a list of KEY=VALUE / KEY (from the environment)
      target: runtime
      network: host
      labels: {...}
      no_cache: true
      pull: true

A service with a build section and no `image` is named `<project>-<service>` (docker
compose v2's name).  `up` builds the image when it is missing (or always with --build) and
pulls a missing image otherwise (pull_policy: missing, the default; always, never, build).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.client import ApiError, quote
from tether.compose.model import ComposeError

if TYPE_CHECKING:
    from tether.compose.model import Project, Service
    from tether.compose.runner import Runner

PULL_POLICIES = ("always", "never", "missing", "if_not_present", "build", "daily", "weekly")


@dataclass
class BuildSpec:
    context: str
    dockerfile: str = "Dockerfile"
    dockerfile_inline: str = ""
    args: dict[str, str] = field(default_factory=dict)
    target: str = ""
    network: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    pull: bool = False


def _mapping(value: Any, where: str, env: dict[str, str]) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else _scalar(v) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, str] = {}
        for item in value:
            k, eq, v = str(item).partition("=")
            if eq:
                out[k] = v
            elif k in env:
                out[k] = env[k]
        return out
    raise ComposeError(f"{where} must be a mapping or a list")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def attach(
    svc: Service, raw: dict[str, Any], project: str, working_dir: str, env: dict[str, str]
) -> None:
    """Read the service's build section and pull_policy into it (model.build calls this)."""
    where = f"services.{svc.name}"
    policy = str(raw.get("pull_policy") or "")
    if policy and policy not in PULL_POLICIES:
        raise ComposeError(f"{where}.pull_policy: invalid pull policy {policy!r}")
    svc.pull_policy = "missing" if policy == "if_not_present" else policy
    spec = raw.get("build")
    if spec is None:
        return
    if isinstance(spec, str):
        spec = {"context": spec}
    if not isinstance(spec, dict):
        raise ComposeError(f"{where}.build must be a string or a mapping")
    context = str(spec.get("context") or ".")
    if context.startswith(("http://", "https://", "git@", "github.com/")):
        raise ComposeError(
            f"{where}.build.context: remote contexts ({context}) are not fetched by tether: "
            "clone it and give the directory"
        )
    if not os.path.isabs(context):
        context = os.path.normpath(os.path.join(working_dir, context))
    svc.build = BuildSpec(
        context=context,
        dockerfile=str(spec.get("dockerfile") or "Dockerfile"),
        dockerfile_inline=str(spec.get("dockerfile_inline") or ""),
        args=_mapping(spec.get("args"), f"{where}.build.args", env),
        target=str(spec.get("target") or ""),
        network=str(spec.get("network") or ""),
        labels=_mapping(spec.get("labels"), f"{where}.build.labels", env),
        no_cache=bool(spec.get("no_cache")),
        pull=bool(spec.get("pull")),
    )
    if not svc.image:
        svc.image = f"{project}-{svc.name}"
        svc.image_given = False


def render(svc: Service) -> dict[str, Any]:
    """The build section as `docker compose config` prints it."""
    b = svc.build
    assert b is not None
    out: dict[str, Any] = {"context": b.context}
    if b.dockerfile_inline:
        out["dockerfile_inline"] = b.dockerfile_inline
    else:
        out["dockerfile"] = b.dockerfile
    if b.args:
        out["args"] = dict(b.args)
    if b.labels:
        out["labels"] = dict(b.labels)
    if b.network:
        out["network"] = b.network
    if b.no_cache:
        out["no_cache"] = True
    if b.pull:
        out["pull"] = True
    if b.target:
        out["target"] = b.target
    return out


# -- what up, build and pull do ------------------------------------------------------------


def image_id(r: Runner, name: str) -> str | None:
    try:
        return str(r.api.call("GET", f"/images/{quote(name)}/json")["Id"])
    except ApiError as exc:
        if exc.status != 404:
            raise
        return None


def build(
    r: Runner,
    svc: Service,
    extra_args: dict[str, str] | None = None,
    no_cache: bool = False,
    pull: bool = False,
    quiet: bool = False,
) -> str:
    """Build the service's image through POST /build; its id."""
    from tether.cli.build import send
    from tether.cli.context import CliError

    b = svc.build
    assert b is not None
    if not os.path.isdir(b.context):
        raise ComposeError(f'service "{svc.name}": build context {b.context} is not a directory')
    if not quiet:  # -q: nothing at all, as docker compose
        r.progress("Image", svc.image, "Building")
    query: dict[str, Any] = {
        "t": [svc.image],
        "buildargs": {**b.args, **(extra_args or {})},
        "labels": {
            **b.labels,
            "com.docker.compose.project": r.project.name,
            "com.docker.compose.service": svc.name,
        },
        "target": b.target or None,
        "networkmode": b.network or "default",
        "nocache": no_cache or b.no_cache,
        "pull": pull or b.pull,
        "q": quiet,
        "rm": True,
    }
    dockerfile = None
    inline = None
    if b.dockerfile_inline:
        inline = b.dockerfile_inline.encode()
    else:
        dockerfile = (
            os.path.join(b.context, b.dockerfile)
            if not os.path.isabs(b.dockerfile)
            else b.dockerfile
        )
    try:
        ident = send(
            r.api, b.context, dockerfile, query, out=r.err, quiet=quiet, stdin_dockerfile=inline
        )
    except CliError as exc:
        raise ComposeError(f'failed to build service "{svc.name}": {exc.message}') from None
    if not quiet:
        r.progress("Image", svc.image, "Built")
    return ident


def pull(r: Runner, svc: Service, quiet: bool = False) -> str:
    from tether.cli.context import CliError
    from tether.cli.image import pull as cli_pull

    if not quiet:  # -q: nothing at all, as docker compose
        r.progress("Image", svc.image, "Pulling")
    out = r.err if not quiet else None
    try:
        cli_pull(r.api, svc.image, quiet=quiet or True, out=out)
    except CliError as exc:
        text = exc.message.removeprefix("Error response from daemon: ")
        raise ComposeError(f"Error response from daemon: {text}") from None
    if not quiet:
        r.progress("Image", svc.image, "Pulled")
    ident = image_id(r, svc.image)
    if ident is None:
        raise ComposeError(f"No such image: {svc.image}")
    return ident


def ensure(r: Runner, services: list[Service], build_policy: str = "") -> dict[str, str]:
    """Image ids by image name for `up`: built when missing (or always with --build, never
    with --no-build), pulled when missing, per pull_policy."""
    ids: dict[str, str] = {}
    for svc in services:
        if svc.image in ids:
            continue
        policy = svc.pull_policy or "missing"
        current = None if policy == "always" and svc.build is None else image_id(r, svc.image)
        wants_build = build_policy == "always" or policy == "build" or current is None
        if svc.build is not None and build_policy != "never" and wants_build:
            ids[svc.image] = build(r, svc)
            continue
        if current is None and policy in ("always", "missing", "daily", "weekly"):
            current = pull(r, svc)
        if current is None:
            hint = " (build it: tether compose build)" if svc.build is not None else ""
            raise ComposeError(
                f'service "{svc.name}": Error response from daemon: No such image: '
                f"{_familiar(svc.image)}{hint}"
            )
        ids[svc.image] = current
    return ids


def _familiar(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last or "@" in name else f"{name}:latest"


def build_all(
    r: Runner,
    names: list[str],
    extra_args: dict[str, str],
    no_cache: bool,
    pull_: bool,
    quiet: bool,
) -> int:
    project: Project = r.project
    for n in names:
        if n not in project.services:
            raise ComposeError(f"no such service: {n}")
    chosen = [project.services[n] for n in (names or list(project.services))]
    for svc in chosen:
        if svc.build is None:
            continue
        build(r, svc, extra_args, no_cache, pull_, quiet)
    return 0


def pull_all(
    r: Runner, names: list[str], quiet: bool, ignore_failures: bool, ignore_buildable: bool
) -> int:
    project: Project = r.project
    for n in names:
        if n not in project.services:
            raise ComposeError(f"no such service: {n}")
    chosen = [project.services[n] for n in (names or list(project.services))]
    failed = []
    for svc in chosen:
        if svc.build is not None and (not svc.image_given or ignore_buildable):
            if not quiet:
                r.progress("Image", svc.image, "Skipped - Image is already being built")
            continue
        if svc.pull_policy in ("never", "build"):
            if not quiet:
                r.progress("Image", svc.image, "Skipped")
            continue
        try:
            pull(r, svc, quiet)
        except ComposeError as exc:
            if svc.build is not None:
                r.warn(f"{exc}; {svc.name} will be built from its build section")
                continue
            if not ignore_failures:
                raise
            failed.append(svc.name)
            sys.stderr.write(f"{exc}\n")
    return 0
