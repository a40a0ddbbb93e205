"""A client of the OCI distribution protocol (Docker Registry HTTP API v2), on aiohttp.

What dockerd's registry code does, in the parts a pull and a push need:

- endpoints: `docker.io` is registry-1.docker.io, tried after the mirrors tetherd was given
  (`--registry-mirror`, docker.io only, as dockerd); a registry is reached over HTTPS, and
  over plain HTTP (or HTTPS without verification) only when it is named insecure
  (`--insecure-registry host:port` or a CIDR) or is on a loopback address, as dockerd's
  defaults (127.0.0.0/8) have it;
- CAs for a registry: every *.crt in CERTS_DIR/<host:port>/ (dockerd's /etc/docker/certs.d
  layout, tether's own directory);
- auth: the 401's challenge says how: Basic (the credentials as they are) or Bearer (a token
  from the realm, asked with the credentials and the scope, cached per scope);
- errors: the registry's JSON errors (`{"errors":[{"code":"MANIFEST_UNKNOWN",...}]}`) as
  docker words them ("manifest unknown: manifest unknown"), and connection failures as
  Go's HTTP client words them (`Get "https://...": ...`).

aiohttp is imported only when an image operation first talks to a registry: it costs ~0.3 s,
which a daemon start should not pay.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import os
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit

from tether.errors import Forbidden, InvalidParameter, TetherError
from tether.images import oci
from tether.images.reference import DEFAULT_DOMAIN

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("tether.registry")

DOCKER_HUB = "https://registry-1.docker.io"
DEFAULT_CERTS_DIR = "/etc/tether/certs.d"
USER_AGENT = "tether (docker-compatible; registry client)"
DEFAULT_INSECURE = ("127.0.0.0/8", "::1/128")


class Unauthorized(TetherError):
    status = 401


class RegistryError(TetherError):
    """An error a registry answered with: its code (MANIFEST_UNKNOWN...) and docker's text."""

    def __init__(self, status: int, code: str, message: str, text: str) -> None:
        super().__init__(text)
        self.http_status = status
        self.code = code
        self.detail = message
        self.status = {401: 401, 404: 404, 403: 403}.get(status, 500)


class _NoCredentials(Exception):
    pass


class TransportError(TetherError):
    """The registry could not be reached or spoke something else than HTTP(S)."""

    status = 500


@dataclass
class AuthConfig:
    """X-Registry-Auth: what the client sent for this registry."""

    username: str = ""
    password: str = ""
    identitytoken: str = ""
    registrytoken: str = ""
    serveraddress: str = ""

    @classmethod
    def from_header(cls, value: str | None) -> AuthConfig | None:
        """docker's base64url(JSON) header; a malformed one is ignored, as dockerd does."""
        if not value:
            return None
        try:
            padded = value + "=" * (-len(value) % 4)
            doc = json.loads(base64.urlsafe_b64decode(padded))
        except (ValueError, TypeError):
            return None
        if not isinstance(doc, dict):
            return None
        return cls(
            str(doc.get("username") or ""),
            str(doc.get("password") or ""),
            str(doc.get("identitytoken") or ""),
            str(doc.get("registrytoken") or ""),
            str(doc.get("serveraddress") or ""),
        )

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identitytoken or self.registrytoken)


@dataclass
class RegistryOptions:
    mirrors: list[str] = field(default_factory=list)
    insecure: list[str] = field(default_factory=list)
    certs_dir: str = DEFAULT_CERTS_DIR
    # --block-registry: registries never contacted (their mirrors still are): a machine
    # that must pull docker.io names only through its mirror, and the tests' daemons, which
    # must never reach past the machine.
    blocked: list[str] = field(default_factory=list)


def check_mirror(url: str) -> str:
    """dockerd's ValidateMirror: an http(s) URL with no path, query or credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidParameter(
            f"invalid mirror: unsupported scheme {parts.scheme!r} in {url!r}: must use either 'https' or 'http'"
        )
    if parts.username or parts.password:
        raise InvalidParameter(f"invalid mirror: username/password not allowed in URI {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidParameter(
            f"invalid mirror: path, query, or fragment at end of the URI {url!r}"
        )
    if not parts.netloc:
        raise InvalidParameter(f"invalid mirror: no host in {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def check_blocked(value: str) -> str:
    """--block-registry: a registry's host[:port]; Docker Hub by any of its names."""
    name = value.strip().lower()
    if not name or "://" in name or "/" in name:
        raise InvalidParameter(f"blocked registry {value!r} should be a host[:port]")
    if name in ("index.docker.io", "registry-1.docker.io"):
        return DEFAULT_DOMAIN
    return name


def check_insecure(value: str) -> str:
    """dockerd's --insecure-registry: host[:port] or a CIDR (no scheme, no path)."""
    if "://" in value:
        raise InvalidParameter(f"insecure registry {value} should not contain '://'")
    if "/" in value:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise InvalidParameter(f"insecure registry {value} is not valid") from None
    return value


@dataclass
class Endpoint:
    url: str  # https://host:port
    mirror: bool = False
    verify_tls: bool = True

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


class Registries:
    """The daemon's registry settings and its one HTTP client session."""

    def __init__(self, opts: RegistryOptions) -> None:
        self.opts = opts
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[tuple[str, str, str, str], str] = {}
        # The endpoint of an insecure registry that answered last (HTTPS or plain HTTP):
        # tried first next time, so each pull does not pay a failed TLS handshake.
        self._worked: dict[str, str] = {}

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_read=60),
                headers={"User-Agent": USER_AGENT},
                connector=aiohttp.TCPConnector(limit=16, ttl_dns_cache=60),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def info(self) -> dict[str, Any]:
        """`docker info`'s RegistryConfig."""
        cidrs = [*DEFAULT_INSECURE, *(i for i in self.opts.insecure if "/" in i)]
        names = [i for i in self.opts.insecure if "/" not in i]
        indexes: dict[str, Any] = {
            DEFAULT_DOMAIN: {
                "Name": DEFAULT_DOMAIN,
                "Mirrors": list(self.opts.mirrors),
                "Secure": True,
                "Official": True,
            }
        }
        for n in names:
            indexes[n] = {"Name": n, "Mirrors": [], "Secure": False, "Official": False}
        return {
            "InsecureRegistryCIDRs": cidrs,
            "IndexConfigs": indexes,
            "Mirrors": list(self.opts.mirrors),
        }

    def is_insecure(self, host: str) -> bool:
        name = host
        if name.startswith("["):
            name = name[1 : name.index("]")]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        for entry in self.opts.insecure:
            if entry in (host, name):
                return True
        try:
            addr = ipaddress.ip_address(name)
        except ValueError:
            return name == "localhost"
        for entry in [*self.opts.insecure, *DEFAULT_INSECURE]:
            if "/" in entry:
                try:
                    if addr in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
        return False

    def endpoints(self, domain: str, push: bool = False) -> list[Endpoint]:
        """Where to ask, in order: mirrors first (pulls from docker.io only), then the
        registry; an insecure registry over HTTPS without verification, then over HTTP.
        A blocked registry is left out; with nothing left to ask, Forbidden."""
        out: list[Endpoint] = []
        blocked = domain in self.opts.blocked
        if domain == DEFAULT_DOMAIN:
            if not push:
                for m in self.opts.mirrors:
                    host = urlsplit(m).netloc
                    insecure = self.is_insecure(host)
                    out.append(Endpoint(m, mirror=True, verify_tls=not insecure))
            if not blocked:
                out.append(Endpoint(DOCKER_HUB))
        if blocked:
            if not out:
                raise Forbidden(
                    f"registry {domain} is blocked on this daemon (tetherd --block-registry)"
                    + ("" if push or domain != DEFAULT_DOMAIN else " and has no mirror")
                )
            return out
        if domain == DEFAULT_DOMAIN:
            return out
        if self.is_insecure(domain):
            eps = [Endpoint(f"https://{domain}", verify_tls=False), Endpoint(f"http://{domain}")]
            eps.sort(key=lambda e: e.url != self._worked.get(domain))
            return eps
        return [Endpoint(f"https://{domain}")]

    def worked(self, domain: str, ep: Endpoint) -> None:
        self._worked[domain] = ep.url

    def ssl_for(self, ep: Endpoint) -> ssl.SSLContext | bool:
        if not ep.url.startswith("https://"):
            return False
        if not ep.verify_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        ctx = ssl.create_default_context()
        d = os.path.join(self.opts.certs_dir, ep.host)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                if name.endswith(".crt"):
                    ctx.load_verify_locations(os.path.join(d, name))
            cert = os.path.join(d, "client.cert")
            key = os.path.join(d, "client.key")
            if os.path.exists(cert) and os.path.exists(key):
                ctx.load_cert_chain(cert, key)
        return ctx

    def repository(
        self, ep: Endpoint, path: str, auth: AuthConfig | None, actions: tuple[str, ...]
    ) -> Repository:
        return Repository(self, ep, path, auth, actions)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = i + 1
            val = ""
            while end < len(rest) and rest[end] != '"':
                if rest[end] == "\\" and end + 1 < len(rest):
                    end += 1
                val += rest[end]
                end += 1
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            val = rest[i:end].strip()
            i = end
        params[key] = val
    return scheme.lower(), params


def error_text(status: int, body: bytes) -> tuple[str, str, str]:
    """(code, message, docker's text) of a registry's error answer."""
    try:
        doc = json.loads(body)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = str(errors[0].get("code") or "UNKNOWN")
            msg = str(errors[0].get("message") or "")
            return code, msg, f"{code.lower().replace('_', ' ')}: {msg}"
    except ValueError:
        pass
    if status == 401:
        return "UNAUTHORIZED", "authentication required", "unauthorized: authentication required"
    if status == 404:
        return "NOT_FOUND", "not found", "not found"
    text = body.decode(errors="replace").strip()[:200]
    reason = {403: "Forbidden", 500: "Internal Server Error", 502: "Bad Gateway"}.get(status, "")
    return "UNKNOWN", text, f"received unexpected HTTP status: {status} {reason}".strip()


def go_url_error(method: str, url: str, exc: BaseException) -> str:
    """Go's *url.Error text: `Get "https://host/v2/": <cause>`."""
    verb = method.capitalize()
    cause = str(exc) or type(exc).__name__
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError | ssl.SSLError):
        text = str(exc)
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            cause = "http: server gave HTTP response to HTTPS client"
        elif "CERTIFICATE_VERIFY_FAILED" in text:
            cause = (
                "tls: failed to verify certificate: x509: certificate signed by unknown authority"
            )
        else:
            cause = f"tls: {text}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        host = urlsplit(url).netloc
        if isinstance(err, ConnectionRefusedError):
            cause = f"dial tcp {host}: connect: connection refused"
        elif isinstance(err, OSError) and err.strerror:
            cause = f"dial tcp {host}: {err.strerror.lower()}"
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError):
        cause = "net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)"
    return f'{verb} "{url}": {cause}'


class Repository:
    """One repository on one endpoint, with the auth a set of actions needs."""

    def __init__(
        self,
        registries: Registries,
        ep: Endpoint,
        path: str,
        auth: AuthConfig | None,
        actions: tuple[str, ...],
    ) -> None:
        self.registries = registries
        self.ep = ep
        self.path = path
        self.auth = auth
        self.actions = actions
        self._authorization: str | None = None
        self.transport_ok = False  # it spoke HTTP with us (no TLS or connection trouble)

    def url(self, suffix: str) -> str:
        return f"{self.ep.url}/v2/{self.path}/{suffix}"

    @property
    def scope(self) -> str:
        return f"repository:{self.path}:{','.join(self.actions)}"

    async def _authorize(self, challenge: str, scopes: list[str]) -> bool:
        """Answer a 401's challenge; False when there is nothing to answer it with."""
        scheme, params = _parse_challenge(challenge)
        auth = self.auth if self.auth is not None and not self.auth.empty else None
        if scheme == "basic":
            if auth is None or not auth.username:
                raise _NoCredentials("no basic auth credentials")
            token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
            self._authorization = f"Basic {token}"
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        if auth is not None and auth.registrytoken:
            self._authorization = f"Bearer {auth.registrytoken}"
            return True
        service = params.get("service", "")
        scope_list = scopes or ([params["scope"]] if params.get("scope") else [])
        key = (params["realm"], service, " ".join(scope_list), auth.username if auth else "")
        cached = self.registries._tokens.get(key)
        if cached:
            self._authorization = f"Bearer {cached}"
            return True
        query: list[tuple[str, str]] = []
        if service:
            query.append(("service", service))
        for s in scope_list:
            query.append(("scope", s))
        headers = {}
        if auth is not None and auth.username:
            query += [
                ("account", auth.username),
                ("client_id", "docker"),
                ("offline_token", "true"),
            ]
            basic = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        realm = params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        session = await self.registries.session()
        try:
            async with session.get(url, headers=headers, ssl=self._ssl_for_url(url)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    if resp.status == 401:
                        raise Unauthorized(
                            f'Get "{realm}": unauthorized: {_token_error(body) or "authentication required"}'
                        )
                    raise RegistryError(
                        resp.status,
                        "UNKNOWN",
                        "",
                        f'Get "{realm}": token server answered {resp.status}: {_token_error(body)}',
                    )
        except (TimeoutError, OSError) as exc:
            raise TransportError(go_url_error("GET", realm, exc)) from None
        except Exception as exc:
            if _is_client_error(exc):
                raise TransportError(go_url_error("GET", realm, exc)) from None
            raise
        try:
            doc = json.loads(body)
            token = str(doc.get("token") or doc.get("access_token") or "")
        except (ValueError, AttributeError):
            token = ""
        if not token:
            raise Unauthorized(
                f'Get "{realm}": authorization server did not include a token in the response'
            )
        self.registries._tokens[key] = token
        self._authorization = f"Bearer {token}"
        return True

    def _ssl_for_url(self, url: str) -> ssl.SSLContext | bool:
        parts = urlsplit(url)
        if parts.scheme != "https":
            return False
        return self.registries.ssl_for(
            Endpoint(
                f"https://{parts.netloc}", verify_tls=not self.registries.is_insecure(parts.netloc)
            )
        )

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        data: Any = None,
        scopes: list[str] | None = None,
        allow_redirects: bool = True,
    ) -> aiohttp.ClientResponse:
        """One request with auth (a 401 is answered once); the caller reads and releases."""
        session = await self.registries.session()
        sslctx = self.registries.ssl_for(self.ep)
        for attempt in range(2):
            hdrs = dict(headers or {})
            if self._authorization:
                hdrs["Authorization"] = self._authorization
            try:
                resp = await session.request(
                    method,
                    url,
                    headers=hdrs,
                    data=data,
                    ssl=sslctx if url.startswith(self.ep.url) else self._ssl_for_url(url),
                    allow_redirects=allow_redirects,
                )
            except (TimeoutError, OSError) as exc:
                raise TransportError(go_url_error(method, url, exc)) from None
            except Exception as exc:
                if _is_client_error(exc):
                    raise TransportError(go_url_error(method, url, exc)) from None
                raise
            self.transport_ok = True
            retryable = data is None or isinstance(data, bytes)
            if resp.status == 401 and attempt == 0 and retryable:
                challenge = resp.headers.get("WWW-Authenticate", "")
                await resp.read()
                resp.release()
                try:
                    answered = bool(challenge) and await self._authorize(
                        challenge, scopes or [self.scope]
                    )
                except _NoCredentials as exc:
                    raise Unauthorized(f'{method.capitalize()} "{url}": {exc}') from None
                if answered:
                    continue
                return resp
            return resp
        raise AssertionError("unreachable")

    async def check(self, resp: aiohttp.ClientResponse, ok: tuple[int, ...]) -> None:
        """Raise the registry's error unless the status is one of `ok`."""
        if resp.status in ok:
            return
        body = await resp.read()
        resp.release()
        code, msg, text = error_text(resp.status, body)
        if resp.status == 401 and code in ("UNAUTHORIZED", "NOT_FOUND", "UNKNOWN"):
            raise Unauthorized(text)
        raise RegistryError(resp.status, code, msg, text)

    # -- manifests ---------------------------------------------------------------------------

    async def get_manifest(self, ref: str) -> tuple[bytes, str, str]:
        """(body, media type, digest the registry gave) of a manifest or an index."""
        url = self.url(f"manifests/{ref}")
        resp = await self.request("GET", url, headers={"Accept": oci.ACCEPT})
        await self.check(resp, (200,))
        body = await resp.read()
        media = resp.headers.get("Content-Type", "")
        digest = resp.headers.get("Docker-Content-Digest", "")
        resp.release()
        return body, media, digest

    async def put_manifest(self, ref: str, body: bytes, media_type: str) -> str:
        url = self.url(f"manifests/{ref}")
        resp = await self.request("PUT", url, headers={"Content-Type": media_type}, data=body)
        await self.check(resp, (200, 201))
        digest = resp.headers.get("Docker-Content-Digest", "")
        resp.release()
        return digest

    # -- blobs -------------------------------------------------------------------------------

    async def blob(self, digest: str) -> aiohttp.ClientResponse:
        resp = await self.request("GET", self.url(f"blobs/{digest}"))
        await self.check(resp, (200,))
        return resp

    async def blob_bytes(self, digest: str, limit: int = 64 << 20) -> bytes:
        resp = await self.blob(digest)
        try:
            data = await resp.content.read(limit + 1)
        finally:
            resp.release()
        if len(data) > limit:
            raise InvalidParameter(f"blob {digest} is larger than {limit} bytes")
        return data

    async def has_blob(self, digest: str) -> bool:
        resp = await self.request("HEAD", self.url(f"blobs/{digest}"))
        status = resp.status
        resp.release()
        if status == 200:
            return True
        if status == 404:
            return False
        await self.check(resp, (200,))
        return False

    async def mount_blob(self, digest: str, source_path: str) -> bool:
        """Cross-repository mount (same registry): True when the registry mounted it."""
        resp = await self.request(
            "POST", self.url(f"blobs/uploads/?mount={digest}&from={source_path}")
        )
        status = resp.status
        location = resp.headers.get("Location", "")
        await resp.read()
        resp.release()
        if status == 201:
            return True
        if status == 202 and location:
            # The registry started an upload instead: cancel it, a fresh one follows.
            cancel = await self.request("DELETE", urljoin(self.ep.url + "/", location))
            cancel.release()
            return False
        if status in (401, 403, 404):
            return False
        return False

    async def upload_blob(self, digest: str, size: int, body: Any) -> None:
        """Monolithic upload: POST for a location, then one PUT with the whole blob."""
        resp = await self.request("POST", self.url("blobs/uploads/"))
        await self.check(resp, (202,))
        location = resp.headers.get("Location", "")
        resp.release()
        if not location:
            raise TransportError("the registry gave no upload location")
        url = urljoin(self.ep.url + "/", location)
        url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
        resp = await self.request(
            "PUT",
            url,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            data=body,
        )
        await self.check(resp, (201, 204))
        resp.release()

    async def ping(self) -> None:
        """GET /v2/ with the credentials: what `docker login` checks."""
        url = f"{self.ep.url}/v2/"
        resp = await self.request("GET", url, scopes=[])
        status = resp.status
        await resp.read()
        resp.release()
        if status != 200:
            reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(status, "")
            raise Unauthorized(f"login attempt to {url} failed with status: {status} {reason}")


def _token_error(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:200]
    if isinstance(doc, dict):
        errs = doc.get("errors")
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            return str(errs[0].get("message") or errs[0].get("code") or "")
        return str(doc.get("details") or doc.get("error") or doc.get("message") or "")
    return ""


def _is_client_error(exc: BaseException) -> bool:
    import aiohttp

    return isinstance(exc, aiohttp.ClientError)
