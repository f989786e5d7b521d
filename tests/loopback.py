"""The tests' own HTTP requests to the servers they start.

``httpx.get()`` and ``httpx.Client()`` build a TLS context from the CA bundle on every call:
about 20 ms of CPU each, which the tests' polling loops paid thousands of times (a third of
the CPU of the crash tests). These take the same arguments and share one context; each call
still opens its own connection, as ``httpx.get()`` does.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

TLS = ssl.create_default_context()


def client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=TLS, **kwargs)


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=TLS, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)
