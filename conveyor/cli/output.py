"""How the CLI speaks: exit codes, errors as one sentence (or JSON), tables and JSON output."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console, ConsoleDimensions

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


# To a pipe or a file (no terminal, no COLUMNS), a table row is one line however long, as ps
# and kubectl print: a row found with grep is whole, and no cell wraps mid-word at 80 columns.
PIPE_WIDTH = 4096


def _columns_given() -> bool:
    """COLUMNS as Rich reads it: a number, or not given."""
    return os.environ.get("COLUMNS", "").isdigit()


class _Console(Console):
    """A console that reads its width (COLUMNS, the terminal's) when it prints, not when this
    module is imported: a process forked after the import (tests/e2e/preloaded.py) has its
    own environment and streams."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._width = None


class _Out(_Console):
    """Standard output. A table that must not be cut (``remote.CopyableTable``, wider than the
    terminal when its ids need it) is printed whole, not cropped at the terminal's width."""

    @property
    def size(self) -> ConsoleDimensions:
        found = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal and not _columns_given():
            return ConsoleDimensions(PIPE_WIDTH, found.height)
        return found  # type: ignore[no-any-return]

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if any(getattr(o, "never_cropped", False) for o in objects):
            kwargs.setdefault("crop", False)
        super().print(*objects, **kwargs)


out = _Out()
err = _Console(stderr=True)


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
        header, items = _listed(extra)
        # One sentence; several problems (or refused changes) as a list, one per line.
        for text in [header, *(f"  - {item}" for item in items)] if items else [message]:
            err.print(text, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_CODES.get(code, FAILED if code == "failed" else UNREACHABLE))


def _listed(extra: dict[str, Any]) -> tuple[str, list[str]]:
    """A heading and the items, when an error carries more than one problem or refusal."""
    problems = [p for p in extra.get("problems") or [] if isinstance(p, dict)]
    if len(problems) > 1:
        items = []
        for problem in problems:
            line = f"line {problem['line']}: " if problem.get("line") else ""
            where = f"{problem['path']}: " if problem.get("path") else ""
            items.append(f"{line}{where}{problem.get('message')}")
        return f"{len(items)} problems:", items
    refused = [str(r) for r in extra.get("refused") or []]
    if len(refused) > 1:
        return f"{len(refused)} changes are not allowed:", refused
    return "", []


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def say(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)
