"""Dockerfiles: parsed (moby/buildkit's dockerfile parser rules) and variables expanded (its
shell lexer), pure.

Parser directives (`# escape=`, `# syntax=`), comments, line continuations with the escape
character, JSON ("exec") and shell forms, `--flag=value` options, `ENV`/`LABEL` key=value
pairs with quotes, `ARG` before `FROM`, and `$VAR`, `${VAR}`, `${VAR:-word}`,
`${VAR:+word}`, `${VAR-word}`, `${VAR+word}`, `${VAR:?msg}` in the instructions docker
expands them in.  Errors carry docker's words and the line number.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

# Instructions whose arguments docker expands variables in (RUN, CMD and ENTRYPOINT are left
# to the shell of the container).
EXPANDED = {
    "ADD",
    "COPY",
    "ENV",
    "EXPOSE",
    "FROM",
    "LABEL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "HEALTHCHECK",
    "SHELL",
}
KNOWN = {
    "FROM",
    "RUN",
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "EXPOSE",
    "LABEL",
    "COPY",
    "ADD",
    "VOLUME",
    "STOPSIGNAL",
    "SHELL",
    "HEALTHCHECK",
    "ONBUILD",
    "MAINTAINER",
}
FLAGS = {
    "FROM": {"platform"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"chown", "chmod", "checksum", "keep-git-dir", "link", "exclude"},
    "RUN": {"mount", "network", "security"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}


class DockerfileError(ValueError):
    pass


@dataclass
class Instruction:
    cmd: str  # upper case: RUN, COPY...
    original: str  # the line as written (continuations joined), for "Step N/M : ..."
    args: list[str]  # JSON form: the array; shell form: [the text]
    json_form: bool
    flags: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def rest(self) -> str:
        """The arguments as one text (shell form)."""
        return self.args[0] if not self.json_form and self.args else " ".join(self.args)


@dataclass
class Dockerfile:
    escape: str
    instructions: list[Instruction]


def _directives(lines: list[str]) -> tuple[str, int]:
    """The escape character and the index of the first line past the directives."""
    escape = "\\"
    i = 0
    seen: set[str] = set()
    while i < len(lines):
        text = lines[i].strip()
        if not text.startswith("#"):
            break
        body = text[1:].strip()
        key, eq, value = body.partition("=")
        key = key.strip().lower()
        if not eq or not key.isidentifier():
            break
        if key in seen:
            raise DockerfileError(f"only one {key} parser directive can be used")
        seen.add(key)
        if key == "escape":
            value = value.strip()
            if value not in ("\\", "`"):
                raise DockerfileError(f"invalid escape token '{value}' does not match [\\\\`]")
            escape = value
        i += 1
    return escape, i


def parse(text: str) -> Dockerfile:
    lines = text.replace("\r\n", "\n").split("\n")
    escape, start = _directives(lines)
    out: list[Instruction] = []
    i = start
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        first_line = i + 1
        parts = []
        cur = raw
        while True:
            trimmed = cur.rstrip()
            if trimmed.endswith(escape):
                parts.append(trimmed[:-1])
                i += 1
                # Comment and empty lines inside a continuation are skipped.
                while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                    i += 1
                if i >= len(lines):
                    break
                cur = lines[i]
                continue
            parts.append(cur)
            i += 1
            break
        joined = "".join(parts).strip()
        out.append(_instruction(joined, first_line))
    return Dockerfile(escape, out)


def _instruction(text: str, line: int) -> Instruction:
    word, _, rest = text.partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = more + " " + rest
    cmd = word.upper()
    rest = rest.strip()
    if cmd not in KNOWN:
        raise DockerfileError(f"dockerfile parse error on line {line}: unknown instruction: {word}")
    if "<<" in rest and cmd in ("RUN", "COPY", "ADD") and _heredoc(rest):
        raise DockerfileError(
            f"dockerfile parse error on line {line}: here-documents (<<EOF) need BuildKit; "
            "tether's builder does not read them"
        )
    flags: dict[str, str] = {}
    allowed = FLAGS.get(cmd, set())
    while rest.startswith("--"):
        token, _, after = rest.partition(" ")
        name, eq, value = token[2:].partition("=")
        if name not in allowed:
            raise DockerfileError(
                f"dockerfile parse error on line {line}: {cmd} does not support the --{name} flag"
                if allowed
                else f"dockerfile parse error on line {line}: unknown flag: {name}"
            )
        value = value if eq else "true"
        # A repeated flag (RUN --mount=... --mount=...) keeps every value, one per line.
        flags[name] = f"{flags[name]}\n{value}" if name in flags else value
        rest = after.strip()
    json_form = False
    args = [rest]
    if cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL", "VOLUME", "COPY", "ADD") and rest.startswith(
        "["
    ):
        parsed: object
        try:
            parsed = json.loads(rest)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
            json_form = True
            args = [str(v) for v in parsed]
    if cmd == "SHELL" and not json_form:
        raise DockerfileError("SHELL requires the arguments to be in JSON form")
    return Instruction(cmd, text, args, json_form, flags, line)


def _heredoc(rest: str) -> bool:
    idx = rest.find("<<")
    after = rest[idx + 2 :].lstrip("-").strip("'\"")
    return bool(after) and (after[0].isalpha() or after[0] == "_")


# -- the shell lexer: words and variables ---------------------------------------------------


class Lexer:
    """buildkit's shell.Lex for one instruction: expand variables, keep or drop quotes."""

    def __init__(self, escape: str = "\\") -> None:
        self.escape = escape

    def words(self, text: str, env: Callable[[str], str | None]) -> list[str]:
        """Split into words (quotes group, and are removed), variables expanded."""
        return self._process(text, env, split=True)

    def word(self, text: str, env: Callable[[str], str | None]) -> str:
        """One word: quotes removed, variables expanded, blanks kept."""
        out = self._process(text, env, split=False)
        return out[0] if out else ""

    def _process(self, text: str, env: Callable[[str], str | None], split: bool) -> list[str]:
        words: list[str] = []
        cur: list[str] = []
        in_word = False
        i = 0
        n = len(text)
        esc = self.escape
        while i < n:
            ch = text[i]
            if split and ch in " \t\n":
                if in_word:
                    words.append("".join(cur))
                    cur = []
                    in_word = False
                i += 1
                continue
            in_word = True
            if ch == esc:
                if i + 1 < n:
                    cur.append(text[i + 1])
                    i += 2
                else:
                    cur.append(ch)
                    i += 1
                continue
            if ch == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise DockerfileError(
                        "unexpected end of statement while looking for matching single-quote"
                    )
                cur.append(text[i + 1 : end])
                i = end + 1
                continue
            if ch == '"':
                i += 1
                while i < n and text[i] != '"':
                    c = text[i]
                    if c == esc and i + 1 < n and text[i + 1] in ('"', "$", esc):
                        cur.append(text[i + 1])
                        i += 2
                        continue
                    if c == "$":
                        value, i = self._variable(text, i, env)
                        cur.append(value)
                        continue
                    cur.append(c)
                    i += 1
                if i >= n:
                    raise DockerfileError(
                        "unexpected end of statement while looking for matching double-quote"
                    )
                i += 1
                continue
            if ch == "$":
                value, i = self._variable(text, i, env)
                cur.append(value)
                continue
            cur.append(ch)
            i += 1
        if in_word or not split:
            words.append("".join(cur))
        return words

    def _variable(self, text: str, i: int, env: Callable[[str], str | None]) -> tuple[str, int]:
        """$NAME or ${NAME...} at text[i] == '$': (value, index after it)."""
        n = len(text)
        if i + 1 >= n:
            return "$", i + 1
        nxt = text[i + 1]
        if nxt == "{":
            end = i + 2
            depth = 1
            while end < n and depth:
                if text[end] == "{":
                    depth += 1
                elif text[end] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            if end >= n:
                raise DockerfileError(f"missing '}}' in {text!r}")
            body = text[i + 2 : end]
            return self._braced(body, env), end + 1
        if nxt.isalnum() or nxt == "_":
            end = i + 1
            while end < n and (text[end].isalnum() or text[end] == "_"):
                end += 1
            name = text[i + 1 : end]
            if name[0].isdigit():
                name = name[0]
                end = i + 2
            return env(name) or "", end
        return "$", i + 1

    def _braced(self, body: str, env: Callable[[str], str | None]) -> str:
        name = ""
        j = 0
        while j < len(body) and (body[j].isalnum() or body[j] == "_"):
            name += body[j]
            j += 1
        if not name:
            raise DockerfileError(f"invalid variable expansion: ${{{body}}}")
        op = body[j:]
        value = env(name)
        if not op:
            return value or ""

        def word(t: str) -> str:
            return self.word(t, env)

        for prefix, unset_or_empty in ((":-", True), ("-", False)):
            if op.startswith(prefix):
                missing = value is None or (unset_or_empty and value == "")
                return word(op[len(prefix) :]) if missing else (value or "")
        for prefix, need_nonempty in ((":+", True), ("+", False)):
            if op.startswith(prefix):
                present = value is not None and (not need_nonempty or value != "")
                return word(op[len(prefix) :]) if present else ""
        for prefix, unset_or_empty in ((":?", True), ("?", False)):
            if op.startswith(prefix):
                missing = value is None or (unset_or_empty and value == "")
                if missing:
                    msg = word(op[len(prefix) :]) or "is not allowed to be empty"
                    raise DockerfileError(f"{name}: {msg}")
                return value or ""
        raise DockerfileError(f"unsupported modifier ({op[:1]}) in substitution")


def key_values(
    inst: Instruction, lexer: Lexer, env: Callable[[str], str | None]
) -> list[tuple[str, str]]:
    """ENV and LABEL: `k=v k2="v 2"` pairs, or the legacy `ENV k v with spaces`."""
    text = inst.rest
    if not text:
        raise DockerfileError(f"{inst.cmd} requires at least one argument")
    raw_first = text.split(None, 1)[0]
    if "=" not in raw_first:
        # Legacy form: the first word is the key, the rest of the line the value.
        key, _, value = text.partition(" ")
        if not value.strip():
            raise DockerfileError(f"{inst.cmd} must have two arguments")
        return [(key, lexer.word(value.strip(), env))]
    pairs = []
    for w in lexer.words(text, env):
        k, eq, v = w.partition("=")
        if not eq:
            raise DockerfileError(
                f'Syntax error - can\'t find = in "{w}". Must be of the form: name=value'
            )
        if not k:
            raise DockerfileError(f"{inst.cmd} names can not be blank")
        pairs.append((k, v))
    return pairs


@dataclass
class Stage:
    index: int
    name: str  # lower case, or "" without AS
    base: str  # the FROM image (expanded) or an earlier stage's name
    platform: str
    from_inst: Instruction
    instructions: list[Instruction]


def automatic_args(platform: dict[str, str]) -> dict[str, str | None]:
    """BuildKit's automatic platform ARGs (TARGETARCH...): usable in FROM lines as they are,
    in a stage once declared (`ARG TARGETARCH`); build and target are this host."""
    plat = f"{platform.get('os', 'linux')}/{platform.get('architecture', '')}"
    if platform.get("variant"):
        plat += f"/{platform['variant']}"
    out: dict[str, str | None] = {}
    for prefix in ("BUILD", "TARGET"):
        out[f"{prefix}PLATFORM"] = plat
        out[f"{prefix}OS"] = platform.get("os", "linux")
        out[f"{prefix}ARCH"] = platform.get("architecture", "")
        out[f"{prefix}VARIANT"] = platform.get("variant", "")
    return out


def stages(
    df: Dockerfile, build_args: dict[str, str], automatic: dict[str, str | None] | None = None
) -> tuple[list[Stage], dict[str, str | None], set[str]]:
    """The stages, the ARGs declared before the first FROM (with values), and the build args
    consumed there."""
    lexer = Lexer(df.escape)
    meta: dict[str, str | None] = dict(automatic or {})
    used: set[str] = set()
    out: list[Stage] = []
    i = 0
    insts = df.instructions
    while i < len(insts) and insts[i].cmd == "ARG":
        for name, default in arg_decls(insts[i], lexer, lambda n: meta.get(n)):
            if name in build_args:
                meta[name] = build_args[name]
                used.add(name)
            else:
                meta[name] = default
        i += 1
    if i >= len(insts):
        raise DockerfileError(
            "the Dockerfile cannot be empty" if not insts else "no build stage in current context"
        )
    if insts[i].cmd != "FROM":
        raise DockerfileError("no build stage in current context")
    current: Stage | None = None
    for inst in insts[i:]:
        if inst.cmd == "FROM":
            words = lexer.words(inst.rest, lambda n: meta.get(n))
            if len(words) == 3 and words[1].lower() == "as":
                name = words[2].lower()
            elif len(words) == 1:
                name = ""
            else:
                raise DockerfileError("FROM requires either one or three arguments")
            if not words[0]:
                raise DockerfileError("base name (${...}) should not be blank")
            platform = inst.flags.get("platform", "")
            if platform:
                platform = lexer.word(platform, lambda n: meta.get(n))
            current = Stage(len(out), name, words[0], platform, inst, [])
            out.append(current)
        else:
            assert current is not None
            current.instructions.append(inst)
    names = [s.name for s in out if s.name]
    if len(names) != len(set(names)):
        dup = next(n for n in names if names.count(n) > 1)
        raise DockerfileError(f"duplicate name {dup}")
    return out, meta, used


def arg_decls(
    inst: Instruction, lexer: Lexer, env: Callable[[str], str | None]
) -> list[tuple[str, str | None]]:
    """ARG name[=default] [name2[=default2]...]."""
    out: list[tuple[str, str | None]] = []
    text = inst.rest.strip()
    if not text:
        raise DockerfileError("ARG requires at least one argument")
    for w in lexer.words(text, env):
        name, eq, default = w.partition("=")
        if not name:
            raise DockerfileError("ARG names can not be blank")
        out.append((name, default if eq else None))
    return out


def exec_or_shell(inst: Instruction, shell: list[str]) -> tuple[list[str], bool]:
    """RUN/CMD/ENTRYPOINT: (argv, prepended a shell) as docker builds them."""
    if inst.json_form:
        return list(inst.args), False
    return [*shell, inst.rest], True
