"""Reading plain data (YAML, JSON) into documents: one field at a time, every problem recorded
with its path, so a person fixes a file in one pass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from conveyor.domain.errors import Problem

Path = tuple[str | int, ...]
E = TypeVar("E")

# No stored text may hold NUL: PostgreSQL refuses it, and no person means to write it.
NUL = "\x00"
NUL_MESSAGE = "must not contain NUL characters"


class Reader:
    """Reads fields out of one mapping, recording a problem for each wrong or unknown field."""

    def __init__(self, data: Any, path: Path, problems: list[Problem], what: str) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        self.ok = isinstance(data, Mapping)
        self.data: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        if not self.ok:
            problems.append(Problem(path, f"expected a mapping describing {what}"))

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return name in self.data

    def problem(self, name: str | None, message: str) -> None:
        self.problems.append(Problem((*self.path, name) if name else self.path, message))

    def text(self, name: str, *, required: bool = False, default: str = "") -> str:
        value = self._get(name)
        if value is None:
            if required:
                self.problem(name, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.problem(name, "must be text")
            return default
        text = str(value)
        if NUL in text:
            self.problem(name, NUL_MESSAGE)
            return default
        if required and not text.strip():
            self.problem(name, "must not be empty")
        return text

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(name, "must be true or false")
            return default
        return value

    def integer(self, name: str, default: int | None = None, minimum: int = 0) -> int | None:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, "must be a whole number")
            return default
        if value < minimum:
            self.problem(name, f"must be at least {minimum}")
            return default
        return value

    def names(self, name: str) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.problem(name, "must be a list of names")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int | float) or not str(item):
                self.problems.append(Problem((*self.path, name, i), "must be a name"))
            elif NUL in str(item):
                self.problems.append(Problem((*self.path, name, i), NUL_MESSAGE))
            else:
                out.append(str(item))
        return tuple(out)

    def choice(self, name: str, enum: type[E], default: E) -> E:
        value = self._get(name)
        if value is None:
            return default
        try:
            return enum(str(value).lower().replace("-", "_").replace(" ", "_"))  # type: ignore[call-arg]
        except ValueError:
            options = ", ".join(str(getattr(m, "value", m)) for m in enum)  # type: ignore[attr-defined]
            self.problem(name, f'"{value}" is not one of: {options}')
            return default

    def mapping(self, name: str) -> tuple[tuple[str, str], ...]:
        value = self._get(name)
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            self.problem(name, "must be a mapping of names to values")
            return ()
        out = []
        for k, v in value.items():
            if v is None or isinstance(v, list | Mapping):
                self.problems.append(Problem((*self.path, name, str(k)), "must be text"))
                continue
            if NUL in str(k) or NUL in scalar_text(v):
                self.problems.append(Problem((*self.path, name, str(k)), NUL_MESSAGE))
                continue
            out.append((str(k), scalar_text(v)))
        return tuple(out)

    def items(self, name: str) -> list[tuple[Path, Any]]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(name, "must be a list")
            return []
        return [((*self.path, name, i), item) for i, item in enumerate(value)]

    def raw(self, name: str) -> Any:
        return self._get(name)

    def finish(self, allowed: set[str] | None = None) -> None:
        known = self.seen | (allowed or set())
        for name in self.data:
            if name not in known:
                expected = ", ".join(sorted(known))
                self.problem(str(name), f"is not a known field here (expected one of: {expected})")


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
