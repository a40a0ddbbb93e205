"""Image references as docker reads them (distribution/reference), pure.

`nginx` is `docker.io/library/nginx:latest`; `localhost:5000/app` is a repository on the
registry `localhost:5000`; `app@sha256:...` names one manifest.  The grammar and the error
texts are distribution/reference's (`invalid reference format`, `repository name (X) must be
lowercase`), and the "familiar" forms are what docker prints (`busybox:latest`, not
`docker.io/library/busybox:latest`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
REFERENCE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?")
ANCHORED_NAME = re.compile(_NAME)
ANCHORED_TAG = re.compile(_TAG)
ANCHORED_DIGEST = re.compile(_DIGEST)
HEX64 = re.compile(r"[a-f0-9]{64}")
SHA256 = re.compile(r"sha256:[a-f0-9]{64}")


class ReferenceError(ValueError):
    """A reference docker would refuse, with docker's words."""


@dataclass(frozen=True)
class Reference:
    domain: str  # "docker.io", "localhost:5000"
    path: str  # "library/busybox", "team/app"
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The full repository name: docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """As docker prints it: busybox, team/app, localhost:5000/app."""
        if self.domain == DEFAULT_DOMAIN:
            return self.path.removeprefix(OFFICIAL_PREFIX)
        return self.name

    def familiar(self) -> str:
        """busybox:latest, localhost:5000/app@sha256:..."""
        out = self.familiar_name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, "")

    def tagged_or_latest(self) -> Reference:
        """docker's TagNameOnly: a name alone gets :latest (a digest reference stays)."""
        if self.tag or self.digest:
            return self
        return Reference(self.domain, self.path, DEFAULT_TAG, "")

    @property
    def tag_or_digest(self) -> str:
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def repo_tag(self) -> str:
        """What `images` lists as REPOSITORY:TAG (familiar name, tag)."""
        return f"{self.familiar_name}:{self.tag or DEFAULT_TAG}"

    @property
    def repo_digest(self) -> str:
        return f"{self.familiar_name}@{self.digest}"


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
        if first.lower() != first:
            # A domain may hold capitals, but distribution lower-cases nothing: as given.
            pass
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(text: str) -> Reference:
    """distribution/reference's ParseNormalizedNamed (a tag, a digest or both allowed)."""
    if not text:
        raise ReferenceError("invalid reference format")
    if HEX64.fullmatch(text):
        raise ReferenceError(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    found = REFERENCE.fullmatch(text)
    if found is None:
        lowered = REFERENCE.fullmatch(text.lower())
        if lowered is not None and text.lower() != text:
            name = text.split("@", 1)[0]
            last = name.rsplit("/", 1)[-1]
            if ":" in last:
                name = name[: len(name) - len(last) + last.index(":")]
            _, remainder = _split_domain(name)
            if remainder.lower() != remainder:
                raise ReferenceError(
                    f"invalid reference format: repository name ({remainder}) must be lowercase"
                )
        raise ReferenceError("invalid reference format")
    name, tag, digest = found.group(1), found.group(2) or "", found.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError(
            f"invalid reference format: repository name must not be more than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    if digest and not SHA256.fullmatch(digest):
        if digest.startswith("sha256:"):
            raise ReferenceError("invalid checksum digest length")
        raise ReferenceError("unsupported digest algorithm")
    domain, path = _split_domain(name)
    return Reference(domain, path, tag, digest)


def parse_name(text: str) -> Reference:
    """A repository name without a tag or digest (docker tag's target repository)."""
    ref = parse(text)
    return Reference(ref.domain, ref.path)


def check_tag(tag: str) -> str:
    if not ANCHORED_TAG.fullmatch(tag):
        raise ReferenceError(f'invalid tag format: "{tag}"')
    return tag


def is_digest(text: str) -> bool:
    return SHA256.fullmatch(text) is not None


def index_name(domain: str) -> str:
    """The registry a credential is stored under: docker.io's is its v1 index URL."""
    return "https://index.docker.io/v1/" if domain == DEFAULT_DOMAIN else domain


def registry_of(server: str) -> str:
    """`docker login SERVER`: the registry host, from a host, host:port or URL."""
    s = server
    for scheme in ("https://", "http://"):
        if s.startswith(scheme):
            s = s[len(scheme) :]
    s = s.split("/", 1)[0]
    if s in ("", DEFAULT_DOMAIN, LEGACY_DOMAIN, "registry-1.docker.io"):
        return DEFAULT_DOMAIN
    return s
