"""JSON log lines (CONVEYOR_LOG_FORMAT=json): one object per record, credentials redacted; and
the route template request latency is labelled with."""

from __future__ import annotations

import json
import logging
import re
import sys

from conveyor.api.observe import route_template
from conveyor.services.logformat import JsonFormatter, json_line, redact, uvicorn_log_config
from conveyor.settings import Settings


def test_a_record_is_one_json_line_without_secrets() -> None:
    try:
        raise ValueError("token=abc123secret in the way")
    except ValueError:
        error = sys.exc_info()
    record = logging.LogRecord(
        "conveyor.engine",
        logging.ERROR,
        __file__,
        1,
        "key %s failed",
        ("API-0123456789ABCDEF0123",),
        error,
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "error" and data["logger"] == "conveyor.engine"
    assert data["message"] == "key [redacted] failed"
    assert "abc123secret" not in data["exception"] and "ValueError" in data["exception"]
    assert json.loads(json_line("conveyor", "started"))["message"] == "started"


def test_redaction() -> None:
    said = redact('Authorization: Bearer eyJhbGciOi.x.y password="hunter2" secret: s3cr3t ok')
    assert "eyJ" not in said and "hunter2" not in said and "s3cr3t" not in said
    assert said.endswith(" ok")


def test_the_log_config_follows_the_setting() -> None:
    json_config = uvicorn_log_config(Settings(log_format="json"))
    assert json_config["formatters"]["json"]["()"].endswith("JsonFormatter")
    text_config = uvicorn_log_config(Settings())
    assert "json" not in text_config["formatters"]


def test_route_templates_keep_the_router_prefix() -> None:
    class Route:
        path = "/projects/{project}"
        path_regex = re.compile(r"^/projects/(?P<project>[^/]+)$")

    assert route_template({"route": Route(), "path": "/api/v1/projects/Web"}) == (
        "/api/v1/projects/{project}"
    )
    assert route_template({"route": Route(), "path": "/projects/Web"}) == "/projects/{project}"
    assert route_template({"path": "/nowhere"}) is None
