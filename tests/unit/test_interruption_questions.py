"""A manual step's questions: the lines the web step form edits, and which answers are kept."""

from __future__ import annotations

import pytest

from conveyor.domain.documents import InputField
from conveyor.domain.errors import ValidationFailed
from conveyor.domain.interruptions import Result
from conveyor.services.interruptions import check_fields, declared
from conveyor.web.stepform import parse_questions, questions_text

DECLARED = [
    {"name": "ChangeTicket", "label": "Change ticket", "pattern": "^CHG-[0-9]+$"},
    {"name": "Risk", "choices": ["low", "high"], "description": "How bad it could go"},
    {"name": "Only", "choices": ["yes"]},
    {"name": "Size", "pattern": "[0-9]{1,3}"},
    {"name": "Either", "pattern": "^(a|b)$"},
    {"name": "Remark", "required": False},
]


def test_the_lines_read_back_as_the_same_questions() -> None:
    text = questions_text(DECLARED)
    assert text.splitlines() == [
        "ChangeTicket | ^CHG-[0-9]+$ | Change ticket",
        "Risk | low, high",
        "Only | yes,",  # one choice stays a choice
        "Size | ^[0-9]{1,3}",  # a comma would read as choices: ^ marks the pattern
        "Either | ^(a|b)$",
        "Remark? |",
    ]
    again = parse_questions(text, DECLARED)
    # The description (config as code only) is kept by name; the same answers match.
    assert again[3] == {"name": "Size", "pattern": "^[0-9]{1,3}"}
    assert [f for i, f in enumerate(again) if i != 3] == [
        f for i, f in enumerate(DECLARED) if i != 3
    ]


def test_blank_and_comment_lines_are_skipped_and_bad_lines_named() -> None:
    assert parse_questions("\r\n# asked of approvers\r\nTicket | ^T-1$\r\n", []) == [
        {"name": "Ticket", "pattern": "^T-1$"}
    ]
    with pytest.raises(ValidationFailed) as bad:
        parse_questions("Ticket|^T$\nA | b | c | d\n | x", [])
    assert [str(p) for p in bad.value.problems] == [
        "fields: line 1: write NAME | PATTERN or CHOICES | LABEL, with spaces around each |",
        "fields: line 2: more than 3 columns; write NAME | PATTERN or CHOICES | LABEL, "
        "with spaces around each |",
        "fields: line 3: write NAME | PATTERN or CHOICES | LABEL, with spaces around each |",
    ]


def test_a_proceed_answers_every_required_question_an_abort_none() -> None:
    fields = declared({"fields": DECLARED[:2] + DECLARED[-1:]})
    assert fields[0] == InputField("ChangeTicket", "Change ticket", "^CHG-[0-9]+$")
    with pytest.raises(ValidationFailed, match="2 problems"):
        check_fields(fields, Result.PROCEED, {})
    assert check_fields(fields, Result.PROCEED, {"ChangeTicket": "CHG-1", "Risk": "low"}) == {
        "ChangeTicket": "CHG-1",
        "Risk": "low",
        "Remark": "",
    }
    assert check_fields(fields, Result.ABORT, {}) == {"ChangeTicket": "", "Risk": "", "Remark": ""}
    with pytest.raises(ValidationFailed, match="must match"):
        check_fields(fields, Result.ABORT, {"ChangeTicket": "nope"})
    # Nothing asked and nothing given (a guided failure): nothing to keep; given: refused.
    assert check_fields((), Result.RETRY, {}) is None
    with pytest.raises(ValidationFailed, match="is not asked here"):
        check_fields((), Result.RETRY, {"X": "1"})
