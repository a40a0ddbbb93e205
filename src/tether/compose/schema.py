"""Validation against the compose specification's own JSON schema.

The schema is compose-spec/compose-spec's `schema/compose-spec.json` as vendored by
check-jsonschema (a maintained PyPI package that refreshes it every release), so tether
follows the specification without keeping a copy of its own.  Errors read like docker
compose's: the dotted path of the offending key, then what is wrong with it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import pathlib
import re
from importlib import resources
from typing import Any

from tether.compose.model import ComposeError

SCHEMA_PACKAGE = "check_jsonschema.builtin_schemas.vendor"
SCHEMA_FILE = "compose-spec.json"
TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


class SchemaError(ComposeError):
    pass


def schema_path() -> Any:
    """The vendored file, found without importing check_jsonschema (its __init__ pulls in
    click and requests: 150 ms that a `compose ps` should not pay)."""
    spec = importlib.util.find_spec(SCHEMA_PACKAGE.split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        return resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE)
    root = pathlib.Path(next(iter(spec.submodule_search_locations)))
    return root.joinpath(*SCHEMA_PACKAGE.split(".")[1:], SCHEMA_FILE)


@functools.cache
def _validator() -> Any:
    import jsonschema

    text = schema_path().read_text()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def dotted(path: Any) -> str:
    return ".".join(str(p) for p in path)


def _describe(err: Any) -> str:
    where = dotted(err.absolute_path)
    kind = err.validator
    if kind in ("additionalProperties", "unevaluatedProperties"):
        names = _unexpected(err)
        what = ", ".join(f"'{n}'" for n in names) or "?"
        noun = "property" if len(names) == 1 else "properties"
        prefix = f"{where} " if where else ""
        return f"{prefix}additional {noun} {what} not allowed"
    if kind == "type":
        types = (
            err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        )
        words = " or ".join(TYPE_WORDS.get(str(t), str(t)) for t in types)
        return f"{where or '(root)'} must be {words}"
    if kind == "required":
        missing = re.findall(r"'([^']*)' is a required property", err.message)
        return f"{where or '(root)'} missing property '{missing[0] if missing else '?'}'"
    if kind == "enum":
        allowed = ", ".join(json.dumps(v) for v in err.validator_value)
        return f"{where} must be one of {allowed}"
    if kind in ("oneOf", "anyOf"):
        return f"{where} {_alternatives(err)}"
    if kind == "pattern":
        return f'{where} "{err.instance}" does not match the pattern {err.validator_value}'
    if kind == "uniqueItems":
        return f"{where} contains duplicate items"
    return f"{where or '(root)'}: {err.message}"


def _unexpected(err: Any) -> list[str]:
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        props = err.schema.get("properties") or {}
        patterns = list((err.schema.get("patternProperties") or {}).keys())
        return [
            str(k)
            for k in err.instance
            if k not in props and not any(re.search(p, str(k)) for p in patterns)
        ]
    inside = re.search(r"\((.*) (?:was|were) unexpected\)", err.message)
    return re.findall(r"'([^']*)'", inside.group(1) if inside else err.message)


def _alternatives(err: Any) -> str:
    """'must be a string or a list', from the branches' own type constraints."""
    words: list[str] = []
    for sub in err.validator_value:
        t = sub.get("type")
        if t is None and "$ref" in sub:
            ref = str(sub["$ref"]).rsplit("/", 1)[-1]
            t = {"list_of_strings": "array", "list_or_dict": "object"}.get(ref)
        for one in t if isinstance(t, list) else [t] if t else []:
            w = TYPE_WORDS.get(str(one), str(one))
            if w not in words:
                words.append(w)
    return "must be " + " or ".join(words) if words else "does not match any allowed form"


def _best(errors: list[Any]) -> Any:
    from jsonschema.exceptions import best_match, relevance

    # Prefer errors about a key that should not be there, then the deepest path: those name
    # the exact key a user has to fix.
    def key(e: Any) -> Any:
        extra = e.validator in ("additionalProperties", "unevaluatedProperties")
        return (not extra, -len(e.absolute_path), relevance(e))

    leaf = best_match(errors, key=key)
    return leaf


def _cache_marker(document: Any) -> str | None:
    """A file whose existence says: this exact document passed this exact schema.

    jsonschema costs ~90 ms to import and the schema ~15 ms to compile; `compose exec`,
    `ps` and `logs` re-read an unchanged file, so a valid document is remembered.
    """
    import hashlib
    import os

    try:
        st = os.stat(schema_path())
    except OSError:
        return None
    key = json.dumps([document, st.st_size, st.st_mtime_ns], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()
    base = os.environ.get("TETHER_CACHE", "/var/cache/tether")
    return os.path.join(base, "compose-valid", digest)


def validate(document: Any, source: str) -> None:
    import os

    marker = _cache_marker(document)
    if marker is not None and os.path.exists(marker):
        return
    errors = list(_validator().iter_errors(document))
    if not errors:
        if marker is not None:
            try:
                folder = os.path.dirname(marker)
                os.makedirs(folder, exist_ok=True)
                old = os.listdir(folder)
                if len(old) > 512:  # bounded: start over rather than grow forever
                    for name in old:
                        os.unlink(os.path.join(folder, name))
                with open(marker, "w"):
                    pass
            except OSError:
                pass  # a read-only cache only costs time
        return
    err = _best(errors)
    raise SchemaError(f"validating {source}: {_describe(err)}")
