"""A registry token server for the tests (docker's token auth, as Docker Hub's auth.docker.io).

    python tokenserver.py ADDR PORT KEY.pem CERT.pem user:pass[,user:pass...] LIFETIME_S

GET /token?service=S&scope=repository:NAME:pull,push with HTTP Basic credentials answers
{"token": JWT, "access_token": JWT} signed RS256 with KEY (its certificate in the x5c
header, which docker-registry checks against its rootcertbundle).  A known user is granted
what it asks; an anonymous caller is granted pull on repositories under `public/` only; bad
credentials get a 401.  Standard library and the openssl program only; exits after
LIFETIME_S seconds whatever happens (a test that dies cannot leave it running).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ISSUER = "tether-test-issuer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> int:
    addr, port, key, cert, users_text, lifetime = sys.argv[1:7]
    users = dict(u.split(":", 1) for u in users_text.split(",") if u)
    der = subprocess.run(
        ["openssl", "x509", "-in", cert, "-outform", "DER"], capture_output=True, check=True
    ).stdout
    x5c = [base64.b64encode(der).decode()]
    log: list[str] = []

    def sign(payload: bytes) -> bytes:
        return subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", key],
            input=payload,
            capture_output=True,
            check=True,
        ).stdout

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            log.append(fmt % args)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/ready":
                self._answer(200, {"ready": True})
                return
            if url.path != "/token":
                self._answer(404, {"details": "not found"})
                return
            q = parse_qs(url.query)
            user = ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if users.get(name) != password:
                    self._answer(401, {"details": "incorrect username or password"})
                    return
                user = name
            access = []
            for scope in q.get("scope", []):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                wanted = [a for a in actions.split(",") if a]
                granted = (
                    wanted
                    if user
                    else [a for a in wanted if a == "pull" and name.startswith("public/")]
                )
                access.append({"type": kind, "name": name, "actions": granted})
            now = int(time.time())
            head = {"typ": "JWT", "alg": "RS256", "x5c": x5c}
            claims = {
                "iss": ISSUER,
                "sub": user,
                "aud": q.get("service", [""])[0],
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": secrets.token_hex(8),
                "access": access,
            }
            signing = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}"
            token = f"{signing}.{b64url(sign(signing.encode()))}"
            self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

        def _answer(self, status: int, doc: dict[str, object]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((addr, int(port)), Handler)
    threading.Timer(float(lifetime), server.shutdown).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
