"""An audit event's details as a person reads them: a before/after row per changed field
(nested documents flattened to paths such as ``phases[1].environments``), and the other facts
as "name: value", never raw JSON.

Sensitive values are masked when the event is written (``domain.diff``); a value under a name
that says it is a secret is masked here again, so that no page ever shows one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MASK = "********"
SECRET_WORDS = ("password", "secret", "private_key", "token", "api_key")
MOST_ROWS = 60


@dataclass(frozen=True)
class FieldRow:
    field: str
    before: str
    after: str


@dataclass(frozen=True)
class Readable:
    changes: list[FieldRow]
    facts: list[tuple[str, str]]
    more: int  # changed fields left out (past MOST_ROWS)


def readable(details: Any) -> Readable:
    if not isinstance(details, dict):
        return Readable([], [("details", _show("details", details))] if details else [], 0)
    rows: list[FieldRow] = []
    used: set[str] = set()
    fields = details.get("fields")
    if isinstance(fields, list) and all(isinstance(f, dict) and "field" in f for f in fields):
        used.add("fields")
        for f in fields:
            rows += _rows(str(f["field"]), f.get("before"), f.get("after"))
    before, after = details.get("before"), details.get("after")
    if isinstance(before, dict) or isinstance(after, dict):
        used |= {"before", "after"}
        if not rows:  # a created or deleted document: every field of it
            rows += _rows("", before if isinstance(before, dict) else None, after)
    facts = [
        (name, _snapshot(value) if name == "snapshot" else _show(name, value))
        for name, value in details.items()
        if name not in used and value not in (None, "", [], {})
    ]
    return Readable(rows[:MOST_ROWS], facts, max(0, len(rows) - MOST_ROWS))


def _snapshot(value: Any) -> str:
    """A process edit keeps the whole process (for the history page): say which version."""
    if isinstance(value, dict) and "version" in value:
        steps = value.get("steps")
        count = f", {len(steps)} steps" if isinstance(steps, list) else ""
        return f"process version {value['version']}{count} (see the project's history)"
    return _show("snapshot", value)


def _rows(path: str, before: Any, after: Any) -> list[FieldRow]:
    """The leaves that differ between two values, by path."""
    if isinstance(before, dict) or isinstance(after, dict):
        old = before if isinstance(before, dict) else {}
        new = after if isinstance(after, dict) else {}
        if before is not None and not isinstance(before, dict):
            return [FieldRow(path, _show(path, before), _show(path, after))]
        if after is not None and not isinstance(after, dict):
            return [FieldRow(path, _show(path, before), _show(path, after))]
        out: list[FieldRow] = []
        for name in dict.fromkeys([*old, *new]):
            out += _rows(f"{path}.{name}" if path else str(name), old.get(name), new.get(name))
        return out
    if _composite_list(before) or _composite_list(after):
        old_items = before if isinstance(before, list) else []
        new_items = after if isinstance(after, list) else []
        out = []
        for i in range(max(len(old_items), len(new_items))):
            out += _rows(
                f"{path}[{i}]",
                old_items[i] if i < len(old_items) else None,
                new_items[i] if i < len(new_items) else None,
            )
        return out
    if before == after:
        return []
    return [FieldRow(path, _show(path, before), _show(path, after))]


def _composite_list(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(v, dict | list) for v in value)


def _show(name: str, value: Any) -> str:
    if value is None:
        return ""
    last = name.rsplit(".", 1)[-1].lower()
    if any(word in last for word in SECRET_WORDS) and value not in ("", MASK, True, False):
        return MASK
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and not _composite_list(value):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)
