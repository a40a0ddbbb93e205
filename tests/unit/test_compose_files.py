"""Compose files -> model, without a daemon: parsing, interpolation, schema, checks, naming."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.compose import checks, loader, plan, render
from tether.compose.checks import HostContainer, HostNetwork, HostView
from tether.compose.interpolate import InterpolationError, interpolate_string, parse_env_file
from tether.compose.model import ComposeError, Project

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(tmp_path: Path, text: str, folder: str = "myapp", **kw: object) -> Project:
    d = tmp_path / folder
    d.mkdir(exist_ok=True)
    (d / "compose.yaml").write_text(text)
    return loader.load([], cwd=str(d), environ=kw.pop("environ", {}), **kw)  # type: ignore[arg-type]


def error_of(tmp_path: Path, text: str, host: HostView | None = None) -> str:
    with pytest.raises(ComposeError) as exc:
        project = load(tmp_path, text)
        checks.check_all(project, host or HostView())
    return str(exc.value)


# -- interpolation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("$A", "a"),
        ("${A}", "a"),
        ("x${A}y", "xay"),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET-dflt}", "dflt"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:-${A}b}", "ab"),
        ("$$A", "$A"),
        ("$$(hostname)", "$(hostname)"),
        ("cost: 5$", "cost: 5$"),
    ],
)
def test_interpolation_forms(text: str, want: str) -> None:
    assert interpolate_string(text, {"A": "a", "EMPTY": ""}) == want


def test_interpolation_errors_and_unset_warning() -> None:
    with pytest.raises(InterpolationError, match="required variable DB is missing a value: set it"):
        interpolate_string("${DB:?set it}", {})
    with pytest.raises(InterpolationError, match="Invalid template"):
        interpolate_string("${A", {"A": "1"})
    seen: list[str] = []
    assert interpolate_string("x$NOPE", {}, seen.append) == "x"
    assert seen == ['The "NOPE" variable is not set. Defaulting to a blank string.']


@given(st.text(alphabet="ab${}:-?+_ 9", max_size=20))
def test_interpolation_never_crashes(text: str) -> None:
    try:
        interpolate_string(text, {"a": "1", "b": ""})
    except InterpolationError:
        pass


def test_env_file() -> None:
    text = "# comment\nA=1\nexport B='lit $A'\nC=\"x${A}\\ny\"\nD=plain # trailing comment\nE\n"
    assert parse_env_file(text, {"E": "from-shell"}) == {
        "A": "1",
        "B": "lit $A",
        "C": "x1\ny",
        "D": "plain",
        "E": "from-shell",
    }


def test_dotenv_and_shell_variables(tmp_path: Path) -> None:
    d = tmp_path / "envapp"
    d.mkdir()
    (d / ".env").write_text("TAG=from-dotenv\nPORT=8080\n")
    (d / "compose.yaml").write_text(
        "services:\n  web:\n    image: busybox:${TAG}\n    ports: ['${PORT}:80']\n"
    )
    p = loader.load([], cwd=str(d), environ={"TAG": "from-shell"})
    assert p.services["web"].image == "busybox:from-shell"  # the shell wins over .env
    assert p.services["web"].ports[0].published == "8080"


# -- YAML, schema, warnings --------------------------------------------------------------


def test_yaml_is_read_as_1_2(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) would read 22:22 as the base-60 integer 1342.
    p = load(tmp_path, "services:\n  s:\n    image: busybox\n    ports:\n      - 22:22\n")
    port = p.services["s"].ports[0]
    assert (port.published, port.target) == ("22", 22)


def test_schema_errors_name_the_bad_key(tmp_path: Path) -> None:
    assert error_of(tmp_path, "services:\n  web:\n    image: x\n    netwrks: [a]\n") == (
        "validating compose.yaml: services.web additional property 'netwrks' not allowed"
    )
    assert error_of(
        tmp_path,
        "services:\n  web:\n    image: x\n    networks:\n      a:\n        ipv4_addres: 1.2.3.4\n"
        "networks:\n  a: {}\n",
    ).endswith("services.web.networks.a additional property 'ipv4_addres' not allowed")
    assert error_of(tmp_path, "services:\n  web:\n    image: x\n    hostname: [1]\n").endswith(
        "services.web.hostname must be a string"
    )


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "services:\n  web:\n    image: x\n   command: y\n")
    assert msg.endswith(
        "compose.yaml: yaml: line 4: expected <block end>, but found '<block mapping start>'"
    )
    with pytest.raises(ComposeError, match=r"^open .*/nope.yaml: no such file or directory$"):
        loader.load(["nope.yaml"], cwd=str(tmp_path))
    with pytest.raises(ComposeError, match="no configuration file provided: not found"):
        loader.load([], cwd="/proc/self")


def test_unsupported_keys_are_warned_about_not_silently_ignored(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        "version: '3.8'\n"
        "x-anchors: &a {image: busybox}\n"
        "services:\n  web:\n    <<: *a\n    volumes: ['/a:/b']\n    cpus: 2\n"
        "    x-note: fine\n    deploy:\n      replicas: 2\n      resources: {limits: {cpus: '1'}}\n"
        "    depends_on:\n      db: {condition: service_healthy}\n"
        "  db:\n    image: busybox\n    healthcheck: {test: ['CMD', 'true']}\n"
        "volumes:\n  data: {}\nsecrets:\n  s: {file: ./x}\n",
    )
    assert p.warnings == [
        f"{tmp_path}/myapp/compose.yaml: the attribute `version` is obsolete, it will be "
        "ignored, please remove it to avoid potential confusion",
        "secrets is not supported by tether yet and is ignored",
        "services.web.cpus is not supported by tether yet and is ignored",
        "services.web.deploy.resources is not supported by tether yet and is ignored",
        "services.db.healthcheck is not supported by tether yet and is ignored",
        "services.web.depends_on.db.condition: service_healthy needs a healthcheck, which "
        "tether does not support yet; waiting for service_started instead",
    ]
    assert p.services["web"].replicas == 2


# -- the model ---------------------------------------------------------------------------


def test_short_and_long_forms_normalize(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
services:
  web:
    image: busybox
    command: httpd -f -p "8 0"
    environment: [A=1, B]
    labels: {tier: front}
    extra_hosts: ["db:10.0.0.5", "v6=::1"]
    ports:
      - 80
      - "127.0.0.1:8080:80"
      - "[::1]:8081:80/udp"
      - "9000-9001:9000-9001"
      - "7000-7010:70"
      - target: 443
        published: 8443
        host_ip: 127.0.0.1
    expose: ["5000", 6000]
    networks:
      b: {aliases: [www], priority: 10}
      a:
    depends_on: [db]
  db:
    image: busybox
    environment: {PASSWORD: secret, N: 5, T: true}
    networks: [a]
networks:
  a: {}
  b: {internal: "true"}
""",
        environ={"B": "from-shell"},
    )
    web, db = p.services["web"], p.services["db"]
    assert web.command == ["httpd", "-f", "-p", "8 0"]
    assert web.environment == {"A": "1", "B": "from-shell"}
    assert db.environment == {"PASSWORD": "secret", "N": "5", "T": "true"}
    assert web.extra_hosts == ["db:10.0.0.5", "v6:::1"]
    assert [(x.host_ip, x.published, x.target, x.protocol) for x in web.ports] == [
        ("", "", 80, "tcp"),
        ("127.0.0.1", "8080", 80, "tcp"),
        ("::1", "8081", 80, "udp"),
        ("", "9000", 9000, "tcp"),
        ("", "9001", 9001, "tcp"),
        ("", "7000-7010", 70, "tcp"),
        ("127.0.0.1", "8443", 443, "tcp"),
    ]
    assert [a.network for a in web.networks] == ["b", "a"]  # priority first, then name
    assert web.depends_on["db"].condition == "service_started"
    assert p.networks["b"].internal is True and p.networks["b"].name == "myapp_b"
    assert "default" not in p.networks  # nobody uses it


def test_project_name_sources(tmp_path: Path) -> None:
    text = "services:\n  s:\n    image: busybox\n"
    assert load(tmp_path, text, folder="My App.v2").name == "myappv2"
    assert load(tmp_path, "name: named\n" + text).name == "named"
    assert (
        load(tmp_path, "name: named\n" + text, environ={"COMPOSE_PROJECT_NAME": "env"}).name
        == "env"
    )
    assert load(tmp_path, "name: named\n" + text, project_name="flag").name == "flag"
    with pytest.raises(ComposeError, match='invalid project name "Bad"'):
        load(tmp_path, text, project_name="Bad")


def test_override_file_merges(tmp_path: Path) -> None:
    base = str(EXAMPLES / "broken-db" / "compose.yaml")
    fix = str(EXAMPLES / "broken-db" / "compose.fix.yaml")
    broken = loader.load([base], environ={})
    fixed = loader.load([base, fix], environ={})
    assert [a.network for a in broken.services["api"].networks] == ["frontend"]
    assert [a.network for a in fixed.services["api"].networks] == ["backend", "frontend"]
    assert broken.name == fixed.name == "broken-db"
    assert fixed.services["api"].command == broken.services["api"].command


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXAMPLES.iterdir() if (p / "compose.yaml").is_file())
)
def test_examples_load_without_warnings_and_config_round_trips(name: str, tmp_path: Path) -> None:
    p = loader.load([str(EXAMPLES / name / "compose.yaml")], environ={})
    assert p.warnings == []
    checks.check_all(p, HostView())
    # `config` output is itself a valid compose file that resolves to the same model.
    out = tmp_path / name
    out.mkdir()
    (out / "compose.yaml").write_text(render.to_yaml(p))
    again = loader.load([], cwd=str(out), environ={})
    assert render.model_dict(again) == render.model_dict(p)


# -- checks: each a clear error before anything is created --------------------------------


def test_unknown_network(tmp_path: Path) -> None:
    assert (
        error_of(
            tmp_path,
            "services:\n  api:\n    image: b\n    networks: [backend]\nnetworks:\n  front: {}\n",
        )
        == 'service "api" refers to undefined network backend: invalid compose project'
    )


def test_dependency_cycle_and_undefined_dependency(tmp_path: Path) -> None:
    cyc = "services:\n" + "".join(
        f"  {a}:\n    image: b\n    depends_on: [{b}]\n"
        for a, b in (("a", "b"), ("b", "c"), ("c", "a"))
    )
    assert error_of(tmp_path, cyc) == "dependency cycle detected: a -> b -> c -> a"
    assert error_of(tmp_path, "services:\n  a:\n    image: b\n    depends_on: [zz]\n") == (
        'service "a" depends on undefined service "zz": invalid compose project'
    )


def test_address_outside_subnet_and_unconfigured_subnet(tmp_path: Path) -> None:
    base = "services:\n  db:\n    image: b\n    networks:\n      back:\n        ipv4_address: {ip}\nnetworks:\n  back:\n{ipam}"
    ipam = "    ipam:\n      config:\n        - subnet: 10.50.0.0/24\n"
    assert error_of(tmp_path, base.format(ip="10.9.9.9", ipam=ipam)) == (
        'service "db" network "back": Invalid address 10.9.9.9: It does not belong to any of '
        "this network's subnets"
    )
    assert "supported only when connecting to networks with user configured subnets" in error_of(
        tmp_path, base.format(ip="10.50.0.9", ipam="    {}\n").replace("back:\n    {}", "back: {}")
    )
    ok = load(tmp_path, base.format(ip="10.50.0.9", ipam=ipam))
    checks.check_all(ok, HostView())


def test_two_services_on_one_host_port(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: b\n    ports: ['8080:80']\n  admin:\n    image: b\n    ports: ['127.0.0.1:8080:8080']\n"
    assert error_of(tmp_path, text) == (
        'service "admin": Bind for 127.0.0.1:8080 failed: port is already allocated '
        "(also published by myapp-web-1)"
    )
    # Different protocols, or two specific addresses, do not clash.
    fine = "services:\n  a:\n    image: b\n    ports: ['8080:80', '8080:80/udp']\n  c:\n    image: b\n    ports: ['127.0.0.2:9000:80']\n  d:\n    image: b\n    ports: ['127.0.0.3:9000:80']\n"
    checks.check_all(load(tmp_path, fine), HostView())
    # Replicas of one service on one fixed port clash too; a host range does not.
    assert "port is already allocated" in error_of(
        tmp_path,
        "services:\n  a:\n    image: b\n    ports: ['8080:80']\n    deploy: {replicas: 2}\n",
    )
    checks.check_all(
        load(
            tmp_path, "services:\n  a:\n    image: b\n    ports: ['8080-8081:80']\n    scale: 2\n"
        ),
        HostView(),
    )
    # A port another container on the host already holds.
    taken = HostView(ports=[("0.0.0.0", 8080, "tcp", "other")])
    assert "also published by other" in error_of(
        tmp_path, "services:\n  a:\n    image: b\n    ports: ['8080:80']\n", taken
    )


def test_network_definition_errors(tmp_path: Path) -> None:
    net = "services:\n  s:\n    image: b\n    networks: [n]\nnetworks:\n  n:\n"
    assert (
        error_of(
            tmp_path,
            net
            + "    ipam:\n      config:\n        - subnet: 10.1.0.0/24\n          gateway: 10.2.0.1\n",
        )
        == "network myapp_n: no matching subnet for gateway 10.2.0.1"
    )
    assert (
        error_of(tmp_path, net + "    driver: macvlan2\n")
        == 'network myapp_n: plugin "macvlan2" not found'
    )
    assert error_of(tmp_path, net + "    external: true\n") == (
        "network n declared as external, but could not be found"
    )
    host = HostView(networks={"other": HostNetwork("other", ["10.1.0.0/16"], True)})
    assert "Pool overlaps with other one on this address space" in error_of(
        tmp_path, net + "    ipam:\n      config:\n        - subnet: 10.1.2.0/24\n", host
    )
    squatter = HostView(networks={"myapp_n": HostNetwork("myapp_n", ["10.9.0.0/16"], True)})
    assert error_of(tmp_path, net + "    {}\n", squatter) == (
        'network myapp_n was found but has incorrect label com.docker.compose.network set to ""'
    )


def test_container_name_rules(tmp_path: Path) -> None:
    assert "can't set container_name and web as container name must be unique" in error_of(
        tmp_path,
        "services:\n  web:\n    image: b\n    container_name: web1\n    deploy: {replicas: 2}\n",
    )
    other = HostView(containers={"myapp-web-1": HostContainer("abc", "myapp-web-1", {})})
    assert error_of(tmp_path, "services:\n  web:\n    image: b\n", other).startswith(
        'Conflict. The container name "/myapp-web-1" is already in use by container "abc".'
    )


def test_start_order_levels(tmp_path: Path) -> None:
    p = load(tmp_path, (EXAMPLES / "three-tier" / "compose.yaml").read_text())
    assert checks.start_order(p) == [["db"], ["api"], ["web"]]


# -- plan: what the daemon is asked for ---------------------------------------------------


def test_container_body_names_labels_and_aliases(tmp_path: Path) -> None:
    p = loader.load([str(EXAMPLES / "three-tier" / "compose.yaml")], environ={})
    api = p.services["api"]
    body = plan.container_body(p, api, 1, "sha256:abc")
    assert body["HostConfig"]["NetworkMode"] == "three-tier_backend"
    assert body["NetworkingConfig"]["EndpointsConfig"] == {
        "three-tier_backend": {"Aliases": ["three-tier-api-1", "api"]}
    }
    labels = body["Labels"]
    assert labels[plan.PROJECT] == "three-tier" and labels[plan.SERVICE] == "api"
    assert labels[plan.NUMBER] == "1" and labels["com.docker.compose.oneoff"] == "False"
    assert labels["com.docker.compose.depends_on"] == "db:service_started:false"
    assert body["StopSignal"] == "SIGKILL"
    # The hash moves with the configuration and the image, not with the replica count.
    h = plan.service_hash(api, "sha256:abc")
    api.replicas = 5
    assert plan.service_hash(api, "sha256:abc") == h
    assert plan.service_hash(api, "sha256:def") != h
    api.command = ["true"]
    assert plan.service_hash(api, "sha256:abc") != h
    web = plan.container_body(p, p.services["web"], 1, "sha256:abc")
    assert web["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    net = plan.network_body(p, p.networks["backend"])
    assert net["Name"] == "three-tier_backend" and net["Internal"] is True
    assert net["Labels"][plan.NETWORK] == "backend"


def test_module_imports_stay_pure() -> None:
    # compose parsing must not pull in the daemon or the kernel layers.
    import subprocess
    import sys

    code = (
        "import sys, tether.compose.loader, tether.compose.plan, tether.compose.checks;"
        "bad=[m for m in sys.modules if m.startswith(('tether.kernel','tether.daemon','tether.engine','pyroute2'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_network_drivers_are_checked_against_the_daemons_registry(tmp_path: Path) -> None:
    from tether.compose.checks import check_networks

    for driver, message in (
        ("overlay", "overlay networks need a cluster store"),
        ("ipvlan", "this kernel lacks ipvlan links"),
        ("brigde", 'plugin "brigde" not found'),
        ("host", 'only one instance of "host" network is allowed'),
    ):
        text = f"services:\n  a:\n    image: busybox\nnetworks:\n  default:\n    driver: {driver}\n"
        project = load(tmp_path, text)
        with pytest.raises(ComposeError, match=message):
            check_networks(project, HostView())
    # A daemon whose registry has overlay (a cluster store) accepts it.
    text = "services:\n  a:\n    image: busybox\nnetworks:\n  default:\n    driver: overlay\n"
    check_networks(load(tmp_path, text), HostView(drivers={"bridge", "overlay"}))
    text = "services:\n  a:\n    image: busybox\nnetworks:\n  default:\n    driver: macvlan\n"
    check_networks(load(tmp_path, text), HostView())


def test_settings_tether_cannot_enforce_are_refused_in_the_daemons_words(tmp_path: Path) -> None:
    from tether import unsupported

    svc = "services:\n  web:\n    image: busybox\n"
    assert error_of(tmp_path, svc + "    pids_limit: 100\n") == (
        f"services.web.pids_limit: {unsupported.PIDS_LIMIT}"
    )
    assert error_of(tmp_path, svc + "    mem_limit: 1g\n") == (
        f"services.web.mem_limit: {unsupported.MEMORY}"
    )
    assert error_of(tmp_path, svc + "    mem_limit: lots\n") == (
        "services.web.mem_limit: invalid size: 'lots'"
    )
    # Docker's defaults are fine, and not warned about as ignored.
    p = load(tmp_path, svc + "    user: root\n    read_only: false\n    pids_limit: -1\n")
    assert p.warnings == []


def test_user_read_only_and_logging_reach_the_container(tmp_path: Path) -> None:
    svc = "services:\n  web:\n    image: busybox\n"
    p = load(
        tmp_path,
        svc + "    user: '1000:1000'\n    read_only: true\n"
        "    logging:\n      driver: json-file\n      options: {max-size: 10m, max-file: '3'}\n",
    )
    assert p.warnings == []
    body = plan.container_body(p, p.services["web"], 1, "sha256:x")
    assert body["User"] == "1000:1000"
    assert body["HostConfig"]["ReadonlyRootfs"] is True
    assert body["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }
    # What the daemon would refuse is refused before anything is created, in its words.
    assert error_of(tmp_path, svc + "    logging: {driver: syslog}\n") == (
        "services.web.logging: tether does not support the syslog log driver: use json-file or none"
    )
    assert error_of(tmp_path, svc + "    logging: {options: {max-size: ten}}\n") == (
        "services.web.logging: invalid size: 'ten'"
    )
    assert error_of(tmp_path, svc + "    logging: {options: {max-size: 1.2.3m}}\n") == (
        'services.web.logging: strconv.ParseFloat: parsing "1.2.3": invalid syntax'
    )
    # A service without them hashes as before they were supported (no recreation on the
    # first `up` after an upgrade): the new keys are left out of the hash when unset.
    import dataclasses

    web = load(tmp_path, svc).services["web"]
    old = dataclasses.asdict(web)
    for k in ("user", "read_only", "log_driver", "log_options"):
        old.pop(k)
    for k in ("replicas", "replicas_set", "has_build", "security", "build", "pull_policy"):
        old.pop(k)
    for k in ("image_given", "privileged", "cap_add", "cap_drop", "security_opt"):
        old.pop(k)
    for k in ("volumes", "tmpfs", "restart"):
        old.pop(k)
    old["image_id"] = "sha256:x"
    assert plan.service_hash(web, "sha256:x") == plan._digest(old)
    assert plan.service_hash(p.services["web"], "sha256:x") != plan._digest(old)


def test_driver_options_are_checked_as_the_daemon_checks_them(tmp_path: Path) -> None:
    net = "services:\n  s:\n    image: b\n    networks: [n]\nnetworks:\n  n:\n"
    checks.check_all(
        load(tmp_path, net + "    driver_opts: {com.docker.network.bridge.enable_icc: 'false'}\n"),
        HostView(),
    )
    assert error_of(
        tmp_path, net + "    driver_opts: {com.docker.network.bridge.icc: 'false'}\n"
    ) == (
        "network myapp_n: the bridge driver has no option 'com.docker.network.bridge.icc' (its "
        "options: com.docker.network.bridge.enable_icc, com.docker.network.bridge.enable_ip_"
        "masquerade, com.docker.network.bridge.host_binding_ipv4, com.docker.network.bridge."
        "name, com.docker.network.driver.mtu)"
    )
    assert error_of(
        tmp_path, net + "    driver: macvlan\n    driver_opts: {parent: eth0, vlan: '20'}\n"
    ).startswith("network myapp_n: the macvlan driver has no option 'vlan'")
