"""compose volumes/tmpfs/restart: the model, the create request and `config`'s long form."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.compose import loader, plan, render
from tether.compose.model import ComposeError, Project


def load(tmp_path: Path, text: str) -> Project:
    d = tmp_path / "myapp"
    d.mkdir(exist_ok=True)
    (d / "compose.yaml").write_text(text)
    return loader.load([], cwd=str(d), environ={"HOME": "/home/u"})


DOC = """\
services:
  web:
    image: busybox
    restart: on-failure:3
    tmpfs: /run
    volumes:
      - data:/data:ro
      - ./site:/site
      - ~/conf:/conf:ro
      - /anon
      - {type: bind, source: ./b, target: /b, read_only: true}
      - {type: tmpfs, target: /t, tmpfs: {size: 1m}}
volumes:
  data: {labels: {team: a}}
  ext: {external: true}
"""


def test_volumes_in_the_create_request(tmp_path: Path) -> None:
    p = load(tmp_path, DOC)
    d = str(tmp_path / "myapp")
    assert not p.warnings, p.warnings
    body = plan.container_body(p, p.services["web"], 1, "sha256:x")
    hc = body["HostConfig"]
    assert hc["Binds"] == [f"{d}/site:/site:rw", "/home/u/conf:/conf:ro"]
    assert hc["Mounts"] == [
        {"Type": "volume", "Target": "/data", "Source": "myapp_data", "ReadOnly": True},
        {"Type": "volume", "Target": "/anon"},
        {"Type": "bind", "Target": "/b", "Source": f"{d}/b", "ReadOnly": True},
        {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024 * 1024}},
    ]
    assert hc["Tmpfs"] == {"/run": ""}
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert p.volumes["ext"].name == "ext" and p.volumes["ext"].external


def test_config_prints_the_long_form(tmp_path: Path) -> None:
    model = render.model_dict(load(tmp_path, DOC))
    d = str(tmp_path / "myapp")
    web = model["services"]["web"]
    assert web["restart"] == "on-failure:3" and web["tmpfs"] == ["/run"]
    assert web["volumes"][0] == {
        "type": "volume", "source": "data", "target": "/data", "read_only": True, "volume": {},
    }  # fmt: skip
    assert web["volumes"][1] == {
        "type": "bind", "source": f"{d}/site", "target": "/site",
        "bind": {"create_host_path": True},
    }  # fmt: skip
    assert model["volumes"] == {
        "data": {"name": "myapp_data", "labels": {"team": "a"}},
        "ext": {"name": "ext", "external": True},
    }


def test_hash_unchanged_without_the_new_keys(tmp_path: Path) -> None:
    # A service without volumes/tmpfs/restart keeps the hash it had before they existed:
    # upgrading tether does not recreate every container.
    plain = load(tmp_path, "services:\n  a:\n    image: busybox\n")
    with_restart = load(tmp_path, "services:\n  a:\n    image: busybox\n    restart: always\n")
    h1 = plan.service_hash(plain.services["a"], "x")
    assert h1 != plan.service_hash(with_restart.services["a"], "x")
    doc = plan.dataclasses.asdict(plain.services["a"])
    assert doc["volumes"] == [] and doc["tmpfs"] == [] and doc["restart"] == ""


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("    volumes: [nope:/x]\n", 'service "a" refers to undefined volume nope'),
        ("    restart: sometimes\n", "unknown policy 'sometimes'"),
        ("    restart: always:3\n", "maximum retry count can only be used with 'on-failure'"),
        ("    volumes: ['/a:/b:ro:x']\n", "too many colons"),
    ],
)
def test_bad_volumes_are_compose_errors(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ComposeError, match=error):
        load(tmp_path, "services:\n  a:\n    image: busybox\n" + text)


def test_short_syntax_options_reach_the_daemon_or_are_refused_in_its_words(
    tmp_path: Path,
) -> None:
    svc = "services:\n  a:\n    image: busybox\n    volumes:\n"
    p = load(
        tmp_path,
        svc
        + "      - ./d:/d:ro,z\n      - ./e:/e:rprivate\n      - v:/v:nocopy\nvolumes: {v: {}}\n",
    )
    d = str(tmp_path / "myapp")
    hc = plan.container_body(p, p.services["a"], 1, "sha256:x")["HostConfig"]
    assert hc["Binds"] == [f"{d}/d:/d:ro,z", f"{d}/e:/e:rw,rprivate"]
    assert hc["Mounts"] == [
        {"Type": "volume", "Target": "/v", "Source": "myapp_v", "VolumeOptions": {"NoCopy": True}}
    ]
    long = render.model_dict(p)["services"]["a"]["volumes"]
    assert long[0]["bind"] == {"create_host_path": True, "selinux": "z"}
    assert long[1]["bind"] == {"create_host_path": True, "propagation": "rprivate"}
    # What `tether run -v ./d:/d:ro,rw` is told by the daemon, before anything is created.
    for mode in ("ro,rw", "shared,slave", "bogus", "copy"):
        with pytest.raises(ComposeError) as exc:
            load(tmp_path, svc + f"      - ./d:/d:{mode}\n")
        assert str(exc.value) == f"services.a.volumes.0: invalid mode: {mode}"
    with pytest.raises(ComposeError, match="field BindOptions must not be specified"):
        load(tmp_path, svc + "      - v:/v:rshared\nvolumes: {v: {}}\n")


def test_bind_propagation_short_and_long_syntax(tmp_path: Path) -> None:
    svc = "services:\n  a:\n    image: busybox\n    volumes:\n"
    p = load(
        tmp_path,
        svc
        + "      - ./d:/d:ro,rshared\n"
        + "      - {type: bind, source: ./e, target: /e, bind: {propagation: rslave}}\n"
        + "      - {type: bind, source: ./f, target: /f, bind: {propagation: shared, create_host_path: true}}\n",
    )
    assert not p.warnings, p.warnings  # bind.propagation is honoured, not warned about
    d = str(tmp_path / "myapp")
    hc = plan.container_body(p, p.services["a"], 1, "sha256:x")["HostConfig"]
    assert hc["Binds"] == [f"{d}/d:/d:ro,rshared", f"{d}/f:/f:rw,shared"]
    assert hc["Mounts"] == [
        {
            "Type": "bind",
            "Target": "/e",
            "Source": f"{d}/e",
            "BindOptions": {"Propagation": "rslave"},
        }
    ]
    long = render.model_dict(p)["services"]["a"]["volumes"]
    assert [v["bind"].get("propagation") for v in long] == ["rshared", "rslave", "shared"]
    with pytest.raises(ComposeError) as exc:
        load(
            tmp_path,
            svc + "      - {type: bind, source: ./e, target: /e, bind: {propagation: up}}\n",
        )
    assert str(exc.value) == (
        'services.a.volumes.0.bind.propagation: invalid mount config for type "bind": '
        "invalid propagation mode: up"
    )
