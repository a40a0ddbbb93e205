"""tether image import|ls|rm|inspect (and the top-level `images` and `import`)."""

from __future__ import annotations

import sys
import time

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.cli.output import print_inspected, render_table_template
from tether.client import ApiError, quote

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

HEADERS = {
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
}


def human_size(n: float) -> str:
    """docker's units.HumanSizeWithPrecision(size, 3): decimal units."""
    units = ["B", "kB", "MB", "GB", "TB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    text = f"{n:.3g}"
    return f"{text}{units[i]}"


def run_import(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether import wire

    source = args[0]
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise CliError(
                f"open {source}: {exc.strerror.lower() if exc.strerror else exc}"
            ) from None
    query: dict[str, Any] = {"fromSrc": "-"}
    if len(args) > 1:
        ref = args[1]
        repo, sep, tag = ref.rpartition(":")
        if sep and "/" not in tag:
            query["repo"], query["tag"] = repo, tag
        else:
            query["repo"], query["tag"] = ref, "latest"
    if o["change"]:
        query["changes"] = o["change"]  # one `changes` parameter per value
    resp = ctx.open("POST", "/images/create", query=query, raw=data)
    body = resp.read()
    resp.close()
    if resp.status >= 400:
        raise CliError(f"Error response from daemon: {wire.loads(body).get('message')}")
    print(wire.loads(body)["status"])
    return 0


def run_ls(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    try:
        images = ctx.call("GET", "/images/json")
    except ApiError as exc:
        raise api_error(exc) from None
    rows = []
    for img in images:
        tags = img.get("RepoTags") or ["<none>:<none>"]
        for t in tags:
            repo, _, tag = t.rpartition(":")
            if args and args[0] not in (repo, t):
                continue
            short = img["Id"] if o["no_trunc"] else img["Id"].removeprefix("sha256:")[:12]
            rows.append(
                {
                    "Repository": repo,
                    "Tag": tag,
                    "ID": short,
                    "CreatedSince": _since(img["Created"]),
                    "CreatedAt": time.strftime(
                        "%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(img["Created"])
                    ),
                    "Size": human_size(img.get("Size", 0)),
                }
            )
    if o["quiet"]:
        seen = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        sys.stdout.write("".join(i + "\n" for i in seen))
        return 0
    fmt = o["format"] or "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    sys.stdout.write(render_table_template(fmt, rows, HEADERS))
    return 0


def _since(ts: int) -> str:
    from tether.engine.container_views import human_duration

    return human_duration(time.time() - ts) + " ago"


def run_rm(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    status = 0
    for name in args:
        try:
            for item in ctx.call(
                "DELETE", f"/images/{quote(name)}", query={"force": 1} if o["force"] else None
            ):
                for k, v in item.items():
                    print(f"{k}: {v}")
        except ApiError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            status = 1
    return status


def run_inspect(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    found = []
    errors = []
    for name in args:
        try:
            found.append(ctx.call("GET", f"/images/{quote(name)}/json"))
        except ApiError as exc:
            errors.append(f"Error response from daemon: {exc.message}")
    print_inspected(o["format"] or "", found, errors)
    return 0


IMPORT = Command(
    "import",
    "[OPTIONS] file|- [REPOSITORY[:TAG]]",
    "Import the contents from a tarball to create a filesystem image",
    [
        Flag(
            "change",
            "c",
            kind="list",
            metavar="list",
            help="Apply Dockerfile instruction to the created image",
        ),
        Flag("message", "m", help="Set commit message for imported image"),
    ],
    min_args=1,
    max_args=2,
    handler=run_import,
)
LS = Command(
    "image ls",
    "[OPTIONS] [REPOSITORY[:TAG]]",
    "List images",
    [
        Flag("all", "a", kind="bool", help="Show all images"),
        Flag("format", help="Format output using a custom template"),
        Flag("no-trunc", kind="bool", help="Don't truncate output"),
        Flag("quiet", "q", kind="bool", help="Only show image IDs"),
    ],
    max_args=1,
    handler=run_ls,
)
RM = Command(
    "image rm",
    "[OPTIONS] IMAGE [IMAGE...]",
    "Remove one or more images",
    [Flag("force", "f", kind="bool", help="Force removal of the image")],
    min_args=1,
    handler=run_rm,
)
INSPECT = Command(
    "image inspect",
    "[OPTIONS] IMAGE [IMAGE...]",
    "Display detailed information on one or more images",
    [Flag("format", "f", help="Format output using a custom template")],
    min_args=1,
    handler=run_inspect,
)
COMMANDS = {"import": IMPORT, "ls": LS, "list": LS, "rm": RM, "remove": RM, "inspect": INSPECT}
