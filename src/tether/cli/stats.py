"""tether stats: docker stats (cli/command/container/stats.go, formatter/stats.go) on
GET /containers/{id}/stats: one stream per container, the table drawn again every half
second (clear screen, then the table, as docker 20.10), or once with --no-stream."""

from __future__ import annotations

import sys
import time

from tether.cli.context import CliError, Context
from tether.cli.flags import Command, Flag
from tether.client import ApiError, quote

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

    from tether.client import Response

DEFAULT_FORMAT = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}"
    "\t{{.BlockIO}}\t{{.PIDs}}"
)
HEADERS = {
    "Container": "CONTAINER",
    "ID": "CONTAINER ID",
    "Name": "NAME",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}
REDRAW = 0.5  # docker 20.10's ticker
CLEAR = "\033[2J\033[H"


def _size(n: float, base: float, units: list[str], precision: int) -> str:
    i = 0
    while n >= base and i < len(units) - 1:
        n /= base
        i += 1
    return f"{n:.{precision}g}{units[i]}"


def human_size(n: float) -> str:
    """go-units HumanSizeWithPrecision(n, 3): NET I/O and BLOCK I/O."""
    return _size(n, 1000.0, ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"], 3)


def bytes_size(n: float) -> str:
    """go-units BytesSize (binary, 4 significant digits): MEM USAGE / LIMIT."""
    return _size(n, 1024.0, ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"], 4)


def cpu_percent(js: dict[str, Any]) -> float:
    """calculateCPUPercentUnix: the container's share of the host's CPU time since the
    previous sample, times the number of CPUs."""
    cpu = js.get("cpu_stats") or {}
    pre = js.get("precpu_stats") or {}
    cpu_delta = float((cpu.get("cpu_usage") or {}).get("total_usage") or 0) - float(
        (pre.get("cpu_usage") or {}).get("total_usage") or 0
    )
    system_delta = float(cpu.get("system_cpu_usage") or 0) - float(pre.get("system_cpu_usage") or 0)
    online = float(cpu.get("online_cpus") or 0) or float(
        len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    )
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def memory_usage(mem: dict[str, Any]) -> float:
    """calculateMemUsageUnixNoCache: usage less the inactive page cache."""
    usage = float(mem.get("usage") or 0)
    stats = mem.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):
        v = stats.get(key)
        if v is not None and float(v) < usage:
            return usage - float(v)
    return usage


def entry(container: str, js: dict[str, Any]) -> dict[str, Any]:
    """One container's numbers (docker's StatsEntry) from one stats document."""
    mem = js.get("memory_stats") or {}
    usage = memory_usage(mem)
    limit = float(mem.get("limit") or 0)
    rx = tx = 0.0
    for net in (js.get("networks") or {}).values():
        rx += float(net.get("rx_bytes") or 0)
        tx += float(net.get("tx_bytes") or 0)
    read = write = 0.0
    blkio = (js.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    for io in blkio:
        op = str(io.get("op") or "").lower()
        if op == "read":
            read += float(io.get("value") or 0)
        elif op == "write":
            write += float(io.get("value") or 0)
    return {
        "container": container,
        "name": str(js.get("name") or ""),
        "id": str(js.get("id") or ""),
        "cpu": cpu_percent(js),
        "memory": usage,
        "limit": limit,
        "mem_percent": usage / limit * 100.0 if limit else 0.0,
        "rx": rx,
        "tx": tx,
        "read": read,
        "write": write,
        "pids": int((js.get("pids_stats") or {}).get("current") or 0),
        "invalid": False,
    }


def row(e: dict[str, Any], trunc: bool) -> dict[str, Any]:
    """The template's fields (formatter.statsContext)."""
    bad = bool(e.get("invalid"))
    name = str(e.get("name") or "")
    ident = str(e.get("id") or "")
    return {
        "Container": e["container"],
        "Name": name[1:] if len(name) > 1 else "--",
        "ID": ident[:12] if trunc else ident,
        "CPUPerc": "--" if bad else f"{e['cpu']:.2f}%",
        "MemUsage": "-- / --" if bad else f"{bytes_size(e['memory'])} / {bytes_size(e['limit'])}",
        "MemPerc": "--" if bad else f"{e['mem_percent']:.2f}%",
        "NetIO": "--" if bad else f"{human_size(e['rx'])} / {human_size(e['tx'])}",
        "BlockIO": "--" if bad else f"{human_size(e['read'])} / {human_size(e['write'])}",
        "PIDs": "--" if bad else str(e["pids"]),
    }


def render(fmt: str, entries: list[dict[str, Any]], trunc: bool) -> str:
    from tether.cli.output import render_table_template

    rows = [row(e, trunc) for e in entries]
    if fmt == "json":
        # docker marshals a map here: the keys come out sorted.
        fmt = "{{json .}}"
        rows = [dict(sorted(r.items())) for r in rows]
    return render_table_template(fmt, rows, HEADERS)


def _error_text(resp: Response) -> str:
    from tether import wire

    data = resp.read()
    resp.close()
    try:
        return f"Error response from daemon: {wire.loads(data).get('message')}"
    except (ValueError, AttributeError):
        return f"Error response from daemon: {data.decode(errors='replace').strip()}"


class Watch:
    """One container's stats stream, read in a thread; the latest entry kept."""

    def __init__(self, ctx: Context, container: str, ident: str, stream: bool) -> None:
        self.ctx = ctx
        self.container = container
        self.ident = ident
        self.stream = stream
        self.latest: dict[str, Any] | None = None
        self.error = ""
        self.done = False
        self.resp: Response | None = None

    def run(self) -> None:
        from tether import wire

        try:
            self.resp = self.ctx.open(
                "GET",
                f"/containers/{quote(self.ident)}/stats",
                query={"stream": "1" if self.stream else "0"},
            )
            if self.resp.status >= 400:
                self.error = _error_text(self.resp)
                return
            if not self.stream:
                self.latest = entry(self.container, wire.loads(self.resp.read()))
                return
            pending = b""
            for chunk in self.resp.iter_body():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.latest = entry(self.container, wire.loads(line))
        except (OSError, ValueError, CliError) as exc:
            if self.latest is None and not self.error:
                self.error = str(exc)
        finally:
            self.done = True
            if self.resp is not None:
                self.resp.close()

    def start(self) -> None:
        import threading

        threading.Thread(target=self.run, daemon=True).start()

    def close(self) -> None:
        if self.resp is not None:
            self.resp.close()


def _listed(ctx: Context, show_all: bool) -> list[str]:
    items = ctx.call("GET", "/containers/json", query={"all": 1 if show_all else None})
    return [str(c["Id"]) for c in items]


def run_stats(ctx: Context, o: dict[str, Any], args: list[str]) -> int:
    fmt = o["format"] or DEFAULT_FORMAT
    trunc = not o["no_trunc"]
    stream = not o["no_stream"]
    out = sys.stdout
    watches: dict[str, Watch] = {}
    named = bool(args)
    try:
        if named:
            errors = []
            for name in args:
                try:
                    ident = str(ctx.call("GET", f"/containers/{quote(name)}/json")["Id"])
                except ApiError as exc:
                    errors.append(f"Error response from daemon: {exc.message}")
                    continue
                watches.setdefault(ident, Watch(ctx, name, ident, stream))
            if errors:
                raise CliError("\n".join(errors))
        else:
            for ident in _listed(ctx, o["all"]):
                watches[ident] = Watch(ctx, ident[:12], ident, stream)
        for w in watches.values():
            w.start()
        # Before the first table, every container's first numbers (docker's waitFirst).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            w.latest is None and not w.done for w in watches.values()
        ):
            time.sleep(0.02)
        errors = [w.error for w in watches.values() if w.error and w.latest is None]
        if named and errors:
            raise CliError("\n".join(errors))
        last_listing = time.monotonic()
        while True:
            if stream:
                out.write(CLEAR)
            entries = []
            for w in watches.values():
                if w.latest is not None:
                    entries.append(w.latest)
                elif w.done:
                    entries.append({**_blank(w), "invalid": True})
            try:
                out.write(render(fmt, entries, trunc))
            except Exception as exc:  # a template error: docker's one line
                from tether.cli.gotemplate import TemplateError

                if isinstance(exc, TemplateError):
                    raise CliError(str(exc)) from None
                raise
            out.flush()
            if not stream or (not named and not watches and not o["all"]):
                return 0
            time.sleep(REDRAW)
            if not named and time.monotonic() - last_listing >= 1.0:
                # Containers started or stopped since: docker follows /events; tether
                # lists them again each second.
                last_listing = time.monotonic()
                current = _listed(ctx, o["all"])
                for ident in list(watches):
                    if ident not in current:
                        watches.pop(ident).close()
                for ident in current:
                    if ident not in watches:
                        watches[ident] = Watch(ctx, ident[:12], ident, stream)
                        watches[ident].start()
    except KeyboardInterrupt:
        return 0
    except ApiError as exc:
        raise CliError(f"Error response from daemon: {exc.message}") from None
    finally:
        for w in watches.values():
            w.close()


def _blank(w: Watch) -> dict[str, Any]:
    return {
        "container": w.container,
        "name": "",
        "id": w.ident,
        "cpu": 0.0,
        "memory": 0.0,
        "limit": 0.0,
        "mem_percent": 0.0,
        "rx": 0.0,
        "tx": 0.0,
        "read": 0.0,
        "write": 0.0,
        "pids": 0,
    }


STATS = Command(
    "stats",
    "[OPTIONS] [CONTAINER...]",
    "Display a live stream of container(s) resource usage statistics",
    [
        Flag("all", "a", kind="bool", help="Show all containers (default shows just running)"),
        Flag("format", help="Format output using a custom template"),
        Flag(
            "no-stream", kind="bool", help="Disable streaming stats and only pull the first result"
        ),
        Flag("no-trunc", kind="bool", help="Do not truncate output"),
    ],
    handler=run_stats,
)
