"""The HTTP client of remote commands: API key, base URL, and errors turned into Failures."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from conveyor.cli.output import Failure

DEFAULT_SERVER = "http://127.0.0.1:8080"
API_PATH = "/api/v1"


def server_url(given: str | None) -> str:
    """The server's base URL from ``--server`` or ``CONVEYOR_SERVER``, as people write it.

    ``127.0.0.1:8080`` (no scheme) means ``http://127.0.0.1:8080``, and the API's own address
    (``…/api/v1``, as copied from the OpenAPI page) means the server it belongs to: both
    used to reach somewhere else and fail with a misleading error.
    """
    source = "--server" if given else "CONVEYOR_SERVER"
    written = given or os.environ.get("CONVEYOR_SERVER") or DEFAULT_SERVER
    text = written.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise Failure(
            "bad_input",
            f'{source} "{written}" is not a server address: '
            "write its base URL, like http://127.0.0.1:8080 or https://conveyor.example.com",
        )
    base = str(url.copy_with(query=None, fragment=None)).rstrip("/")
    return base.removesuffix(API_PATH).rstrip("/")


def _tls_for(server: str) -> ssl.SSLContext | bool:
    """A plain-HTTP server needs no CA bundle: loading it is 20 ms of every command's start.
    Such a client gets a context that trusts no certificate, so any TLS it meets fails shut."""
    if server.startswith("https://"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class Client:
    def __init__(self, server: str | None, api_key: str | None, timeout: float = 60.0) -> None:
        self.server = server_url(server)
        self.api_key = api_key or os.environ.get("CONVEYOR_API_KEY")
        headers = {"User-Agent": "conveyor-cli"}
        if self.api_key:
            headers["X-Api-Key"] = self.api_key
        self.http = httpx.Client(
            base_url=self.server + API_PATH,
            headers=headers,
            timeout=timeout,
            verify=_tls_for(self.server),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _need_key(self) -> None:
        if not self.api_key:
            raise Failure(
                "unauthenticated",
                "no API key: set CONVEYOR_API_KEY or pass --api-key "
                "(conveyor admin api-key create --user NAME makes one)",
            )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self._need_key()
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Failure(
                "unreachable",
                f"cannot reach the Conveyor server at {self.server} ({exc.__class__.__name__}): "
                "is it running? Set CONVEYOR_SERVER or --server to its address",
            ) from exc
        if response.status_code >= 400:
            raise _failure(response)
        return response

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response read as it arrives (exports); errors as ``request`` raises them."""
        self._need_key()
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _failure(response)
                yield response
        except httpx.TransportError as exc:
            raise Failure(
                "unreachable",
                f"the connection to the Conveyor server at {self.server} failed "
                f"({exc.__class__.__name__}): is it running?",
            ) from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        response = self.request("POST", path, **kwargs)
        return response.json() if response.content else None

    def put(self, path: str, **kwargs: Any) -> Any:
        response = self.request("PUT", path, **kwargs)
        return response.json() if response.content else None

    def delete(self, path: str, **kwargs: Any) -> None:
        self.request("DELETE", path, **kwargs)


def _failure(response: httpx.Response) -> Failure:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    message = body.get("message") or body.get("detail") or response.text[:300]
    extra = {k: v for k, v in body.items() if k in ("problems", "permission", "refused")}
    if response.status_code >= 500 or not code:
        code = "server_error" if response.status_code >= 500 else "bad_input"
        message = f"the server answered {response.status_code}: {message}"
    return Failure(str(code), str(message), **extra)
