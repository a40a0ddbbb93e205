"""CLI text handling: pflag parsing, Go templates, tabwriter tables."""

from __future__ import annotations

import pytest

from tether.cli.flags import Command, Flag, UsageError, parse
from tether.cli.gotemplate import TemplateError, render
from tether.cli.output import natural_key, render_table_template, tabwrite

CMD = Command(
    "network create",
    "[OPTIONS] NETWORK",
    "Create a network",
    [
        Flag("subnet", kind="list"),
        Flag("driver", "d", default="bridge"),
        Flag("internal", kind="bool"),
        Flag("opt", "o", kind="list"),
        Flag("quiet", "q", kind="bool"),
    ],
    min_args=1,
    max_args=1,
)


def test_pflag_forms() -> None:
    o, a = parse(
        CMD,
        [
            "--subnet",
            "10.0.0.0/24",
            "--subnet=10.1.0.0/24",
            "-dbridge",
            "-o",
            "k=v",
            "--internal",
            "n",
        ],
    )
    assert o["subnet"] == ["10.0.0.0/24", "10.1.0.0/24"] and o["driver"] == "bridge"
    assert o["opt"] == ["k=v"] and o["internal"] is True and a == ["n"]
    o, a = parse(CMD, ["-qo", "x=y", "--internal=false", "--", "-weird-name"])
    assert o["quiet"] and o["opt"] == ["x=y"] and o["internal"] is False and a == ["-weird-name"]


def test_pflag_errors() -> None:
    with pytest.raises(UsageError, match="unknown flag: --nope"):
        parse(CMD, ["--nope", "n"])
    with pytest.raises(UsageError, match="unknown shorthand flag: 'z' in -z"):
        parse(CMD, ["-z", "n"])
    with pytest.raises(UsageError, match="flag needs an argument: --subnet"):
        parse(CMD, ["n", "--subnet"])
    with pytest.raises(UsageError, match=r'"tether network create" requires exactly 1 argument\.'):
        parse(CMD, [])


def test_non_interspersed_stops_at_first_argument() -> None:
    run = Command(
        "run",
        "IMAGE [COMMAND]",
        "Run",
        [Flag("detach", "d", kind="bool")],
        min_args=1,
        interspersed=False,
    )
    o, a = parse(run, ["-d", "busybox", "sh", "-c", "echo -d"])
    assert o["detach"] and a == ["busybox", "sh", "-c", "echo -d"]


DATA = {
    "Name": "web",
    "Containers": {"b": {"Name": "two"}, "a": {"Name": "one"}},
    "IPAM": {"Config": [{"Subnet": "10.0.0.0/24"}]},
    "Labels": {"tier": "front"},
    "Internal": False,
    "Options": None,
}


@pytest.mark.parametrize(
    ("tmpl", "out"),
    [
        ("{{.Name}}", "web"),
        ("{{json .IPAM.Config}}", '[{"Subnet":"10.0.0.0/24"}]'),
        ("{{range .Containers}}{{.Name}} {{end}}", "one two "),
        ("{{range $id, $c := .Containers}}{{$id}}:{{$c.Name}},{{end}}", "a:one,b:two,"),
        ('{{index .Labels "tier"}}', "front"),
        ("{{if .Internal}}i{{else if .Name}}n{{else}}e{{end}}", "n"),
        ("{{with .Options}}x{{else}}none{{end}}", "none"),
        ("{{.Name | upper}}-{{len .Containers}}", "WEB-2"),
        ('{{printf "%s/%d" .Name 7}}', "web/7"),
        # Go's width, precision and flags (the lesson's aligned columns).
        (
            '{{printf "%-6s|%.2s|%5d|%-4d|%05.1f" .Name .Name 42 7 3.14159}}',
            "web   |we|   42|7   |003.1",
        ),
        ('{{printf "%s %s" .Name}}', "web %!s(MISSING)"),
        ('{{printf "%q %v %%" .Name .Name}}', '"web" web %'),
        # Go's words for a bad * argument, and U+FFFD for %c of what is no character.
        ('{{printf "%*d|%*d|%.*s" "x" 5 -3 7 -1 .Name}}', "%!(BADWIDTH)5|7  |%!(BADPREC)web"),
        ('{{printf "%c%c%c" 65 -1 1114112}}', "A\ufffd\ufffd"),
        ("{{(index .IPAM.Config 0).Subnet}}", "10.0.0.0/24"),
        ("{{.Missing}}", "<no value>"),
        ("{{.Labels}}", "map[tier:front]"),
        ("a {{- .Name -}} b", "awebb"),
        ("{{json .Options}}", "null"),
    ],
)
def test_go_template(tmpl: str, out: str) -> None:
    assert render(tmpl, DATA) == out


def test_go_template_errors() -> None:
    for bad in ("{{range .Containers}}", "{{end}}", "{{nosuchfunc .Name}}", "{{.Name"):
        with pytest.raises(TemplateError):
            render(bad, DATA)


def test_tabwriter_matches_docker_network_ls() -> None:
    out = tabwrite(
        [["NETWORK ID", "NAME", "DRIVER", "SCOPE"], ["f59ae2891fde", "bridge", "bridge", "local"]]
    )
    assert (
        out
        == "NETWORK ID     NAME      DRIVER    SCOPE\nf59ae2891fde   bridge    bridge    local\n"
    )


def test_table_format_builds_header_row() -> None:
    out = render_table_template(
        "table {{.ID}}\t{{.Name}}",
        [{"ID": "abc", "Name": "n"}],
        {"ID": "NETWORK ID", "Name": "NAME"},
    )
    assert out.splitlines() == ["NETWORK ID   NAME", "abc          n"]


def test_natural_sort() -> None:
    names = ["net10", "net2", "bridge", "net1"]
    assert sorted(names, key=natural_key) == ["bridge", "net1", "net2", "net10"]


def test_run_help_marks_what_tether_refuses() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "tether.cli.main", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    marked = {
        next(w for w in line.split() if w.startswith("--"))
        for line in out.splitlines()
        if "not supported by tether" in line
    }
    assert marked == {"--memory", "--pids-limit"}, out
