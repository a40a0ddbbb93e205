"""API routes for /containers and /exec, in the Docker Engine API's shapes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tether import wire
from tether.api import query
from tether.api.containers import ContainerCreate
from tether.api.exec import ExecCreate, ExecStart
from tether.daemon.http import (
    Request,
    Response,
    Router,
    end_stream,
    hijack,
    json_response,
    start_stream,
    write_chunk,
)
from tether.engine import filters as flt
from tether.engine.attach import Session
from tether.errors import Conflict, InvalidParameter, NotModified
from tether.netmodes import is_host
from tether.runtime import logs as logfile
from tether.tasks import background

if TYPE_CHECKING:
    from tether.daemon.app import Daemon

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"


def register(router: Router, daemon: Daemon) -> None:
    containers = daemon.containers
    lifecycle = daemon.lifecycle
    execs = daemon.execs

    def ports_of(c: Any) -> Any:
        return daemon.ports_view(c)

    async def create(req: Request) -> Response:
        c = containers.create(req.decode(ContainerCreate), query.container_name(req.arg("name")))
        warnings: list[str] = []
        if is_host(c.network_mode) and c.host_config.get("PortBindings"):
            warnings.append("Published ports are discarded when using host network mode")
        return json_response({"Id": c.id, "Warnings": warnings}, 201)

    async def list_(req: Request) -> Response:
        return json_response(
            containers.query(req.flag("all"), flt.parse(req.arg("filters")), daemon.ports_list)
        )

    async def inspect(req: Request) -> Response:
        c = containers.find(req.params["id"])
        data = containers.inspect(c, ports_of(c), execs.ids_of(c.id))
        if req.flag("verbose"):  # what tether made in the kernel for it (tether's addition)
            from tether.explain.kernelview import container_view

            data["Kernel"] = container_view(daemon, c)
        return json_response(data)

    async def start(req: Request) -> Response:
        try:
            await lifecycle.start(req.params["id"])
        except NotModified:
            return Response(304)
        return Response(204)

    async def stop(req: Request) -> Response:
        t = query.atoi(req.arg("t"))
        try:
            await lifecycle.stop(req.params["id"], float(t) if t is not None else None)
        except NotModified:
            return Response(304)
        return Response(204)

    async def restart(req: Request) -> Response:
        t = query.atoi(req.arg("t"))
        await lifecycle.restart(req.params["id"], float(t) if t is not None else None)
        return Response(204)

    async def kill(req: Request) -> Response:
        await lifecycle.kill(req.params["id"], req.arg("signal"))
        return Response(204)

    async def remove(req: Request) -> Response:
        await lifecycle.remove(req.params["id"], req.flag("force"))
        return Response(204)

    async def wait(req: Request) -> Response | None:
        fut = lifecycle.waiter(req.params["id"], req.arg("condition") or "not-running")
        # Headers now, body at exit: a client can wait on a container before starting it.
        await start_stream(req, "application/json")
        code = await fut
        await write_chunk(req, wire.dumps({"StatusCode": code, "Error": None}).encode() + b"\n")
        await end_stream(req)
        return None

    async def logs(req: Request) -> Response | None:
        c = containers.find(req.params["id"])
        want = {1: req.flag("stdout"), 2: req.flag("stderr")}
        if not want[1] and not want[2]:
            want = {1: True, 2: True}
        follow = req.flag("follow")
        timestamps = req.flag("timestamps")
        tail = query.tail(req.arg("tail"))
        since = query.timestamp("since", req.arg("since"))
        if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
            raise InvalidParameter("configured logging driver does not support reading")
        tty = bool(c.config.get("Tty"))
        # Held open from the start: an auto-removed container's file is deleted as it ends,
        # and what it wrote last must still reach a follower (run --rm).
        path = logfile.open_log(containers.paths(c)["log"])
        await start_stream(req, RAW if tty else MULTIPLEXED)

        async def emit(frames: list[logfile.Frame]) -> None:
            out = bytearray()
            for f in frames:
                if not want.get(f.stream) or f.time_ns / 1e9 < since:
                    continue
                data = f.data
                if timestamps:
                    data = logfile.rfc3339_nano(f.time_ns).encode() + b" " + data
                out += data if tty else logfile.docker_frame(f.stream, data)
            if out:
                await write_chunk(req, bytes(out))

        try:
            await _follow_logs(req, path, emit, tail, timestamps, follow, lifecycle, c)
        finally:
            logfile.close_log(path)
        await end_stream(req)
        return None

    async def _follow_logs(
        req: Request,
        path: int | str,
        emit: Any,
        tail: int | None,
        timestamps: bool,
        follow: bool,
        lifecycle: Any,
        c: Any,
    ) -> None:
        frames, offset = logfile.read_frames(path)
        if tail is not None or timestamps:
            frames = list(logfile.split_lines(frames))
            if tail is not None:
                frames = frames[-tail:] if tail > 0 else []
        await emit(frames)
        if follow:
            run = lifecycle.supervisor.run_of(c)
            delay = 0.005
            while run is not None and not run.finished.is_set():
                try:
                    await asyncio.wait_for(run.finished.wait(), delay)
                except TimeoutError:
                    pass
                more, offset = logfile.read_frames(path, offset)
                await emit(more)
                delay = 0.005 if more else min(delay * 2, 0.1)
            more, offset = logfile.read_frames(path, offset)
            await emit(more)

    async def attach(req: Request) -> Response | None:
        c = containers.find(req.params["id"])
        keys = query.detach_keys(req.arg("detachKeys"))
        tty = bool(c.config.get("Tty"))
        want_stdin = req.flag("stdin") and bool(c.config.get("OpenStdin"))
        stdout, stderr = req.flag("stdout"), req.flag("stderr")
        await hijack(req, RAW if tty else MULTIPLEXED)

        async def write(stream: int, data: bytes) -> None:
            req.writer.write(data if tty else logfile.docker_frame(stream, data))
            await req.writer.drain()

        try:
            if req.flag("logs") and (c.host_config.get("LogConfig") or {}).get("Type") != "none":
                path = logfile.open_log(containers.paths(c)["log"])
                try:
                    frames, _ = logfile.read_frames(path)
                finally:
                    logfile.close_log(path)
                for f in frames:
                    if (f.stream == 1 and stdout) or (f.stream == 2 and stderr):
                        await write(f.stream, f.data)
            if req.flag("stream"):
                session = Session(stdout, stderr, write)
                await lifecycle.attacher.attach(c, session)
                pump = asyncio.create_task(_stdin(req, c, session, keys, tty, want_stdin))
                try:
                    await session.ended.wait()
                finally:
                    pump.cancel()
                    lifecycle.attacher.detach(c, session)
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                req.writer.close()
            except Exception:
                pass
        return None

    async def _stdin(
        req: Request, c: Any, session: Session, keys: bytes, tty: bool, want: bool
    ) -> None:
        """The client's input: to the container's stdin (with -i), watching for the detach
        keys on a terminal; at its end, what Docker does (container/stream/attach.go)."""
        matched = 0
        try:
            while True:
                data = await req.reader.read(65536)
                if not data:
                    break
                if not want:
                    continue
                if tty and keys:
                    # The detach sequence, even split across reads, ends the session and is
                    # never sent on; a partial match that fails is sent as typed.
                    out = bytearray()
                    for b in data:
                        if b == keys[matched]:
                            matched += 1
                            if matched == len(keys):
                                if out:
                                    await lifecycle.attacher.stdin(c, bytes(out))
                                session.ended.set()
                                return
                            continue
                        if matched:
                            out += keys[:matched]
                            matched = 0
                        if b == keys[0]:
                            matched = 1
                        else:
                            out.append(b)
                    data = bytes(out)
                if data:
                    await lifecycle.attacher.stdin(c, data)
        except (ConnectionError, OSError):
            session.ended.set()
            return
        if not want:
            return  # a client without stdin half-closes at once (docker's CLI does)
        if c.config.get("StdinOnce") and not tty:
            await lifecycle.attacher.close_stdin(c)
        else:
            session.ended.set()

    async def resize(req: Request) -> Response:
        c = containers.find(req.params["id"])
        if not c.state.running:
            raise Conflict(f"Container {c.id} is not running")
        h = query.size("h", req.arg("h"), 24)
        w = query.size("w", req.arg("w"), 80)
        if c.config.get("Tty"):
            await lifecycle.attacher.resize(c, h, w)
        return Response(200)

    async def exec_create(req: Request) -> Response:
        ex = execs.create(req.params["id"], req.decode(ExecCreate, ExecCreate()))
        return json_response({"Id": ex.id}, 201)

    async def exec_start(req: Request) -> Response | None:
        ex = execs.find(req.params["id"])
        body = req.decode(ExecStart, ExecStart())
        detach = bool(body.Detach)
        if detach:

            async def quiet(data: bytes) -> None:
                return None

            background(execs.run(ex, quiet, None), "detached exec")
            return Response(200)
        await hijack(req, RAW if ex.tty else MULTIPLEXED)

        async def write(data: bytes) -> None:
            req.writer.write(data)
            await req.writer.drain()

        async def read() -> bytes:
            return await req.reader.read(65536)

        try:
            await execs.run(ex, write, read if ex.attach_stdin else None)
        finally:
            try:
                req.writer.close()
            except Exception:
                pass
        return None

    async def exec_inspect(req: Request) -> Response:
        return json_response(execs.inspect(execs.find(req.params["id"])))

    async def exec_resize(req: Request) -> Response:
        ex = execs.find(req.params["id"])
        execs.resize(ex, query.size("h", req.arg("h"), 24), query.size("w", req.arg("w"), 80))
        return Response(200)

    router.add("POST", "/containers/create", create)
    router.add("GET", "/containers/json", list_)
    router.add("GET", "/containers/{id}/json", inspect)
    router.add("POST", "/containers/{id}/start", start)
    router.add("POST", "/containers/{id}/stop", stop)
    router.add("POST", "/containers/{id}/restart", restart)
    router.add("POST", "/containers/{id}/kill", kill)
    router.add("POST", "/containers/{id}/wait", wait)
    router.add("GET", "/containers/{id}/logs", logs)
    router.add("POST", "/containers/{id}/attach", attach)
    router.add("POST", "/containers/{id}/resize", resize)
    router.add("DELETE", "/containers/{id}", remove)
    router.add("POST", "/containers/{id}/exec", exec_create)
    router.add("POST", "/exec/{id}/start", exec_start)
    router.add("GET", "/exec/{id}/json", exec_inspect)
    router.add("POST", "/exec/{id}/resize", exec_resize)
