"""How the CLI speaks: exit codes, errors as one sentence (or JSON), tables and JSON output."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console

from conveyor.domain import errors

# CLI.md's exit codes.
OK, FAILED, BAD_INPUT, NOT_ALLOWED, NOT_FOUND, CONFLICT, UNREACHABLE = 0, 1, 2, 3, 4, 5, 6

EXIT_CODES: dict[str, int] = {
    errors.ValidationFailed.code: BAD_INPUT,
    "bad_input": BAD_INPUT,
    errors.PermissionDenied.code: NOT_ALLOWED,
    errors.Unauthenticated.code: NOT_ALLOWED,
    errors.NotFound.code: NOT_FOUND,
    errors.Conflict.code: CONFLICT,
    errors.InvalidTransition.code: CONFLICT,
    errors.PolicyViolation.code: CONFLICT,
    "unreachable": UNREACHABLE,
    "server_error": UNREACHABLE,
}

out = Console()
err = Console(stderr=True)


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"


class Failure(Exception):
    """An error already phrased for a person, with the code that picks the exit status."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def fail(error: Failure | errors.ConveyorError, fmt: Format = Format.TEXT) -> NoReturn:
    code = error.code
    message = error.message
    extra = error.extra if isinstance(error, Failure) else error.details
    if fmt == Format.JSON:
        sys.stderr.write(
            json.dumps({"error": {"code": code, "message": message, **extra}}, default=str) + "\n"
        )
    else:
        err.print(message, markup=False, highlight=False, soft_wrap=True)
        for problem in extra.get("problems", []) or []:
            if isinstance(problem, dict) and len(extra.get("problems", [])) > 1:
                line = f"line {problem['line']}: " if problem.get("line") else ""
                where = f"{problem.get('path')}: " if problem.get("path") else ""
                err.print(
                    f"  - {line}{where}{problem.get('message')}", markup=False, highlight=False
                )
    raise typer.Exit(EXIT_CODES.get(code, FAILED if code == "failed" else UNREACHABLE))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def say(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)
