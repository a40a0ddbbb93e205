"""tether image ... and the top-level image commands: images, pull, push, tag, rmi, history,
save, load, import, login, logout (build is in cli/build.py).

Flags, output and error texts are the docker CLI's.  Everything heavier than flag tables is
imported inside the handlers: `tether images` and `tether pull --help` must start as fast
as any other command.
"""

from __future__ import annotations

import sys
import time

from tether.cli.build import BUILD
from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.cli.output import print_inspected, render_table_template
from tether.cli.views import (
    IMAGE_DEFAULT,
    IMAGE_DIGESTS,
    IMAGE_HEADERS,
    image_ids,
    image_rows,
    image_size,
    since,
)
from tether.client import ApiError, quote

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

    from tether.client import Response

HEADERS = IMAGE_HEADERS
human_size = image_size  # compose.py and build.py take it from here
HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}


def _stream_error(resp: Response) -> CliError | None:
    """An HTTP error answer (before any stream) as docker prints it."""
    if resp.status < 400:
        return None
    from tether.client import _error_message

    body = resp.read()
    resp.close()
    return CliError(f"Error response from daemon: {_error_message(body, resp.status)}")


def _platform(text: str) -> str:
    """--platform checked here (docker's words), sent as os/arch[/variant]."""
    from tether.errors import TetherError
    from tether.images.oci import format_platform, parse_platform

    try:
        return format_platform(parse_platform(text))
    except TetherError as exc:
        raise CliError(exc.message) from None


def _reference(text: str) -> Any:
    from tether.images.reference import ReferenceError, parse

    try:
        return parse(text)
    except ReferenceError as exc:
        raise CliError(str(exc)) from None


# -- pull --------------------------------------------------------------------------------------


def pull(
    ctx: Any,
    name: str,
    platform: str = "",
    quiet: bool = False,
    all_tags: bool = False,
    out: Any = None,
) -> None:
    """POST /images/create with the stored credentials, the stream drawn on `out`."""
    from tether.cli import credentials, jsonmessage

    ref = _reference(name)
    if all_tags and (ref.tag or ref.digest):
        raise CliError("tag can't be used with --all-tags/-a")
    query: dict[str, Any] = {"fromImage": ref.name}
    if ref.digest:
        query["tag"] = ref.digest
    elif ref.tag:
        query["tag"] = ref.tag
    elif not all_tags:
        query["tag"] = "latest"
    if platform:
        query["platform"] = platform
    resp = ctx.open("POST", "/images/create", query=query, headers=credentials.header(ref.domain))
    err = _stream_error(resp)
    if err is not None:
        raise err
    target = out if out is not None else sys.stdout
    if quiet:
        import io

        target = io.StringIO()
    try:
        failure = jsonmessage.display(resp, target)
    finally:
        resp.close()
    if failure:
        raise CliError(failure)


def run_pull(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli.build import content_trust

    content_trust(o)
    ref = _reference(args[0])
    pull(ctx, args[0], o["platform"] or "", o["quiet"], o["all_tags"])
    if not o["all_tags"]:
        print(str(ref.tagged_or_latest()))
    return 0


# -- push --------------------------------------------------------------------------------------


def run_push(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli import credentials, jsonmessage
    from tether.cli.build import content_trust

    content_trust(o)
    ref = _reference(args[0])
    if o["all_tags"] and ref.tag:
        raise CliError("tag can't be used with --all-tags/-a")
    if ref.digest:
        raise CliError("cannot push a digest reference")
    # No tag at all asks dockerd for every tag of the repository.
    query: dict[str, Any] = {"tag": ref.tag or ("" if o["all_tags"] else "latest")}
    if o["platform"]:
        query["platform"] = _platform(o["platform"])
    path = f"/images/{quote(ref.name)}/push"
    resp = ctx.open("POST", path, query=query, headers=credentials.header(ref.domain))
    err = _stream_error(resp)
    if err is not None:
        raise err
    import io

    target: Any = io.StringIO() if o["quiet"] else sys.stdout
    try:
        failure = jsonmessage.display(resp, target)
    finally:
        resp.close()
    if failure:
        raise CliError(failure)
    if o["quiet"]:
        print(str(ref.tagged_or_latest()) if not o["all_tags"] else ref.name)
    return 0


# -- login / logout ----------------------------------------------------------------------------


def run_login(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli import credentials
    from tether.images.reference import registry_of

    server = args[0] if args else ""
    domain = registry_of(server)
    username = o["username"] or ""
    password = o["password"] or ""
    if o["password"] and o["password_stdin"]:
        raise CliError("--password and --password-stdin are mutually exclusive")
    if o["password_stdin"]:
        if not username:
            raise CliError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        sys.stderr.write(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"
        )
    if not username or not password:
        if not sys.stdin.isatty():
            raise CliError("Error: Cannot perform an interactive login from a non TTY device")
        stored = credentials.lookup(domain) or {}
        if not username:
            default = stored.get("username", "")
            prompt = f"Username ({default}): " if default else "Username: "
            sys.stdout.write(prompt)
            sys.stdout.flush()
            username = sys.stdin.readline().strip() or default
        if not password:
            import getpass

            password = getpass.getpass("Password: ")
    if not username:
        raise CliError("Error: Non-null Username Required")
    if not password:
        raise CliError("Error: Password Required")
    body = {
        "username": username,
        "password": password,
        "serveraddress": credentials.key_for(domain),
    }
    try:
        ctx.call("POST", "/auth", body=body)
    except ApiError as exc:
        raise api_error(exc) from None
    credentials.store(domain, username, password)
    sys.stderr.write(
        f"WARNING! Your credentials are stored unencrypted in '{credentials.config_path()}'.\n"
        "Configure a credential helper to remove this warning. See\n"
        "https://docs.docker.com/go/credential-store/\n\n"
    )
    print("Login Succeeded")
    return 0


def run_logout(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli import credentials
    from tether.images.reference import registry_of

    domain = registry_of(args[0] if args else "")
    key = credentials.key_for(domain)
    if credentials.lookup(domain) is None:
        print(f"Not logged in to {key}")
        return 0
    print(f"Removing login credentials for {key}")
    credentials.remove(domain)
    return 0


# -- import ------------------------------------------------------------------------------------


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
    if o["message"]:
        query["message"] = o["message"]
    if o["platform"]:
        query["platform"] = _platform(o["platform"])
    resp = ctx.open("POST", "/images/create", query=query, raw=data)
    body = resp.read()
    resp.close()
    if resp.status >= 400:
        raise CliError(f"Error response from daemon: {wire.loads(body).get('message')}")
    print(wire.loads(body)["status"])
    return 0


# -- images ------------------------------------------------------------------------------------


def run_ls(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    query: dict[str, Any] = {}
    filters: dict[str, list[str]] = {}
    for f in o["filter"]:
        k, eq, v = f.partition("=")
        if not eq:
            raise CliError(
                "bad format of filter (expected name=value)\nSee 'tether images --help'."
            )
        filters.setdefault(k.strip().lower(), []).append(v)
    if args:
        filters.setdefault("reference", []).append(args[0])
    if filters:
        query["filters"] = {k: {v: True for v in vs} for k, vs in filters.items()}
    if o["all"]:
        query["all"] = 1
    try:
        images = ctx.call("GET", "/images/json", query=query or None)
    except ApiError as exc:
        raise api_error(exc) from None
    rows = image_rows(images, o["no_trunc"])
    if o["quiet"]:
        sys.stdout.write(image_ids(rows))
        return 0
    default = IMAGE_DIGESTS if o["digests"] else IMAGE_DEFAULT
    sys.stdout.write(render_table_template(o["format"] or default, rows, HEADERS))
    return 0


# -- rmi, tag, history, inspect, prune ---------------------------------------------------------


def run_rm(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    status = 0
    query: dict[str, Any] = {}
    if o["force"]:
        query["force"] = 1
    if o.get("no_prune"):
        query["noprune"] = 1
    for name in args:
        try:
            for item in ctx.call("DELETE", f"/images/{quote(name)}", query=query or None):
                for k, v in item.items():
                    print(f"{k}: {v}")
        except ApiError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            status = 1
    return status


def run_tag(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.images.reference import ReferenceError, parse

    source, target = args
    try:
        ref = parse(target)
    except ReferenceError as exc:
        raise CliError(
            f'Error parsing reference: "{target}" is not a valid repository/tag: {exc}'
        ) from None
    if ref.digest:
        raise CliError(
            f'Error parsing reference: "{target}" is not a valid repository/tag: '
            "refusing to create a tag with a digest reference"
        )
    query = {"repo": ref.name, "tag": ref.tag or "latest"}
    try:
        ctx.call("POST", f"/images/{quote(source)}/tag", query=query)
    except ApiError as exc:
        raise api_error(exc) from None
    return 0


def run_history(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    try:
        items = ctx.call("GET", f"/images/{quote(args[0])}/history")
    except ApiError as exc:
        raise api_error(exc) from None
    if o["quiet"]:
        for h in items:
            ident = h["Id"]
            print(
                ident
                if o["no_trunc"]
                else ident.removeprefix("sha256:")[:12]
                if ident != "<missing>"
                else ident
            )
        return 0
    rows = []
    for h in items:
        ident = h["Id"]
        if ident != "<missing>" and not o["no_trunc"]:
            ident = ident.removeprefix("sha256:")[:12]
        created_by = (
            " ".join(h.get("CreatedBy", "").split())
            if not o["no_trunc"]
            else h.get("CreatedBy", "")
        )
        if not o["no_trunc"] and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        human = o["human"]
        rows.append(
            {
                "ID": ident,
                "CreatedSince": since(h["Created"])
                if human
                else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h["Created"])),
                "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h["Created"])),
                "CreatedBy": created_by,
                "Size": human_size(h.get("Size", 0)) if human else str(h.get("Size", 0)),
                "Comment": h.get("Comment", ""),
            }
        )
    fmt = o["format"] or "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    sys.stdout.write(render_table_template(fmt, rows, HISTORY_HEADERS))
    return 0


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


def run_prune(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    if not o["force"]:
        warning = (
            "WARNING! This will remove all images without at least one container associated to them."
            if o["all"]
            else "WARNING! This will remove all dangling images."
        )
        sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    filters: dict[str, Any] = {}
    for f in o["filter"]:
        k, eq, v = f.partition("=")
        if not eq:
            raise CliError("bad format of filter (expected name=value)")
        filters.setdefault(k.strip().lower(), {})[v] = True
    if o["all"]:
        filters["dangling"] = {"false": True}
    try:
        report = ctx.call("POST", "/images/prune", query={"filters": filters} if filters else None)
    except ApiError as exc:
        raise api_error(exc) from None
    deleted = report.get("ImagesDeleted") or []
    if deleted:
        print("Deleted Images:")
        for item in deleted:
            for k, v in item.items():
                print(f"{k.lower()}: {v}")
        print()
    print(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}")
    return 0


# -- save / load -------------------------------------------------------------------------------


def run_save(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    import os

    output = o["output"] or ""
    if not output and sys.stdout.isatty():
        raise CliError("Cowardly refusing to save to a terminal. Use the -o flag or redirect")
    query: dict[str, Any] = {"names": list(args)}
    if o["platform"]:
        query["platform"] = _platform(o["platform"])
    resp = ctx.open("GET", "/images/get", query=query)
    err = _stream_error(resp)
    if err is not None:
        raise err
    if output:
        d = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(d):
            resp.close()
            raise CliError(
                f'failed to save image: invalid output path: directory "{d}" does not exist'
            )
        tmp = f"{output}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                for chunk in resp.iter_body():
                    f.write(chunk)
            os.rename(tmp, output)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        finally:
            resp.close()
        return 0
    out = sys.stdout.buffer
    try:
        for chunk in resp.iter_body():
            out.write(chunk)
        out.flush()
    finally:
        resp.close()
    return 0


def run_load(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether.cli import jsonmessage

    source = o["input"] or ""
    if source:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise CliError(
                f"open {source}: {exc.strerror.lower() if exc.strerror else exc}"
            ) from None
    else:
        if sys.stdin.isatty():
            raise CliError("requested load from stdin, but stdin is empty")
        data = sys.stdin.buffer.read()
    # docker: progress only on a terminal.
    quiet = o["quiet"] or not sys.stdout.isatty()
    query: dict[str, Any] = {"quiet": 1} if quiet else {}
    if o["platform"]:
        query["platform"] = _platform(o["platform"])
    resp = ctx.open("POST", "/images/load", query=query or None, raw=data)
    err = _stream_error(resp)
    if err is not None:
        raise err
    try:
        failure = jsonmessage.display(resp)
    finally:
        resp.close()
    if failure:
        raise CliError(failure)
    return 0


# -- commands ----------------------------------------------------------------------------------

_TRUST = Flag("disable-content-trust", kind="bool", default=True, help="Skip image verification")

PULL = Command(
    "pull",
    "[OPTIONS] NAME[:TAG|@DIGEST]",
    "Download an image from a registry",
    [
        Flag("all-tags", "a", kind="bool", help="Download all tagged images in the repository"),
        _TRUST,
        Flag("platform", help="Set platform if server is multi-platform capable"),
        Flag("quiet", "q", kind="bool", help="Suppress verbose output"),
    ],
    min_args=1,
    max_args=1,
    handler=run_pull,
    aliases=("image pull",),
)
PUSH = Command(
    "push",
    "[OPTIONS] NAME[:TAG]",
    "Upload an image to a registry",
    [
        Flag("all-tags", "a", kind="bool", help="Push all tags of an image to the repository"),
        _TRUST,
        Flag("platform", help="Push a platform-specific manifest as a single-platform image"),
        Flag("quiet", "q", kind="bool", help="Suppress verbose output"),
    ],
    min_args=1,
    max_args=1,
    handler=run_push,
    aliases=("image push",),
)
LOGIN = Command(
    "login",
    "[OPTIONS] [SERVER]",
    "Authenticate to a registry.\nDefaults to Docker Hub if no server is specified.",
    [
        Flag("password", "p", help="Password or Personal Access Token (PAT)"),
        Flag(
            "password-stdin",
            kind="bool",
            help="Take the Password or Personal Access Token (PAT) from stdin",
        ),
        Flag("username", "u", help="Username"),
    ],
    max_args=1,
    handler=run_login,
)
LOGOUT = Command(
    "logout",
    "[SERVER]",
    "Log out from a registry.\nIf no server is specified, the default is defined by the daemon.",
    [],
    max_args=1,
    handler=run_logout,
)
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
        Flag("platform", help="Set platform if server is multi-platform capable"),
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
        Flag("all", "a", kind="bool", help="Show all images (default hides intermediate images)"),
        Flag("digests", kind="bool", help="Show digests"),
        Flag(
            "filter",
            "f",
            kind="list",
            metavar="filter",
            help="Filter output based on conditions provided",
        ),
        Flag("format", help="Format output using a custom template"),
        Flag("no-trunc", kind="bool", help="Don't truncate output"),
        Flag("quiet", "q", kind="bool", help="Only show image IDs"),
    ],
    max_args=1,
    handler=run_ls,
    aliases=("image list", "images"),
)
RM = Command(
    "image rm",
    "[OPTIONS] IMAGE [IMAGE...]",
    "Remove one or more images",
    [
        Flag("force", "f", kind="bool", help="Force removal of the image"),
        Flag("no-prune", kind="bool", help="Do not delete untagged parents"),
    ],
    min_args=1,
    handler=run_rm,
    aliases=("image remove", "rmi"),
)
RMI = Command(
    "rmi",
    RM.usage,
    RM.summary,
    RM.flags,
    min_args=1,
    handler=run_rm,
    aliases=("image rm", "image remove"),
)
TAG = Command(
    "tag",
    "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
    "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
    [],
    min_args=2,
    max_args=2,
    handler=run_tag,
    aliases=("image tag",),
)
HISTORY = Command(
    "history",
    "[OPTIONS] IMAGE",
    "Show the history of an image",
    [
        Flag("format", help="Format output using a custom template"),
        Flag(
            "human",
            "H",
            kind="bool",
            default=True,
            help="Print sizes and dates in human readable format",
        ),
        Flag("no-trunc", kind="bool", help="Don't truncate output"),
        Flag("quiet", "q", kind="bool", help="Only show image IDs"),
    ],
    min_args=1,
    max_args=1,
    handler=run_history,
    aliases=("image history",),
)
INSPECT = Command(
    "image inspect",
    "[OPTIONS] IMAGE [IMAGE...]",
    "Display detailed information on one or more images",
    [Flag("format", "f", help="Format output using a custom template")],
    min_args=1,
    handler=run_inspect,
)
PRUNE = Command(
    "image prune",
    "[OPTIONS]",
    "Remove unused images",
    [
        Flag("all", "a", kind="bool", help="Remove all unused images, not just dangling ones"),
        Flag(
            "filter",
            kind="list",
            metavar="filter",
            help='Provide filter values (e.g. "until=<timestamp>")',
        ),
        Flag("force", "f", kind="bool", help="Do not prompt for confirmation"),
    ],
    max_args=0,
    handler=run_prune,
)
SAVE = Command(
    "save",
    "[OPTIONS] IMAGE [IMAGE...]",
    "Save one or more images to a tar archive (streamed to STDOUT by default)",
    [
        Flag("output", "o", help="Write to a file, instead of STDOUT"),
        Flag("platform", help="Save only the given platform variant"),
    ],
    min_args=1,
    handler=run_save,
    aliases=("image save",),
)
LOAD = Command(
    "load",
    "[OPTIONS]",
    "Load an image from a tar archive or STDIN",
    [
        Flag("input", "i", help="Read from tar archive file, instead of STDIN"),
        Flag("platform", help="Load only the given platform variant"),
        Flag("quiet", "q", kind="bool", help="Suppress the load output"),
    ],
    max_args=0,
    handler=run_load,
    aliases=("image load",),
)


COMMANDS = {
    "import": IMPORT,
    "ls": LS,
    "list": LS,
    "rm": RM,
    "remove": RM,
    "inspect": INSPECT,
    "pull": PULL,
    "push": PUSH,
    "tag": TAG,
    "history": HISTORY,
    "save": SAVE,
    "load": LOAD,
    "prune": PRUNE,
    "build": BUILD,
}
