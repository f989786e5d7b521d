"""A real OpenID issuer's key endpoints for tests: discovery and JWKS served over HTTP on
127.0.0.1 from a thread, with keys the test mints tokens with (and rotates)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey


class Issuer:
    """Publishes ``published`` keys; ``mint`` signs with any key it holds (published or not)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.keys: dict[str, RSAKey] = {}
        self.published: list[str] = []
        self.jwks_fetches = 0

    def new_key(self, kid: str, *, publish: bool = True) -> RSAKey:
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"}, private=True)
        self.keys[kid] = key
        if publish:
            self.published.append(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.keys[kid].as_dict(private=False) for kid in self.published]}

    def mint(self, kid: str = "k1", *, issuer: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": issuer or self.url, "iat": now, "nbf": now - 5, "exp": now + 300} | claims
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": kid}, body, self.keys[kid])


@contextmanager
def serve_issuer(port: int) -> Iterator[Issuer]:
    issuer = Issuer(port)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body: Any = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
            elif self.path == "/jwks":
                issuer.jwks_fetches += 1
                body = issuer.jwks()
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
