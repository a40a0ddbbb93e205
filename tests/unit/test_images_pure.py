"""The pure parts of images: references, Dockerfiles and their variables, .dockerignore,
manifests and platforms, progress lines, the credentials file, paths inside a root."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest

from tether.cli import credentials, jsonmessage
from tether.errors import InvalidParameter
from tether.images import dockerfile as dfp
from tether.images import oci
from tether.images.context import excluded, read_dockerignore
from tether.images.copyin import CopyError, _escapes, _scoped
from tether.images.layers import write_diff
from tether.images.progress import bar, human_size
from tether.images.reference import ReferenceError, parse, registry_of


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox", "busybox"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("nicolaka/netshoot", "docker.io/nicolaka/netshoot", "nicolaka/netshoot"),
        ("index.docker.io/library/nginx", "docker.io/library/nginx", "nginx"),
        ("localhost:5000/app:v1", "localhost:5000/app:v1", "localhost:5000/app:v1"),
        ("localhost/app", "localhost/app", "localhost/app"),
        ("[::1]:5000/a/b", "[::1]:5000/a/b", "[::1]:5000/a/b"),
        (
            "ghcr.io/o/r@sha256:" + "a" * 64,
            "ghcr.io/o/r@sha256:" + "a" * 64,
            "ghcr.io/o/r@sha256:" + "a" * 64,
        ),
    ],
)
def test_references_normalize_as_docker(text: str, full: str, familiar: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "BusyBox",
            "invalid reference format: repository name (library/BusyBox) must be lowercase",
        ),
        ("a b", "invalid reference format"),
        ("busybox:", "invalid reference format"),
        (
            "a" * 64,
            f"invalid repository name ({'a' * 64}), cannot specify 64-byte hexadecimal strings",
        ),
        ("x@sha256:abc", "invalid reference format"),
        ("", "invalid reference format"),
    ],
)
def test_bad_references_get_dockers_words(text: str, message: str) -> None:
    with pytest.raises(ReferenceError) as info:
        parse(text)
    assert str(info.value) == message


def test_registry_of_a_login_server() -> None:
    assert registry_of("") == "docker.io"
    assert registry_of("https://index.docker.io/v1/") == "docker.io"
    assert registry_of("http://localhost:5000/v2/") == "localhost:5000"
    assert registry_of("10.0.0.1:5000") == "10.0.0.1:5000"


# -- Dockerfiles ------------------------------------------------------------------------------


def test_dockerfile_lines_continuations_comments_and_forms() -> None:
    df = dfp.parse(
        "# syntax=docker/dockerfile:1\n"
        "FROM busybox AS b\n"
        "RUN echo a \\\n"
        "    # a comment inside\n"
        "\n"
        "    && echo b\n"
        'CMD ["sh", "-c", "echo hi"]\n'
        "COPY --chown=1:2 --from=b /a /b\n"
        "entrypoint top\n"
    )
    cmds = [(i.cmd, i.args, i.json_form, i.flags) for i in df.instructions]
    assert cmds == [
        ("FROM", ["busybox AS b"], False, {}),
        ("RUN", ["echo a     && echo b"], False, {}),
        ("CMD", ["sh", "-c", "echo hi"], True, {}),
        ("COPY", ["/a /b"], False, {"chown": "1:2", "from": "b"}),
        ("ENTRYPOINT", ["top"], False, {}),
    ]
    assert [i.line for i in df.instructions] == [2, 3, 7, 8, 9]


def test_the_escape_directive() -> None:
    df = dfp.parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo ok\n")
    assert df.escape == "`"
    assert df.instructions[1].args == ["dir c:\\   && echo ok"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM x\nBOGUS y\n", "dockerfile parse error on line 2: unknown instruction: BOGUS"),
        (
            "FROM x\nCOPY --nope=1 a b\n",
            "dockerfile parse error on line 2: COPY does not support the --nope flag",
        ),
        ("FROM x\nRUN <<EOF\necho\nEOF\n", "here-documents"),
        ("FROM x\nSHELL sh -c\n", "SHELL requires the arguments to be in JSON form"),
        ("# escape=x\nFROM y\n", "invalid escape token 'x'"),
    ],
)
def test_dockerfile_errors(text: str, message: str) -> None:
    with pytest.raises(dfp.DockerfileError) as info:
        dfp.parse(text)
    assert message in str(info.value)


def test_variables_quotes_and_modifiers() -> None:
    env = {"A": "1", "E": "", "P": "/x"}.get
    lx = dfp.Lexer()
    assert lx.words("a $A ${A}b \"$P y\" '$A' \\$A", env) == ["a", "1", "1b", "/x y", "$A", "$A"]
    assert (
        lx.word("${MISSING:-dflt} ${E:-e} ${E-unset} ${A:+set} ${MISSING:+x}", env)
        == "dflt e  set "
    )
    with pytest.raises(dfp.DockerfileError) as info:
        lx.word("${MISSING:?needed here}", env)
    assert str(info.value) == "MISSING: needed here"
    inst = dfp.parse('FROM x\nENV K=v K2="two words" K3=$A\n').instructions[1]
    assert dfp.key_values(inst, lx, env) == [("K", "v"), ("K2", "two words"), ("K3", "1")]
    legacy = dfp.parse("FROM x\nENV KEY value with spaces\n").instructions[1]
    assert dfp.key_values(legacy, lx, env) == [("KEY", "value with spaces")]


def test_stages_args_before_from_and_build_args() -> None:
    df = dfp.parse(
        "ARG V=1\nARG IMG\nFROM base:$V AS one\nRUN x\nFROM one\nCOPY --from=one /a /b\n"
    )
    stages, meta, used = dfp.stages(df, {"V": "2"})
    assert [(s.name, s.base) for s in stages] == [("one", "base:2"), ("", "one")]
    assert meta == {"V": "2", "IMG": None} and used == {"V"}
    with pytest.raises(dfp.DockerfileError):
        dfp.stages(dfp.parse("FROM a AS x\nFROM b AS x\n"), {})
    with pytest.raises(dfp.DockerfileError) as info:
        dfp.stages(dfp.parse("RUN x\n"), {})
    assert str(info.value) == "no build stage in current context"


# -- .dockerignore ------------------------------------------------------------------------------


def test_dockerignore_rules(tmp_path: object) -> None:
    d = str(tmp_path)
    with open(os.path.join(d, ".dockerignore"), "w") as f:
        f.write("# comment\n*.log\n**/tmp\nbuild/\n!build/keep.txt\n/secret\n")
    pats = read_dockerignore(d)
    assert excluded("a.log", pats) and not excluded("dir/a.log", pats)
    assert excluded("tmp", pats) and excluded("a/b/tmp", pats) and excluded("a/tmp/x", pats)
    assert excluded("build/x", pats) and not excluded("build/keep.txt", pats)
    assert excluded("secret", pats) and not excluded("src/secret", pats)
    assert not excluded("main.py", pats)


# -- manifests, platforms, progress -----------------------------------------------------------


def test_indexes_pick_the_platform() -> None:
    def entry(arch: str, variant: str = "", **ann: str) -> dict[str, object]:
        plat = {"os": "linux", "architecture": arch}
        if variant:
            plat["variant"] = variant
        d: dict[str, object] = {
            "mediaType": oci.OCI_MANIFEST,
            "digest": "sha256:" + (arch[0] * 64),
            "size": 1,
            "platform": plat,
        }
        if ann:
            d["annotations"] = ann
        return d

    doc = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [
            entry("unknown", **{"vnd.docker.reference.type": "attestation-manifest"}),
            entry("arm64", "v8"),
            entry("amd64"),
        ],
    }
    index = oci.parse(json.dumps(doc).encode())
    assert isinstance(index, oci.Index)
    assert oci.choose(index, oci.parse_platform("linux/amd64")).digest == "sha256:" + "a" * 64  # type: ignore[union-attr]
    assert oci.choose(index, oci.parse_platform("arm64")).platform["architecture"] == "arm64"  # type: ignore[union-attr]
    assert oci.choose(index, oci.parse_platform("linux/s390x")) is None
    with pytest.raises(InvalidParameter) as info:
        oci.parse(b'{"schemaVersion":1,"name":"x"}')
    assert "schema 1 support has been removed" in info.value.message


def test_times_and_chain_ids() -> None:
    assert oci.format_time(0) == "1970-01-01T00:00:00Z"
    assert oci.format_time(1.5) == "1970-01-01T00:00:01.5Z"
    assert oci.parse_time("2024-01-02T03:04:05.123456789Z") == pytest.approx(1704164645.123456789)
    assert oci.parse_time("2024-01-02T04:04:05+01:00") == 1704164645
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    import hashlib

    assert oci.chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_progress_bars_as_docker_draws_them() -> None:
    assert human_size(999) == "999B" and human_size(2_048) == "2.048kB"
    assert human_size(1_234_567) == "1.235MB"
    assert bar(1_000_000, 2_000_000) == "[" + "=" * 25 + ">" + " " * 25 + "] " + "     1MB/2MB"
    assert bar(0, 0) == ""
    assert bar(500, 0) == "    500B"


def test_json_messages_off_a_terminal() -> None:
    lines = [
        {"status": "Pulling from library/busybox", "id": "latest"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "abc"},
        {"status": "Downloading", "progressDetail": {"current": 1, "total": 2}, "id": "abc"},
        {"status": "Pull complete", "progressDetail": {}, "id": "abc"},
        {"aux": {"ID": "sha256:x"}},
        {"stream": "Step 1/1 : FROM x\n"},
        {"status": "Digest: sha256:y"},
    ]

    class Resp:
        def iter_body(self) -> object:
            yield b"".join(json.dumps(x).encode() + b"\r\n" for x in lines)

    out = io.StringIO()
    seen: list[object] = []
    assert jsonmessage.display(Resp(), out, terminal=False, aux=seen.append) is None  # type: ignore[arg-type]
    assert out.getvalue() == (
        "latest: Pulling from library/busybox\nabc: Pulling fs layer\nabc: Pull complete\n"
        "Step 1/1 : FROM x\nDigest: sha256:y\n"
    )
    assert seen == [{"ID": "sha256:x"}]
    lines.append({"errorDetail": {"message": "boom"}, "error": "boom"})
    assert jsonmessage.display(Resp(), io.StringIO(), terminal=False) == "boom"  # type: ignore[arg-type]


# -- the credentials file -----------------------------------------------------------------------


def test_credentials_are_kept_in_a_0600_file(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = os.path.join(str(tmp_path), "cfg")
    monkeypatch.setenv("TETHER_CONFIG", d)
    assert credentials.lookup("localhost:5000") is None
    credentials.store("localhost:5000", "alice", "pa:ss")
    credentials.store("docker.io", "bob", "x")
    assert stat.S_IMODE(os.stat(os.path.join(d, "config.json")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert credentials.lookup("localhost:5000") == {
        "serveraddress": "localhost:5000",
        "username": "alice",
        "password": "pa:ss",
    }
    with open(os.path.join(d, "config.json")) as f:
        assert set(json.load(f)["auths"]) == {"localhost:5000", "https://index.docker.io/v1/"}
    assert credentials.remove("docker.io") and not credentials.remove("docker.io")
    header = credentials.header("localhost:5000")["X-Registry-Auth"]
    import base64

    assert json.loads(base64.urlsafe_b64decode(header))["username"] == "alice"


# -- paths inside a root, and layer archives ----------------------------------------------------


def test_paths_resolve_inside_the_root(tmp_path: object) -> None:
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "usr", "bin"))
    os.symlink("usr/bin", os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "etc"))
    os.symlink("/etc", os.path.join(root, "conf"))
    os.symlink("/loop", os.path.join(root, "loop"))
    os.symlink("../../../..", os.path.join(root, "up"))
    assert _scoped(root, "bin/sh") == os.path.join(root, "usr/bin/sh")
    assert _scoped(root, "conf/passwd") == os.path.join(root, "etc/passwd")
    with pytest.raises(CopyError):
        _scoped(root, "loop/x")
    assert _scoped(root, "up/etc/shadow") == os.path.join(root, "etc/shadow")
    assert _scoped(root, "../../x") == os.path.join(root, "x")
    assert _escapes("../x") and _escapes("a/../../x") and not _escapes("a/../b")


def test_layer_archives_are_deterministic(tmp_path: object) -> None:
    top = os.path.join(str(tmp_path), "layer")
    os.makedirs(os.path.join(top, "d"))
    with open(os.path.join(top, "d", "f"), "w") as f:
        f.write("content")
    os.symlink("d/f", os.path.join(top, "link"))
    out1: list[bytes] = []
    out2: list[bytes] = []
    digest1, size1 = write_diff(top, out1.append, overlay_whiteouts=False, mtime=0)
    digest2, size2 = write_diff(top, out2.append, overlay_whiteouts=False, mtime=0)
    assert (digest1, size1) == (digest2, size2) and b"".join(out1) == b"".join(out2)
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(b"".join(out1))) as tar:
        assert tar.getnames() == ["d", "d/f", "link"]
        assert all(m.uname == "" and m.mtime == 0 for m in tar.getmembers())


# -- rmi: dockerd's rules ------------------------------------------------------------------------


def _store_with_image(tmp: str, tags: list[str]) -> tuple[object, str]:
    from tether.images.reference import parse as parse_ref
    from tether.images.store import ImageStore, LayerInfo
    from tether.store.sqlite import Store

    st = ImageStore(Store(os.path.join(tmp, "db")), tmp)
    st.load()
    diff = "sha256:" + "d" * 64
    os.makedirs(st.layers.path(diff))
    st.save_layer(LayerInfo(diff, 10, 10, []))
    cfg = oci.make_config({"Cmd": ["sh"]}, [diff], [], 0)
    img = st.commit(cfg, [parse_ref(t) for t in tags])
    return st, img.id


def test_rmi_follows_dockerds_rules(tmp_path: object) -> None:
    from tether.errors import Conflict

    st, iid = _store_with_image(str(tmp_path), ["a:1", "b:2"])
    short = iid[7:19]
    assert st.remove("a:1", [], False) == [{"Untagged": "a:1"}]  # type: ignore[attr-defined]
    st.commit(st.content.get(iid), [parse("a:1")])  # type: ignore[attr-defined]
    with pytest.raises(Conflict) as info:
        st.remove(iid, [], False)  # type: ignore[attr-defined]
    assert info.value.message == (
        f"conflict: unable to delete {short} (must be forced) - image is referenced in "
        "multiple repositories"
    )
    cid = "c" * 64
    with pytest.raises(Conflict) as info:
        st.remove(iid, [(cid, iid, True)], True)  # type: ignore[attr-defined]
    assert info.value.message == (
        f"conflict: unable to delete {short} (cannot be forced) - image is being used by "
        f"running container {cid[:12]}"
    )
    out = st.remove(iid, [], True)  # type: ignore[attr-defined]
    assert sorted(x["Untagged"] for x in out[:2]) == ["a:1", "b:2"]
    assert out[2] == {"Deleted": iid} and out[3] == {"Deleted": "sha256:" + "d" * 64}
    assert not os.path.exists(st.layers.path("sha256:" + "d" * 64))  # type: ignore[attr-defined]


def test_rmi_of_an_image_a_stopped_container_uses(tmp_path: object) -> None:
    from tether.errors import Conflict, NotFound

    st, iid = _store_with_image(str(tmp_path), ["a:1"])
    using = [("c" * 64, iid, False)]
    with pytest.raises(Conflict) as info:
        st.remove("a:1", using, False)  # type: ignore[attr-defined]
    assert info.value.message == (
        f'conflict: unable to remove repository reference "a:1" (must force) - container '
        f"{'c' * 12} is using its referenced image {iid[7:19]}"
    )
    # -f: untagged, and the image stays for its container (dangling), as dockerd does.
    assert st.remove("a:1", using, True) == [{"Untagged": "a:1"}]  # type: ignore[attr-defined]
    assert st.by_id[iid].repo_tags == []  # type: ignore[attr-defined]
    with pytest.raises(NotFound) as nf:
        st.find("a:1")  # type: ignore[attr-defined]
    assert nf.value.message == "No such image: a:1"
    # By id, forced: not while the container needs it (a stopped container's start needs
    # its image), said so; the image stays.
    with pytest.raises(Conflict) as info:
        st.remove(iid, using, True)  # type: ignore[attr-defined]
    assert "(cannot be forced) - image is being used by stopped container" in info.value.message
    assert iid in st.by_id  # type: ignore[attr-defined]


def test_json_messages_on_a_terminal_keep_one_line_per_layer() -> None:
    msgs = [
        {"status": "Pulling from library/busybox", "id": "latest"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaa"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "bbb"},
        {"status": "Downloading", "progressDetail": {"current": 50, "total": 100}, "id": "aaa"},
        {"status": "Pull complete", "progressDetail": {}, "id": "bbb"},
    ]

    class Resp:
        def iter_body(self) -> object:
            yield b"".join(json.dumps(x).encode() + b"\r\n" for x in msgs)

    out = io.StringIO()
    jsonmessage.display(Resp(), out, terminal=True)  # type: ignore[arg-type]
    text = out.getvalue()
    # As docker's jsonmessage: a new line per new id, then cursor up to the id's line,
    # erase, rewrite, cursor back down.
    assert text.startswith(
        "latest: Pulling from library/busybox\n\n\x1b[1A\x1b[2K\raaa: Pulling fs layer \r\x1b[1B"
    )
    assert "\x1b[2A\x1b[2K\raaa: Downloading [=========================>" in text
    assert text.endswith("\x1b[1A\x1b[2K\rbbb: Pull complete \r\x1b[1B")


def test_a_blocked_registry_is_never_an_endpoint() -> None:
    from tether.errors import Forbidden
    from tether.images.registry import Registries, RegistryOptions, check_blocked

    assert [check_blocked(x) for x in ("registry-1.docker.io", "Index.Docker.IO", "r:5000")] == [
        "docker.io",
        "docker.io",
        "r:5000",
    ]
    with pytest.raises(InvalidParameter):
        check_blocked("http://r:5000")
    blocked = Registries(RegistryOptions(blocked=["docker.io", "r:5000"]))
    with pytest.raises(Forbidden, match="has no mirror"):
        blocked.endpoints("docker.io")
    with pytest.raises(Forbidden, match="registry r:5000 is blocked"):
        blocked.endpoints("r:5000")
    assert [e.url for e in blocked.endpoints("other:5000")] == ["https://other:5000"]
    # The mirror still answers for docker.io; Docker Hub itself is never asked, not even
    # after the mirror fails.
    mirrored = Registries(RegistryOptions(mirrors=["http://m:5000"], blocked=["docker.io"]))
    assert [e.url for e in mirrored.endpoints("docker.io")] == ["http://m:5000"]
    with pytest.raises(Forbidden):
        mirrored.endpoints("docker.io", push=True)
    open_ = Registries(RegistryOptions(mirrors=["http://m:5000"]))
    assert [e.url for e in open_.endpoints("docker.io")] == [
        "http://m:5000",
        "https://registry-1.docker.io",
    ]


def test_until_filters_read_durations_timestamps_and_dates() -> None:
    import time

    from tether.daemon.routes_images import until_timestamp

    now = time.time()
    assert abs(until_timestamp("1h30m") - (now - 5400)) < 5
    assert abs(until_timestamp("10s") - (now - 10)) < 5
    assert until_timestamp("1700000000") == 1700000000.0
    assert until_timestamp("2000-01-01") == 946684800.0
    assert until_timestamp("2000-01-01T00:00:01Z") == 946684801.0
    for bad in ("soon", "1x", ""):
        with pytest.raises(InvalidParameter, match="Cannot parse until filter"):
            until_timestamp(bad)


def test_build_progress_modes_and_content_trust() -> None:
    from tether.cli.build import content_trust, progress_mode
    from tether.cli.context import CliError

    assert [progress_mode(m) for m in (None, "auto", "plain", "TTY")] == [None, None, False, True]
    with pytest.raises(CliError, match='invalid argument "quiet" for "--progress" flag'):
        progress_mode("quiet")
    content_trust({"disable_content_trust": True})
    with pytest.raises(CliError, match="not supported"):
        content_trust({"disable_content_trust": False})


def test_cache_from_lineage_is_a_prefix_of_history_and_layers() -> None:
    from tether.images.build import State, _lineage

    h = [{"created": "t0", "created_by": "base"}, {"created": "t1", "created_by": "RUN x"}]
    src = State({"Cmd": ["sh"]}, ["sha256:a", "sha256:b"], h, {"os": "linux"})
    assert _lineage(src, State({}, ["sha256:a"], h[:1], {}))
    assert _lineage(src, src)
    assert not _lineage(src, State({}, ["sha256:a"], [{"created": "t9", "created_by": "base"}], {}))
    assert not _lineage(src, State({}, ["sha256:c"], h[:1], {}))
    assert not _lineage(src, State({}, ["sha256:a", "sha256:b", "sha256:c"], h, {}))
