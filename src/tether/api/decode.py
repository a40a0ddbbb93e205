"""JSON bodies into typed request objects, with dockerd's error texts.

msgspec decodes and type-checks in one pass (in C); its errors are turned into the messages
dockerd's Go decoder gives for the same mistake, e.g. for `{"Cmd": [5]}`:

    invalid JSON: json: cannot unmarshal array into Go struct field CreateRequest.Cmd of type string

Every request object is a `Model`: fields named as in the Engine API, every field optional
(JSON `null` is Go's zero value), unknown fields ignored (as dockerd does).  Checks of
meaning (ports, addresses, names) are each object's `validate()`, after decoding.
"""

from __future__ import annotations

import re
import typing
from typing import Any, ClassVar, TypeVar

import msgspec

from tether.errors import InvalidParameter

# Limits of the API edge (docs/security.md lists them).
MAX_BODY = 10 * 1024 * 1024  # bytes of one JSON request body
MAX_DEPTH = 64  # nesting of arrays and objects in one JSON document

T = TypeVar("T", bound="Model")


class Model(msgspec.Struct, kw_only=True):
    """A request object.  `go_name` is the Go type dockerd decodes the same JSON into."""

    go_name: ClassVar[str] = ""
    # Fields whose Go type is not the plain mapping of the Python one (uint16, int64...).
    go_types: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        """Checks of meaning; raise InvalidParameter with Docker's message."""


# Fields typed `StrSlice` take a string or a list of strings, as docker's strslice.StrSlice.
StrSlice = list[str] | str | None


def _is_strslice(tp: Any) -> bool:
    args = set(typing.get_args(tp))
    return str in args and list[str] in args


def strslice(value: list[str] | str | None) -> list[str] | None:
    """Docker's StrSlice: one string is a one-element list."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return value


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: no per-char branch
_KEEP_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")


def check_depth(data: bytes) -> None:
    """Refuse documents nested deeper than MAX_DEPTH before any decoder walks them.

    Cheap for every real request: with fewer brackets than the limit there is nothing to
    do; otherwise strings are cut out, and removing adjacent pairs ("[]", "{}") takes at
    least one level off every nest per pass, so a document that vanishes within
    MAX_DEPTH/2 passes is shallow enough.  Only what remains (deep, or not JSON) is counted
    exactly, per block, and a block that could cross the limit one bracket at a time.
    """
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return
    brackets = _STRING.sub(b"", data).translate(None, _KEEP_BRACKETS)
    rest = brackets
    for _ in range(MAX_DEPTH // 2):
        rest = rest.replace(b"[]", b"").replace(b"{}", b"")
        if not rest:
            return
    depth = 0
    step = 4096
    for start in range(0, len(brackets), step):
        block = brackets[start : start + step]
        opens = block.count(b"[") + block.count(b"{")
        if depth + opens <= MAX_DEPTH:
            depth += 2 * opens - len(block)
            continue
        for b in block:
            depth += 1 if b in _OPEN else -1
            if depth > MAX_DEPTH:
                raise InvalidParameter(
                    f"invalid JSON: nesting deeper than {MAX_DEPTH} levels is not accepted"
                )


def decode(data: bytes, model: type[T], empty: T | None = None) -> T:
    """One JSON body as `model`, checked (validate()), or InvalidParameter with Docker's text.

    An empty body is `empty` when given (dockerd's ReadJSON takes an absent body as the zero
    request: networks, exec), else Go's EOF error (container create decodes it strictly).
    """
    if not data.strip():
        if empty is not None:
            empty.validate()
            return empty
        raise InvalidParameter("invalid JSON: EOF")
    check_depth(data)
    try:
        obj = msgspec.json.decode(data, type=model)
    except msgspec.ValidationError as exc:
        raise InvalidParameter("invalid JSON: " + go_type_error(model, str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidParameter(_syntax_error(str(exc))) from None
    except RecursionError:
        raise InvalidParameter(
            f"invalid JSON: nesting deeper than {MAX_DEPTH} levels is not accepted"
        ) from None
    obj.validate()
    return obj


def _syntax_error(text: str) -> str:
    if "trailing characters" in text:
        return "unexpected content after JSON"
    if text.startswith("Invalid UTF-8"):
        return "invalid JSON: the body is not valid UTF-8"
    text = text.removeprefix("JSON is malformed: ")
    if text.startswith("Input data was truncated"):
        return "invalid JSON: unexpected EOF"
    return "invalid JSON: " + text


_EXPECTED = re.compile(
    r"^Expected `(?P<want>[^`]+)`, got `(?P<got>\w+)`(?: - at `\$(?P<path>.*)`)?$"
)
_OTHER = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>.*)`)?$")
_TOKEN = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")
_KIND = {"str": "string", "int": "number", "float": "number", "bool": "bool", "null": "null"}


def go_type_error(model: type[Model], text: str) -> str:
    """msgspec's "Expected `str`, got `int` - at `$.Cmd[0]`" as Go's json error."""
    m = _EXPECTED.match(text)
    if m is None:
        other = _OTHER.match(text)
        what = other.group("what") if other else text
        path = other.group("path") if other else None
        if what == "Number out of range" and path is not None:
            struct, fields, go_type, _ = _walk(model, path)
            if struct:
                return (
                    f"json: cannot unmarshal number into Go struct field {struct}.{fields} "
                    f"of type {go_type}"
                )
        return what
    got = _KIND.get(m.group("got"), m.group("got"))
    path = m.group("path")
    if path is None:
        return f"json: cannot unmarshal {got} into Go value of type {model.go_name}"
    struct, fields, go_type, whole = _walk(model, path)
    if whole:
        got = whole
    if not struct:
        return f"json: cannot unmarshal {got} into Go value of type {go_type}"
    return f"json: cannot unmarshal {got} into Go struct field {struct}.{fields} of type {go_type}"


def _walk(model: type[Model], path: str) -> tuple[str, str, str, str]:
    """(innermost Go struct, dotted Go field path, Go type at path, StrSlice value kind).

    Go's decoder names the innermost struct and the path of struct fields from the root;
    map keys and list indexes are not part of it.
    """
    current: Any = model
    struct = ""
    fields: list[str] = []
    for m in _TOKEN.finditer(path):
        current = _unwrap(current)
        name = m.group(1)
        if name is not None:
            if not (isinstance(current, type) and issubclass(current, Model)):
                break
            owner: type[Model] = current
            struct = owner.go_name.rpartition(".")[2]
            fields.append(name)
            current = typing.get_type_hints(owner).get(name, Any)
            at_end = m.end() == len(path)
            if _is_strslice(current):
                # StrSlice.UnmarshalJSON retries the value as one string and reports that.
                return struct, ".".join(fields), "string", "" if at_end else "array"
            if at_end and name in owner.go_types:
                return struct, ".".join(fields), owner.go_types[name], ""
            continue
        args = typing.get_args(current)
        origin = typing.get_origin(current)
        if origin is list and args:
            current = args[0]
        elif origin is dict and len(args) == 2:
            current = args[1]
        else:
            break
    return struct, ".".join(fields), go_type_name(current), ""


def _unwrap(tp: Any) -> Any:
    """X | None -> X."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def go_type_name(tp: Any) -> str:
    tp = _unwrap(tp)
    if tp is str:
        return "string"
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float64"
    if isinstance(tp, type) and issubclass(tp, Model):
        return tp.go_name
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and args:
        return "[]" + go_type_name(args[0])
    if origin is dict and len(args) == 2:
        return f"map[string]{go_type_name(args[1])}"
    return "interface {}"
