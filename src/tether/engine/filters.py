"""Docker's list filters (`--filter key=value`, sent as JSON {"key": ["v", ...]})."""

from __future__ import annotations

import json
import re
from typing import Any

from tether.errors import InvalidParameter

Filters = dict[str, list[str]]


def parse(raw: str | None) -> Filters:
    """The API's `filters` query parameter: {"k":["v"]} or the legacy {"k":{"v":true}}."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidParameter(f"invalid filter '{raw}'") from None
    if not isinstance(data, dict):
        raise InvalidParameter(f"invalid filter '{raw}'")
    out: Filters = {}
    for key, val in data.items():
        if isinstance(val, dict):
            out[key] = [k for k, on in val.items() if on]
        elif isinstance(val, list):
            out[key] = [str(v) for v in val]
        else:
            out[key] = [str(val)]
    return out


def check_keys(filters: Filters, allowed: set[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidParameter(f"invalid filter '{key}'")


def regex_match(patterns: list[str], value: str) -> bool:
    """Docker's Match: any pattern found in value as a regular expression."""
    for p in patterns:
        try:
            if re.search(p, value):
                return True
        except re.error:
            if p in value:
                return True
    return False


def label_match(patterns: list[str], labels: dict[str, Any]) -> bool:
    """Every `key` or `key=value` must be present (Docker ANDs label filters)."""
    for p in patterns:
        key, sep, val = p.partition("=")
        if key not in labels:
            return False
        if sep and str(labels[key]) != val:
            return False
    return True


def bool_value(filters: Filters, key: str) -> bool | None:
    vals = filters.get(key)
    if not vals:
        return None
    v = vals[-1].lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise InvalidParameter(f"Invalid filter '{key}={vals[-1]}'")
