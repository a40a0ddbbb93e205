"""JSON for the CLI and the client, on CPython's _json accelerators directly.

Why not the json module: `import json` pulls in `re`, and the two cost about 17 ms of a
CLI start-up whose budget is 40 ms.  The C scanner and encoder that json uses underneath are
importable on their own; this module drives them (compact output, and a pretty printer that
lays out like Go's json encoder with 4-space indent, which docker inspect uses).
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


WHITESPACE = " \t\n\r"


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]


class DecodeError(ValueError):
    pass


def loads(text: str | bytes) -> Any:
    s = text.decode() if isinstance(text, bytes) else text
    i, n = 0, len(s)
    while i < n and s[i] in WHITESPACE:
        i += 1
    try:
        obj, end = _scan(s, i)
    except StopIteration as exc:
        raise DecodeError(f"invalid JSON at offset {exc.value}") from None
    while end < n and s[end] in WHITESPACE:
        end += 1
    if end != n:
        raise DecodeError(f"extra data at offset {end}")
    return obj


def _default(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_compact = _json.make_encoder(
    None, _default, _json.encode_basestring, None, ":", ",", False, False, True
)


def dumps(obj: Any) -> str:
    return "".join(_compact(obj, 0))


def pretty(obj: Any, indent: str = "    ") -> str:
    out: list[str] = []
    _pretty(obj, 0, indent, out)
    return "".join(out)


def _pretty(obj: Any, level: int, indent: str, out: list[str]) -> None:
    if isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        out.append("{\n")
        inner = indent * (level + 1)
        for i, (k, v) in enumerate(obj.items()):
            out.append(inner + _json.encode_basestring(str(k)) + ": ")
            _pretty(v, level + 1, indent, out)
            out.append(",\n" if i < len(obj) - 1 else "\n")
        out.append(indent * level + "}")
    elif isinstance(obj, list | tuple):
        if not obj:
            out.append("[]")
            return
        out.append("[\n")
        inner = indent * (level + 1)
        for i, v in enumerate(obj):
            out.append(inner)
            _pretty(v, level + 1, indent, out)
            out.append(",\n" if i < len(obj) - 1 else "\n")
        out.append(indent * level + "]")
    else:
        out.append(dumps(obj))
