"""Images over the registry protocol, against a real registry (Debian's docker-registry, the
reference distribution/registry v2) that each test starts in a namespace of its own, and
with skopeo as an independent client checking what tether pushed.  Nothing here reaches
beyond the namespaces the tests make: every image is made from the busybox rootfs or by
hand (tests/imagetools.py), every registry address is inside a test namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from imagetools import busybox_layer, config, docker_save, layer, oci_index_layout, sha256
from nshost import NamespaceHost, busybox_tar, sh
from registry import Registry, registry

pytestmark = pytest.mark.integration

REG = "10.251.0.1:5000"
INSECURE = ["--insecure-registry", REG]


@pytest.fixture
def reg() -> Iterator[Registry]:
    with registry() as r:
        yield r


def hosts(reg: Registry, n: int, extra: list[str] | None = None) -> list[NamespaceHost]:
    out = []
    for _ in range(n):
        h = NamespaceHost([*INSECURE, *(extra or [])])
        try:
            h.start()
        except BaseException:
            h.cleanup()
            raise
        out.append(h)
        reg.connect(h)
    return out


@pytest.fixture
def pair(reg: Registry) -> Iterator[tuple[NamespaceHost, NamespaceHost]]:
    hs: list[NamespaceHost] = []
    try:
        hs = hosts(reg, 2)
        yield hs[0], hs[1]
    finally:
        for h in hs:
            h.cleanup()


def skopeo(h: NamespaceHost, *args: str, check: bool = True) -> str:
    """skopeo in host h's namespace (where the registry is reachable)."""
    quoted = " ".join(f"'{a}'" for a in args)
    r = h.sh(f"skopeo {quoted}", check=False, timeout=60)
    assert not check or r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def layer_dirs(h: NamespaceHost) -> list[str]:
    d = os.path.join(h.root, "images", "layers")
    return sorted(os.listdir(d))


def image_set(h: NamespaceHost) -> str:
    """Every image and name (`images` without its ever-changing CREATED column)."""
    return h.ok("images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}")


def digest_of(push_output: str) -> str:
    line = next(x for x in push_output.splitlines() if ": digest: " in x)
    return line.split(": digest: ")[1].split()[0]


def test_push_then_pull_on_another_host_by_tag_and_by_digest(
    reg: Registry, pair: tuple[NamespaceHost, NamespaceHost]
) -> None:
    a, b = pair
    a.import_busybox()
    a.ok("tag", "busybox", f"{REG}/team/bb:v1")
    out = a.ok("push", f"{REG}/team/bb:v1")
    assert out.startswith(f"The push refers to repository [{REG}/team/bb]\n")
    assert ": Pushed\n" in out
    digest = digest_of(out)
    # What the registry holds, read by another client: the manifest tether pushed, whose
    # layers are the gzip blobs tether made of its layer.
    raw = skopeo(a, "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/team/bb:v1")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    inspect_a = a.api.get(f"/images/{REG}%2Fteam%2Fbb:v1/json")
    assert manifest["config"]["digest"] == inspect_a["Id"]
    # Pushing again: every blob is there already.
    again = a.ok("push", f"{REG}/team/bb:v1")
    assert ": Layer already exists\n" in again and digest_of(again) == digest

    # Host b pulls it by tag: docker's lines, then the reference; it runs.
    out = b.ok("pull", f"{REG}/team/bb:v1")
    lines = out.splitlines()
    assert lines[0] == "v1: Pulling from team/bb"
    assert any(x.endswith(": Pull complete") for x in lines)
    assert f"Digest: {digest}" in lines
    assert f"Status: Downloaded newer image for {REG}/team/bb:v1" in lines
    assert lines[-1] == f"{REG}/team/bb:v1"
    assert b.api.get(f"/images/{REG}%2Fteam%2Fbb:v1/json")["Id"] == inspect_a["Id"]
    r = b.cli("run", "--rm", f"{REG}/team/bb:v1", "cat", "/www/index.html")
    assert (r.returncode, r.stdout) == (0, "hello from busybox\n"), r.stderr
    # By digest: the same image, already here.
    out = b.ok("pull", f"{REG}/team/bb@{digest}")
    assert f"Status: Image is up to date for {REG}/team/bb@{digest}" in out
    assert out.splitlines()[-1] == f"{REG}/team/bb@{digest}"
    assert (
        f"{REG}/team/bb@{digest}" in b.api.get(f"/images/{REG}%2Fteam%2Fbb:v1/json")["RepoDigests"]
    )

    # A second image on the same base: its base layer is not fetched again, and is on disk
    # once on each host.
    before = layer_dirs(b)
    extra = layer(files={"app/version": b"2\n"}, dirs=["app"])
    path = os.path.join(a.dir, "app.tar")
    base = busybox_layer(busybox_tar())
    docker_save(
        path,
        [base, extra],
        config([base, extra], cmd=["cat", "/app/version"]),
        [f"{REG}/team/app:2"],
    )
    a.ok("load", "-i", path)
    out = a.ok("push", f"{REG}/team/app:2")
    assert "Mounted from team/bb" in out or "Layer already exists" in out
    out = b.ok("pull", f"{REG}/team/app:2")
    assert ": Already exists\n" in out and out.count(": Pull complete") == 1
    assert len(layer_dirs(b)) == len(before) + 1
    r = b.cli("run", "--rm", f"{REG}/team/app:2")
    assert (r.returncode, r.stdout) == (0, "2\n"), r.stderr


def test_a_manifest_list_gives_each_platform_its_image(reg: Registry) -> None:
    (h,) = hosts(reg, 1)
    try:
        base = busybox_layer(busybox_tar())
        arm = layer(files={"arch": b"arm64\n"})
        layout = os.path.join(h.dir, "multi")
        index = oci_index_layout(
            layout,
            [
                ({"os": "linux", "architecture": "amd64"}, [base], config([base])),
                (
                    {"os": "linux", "architecture": "arm64", "variant": "v8"},
                    [arm],
                    config([arm], arch="arm64", variant="v8"),
                ),
            ],
            "latest",
        )
        skopeo(
            h,
            "copy",
            "--all",
            "--dest-tls-verify=false",
            f"oci:{layout}:latest",
            f"docker://{REG}/multi:latest",
        )
        out = h.ok("pull", f"{REG}/multi")
        # RepoDigests name the index (what was pulled), the image is the amd64 one.
        assert f"Digest: {index}" in out
        img = h.api.get(f"/images/{REG}%2Fmulti/json")
        assert (img["Architecture"], img["Os"]) == ("amd64", "linux")
        assert img["RepoDigests"] == [f"{REG}/multi@{index}"]
        r = h.cli("run", "--rm", f"{REG}/multi", "echo", "ok")
        assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
        h.ok("pull", "--platform", "linux/arm64", f"{REG}/multi")
        img = h.api.get(f"/images/{REG}%2Fmulti/json")
        assert (img["Architecture"], img.get("Variant")) == ("arm64", "v8")
        assert img["RootFS"]["Layers"] == [sha256(arm)]
        r = h.cli("pull", "--platform", "linux/s390x", f"{REG}/multi")
        assert r.returncode == 1
        assert r.stderr == (
            "Error response from daemon: no matching manifest for linux/s390x in the manifest "
            "list entries\n"
        )
    finally:
        h.cleanup()


def test_missing_tags_and_repositories_get_dockers_errors_and_docker_py_maps_them(
    reg: Registry, pair: tuple[NamespaceHost, NamespaceHost]
) -> None:
    import docker

    a, _ = pair
    a.import_busybox()
    a.ok("tag", "busybox", f"{REG}/bb")
    a.ok("push", f"{REG}/bb")
    r = a.cli("pull", f"{REG}/bb:nope")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"Error response from daemon: manifest for {REG}/bb:nope not found: manifest unknown: "
        "manifest unknown\n"
    )
    before = image_set(a)
    r = a.cli("run", "--rm", f"{REG}/nothere")
    assert r.returncode == 125
    assert r.stderr.splitlines()[:2] == [
        f"Unable to find image '{REG}/nothere:latest' locally",
        f"tether: Error response from daemon: manifest for {REG}/nothere:latest not found: "
        "manifest unknown: manifest unknown",
    ]
    assert image_set(a) == before
    r = a.cli("run", "--pull", "never", "--rm", f"{REG}/bb:other")
    assert r.returncode == 125 and "No such image: 10.251.0.1:5000/bb:other" in r.stderr

    client = docker.DockerClient(base_url=f"unix://{a.socket}", version="1.41", timeout=60)
    try:
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("nosuch")
        with pytest.raises(docker.errors.NotFound) as info:
            client.images.pull(f"{REG}/bb", tag="nope")
        assert "manifest unknown" in str(info.value)
        img = client.images.pull(f"{REG}/bb", tag="latest")
        assert img.id == a.api.get("/images/busybox/json")["Id"]
        # docker-py's run: not here -> ImageNotFound -> pull -> create, as the docker CLI.
        a.ok("rmi", f"{REG}/bb")
        c = client.containers.run(f"{REG}/bb", ["echo", "from docker-py"], detach=True)
        assert c.wait(timeout=30)["StatusCode"] == 0
        assert c.logs() == b"from docker-py\n"
        c.remove()
        saved = b"".join(client.images.get("busybox").save())
        loaded = client.images.load(saved)
        assert [i.id for i in loaded] == [img.id]
    finally:
        client.close()


def test_a_corrupted_blob_is_refused_and_leaves_nothing(
    reg: Registry, pair: tuple[NamespaceHost, NamespaceHost]
) -> None:
    a, b = pair
    a.import_busybox()
    a.ok("tag", "busybox", f"{REG}/bb")
    digest = digest_of(a.ok("push", f"{REG}/bb"))
    raw = json.loads(
        skopeo(a, "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/bb@{digest}")
    )
    blob = raw["layers"][0]["digest"]
    path = reg.blob_path(blob)
    with open(path, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = (
        image_set(b),
        layer_dirs(b),
        sorted(os.listdir(os.path.join(b.root, "images", "blobs", "sha256"))),
    )
    r = b.cli("pull", f"{REG}/bb")
    assert r.returncode == 1
    assert r.stderr == f"filesystem layer verification failed for digest {blob}\n"
    after = (
        image_set(b),
        layer_dirs(b),
        sorted(os.listdir(os.path.join(b.root, "images", "blobs", "sha256"))),
    )
    assert after == before
    assert os.listdir(os.path.join(b.root, "images", "tmp")) == []


def test_htpasswd_login_push_pull_logout() -> None:
    with registry(auth="htpasswd", users={"alice": "s3cret"}) as locked:
        (h,) = hosts(locked, 1, ["--insecure-registry", locked.addr])
        try:
            cfg = os.path.join(h.dir, "config")
            env = {"TETHER_CONFIG": cfg}
            h.import_busybox()
            h.ok("tag", "busybox", f"{locked.addr}/private/bb")
            r = h.cli("push", f"{locked.addr}/private/bb", env=env)
            assert r.returncode == 1 and "no basic auth credentials" in r.stderr
            r = h.cli(
                "login", "-u", "alice", "--password-stdin", locked.addr, input="wrong\n", env=env
            )
            assert r.returncode == 1
            assert r.stderr == (
                f"Error response from daemon: login attempt to http://{locked.addr}/v2/ failed "
                "with status: 401 Unauthorized\n"
            )
            assert not os.path.exists(os.path.join(cfg, "config.json"))
            r = h.cli(
                "login", "-u", "alice", "--password-stdin", locked.addr, input="s3cret\n", env=env
            )
            assert (r.returncode, r.stdout) == (0, "Login Succeeded\n"), r.stderr
            st = os.stat(os.path.join(cfg, "config.json"))
            assert (
                oct(st.st_mode & 0o777) == "0o600" and oct(os.stat(cfg).st_mode & 0o777) == "0o700"
            )
            with open(os.path.join(cfg, "config.json")) as f:
                auths = json.load(f)["auths"]
            assert auths == {locked.addr: {"auth": "YWxpY2U6czNjcmV0"}}  # alice:s3cret
            h.ok("push", f"{locked.addr}/private/bb", env=env)
            h.ok("rmi", f"{locked.addr}/private/bb")
            h.ok("pull", f"{locked.addr}/private/bb", env=env)
            assert (
                h.ok("logout", locked.addr, env=env)
                == f"Removing login credentials for {locked.addr}\n"
            )
            r = h.cli("pull", f"{locked.addr}/private/bb", env=env)
            assert r.returncode == 1 and "no basic auth credentials" in r.stderr
        finally:
            h.cleanup()


def test_token_auth_login_push_pull() -> None:
    with registry(auth="token", users={"bob": "hunter2"}) as locked:
        (h,) = hosts(locked, 1, ["--insecure-registry", locked.addr])
        try:
            env = {"TETHER_CONFIG": os.path.join(h.dir, "config")}
            h.import_busybox()
            for name in ("private/bb", "public/bb"):
                h.ok("tag", "busybox", f"{locked.addr}/{name}")
            r = h.cli("push", f"{locked.addr}/private/bb", env=env)
            assert r.returncode == 1 and "unauthorized: authentication required" in r.stderr
            r = h.cli("login", "-u", "bob", "-p", "nope", locked.addr, env=env)
            assert r.returncode == 1 and "incorrect username or password" in r.stderr, r.stderr
            r = h.cli(
                "login", "-u", "bob", "--password-stdin", locked.addr, input="hunter2\n", env=env
            )
            assert r.returncode == 0, r.stderr
            for name in ("private/bb", "public/bb"):
                h.ok("push", f"{locked.addr}/{name}", env=env)
                h.ok("rmi", f"{locked.addr}/{name}")
            h.ok("logout", locked.addr, env=env)
            # Anonymous: the token server grants pull on public/ only.
            h.ok("pull", f"{locked.addr}/public/bb", env=env)
            r = h.cli("pull", f"{locked.addr}/private/bb", env=env)
            assert r.returncode == 1
            assert r.stderr == "Error response from daemon: unauthorized: authentication required\n"
        finally:
            h.cleanup()


def test_insecure_only_when_named_and_mirrors_for_docker_io(reg: Registry) -> None:
    (pusher,) = hosts(reg, 1)
    strict = NamespaceHost()
    mirrored = NamespaceHost(["--registry-mirror", f"http://{REG}"])
    try:
        for h in (strict, mirrored):
            h.start()
            reg.connect(h)
        pusher.import_busybox()
        # What docker.io/library/busybox is on the mirror.
        pusher.ok("tag", "busybox", f"{REG}/library/busybox:1.36")
        pusher.ok("push", f"{REG}/library/busybox:1.36")
        r = strict.cli("pull", f"{REG}/library/busybox:1.36")
        assert r.returncode == 1
        assert r.stderr == (
            f'Error response from daemon: Get "https://{REG}/v2/library/busybox/manifests/1.36": '
            "http: server gave HTTP response to HTTPS client\n"
        )
        out = mirrored.ok("pull", "busybox:1.36")
        assert out.splitlines()[0] == "1.36: Pulling from library/busybox"
        assert out.splitlines()[-1] == "docker.io/library/busybox:1.36"
        r = mirrored.cli("run", "--rm", "busybox:1.36", "echo", "via the mirror")
        assert (r.returncode, r.stdout) == (0, "via the mirror\n")
        info = mirrored.api.get("/info")["RegistryConfig"]
        assert info["Mirrors"] == [f"http://{REG}"]
        assert "127.0.0.0/8" in info["InsecureRegistryCIDRs"]
    finally:
        for h in (pusher, strict, mirrored):
            h.cleanup()


def test_run_pulls_a_missing_image_as_its_pull_policy_says(
    reg: Registry, pair: tuple[NamespaceHost, NamespaceHost]
) -> None:
    a, b = pair
    a.import_busybox()
    a.ok("tag", "busybox", f"{REG}/bb:v1")
    a.ok("push", f"{REG}/bb:v1")
    r = b.cli("run", "--pull", "never", "--rm", f"{REG}/bb:v1", "true")
    assert r.returncode == 125 and "No such image" in r.stderr
    r = b.cli("run", "--rm", f"{REG}/bb:v1", "echo", "pulled")
    assert (r.returncode, r.stdout) == (0, "pulled\n")
    assert r.stderr.startswith(f"Unable to find image '{REG}/bb:v1' locally\nv1: Pulling from bb\n")
    assert f"Status: Downloaded newer image for {REG}/bb:v1" in r.stderr
    # Present: nothing pulled; --pull always asks the registry again.
    r = b.cli("run", "--rm", f"{REG}/bb:v1", "true")
    assert (r.returncode, r.stderr) == (0, "")
    r = b.cli("run", "--pull", "always", "--rm", f"{REG}/bb:v1", "true")
    assert r.returncode == 0 and f"Status: Image is up to date for {REG}/bb:v1" in r.stderr
    r = b.cli("run", "--pull", "sometimes", f"{REG}/bb:v1")
    assert r.returncode == 125 and "invalid pull option: 'sometimes'" in r.stderr
    r = b.cli("create", "-q", "--name", "c1", f"{REG}/bb:v1")
    assert r.returncode == 0 and r.stderr == ""
    # push -a: every tag of the repository.
    a.ok("tag", "busybox", f"{REG}/bb:v2")
    out = a.ok("push", "-a", f"{REG}/bb")
    assert "v1: digest: " in out and "v2: digest: " in out
    # compose pull, then up with the image there (nothing pulled again).
    d = os.path.join(b.dir, "proj")
    os.makedirs(d)
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(f"services:\n  app:\n    image: {REG}/bb:v2\n    command: sleep 600\n")
    compose = ("compose", "-f", os.path.join(d, "compose.yaml"))
    r = b.cli(*compose, "pull")
    assert r.returncode == 0 and f" Image {REG}/bb:v2  Pulled" in r.stderr, r.stderr
    assert b.api.get(f"/images/{REG}%2Fbb:v2/json")["Id"]
    r = b.cli(*compose, "pull", "-q")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = b.cli(*compose, "up", "-d")
    assert r.returncode == 0 and "Pulling" not in r.stderr, r.stderr
    b.ok(*compose, "down")


def test_save_load_round_trips_byte_identical(
    reg: Registry, pair: tuple[NamespaceHost, NamespaceHost]
) -> None:
    a, b = pair
    a.import_busybox()
    a.ok("tag", "busybox", f"{REG}/bb:v1")
    a.ok("push", f"{REG}/bb:v1")
    first = os.path.join(a.dir, "one.tar")
    a.ok("save", "-o", first, "busybox", f"{REG}/bb:v1")
    names = sh(f"tar -tf {first}").stdout.split()
    assert {"index.json", "manifest.json", "oci-layout"} <= set(names)
    # Loaded on another host, saved there: the same bytes.
    out = b.ok("load", "-i", first)
    assert out == f"Loaded image: busybox:latest\nLoaded image: {REG}/bb:v1\n"
    second = os.path.join(b.dir, "two.tar")
    b.ok("save", "-o", second, "busybox", f"{REG}/bb:v1")
    with open(first, "rb") as f1, open(second, "rb") as f2:
        assert hashlib.sha256(f1.read()).digest() == hashlib.sha256(f2.read()).digest()
    # To stdout, and loaded from stdin: the same bytes again.
    piped = subprocess.run(
        [sys.executable, "-m", "tether.cli.main", "save", "busybox", f"{REG}/bb:v1"],
        capture_output=True,
        env={**os.environ, "TETHER_HOST": f"unix://{a.socket}"},
        timeout=60,
        check=True,
    ).stdout
    with open(first, "rb") as f:
        assert f.read() == piped
    b.ok("rmi", "busybox", f"{REG}/bb:v1")
    loaded = subprocess.run(
        [sys.executable, "-m", "tether.cli.main", "load"],
        input=piped,
        capture_output=True,
        env={**os.environ, "TETHER_HOST": f"unix://{b.socket}"},
        timeout=60,
    )
    assert loaded.returncode == 0 and loaded.stdout.startswith(b"Loaded image: busybox:latest\n")
    # What skopeo writes (docker-archive: the older layout; oci-archive) loads too.
    for transport, name in (("docker-archive", "sk/docker:1"), ("oci-archive", "sk/oci:1")):
        path = os.path.join(a.dir, f"{transport}.tar")
        skopeo(
            a,
            "copy",
            "--src-tls-verify=false",
            f"docker://{REG}/bb:v1",
            f"{transport}:{path}:{name}",
        )
        out = b.ok("load", "-i", path)
        assert out == f"Loaded image: {name}\n", out
        r = b.cli("run", "--rm", name, "cat", "/www/index.html")
        assert (r.returncode, r.stdout) == (0, "hello from busybox\n"), r.stderr
    r = b.cli("load", "-i", os.path.join(a.dir, "nothing.tar"))
    assert r.returncode == 1 and "no such file or directory" in r.stderr


def test_many_layers_whiteouts_and_opaque_directories(bhost: NamespaceHost) -> None:
    h = bhost
    base = busybox_layer(busybox_tar())
    layers = [
        base,
        layer(files={"data/keep": b"k", "data/gone": b"g", "old/x": b"x"}, dirs=["data", "old"]),
    ]
    for i in range(125):
        layers.append(layer(files={f"many/{i:03d}": str(i).encode()}, dirs=["many"]))
    layers.append(
        layer(whiteouts=["data/gone"], opaque=["old"], files={"old/new": b"n"}, dirs=["old"])
    )
    path = os.path.join(h.dir, "many.tar")
    docker_save(path, layers, config(layers), ["many:latest"])
    assert h.ok("load", "-i", path) == "Loaded image: many:latest\n"
    assert len(h.api.get("/images/many/json")["RootFS"]["Layers"]) == 128
    r = h.cli(
        "run",
        "--rm",
        "many",
        "sh",
        "-c",
        "ls /many | wc -l; cat /many/000 /many/124; ls /data; ls /old; echo ok",
    )
    assert (r.returncode, r.stdout) == (0, "125\n0124keep\nnew\nok\n"), r.stderr


def test_a_layer_cannot_write_outside_its_directory(bhost: NamespaceHost) -> None:
    h = bhost
    target = os.path.join(h.dir, "escaped")
    base = busybox_layer(busybox_tar())
    evil = layer(symlinks={"link": h.dir}, files={"link/escaped": b"pwned"})
    evil2 = layer(files={f"../../../../..{target}2": b"pwned"})
    path = os.path.join(h.dir, "evil.tar")
    docker_save(path, [base, evil, evil2], config([base, evil, evil2]), ["evil:latest"])
    h.cli("load", "-i", path)
    assert not os.path.exists(target) and not os.path.exists(target + "2")


def test_every_accepted_flag_is_honoured_or_refused(bhost: NamespaceHost) -> None:
    """--platform of import/save/load/push, prune's and images' filters, content trust;
    and the tests' daemons never look for a name on Docker Hub (--block-registry)."""
    h = bhost
    # import --platform: the image is of that platform.
    h.ok("import", "--platform", "linux/arm64", busybox_tar(), "armbb")
    img = h.api.get("/images/armbb/json")
    assert (img["Os"], img["Architecture"], img.get("Variant")) == ("linux", "arm64", "v8")
    r = h.cli("import", "--platform", "linux/", busybox_tar(), "bad")
    assert r.returncode == 1 and "unknown operating system or architecture" in r.stderr
    # save/load --platform: only an image of that platform.
    path = os.path.join(h.dir, "arm.tar")
    r = h.cli("save", "--platform", "linux/amd64", "-o", path, "armbb")
    assert (r.returncode, os.path.exists(path)) == (1, False)
    assert r.stderr == (
        "Error response from daemon: image with reference armbb:latest was found but does not "
        "match the specified platform: wanted linux/amd64, actual: linux/arm64/v8\n"
    )
    h.ok("save", "--platform", "linux/arm64", "-o", path, "armbb")
    h.ok("rmi", "armbb")
    r = h.cli("load", "--platform", "linux/amd64", "-i", path)
    assert r.returncode == 1 and "does not match the specified platform" in r.stderr
    assert h.cli("images", "-q", "armbb").stdout == ""
    assert h.ok("load", "--platform", "linux/arm64", "-i", path) == "Loaded image: armbb:latest\n"
    # run --platform: a local image of another platform is not run (dockerd's 404, then the
    # client tries to pull that platform: here no registry may be asked).
    r = h.cli("run", "--rm", "--platform", "linux/amd64", "armbb", "true")
    assert r.returncode == 125, r.stderr
    assert "Unable to find image 'armbb:latest' locally" in r.stderr
    assert h.ok("ps", "-aq") == ""
    h.ok("run", "--rm", "--platform", "linux/arm64", "armbb", "true")
    # push --platform: refused before any registry is asked when the image is not of it.
    h.ok("tag", "armbb", "10.251.0.1:5000/armbb")
    r = h.cli("push", "--platform", "linux/amd64", "10.251.0.1:5000/armbb")
    assert r.returncode == 1 and "does not match the specified platform" in r.stderr
    # image prune --filter label / until; images --filter until.
    for name, label in (("keep", "yes"), ("drop", "no")):
        h.ok("import", "-c", f"LABEL keep={label}", busybox_tar(), name)
    out = h.ok("image", "prune", "-a", "-f", "--filter", "label=keep=no")
    assert "untagged: drop:latest" in out.lower() and "keep:latest" not in out
    assert h.cli("images", "-q", "keep").stdout != ""
    assert h.ok("images", "-q", "--filter", "until=2000-01-01") == ""
    assert h.ok("images", "-q", "--filter", "until=87600h") == ""  # ten years ago
    assert h.ok("images", "-q", "--filter", "until=0s") == h.ok("images", "-q")
    r = h.cli("image", "prune", "-f", "--filter", "until=soon")
    assert r.returncode == 1 and "Cannot parse until filter: soon" in r.stderr
    r = h.cli("image", "prune", "-f", "--filter", "color=red")
    assert r.returncode == 1 and "invalid filter 'color'" in r.stderr
    out = h.ok("image", "prune", "-a", "-f", "--filter", "until=2000-01-01T00:00:00Z")
    assert out == "Total reclaimed space: 0B\n"
    # Content trust cannot be checked: asking for it is refused, not ignored.
    for cmd in ("pull", "push", "build"):
        r = h.cli(cmd, "--disable-content-trust=false", "busybox" if cmd != "build" else h.dir)
        assert r.returncode == 1 and "--disable-content-trust=false is not supported" in r.stderr
    # No test reaches Docker Hub: the name is refused at once, nothing is asked.
    r = h.cli("pull", "nginx")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        "Error response from daemon: registry docker.io is blocked on this daemon "
        "(tetherd --block-registry) and has no mirror\n"
    )
    r = h.cli("run", "--rm", "nicolaka/netshoot")
    assert r.returncode == 125 and "registry docker.io is blocked" in r.stderr
