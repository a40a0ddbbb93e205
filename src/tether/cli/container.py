"""tether run|create|start|stop|restart|kill|rm|ps|inspect|logs|exec|wait|port."""

from __future__ import annotations

import os
import sys

from tether import netmodes
from tether import textcheck as tc
from tether.cli.context import CliError, Context, api_error
from tether.cli.flags import Command, Flag
from tether.cli.output import demux as _demux
from tether.cli.output import parse_filters, print_inspected, render_table_template
from tether.cli.views import PS_DEFAULT, PS_HEADERS, PS_QUIET_WARNING, host_port, ps_row
from tether.client import ApiError, quote

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from tether.client import Response


def _q(s: str) -> str:
    return quote(s)


def _is_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    )


def _parse_env(values: list[str]) -> list[str]:
    out = []
    for v in values:
        if "=" in v:
            out.append(v)
        elif v in os.environ:  # -e NAME takes the value from the caller's environment
            out.append(f"{v}={os.environ[v]}")
    return out


def _container_body(o: dict[str, Any], args: list[str]) -> tuple[dict[str, Any], str]:
    """The create request, with the checks docker's CLI makes before calling the daemon."""
    from tether import portspec

    image, cmd = args[0], args[1:]
    networks = o["network"] or []
    mode = networks[0] if networks else "default"
    if o["network_alias"] and not netmodes.is_user_defined(mode):
        raise CliError(
            "tether: network-scoped aliases are only supported for user-defined networks\nSee 'tether run --help'.",
            125,
        )
    if o["mac_address"] and not _is_mac(o["mac_address"]):
        raise CliError(
            f"tether: {o['mac_address']} is not a valid mac address\nSee 'tether run --help'.", 125
        )
    for h in o["add_host"]:
        name, sep, ip = h.partition(":")
        if not sep or not name or not ip:
            raise CliError(
                f'tether: invalid argument "{h}" for "--add-host" flag: bad format for add-host: "{h}"\nSee \'tether run --help\'.',
                125,
            )
    try:
        exposed, bindings = portspec.parse_publish(o["publish"], o["expose"])
    except ValueError as exc:
        raise CliError(f"tether: {exc}\nSee 'tether run --help'.", 125) from None
    from tether import secopts

    try:
        security = secopts.host_config(
            o["privileged"], o["cap_add"], o["cap_drop"], o["security_opt"]
        )
    except secopts.SecurityOptError as exc:
        raise CliError(f"tether: {exc}\nSee 'tether run --help'.", 125) from None
    body: dict[str, Any] = {
        "Hostname": o["hostname"] or "",
        "Domainname": o["domainname"] or "",
        "Image": image,
        "Env": _parse_env(o["env"]),
        "Labels": dict(label.partition("=")[::2] for label in o["label"]),
        "ExposedPorts": exposed,
        "WorkingDir": o["workdir"] or "",
        "AttachStdin": bool(o["interactive"]) and not o["detach"],
        "AttachStdout": not o["detach"],
        "AttachStderr": not o["detach"],
        "Tty": bool(o["tty"]),
        "OpenStdin": bool(o["interactive"]),
        # docker run -i (attached): the container's stdin closes when ours does.
        "StdinOnce": bool(o["interactive"]) and not o["detach"],
        "HostConfig": {
            "NetworkMode": mode,
            "PortBindings": bindings,
            "PublishAllPorts": o["publish_all"],
            "Dns": o["dns"],
            "DnsSearch": o["dns_search"],
            "DnsOptions": o["dns_option"],
            "ExtraHosts": o["add_host"] or None,
            "AutoRemove": o["rm"],
            **security,
        },
        "NetworkingConfig": {"EndpointsConfig": {}},
    }
    if cmd:
        body["Cmd"] = cmd
    if o["entrypoint"] is not None:
        body["Entrypoint"] = [o["entrypoint"]] if o["entrypoint"] else []
    if o["mac_address"]:
        body["MacAddress"] = o["mac_address"]
    if o["stop_signal"]:
        body["StopSignal"] = o["stop_signal"]
    if o["stop_timeout"] is not None:
        body["StopTimeout"] = o["stop_timeout"]
    # Sent on as given: the daemon refuses what it cannot enforce yet, in its own words.
    if o["user"]:
        body["User"] = o["user"]
    if o["read_only"]:
        body["HostConfig"]["ReadonlyRootfs"] = True
    _storage_options(o, body)
    if o["log_driver"] or o["log_opt"]:
        body["HostConfig"]["LogConfig"] = {
            "Type": o["log_driver"] or "",
            "Config": dict(opt.partition("=")[::2] for opt in o["log_opt"]),
        }
    if o["pids_limit"] is not None:
        body["HostConfig"]["PidsLimit"] = o["pids_limit"]
    if o["memory"]:
        from tether.unsupported import ram_in_bytes

        body["HostConfig"]["Memory"] = ram_in_bytes(o["memory"])
    endpoints = body["NetworkingConfig"]["EndpointsConfig"]
    for i, net in enumerate(networks):
        ep: dict[str, Any] = {}
        if i == 0:
            ipam = {}
            if o["ip"]:
                ipam["IPv4Address"] = o["ip"]
            if o["ip6"]:
                ipam["IPv6Address"] = o["ip6"]
            if ipam:
                ep["IPAMConfig"] = ipam
            if o["network_alias"]:
                ep["Aliases"] = o["network_alias"]
        endpoints[net] = ep
    if not networks and (o["ip"] or o["ip6"]):
        endpoints[netmodes.DEFAULT_NETWORK] = {
            "IPAMConfig": {
                k: v for k, v in (("IPv4Address", o["ip"]), ("IPv6Address", o["ip6"])) if v
            }
        }
    return body, image


def _storage_options(o: dict[str, Any], body: dict[str, Any]) -> None:
    """-v, --mount, --tmpfs, --volumes-from, --restart, --group-add, --shm-size into the
    create request as docker run sends them (docker's client-side checks first)."""
    from tether.cli import mounts

    hc = body["HostConfig"]
    try:
        binds, anonymous = mounts.volume_binds(o["volume"])
        restart = mounts.parse_restart(o["restart"] or "")
    except ValueError as exc:
        raise CliError(f"tether: {str(exc).rstrip('.')}.\nSee 'tether run --help'.", 125) from None
    if restart and restart["Name"] != "no" and o["rm"]:
        raise CliError(
            "tether: Conflicting options: --restart and --rm.\nSee 'tether run --help'.", 125
        )
    if binds:
        hc["Binds"] = binds
    if anonymous:
        body["Volumes"] = anonymous
    if o["mount"]:
        hc["Mounts"] = [mounts.parse_mount(m) for m in o["mount"]]
    if o["tmpfs"]:
        hc["Tmpfs"] = mounts.parse_tmpfs(o["tmpfs"])
    if o["volumes_from"]:
        hc["VolumesFrom"] = o["volumes_from"]
    if restart:
        hc["RestartPolicy"] = restart
    if o["group_add"]:
        hc["GroupAdd"] = o["group_add"]
    if o["shm_size"]:
        from tether.unsupported import ram_in_bytes

        hc["ShmSize"] = ram_in_bytes(o["shm_size"])


def _create(ctx: Context, o: dict[str, Any], args: list[str], command: str) -> str:
    body, image = _container_body(o, args)
    policy = o.get("pull") or "missing"
    if policy not in ("always", "missing", "never"):
        raise CliError(
            f'tether: invalid pull option: \'{policy}\': must be one of "always", "missing" '
            f"or \"never\"\nSee 'tether {command} --help'.",
            125,
        )
    if policy == "always":
        _pull_image(ctx, o, image, command)

    missing = ""  # the image the daemon did not have

    params = {k: v for k, v in (("name", o["name"]), ("platform", o.get("platform"))) if v}

    def create() -> Any:
        return ctx.call("POST", "/containers/create", query=params or None, body=body)

    try:
        try:
            resp = create()
        except ApiError as exc:
            # Not here, or here for another platform (--platform): pulled, as docker does.
            if exc.status != 404 or not (
                exc.message.startswith("No such image")
                or "does not match the specified platform" in exc.message
            ):
                raise
            ref = image if ":" in image.rsplit("/", 1)[-1] or "@" in image else f"{image}:latest"
            sys.stderr.write(f"Unable to find image '{ref}' locally\n")
            missing = ref
            if policy != "missing":
                raise
            # As docker: the daemon pulls it (progress on stderr), then the create again.
            _pull_image(ctx, o, image, command)
            resp = create()
    except ApiError as exc:
        raise CliError(
            f"tether: Error response from daemon: {exc.message}\nRun 'tether {command} --help' for more information"
            + _image_hint(missing),
            125,
        ) from None
    except CliError as exc:
        if not missing:
            raise
        raise CliError(exc.message + _image_hint(missing), exc.code) from None
    for w in resp.get("Warnings") or []:
        sys.stderr.write(f"WARNING: {w}\n")
    return str(resp["Id"])


def _image_hint(ref: str) -> str:
    """Beyond docker's words, after them: where else an image comes from on a machine that
    cannot reach a registry (the lesson's first stumble)."""
    if not ref:
        return ""
    return (
        f"\nTo use {ref} without a registry: `tether load -i FILE.tar` (an image saved with "
        f"docker save or tether save), or `tether import ROOTFS.tar {ref}` (a root filesystem)"
    )


def _pull_image(ctx: Context, o: dict[str, Any], image: str, command: str) -> None:
    from tether.cli.image import pull

    try:
        pull(ctx, image, o.get("platform") or "", bool(o.get("quiet")), out=sys.stderr)
    except CliError as exc:
        text = exc.message.removeprefix("Error response from daemon: ")
        raise CliError(
            f"tether: Error response from daemon: {text}\nRun 'tether {command} --help' for more information",
            125,
        ) from None


def _start_error(exc: ApiError, command: str) -> CliError:
    code = 125
    if "executable file not found" in exc.message or "no such file or directory" in exc.message:
        code = 127
    elif "permission denied" in exc.message:
        code = 126
    return CliError(
        f"tether: Error response from daemon: {exc.message}\nRun 'tether {command} --help' for more information",
        code,
    )


def run_create(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    print(_create(ctx, o, args, "create"))
    return 0


def run_run(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    if o["tty"] and o["interactive"] and not o["detach"] and not sys.stdin.isatty():
        raise CliError("tether: the input device is not a TTY", 1)
    cid = _create(ctx, o, args, "run")
    if o["detach"]:
        try:
            ctx.call("POST", f"/containers/{cid}/start")
        except ApiError as exc:
            raise _start_error(exc, "run") from None
        print(cid)
        return 0
    return start_attached(
        ctx,
        cid,
        tty=o["tty"],
        stdin=o["interactive"],
        keys=o.get("detach_keys"),
        removed=o["rm"],
        start_error=lambda exc: _start_error(exc, "run"),
    )


def start_attached(
    ctx: Context,
    cid: str,
    *,
    tty: bool,
    stdin: bool,
    keys: str | None,
    removed: bool,
    start_error: Callable[[ApiError], CliError],
    sig_proxy: bool = True,
) -> int:
    """docker run's and start -a's sequence: attach first (nothing the container writes is
    missed), then wait (its headers come back at once; until removal for an auto-removed
    container), start, and stream until the output ends; the container's status last, or 0
    when the user detached."""
    stream = _attach(ctx, cid, stdin, keys)
    condition = "removed" if removed else "next-exit"
    waiting = ctx.open("POST", f"/containers/{cid}/wait", query={"condition": condition})
    try:
        ctx.call("POST", f"/containers/{cid}/start")
    except ApiError as exc:
        waiting.close()
        stream.close()
        raise start_error(exc) from None
    if _stream(ctx, cid, stream, tty, stdin, keys, sig_proxy=sig_proxy):
        waiting.close()
        return 0
    return _wait_status(waiting)


def _wait_status(waiting: Response) -> int:
    from tether import wire

    data = waiting.read()
    waiting.close()
    try:
        return int(wire.loads(data)["StatusCode"])
    except (ValueError, KeyError, TypeError):
        return 125


def _attach(ctx: Context, cid: str, stdin: bool, keys: str | None) -> Response:
    """The hijacked attach stream of a container (stdout and stderr, stdin if asked)."""
    q: dict[str, Any] = {"stream": 1, "stdout": 1, "stderr": 1, "stdin": 1 if stdin else None}
    if keys:
        q["detachKeys"] = keys
    resp: Response = ctx.open(
        "POST",
        f"/containers/{cid}/attach",
        query=q,
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
    )
    if resp.status >= 400:
        from tether import wire

        data = resp.read()
        resp.close()
        raise CliError(f"Error response from daemon: {wire.loads(data).get('message')}")
    return resp


def _detach_bytes(keys: str | None) -> bytes:
    from tether.api.query import detach_keys
    from tether.errors import InvalidParameter

    try:
        return detach_keys(keys)
    except InvalidParameter as exc:
        raise CliError(exc.message) from None


def _stream(
    ctx: Context,
    cid: str,
    resp: Response,
    tty: bool,
    interactive: bool,
    keys: str | None,
    sig_proxy: bool = True,
) -> bool:
    """Relay an attach stream to our stdout/stderr (and our stdin to it) until it ends;
    True when the user detached (the detach keys, on a terminal)."""
    import signal
    import threading

    detached = threading.Event()
    restore = None
    if tty and sys.stdin.isatty():
        restore = _raw_container_terminal(ctx, cid)
    elif sig_proxy:
        # Without a terminal, signals go to the container (docker's --sig-proxy).
        def forward(sig: int, _frame: object) -> None:
            try:
                ctx.call("POST", f"/containers/{cid}/kill", query={"signal": str(sig)})
            except (ApiError, CliError):
                pass

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
    if interactive:
        sequence = _detach_bytes(keys) if tty else b""
        threading.Thread(
            target=_pump_stdin, args=(resp.sock, sequence, detached), daemon=True
        ).start()
    try:
        if tty:
            out = sys.stdout.buffer
            for chunk in resp.iter_body():
                out.write(chunk)
                out.flush()
        else:
            _demux(resp)
    except CliError:
        if not detached.is_set():
            raise
    finally:
        if restore is not None:
            restore()
        resp.close()
    return detached.is_set()


def _raw_container_terminal(ctx: Context, cid: str) -> Any:
    """Our terminal in raw mode for a container's, its size sent now and on every SIGWINCH."""
    import shutil
    import signal
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)

    def resize(*_: object) -> None:
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            size = shutil.get_terminal_size()
        try:
            ctx.call(
                "POST", f"/containers/{cid}/resize", query={"h": size.lines, "w": size.columns}
            )
        except (ApiError, CliError):
            pass

    resize()
    signal.signal(signal.SIGWINCH, resize)

    def restore() -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore


def _each(
    ctx: Context,
    names: list[str],
    method: str,
    path: str,
    query: dict[str, Any] | None = None,
    fail_prefix: str = "",
) -> int:
    status = 0
    for name in names:
        try:
            ctx.call(method, path.format(_q(name)), query=query)
        except ApiError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            status = 1
            continue
        print(name)
    return status


def run_start(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    if o["attach"] or o["interactive"]:
        from tether.cli.attach import run_start_attached

        return run_start_attached(ctx, o, args)
    failed = []
    for name in args:
        try:
            ctx.call("POST", f"/containers/{_q(name)}/start")
        except ApiError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            failed.append(name)
            continue
        print(name)
    if failed:
        raise CliError("Error: failed to start containers: " + ", ".join(failed))
    return 0


def run_stop(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    q = {"t": o["time"]} if o["time"] is not None else None
    return _each(ctx, args, "POST", "/containers/{}/stop", q)


def run_restart(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    q = {"t": o["time"]} if o["time"] is not None else None
    return _each(ctx, args, "POST", "/containers/{}/restart", q)


def run_kill(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    return _each(
        ctx, args, "POST", "/containers/{}/kill", {"signal": o["signal"]} if o["signal"] else None
    )


def run_rm(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    query: dict[str, Any] = {"force": 1} if o["force"] else {}
    if o["volumes"]:
        query["v"] = 1  # the anonymous volumes too
    return _each(ctx, args, "DELETE", "/containers/{}", query or None)


def run_wait(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether import wire

    status = 0
    for name in args:
        try:
            resp = ctx.open("POST", f"/containers/{_q(name)}/wait")
            data = resp.read()
            resp.close()
            if resp.status >= 400:
                raise ApiError(resp.status, str(wire.loads(data).get("message")))
            print(wire.loads(data)["StatusCode"])
        except ApiError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            status = 1
    return status


def run_ps(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    filters = parse_filters(o["filter"])
    show_all = o["all"] or o["latest"] or o["last"] not in (None, -1)
    try:
        items = ctx.call(
            "GET",
            "/containers/json",
            query={"all": 1 if show_all else None, "filters": filters or None},
        )
    except ApiError as exc:
        raise api_error(exc) from None
    if o["latest"]:
        items = items[:1]
    elif o["last"] not in (None, -1):
        items = items[: o["last"]]
    rows = [ps_row(c, o["no_trunc"]) for c in items]
    if o["quiet"]:
        if o["format"]:
            sys.stderr.write(PS_QUIET_WARNING)
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    fmt = o["format"] or PS_DEFAULT
    if fmt == "json":
        fmt = "{{json .}}"
        rows = [{k: v for k, v in r.items() if k != "Label"} for r in rows]
    sys.stdout.write(render_table_template(fmt, rows, PS_HEADERS))
    return 0


def run_inspect(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    kinds = {
        "container": "/containers/{}/json",
        "image": "/images/{}/json",
        "network": "/networks/{}",
    }
    order = [o["type"]] if o["type"] else ["container", "image", "network"]
    for t in order:
        if t not in kinds:
            raise CliError(f'"{t}" is not a valid value for --type')
    found: list[Any] = []
    errors: list[str] = []
    for name in args:
        for t in order:
            try:
                q = {"verbose": "1"} if o["verbose"] and t != "image" else None
                found.append(ctx.call("GET", kinds[t].format(_q(name)), query=q))
                break
            except ApiError as exc:
                if exc.status != 404:
                    errors.append(f"Error response from daemon: {exc.message}")
                    break
        else:
            errors.append(f"Error: No such object: {name}")
    print_inspected(o["format"] or "", found, errors)
    return 0


def run_logs(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    q: dict[str, Any] = {
        "stdout": 1,
        "stderr": 1,
        "follow": 1 if o["follow"] else None,
        "timestamps": 1 if o["timestamps"] else None,
    }
    if o["tail"] and o["tail"] != "all":
        q["tail"] = o["tail"]
    if o["since"]:
        q["since"] = o["since"]
    resp = ctx.open("GET", f"/containers/{_q(args[0])}/logs", query=q)
    if resp.status >= 400:
        from tether import wire

        data = resp.read()
        resp.close()
        raise CliError(f"Error response from daemon: {wire.loads(data).get('message')}")
    try:
        _demux(resp)
    except KeyboardInterrupt:
        pass
    resp.close()
    return 0


def run_exec(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    from tether import wire

    body = {
        "AttachStdin": o["interactive"] and not o["detach"],
        "AttachStdout": not o["detach"],
        "AttachStderr": not o["detach"],
        "Tty": o["tty"],
        "Cmd": args[1:],
        "Env": _parse_env(o["env"]),
        "WorkingDir": o["workdir"] or "",
        "Privileged": bool(o.get("privileged")),
        "User": o.get("user") or "",
    }
    try:
        ex = ctx.call("POST", f"/containers/{_q(args[0])}/exec", body=body)
    except ApiError as exc:
        raise api_error(exc) from None
    exec_id = ex["Id"]
    if o["detach"]:
        try:
            ctx.call("POST", f"/exec/{exec_id}/start", body={"Detach": True, "Tty": o["tty"]})
        except ApiError as exc:
            raise api_error(exc) from None
        return 0
    resp = ctx.open(
        "POST",
        f"/exec/{exec_id}/start",
        body={"Detach": False, "Tty": o["tty"]},
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
    )
    if resp.status >= 400:
        data = resp.read()
        resp.close()
        raise CliError(f"Error response from daemon: {wire.loads(data).get('message')}")
    restore = None
    if o["tty"] and sys.stdin.isatty():
        restore = _raw_terminal(ctx, exec_id)
    pump = None
    if o["interactive"]:
        import threading

        pump = threading.Thread(target=_pump_stdin, args=(resp.sock,), daemon=True)
        pump.start()
    try:
        if o["tty"]:
            out = sys.stdout.buffer
            for chunk in resp.iter_body():
                out.write(chunk)
                out.flush()
        else:
            _demux(resp)
    finally:
        if restore is not None:
            restore()
        resp.close()
    info = ctx.call("GET", f"/exec/{exec_id}/json")
    code = info.get("ExitCode")
    return int(code) if code is not None else 0


def _pump_stdin(sock: Any, detach: bytes = b"", detached: Any = None) -> None:
    """Our stdin to the stream, then a half-close.  With `detach` (a terminal's detach
    keys), that sequence is not sent: it ends the session and leaves the container running."""
    import _socket

    fd = sys.stdin.fileno()
    matched = 0
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            if detach:
                out = bytearray()
                for b in data:
                    if b == detach[matched]:
                        matched += 1
                        if matched == len(detach):
                            if out:
                                sock.sendall(bytes(out))
                            if detached is not None:
                                detached.set()
                            sock.shutdown(_socket.SHUT_RDWR)
                            return
                        continue
                    if matched:
                        out += detach[:matched]
                        matched = 0
                    if b == detach[0]:
                        matched = 1
                    else:
                        out.append(b)
                data = bytes(out)
            if data:
                sock.sendall(data)
    except OSError:
        pass
    try:
        sock.shutdown(_socket.SHUT_WR)
    except OSError:
        pass


def _raw_terminal(ctx: Context, exec_id: str) -> Any:
    import shutil
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    size = shutil.get_terminal_size()
    try:
        ctx.call("POST", f"/exec/{exec_id}/resize", query={"h": size.lines, "w": size.columns})
    except (ApiError, CliError):
        pass

    def restore() -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore


def run_port(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    try:
        info = ctx.call("GET", f"/containers/{_q(args[0])}/json")
    except ApiError as exc:
        raise api_error(exc) from None
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    from tether.cli.output import natural_key

    lines: list[str] = []
    if len(args) > 1:
        want = args[1] if "/" in args[1] else f"{args[1]}/tcp"
        bindings = ports.get(want)
        if not bindings:
            raise CliError(f"Error: No public port '{want}' published for {args[0]}")
        lines = [host_port(b["HostIp"], b["HostPort"]) for b in bindings]
    else:
        lines = [
            f"{key} -> {host_port(b['HostIp'], b['HostPort'])}"
            for key in ports
            for b in ports[key] or []
        ]
    lines.sort(key=natural_key)  # docker port sorts its lines naturally
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def _check_memory(value: str) -> str:
    from tether.unsupported import ram_in_bytes

    ram_in_bytes(value)  # docker's "invalid size: 'x'"
    return value


def _check_mount(value: str) -> str:
    from tether.cli.mounts import check_mount

    return check_mount(value)


RUN_FLAGS = [
    Flag(
        "add-host",
        kind="list",
        metavar="list",
        help="Add a custom host-to-IP mapping (host:ip)",
        check=tc.check_extra_host_arg,
    ),
    Flag("cap-add", kind="list", metavar="list", help="Add Linux capabilities"),
    Flag("cap-drop", kind="list", metavar="list", help="Drop Linux capabilities"),
    Flag("detach", "d", kind="bool", help="Run container in background and print container ID"),
    Flag("detach-keys", help="Override the key sequence for detaching a container"),
    Flag("dns", kind="list", metavar="list", help="Set custom DNS servers", check=tc.check_ip),
    Flag(
        "dns-option",
        kind="list",
        metavar="list",
        help="Set DNS options",
        check=tc.check_dns_option,
    ),
    Flag(
        "dns-search",
        kind="list",
        metavar="list",
        help="Set custom DNS search domains",
        check=tc.check_dns_search,
    ),
    Flag("domainname", help="Container NIS domain name", check=tc.check_domainname),
    Flag("entrypoint", help="Overwrite the default ENTRYPOINT of the image"),
    Flag(
        "env",
        "e",
        kind="list",
        metavar="list",
        help="Set environment variables",
        check=tc.check_env,
    ),
    Flag("expose", kind="list", metavar="list", help="Expose a port or a range of ports"),
    Flag("group-add", kind="list", metavar="list", help="Add additional groups to join"),
    Flag("hostname", "h", help="Container host name", check=tc.check_hostname),
    Flag("interactive", "i", kind="bool", help="Keep STDIN open even if not attached"),
    Flag("ip", help="IPv4 address (e.g., 172.30.100.104)"),
    Flag("ip6", help="IPv6 address (e.g., 2001:db8::33)"),
    Flag(
        "label",
        "l",
        kind="list",
        metavar="list",
        help="Set meta data on a container",
        check=tc.check_label_arg,
    ),
    Flag("log-driver", help="Logging driver for the container (json-file or none)"),
    Flag("log-opt", kind="list", metavar="list", help="Log driver options"),
    Flag("mac-address", help="Container MAC address (e.g., 92:d0:c6:0a:29:33)"),
    Flag(
        "mount",
        kind="list",
        metavar="mount",
        help="Attach a filesystem mount to the container",
        check=_check_mount,
    ),
    Flag(
        "memory",
        "m",
        help="Memory limit (not supported by tether: only 0, no limit)",
        check=_check_memory,
    ),
    Flag("name", help="Assign a name to the container"),
    Flag("network", kind="list", metavar="network", help="Connect a container to a network"),
    Flag("net", kind="list", hidden=True),
    Flag(
        "network-alias",
        kind="list",
        metavar="list",
        help="Add network-scoped alias for the container",
        check=tc.check_alias,
    ),
    Flag("net-alias", kind="list", hidden=True, check=tc.check_alias),
    Flag(
        "pids-limit",
        kind="int",
        help="Tune container pids limit (not supported by tether: only -1 or 0, unlimited)",
    ),
    Flag("privileged", kind="bool", help="Give extended privileges to this container"),
    Flag(
        "publish",
        "p",
        kind="list",
        metavar="list",
        help="Publish a container's port(s) to the host",
    ),
    Flag("platform", help="Set platform if server is multi-platform capable"),
    Flag("publish-all", "P", kind="bool", help="Publish all exposed ports to random ports"),
    Flag(
        "pull",
        default="missing",
        help='Pull image before running ("always", "missing", "never")',
    ),
    Flag("quiet", "q", kind="bool", help="Suppress the pull output"),
    Flag("read-only", kind="bool", help="Mount the container's root filesystem as read only"),
    Flag(
        "restart",
        default="no",
        help="Restart policy to apply when a container exits",
    ),
    Flag("rm", kind="bool", help="Automatically remove the container when it exits"),
    Flag("security-opt", kind="list", metavar="list", help="Security Options"),
    Flag("shm-size", help="Size of /dev/shm", metavar="bytes", check=_check_memory),
    Flag("stop-signal", help="Signal to stop the container"),
    Flag("stop-timeout", kind="int", help="Timeout (in seconds) to stop a container"),
    Flag("tmpfs", kind="list", metavar="list", help="Mount a tmpfs directory"),
    Flag("tty", "t", kind="bool", help="Allocate a pseudo-TTY"),
    Flag("user", "u", help="Username or UID (format: <name|uid>[:<group|gid>])"),
    Flag("volume", "v", kind="list", metavar="list", help="Bind mount a volume"),
    Flag(
        "volumes-from",
        kind="list",
        metavar="list",
        help="Mount volumes from the specified container(s)",
    ),
    Flag("workdir", "w", help="Working directory inside the container"),
]


def _merge_aliases(handler: Any) -> Any:
    def wrapped(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
        o["network"] = [*o["network"], *o.pop("net", [])]
        o["network_alias"] = [*o["network_alias"], *o.pop("net_alias", [])]
        return int(handler(ctx, o, args))

    return wrapped


RUN = Command(
    "run",
    "[OPTIONS] IMAGE [COMMAND] [ARG...]",
    "Create and run a new container from an image",
    RUN_FLAGS,
    min_args=1,
    interspersed=False,
    handler=_merge_aliases(run_run),
)
CREATE = Command(
    "create",
    "[OPTIONS] IMAGE [COMMAND] [ARG...]",
    "Create a new container",
    [f for f in RUN_FLAGS if f.long not in ("detach", "rm")]
    + [
        Flag("rm", kind="bool", help="Automatically remove the container when it exits"),
        Flag("detach", kind="bool", hidden=True),
    ],
    min_args=1,
    interspersed=False,
    handler=_merge_aliases(run_create),
)
START = Command(
    "start",
    "[OPTIONS] CONTAINER [CONTAINER...]",
    "Start one or more stopped containers",
    [
        Flag("attach", "a", kind="bool", help="Attach STDOUT/STDERR and forward signals"),
        Flag("detach-keys", help="Override the key sequence for detaching a container"),
        Flag("interactive", "i", kind="bool", help="Attach container's STDIN"),
    ],
    min_args=1,
    handler=run_start,
)
STOP = Command(
    "stop",
    "[OPTIONS] CONTAINER [CONTAINER...]",
    "Stop one or more running containers",
    [Flag("time", "t", kind="int", help="Seconds to wait before killing the container")],
    min_args=1,
    handler=run_stop,
)
RESTART = Command(
    "restart",
    "[OPTIONS] CONTAINER [CONTAINER...]",
    "Restart one or more containers",
    [Flag("time", "t", kind="int", help="Seconds to wait before killing the container")],
    min_args=1,
    handler=run_restart,
)
KILL = Command(
    "kill",
    "[OPTIONS] CONTAINER [CONTAINER...]",
    "Kill one or more running containers",
    [Flag("signal", "s", help="Signal to send to the container")],
    min_args=1,
    handler=run_kill,
)
RM = Command(
    "rm",
    "[OPTIONS] CONTAINER [CONTAINER...]",
    "Remove one or more containers",
    [
        Flag(
            "force",
            "f",
            kind="bool",
            help="Force the removal of a running container (uses SIGKILL)",
        ),
        Flag(
            "volumes",
            "v",
            kind="bool",
            help="Remove anonymous volumes associated with the container",
        ),
    ],
    min_args=1,
    handler=run_rm,
)
WAIT = Command(
    "wait",
    "CONTAINER [CONTAINER...]",
    "Block until one or more containers stop, then print their exit codes",
    [],
    min_args=1,
    handler=run_wait,
)
PS = Command(
    "ps",
    "[OPTIONS]",
    "List containers",
    [
        Flag("all", "a", kind="bool", help="Show all containers (default shows just running)"),
        Flag(
            "filter",
            "f",
            kind="list",
            metavar="filter",
            help="Filter output based on conditions provided",
        ),
        Flag("format", help="Format output using a custom template"),
        Flag(
            "last",
            "n",
            kind="int",
            default=-1,
            help="Show n last created containers (includes all states)",
        ),
        Flag(
            "latest",
            "l",
            kind="bool",
            help="Show the latest created container (includes all states)",
        ),
        Flag("no-trunc", kind="bool", help="Don't truncate output"),
        Flag("quiet", "q", kind="bool", help="Only display container IDs"),
        Flag("size", "s", kind="bool", help="Display total file sizes"),
    ],
    max_args=0,
    handler=run_ps,
)
INSPECT = Command(
    "inspect",
    "[OPTIONS] NAME|ID [NAME|ID...]",
    "Return low-level information on tether objects",
    [
        Flag("format", "f", help="Format output using a custom template"),
        Flag("size", "s", kind="bool", help="Display total file sizes if the type is container"),
        Flag("type", help="Return JSON for specified type"),
        Flag("verbose", kind="bool", help="Add what tether made in the kernel (tether's own)"),
    ],
    min_args=1,
    handler=run_inspect,
)
LOGS = Command(
    "logs",
    "[OPTIONS] CONTAINER",
    "Fetch the logs of a container",
    [
        Flag("follow", "f", kind="bool", help="Follow log output"),
        Flag("since", help="Show logs since timestamp (unix seconds)"),
        Flag(
            "tail",
            "n",
            default="all",
            help='Number of lines to show from the end of the logs (default "all")',
        ),
        Flag("timestamps", "t", kind="bool", help="Show timestamps"),
    ],
    min_args=1,
    max_args=1,
    handler=run_logs,
)
EXEC = Command(
    "exec",
    "[OPTIONS] CONTAINER COMMAND [ARG...]",
    "Execute a command in a running container",
    [
        Flag("detach", "d", kind="bool", help="Detached mode: run command in the background"),
        Flag(
            "env",
            "e",
            kind="list",
            metavar="list",
            help="Set environment variables",
            check=tc.check_env,
        ),
        Flag("interactive", "i", kind="bool", help="Keep STDIN open even if not attached"),
        Flag("privileged", kind="bool", help="Give extended privileges to the command"),
        Flag("tty", "t", kind="bool", help="Allocate a pseudo-TTY"),
        Flag("user", "u", help="Username or UID (format: <name|uid>[:<group|gid>])"),
        Flag("workdir", "w", help="Working directory inside the container"),
    ],
    min_args=2,
    interspersed=False,
    handler=run_exec,
)
PORT = Command(
    "port",
    "CONTAINER [PRIVATE_PORT[/PROTO]]",
    "List port mappings or a specific mapping for the container",
    [],
    min_args=1,
    max_args=2,
    handler=run_port,
)

COMMANDS = {
    "run": RUN,
    "create": CREATE,
    "start": START,
    "stop": STOP,
    "restart": RESTART,
    "kill": KILL,
    "rm": RM,
    "ls": PS,
    "ps": PS,
    "list": PS,
    "wait": WAIT,
    "logs": LOGS,
    "exec": EXEC,
    "inspect": INSPECT,
    "port": PORT,
}


def _ops() -> None:
    # pause, unpause, rename, top, update live in container_ops.py (tether container X too).
    from tether.cli import container_ops as ops

    for name in ("pause", "unpause", "rename", "top", "update", "diff"):
        COMMANDS[name] = getattr(ops, name.upper())
    # cp, stats, attach: their own modules (light at import), here for `tether container X`.
    from tether.cli import attach, cp, stats

    COMMANDS["cp"] = cp.CP
    COMMANDS["stats"] = stats.STATS
    COMMANDS["attach"] = attach.ATTACH


_ops()
