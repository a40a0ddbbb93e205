"""Values that would inject lines into a container's files, refused at the CLI and at the API;
the files themselves never take an injected line; stored records that no longer parse never
break a listing, even across a restart.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3

import pytest

from nshost import NamespaceHost

pytestmark = pytest.mark.integration

INJECTIONS = [
    # (CLI flag and value, API body fragment, the CLI's message, the API's message)
    (
        ["--dns-search", "x\nnameserver 7.7.7.7"],
        {"HostConfig": {"DnsSearch": ["x\nnameserver 7.7.7.7"]}},
        'invalid argument "x\\nnameserver 7.7.7.7" for "--dns-search" flag: '
        '"x\\nnameserver 7.7.7.7" is not a valid domain',
        '"x\\nnameserver 7.7.7.7" is not a valid domain',
    ),
    (
        ["--hostname", "a\n6.6.6.6 web"],
        {"Hostname": "a\n6.6.6.6 web"},
        'invalid argument "a\\n6.6.6.6 web" for "-h, --hostname" flag: '
        'invalid hostname format: "a\\n6.6.6.6 web"',
        'invalid hostname format: "a\\n6.6.6.6 web"',
    ),
    (
        ["--dns", "not-an-ip"],
        {"HostConfig": {"Dns": ["not-an-ip"]}},
        'invalid argument "not-an-ip" for "--dns" flag: '
        "IP address is not correctly formatted: not-an-ip",
        'invalid JSON: ParseAddr("not-an-ip"): unable to parse IP',
    ),
    (
        ["--dns-option", "ndots:1\nnameserver 6.6.6.6"],
        {"HostConfig": {"DnsOptions": ["ndots:1\nnameserver 6.6.6.6"]}},
        'invalid argument "ndots:1\\nnameserver 6.6.6.6" for "--dns-option" flag: '
        'invalid DNS option: "ndots:1\\nnameserver 6.6.6.6"',
        'invalid DNS option: "ndots:1\\nnameserver 6.6.6.6"',
    ),
    (
        ["--add-host", "a\n6.6.6.6 evil:192.0.2.9"],
        {"HostConfig": {"ExtraHosts": ["a\n6.6.6.6 evil:192.0.2.9"]}},
        'invalid argument "a\\n6.6.6.6 evil:192.0.2.9" for "--add-host" flag: '
        'bad format for add-host: "a\\n6.6.6.6 evil:192.0.2.9"',
        'bad format for add-host: "a\\n6.6.6.6 evil:192.0.2.9"',
    ),
    (
        ["--domainname", "x\n6.6.6.6 evil"],
        {"Domainname": "x\n6.6.6.6 evil"},
        'invalid argument "x\\n6.6.6.6 evil" for "--domainname" flag: '
        'invalid domainname format: "x\\n6.6.6.6 evil"',
        'invalid domainname format: "x\\n6.6.6.6 evil"',
    ),
]


def test_injections_are_refused_by_the_cli_and_by_the_api(bhost: NamespaceHost) -> None:
    h = bhost
    for flag, body, cli_message, api_message in INJECTIONS:
        r = h.cli("run", "-d", *flag, "busybox", "sleep", "60")
        assert r.returncode == 125, (flag, r.returncode, r.stderr)
        assert r.stderr == f"{cli_message}\nSee 'tether run --help'.\n", r.stderr
        r = h.cli("create", *flag, "busybox")
        assert r.returncode == 125, (flag, r.stderr)
        resp = h.api.open("POST", "/containers/create", body={"Image": "busybox", **body})
        data = json.loads(resp.read())
        resp.close()
        assert (resp.status, data["message"]) == (400, api_message)
    # Nothing was created by any of them.
    assert h.api.get("/containers/json", {"all": 1}) == []
    assert "Traceback" not in h.log()


# One line of each file, as Docker writes them; an injected line matches none of these.
RESOLV_LINE = re.compile(r"(search( [A-Za-z0-9.-]+)+|nameserver [0-9a-fA-F.:]+|options( \S+)+)")
HOSTS_LINE = re.compile(r"[0-9a-fA-F.:]+\t[A-Za-z0-9.-]+( [A-Za-z0-9.-]+)*")


def check_files(h: NamespaceHost, name: str) -> tuple[str, str]:
    resolv = h.ok("exec", name, "cat", "/etc/resolv.conf")
    hosts = h.ok("exec", name, "cat", "/etc/hosts")
    for line in resolv.splitlines():
        assert RESOLV_LINE.fullmatch(line), (line, resolv)
    for line in hosts.splitlines():
        assert HOSTS_LINE.fullmatch(line), (line, hosts)
    return resolv, hosts


def test_resolv_conf_and_hosts_never_take_an_injected_line(bhost: NamespaceHost) -> None:
    h = bhost
    h.ok("network", "create", "--subnet", "10.78.0.0/24", "files-net")
    opts = [
        "--hostname", "web",
        "--domainname", "example.com",
        "--dns", "192.0.2.1",
        "--dns-search", "example.com",
        "--dns-option", "ndots:2",
        "--add-host", "db:192.0.2.9",
    ]  # fmt: skip
    h.ok(
        "run",
        "-d",
        "--name",
        "files-user",
        "--network",
        "files-net",
        *opts,
        "busybox",
        "sleep",
        "600",
    )
    h.ok("run", "-d", "--name", "files-bridge", *opts, "busybox", "sleep", "600")
    resolv, hosts = check_files(h, "files-user")
    assert "search example.com" in resolv and "options ndots:2" in resolv
    assert "192.0.2.9\tdb" in hosts and "web.example.com web" in hosts
    check_files(h, "files-bridge")

    # A record stored before the API refused such values (written here straight into the
    # store of the stopped daemon): its next start still writes no injected line.
    h.ok("create", "--name", "files-old", "--network", "files-net", "busybox", "sleep", "600")
    h.stop()
    db = sqlite3.connect(os.path.join(h.root, "tether.db"))
    with db:
        (data,) = db.execute(
            "SELECT data FROM objects WHERE kind='container' AND name='files-old'"
        ).fetchone()
        doc = json.loads(data)
        doc["host_config"]["DnsSearch"] = ["x\nnameserver 7.7.7.7", "example.org"]
        doc["host_config"]["DnsOptions"] = ["ndots:1\nnameserver 6.6.6.6"]
        doc["host_config"]["Dns"] = ["192.0.2.1\nnameserver 7.7.7.8"]
        doc["host_config"]["ExtraHosts"] = ["a\n6.6.6.6 evil:192.0.2.10", "ok:192.0.2.11"]
        db.execute(
            "UPDATE objects SET data=? WHERE kind='container' AND name='files-old'",
            (json.dumps(doc),),
        )
    db.close()
    h.start()
    h.ok("start", "files-old")
    resolv, hosts = check_files(h, "files-old")
    for bad in ("7.7.7.7", "7.7.7.8", "6.6.6.6"):
        assert bad not in resolv and bad not in hosts, (resolv, hosts)
    assert "search example.org" in resolv and "192.0.2.11\tok" in hosts


def test_records_that_no_longer_parse_never_break_a_listing(bhost: NamespaceHost) -> None:
    h = bhost
    # The bad input of the issue is refused now...
    resp = h.api.open("POST", "/containers/create", body={"Image": "busybox", "Cmd": [5]})
    data = json.loads(resp.read())
    resp.close()
    assert resp.status == 400 and "cannot unmarshal" in data["message"]
    # ...and records stored before (or by hand) are skipped at load, not fatal.
    h.ok("network", "create", "keep-net")
    keep = h.ok("create", "--name", "keep", "--network", "keep-net", "busybox", "true").strip()
    h.stop()
    db = sqlite3.connect(os.path.join(h.root, "tether.db"))
    with db:
        (data,) = db.execute(
            "SELECT data FROM objects WHERE kind='container' AND id=?", (keep,)
        ).fetchone()
        doc = json.loads(data)
        bad_cmd = {**doc, "id": "b" * 64, "name": "bad-cmd", "args": [5]}
        bad_cmd["config"] = {**doc["config"], "Cmd": [5]}
        rows = [
            ("container", bad_cmd["id"], "bad-cmd", json.dumps(bad_cmd)),
            ("container", "c" * 64, "not-json", "{not json"),
            ("container", "d" * 64, "not-object", "[1, 2]"),
            (
                "network",
                "e" * 64,
                "bad-net",
                json.dumps({"id": "e" * 64, "name": "bad-net", "pools": "x"}),
            ),
            (
                "image",
                "sha256:" + "f" * 64,
                None,
                json.dumps({"id": "sha256:" + "f" * 64, "size": "big"}),
            ),
        ]
        db.executemany("INSERT INTO objects(kind, id, name, data) VALUES (?, ?, ?, ?)", rows)
    db.close()
    h.start()
    ps = h.ok("ps", "-a", "--format", "{{.Names}}")
    assert ps.split() == ["keep"]
    nets = h.ok("network", "ls", "--format", "{{.Name}}").split()
    assert "keep-net" in nets and "bad-net" not in nets
    assert h.ok("images", "--format", "{{.Repository}}").split() == ["busybox", "host"]
    h.ok("start", "keep")
    log = h.log()
    for ident in ("b" * 64, "c" * 64, "d" * 64, "e" * 64, "f" * 64):
        assert f"id={ident}" in log or f"id=sha256:{ident}" in log, ident
    assert "skipping a stored container record" in log
    assert "Traceback" not in log
    # The records stay in the store (a later version, or a person, may read them).
    db = sqlite3.connect(f"file:{os.path.join(h.root, 'tether.db')}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT COUNT(*) FROM objects WHERE id=?", ("b" * 64,)).fetchone() == (1,)
    finally:
        db.close()
