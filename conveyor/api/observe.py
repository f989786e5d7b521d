"""Request latency for ``/metrics``: every HTTP request, labelled by its route's template
(``/api/v1/projects/{project}``), never the raw path, so that the series stay bounded."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.services.metrics import Metrics


class RequestMetrics:
    """Pure ASGI middleware: times each request from its start to the end of its response."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.observe_request(
                str(scope.get("method", "")),
                route_template(scope),
                status,
                time.perf_counter() - started,
            )


def route_template(scope: Scope) -> str | None:
    """The matched route's template with the prefix of the router it was included with:
    FastAPI gives the route as declared (``/projects/{project}``), its prefix (``/api/v1``) is
    the literal start of the path that the route's pattern leaves over. None: no route."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    pattern = getattr(route, "path_regex", None)
    if not isinstance(template, str):
        return None
    path = str(scope.get("path", ""))
    if pattern is None or pattern.match(path):
        return template
    cut = path.find("/", 1)
    while cut != -1:
        if pattern.match(path[cut:]):
            return path[:cut] + template
        cut = path.find("/", cut + 1)
    return template
