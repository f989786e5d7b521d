"""Structured input: the answers a person gives with an approval (a change ticket, a choice).

Fields are declared on an approval check or a manual intervention step
(``conveyor.domain.documents.InputField``); ``check_answers`` validates what a person sent
against them, all problems at once, and returns the values to store. Patterns are the
configuration's regular expressions, run on short answers only (``MAX_ANSWER``) so that no
pattern can take long on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from conveyor.domain.documents import InputField, key
from conveyor.domain.errors import Problem, ValidationFailed

MAX_ANSWER = 200
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def field_problems(
    fields: Sequence[InputField],
    path: tuple[str | int, ...],
    reserved: Iterable[str] = (),
) -> list[Problem]:
    """What is wrong with a list of field declarations (names, patterns, choices); names in
    ``reserved`` are taken by built-in variables of the same place."""
    problems: list[Problem] = []
    seen: set[str] = set()
    taken = {key(r): r for r in reserved}
    for i, f in enumerate(fields):
        here = (*path, i)
        if not NAME.match(f.name):
            problems.append(
                Problem(
                    (*here, "name"),
                    "must start with a letter and hold only letters, digits and _ "
                    "(it becomes a variable name)",
                )
            )
        if key(f.name) in taken:
            problems.append(
                Problem((*here, "name"), f'"{f.name}" is taken by a built-in variable: rename it')
            )
        if key(f.name) in seen:
            problems.append(Problem((*here, "name"), f'"{f.name}" is asked twice'))
        seen.add(key(f.name))
        if f.pattern and f.choices:
            problems.append(Problem(here, "give either a pattern or choices, not both"))
        if f.pattern:
            try:
                re.compile(f.pattern)
            except re.error as exc:
                problems.append(Problem((*here, "pattern"), f"is not a regular expression: {exc}"))
        if len(set(f.choices)) != len(f.choices):
            problems.append(Problem((*here, "choices"), "lists a choice twice"))
    return problems


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["Ticket=CHG-1", …]`` (the CLI's ``--field NAME=VALUE``) -> a mapping."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValidationFailed(Problem(("field",), f'"{pair}" is not NAME=VALUE'))
        out[name.strip()] = value
    return out


def check_answers(fields: Sequence[InputField], answers: Mapping[str, str]) -> dict[str, str]:
    """The answers to store, by field name as declared; every problem at once."""
    by_key = {key(f.name): f for f in fields}
    problems: list[Problem] = []
    for name in answers:
        if key(name) not in by_key:
            asked = ", ".join(f.name for f in fields) or "nothing"
            problems.append(Problem(("fields", name), f"is not asked here (asked: {asked})"))
    out: dict[str, str] = {}
    given = {key(n): v for n, v in answers.items()}
    for f in fields:
        value = given.get(key(f.name))
        value = value.strip() if isinstance(value, str) else None
        here = ("fields", f.name)
        if not value:
            if f.required:
                problems.append(Problem(here, f"is required: {describe(f)}"))
            continue
        if len(value) > MAX_ANSWER:
            problems.append(Problem(here, f"is longer than {MAX_ANSWER} characters"))
            continue
        if f.choices and value not in f.choices:
            problems.append(Problem(here, f"must be one of {', '.join(f.choices)}"))
            continue
        if f.pattern and not re.fullmatch(f.pattern, value):
            problems.append(Problem(here, f"must match {f.pattern}"))
            continue
        out[f.name] = value
    if problems:
        raise ValidationFailed(problems)
    return out


def describe(f: InputField) -> str:
    """What a person is asked, in one line."""
    label = f.label or f.name
    if f.choices:
        return f"{label} (one of {', '.join(f.choices)})"
    if f.pattern:
        return f"{label} (matching {f.pattern})"
    return label
