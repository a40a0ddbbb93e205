"""Stored documents back into objects, each one checked: a record that no longer parses is
skipped and logged, never fatal to the daemon or to a listing.

Why: a record written by an older tether (or by a bug, or by hand) with a value of the wrong
type used to load fine and then break every `ps -a` or `network ls` that rendered it, even
after a restart.  Each record is converted field by field into the model's dataclasses with
their declared types (msgspec.convert), and the Docker-shaped dicts it carries (Config,
HostConfig) against the API's request types, so what loads is what the views can render.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec

from tether.api.containers import ContainerCreate, HostConfig
from tether.model import Container, Network

log = logging.getLogger("tether.store")

T = TypeVar("T")


class BadRecord(ValueError):
    pass


def parse_all(
    kind: str, docs: Iterable[dict[str, Any]], parse: Callable[[dict[str, Any]], T]
) -> list[T]:
    """Every record of one kind that parses; the others are named in the log and left in the
    store untouched (a later version may read them again, a user may inspect the db)."""
    out: list[T] = []
    for doc in docs:
        try:
            out.append(parse(doc))
        except (msgspec.ValidationError, BadRecord, TypeError, ValueError, KeyError) as exc:
            ident = doc.get("id") if isinstance(doc, dict) else None
            name = doc.get("name") if isinstance(doc, dict) else None
            log.error(
                "skipping a stored %s record that does not parse: id=%s name=%s error=%s",
                kind,
                ident,
                name,
                exc,
            )
    return out


def container(doc: dict[str, Any]) -> Container:
    c = msgspec.convert(doc, Container)
    try:
        msgspec.convert(c.config, ContainerCreate)
        msgspec.convert(c.host_config, HostConfig)
    except msgspec.ValidationError as exc:
        raise BadRecord(f"{exc} (in Config or HostConfig)") from None
    return c


def network(doc: dict[str, Any]) -> Network:
    return msgspec.convert(Network.upgrade_doc(doc), Network)
