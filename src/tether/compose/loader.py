"""From compose files on disk to a checked Project: find, read, merge, interpolate, validate.

YAML is read as YAML 1.2 (ruamel.yaml), like docker compose's go-yaml v3: `- 22:22` stays
the string "22:22" instead of PyYAML's base-60 integer 1342, and `yes` stays a string.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tether.compose import checks, model, schema, support
from tether.compose.interpolate import InterpolationError, interpolate, parse_env_file
from tether.compose.model import ComposeError, Project

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
# Sequences that several files add to (compose's merge rules); the others replace.
APPENDED = {"ports", "expose", "dns", "dns_search", "dns_opt", "extra_hosts", "env_file"}


def find_default(start: str) -> str:
    """compose.yaml (or its older names) in the folder or the nearest parent that has one."""
    d = os.path.abspath(start)
    while True:
        for name in DEFAULT_FILES:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
        parent = os.path.dirname(d)
        if parent == d:
            raise ComposeError("no configuration file provided: not found")
        d = parent


def read_yaml(path: str) -> dict[str, Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ComposeError(f"open {path}: no such file or directory") from None
    except IsADirectoryError:
        raise ComposeError(f"read {path}: is a directory") from None
    try:
        doc = YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise ComposeError(f"{path}: yaml: {line}{problem}") from None
    except YAMLError as exc:
        raise ComposeError(f"{path}: yaml: {exc}") from None
    if doc is None:
        raise ComposeError(f"{path}: empty compose file")
    if not isinstance(doc, dict):
        raise ComposeError(f"{path}: Top-level object must be a mapping")
    return doc


def _as_mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value or []:
        k, sep, v = str(item).partition("=")
        out[k] = v if sep else None
    return out


def _as_map_form(value: Any) -> dict[str, Any]:
    """networks/depends_on: a list of names is the map form with empty settings."""
    return dict(value) if isinstance(value, dict) else {str(n): None for n in value or []}


def merge(base: Any, over: Any, key: str = "") -> Any:
    """compose's override rules, enough for `-f base.yaml -f override.yaml`."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, str(k)) if k in base else v
        return out
    mergeable = isinstance(base, (dict, list)) and isinstance(over, (dict, list))
    if key in ("networks", "depends_on") and mergeable:
        if isinstance(base, list) and isinstance(over, list):
            return base + [n for n in over if n not in base]
        return {**_as_map_form(base), **_as_map_form(over)}
    if key in ("environment", "labels") and mergeable:
        return {**_as_mapping(base), **_as_mapping(over)}
    if key in APPENDED and isinstance(base, list) and isinstance(over, list):
        return base + [x for x in over if x not in base]
    return over


def environment(
    working_dir: str, env_files: list[str], environ: Mapping[str, str]
) -> dict[str, str]:
    """Variables for interpolation: the shell's win over the .env file's."""
    files = env_files or [os.path.join(working_dir, ".env")]
    values: dict[str, str] = {}
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            if env_files:
                raise ComposeError(f"couldn't find env file: {path}") from None
            continue
        try:
            values.update(parse_env_file(text, {**values, **environ}))
        except InterpolationError as exc:
            raise ComposeError(f"failed to read {path}: {exc}") from None
    values.update(environ)
    return values


def load(
    files: list[str],
    project_name: str | None = None,
    project_dir: str | None = None,
    env_files: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Project:
    """Everything `up` needs from the files, checked; nothing touches the daemon."""
    environ = dict(os.environ if environ is None else environ)
    cwd = cwd or os.getcwd()
    paths = [os.path.abspath(os.path.join(cwd, f)) for f in files] or [find_default(cwd)]
    working_dir = os.path.abspath(project_dir) if project_dir else os.path.dirname(paths[0])
    env = environment(working_dir, [os.path.join(cwd, f) for f in env_files or []], environ)

    document: dict[str, Any] = {}
    warnings: list[str] = []
    for path in paths:
        part = read_yaml(path)
        if isinstance(part, dict) and "version" in part:
            # docker compose v2's words (the key is read by nothing since the spec merged).
            warnings.append(
                f"{path}: the attribute `version` is obsolete, it will be ignored, please "
                "remove it to avoid potential confusion"
            )
        document = merge(document, part)
    shown = os.path.relpath(paths[0], cwd) if len(paths) == 1 else ", ".join(paths)

    def warn(message: str) -> None:
        if message not in warnings:
            warnings.append(message)

    try:
        document = interpolate(document, env, warn)
    except InterpolationError as exc:
        raise ComposeError(str(exc)) from None
    schema.validate(document, shown)
    for key in support.unsupported(document):
        warn(f"{key} is not supported by tether yet and is ignored")
    for message in support.special_cases(document):
        warn(message)

    name = (
        project_name
        or environ.get("COMPOSE_PROJECT_NAME")
        or (str(document["name"]) if document.get("name") else "")
    )
    if name:
        model.check_project_name(name)
    else:
        name = model.normalize_project_name(os.path.basename(working_dir))
        if not name:
            raise ComposeError(
                f'project name must not be empty: cannot derive one from "{working_dir}", use -p'
            )

    def read_file(rel: str) -> str:
        with open(os.path.join(working_dir, rel), encoding="utf-8") as f:
            return f.read()

    project = model.build(document, name, working_dir, paths, env, read_file, warnings)
    checks.check_services(project)
    project.order = checks.start_order(project)
    return project
