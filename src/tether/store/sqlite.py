"""The local store: desired state in SQLite.

Objects (networks, containers, endpoints, images) are JSON documents keyed by id, with the
name unique where Docker makes it unique.  Allocations live in their own tables whose primary
keys make a duplicate impossible: even a bug in the allocator above cannot hand one address to
two endpoints, the INSERT fails instead.

WAL with synchronous=NORMAL: a committed transaction survives a kill -9 of the daemon (it is
in the OS page cache); only a power cut could lose the last commits, and the reconciler
repairs the kernel from whatever the store then says.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tether.errors import Conflict

log = logging.getLogger("tether.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    name TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_name ON objects(kind, name) WHERE name IS NOT NULL;
CREATE TABLE IF NOT EXISTS addresses (
    network_id TEXT NOT NULL,
    address    TEXT NOT NULL,
    owner      TEXT NOT NULL,
    PRIMARY KEY (network_id, address)
);
CREATE INDEX IF NOT EXISTS addresses_owner ON addresses(owner);
CREATE TABLE IF NOT EXISTS ports (
    proto   TEXT NOT NULL,
    host_ip TEXT NOT NULL,
    port    INTEGER NOT NULL,
    owner   TEXT NOT NULL,
    PRIMARY KEY (proto, host_ip, port)
);
CREATE INDEX IF NOT EXISTS ports_owner ON ports(owner);
CREATE INDEX IF NOT EXISTS ports_number ON ports(proto, port);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        # The store holds every container's environment (secrets included): 0600 from the
        # first byte.  SQLite gives the -wal and -shm files the database file's mode.
        if path != ":memory:":
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction spans
        # exactly the block that `transaction()` wraps and nothing commits behind our back.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all (nesting joins the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    # -- objects -------------------------------------------------------------------------

    def put(self, kind: str, obj_id: str, name: str | None, data: dict[str, Any]) -> None:
        try:
            self.db.execute(
                "INSERT INTO objects(kind, id, name, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(kind, id) DO UPDATE SET name=excluded.name, data=excluded.data",
                (kind, obj_id, name, json.dumps(data, separators=(",", ":"))),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"{kind} with name {name} already exists") from None

    def delete(self, kind: str, obj_id: str) -> None:
        self.db.execute("DELETE FROM objects WHERE kind=? AND id=?", (kind, obj_id))

    def load(self, kind: str) -> list[dict[str, Any]]:
        """Every stored object of one kind; a row that is not a JSON object is skipped and
        logged (store/records.py checks the rest), so one bad row never stops the daemon."""
        rows = self.db.execute("SELECT id, data FROM objects WHERE kind=? ORDER BY rowid", (kind,))
        out: list[dict[str, Any]] = []
        for obj_id, data in rows:
            try:
                doc = json.loads(data)
            except (ValueError, TypeError) as exc:
                log.error(
                    "skipping a stored %s record that is not JSON: id=%s error=%s",
                    kind,
                    obj_id,
                    exc,
                )
                continue
            if not isinstance(doc, dict):
                log.error("skipping a stored %s record that is not an object: id=%s", kind, obj_id)
                continue
            out.append(doc)
        return out

    # -- address allocations -------------------------------------------------------------

    def reserve_address(self, network_id: str, address: str, owner: str) -> None:
        try:
            self.db.execute(
                "INSERT INTO addresses(network_id, address, owner) VALUES (?, ?, ?)",
                (network_id, address, owner),
            )
        except sqlite3.IntegrityError:
            raise Conflict("Address already in use") from None

    def release_address(self, network_id: str, address: str) -> None:
        self.db.execute(
            "DELETE FROM addresses WHERE network_id=? AND address=?", (network_id, address)
        )

    def release_network_addresses(self, network_id: str) -> None:
        self.db.execute("DELETE FROM addresses WHERE network_id=?", (network_id,))

    def release_owner(self, owner: str) -> list[tuple[str, str]]:
        rows = list(
            self.db.execute("SELECT network_id, address FROM addresses WHERE owner=?", (owner,))
        )
        self.db.execute("DELETE FROM addresses WHERE owner=?", (owner,))
        return [(r[0], r[1]) for r in rows]

    def addresses(self) -> list[tuple[str, str, str]]:
        rows = self.db.execute("SELECT network_id, address, owner FROM addresses")
        return [(r[0], r[1], r[2]) for r in rows]

    # -- host port allocations -----------------------------------------------------------

    def reserve_port(self, proto: str, host_ip: str, port: int, owner: str) -> bool:
        try:
            self.db.execute(
                "INSERT INTO ports(proto, host_ip, port, owner) VALUES (?, ?, ?, ?)",
                (proto, host_ip, port, owner),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def release_ports(self, owner: str) -> None:
        self.db.execute("DELETE FROM ports WHERE owner=?", (owner,))

    def release_port(self, proto: str, host_ip: str, port: int, owner: str) -> None:
        """One allocation, if `owner` holds it."""
        self.db.execute(
            "DELETE FROM ports WHERE proto=? AND host_ip=? AND port=? AND owner=?",
            (proto, host_ip, port, owner),
        )

    def ports_on(self, proto: str, port: int) -> list[tuple[str, str]]:
        """(host address, owner) of every allocation of one protocol and port number."""
        rows = self.db.execute(
            "SELECT host_ip, owner FROM ports WHERE proto=? AND port=?", (proto, port)
        )
        return [(r[0], r[1]) for r in rows]

    def ports(self) -> list[tuple[str, str, int, str]]:
        rows = self.db.execute("SELECT proto, host_ip, port, owner FROM ports")
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    # -- meta ----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )
