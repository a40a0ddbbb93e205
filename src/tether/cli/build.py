"""tether build (and `tether builder prune`): docker's classic builder's flags and output.

The context directory goes to the daemon as a tar (.dockerignore applied here, as the docker
CLI does); the daemon's builder (tether.images.build) runs the steps.
"""

from __future__ import annotations

import os
import sys

from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.client import ApiError

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any


def build_args(values: list[str]) -> dict[str, str]:
    """--build-arg K=V, or K alone: the value from this environment (left out if unset)."""
    out: dict[str, str] = {}
    for v in values:
        k, eq, val = v.partition("=")
        if eq:
            out[k] = val
        elif k in os.environ:
            out[k] = os.environ[k]
    return out


PROGRESS_MODES = {"auto": None, "plain": False, "tty": True}


def progress_mode(value: str | None) -> bool | None:
    """--progress: how the stream is drawn (the pulls of FROM images and the steps): `tty`
    redraws each layer's line in place, `plain` prints one line per status, `auto` (the
    default) is `tty` on a terminal.  The classic builder's text is the same in all three."""
    mode = (value or "auto").lower()
    if mode not in PROGRESS_MODES:
        raise CliError(
            f'invalid argument "{value}" for "--progress" flag: must be auto, plain or tty '
            "(BuildKit's rawjson and quiet are not tether's builder's)"
        )
    return PROGRESS_MODES[mode]


def content_trust(o: dict[str, Any]) -> None:
    """--disable-content-trust=false asks for Notary signatures, which tether cannot check:
    refused rather than ignored."""
    if o.get("disable_content_trust") is False:
        raise CliError(
            "tether does not verify signed images (Docker Content Trust): "
            "--disable-content-trust=false is not supported"
        )


def send(
    ctx: Any,
    context: str,
    dockerfile: str | None,
    query: dict[str, Any],
    out: Any = None,
    quiet: bool = False,
    stdin_dockerfile: bytes | None = None,
    terminal: bool | None = None,
) -> str:
    """Pack, send, draw the stream; the image id (or CliError with the build's failure)."""
    from tether.cli import jsonmessage
    from tether.images.context import pack
    from tether.images.progress import human_size

    out = out if out is not None else sys.stdout
    try:
        data, df_name = pack(context, dockerfile, stdin_dockerfile)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"error checking context: {exc}") from None
    query = {**query, "dockerfile": df_name}
    if not quiet:
        out.write(f"Sending build context to Docker daemon {human_size(len(data)):>8}\n")
        out.flush()
    resp = ctx.open("POST", "/build", query=query, raw=data)
    if resp.status >= 400:
        from tether.client import _error_message

        body = resp.read()
        resp.close()
        raise CliError(f"Error response from daemon: {_error_message(body, resp.status)}")
    image_id = ""

    def aux(value: Any) -> None:
        nonlocal image_id
        if isinstance(value, dict) and value.get("ID"):
            image_id = str(value["ID"])

    import io

    try:
        failure = jsonmessage.display(
            resp, io.StringIO() if quiet else out, terminal=terminal, aux=aux
        )
    finally:
        resp.close()
    if failure:
        raise CliError(failure)
    return image_id


def run_build(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    for name, why in (
        ("add_host", "--add-host"),
        ("secret", "--secret (BuildKit)"),
        ("ssh", "--ssh (BuildKit)"),
        ("output", "--output (BuildKit)"),
    ):
        if o.get(name):
            raise CliError(f"tether build does not support {why}")
    progress_mode(o.get("progress"))
    content_trust(o)
    source = args[0]
    stdin_df: bytes | None = None
    dockerfile = o["file"] or None
    if dockerfile == "-":
        if source == "-":
            raise CliError(
                "invalid argument: can't use stdin for both build context and dockerfile"
            )
        stdin_df = sys.stdin.buffer.read()
        dockerfile = None
    if source == "-":
        data = sys.stdin.buffer.read()
        if data[257:262] == b"ustar" or data[:2] == b"\x1f\x8b":
            import io
            import tarfile
            import tempfile

            tmp = tempfile.mkdtemp(prefix="tether-context-")
            try:
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    for m in tar.getmembers():
                        if m.name.startswith("/") or ".." in m.name.split("/"):
                            raise CliError(f"invalid build context: {m.name} leaves the archive")
                    tar.extractall(tmp)
                return _run(ctx, o, tmp, dockerfile, None)
            finally:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        # A Dockerfile on stdin, no context.
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="tether-context-")
        try:
            return _run(ctx, o, tmp, None, data)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if source.startswith(("http://", "https://", "git@", "github.com/")):
        raise CliError(
            "tether build takes a local directory (or - for stdin): remote contexts are not fetched"
        )
    if not os.path.isdir(source):
        raise CliError(f'unable to prepare context: path "{source}" not found')
    return _run(ctx, o, source, dockerfile, stdin_df)


def _run(
    ctx: Context, o: dict[str, Any], context: str, dockerfile: str | None, stdin_df: bytes | None
) -> int:
    from tether.images.reference import ReferenceError, parse

    for t in o["tag"]:
        try:
            ref = parse(t)
        except ReferenceError as exc:
            raise CliError(f'invalid argument {t!r} for "-t, --tag" flag: {exc}') from None
        if ref.digest:
            raise CliError(f'invalid argument {t!r} for "-t, --tag" flag: invalid reference format')
    labels = {}
    for label in o["label"]:
        k, _, v = label.partition("=")
        labels[k] = v
    query: dict[str, Any] = {
        "t": list(o["tag"]),
        "buildargs": build_args(o["build_arg"]),
        "labels": labels,
        "target": o["target"] or None,
        "networkmode": o["network"] or "default",
        "nocache": bool(o["no_cache"]),
        "q": bool(o["quiet"]),
        "rm": bool(o["rm"]),
        "forcerm": bool(o["force_rm"]),
        "pull": bool(o["pull"]),
        "platform": o["platform"] or None,
    }
    if o["cache_from"]:
        from tether import wire

        query["cachefrom"] = wire.dumps(list(o["cache_from"]))
    image_id = send(
        ctx,
        context,
        dockerfile,
        query,
        quiet=o["quiet"],
        stdin_dockerfile=stdin_df,
        terminal=progress_mode(o["progress"]),
    )
    if o["quiet"]:
        print(image_id)
    if o["iidfile"]:
        with open(o["iidfile"], "w") as f:
            f.write(image_id)
    return 0


def run_prune(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.image import human_size

    if not o["force"]:
        what = "all build cache" if o["all"] else "all dangling build cache"
        sys.stdout.write(
            f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    try:
        report = ctx.call("POST", "/build/prune", query={"all": 1} if o["all"] else None)
    except ApiError as exc:
        raise api_error(exc) from None
    deleted = report.get("CachesDeleted") or []
    if deleted:
        print("Deleted build cache objects:")
        for d in deleted:
            print(d[:25])
        print()
    print(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}")
    return 0


BUILD = Command(
    "build",
    "[OPTIONS] PATH | -",
    "Build an image from a Dockerfile",
    [
        Flag(
            "add-host",
            kind="list",
            metavar="list",
            help='Add a custom host-to-IP mapping ("host:ip")',
        ),
        Flag("build-arg", kind="list", metavar="list", help="Set build-time variables"),
        Flag(
            "cache-from",
            kind="list",
            metavar="strings",
            help="Images to consider as cache sources",
        ),
        Flag("disable-content-trust", kind="bool", default=True, help="Skip image verification"),
        Flag("file", "f", help='Name of the Dockerfile (Default is "PATH/Dockerfile")'),
        Flag("force-rm", kind="bool", help="Always remove intermediate containers"),
        Flag("iidfile", help="Write the image ID to the file"),
        Flag("label", kind="list", metavar="list", help="Set metadata for an image"),
        Flag(
            "network",
            default="default",
            help='Set the networking mode for the RUN instructions during build (default "default")',
        ),
        Flag("no-cache", kind="bool", help="Do not use cache when building the image"),
        Flag("output", "o", hidden=True),
        Flag("platform", help="Set platform if server is multi-platform capable"),
        Flag(
            "progress",
            default="auto",
            help='Set type of progress output (auto, plain, tty) (default "auto")',
        ),
        Flag("pull", kind="bool", help="Always attempt to pull a newer version of the image"),
        Flag(
            "quiet",
            "q",
            kind="bool",
            help="Suppress the build output and print image ID on success",
        ),
        Flag(
            "rm",
            kind="bool",
            default=True,
            help="Remove intermediate containers after a successful build (default true)",
        ),
        Flag("secret", kind="list", hidden=True),
        Flag("ssh", kind="list", hidden=True),
        Flag(
            "tag",
            "t",
            kind="list",
            metavar="list",
            help='Name and optionally a tag in the "name:tag" format',
        ),
        Flag("target", help="Set the target build stage to build."),
    ],
    min_args=1,
    max_args=1,
    handler=run_build,
    aliases=("image build", "builder build"),
)
PRUNE = Command(
    "builder prune",
    "[OPTIONS]",
    "Remove build cache",
    [
        Flag("all", "a", kind="bool", help="Remove all unused build cache, not just dangling ones"),
        Flag("force", "f", kind="bool", help="Do not prompt for confirmation"),
    ],
    max_args=0,
    handler=run_prune,
)
COMMANDS = {"build": BUILD, "prune": PRUNE}
