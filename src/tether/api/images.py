"""Requests of /images: import (POST /images/create?fromSrc=-) and pull (?fromImage=), as
query parameters.

The repository and tag become names users type and the `--change` instructions become the
image's Config (Cmd, Env, Labels, ExposedPorts...), which every container of the image
inherits: both are checked here with the same rules as a container create.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tether.api import ports
from tether.api.containers import parse_signal
from tether.api.networks import check_labels
from tether.errors import InvalidParameter
from tether.images import oci, reference
from tether.images.reference import Reference
from tether.textcheck import check_env, go_quote, has_control, shown

# distribution/reference's grammar: [domain[:port]/]path-component(/path-component)*
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
REPOSITORY = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*")
TAG = re.compile(r"[\w][\w.-]{0,127}")


@dataclass
class ImageImport:
    """POST /images/create?fromSrc=-&repo=&tag=&changes=..."""

    from_src: str = ""
    repo: str = ""
    tag: str = ""
    changes: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> ImageImport:
        def last(name: str) -> str:
            vals = query.get(name)
            return vals[-1] if vals else ""

        req = cls(last("fromSrc"), last("repo"), last("tag"), list(query.get("changes", [])))
        req.validate()
        return req

    def validate(self) -> None:
        if self.from_src != "-":
            raise InvalidParameter(
                "importing from a URL is not supported: send the tarball as the request body "
                "(fromSrc=-)"
            )
        repo, tag = self.repo, self.tag
        if repo and not tag:
            # docker import accepts "name:tag" in repo
            name, sep, maybe_tag = repo.rpartition(":")
            if sep and "/" not in maybe_tag:
                repo, tag = name, maybe_tag
        if repo and not REPOSITORY.fullmatch(repo):
            if repo.lower() != repo and REPOSITORY.fullmatch(repo.lower()):
                raise InvalidParameter(
                    f"invalid reference format: repository name ({shown(repo)}) must be lowercase"
                )
            raise InvalidParameter(f"invalid reference format: {go_quote(self.repo)}")
        if tag and not TAG.fullmatch(tag):
            raise InvalidParameter(f"invalid tag format: {go_quote(tag)}")
        for change in self.changes:
            if "\x00" in change:
                raise InvalidParameter(f"invalid change {go_quote(change)}: NUL character")

    def check_config(self, config: dict[str, object]) -> None:
        """The Config the --change instructions made: the rules of a container create."""
        for e in _strings(config.get("Env")):
            try:
                check_env(e)
            except ValueError as exc:
                raise InvalidParameter(str(exc)) from None
        labels = config.get("Labels")
        if isinstance(labels, dict):
            check_labels({str(k): str(v) for k, v in labels.items()})
        exposed = config.get("ExposedPorts")
        if isinstance(exposed, dict):
            for key in exposed:
                ports.port_key(str(key))
        wd = config.get("WorkingDir")
        if isinstance(wd, str) and wd and (not wd.startswith("/") or has_control(wd)):
            raise InvalidParameter(
                f"the working directory '{go_quote(wd)[1:-1]}' is invalid, it needs to be an absolute path"
            )
        signal = config.get("StopSignal")
        if isinstance(signal, str) and signal:
            parse_signal(signal)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass
class ImagePull:
    """POST /images/create?fromImage=NAME[&tag=TAG|DIGEST][&platform=OS/ARCH]: dockerd's
    reading (a `tag` that is a digest pins the digest; no tag at all is every tag)."""

    ref: Reference
    all_tags: bool
    platform: dict[str, str] | None

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> ImagePull:
        def last(name: str) -> str:
            vals = query.get(name)
            return vals[-1] if vals else ""

        image, tag, platform = last("fromImage"), last("tag"), last("platform")
        try:
            ref = reference.parse(image)
            if tag:
                if reference.is_digest(tag):
                    ref = Reference(ref.domain, ref.path, "", tag)
                else:
                    ref = Reference(ref.domain, ref.path, reference.check_tag(tag), "")
        except reference.ReferenceError as exc:
            raise InvalidParameter(str(exc)) from None
        plat = oci.parse_platform(platform) if platform else None
        return cls(ref, not ref.tag and not ref.digest, plat)
