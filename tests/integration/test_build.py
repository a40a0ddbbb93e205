"""`tether build` and compose's build sections, on namespace-hosts: a Dockerfile with every
instruction, the step cache, RUN steps confined like containers and on the build's
--network, docker's errors; a compose project whose service is built comes up.
"""

from __future__ import annotations

import json
import os
import tarfile

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS base
ARG GREETING=hello
ENV APP=/app \\
    MODE="test mode"
WORKDIR $APP
COPY hello.txt ./
COPY sub/ sub/
ADD files.tar.gz /opt/
ADD plain.txt /opt/plain.txt
RUN echo "$GREETING from RUN in $MODE" > /app/run.txt && ls /opt > /app/opt.txt
SHELL ["/bin/sh", "-c"]
USER root
EXPOSE 8080/tcp 53/udp
LABEL org.example.title="tether test" version=1
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=2 CMD true

FROM base AS final
ONBUILD RUN echo triggered > /onbuild.txt
MAINTAINER someone@example.com
RUN rm /app/hello.txt
COPY --from=base /app/run.txt /copied.txt
ENTRYPOINT ["sh", "-c"]
CMD ["cat /app/run.txt"]
"""


def write_context(d: str) -> str:
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    files = {
        "Dockerfile": DOCKERFILE,
        "hello.txt": "hello file\n",
        "sub/a": "sub a\n",
        "plain.txt": "plain\n",
        "secret.key": "never sent\n",
        ".dockerignore": "secret.key\n",
    }
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    src = os.path.join(d, "t.txt")
    with open(src, "w") as f:
        f.write("from the tarball\n")
    with tarfile.open(os.path.join(d, "files.tar.gz"), "w:gz") as tar:
        tar.add(src, "t.txt")
    os.unlink(src)
    return d


def steps(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("Step ", " ---> "))]


def test_a_dockerfile_with_every_instruction(bhost: NamespaceHost) -> None:
    h = bhost
    ctx = write_context(os.path.join(h.dir, "ctx"))
    out = h.ok("build", "-t", "myapp:1", "--build-arg", "GREETING=hi", ctx, timeout=180)
    lines = out.splitlines()
    assert lines[0].startswith("Sending build context to Docker daemon ")
    assert lines[1] == "Step 1/23 : FROM ${BASE} AS base"
    assert any(x.startswith(" ---> Running in ") for x in lines)
    assert lines[-1] == "Successfully tagged myapp:1"
    image_id = h.api.get("/images/myapp:1/json")["Id"]
    assert f"Successfully built {image_id[7:19]}" in lines

    r = h.cli("run", "--rm", "myapp:1")
    assert (r.returncode, r.stdout) == (0, "hi from RUN in test mode\n"), r.stderr
    script = (
        "cat /copied.txt /app/sub/a /opt/t.txt /opt/plain.txt /app/opt.txt; "
        "test ! -e /app/hello.txt && echo removed; test ! -e /app/secret.key && echo ignored; "
        'echo "$APP|$MODE|$(pwd)"'
    )
    r = h.cli("run", "--rm", "myapp:1", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "hi from RUN in test mode\nsub a\nfrom the tarball\nplain\nplain.txt\nt.txt\n"
        "removed\nignored\n/app|test mode|/app\n"
    )
    cfg = h.api.get("/images/myapp:1/json")["Config"]
    assert cfg["Env"][-2:] == ["APP=/app", "MODE=test mode"]
    assert cfg["WorkingDir"] == "/app"
    assert cfg["User"] == "root"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"org.example.title": "tether test", "version": "1"}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGTERM"
    assert cfg["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert cfg["Healthcheck"]["Interval"] == 5_000_000_000
    assert cfg["Entrypoint"] == ["sh", "-c"] and cfg["Cmd"] == ["cat /app/run.txt"]
    assert cfg["OnBuild"] == ["RUN echo triggered > /onbuild.txt"]
    assert h.api.get("/images/myapp:1/json")["Author"] == "someone@example.com"
    history = h.api.get("/images/myapp:1/history")
    assert history[0]["Id"] == image_id and history[0]["Tags"] == ["myapp:1"]
    assert any(x["CreatedBy"].startswith("|1 GREETING=hi /bin/sh -c echo") for x in history)
    # ONBUILD runs in a build FROM it.
    child = os.path.join(h.dir, "child")
    os.makedirs(child)
    with open(os.path.join(child, "Dockerfile"), "w") as f:
        f.write('FROM myapp:1\nENTRYPOINT []\nCMD ["cat", "/onbuild.txt"]\n')
    out = h.ok("build", "-t", "child", child, timeout=120)
    assert "# Executing 1 build trigger" in out
    r = h.cli("run", "--rm", "child")
    assert (r.returncode, r.stdout) == (0, "triggered\n"), r.stderr
    # --target stops at a stage; -q prints the id only.
    r = h.cli("build", "-q", "--target", "base", ctx, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("sha256:") and len(r.stdout.strip()) == 71
    # No build container is left behind; the one untagged image is the -q build's.
    assert h.api.get("/containers/json", {"all": 1}) == []
    assert [i["Id"] for i in h.api.get("/images/json") if not i["RepoTags"]] == [r.stdout.strip()]


def test_the_cache_reuses_steps_until_an_input_changes(bhost: NamespaceHost) -> None:
    h = bhost
    ctx = os.path.join(h.dir, "ctx")
    os.makedirs(ctx)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(
            "FROM busybox\nENV A=1\nCOPY one.txt /one.txt\nRUN cat /one.txt > /copy.txt\n"
            'COPY two.txt /two.txt\nRUN date +%s%N > /stamp\nCMD ["cat", "/copy.txt"]\n'
        )
    for name in ("one.txt", "two.txt"):
        with open(os.path.join(ctx, name), "w") as f:
            f.write(name + "\n")
    first = h.ok("build", "-t", "cached", ctx, timeout=120)
    first_id = h.api.get("/images/cached/json")["Id"]
    second = h.ok("build", "-t", "cached", ctx, timeout=120)
    assert second.count(" ---> Using cache") == 6
    assert " ---> Running in " not in second
    assert h.api.get("/images/cached/json")["Id"] == first_id
    assert steps(first)[-1] == steps(second)[-1]
    # A changed file: its COPY and every later step run again; earlier ones come from cache.
    with open(os.path.join(ctx, "two.txt"), "w") as f:
        f.write("changed\n")
    third = h.ok("build", "-t", "cached", ctx, timeout=120)
    assert third.count(" ---> Using cache") == 3
    assert third.count(" ---> Running in ") == 1
    # Only times changed: still cached (docker's cache looks at content, not mtimes).
    os.utime(os.path.join(ctx, "one.txt"), (1, 1))
    fourth = h.ok("build", "-t", "cached", ctx, timeout=120)
    assert fourth.count(" ---> Using cache") == 6
    r = h.ok("build", "--no-cache", "-t", "cached", ctx, timeout=120)
    assert " ---> Using cache" not in r
    # builder prune drops what no image needs (the steps of the builds `cached` no longer
    # names); the steps of the image still here stay.  -a drops everything: the next build
    # runs every step.
    assert "Total reclaimed space:" in h.ok("builder", "prune", "-f")
    assert h.ok("build", "-t", "cached", ctx, timeout=120).count(" ---> Using cache") == 6
    assert "Total reclaimed space:" in h.ok("builder", "prune", "-a", "-f")
    assert " ---> Using cache" not in h.ok("build", "-t", "cached", ctx, timeout=120)


def test_run_steps_are_confined_and_on_the_builds_network(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.77.0.0/24", "buildnet")
    h.ok(
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "buildnet",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    )
    ctx = os.path.join(h.dir, "ctx")
    os.makedirs(ctx)

    def build(dockerfile: str, *flags: str) -> tuple[int, str]:
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(dockerfile)
        r = h.cli("build", "--no-cache", *flags, ctx, timeout=120)
        return r.returncode, r.stdout + r.stderr

    # On a user network: names resolve through the embedded DNS, the server answers.
    code, out = build(
        "FROM busybox\nRUN wget -qO- http://web/index.html\n", "--network", "buildnet"
    )
    assert code == 0 and "hello from busybox" in out, out
    # --network none: only a loopback.
    code, out = build("FROM busybox\nRUN ls /sys/class/net\n", "--network", "none")
    assert code == 0 and "\nlo\n" in out and "eth0" not in out, out
    # Confined as a container: own pid namespace, Docker's capabilities, no host files.
    code, out = build(
        "FROM busybox\nRUN echo pid=$$ && grep CapEff /proc/self/status && ls /proc | grep -c '^[0-9]'\n"
    )
    assert code == 0 and "pid=1" in out and "CapEff:\t00000000a80425fb" in out, out
    code, out = build(f"FROM busybox\nRUN cat {h.root}/tether.db\n")
    assert code == 1 and "No such file or directory" in out
    assert "The command '/bin/sh -c cat " in out and "returned a non-zero code: 1" in out
    # docker's other errors, each on one line, exit 1, nothing left but the failed step's
    # container (docker keeps it, unless --force-rm).
    code, out = build("FROM busybox\nRUN exit 3\n", "--force-rm")
    assert (
        code == 1
        and out.splitlines()[-1] == "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    )
    code, out = build("FROM busybox\nCOPY nothere /x\n")
    assert code == 1 and out.splitlines()[-1] == (
        "COPY failed: file not found in build context or excluded by .dockerignore: stat "
        "nothere: file does not exist"
    )
    code, out = build("FROM busybox\nCOPY ../outside /x\n")
    assert code == 1 and "forbidden path outside the build context: ../outside" in out
    code, out = build("FROM busybox\nBOGUS x\n")
    assert code == 1 and "unknown instruction: BOGUS" in out
    code, out = build("FROM busybox\nRUN --mount=type=secret,id=token true\n")
    assert code == 1 and "the --mount option requires BuildKit" in out
    # A cache mount only speeds a step up: the step runs without it, said so.
    code, out = build("FROM busybox\nRUN --mount=type=cache,target=/root/.cache echo step-ran\n")
    assert code == 0 and "tether runs this step without the cache mount" in out
    assert "step-ran" in out
    # BuildKit's automatic platform ARGs.
    code, out = build(
        "FROM --platform=$BUILDPLATFORM busybox\nARG TARGETARCH\nRUN echo arch=$TARGETARCH\n"
    )
    assert code == 0 and "arch=amd64" in out, out
    # USER: later RUN steps run as that user (resolved in the image's /etc/passwd), and
    # what root owns stays out of their reach.
    code, out = build("FROM busybox\nUSER nobody\nRUN id -u; id -g; touch /etc/owned\n")
    assert code == 1 and "\n65534\n65534\n" in out and "Permission denied" in out, out
    r = h.cli("build", "-f", "nope.Dockerfile", ctx)
    assert r.returncode == 1 and "nope.Dockerfile: no such file or directory" in r.stderr
    # What is left: the server, and the step that failed without --force-rm (as docker
    # keeps it, for a look inside).
    left = {c["Names"][0]: c for c in h.api.get("/containers/json", {"all": 1})}
    assert len(left) == 3 and "/web" in left
    kept = [c for name, c in left.items() if name != "/web"]
    assert all(c["State"] == "exited" and c["Status"].startswith("Exited (1)") for c in kept)


COMPOSE = """\
services:
  web:
    build:
      context: ./web
      args:
        MSG: built by compose
    networks: [front]
  client:
    image: busybox
    command: sleep 600
    networks: [front]
networks:
  front: {}
"""

WEB_DOCKERFILE = """\
FROM busybox
ARG MSG=default
RUN mkdir -p /site && echo "$MSG" > /site/index.html
CMD ["httpd", "-f", "-p", "80", "-h", "/site"]
"""


def test_a_compose_file_with_build_comes_up(bhost: NamespaceHost) -> None:
    h = bhost
    d = os.path.join(h.dir, "proj")
    os.makedirs(os.path.join(d, "web"))
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(COMPOSE)
    with open(os.path.join(d, "web", "Dockerfile"), "w") as f:
        f.write(WEB_DOCKERFILE)
    compose = ("compose", "-f", os.path.join(d, "compose.yaml"))
    # config prints the build section (context made absolute), and no image of its own.
    cfg = json.loads(h.ok(*compose, "config", "--format", "json"))
    assert cfg["services"]["web"]["build"] == {
        "context": os.path.join(d, "web"),
        "dockerfile": "Dockerfile",
        "args": {"MSG": "built by compose"},
    }
    assert "image" not in cfg["services"]["web"]
    r = h.cli(*compose, "up", "-d", timeout=180)
    assert r.returncode == 0, r.stderr
    assert " Image proj-web  Built" in r.stderr
    r = h.cli(*compose, "exec", "client", "wget", "-qO-", "http://web")
    assert (r.returncode, r.stdout) == (0, "built by compose\n"), r.stderr
    image = h.api.get("/images/proj-web/json")
    # compose images: each container's image, as docker compose lists them.
    lines = h.ok(*compose, "images").splitlines()
    assert lines[0].split() == ["CONTAINER", "REPOSITORY", "TAG", "IMAGE", "ID", "SIZE"]
    busybox = h.api.get("/images/busybox/json")["Id"]
    assert sorted(line.split()[:4] for line in lines[1:]) == [
        ["proj-client-1", "busybox", "latest", busybox[7:19]],
        ["proj-web-1", "proj-web", "latest", image["Id"][7:19]],
    ]
    assert h.ok(*compose, "images", "-q", "web") == image["Id"] + "\n"
    # up again: the image is there, nothing is built or recreated.
    r = h.cli(*compose, "up", "-d", timeout=120)
    assert r.returncode == 0 and "Building" not in r.stderr and "Recreate" not in r.stderr
    # A change and `up --build`: rebuilt, the container recreated on the new image.
    with open(os.path.join(d, "web", "Dockerfile"), "a") as f:
        f.write('LABEL changed="yes"\n')
    r = h.cli(*compose, "up", "-d", "--build", timeout=180)
    assert r.returncode == 0 and "Recreate" in r.stderr, r.stderr
    assert h.api.get("/images/proj-web/json")["Id"] != image["Id"]
    # compose build: every step from the cache now.
    r = h.cli(*compose, "build", timeout=120)
    assert r.returncode == 0 and " ---> Running in " not in r.stderr, r.stderr
    assert h.api.get("/images/proj-web/json")["Config"]["Labels"]["changed"] == "yes"
    h.ok(*compose, "down")


CACHED_APP = """\
FROM 10.251.0.1:5000/base:1
ENV A=1
COPY one.txt /one.txt
RUN date +%s%N > /stamp
LABEL stage=app
CMD ["cat", "/stamp"]
"""


def test_cache_from_a_pulled_image_rebuilds_it_on_a_host_that_never_built_it() -> None:
    """--cache-from (docker's classic builder): the image's history names each step, so a
    host that pulled it rebuilds it to the same id without running a step; --progress
    chooses how the FROM image's pull is drawn."""
    from registry import registry

    reg_addr = "10.251.0.1:5000"
    with registry() as reg:
        a, b = (
            NamespaceHost(["--insecure-registry", reg_addr]),
            NamespaceHost(["--insecure-registry", reg_addr]),
        )
        try:
            for h in (a, b):
                h.start()
                reg.connect(h)
            a.import_busybox()
            a.ok("tag", "busybox", f"{reg_addr}/base:1")
            a.ok("push", f"{reg_addr}/base:1")
            ctxs = []
            for h in (a, b):
                ctx = os.path.join(h.dir, "ctx")
                os.makedirs(ctx)
                with open(os.path.join(ctx, "Dockerfile"), "w") as f:
                    f.write(CACHED_APP)
                with open(os.path.join(ctx, "one.txt"), "w") as f:
                    f.write("one\n")
                ctxs.append(ctx)
            a.ok("build", "-t", f"{reg_addr}/app:1", ctxs[0], timeout=180)
            a.ok("push", f"{reg_addr}/app:1")
            built = a.api.get(f"/images/{reg_addr}%2Fapp:1/json")["Id"]

            b.ok("pull", f"{reg_addr}/app:1")
            # plain: the FROM image's pull as status lines, no cursor movement.
            out = b.ok(
                "build",
                "--progress",
                "plain",
                "--cache-from",
                f"{reg_addr}/app:1",
                "-t",
                "again",
                ctxs[1],
                timeout=180,
            )
            assert "\x1b[" not in out and ": Already exists" in out, out
            assert " ---> Running in " not in out and out.count(" ---> Using cache") == 5, out
            assert b.api.get("/images/again/json")["Id"] == built
            r = b.cli("run", "--rm", "again")
            assert (
                r.returncode == 0 and r.stdout == a.cli("run", "--rm", f"{reg_addr}/app:1").stdout
            )

            # A changed file: the steps from its COPY on run again, those before still match.
            with open(os.path.join(ctxs[1], "one.txt"), "w") as f:
                f.write("changed\n")
            b.ok("rmi", f"{reg_addr}/base:1")  # pulled again below: drawn in place (tty)
            out = b.ok(
                "build",
                "--progress=tty",
                "--cache-from",
                f"{reg_addr}/app:1",
                "-t",
                "changed",
                ctxs[1],
                timeout=180,
            )
            assert "\x1b[2K" in out, out
            assert out.count(" ---> Using cache") == 1 and out.count(" ---> Running in ") == 1
            assert b.api.get("/images/changed/json")["Id"] != built
            # Without --cache-from nothing here matches: a pulled image is no local cache.
            with open(os.path.join(ctxs[1], "one.txt"), "w") as f:
                f.write("one\n")
            out = b.ok("build", "-t", "plain", ctxs[1], timeout=180)
            assert out.count(" ---> Running in ") == 1
            assert b.api.get("/images/plain/json")["Id"] != built
            # A name not here is said and skipped; a bad --progress is refused before anything.
            out = b.ok("build", "--cache-from", "nothere:1", ctxs[1], timeout=180)
            assert "[Warning] --cache-from nothere:1: no such image here, not used" in out
            r = b.cli("build", "--progress", "rawjson", ctxs[1])
            assert (r.returncode, r.stdout) == (1, "") and (
                'invalid argument "rawjson" for "--progress" flag' in r.stderr
            )
        finally:
            for h in (a, b):
                h.cleanup()
