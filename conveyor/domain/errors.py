"""One error taxonomy for the whole product.

Each error has a stable ``code``; the API maps codes to HTTP statuses in one place
(``conveyor/api/errors.py``) and the CLI maps them to exit codes in one place
(``conveyor/cli/output.py``). Nothing below ``api/`` raises HTTP exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with some input, located by a path of keys, names and indexes."""

    path: tuple[str | int, ...]
    message: str
    line: int | None = None

    @property
    def where(self) -> str:
        return render_path(self.path)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.where, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out

    def __str__(self) -> str:
        prefix = f"line {self.line}: " if self.line is not None else ""
        where = self.where
        return f"{prefix}{where}: {self.message}" if where else f"{prefix}{self.message}"


def render_path(path: tuple[str | int, ...]) -> str:
    """``("projects", "Database", "steps", 2)`` -> ``projects[Database].steps[2]``."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int) or (i > 0 and _is_collection(path[i - 1])):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


_COLLECTIONS = {
    "environments",
    "lifecycles",
    "project_groups",
    "projects",
    "targets",
    "users",
    "user_roles",
    "teams",
    "steps",
    "phases",
    "variables",
    "subscriptions",
}


def _is_collection(key: str | int) -> bool:
    return isinstance(key, str) and key in _COLLECTIONS


class ConveyorError(Exception):
    """Base of every error a user can cause or meet."""

    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(ConveyorError):
    code = "not_found"


class Conflict(ConveyorError):
    code = "conflict"


class PermissionDenied(ConveyorError):
    code = "permission_denied"


class Unauthenticated(ConveyorError):
    code = "unauthenticated"


class InvalidTransition(ConveyorError):
    code = "invalid_transition"


class PolicyViolation(ConveyorError):
    code = "policy_violation"


class ValidationFailed(ConveyorError):
    """Input that cannot be accepted; carries every problem found, not just the first."""

    code = "validation_failed"

    def __init__(self, problems: list[Problem] | Problem | str, message: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [Problem((), problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = problems
        if message is None:
            message = (
                str(problems[0])
                if len(problems) == 1
                else f"{len(problems)} problems: " + "; ".join(str(p) for p in problems)
            )
        super().__init__(message, problems=[p.as_dict() for p in problems])
