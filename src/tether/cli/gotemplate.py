"""A Go text/template subset for --format, over the API's JSON.

Covers what docker users write: {{.Field.Sub}}, {{json .X}}, {{range .X}}..{{end}} (with
`$k, $v :=`), {{if}}/{{else if}}/{{else}}/{{with}}, {{index .X "key"}}, pipes, printf, join,
upper/lower/title, split, len, println, and {{- -}} trimming.  Values print as Go's %v
would (maps as map[k:v], lists as [a b], null as <no value> or <nil>).
"""

from __future__ import annotations

from tether import wire

TYPE_CHECKING = False  # see tether/cli/flags.py: keeps `typing` out of CLI start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class TemplateError(Exception):
    pass


# -- lexing ------------------------------------------------------------------------------


def _split(template: str) -> list[tuple[str, str]]:
    """[('text', s) | ('action', s)], with {{- and -}} trimming applied."""
    out: list[tuple[str, str]] = []
    i = 0
    while True:
        j = template.find("{{", i)
        if j < 0:
            out.append(("text", template[i:]))
            break
        text = template[i:j]
        k = template.find("}}", j)
        if k < 0:
            raise TemplateError("template: unclosed action")
        inner = template[j + 2 : k]
        if inner.startswith("-") and inner[1:2] in (" ", "\t", "\n"):
            text = text.rstrip(" \t\r\n")
            inner = inner[1:]
        trim_after = inner.endswith("-") and inner[-2:-1] in (" ", "\t", "\n")
        if trim_after:
            inner = inner[:-1]
        out.append(("text", text))
        out.append(("action", inner.strip()))
        i = k + 2
        if trim_after:
            while i < len(template) and template[i] in " \t\r\n":
                i += 1
    return [(kind, s) for kind, s in out if kind == "action" or s]


def _tokens(src: str) -> list[str]:
    toks: list[str] = []
    i = 0
    while i < len(src):
        c = src[i]
        if c in " \t\n\r":
            i += 1
        elif c in "()|":
            toks.append(c)
            i += 1
            if c == ")" and src[i : i + 1] == ".":
                # (pipeline).Field: a field chain applied to the group's value.
                j = i
                while j < len(src) and src[j] not in ' \t\n\r()|,"':
                    j += 1
                toks.append("\x00" + src[i:j])
                i = j
        elif c == '"':
            j = i + 1
            while j < len(src) and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            toks.append(src[i : j + 1])
            i = j + 1
        elif c == "`":
            j = src.index("`", i + 1)
            toks.append(src[i : j + 1])
            i = j + 1
        elif src.startswith(":=", i):
            toks.append(":=")
            i += 2
        elif c == ",":
            toks.append(",")
            i += 1
        else:
            j = i
            while j < len(src) and src[j] not in ' \t\n\r()|,"' and not src.startswith(":=", j):
                j += 1
            toks.append(src[i:j])
            i = j
    return toks


# -- tree --------------------------------------------------------------------------------


class Text:
    def __init__(self, text: str) -> None:
        self.text = text


class Action:
    def __init__(self, pipe: list[Any], decl: list[str]) -> None:
        self.pipe = pipe  # list of commands; a command is a list of operands
        self.decl = decl


class Block:
    def __init__(
        self, kind: str, pipe: list[Any], decl: list[str], body: list[Any], alt: list[Any]
    ) -> None:
        self.kind = kind  # range | if | with
        self.pipe = pipe
        self.decl = decl
        self.body = body
        self.alt = alt


def _parse_pipe(tokens: list[str]) -> tuple[list[str], list[Any]]:
    decl: list[str] = []
    if ":=" in tokens:
        idx = tokens.index(":=")
        decl = [t for t in tokens[:idx] if t != ","]
        tokens = tokens[idx + 1 :]
    commands: list[Any] = []
    current: list[Any] = []
    stack: list[list[Any]] = []
    pipes: list[list[Any]] = []
    for t in tokens:
        if t == "(":
            stack.append(current)
            pipes.append(commands)
            commands, current = [], []
        elif t == ")":
            commands.append(current)
            inner = ("pipe", commands)
            commands = pipes.pop()
            current = stack.pop()
            current.append(inner)
        elif t == "|":
            commands.append(current)
            current = []
        elif t.startswith("\x00"):
            current[-1] = ("field", current[-1], t[2:].split("."))
        else:
            current.append(t)
    commands.append(current)
    if any(not c for c in commands):
        raise TemplateError("template: missing value for command")
    return decl, commands


def _parse(parts: list[tuple[str, str]]) -> list[Any]:
    root: list[Any] = []
    # (block, list being filled, chained): an {{else if}} opens a nested block that the same
    # {{end}} closes together with its parent, so it is pushed as "chained".
    stack: list[tuple[Block | None, list[Any], bool]] = [(None, root, False)]
    for kind, s in parts:
        body = stack[-1][1]
        if kind == "text":
            body.append(Text(s))
            continue
        if s.startswith("/*"):
            continue
        toks = _tokens(s)
        if not toks:
            raise TemplateError("template: missing value for command")
        head = toks[0]
        if head in ("range", "if", "with"):
            decl, pipe = _parse_pipe(toks[1:])
            block = Block(head, pipe, decl, [], [])
            body.append(block)
            stack.append((block, block.body, False))
        elif head == "else":
            top, _, chained = stack[-1]
            if top is None:
                raise TemplateError("template: unexpected {{else}}")
            stack[-1] = (top, top.alt, chained)
            if len(toks) > 1 and toks[1] in ("if", "with"):
                decl, pipe = _parse_pipe(toks[2:])
                nested = Block(toks[1], pipe, decl, [], [])
                top.alt.append(nested)
                stack.append((nested, nested.body, True))
        elif head == "end":
            if len(stack) == 1:
                raise TemplateError("template: unexpected {{end}}")
            while True:
                _, _, chained = stack.pop()
                if not chained:
                    break
        else:
            decl, pipe = _parse_pipe(toks)
            body.append(Action(pipe, decl))
    if len(stack) != 1:
        raise TemplateError("template: unexpected EOF")
    return root


# -- values ------------------------------------------------------------------------------


class _Missing:
    pass


MISSING = _Missing()


def go_str(v: Any, top: bool = True) -> str:
    if v is MISSING:
        return "<no value>"
    if v is None:
        return "<no value>" if top else "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_str(v[k], False)}" for k in sorted(v)) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(go_str(x, False) for x in v) + "]"
    return str(v)


def truthy(v: Any) -> bool:
    if v is MISSING or v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str | list | dict | tuple):
        return len(v) > 0
    return True


# Compiled at printf's first use: `re` (with the enum it loads) would be most of the start-up
# of a `tether ps --format ...` that never calls printf.
_VERB = r"%([-+# 0]*)(\d+|\*)?(?:\.(\d*|\*))?([a-zA-Z%])"


def _int_arg(v: Any) -> int | None:
    """A * width or precision as Go's intFromArg takes it: an int within a million, else
    None (Go prints %!(BADWIDTH) or %!(BADPREC))."""
    if isinstance(v, int) and not isinstance(v, bool) and -1_000_000 <= v <= 1_000_000:
        return v
    return None


def _printf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for what templates use: flags (- + space 0 #), width and precision
    (numbers or *), verbs s v q d f e g x X t c; a missing argument is %!v(MISSING)."""
    out: list[str] = []
    pos = 0
    ai = 0

    def take() -> Any:
        nonlocal ai
        arg = args[ai] if ai < len(args) else MISSING
        ai += 1
        return arg

    import re

    for m in re.finditer(_VERB, fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width_s, prec_s, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        width = int(width_s) if width_s and width_s != "*" else None
        if width_s == "*":
            width = _int_arg(take())
            if width is None:
                out.append("%!(BADWIDTH)")  # Go's, and the verb goes on without a width
            elif width < 0:  # Go: a negative width pads on the right
                width, flags = -width, flags.replace("0", "") + "-"
        prec = int(prec_s or 0) if prec_s is not None and prec_s != "*" else None
        if prec_s == "*":
            prec = _int_arg(take())
            if prec is None or prec < 0:
                prec = None
                out.append("%!(BADPREC)")
        arg = take()
        if arg is MISSING:
            out.append(f"%!{verb}(MISSING)")
            continue
        if verb in "dxXob" and isinstance(arg, int | float) and not isinstance(arg, bool):
            spec = {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb]
            text = format(int(arg), ("+" if "+" in flags else "") + spec)
        elif verb in "feEgG" and isinstance(arg, int | float) and not isinstance(arg, bool):
            text = format(float(arg), f".{6 if prec is None else prec}{verb}")
            prec = None
        elif verb == "q":
            text = wire.dumps(go_str(arg))
        elif verb == "t" and isinstance(arg, bool):
            text = "true" if arg else "false"
        elif verb == "c" and isinstance(arg, int):
            # Go's fmtC: what is not a Unicode scalar value (a negative int is a huge uint64
            # there, a surrogate) prints as U+FFFD.
            text = chr(arg) if 0 <= arg <= 0x10FFFF and not 0xD800 <= arg <= 0xDFFF else "\ufffd"
        else:
            text = go_str(arg)
            if prec is not None:
                text = text[:prec]
        if width is not None and len(text) < width:
            if "-" in flags:
                text = text.ljust(width)
            elif "0" in flags and verb in "dfeEgGxX":
                sign = text[0] if text[:1] in "+-" else ""
                text = sign + text[len(sign) :].rjust(width - len(sign), "0")
            else:
                text = text.rjust(width)
        out.append(text)
    out.append(fmt[pos:])
    return "".join(out)


def _json(v: Any) -> str:
    return wire.dumps(None if v is MISSING else v)


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, MISSING) if not isinstance(k, int) else v.get(str(k), MISSING)
        elif isinstance(v, list | tuple):
            v = v[int(k)]
        else:
            raise TemplateError(f"template: can't index item of type {type(v).__name__}")
    return v


def _title(s: Any) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in go_str(s).split(" "))


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "index": _index,
    "printf": _printf,
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "join": lambda v, sep: sep.join(go_str(x) for x in (v or [])),
    "split": lambda s, sep: go_str(s).split(sep),
    "upper": lambda s: go_str(s).upper(),
    "lower": lambda s: go_str(s).lower(),
    "title": _title,
    "len": lambda v: len(v) if v not in (None, MISSING) else 0,
    "truncate": lambda s, n: go_str(s)[: int(n)],
    "pad": lambda s, a, b: " " * int(a) + go_str(s) + " " * int(b),
    "not": lambda v: not truthy(v),
    "and": lambda *a: next((x for x in a if not truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if truthy(x)), a[-1]),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


class Template:
    def __init__(self, source: str, funcs: dict[str, Callable[..., Any]] | None = None) -> None:
        self.source = source
        self.funcs = dict(FUNCS)
        if funcs:
            self.funcs.update(funcs)
        self.tree = _parse(_split(source))

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._run(self.tree, data, {"$": data}, out)
        return "".join(out)

    # -- evaluation --------------------------------------------------------------------------

    def _run(self, nodes: list[Any], dot: Any, vars: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Action):
                val = self._pipe(node.pipe, dot, vars)
                if node.decl:
                    vars[node.decl[0]] = val
                else:
                    out.append(go_str(val))
            else:
                self._block(node, dot, vars, out)

    def _block(self, b: Block, dot: Any, vars: dict[str, Any], out: list[str]) -> None:
        val = self._pipe(b.pipe, dot, vars)
        if b.kind == "if":
            self._run(b.body if truthy(val) else b.alt, dot, vars, out)
        elif b.kind == "with":
            if truthy(val):
                self._run(b.body, val, vars, out)
            else:
                self._run(b.alt, dot, vars, out)
        else:
            items: list[tuple[Any, Any]]
            if isinstance(val, dict):
                items = [(k, val[k]) for k in sorted(val)]
            elif isinstance(val, list | tuple):
                items = list(enumerate(val))
            elif val in (None, MISSING):
                items = []
            elif isinstance(val, int):
                items = [(i, i) for i in range(val)]
            else:
                raise TemplateError(f"template: range can't iterate over {go_str(val)}")
            if not items:
                self._run(b.alt, dot, vars, out)
                return
            for k, v in items:
                scope = dict(vars)
                if len(b.decl) == 1:
                    scope[b.decl[0]] = v
                elif len(b.decl) == 2:
                    scope[b.decl[0]] = k
                    scope[b.decl[1]] = v
                self._run(b.body, v, scope, out)

    def _pipe(self, commands: list[Any], dot: Any, vars: dict[str, Any]) -> Any:
        val: Any = MISSING
        for i, cmd in enumerate(commands):
            extra = [val] if i > 0 else []
            val = self._command(cmd, dot, vars, extra)
        return val

    def _command(self, cmd: list[Any], dot: Any, vars: dict[str, Any], extra: list[Any]) -> Any:
        head = cmd[0]
        if isinstance(head, str) and head in self.funcs:
            args = [self._operand(a, dot, vars) for a in cmd[1:]] + extra
            try:
                return self.funcs[head](*args)
            except TemplateError:
                raise
            except Exception as exc:
                raise TemplateError(f"template: error calling {head}: {exc}") from None
        if isinstance(head, str) and head.startswith(".") and (len(cmd) > 1 or extra):
            # A method on the data, like docker's {{.Label "key"}}.
            method = self._operand(head, dot, vars)
            if callable(method):
                args = [self._operand(a, dot, vars) for a in cmd[1:]] + extra
                return method(*args)
        if len(cmd) > 1 or extra:
            if (
                isinstance(head, str)
                and not head.startswith((".", "$", '"', "`"))
                and head not in ("true", "false", "nil")
                and not head[:1].isdigit()
            ):
                raise TemplateError(f'template: function "{head}" not defined')
            raise TemplateError(f"template: can't give argument to non-function {head}")
        return self._operand(head, dot, vars)

    def _operand(self, tok: Any, dot: Any, vars: dict[str, Any]) -> Any:
        if isinstance(tok, tuple):
            if tok[0] == "field":
                return self._fields(self._operand(tok[1], dot, vars), tok[2])
            return self._pipe(tok[1], dot, vars)
        if tok == ".":
            return dot
        if tok.startswith("."):
            return self._fields(dot, tok[1:].split("."))
        if tok.startswith("$"):
            name, _, rest = tok.partition(".")
            if name not in vars:
                raise TemplateError(f"template: undefined variable: {name}")
            return self._fields(vars[name], rest.split(".")) if rest else vars[name]
        if tok.startswith('"'):
            return wire.loads(tok)
        if tok.startswith("`"):
            return tok[1:-1]
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "nil":
            return None
        try:
            return int(tok)
        except ValueError:
            pass
        try:
            return float(tok)
        except ValueError:
            pass
        if tok in self.funcs:
            return self.funcs[tok]()
        raise TemplateError(f'template: function "{tok}" not defined')

    @staticmethod
    def _fields(val: Any, names: list[str]) -> Any:
        for name in names:
            if not name:
                continue
            if isinstance(val, dict):
                val = val.get(name, MISSING)
            elif val is MISSING or val is None:
                return MISSING
            else:
                raise TemplateError(
                    f"template: can't evaluate field {name} in type {type(val).__name__}"
                )
        return val


def render(source: str, data: Any) -> str:
    return Template(source).render(data)
