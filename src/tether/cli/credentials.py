"""Registry credentials, kept as the docker CLI keeps them, in tether's own config file.

    $TETHER_CONFIG/config.json   (default ~/.tether/config.json; mode 0600, directory 0700)
    {"auths": {"localhost:5000": {"auth": "<base64 of user:password>"},
               "https://index.docker.io/v1/": {...}}}

The format is docker's ~/.docker/config.json (credentials stored in the file, no helper), so
`DOCKER_CONFIG=~/.tether docker ...` and skopeo (`--authfile`) read the same file; it is
tether's own file so that `tether login` never rewrites docker's (its credential helpers,
its other settings).  `tether login` checks the credentials through the daemon (POST /auth)
before storing them; pull, push and run send them in X-Registry-Auth, as docker does.
"""

from __future__ import annotations

import os

from tether import wire

TYPE_CHECKING = False  # see tether/cli/flags.py
if TYPE_CHECKING:
    from typing import Any

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


def config_dir() -> str:
    return os.environ.get("TETHER_CONFIG") or os.path.join(os.path.expanduser("~"), ".tether")


def config_path() -> str:
    return os.path.join(config_dir(), "config.json")


def key_for(domain: str) -> str:
    """The key docker stores a registry's credentials under."""
    return DOCKER_HUB_KEY if domain in ("docker.io", "index.docker.io", "") else domain


def load() -> dict[str, Any]:
    try:
        with open(config_path(), "rb") as f:
            doc = wire.loads(f.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"loading config file {config_path()}: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def save(doc: dict[str, Any]) -> None:
    """Atomically, 0600 from the first byte (the file holds passwords)."""
    d = config_dir()
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = config_path()
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, wire.pretty(doc, "\t").encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)


def lookup(domain: str) -> dict[str, str] | None:
    """{"username", "password", "serveraddress"} for a registry, if stored."""
    import base64

    auths = load().get("auths") or {}
    key = key_for(domain)
    entry = auths.get(key)
    if entry is None:
        for k, v in auths.items():
            bare = k.split("://", 1)[-1].split("/", 1)[0]
            if bare == key or (key == DOCKER_HUB_KEY and bare in ("index.docker.io", "docker.io")):
                entry = v
                break
    if not isinstance(entry, dict):
        return None
    out = {"serveraddress": key}
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        out["username"], out["password"] = user, password
    if entry.get("identitytoken"):
        out["identitytoken"] = entry["identitytoken"]
    return out


def store(domain: str, username: str, password: str) -> str:
    import base64

    doc = load()
    auths = doc.setdefault("auths", {})
    key = key_for(domain)
    auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    save(doc)
    return key


def remove(domain: str) -> bool:
    doc = load()
    auths = doc.get("auths") or {}
    key = key_for(domain)
    if key not in auths:
        return False
    del auths[key]
    save(doc)
    return True


def header(domain: str) -> dict[str, str]:
    """X-Registry-Auth for a registry (empty credentials when none are stored)."""
    import base64

    cred = lookup(domain) or {}
    data = wire.dumps(cred).encode()
    return {"X-Registry-Auth": base64.urlsafe_b64encode(data).decode()}
