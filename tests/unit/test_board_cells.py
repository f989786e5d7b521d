"""The dashboard board prints its cells with autoescape off (the page's largest cost was
escaping 3,000 cells field by field), so every field of a cell must come escaped."""

from __future__ import annotations

from dataclasses import fields

from conveyor.web.pages import TEMPLATES
from conveyor.web.routes.dashboard import _shown

HOSTILE = '<script>alert("x")</script>\'&'


def test_every_field_of_a_cell_is_escaped() -> None:
    cell = _shown(
        "p",
        {
            "release": HOSTILE,
            "state": HOSTILE,
            "task": "ServerTasks-" + HOSTILE,
            "completed": "2026-11-30T10:00:00+00:00",
        },
    )
    assert cell is not None
    for field in fields(cell):
        value = getattr(cell, field.name)
        assert value is None or not any(c in value for c in "<>\"'"), (field.name, value)


def test_the_board_shows_a_hostile_version_as_text() -> None:
    cell = _shown("p", {"release": HOSTILE, "state": "success", "task": None, "completed": None})
    board = {
        "environments": ["Dev"],
        "groups": [{"group": "G", "projects": [{"name": "P", "slug": "p", "cells": [cell]}]}],
    }
    html = TEMPLATES.get_template("_board.html").render(board=board)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
