"""`service create|update` flags and stack files as docker reads them (pure): --publish,
--network, durations, --env-file, the spec sent, refusals by name, `ls`'s PORTS, a stack's
names and labels, and the keys a stack refuses."""

from __future__ import annotations

import pathlib

import pytest

from tether.cli import svcopts
from tether.cli.context import CliError
from tether.cli.flags import UsageError, parse
from tether.cli.service import CREATE, UPDATE, build_spec, check_refused
from tether.cluster.servicespec import check
from tether.compose import stack
from tether.compose.model import ComposeError
from tether.errors import InvalidParameter


def test_publish_short_and_long_forms() -> None:
    assert svcopts.parse_publish("8080:80") == [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}
    ]
    assert svcopts.parse_publish("53:53/udp")[0]["Protocol"] == "udp"
    assert svcopts.parse_publish("80")[0] == {
        "Protocol": "tcp",
        "TargetPort": 80,
        "PublishedPort": 0,
        "PublishMode": "ingress",
    }
    assert [p["PublishedPort"] for p in svcopts.parse_publish("8080-8081:80-81")] == [8080, 8081]
    assert svcopts.parse_publish("published=8080,target=80,protocol=udp,mode=host") == [
        {"Protocol": "udp", "PublishMode": "host", "PublishedPort": 8080, "TargetPort": 80}
    ]
    for bad, why in (
        ("127.0.0.1:8080:80", "hostip is not supported"),
        ("8080:80/icmp", "invalid proto: icmp"),
        ("published=8080", "missing mandatory field 'target'"),
        ("target=80,mode=bridge", "invalid publish mode value (bridge)"),
        ("target=80,colour=red", "invalid field key: colour"),
        ("a:80", "invalid host port: a"),
    ):
        with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
            svcopts.parse_publish(bad)


def test_network_name_or_long_form() -> None:
    assert svcopts.parse_network("app") == {"Target": "app"}
    assert svcopts.parse_network("name=app,alias=web,alias=www,driver-opt=k=v") == {
        "Target": "app",
        "Aliases": ["web", "www"],
        "DriverOpts": {"k": "v"},
    }
    with pytest.raises(ValueError, match="network name/id is not specified"):
        svcopts.parse_network("alias=web")
    with pytest.raises(ValueError, match="invalid field key colour"):
        svcopts.parse_network("name=app,colour=red")


def test_go_durations_both_ways() -> None:
    assert svcopts.parse_duration_ns("0") == 0
    assert svcopts.parse_duration_ns("10s") == 10 * 10**9
    assert svcopts.parse_duration_ns("1m30s") == 90 * 10**9
    assert svcopts.parse_duration_ns("500ms") == 500 * 10**6
    assert svcopts.parse_duration_ns("1.5h") == 5400 * 10**9
    for bad in ("10", "x", "1y", ""):
        with pytest.raises(ValueError, match="time: "):
            svcopts.parse_duration_ns(bad)
    assert [svcopts.format_duration(n) for n in (0, 5 * 10**9, 90 * 10**9, 500 * 10**6)] == [
        "0s",
        "5s",
        "1m30s",
        "500ms",
    ]
    from tether.humanize import human_duration

    assert human_duration(0.2) == "Less than a second"
    assert human_duration(5) == "5 seconds"
    assert human_duration(70) == "About a minute"
    # go-units rounds hours half up, and counts years from whole hours.
    assert human_duration(5400) == "2 hours"
    assert human_duration(3 * 365 * 86400 + 7200) == "3 years"


def test_env_file(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "env"
    f.write_text("# comment\nA=1\n\nB\nC=x=y\nUNSET\n")
    assert svcopts.read_env_file(str(f), {"B": "from-shell"}) == ["A=1", "B=from-shell", "C=x=y"]
    with pytest.raises(ValueError, match="no such file"):
        svcopts.read_env_file(str(tmp_path / "nope"), {})


def test_ls_ports_column_groups_ranges_and_hides_host_mode() -> None:
    ports = [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 8081, "PublishMode": "ingress"},
        {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 22, "PublishedPort": 2222, "PublishMode": "host"},
    ]
    assert svcopts.ports_text(ports) == "*:8080-8081->80-81/tcp, *:53->53/udp"


def spec_of(*argv: str) -> dict[str, object]:
    o, args = parse(CREATE, list(argv))
    return build_spec(o, args)


def test_create_sends_docker_shaped_spec_that_the_daemon_accepts() -> None:
    spec = spec_of(
        "--name", "web", "--replicas", "3", "--network", "name=app,alias=www",
        "-p", "8080:80", "--constraint", "node.hostname==node2", "-e", "A=1",
        "--label", "tier=front", "--container-label", "c=1", "--hostname", "h",
        "-w", "/srv", "--entrypoint", "sh -c", "--update-parallelism", "2",
        "--update-delay", "10s", "--update-order", "start-first", "--endpoint-mode", "vip",
        "busybox", "echo", "hi",
    )  # fmt: skip
    cs = spec["TaskTemplate"]["ContainerSpec"]  # type: ignore[index]
    assert cs == {
        "Image": "busybox",
        "Args": ["echo", "hi"],
        "Command": ["sh", "-c"],
        "Env": ["A=1"],
        "Labels": {"c": "1"},
        "Hostname": "h",
        "Dir": "/srv",
    }
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert spec["Labels"] == {"tier": "front"}
    assert spec["UpdateConfig"] == {
        "Parallelism": 2,
        "Delay": 10 * 10**9,
        "FailureAction": "pause",
        "Monitor": 5 * 10**9,
        "MaxFailureRatio": 0,
        "Order": "start-first",
    }
    checked = check(spec)
    assert checked["TaskTemplate"]["Networks"] == [{"Target": "app", "Aliases": ["www"]}]
    assert checked["TaskTemplate"]["Placement"] == {"Constraints": ["node.hostname==node2"]}
    assert spec_of("--mode", "global", "busybox")["Mode"] == {"Global": {}}


def test_flags_tether_cannot_honour_are_refused_by_name() -> None:
    for argv, flag in (
        (["--mount", "type=bind,src=/,dst=/x"], "--mount"),
        (["--limit-memory", "1g"], "--limit-memory"),
        (["--secret", "s"], "--secret"),
        (["-t"], "--tty"),
        (["--restart-max-attempts", "3"], "--restart-max-attempts"),
    ):
        with pytest.raises(CliError, match=f"^{flag}: tether's services do not support"):
            spec_of(*argv, "busybox")
    o, _ = parse(UPDATE, ["--mount-add", "type=bind,src=/,dst=/x", "web"])
    with pytest.raises(CliError, match=r"^--mount-add: tether's services do not support mounts"):
        check_refused(o)
    spec_of("--no-resolve-image", "busybox")  # accepted: nothing to resolve
    with pytest.raises(CliError, match="replicas can only be used with replicated"):
        spec_of("--mode", "global", "--replicas", "2", "busybox")
    with pytest.raises(CliError, match="unknown mode: x, only replicated and global"):
        spec_of("--mode", "x", "busybox")
    with pytest.raises(CliError, match="restart tasks on any exit"):
        spec_of("--restart-condition", "on-failure", "busybox")
    with pytest.raises(UsageError, match='invalid argument "x" for "--replicas" flag'):
        spec_of("--replicas", "x", "busybox")
    with pytest.raises(UsageError, match='for "--update-delay" flag: time: missing unit'):
        spec_of("--update-delay", "10", "busybox")


def test_the_daemon_refuses_rollback_and_bad_update_configs() -> None:
    base = spec_of("--name", "web", "busybox")
    for u, why in (
        ({"FailureAction": "rollback"}, "rollback is not supported by tether"),
        ({"Order": "sideways"}, "Order: invalid value"),
        ({"MaxFailureRatio": 2}, "MaxFailureRatio"),
        ({"Parallelism": -1}, "Parallelism"),
    ):
        with pytest.raises(InvalidParameter, match=why):
            check({**base, "UpdateConfig": {**base["UpdateConfig"], **u}})  # type: ignore[dict-item]
    assert check({**base, "Name": "shop_web"})["Name"] == "shop_web"  # stacks' names
    with pytest.raises(InvalidParameter, match="DNS name component"):
        check({**base, "Name": "-web"})


STACK = """
services:
  web:
    image: busybox
    command: httpd -f -p 80
    ports: ["8080:80", {target: 53, published: 53, protocol: udp, mode: host}]
    networks:
      front:
        aliases: [www]
    labels: [c=1]
    deploy:
      replicas: 2
      labels: {tier: front}
      placement: {constraints: ["node.hostname==n1"]}
      update_config: {parallelism: 2, delay: 10s, order: start-first}
      restart_policy: {condition: any}
  worker:
    image: busybox
    build: .
    container_name: worker1
    deploy:
      mode: global
networks:
  front:
    attachable: true
"""


def test_a_stack_file_becomes_docker_stacks_services_and_networks(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "stack.yaml"
    f.write_text(STACK)
    st = stack.load([str(f)], "shop", environ={}, cwd=str(tmp_path))
    assert sorted(st.services) == ["shop_web", "shop_worker"]
    web = st.services["shop_web"]
    assert web["Labels"] == {
        "tier": "front",
        "com.docker.stack.namespace": "shop",
        "com.docker.stack.image": "busybox",
    }
    tmpl = web["TaskTemplate"]
    assert tmpl["ContainerSpec"]["Args"] == ["httpd", "-f", "-p", "80"]
    assert tmpl["ContainerSpec"]["Labels"] == {"c": "1", "com.docker.stack.namespace": "shop"}
    assert tmpl["Networks"] == [{"Target": "shop_front", "Aliases": ["web", "www"]}]
    assert tmpl["Placement"] == {"Constraints": ["node.hostname==n1"]}
    assert web["UpdateConfig"]["Parallelism"] == 2 and web["UpdateConfig"]["Delay"] == 10**10
    assert web["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
        {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "host"},
    ]
    worker = st.services["shop_worker"]
    assert worker["Mode"] == {"Global": {}}
    assert worker["TaskTemplate"]["Networks"] == [{"Target": "shop_default", "Aliases": ["worker"]}]
    nets = {n.name: n.body for n in st.networks}
    assert sorted(nets) == ["shop_default", "shop_front"]
    assert nets["shop_front"]["Driver"] == "overlay" and nets["shop_front"]["Attachable"]
    assert nets["shop_front"]["Labels"] == {"com.docker.stack.namespace": "shop"}
    assert st.notes == [
        "Ignoring unsupported options: build",
        "Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not "
        "supported.",
    ]


@pytest.mark.parametrize(
    ("snippet", "where"),
    [
        ("    deploy: {resources: {limits: {memory: 50M}}}", "services.x.deploy.resources"),
        ("    deploy: {restart_policy: {condition: on-failure}}", "services.x.deploy.restart_policy.condition"),
        ("    deploy: {restart_policy: {max_attempts: 3}}", "services.x.deploy.restart_policy.max_attempts"),
        ("    deploy: {rollback_config: {parallelism: 1}}", "services.x.deploy.rollback_config"),
        ("    deploy: {placement: {max_replicas_per_node: 1}}", "services.x.deploy.placement.max_replicas_per_node"),
        ("    volumes: [/data]", "services.x.volumes"),
        ("    secrets: [s]", "services.x.secrets"),
        ("    healthcheck: {test: [CMD, 'true']}", "services.x.healthcheck"),
    ],
)  # fmt: skip
def test_what_a_stack_cannot_honour_is_refused_with_file_and_service(
    tmp_path: pathlib.Path, snippet: str, where: str
) -> None:
    f = tmp_path / "stack.yaml"
    f.write_text(f"services:\n  x:\n    image: busybox\n{snippet}\n")
    with pytest.raises(ComposeError) as exc:
        stack.load([str(f)], "s", environ={}, cwd=str(tmp_path))
    assert str(exc.value).startswith(f"stack.yaml: {where}")
