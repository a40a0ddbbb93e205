"""Docker's own clients against tetherd, as a user drives them (issue 14).

The docker CLI (Debian's docker.io, or the one on PATH), docker-py and docker-compose 1.29
talk to a namespace-host's tetherd through DOCKER_HOST; no dockerd runs anywhere.  What is
asserted is what a user sees (output, exit codes, names resolving, files on the host) and
what dockerd does for the same commands (shared/reference/docker-behavior.md, and Docker
20.10 run by hand on this machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from clients import compose, compose_bin, docker, docker_cli, docker_ok, run_in_pty
from nshost import NamespaceHost

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(docker_cli() is None, reason="no docker CLI (apt-get install docker.io)"),
]


def _env(h: NamespaceHost) -> dict[str, str]:
    return {"DOCKER_HOST": f"unix://{h.socket}", "DOCKER_CONFIG": os.path.join(h.dir, "dc")}


def _raw(h: NamespaceHost, request: bytes) -> bytes:
    """One raw HTTP exchange on the API socket (what no client library would send)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(h.socket)
    s.sendall(request)
    out = b""
    while True:
        data = s.recv(65536)
        if not data:
            break
        out += data
    s.close()
    return out


def test_run_attached_rm_and_stdin(bhost: NamespaceHost) -> None:
    h = bhost
    # Attached: both streams, in order, and the command's exit code; --rm leaves nothing.
    for _ in range(3):
        r = docker(h, "run", "--rm", "busybox", "sh", "-c", "seq 1 200; echo oops >&2; exit 3")
        assert r.returncode == 3, r.stderr
        assert r.stdout.split() == [str(i) for i in range(1, 201)]
        assert r.stderr.strip() == "oops"
    assert docker_ok(h, "ps", "-aq") == ""
    # -i from a pipe: all of it reaches the command, whose stdin then closes (StdinOnce).
    data = "".join(f"line {i}\n" for i in range(20000))
    r = docker(h, "run", "-i", "--rm", "busybox", "wc", "-l", input=data)
    assert (r.returncode, r.stdout.strip()) == (0, "20000"), r.stderr
    # A missing command: docker's exit code 127 and the runtime's words.
    r = docker(h, "run", "--rm", "busybox", "nosuchcommand")
    assert r.returncode == 127
    assert "executable file not found" in r.stderr
    # --network nosuchnet fails at create and leaves no container (as dockerd 25+).
    r = docker(h, "run", "--network", "nosuchnet", "busybox", "true")
    assert r.returncode == 125
    assert "network nosuchnet not found" in r.stderr
    assert docker_ok(h, "ps", "-aq") == ""


def test_run_it_on_a_terminal_detach_and_attach(bhost: NamespaceHost) -> None:
    h = bhost
    cli = docker_cli() or "docker"
    out, code = run_in_pty(
        [cli, "run", "-it", "--rm", "busybox", "sh"],
        [b"echo answer-$((6*7)); tty; stty size\r", b"exit 5\r"],
        _env(h),
        ready=b"# ",
    )
    text = out.decode(errors="replace")
    assert code == 5, text
    assert "answer-42" in text
    assert "/dev/pts/0" in text  # the container's own terminal
    assert "33 101" in text  # the size of ours, sent by docker's resize
    # ctrl-p ctrl-q leaves it running; `docker attach` takes it over again.
    out, code = run_in_pty(
        [cli, "run", "-it", "--name", "keep", "busybox", "sh"],
        [b"echo before\r", b"\x10\x11"],
        _env(h),
        ready=b"# ",
    )
    assert code == 0, out
    assert docker_ok(h, "inspect", "-f", "{{.State.Running}}", "keep").strip() == "true"
    out, code = run_in_pty(
        [cli, "attach", "keep"], [b"echo after-$((1+1))\r", b"exit 7\r"], _env(h)
    )
    assert code == 7, out
    assert b"after-2" in out
    assert docker_ok(h, "inspect", "-f", "{{.State.ExitCode}}", "keep").strip() == "7"
    # The attached terminal's output is the log too (raw, as a tty container's is).
    assert "after-2" in docker_ok(h, "logs", "keep")


def test_tether_cli_run_streams_and_interactive(bhost: NamespaceHost) -> None:
    h = bhost
    # The lesson's `run --rm ... ping -c 4` printed nothing: all output before removal now.
    for _ in range(5):
        r = h.cli("run", "--rm", "busybox", "sh", "-c", "for i in 1 2 3 4; do echo ping $i; done")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [f"ping {i}" for i in range(1, 5)]
    r = h.cli("run", "--rm", "busybox", "sh", "-c", "exit 9")
    assert r.returncode == 9
    r = h.cli("run", "-i", "--rm", "busybox", "tr", "a-z", "A-Z", input="shout\n")
    assert r.stdout == "SHOUT\n"
    # A missing image: docker's words first, then where else an image comes from.
    r = h.cli("run", "--rm", "nosuchimage")
    lines = r.stderr.splitlines()
    assert r.returncode == 125 and lines[0] == "Unable to find image 'nosuchimage:latest' locally"
    assert lines[1].startswith("tether: Error response from daemon: "), lines
    assert "tether load -i FILE.tar" in r.stderr and "tether import ROOTFS.tar" in r.stderr
    from nshost import PYTHON

    out, code = run_in_pty(
        [PYTHON, "-m", "tether.cli.main", "run", "-it", "--rm", "busybox", "sh"],
        [b"echo it-$((3*3)); stty size\r", b"exit 4\r"],
        {"TETHER_HOST": f"unix://{h.socket}"},
        ready=b"# ",
    )
    assert code == 4, out
    assert b"it-9" in out and b"33 101" in out


def test_networks_with_the_docker_cli(bhost: NamespaceHost) -> None:
    h = bhost
    docker_ok(
        h,
        "network",
        "create",
        "--subnet",
        "10.77.0.0/16",
        "--gateway",
        "10.77.0.254",
        "--ip-range",
        "10.77.5.0/24",
        "--label",
        "tier=test",
        "-o",
        "com.docker.network.driver.mtu=1450",
        "--attachable",
        "n1",
    )
    docker_ok(h, "network", "create", "--internal", "n2")
    docker_ok(h, "network", "create", "--ipv6", "--subnet", "fd00:77::/64", "n6")
    net = json.loads(docker_ok(h, "network", "inspect", "n1"))[0]
    assert net["IPAM"]["Config"] == [
        {"Subnet": "10.77.0.0/16", "IPRange": "10.77.5.0/24", "Gateway": "10.77.0.254"}
    ]
    assert net["Labels"] == {"tier": "test"} and net["Attachable"] is True
    assert net["Options"] == {"com.docker.network.driver.mtu": "1450"}
    assert json.loads(docker_ok(h, "network", "inspect", "n2"))[0]["Internal"] is True
    assert json.loads(docker_ok(h, "network", "inspect", "n6"))[0]["EnableIPv6"] is True
    docker_ok(h, "run", "-d", "--name", "srv", "--network", "n1", "busybox", "sleep", "300")
    docker_ok(h, "run", "-d", "--name", "cli", "--network", "n1", "busybox", "sleep", "300")
    # The first container gets the ip-range's first address (dockerd's order).
    ip = docker_ok(h, "inspect", "-f", "{{.NetworkSettings.Networks.n1.IPAddress}}", "srv")
    assert ip.strip() == "10.77.5.0"
    # connect with a static address and aliases; both names resolve from another container.
    docker_ok(h, "network", "create", "--subnet", "10.78.0.0/24", "n3")
    docker_ok(h, "network", "connect", "--ip", "10.78.0.50", "--alias", "svc", "n3", "srv")
    docker_ok(h, "network", "connect", "n3", "cli")
    r = docker(h, "exec", "cli", "nslookup", "svc")
    assert "10.78.0.50" in r.stdout, r.stdout + r.stderr
    assert docker(h, "exec", "cli", "ping", "-c", "1", "-W", "2", "srv").returncode == 0
    # --link NAME:ALIAS on a user network: the alias is the linker's name for it.
    docker_ok(
        h,
        "run",
        "-d",
        "--name",
        "lk",
        "--network",
        "n1",
        "--link",
        "srv:db",
        "busybox",
        "sleep",
        "300",
    )
    assert docker(h, "exec", "lk", "ping", "-c", "1", "-W", "2", "db").returncode == 0
    docker_ok(h, "network", "disconnect", "n3", "srv")
    r = docker(h, "exec", "cli", "nslookup", "svc")
    assert "10.78.0.50" not in r.stdout
    # prune takes the unused networks only.
    out = docker_ok(h, "network", "prune", "-f")
    assert "n2" in out and "n6" in out and "n1" not in out
    docker_ok(h, "rm", "-f", "srv", "cli", "lk")


def test_containers_exec_logs_top_stats_kill_wait_cp(bhost: NamespaceHost) -> None:
    h = bhost
    docker_ok(
        h,
        "run",
        "-d",
        "--name",
        "web1",
        "busybox",
        "sh",
        "-c",
        "echo started; echo secret > /tmp/f; sleep 300",
    )
    assert docker_ok(h, "exec", "web1", "cat", "/tmp/f") == "secret\n"
    assert docker_ok(h, "exec", "-u", "nobody", "web1", "id", "-u") == "65534\n"
    assert "started" in docker_ok(h, "logs", "web1")
    top = docker_ok(h, "top", "web1")
    assert "sleep 300" in top and "PID" in top.splitlines()[0]
    stats = docker_ok(h, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "web1")
    assert stats.strip() == "web1 1"
    dest = os.path.join(h.dir, "copied")
    docker_ok(h, "cp", "web1:/tmp/f", dest)
    with open(dest) as f:
        assert f.read() == "secret\n"
    assert "A /tmp/f" in docker_ok(h, "diff", "web1")
    # An exec client that goes away mid-stream: no error, no traceback in tetherd's log
    # (the lesson saw one; the HTTP layer now takes a vanished client as the end).
    proc = subprocess.Popen(
        [
            docker_cli() or "docker",
            "exec",
            "web1",
            "sh",
            "-c",
            "while :; do echo x; sleep 0.01; done",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(h),
    )
    assert proc.stdout is not None and proc.stdout.read(4096)
    proc.kill()
    proc.wait()
    time.sleep(0.5)  # (the loop runs on until web1 is killed below)
    log = h.log()
    assert "Traceback" not in log and "exec start failed" not in log, log[-3000:]
    docker_ok(h, "pause", "web1")
    assert docker_ok(h, "inspect", "-f", "{{.State.Status}}", "web1").strip() == "paused"
    docker_ok(h, "unpause", "web1")
    docker_ok(h, "rename", "web1", "web2")
    docker_ok(h, "kill", "web2")  # returns once it has exited, as dockerd's SIGKILL does
    assert docker_ok(h, "inspect", "-f", "{{.State.Status}}", "web2").strip() == "exited"
    assert docker_ok(h, "wait", "web2").strip() == "137"
    assert docker_ok(h, "container", "prune", "-f").count("\n") >= 2
    assert docker_ok(h, "ps", "-aq") == ""


def test_mounts_users_and_refusals(bhost: NamespaceHost) -> None:
    h = bhost
    src = os.path.join(h.dir, "share")
    os.makedirs(src)
    with open(os.path.join(src, "in"), "w") as f:
        f.write("from-host\n")
    r = docker(
        h,
        "run",
        "--rm",
        "-v",
        f"{src}:/data:ro",
        "busybox",
        "sh",
        "-c",
        "cat /data/in; echo x > /data/new",
    )
    assert r.stdout == "from-host\n"
    assert "Read-only file system" in r.stderr
    docker_ok(h, "run", "--rm", "-v", f"{src}:/data", "busybox", "sh", "-c", "echo w > /data/out")
    with open(os.path.join(src, "out")) as f:
        assert f.read() == "w\n"
    # A named volume outlives its containers; rm refuses it while it is in use.
    docker_ok(h, "run", "--rm", "-v", "keep:/v", "busybox", "sh", "-c", "echo kept > /v/f")
    assert (
        docker_ok(h, "run", "--rm", "--mount", "source=keep,target=/v", "busybox", "cat", "/v/f")
        == "kept\n"
    )
    vol = json.loads(docker_ok(h, "volume", "inspect", "keep"))[0]
    assert vol["Driver"] == "local" and os.path.isfile(os.path.join(vol["Mountpoint"], "f"))
    docker_ok(h, "run", "-d", "--name", "holder", "-v", "keep:/v", "busybox", "sleep", "300")
    r = docker(h, "volume", "rm", "keep")
    assert r.returncode == 1 and "volume is in use" in r.stderr
    docker_ok(h, "rm", "-f", "holder")
    docker_ok(h, "volume", "rm", "keep")
    assert "keep" not in docker_ok(h, "volume", "ls", "-q")
    # -u, --group-add, --read-only, --tmpfs: honoured.
    assert docker_ok(h, "run", "--rm", "-u", "1234:55", "--group-add", "10", "busybox", "id") == (
        "uid=1234 gid=55 groups=10\n"
    )
    r = docker(
        h,
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "busybox",
        "sh",
        "-c",
        "touch /scratch/ok && echo tmpfs-ok; touch /nope",
    )
    assert "tmpfs-ok" in r.stdout and "Read-only file system" in r.stderr
    r = docker(h, "run", "--rm", "-u", "nosuchuser", "busybox", "true")
    assert r.returncode != 0 and "unable to find user nosuchuser" in r.stderr
    # What tether cannot enforce is refused by name, and nothing is left.
    for args in (
        ["--memory", "64m"],
        ["--ulimit", "nofile=10:10"],
        ["--device", "/dev/null"],
        ["--pid", "host"],
        ["--log-driver", "syslog"],
    ):
        r = docker(h, "run", "--rm", *args, "busybox", "true")
        assert r.returncode == 125, args
        assert "tether does not support" in r.stderr, (args, r.stderr)
    assert docker_ok(h, "ps", "-aq") == ""
    # --log-driver none: runs, keeps no logs.
    docker_ok(h, "run", "--name", "quiet", "--log-driver", "none", "busybox", "echo", "x")
    r = docker(h, "logs", "quiet")
    assert "does not support reading" in r.stderr


def test_restart_policies_survive_a_daemon_restart(bhost: NamespaceHost) -> None:
    h = bhost
    docker_ok(
        h,
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 1",
    )
    docker_ok(h, "run", "-d", "--name", "always", "--restart", "always", "busybox", "sleep", "300")
    docker_ok(h, "run", "-d", "--name", "stopped", "--restart", "always", "busybox", "sleep", "300")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if docker_ok(h, "inspect", "-f", "{{.RestartCount}}{{.State.Status}}", "flaky") == (
            "2exited\n"
        ):
            break
        time.sleep(0.2)
    assert docker_ok(h, "logs", "flaky").split() == ["try", "try", "try"]
    docker_ok(h, "stop", "-t", "1", "stopped")
    # tetherd goes away; the container it supervises dies meanwhile; the new tetherd
    # restarts it (policy always), but not the one stopped by hand.
    h.stop()
    pid = int(json.loads(docker_ok_after(h, "always"))["State"]["Pid"])
    os.kill(pid, 9)
    h.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = json.loads(docker_ok(h, "inspect", "always"))[0]
        if st["State"]["Running"] and st["State"]["Pid"] != pid:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the always container was not restarted by the new tetherd")
    assert docker_ok(h, "inspect", "-f", "{{.State.Status}}", "stopped").strip() == "exited"
    docker_ok(h, "rm", "-f", "always", "stopped", "flaky")


def docker_ok_after(h: NamespaceHost, name: str) -> str:
    """A container's record while no daemon runs (the store, read directly)."""
    import sqlite3

    db = sqlite3.connect(f"file:{os.path.join(h.root, 'tether.db')}?mode=ro", uri=True)
    try:
        for (doc,) in db.execute("SELECT data FROM objects WHERE kind='container'"):
            d = json.loads(doc)
            if d["name"] == name:
                return json.dumps({"State": {"Pid": d["state"]["pid"]}})
    finally:
        db.close()
    raise AssertionError(f"no container {name}")


def test_versions_and_swarm_answers(host: NamespaceHost) -> None:
    h = host
    head = _raw(h, b"HEAD /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").decode()
    for header in (
        "Api-Version: 1.47",
        "Ostype: linux",
        "Swarm: inactive",
        "Builder-Version:",
        "Cache-Control: no-cache, no-store, must-revalidate",
    ):
        assert header in head, head
    old = _raw(h, b"GET /v1.23/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 400")
    assert b"client version 1.23 is too old. Minimum supported API version is 1.24" in old
    new = _raw(h, b"GET /v1.99/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"client version 1.99 is too new. Maximum supported API version is 1.47" in new
    r = docker(h, "swarm", "leave")
    assert "This node is not part of a swarm" in r.stderr
    info = json.loads(docker_ok(h, "info", "--format", "{{json .}}"))
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    assert info["Containers"] == 0 and "local" in info["Plugins"]["Volume"]
    version = json.loads(docker_ok(h, "version", "--format", "{{json .Server}}"))
    assert version["Components"][0]["Details"]["MinAPIVersion"] == "1.24"
    # The lesson's commands (item 6): tether info prints as docker info does, printf
    # honours width and precision, a subnet with host bits is refused as by dockerd 25+.
    text = h.ok("info")
    assert " Swarm: inactive\n" in text and "  Volume: local\n" in text, text
    assert "{'" not in text and "['" not in text, text
    shown = h.ok("network", "inspect", "-f", '{{printf "%-8s|%.3s|" .Name .Driver}}', "bridge")
    assert shown == "bridge  |bri|\n"
    for run in (
        lambda: docker(h, "network", "create", "--subnet", "10.70.0.5/24", "n70"),
        lambda: h.cli("network", "create", "--subnet", "10.70.0.5/24", "n70"),
    ):
        r = run()
        assert r.returncode != 0
        assert (
            "invalid network config:\ninvalid subnet 10.70.0.5/24: it should be 10.70.0.0/24"
            in (r.stderr)
        ), r.stderr
    assert "n70" not in docker_ok(h, "network", "ls")


def test_docker_py(bhost: NamespaceHost) -> None:
    docker_py = pytest.importorskip("docker")
    h = bhost
    client = docker_py.DockerClient(base_url=f"unix://{h.socket}", version="1.44", timeout=60)
    try:
        out = client.containers.run("busybox", ["sh", "-c", "echo from-py"], remove=True)
        assert out == b"from-py\n"
        ipam = docker_py.types.IPAMConfig(
            pool_configs=[docker_py.types.IPAMPool(subnet="10.79.0.0/24", gateway="10.79.0.1")]
        )
        net = client.networks.create("pynet", ipam=ipam, labels={"a": "b"})
        c = client.containers.run(
            "busybox", ["sleep", "300"], detach=True, name="pyc", network="pynet"
        )
        c.reload()
        ep = c.attrs["NetworkSettings"]["Networks"]["pynet"]
        assert ep["IPAddress"].startswith("10.79.0.")
        # API 1.44+: no short id among the aliases (dockerd 25+); 1.41 clients still get it.
        assert c.short_id not in (ep["Aliases"] or [])
        old = docker_py.APIClient(base_url=f"unix://{h.socket}", version="1.41")
        aliases = old.inspect_container("pyc")["NetworkSettings"]["Networks"]["pynet"]["Aliases"]
        assert c.id[:12] in aliases
        code, output = c.exec_run(["sh", "-c", "echo $((40+2))"])
        assert (code, output) == (0, b"42\n")
        assert c.top()["Processes"]
        stats = c.stats(stream=False)
        assert stats["pids_stats"]["current"] == 1 and "eth0" in stats["networks"]
        c.kill()
        assert c.wait()["StatusCode"] == 137
        c.remove()
        net.remove()
        # Missing images: docker-py's own classes (no pull: tests reach no registry).
        with pytest.raises(docker_py.errors.ImageNotFound):
            client.containers.create("nosuchimage:latest", "true")
        with pytest.raises(docker_py.errors.ImageNotFound):
            client.images.get("nosuchimage")
        assert client.volumes.create("pyvol").name == "pyvol"
        assert [v.name for v in client.volumes.list()] == ["pyvol"]
    finally:
        client.close()


def test_compose_129_up_run_down(bhost: NamespaceHost, tmp_path: os.PathLike[str]) -> None:
    h = bhost
    project = str(tmp_path)
    with open(os.path.join(project, "docker-compose.yml"), "w") as f:
        f.write(
            'version: "3.8"\n'
            "services:\n"
            "  web:\n"
            "    image: busybox\n"
            "    command: sh -c 'echo web-started; exec httpd -f -p 80'\n"
            "    networks: [front]\n"
            "  client:\n"
            "    image: busybox\n"
            "    command: sh -c 'nslookup web >/dev/null && echo resolved-web; echo client-done'\n"
            "    depends_on: [web]\n"
            "    networks: [front]\n"
            "networks:\n"
            "  front: {}\n"
        )
    # Foreground up: both services' output, attached; the client's exit ends it.
    r = compose(h, project, "-p", "p1", "up", "--exit-code-from", "client")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "web-started" in r.stdout and "resolved-web" in r.stdout and "client-done" in r.stdout
    # (compose 1.29 attaches only after the start, dockerpty's lazy map: a command that ends
    # at once has no output to show, with dockerd as here; the run must still end.)
    r = compose(h, project, "-p", "p1", "run", "--rm", "client", "sh", "-c", "true")
    assert r.returncode == 0, r.stdout + r.stderr
    r = compose(
        h, project, "-p", "p1", "run", "--rm", "client", "sh", "-c", "sleep 2; echo run-$((2+3))"
    )
    assert r.returncode == 0 and "run-5" in r.stdout, r.stdout + r.stderr
    r = compose(h, project, "-p", "p1", "up", "-d")
    assert r.returncode == 0, r.stderr
    assert "Up" in compose(h, project, "-p", "p1", "ps").stdout
    r = compose(h, project, "-p", "p1", "exec", "-T", "web", "echo", "exec-ok")
    assert r.stdout.strip() == "exec-ok", r.stderr
    r = compose(h, project, "-p", "p1", "down")
    assert r.returncode == 0, r.stderr
    assert docker_ok(h, "ps", "-aq") == ""
    assert "p1_front" not in docker_ok(h, "network", "ls")
    # Foreground up, then Ctrl-C: compose stops the services ("Gracefully stopping...") and
    # exits; the containers are left stopped, as with dockerd.
    log_path = os.path.join(project, "up.log")
    env = dict(os.environ, DOCKER_HOST=f"unix://{h.socket}", COMPOSE_INTERACTIVE_NO_CLI="1")
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [compose_bin(), "--no-ansi", "-p", "p2", "up", "web"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=project,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"web-started" not in _read(log_path):
            assert proc.poll() is None, _read(log_path)
            time.sleep(0.2)
        assert b"web-started" in _read(log_path)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Gracefully stopping" in _read(log_path), _read(log_path)
    states = docker_ok(h, "ps", "-a", "--format", "{{.Names}} {{.State}}").split("\n")
    assert "p2_web_1 exited" in states, states
    assert compose(h, project, "-p", "p2", "down").returncode == 0
    assert docker_ok(h, "ps", "-aq") == ""


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_json_file_rotation_max_size_and_max_file(bhost: NamespaceHost) -> None:
    h = bhost
    # max-size=1k, max-file=3: the log is container.log, .1, .2 (the oldest dropped), each
    # about 1 kB, and `logs` reads the newest ~3 kB across them, in order.
    docker_ok(
        h,
        "run",
        "--name",
        "rot",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        # Lines spaced out: tether-shim logs what each read of the pipe brings as one entry
        # (a fast loop can arrive in one read, one entry, one file however large).
        "for i in $(seq 1 200); do echo $i ........................................; "
        "usleep 2000; done",
    )
    path = docker_ok(h, "inspect", "-f", "{{.LogPath}}", "rot").strip()
    assert os.path.exists(f"{path}.1") and os.path.exists(f"{path}.2")
    assert not os.path.exists(f"{path}.3")
    for p in (path, f"{path}.1", f"{path}.2"):
        assert os.path.getsize(p) <= 1000 + 13 + 4096, p
    lines = [int(x.split()[0]) for x in docker_ok(h, "logs", "rot").splitlines() if x]
    assert lines[-1] == 200 and lines[0] > 1
    assert lines == list(range(lines[0], 201))
    cfg = json.loads(docker_ok(h, "inspect", "-f", "{{json .HostConfig.LogConfig}}", "rot"))
    assert cfg == {"Type": "json-file", "Config": {"max-size": "1k", "max-file": "3"}}
    # A follower crosses every rotation and loses nothing, even when it falls several
    # rotations behind on a loaded machine (max-file 100 keeps it all: ~27 files of 2k).
    docker_ok(
        h,
        "run",
        "-d",
        "--name",
        "rot2",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=100",
        "busybox",
        "sh",
        "-c",
        "sleep 1; for i in $(seq 1 3000); do echo $i; done",
    )
    out = docker_ok(h, "logs", "-f", "rot2")
    assert [int(x) for x in out.split()] == list(range(1, 3001))
    r = docker(h, "run", "--rm", "--log-opt", "max-size=ten", "busybox", "true")
    assert r.returncode == 125 and "invalid size: 'ten'" in r.stderr
    docker_ok(h, "rm", "-f", "rot", "rot2")
