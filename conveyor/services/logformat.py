"""Log format: uvicorn's text lines (the default) or, with ``CONVEYOR_LOG_FORMAT=json``, one JSON
object per line for log collectors (Loki, Elasticsearch, CloudWatch).

In JSON, every record, Conveyor's and uvicorn's (access lines too), goes through one formatter,
which redacts anything shaped like a credential: Conveyor API keys, bearer tokens, agent and
webhook secrets passed as ``secret=…``/``password=…``/``token=…``. Nothing Conveyor logs carries
one on purpose; this is the safety net for what a library or an exception message might print.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from conveyor.settings import Settings

REDACTED = "[redacted]"
SECRETS = re.compile(
    r"(API-[0-9A-F]{16,})"  # Conveyor API keys
    r"|((?i:bearer)\s+)[A-Za-z0-9._~+/=-]{8,}"  # Authorization: Bearer …
    r"|((?i:password|passwd|secret|token|api_key|apikey)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
)
# Attributes every LogRecord has: what is left over was passed in ``extra=``.
# (uvicorn's ``color_message`` is its message again, with terminal colours.)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def redact(text: str) -> str:
    """``text`` with anything shaped like a credential replaced by ``[redacted]``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return REDACTED
        prefix = match.group(2) or match.group(3) or ""
        return prefix + REDACTED

    return SECRETS.sub(replace, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, message,
    and the exception's traceback as text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and name not in out:
                out[name] = value if isinstance(value, int | float | bool) else redact(str(value))
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = redact(record.exc_text)
        return json.dumps(out, ensure_ascii=False, default=str)


def uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    """The logging configuration for ``uvicorn.run(log_config=…)``: uvicorn applies it before
    it says anything, so that every line of the server, from the first, has the chosen format.
    Text: uvicorn's own. JSON: every logger (uvicorn's, ``conveyor.*``, any library's) through
    ``JsonFormatter`` to standard error."""
    if settings.log_format != "json":
        from uvicorn.config import LOGGING_CONFIG

        return copy.deepcopy(LOGGING_CONFIG)
    formatter = {"()": "conveyor.services.logformat.JsonFormatter"}
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        # uvicorn's access records carry their parts as arguments: named fields in JSON.
        "filters": {"access_fields": {"()": "conveyor.services.logformat.AccessFields"}},
        "handlers": {
            "default": {**handler, "formatter": "json"},
            "access": {**handler, "formatter": "json", "filters": ["access_fields"]},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "conveyor": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
        # Anything else (a library's warning) in the same format.
        "root": {"handlers": ["default"], "level": "WARNING"},
    }


class AccessFields(logging.Filter):
    """uvicorn's access record ``(client, method, path, http version, status)`` as fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, _version, status = args
            record.client = str(client)
            record.method = str(method)
            record.path = redact(str(path))
            record.status = int(str(status)) if str(status).isdigit() else str(status)
        return True


def json_line(logger: str, message: str, level: int = logging.INFO) -> str:
    """A message as the JSON log line it would be, for what is said before logging is set up."""
    record = logging.makeLogRecord({"name": logger, "levelno": level, "msg": message})
    record.levelname = logging.getLevelName(level)
    return JsonFormatter().format(record)
