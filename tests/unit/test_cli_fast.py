"""The fast path (tether/cli/fast.py) prints what the full CLI prints, or hands over.

A small daemon on a unix socket, served by a thread of this test, answers the Engine API
routes the everyday commands read with canned documents shaped like tetherd's (ports to
fold into ranges, labels, a long command, names that sort naturally, an untagged image).
For each command line: the fast path's output, stderr and exit code against the full CLI's
(main(argv, fast=False)) on the same answers; for the forms the fast path does not serve:
None, and not one request sent.  And the launcher's `tether ps` imports what the budget
allows (no `re`, no `os`, no main.py) and sends one request.
"""

from __future__ import annotations

import _socket
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tether.cli import fast, views
from tether.cli.main import main
from tether.cli.output import render_table_template, tabwrite

NOW = int(time.time())
CID = "4f1c2a9e7b3d" + "0" * 52
CID2 = "9a8b7c6d5e4f" + "1" * 52


def _container(cid: str, name: str, **kw: object) -> dict[str, object]:
    c: dict[str, object] = {
        "Id": cid,
        "Names": [f"/{name}"],
        "Image": "busybox",
        "ImageID": "sha256:" + "b" * 64,
        "Command": "sleep 3600",
        "Created": NOW - 5 * 3600,
        "Ports": [],
        "Labels": {},
        "State": "running",
        "Status": "Up 5 hours",
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Networks": {"bridge": {}}},
        "Mounts": [],
    }
    c.update(kw)
    return c


RUNNING = [
    _container(
        CID,
        "web10",
        Command='sh -c "while true; do echo \\"hi\\"; sleep 1; done"',
        Ports=[
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 80, "Type": "tcp"},
            {"IP": "0.0.0.0", "PrivatePort": 81, "PublicPort": 81, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 53, "Type": "udp"},
        ],
        Labels={"b": "2", "a": "1"},
        NetworkSettings={"Networks": {"front": {}, "back": {}}},
    ),
    _container(CID2, "web9", Image="nginx:1.25", Created=NOW - 3 * 86400),
]
EXITED = _container(
    "7" * 64,
    "done",
    State="exited",
    Status="Exited (3) 2 hours ago",
    Command="",
    Created=NOW - 40 * 86400,
)


def _network(name: str, nid: str, driver: str = "bridge", **kw: object) -> dict[str, object]:
    n: dict[str, object] = {
        "Name": name,
        "Id": nid * 64,
        "Created": "2026-12-02T06:50:41.776952000Z",
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": []},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {},
        "Options": {},
        "Labels": {},
    }
    n.update(kw)
    return n


NETWORKS = [
    _network("net10", "c"),
    _network("bridge", "a", Options={"com.docker.network.bridge.default_bridge": "true"}),
    _network("net9", "d", Labels={"team": "x"}, Internal=True),
    _network("host", "e", driver="host"),
    _network("none", "f", driver="null"),
]
IMAGES = [
    {
        "Id": "sha256:" + "b" * 64,
        "RepoTags": ["busybox:latest", "registry.local:5000/busybox:1.36"],
        "RepoDigests": ["registry.local:5000/busybox@sha256:" + "d" * 64],
        "Created": NOW - 2 * 86400,
        "Size": 4_261_550,
        "Containers": -1,
    },
    {
        "Id": "sha256:" + "e" * 64,
        "RepoTags": None,
        "RepoDigests": None,
        "Created": NOW - 400 * 86400,
        "Size": 999,
        "Containers": -1,
    },
]
VOLUMES = {
    "Volumes": [
        {"Name": "data10", "Driver": "local", "Mountpoint": "/v/data10", "Labels": None},
        {"Name": "data9", "Driver": "local", "Mountpoint": "/v/data9", "Labels": {"k": "v"}},
    ],
    "Warnings": None,
}
VERSION = {
    "Version": "0.1.0",
    "ApiVersion": "1.47",
    "MinAPIVersion": "1.24",
    "GoVersion": "python3.11.2",
    "Os": "linux",
    "Arch": "amd64",
    "KernelVersion": "6.18.0",
}


def _frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


LOGS = _frame(1, b"line one\n") + _frame(2, b"to stderr\n") + _frame(1, b"no newline")

Answer = tuple[int, object]


def _not_found(what: str) -> Answer:
    return 404, {"message": what}


def route(method: str, path: str, body: bytes) -> Answer | bytes:
    """The canned daemon: (status, JSON document), or raw bytes to send as they are."""
    base, _, query = path.partition("?")
    base = base.removeprefix("/v1.41")
    if method == "GET" and base == "/containers/json":
        if "broken" in query:
            return 500, {"message": "boom"}
        return 200, RUNNING + ([EXITED] if "all=1" in query else [])
    if method == "GET" and base == "/networks":
        return 200, NETWORKS
    if method == "GET" and base.startswith("/networks/"):
        name = base.split("/")[2]
        for n in NETWORKS:
            if name in (n["Name"], n["Id"]):
                return 200, n
        return _not_found(f"network {name} not found")
    if method == "GET" and base == "/images/json":
        return 200, IMAGES
    if method == "GET" and base.startswith("/images/"):
        return _not_found(f"No such image: {base.split('/')[2]}")
    if method == "GET" and base == "/volumes":
        return 200, VOLUMES
    if method == "GET" and base == "/version":
        return 200, VERSION
    if base.startswith("/containers/"):
        name = base.split("/")[2]
        found = next(
            (c for c in [*RUNNING, EXITED] if f"/{name}" in c["Names"] or c["Id"] == name),  # type: ignore[operator]
            None,
        )
        if found is None:
            return _not_found(f"No such container: {name}")
        if base.endswith("/logs"):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n"
            return head + b"Connection: close\r\n\r\n" + LOGS
        running = found["State"] == "running"
        if method == "DELETE":
            if running and "force=1" not in query:
                return 409, {
                    "message": f"You cannot remove a running container {found['Id']}. Stop the "
                    "container before attempting removal or force remove"
                }
            return 204, None
        if base.endswith(("/stop", "/start")):
            return (204 if running == base.endswith("/stop") else 304), None
        if base.endswith("/kill"):
            if not running:
                return 409, {"message": f"Container {found['Id']} is not running"}
            return 204, None
        if base.endswith("/exec"):
            if found["State"] != "running":
                return 409, {"message": f"Container {found['Id']} is not running"}
            assert json.loads(body)["Cmd"], body
            return 201, {"Id": "e" * 64}
        return 200, found
    if method == "POST" and base.startswith("/exec/") and base.endswith("/start"):
        head = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
        head += b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        return head + _frame(1, b"hi\n") + _frame(2, b"oops\n")
    if method == "GET" and base.startswith("/exec/"):
        return 200, {"ID": "e" * 64, "Running": False, "ExitCode": 3}
    return 404, {"message": "page not found"}


class StubDaemon:
    def __init__(self, answer: Callable[[str, str, bytes], Answer | bytes] = route) -> None:
        self.dir = tempfile.mkdtemp(prefix="tether-fast-")
        self.path = os.path.join(self.dir, "tether.sock")
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.answer = answer
        self.requests: list[tuple[str, str]] = []
        # Every request as it came: method, path, headers but Host/User-Agent, body.
        self.sent: list[tuple[str, str, list[str], bytes]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                fd, _ = self.sock._accept()  # type: ignore[attr-defined]
            except (TimeoutError, OSError):
                continue
            conn = _socket.socket(fileno=fd)
            conn.settimeout(5)
            try:
                self._one(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def _one(self, conn: _socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ")
        length = 0
        headers = sorted(line for line in lines[1:] if not line.startswith("Content-Length"))
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.lower() == "content-length":
                length = int(v)
        while len(body) < length:
            body += conn.recv(65536)
        self.requests.append((method, path))
        self.sent.append((method, path, headers, body))
        answer = self.answer(method, path, body)
        if isinstance(answer, bytes):
            conn.sendall(answer)
            return
        status, doc = answer
        payload = json.dumps(doc).encode()
        conn.sendall(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubDaemon]:
    d = StubDaemon()
    monkeypatch.setenv("TETHER_HOST", f"unix://{d.path}")
    yield d
    d.close()


def _run(
    capfd: pytest.CaptureFixture[str], fn: Callable[[], int | None]
) -> tuple[int | None, str, str]:
    capfd.readouterr()
    code = fn()
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = capfd.readouterr()
    return code, out, err


SERVED = [
    ["ps"],
    ["ps", "-a"],
    ["ps", "-aq"],
    ["ps", "-q", "--all"],
    ["ps", "--no-trunc"],
    ["ps", "--quiet", "--no-trunc", "-a"],
    ["container", "ls", "-a"],
    ["container", "list"],
    ["network", "ls"],
    ["network", "ls", "-q"],
    ["network", "ls", "--no-trunc"],
    ["network", "list", "--quiet", "--no-trunc"],
    ["network", "inspect", "bridge"],
    ["network", "inspect", "net9", "net10"],
    ["images"],
    ["images", "-a"],
    ["images", "-q"],
    ["images", "--digests"],
    ["images", "--no-trunc"],
    ["image", "ls", "-aq"],
    ["volume", "ls"],
    ["volume", "ls", "-q"],
    ["volume", "list"],
    ["version"],
    ["inspect", "web10"],
    ["inspect", "web10", "web9"],
    ["container", "inspect", CID],
    ["logs", "web10"],
    ["container", "logs", "web9"],
    ["exec", "web10", "echo", "hi"],
    ["exec", "web10", "sh", "-c", "exit 3"],
    ["exec", "nosuch", "true"],  # refused at create: the fast path words it
    ["exec", "done", "true"],  # not running: 409
    ["stop", "web10"],
    ["stop", "-t", "0", "web10", "nosuch", "web9"],
    ["stop", "--time", "07", "done"],
    ["container", "stop", "web9"],
    ["rm", "done"],
    ["rm", "web10", "done"],  # running: refused, the other removed
    ["rm", "-f", "web10", "nosuch"],
    ["container", "rm", "--force", "web9"],
    ["kill", "web10", "done"],
    ["start", "done"],
    ["start", "nosuch", "done", "gone"],
    ["ps", "--format", "{{.Names}}"],
    ["ps", "--format={{.ID}}\t{{.Status}}"],
    ["ps", "-a", "--format", "table {{.Names}}\\t{{.Ports}}"],
    ["ps", "--format", "json"],
    ["ps", "--format", "{{.Names}}", "--format", "{{.ID}}"],  # the last one counts
    ["ps", "-f", "name=web", "-a", "--filter", "label=a=1"],
    ["ps", "--filter=status=exited", "-q"],
    ["ps", "--format", '{{.Names}} {{.Label "a"}} {{printf "%-8s|" .State}}'],
    ["ps", "--format", "{{.Foo"],  # the engine refuses: one line, exit 1
    ["container", "ls", "--format", "json"],
    ["network", "ls", "--filter", "driver=bridge"],
    ["network", "ls", "--format", "{{.Name}}: {{.Driver}}"],
    ["network", "ls", "--format", "{{.Bad"],
    ["network", "inspect", "--format", "{{.Id}}", "bridge"],
    ["network", "inspect", "-f", "json", "net9"],
    ["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ["images", "--format", "table {{.ID}}\t{{.Size}}", "-a"],
    ["volume", "ls", "--format", "{{.Name}}"],
    ["volume", "ls", "-f", "dangling=true"],
    ["version", "--format", "{{.Server.Version}}"],
    ["version", "-f", "{{json .Client.Os}}"],
    ["version", "--format", "{{.Bad"],
    ["inspect", "-f", "{{.State}} {{.Name}}", "web10"],
    ["inspect", "--format={{json .Labels}}", "web10", "web9"],
    ["inspect", "-f", "{{.Bad", "web10"],
]


@pytest.mark.parametrize("argv", SERVED, ids=" ".join)
def test_fast_path_prints_what_the_full_cli_prints(
    daemon: StubDaemon, capfd: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    got = _run(capfd, lambda: fast.attempt(argv))
    assert got[0] is not None, f"{argv} was handed over"
    sent = list(daemon.sent)
    daemon.sent.clear()
    want = _run(capfd, lambda: main(argv, fast=False))
    assert got == want
    assert got[1] or got[2]
    # The same requests, byte for byte: a field the full command starts sending (an exec
    # option, a query parameter) must reach the fast path too.
    assert sent == daemon.sent


def test_fast_path_answers_ps_in_one_request(
    daemon: StubDaemon, capfd: pytest.CaptureFixture[str]
) -> None:
    _run(capfd, lambda: fast.attempt(["ps", "-a"]))
    assert daemon.requests == [("GET", "/v1.41/containers/json?all=1")]


HANDED_OVER = [
    ["ps", "-f", "bad"],  # no name=value: the full command words the refusal
    ["ps", "--format"],
    ["ps", "-fname=web"],
    ["images", "-f", "dangling=true"],
    ["inspect", "-s", "web10"],
    ["ps", "-n", "1"],
    ["ps", "-l"],
    ["ps", "-s"],
    ["ps", "--all=false"],
    ["ps", "-a=false"],
    ["ps", "--help"],
    ["ps", "-h"],
    ["ps", "--"],
    ["ps", "extra"],
    ["-H", "unix:///nowhere", "ps"],
    ["--debug", "ps"],
    ["container"],
    ["network", "inspect"],
    ["network", "inspect", "-v", "bridge"],
    ["images", "busybox"],
    ["version", "extra"],
    ["inspect"],
    ["inspect", "--type", "network", "bridge"],
    ["logs"],
    ["logs", "-f", "web10"],
    ["logs", "--tail", "1", "web10"],
    ["logs", "web10", "web9"],
    ["exec", "web10"],
    ["exec", "-i", "web10", "sh"],
    ["exec", "-u", "1", "web10", "id"],
    ["run", "-d", "busybox"],
    ["network", "create", "n1"],
    ["rm", "-v", "web10"],
    ["rm"],
    ["rm", "-f"],
    ["stop"],
    ["stop", "-t", "x", "web10"],
    ["stop", "-t", "-1", "web10"],
    ["stop", "-t5", "web10"],
    ["stop", "--time=1", "web10"],
    ["stop", "-t", "\u0663", "web10"],
    ["kill", "-s", "HUP", "web10"],
    ["start", "-a", "done"],
    ["restart", "web10"],
    [],
]


@pytest.mark.parametrize("argv", HANDED_OVER, ids=lambda a: " ".join(a) or "(none)")
def test_other_forms_go_to_the_full_cli_before_any_request(
    daemon: StubDaemon, capfd: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = _run(capfd, lambda: fast.attempt(argv))
    assert (code, out, err) == (None, "", "")
    assert daemon.requests == []


REFUSED = [
    ["inspect", "bridge"],  # not a container: the full command finds the network
    ["inspect", "nosuch"],
    ["inspect", "web10", "nosuch"],
    ["network", "inspect", "nosuch"],
    ["logs", "nosuch"],
]


@pytest.mark.parametrize("argv", REFUSED, ids=" ".join)
def test_a_refused_read_is_worded_by_the_full_command(
    daemon: StubDaemon, capfd: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    got = _run(capfd, lambda: fast.attempt(argv))
    assert got == (None, "", "")
    with_fast = _run(capfd, lambda: main(argv))
    without = _run(capfd, lambda: main(argv, fast=False))
    assert with_fast == without
    assert with_fast[0] == (0 if argv == ["inspect", "bridge"] else 1)


def test_a_daemon_error_on_ps_is_the_full_commands(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    d = StubDaemon(lambda m, p, b: (500, {"message": "boom"}))
    monkeypatch.setenv("TETHER_HOST", f"unix://{d.path}")
    try:
        got = _run(capfd, lambda: main(["ps"]))
        want = _run(capfd, lambda: main(["ps"], fast=False))
    finally:
        d.close()
    assert got == want == (1, "", "Error response from daemon: boom\n")


def test_no_daemon_is_the_full_commands_message(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TETHER_HOST", "unix:///nonexistent/tether.sock")
    assert _run(capfd, lambda: fast.attempt(["ps"])) == (None, "", "")
    got = _run(capfd, lambda: main(["network", "ls"]))
    assert got == _run(capfd, lambda: main(["network", "ls"], fast=False))
    assert got[0] == 1 and "Cannot connect to the tether daemon" in got[2]


# -- the plain table renderer against the template engine ------------------------------------


def _engine(fmt: str, items: list[dict[str, object]], headers: dict[str, str]) -> str:
    """render_table_template as it was before the plain path: always the template engine."""
    from tether.cli.gotemplate import Template

    is_table = fmt.startswith("table")
    body = fmt[5:].lstrip() if is_table else fmt
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    tmpl = Template(body)
    lines = []
    if is_table:
        ctx: dict[str, object] = dict(headers)
        ctx["Label"] = lambda key: "LABEL"
        lines.append(tmpl.render(ctx))
    lines += [tmpl.render(item) for item in items]
    if is_table:
        return tabwrite([line.split("\t") for line in lines])
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize(
    "fmt",
    [
        views.PS_DEFAULT,
        views.NETWORK_DEFAULT,
        views.IMAGE_DIGESTS,
        "table {{.ID}}\\t{{.Names}}",
        "{{.Names}}",
        "{{.ID}}\t{{.Status}}",
        "{{.ID}}\\t{{.Labels}}",
        "table {{.Networks}}\t{{.Ports}}\t{{.Command}}",
        # not plain: the engine runs, and must give the same as before
        "table {{.ID}} {{.Names}}",
        "{{.Names}}\\n",
        "{{ .Names }}",
        "{{json .Names}}",
        "table {{.Nope}}\t{{.ID}}",
        '{{.Label "a"}}',
    ],
)
def test_plain_tables_are_the_template_engines(fmt: str) -> None:
    rows = [views.ps_row(c, no_trunc) for c in [*RUNNING, EXITED] for no_trunc in (False, True)]
    rows.append({**rows[0], "Names": "tab\tinside", "Status": "", "Ports": "é ünïcode"})
    assert render_table_template(fmt, rows, views.PS_HEADERS) == _engine(
        fmt, rows, views.PS_HEADERS
    )
    assert render_table_template(fmt, [], views.PS_HEADERS) == _engine(fmt, [], views.PS_HEADERS)


# -- the launcher's start-up ------------------------------------------------------------------

ALLOWED = {
    "tether",
    "tether.cli",
    "tether.cli.fast",
    "tether.cli.views",
    "tether.humanize",  # go-units HumanDuration: no imports of its own
    "tether.cli.output",
    "tether.client",
    "tether.wire",
    "_json",
    "_socket",
    "__future__",
}


def test_launcher_ps_loads_only_the_fast_modules(daemon: StubDaemon, tmp_path: object) -> None:
    from tether.cli import launcher

    path = os.path.join(str(tmp_path), "tether")
    launcher.write(path)
    baseline = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", "pass"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    r = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", path, "ps", "-a"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr

    def modules(stderr: str) -> set[str]:
        return {
            line.split("|")[-1].strip()
            for line in stderr.splitlines()
            if line.startswith("import time:") and "imported package" not in line
        }

    loaded = modules(r.stderr) - modules(baseline.stderr)
    assert loaded <= ALLOWED, sorted(loaded - ALLOWED)
    assert "web10" in r.stdout and "done" in r.stdout
    assert daemon.requests == [("GET", "/v1.41/containers/json?all=1")]
