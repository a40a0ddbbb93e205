"""Docker-style output: tabwriter tables, --format templates, indented JSON, natural sort."""

from __future__ import annotations

import sys

from tether import wire

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from tether.client import Response


def tabwrite(rows: Sequence[Sequence[str]], minwidth: int = 10, padding: int = 3) -> str:
    """Go's tabwriter.NewWriter(out, 10, 1, 3, ' ', 0) as docker configures it.

    Every cell but the last of a row is padded to the column's width (widest cell plus 3,
    at least 10); the last cell is written as is.
    """
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell) + padding, minwidth)
    lines = []
    for row in rows:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        parts.append(row[-1] if row else "")
        lines.append("".join(parts))
    return "".join(line + "\n" for line in lines)


def render_table_template(fmt: str, items: list[dict[str, Any]], headers: dict[str, str]) -> str:
    """--format 'table {{.A}}\\t{{.B}}' (header row from `headers`) or a plain template."""
    is_table = fmt.startswith("table")
    body = fmt[5:].lstrip() if is_table else fmt
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    plain = _plain_table(body, is_table, items, headers)
    if plain is not None:
        return plain
    from tether.cli.gotemplate import Template, TemplateError

    try:
        tmpl = Template(body)
        lines = []
        if is_table:
            header_ctx: dict[str, Any] = {k: v for k, v in headers.items()}
            header_ctx["Label"] = lambda key: "LABEL"
            lines.append(tmpl.render(header_ctx))
        lines += [tmpl.render(item) for item in items]
    except TemplateError as exc:
        # One line and exit 1, as print_inspected says it (a traceback before).
        from tether.cli.context import CliError

        raise CliError(str(exc)) from None
    if is_table:
        return tabwrite([line.split("\t") for line in lines])
    return "".join(line + "\n" for line in lines)


def _plain_table(
    body: str, is_table: bool, items: list[dict[str, Any]], headers: dict[str, str]
) -> str | None:
    """The same text as the template engine for a template of bare `{{.Field}}` cells
    separated by tabs (every default listing, and most --format tables) whose fields are
    strings in every row: Go prints a string field as it is.  None for anything else.

    Loading the template engine is most of a listing's work otherwise (tether/cli/fast.py).
    """
    fields = []
    for cell in body.split("\t"):
        name = cell[3:-2] if cell.startswith("{{.") and cell.endswith("}}") else ""
        if not name.isidentifier():
            return None
        fields.append(name)
    for item in items:
        for f in fields:
            if type(item.get(f)) is not str:
                return None
    lines = [[item[f] for f in fields] for item in items]
    if is_table:
        if not all(type(headers.get(f)) is str for f in fields):
            return None
        # A value holding a tab is split into cells, as the engine's line.split("\t") does.
        rows = [[headers[f] for f in fields]] + ["\t".join(cells).split("\t") for cells in lines]
        return tabwrite(rows)
    return "".join("\t".join(cells) + "\n" for cells in lines)


def demux(resp: Response) -> None:
    """Docker's multiplexed stream (logs, exec) to our stdout/stderr, as it comes; a raw
    one (the log of a container made with a TTY) to stdout as it is."""
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    if resp.headers.get("content-type", "").startswith("application/vnd.docker.raw-stream"):
        for chunk in resp.iter_body():
            out.write(chunk)
            out.flush()
        return
    for stream, data in resp.frames():
        target = err if stream == 2 else out
        target.write(data)
        target.flush()


def print_json(data: Any) -> None:
    sys.stdout.write(wire.pretty(data) + "\n")


def format_each(fmt: str, items: list[Any]) -> str:
    from tether.cli.gotemplate import Template

    tmpl = Template(fmt.replace("\\t", "\t").replace("\\n", "\n"))
    return "".join(tmpl.render(item) + "\n" for item in items)


def print_inspected(fmt: str, found: list[Any], errors: list[str]) -> None:
    """What every `inspect` prints: JSON, or --format per object; then the misses, exit 1."""
    from tether.cli.context import CliError
    from tether.cli.gotemplate import TemplateError

    if fmt:
        try:
            sys.stdout.write(format_each(fmt, found))
        except TemplateError as exc:
            raise CliError(str(exc)) from None
    else:
        print_json(found)
    if errors:
        raise CliError("\n".join(errors))


def print_listing(
    o: dict[str, Any],
    rows: list[dict[str, Any]],
    headers: dict[str, str],
    default_fmt: str,
    quiet_key: str,
) -> None:
    """An `ls` body: -q prints each row's `quiet_key`; --format json each row as JSON (no
    Label function in it); else a table (header row from `headers`) or plain template."""
    if o["quiet"]:
        sys.stdout.write("".join(r[quiet_key] + "\n" for r in rows))
        return
    fmt = o["format"] or default_fmt
    if fmt == "json":
        fmt = "{{json .}}"
        rows = [{k: v for k, v in r.items() if k != "Label"} for r in rows]
    sys.stdout.write(render_table_template(fmt, rows, headers))


def inspect_each(fmt: str, names: list[str], get: Callable[[str], Any]) -> None:
    """An `inspect` of several names: each fetched by `get`; a name the daemon refuses is
    reported after the others are printed (exit 1), as docker does."""
    from tether.client import ApiError

    found: list[Any] = []
    errors: list[str] = []
    for name in names:
        try:
            found.append(get(name))
        except ApiError as exc:
            errors.append(f"Error response from daemon: {exc.message}")
    print_inspected(fmt, found, errors)


def for_each_name(names: list[str], act: Callable[[str], object]) -> int:
    """docker's loop over `rm`/`pause` arguments: each name done is printed, each refusal
    goes to stderr and the rest still run; exit 1 at the end if any was refused."""
    from tether.cli.context import CliError
    from tether.client import ApiError

    failed = False
    for name in names:
        try:
            act(name)
        except ApiError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            failed = True
            continue
        print(name)
    if failed:
        raise CliError("", 1)
    return 0


def human_size(n: float, precision: int = 4) -> str:
    """go-units HumanSizeWithPrecision (decimal units): HumanSize's 4 significant digits for
    progress bars and volume prune, 3 for docker cp's "Successfully copied"."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.{precision}g}{units[i]}"


def natural_key(text: str) -> list[Any]:
    """docker's sortorder.NaturalLess: runs of digits compare as numbers."""
    out: list[Any] = []
    num = ""
    word = ""
    for ch in text:
        if ch.isdigit():
            if word:
                out.append((1, word))
                word = ""
            num += ch
        else:
            if num:
                out.append((0, int(num)))
                num = ""
            word += ch
    if num:
        out.append((0, int(num)))
    if word:
        out.append((1, word))
    return out


def write(text: str) -> None:
    sys.stdout.write(text)


def parse_filters(values: list[str]) -> dict[str, list[str]]:
    """--filter name=value (repeatable) as docker's filters.ParseFlag reads it."""
    filters: dict[str, list[str]] = {}
    for f in values:
        key, sep, val = f.partition("=")
        if not sep:
            from tether.cli.context import CliError  # only here: it loads `os`

            raise CliError(
                f'invalid argument "{f}" for "-f, --filter" flag: bad format of filter '
                "(expected name=value)"
            )
        filters.setdefault(key.strip().lower(), []).append(val.strip())
    return filters
