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
    head_bytes,
    hijack,
    json_response,
    start_stream,
    write_chunk,
)
from tether.engine import filters as flt
from tether.engine.attach import Session
from tether.errors import Conflict, InvalidParameter, NotFound, NotModified
from tether.netmodes import is_host
from tether.runtime import logs as logfile
from tether.tasks import background

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

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
        spec = req.decode(ContainerCreate)
        name = query.container_name(req.arg("name"))
        platform = req.arg("platform")
        if platform:
            _check_platform(spec.Image or "", platform)
        c = containers.create(spec, name)
        await containers.populate(c)  # new volumes filled from the image, as dockerd's create
        warnings: list[str] = []
        if is_host(c.network_mode) and c.host_config.get("PortBindings"):
            warnings.append("Published ports are discarded when using host network mode")
        return json_response({"Id": c.id, "Warnings": warnings}, 201)

    def _check_platform(ref: str, platform: str) -> None:
        """?platform= (run --platform): the local image must be of that platform, or the
        create fails as dockerd's does (404: the client then pulls that platform)."""
        from tether.images import oci
        from tether.images.archive import check_platform

        want = oci.parse_platform(platform)
        img = containers.images.lookup(ref) if ref else None
        if img is not None:  # (a missing one is create's own "No such image")
            check_platform(ref, want, img.platform)

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
        await lifecycle.remove(req.params["id"], req.flag("force"), volumes=req.flag("v"))
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
        reader = logfile.LogReader(containers.paths(c)["log"])
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
            await _follow_logs(req, reader, emit, tail, timestamps, follow, lifecycle, c)
        finally:
            reader.close()
        await end_stream(req)
        return None

    async def _follow_logs(
        req: Request,
        reader: logfile.LogReader,
        emit: Any,
        tail: int | None,
        timestamps: bool,
        follow: bool,
        lifecycle: Any,
        c: Any,
    ) -> None:
        frames = reader.history()
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
                more = reader.more()
                await emit(more)
                delay = 0.005 if more else min(delay * 2, 0.1)
            while more := reader.more():  # the rest, across a rotation at the very end
                await emit(more)

    async def attach(req: Request) -> Response | None:
        c = containers.find(req.params["id"])
        keys = query.detach_keys(req.arg("detachKeys"))
        tty = bool(c.config.get("Tty"))
        want_stdin = req.flag("stdin") and bool(c.config.get("OpenStdin"))
        stdout, stderr = req.flag("stdout"), req.flag("stderr")

        async def write(stream: int, data: bytes) -> None:
            req.writer.write(data if tty else logfile.docker_frame(stream, data))
            await req.writer.drain()

        frames: list[logfile.Frame] = []
        if req.flag("logs") and (c.host_config.get("LogConfig") or {}).get("Type") != "none":
            reader = logfile.LogReader(containers.paths(c)["log"])
            try:
                frames = reader.history()
            finally:
                reader.close()
        session = Session(stdout, stderr, write) if req.flag("stream") else None
        # A container not running yet: the session is registered before the client hears
        # back, since it may start the container the moment it has our answer and that
        # start must find the session waiting.  A running one: only after the answer and
        # the logs, so that no live output overtakes either.
        early = session is not None and not c.state.running
        if session is not None and early:
            await lifecycle.attacher.attach(c, session)
        pump = None
        try:
            await hijack(req, RAW if tty else MULTIPLEXED)
            for f in frames:
                if (f.stream == 1 and stdout) or (f.stream == 2 and stderr):
                    await write(f.stream, f.data)
            if session is not None:
                if not early:
                    await lifecycle.attacher.attach(c, session)
                pump = asyncio.create_task(_stdin(req, c, session, keys, tty, want_stdin))
                await session.ended.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            if pump is not None:
                pump.cancel()
            if session is not None:
                lifecycle.attacher.detach(c, session)
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

    register_more(router, daemon)
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


def register_more(router: Router, daemon: Daemon) -> None:
    """top, stats, changes, archive (docker cp), pause, rename, update, prune."""
    import base64
    import contextlib
    import json
    import os
    import sys
    import time

    from tether.engine.container_views import epoch
    from tether.runtime import cgroups

    containers = daemon.containers
    lifecycle = daemon.lifecycle

    def running(term: str) -> Any:
        c = containers.find(term)
        if not c.state.running:
            raise Conflict(f"Container {c.id} is not running")
        return c

    def pids_of(c: Any) -> list[int]:
        path = cgroups.path_for(c.id)
        try:
            with open(os.path.join(path or "/nonexistent", "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return [c.state.pid] if c.state.pid else []

    async def top(req: Request) -> Response:
        c = running(req.params["id"])
        args = (req.arg("ps_args") or "-ef").split()
        proc = await asyncio.create_subprocess_exec(
            "ps",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise InvalidParameter(
                f"Error running ps: exit status {proc.returncode}: {err.decode().strip()}"
            )
        lines = out.decode(errors="replace").splitlines()
        titles = lines[0].split()
        if "PID" not in titles:
            raise InvalidParameter("Couldn't find PID field in ps output")
        at = titles.index("PID")
        pids = set(pids_of(c))
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > at and fields[at].isdigit() and int(fields[at]) in pids:
                procs.append(fields)
        return json_response({"Titles": titles, "Processes": procs})

    def _cpu_total_ns() -> int:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:8]
        hz = os.sysconf("SC_CLK_TCK")
        return sum(int(x) for x in fields) * 1_000_000_000 // hz

    def _snapshot(c: Any) -> dict[str, Any]:
        path = cgroups.path_for(c.id) or "/nonexistent"
        usage = user = system = 0
        try:
            with open(os.path.join(path, "cpu.stat")) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "usage_usec":
                        usage = int(v) * 1000
                    elif k == "user_usec":
                        user = int(v) * 1000
                    elif k == "system_usec":
                        system = int(v) * 1000
        except OSError:
            pass
        pids = pids_of(c) if c.state.running else []
        rss = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            rss += int(line.split()[1]) * 1024
            except OSError:
                pass
        nets: dict[str, Any] = {}
        if c.state.running and c.state.pid and c.sandbox_key:
            try:
                with open(f"/proc/{c.state.pid}/net/dev") as f:
                    for line in f.readlines()[2:]:
                        name, _, rest = line.partition(":")
                        name = name.strip()
                        if name == "lo":
                            continue
                        n = [int(x) for x in rest.split()]
                        nets[name] = {
                            "rx_bytes": n[0],
                            "rx_packets": n[1],
                            "rx_errors": n[2],
                            "rx_dropped": n[3],
                            "tx_bytes": n[8],
                            "tx_packets": n[9],
                            "tx_errors": n[10],
                            "tx_dropped": n[11],
                        }
            except (OSError, ValueError, IndexError):
                pass
        # Block I/O as dockerd reads it on cgroup v2 (io.stat's rbytes/wbytes per device);
        # a hierarchy without the io controller (this kind of hybrid mount) has none.
        blkio: list[dict[str, Any]] | None = None
        try:
            with open(os.path.join(path, "io.stat")) as f:
                blkio = io_service_bytes(f.read())
        except (OSError, ValueError):
            pass
        try:
            with open("/proc/meminfo") as f:
                limit = int(f.readline().split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            limit = 0
        ncpu = os.cpu_count() or 1
        return {
            "cpu_stats": {
                "cpu_usage": {
                    "total_usage": usage,
                    "usage_in_kernelmode": system,
                    "usage_in_usermode": user,
                },
                "system_cpu_usage": _cpu_total_ns() if c.state.running else 0,
                "online_cpus": ncpu,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
            },
            "memory_stats": {"usage": rss, "stats": {}, "limit": limit} if pids else {},
            "pids_stats": {"current": len(pids)} if pids else {},
            "networks": nets or None,
            "blkio": blkio or None,
        }

    def _stats(c: Any, pre: dict[str, Any] | None, pre_time: str) -> dict[str, Any]:
        snap = _snapshot(c)
        now = time.time()
        empty_cpu = {
            "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }
        out = {
            "read": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now % 1 * 1e9):09d}Z",
            "preread": pre_time,
            "pids_stats": snap["pids_stats"],
            "blkio_stats": {
                "io_service_bytes_recursive": snap["blkio"],
                "io_serviced_recursive": None,
                "io_queue_recursive": None,
                "io_service_time_recursive": None,
                "io_wait_time_recursive": None,
                "io_merged_recursive": None,
                "io_time_recursive": None,
                "sectors_recursive": None,
            },
            "num_procs": 0,
            "storage_stats": {},
            "cpu_stats": snap["cpu_stats"],
            "precpu_stats": pre["cpu_stats"] if pre else empty_cpu,
            "memory_stats": snap["memory_stats"],
            "name": "/" + c.name,
            "id": c.id,
        }
        if snap["networks"] is not None:
            out["networks"] = snap["networks"]
        return out

    async def stats(req: Request) -> Response | None:
        c = containers.find(req.params["id"])
        stream = req.arg("stream") is None or req.flag("stream")
        one_shot = req.flag("one-shot")
        zero = "0001-01-01T00:00:00Z"
        if not stream:
            pre: dict[str, Any] | None = None
            pre_time = zero
            if not one_shot and c.state.running:
                pre = _snapshot(c)
                pre_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                await asyncio.sleep(1)  # dockerd's precpu_stats are a second older
            return json_response(_stats(c, pre, pre_time))
        await start_stream(req, "application/json")
        prev: dict[str, Any] | None = None
        prev_time = zero
        closed = asyncio.ensure_future(req.reader.read(1))
        try:
            while True:
                body = _stats(c, prev, prev_time)
                await write_chunk(req, json.dumps(body).encode() + b"\n")
                prev = {"cpu_stats": body["cpu_stats"]}
                prev_time = body["read"]
                if not c.state.running or c.id not in containers.by_id:
                    break
                done, _ = await asyncio.wait({closed}, timeout=1.0)
                if closed in done:
                    return None
            await end_stream(req)
        finally:
            closed.cancel()
        return None

    async def changes(req: Request) -> Response:
        c = containers.find(req.params["id"])
        upper = os.path.join(containers.cdir(c), "upper")
        img = daemon.images.by_id.get(c.image_id)
        lowers = (daemon.images.rootfs(img) or "").split(":") if img else []
        own = {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
        out: list[dict[str, Any]] = []
        for dirpath, dirs, files in os.walk(upper):
            for name in sorted(dirs + files):
                full = os.path.join(dirpath, name)
                rel = "/" + os.path.relpath(full, upper)
                if rel in own:
                    continue
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if stat_is_whiteout(st):
                    out.append({"Path": rel, "Kind": 2})
                    continue
                existed = any(os.path.lexists(low + rel) for low in lowers if low)
                out.append({"Path": rel, "Kind": 0 if existed else 1})
        out.sort(key=lambda x: x["Path"])
        # Directories changed only by the mount points of the container's own files.
        paths = [x["Path"] for x in out]
        out = [
            x
            for x in out
            if not (
                x["Kind"] == 0
                and x["Path"] in ("/etc", "/dev", "/proc", "/sys")
                and not any(p.startswith(x["Path"] + "/") for p in paths)
            )
        ]
        return json_response(out or None)

    async def prune(req: Request) -> Response:
        filters = flt.parse(req.arg("filters"))
        flt.check_keys(filters, {"label", "label!", "until"})
        deleted = []
        until = filters.get("until")
        for c in list(containers.by_id.values()):
            if c.state.running or c.state.status in ("restarting", "removing"):
                continue
            labels = c.config.get("Labels") or {}
            if "label" in filters and not flt.label_match(filters["label"], labels):
                continue
            if "label!" in filters and flt.label_match(filters["label!"], labels):
                continue
            if until and epoch(c.created) >= float(until[0]):
                continue
            await lifecycle.remove(c.id, False)
            deleted.append(c.id)
        return json_response({"ContainersDeleted": deleted or None, "SpaceReclaimed": 0})

    async def pause(req: Request) -> Response:
        await lifecycle.pause(req.params["id"])
        return Response(204)

    async def unpause(req: Request) -> Response:
        await lifecycle.unpause(req.params["id"])
        return Response(204)

    async def rename(req: Request) -> Response:
        await lifecycle.rename(req.params["id"], req.arg("name") or "")
        return Response(204)

    async def update(req: Request) -> Response:
        from tether.api.containers import HostConfig
        from tether.unsupported import container_refusal

        hc = req.decode(HostConfig, HostConfig())
        refused = container_refusal(None, hc)
        if refused:
            raise InvalidParameter(refused)
        policy: dict[str, object] | None = None
        if hc.RestartPolicy is not None:
            policy = {
                "Name": hc.RestartPolicy.Name,
                "MaximumRetryCount": hc.RestartPolicy.MaximumRetryCount,
            }
        await lifecycle.update(req.params["id"], policy)
        return json_response({"Warnings": []})

    async def _helper(
        op: str, c: Any, path: str, stdin: bytes | None = None, flags: tuple[str, ...] = ()
    ) -> Any:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-m",
            "tether.runtime.cparchive",
            op,
            str(c.state.pid) if c.state.running else "offline",
            path,
            *flags,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(__file__)))},
        )

    def _archive_error(line: bytes, c: Any) -> None:
        try:
            info = json.loads(line)
        except ValueError:
            info = {"error": line.decode(errors="replace").strip() or "docker cp failed"}
        if "error" in info:
            msg = str(info["error"]).replace("in container", f"in container {c.name}")
            if msg.startswith("Could not find"):
                raise NotFound(msg)
            raise InvalidParameter(msg)

    def _cp_target(req: Request) -> Any:
        c = containers.find(req.params["id"])
        if not req.arg("path"):
            raise InvalidParameter("path cannot be empty")
        return c

    def _offline(c: Any, path: str, op: str) -> tuple[str, ...]:
        """The helper's flags for a container that is not running: its overlay (image layers,
        its own upper directory) to mount in a mount namespace of the helper's own, as
        dockerd mounts a stopped container's filesystem for docker cp."""
        import posixpath

        img = daemon.images.by_id.get(c.image_id)
        rootfs = daemon.images.rootfs(img) if img is not None else None
        if not rootfs:
            raise Conflict(
                f"tether copies from and to a container of the host image only while it "
                f"runs: {c.name} is not running"
            )
        # Its volumes and binds are not mounted then: a path in one (or, to archive, one
        # that holds one) is refused, and an archive put above one may not write into it,
        # rather than copied to or from the wrong place.
        wanted = posixpath.normpath("/" + path.lstrip("/"))
        below: list[str] = []
        for m in c.mounts:
            dest = posixpath.normpath("/" + str(m["Destination"]).lstrip("/"))
            inside = (wanted.rstrip("/") + "/").startswith(dest.rstrip("/") + "/")
            holds = dest.startswith(wanted.rstrip("/") + "/")
            if inside or (holds and op == "get"):
                raise Conflict(
                    f"tether copies from and to a container's mounts only while it runs: "
                    f"{dest} of {c.name} is mounted when it runs"
                )
            if holds:
                below.append(dest)
        flags: tuple[str, ...] = ()
        if below and op == "put":
            flags = ("mounts=" + json.dumps({"name": c.name, "paths": below}),)
        d = containers.cdir(c)
        for sub in ("upper", "work", "rootfs"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        spec = {
            "lower": rootfs.split(":"),
            "upper": os.path.join(d, "upper"),
            "work": os.path.join(d, "work"),
            "target": os.path.join(d, "rootfs"),
        }
        return ("overlay=" + json.dumps(spec), *flags)

    @contextlib.asynccontextmanager
    async def _filesystem(c: Any, path: str, op: str) -> AsyncIterator[tuple[str, ...]]:
        """How the helper reaches the container's files: through a running container's root,
        or (held against a start, which mounts the same upper directory) its overlay."""
        if c.state.running:
            yield ()
            return
        async with containers.lock(c):
            yield () if c.state.running else _offline(c, path, op)

    async def _reap(proc: Any) -> None:
        """A helper whose client went away is not left blocked on a full pipe."""
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            await proc.wait()

    async def archive_get(req: Request) -> Response | None:
        c = _cp_target(req)
        path = req.arg("path") or ""
        op = "stat" if req.method == "HEAD" else "get"
        async with _filesystem(c, path, op) as where:
            proc = await _helper(op, c, path, None, where)
            try:
                return await _send_archive(req, c, proc)
            finally:
                await _reap(proc)

    async def _send_archive(req: Request, c: Any, proc: Any) -> Response | None:
        assert proc.stderr is not None and proc.stdout is not None
        first = await proc.stderr.readline()
        _archive_error(first, c)
        header = base64.b64encode(first.strip()).decode()
        if req.method == "HEAD":
            await proc.wait()
            return Response(
                200, b"", "application/x-tar", [("X-Docker-Container-Path-Stat", header)]
            )
        req.writer.write(
            head_bytes(
                200,
                [
                    ("Content-Type", "application/x-tar"),
                    ("X-Docker-Container-Path-Stat", header),
                    ("Transfer-Encoding", "chunked"),
                ],
            )
        )
        while True:
            data = await proc.stdout.read(1 << 20)
            if not data:
                break
            await write_chunk(req, data)
        await proc.wait()
        await end_stream(req)
        return None

    async def archive_put(req: Request) -> Response:
        c = _cp_target(req)
        # docker cp sends noOverwriteDirNonDir=true; copyUIDGID (cp -a) gives everything to
        # the container's user, if it has one (as dockerd's tarCopyOptions).
        flags = tuple(f for f in ("noOverwriteDirNonDir", "copyUIDGID") if req.flag(f))
        if c.config.get("User"):
            flags += (f"user={c.config['User']}",)
        path = req.arg("path") or ""
        if c.host_config.get("ReadonlyRootfs") and not _in_writable_mount(c, path):
            raise InvalidParameter("container rootfs is marked read-only")  # dockerd's words
        async with _filesystem(c, path, "put") as where:
            proc = await _helper("put", c, path, b"", flags + where)
            try:
                return await _receive_archive(req, c, proc)
            finally:
                await _reap(proc)

    def _in_writable_mount(c: Any, path: str) -> bool:
        """Whether `path` lies in one of the container's read-write volumes or binds (the
        only place a --read-only container takes a copy, as dockerd's toVolume)."""
        import posixpath

        wanted = posixpath.normpath("/" + path.lstrip("/")).rstrip("/") + "/"
        return any(
            m.get("RW", True)
            and wanted.startswith(
                posixpath.normpath("/" + str(m["Destination"]).lstrip("/")).rstrip("/") + "/"
            )
            for m in c.mounts
        )

    async def _receive_archive(req: Request, c: Any, proc: Any) -> Response:
        assert proc.stdin is not None and proc.stderr is not None
        first = await proc.stderr.readline()
        _archive_error(first, c)
        try:
            async for chunk in req.body_chunks():
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the helper stopped reading: its error follows on stderr
        finally:
            proc.stdin.close()
        rest = await proc.stderr.read()
        if await proc.wait() != 0:
            text = rest.decode(errors="replace").strip()
            try:
                text = str(json.loads(text.splitlines()[-1])["error"])
            except (ValueError, KeyError, IndexError, TypeError):
                text = f"Error processing tar file: {text}"
            raise InvalidParameter(text)
        return Response(200)

    router.add("GET", "/containers/{id}/top", top)
    router.add("GET", "/containers/{id}/stats", stats)
    router.add("GET", "/containers/{id}/changes", changes)
    router.add("POST", "/containers/prune", prune)
    router.add("POST", "/containers/{id}/pause", pause)
    router.add("POST", "/containers/{id}/unpause", unpause)
    router.add("POST", "/containers/{id}/rename", rename)
    router.add("POST", "/containers/{id}/update", update)
    router.add("GET", "/containers/{id}/archive", archive_get)
    router.add("PUT", "/containers/{id}/archive", archive_put, stream_body=True)


def stat_is_whiteout(st: Any) -> bool:
    import stat

    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def io_service_bytes(io_stat: str) -> list[dict[str, Any]]:
    """cgroup v2 io.stat ("8:0 rbytes=N wbytes=N ...") as dockerd's
    blkio_stats.io_service_bytes_recursive: a read and a write entry per device."""
    out: list[dict[str, Any]] = []
    for line in io_stat.splitlines():
        dev, *pairs = line.split()
        major, _, minor = dev.partition(":")
        values = dict(p.partition("=")[::2] for p in pairs)
        for op, key in (("read", "rbytes"), ("write", "wbytes")):
            out.append(
                {
                    "major": int(major),
                    "minor": int(minor),
                    "op": op,
                    "value": int(values.get(key) or 0),
                }
            )
    return out
