"""The dashboard board prints its cells as made (escaping 3,000 cells field by field in the
template was the page's largest cost), so every field of a cell must come escaped."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from conveyor.services.deployment_views import BoardCell
from conveyor.web.pages import TEMPLATES
from conveyor.web.routes.dashboard import _cell_html

HOSTILE = '<script>alert("x")</script>\'&'
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _cell(release: str, state: str) -> BoardCell:
    return BoardCell(release, state, 12, 34, datetime(2026, 11, 30, 10, 0, tzinfo=UTC), None)


def test_every_field_of_a_cell_is_escaped() -> None:
    html = _cell_html("p", _cell(HOSTILE, HOSTILE), NOW)
    assert "<script>" not in html
    # Only the cell's own markup: every tag is one the cell is made of.
    tags = set(re.findall(r"</?([a-z]+)", html))
    assert tags == {"td", "span", "a", "time"}, tags
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#x27;&amp;" in html


def test_a_cell_shows_its_release_state_and_time() -> None:
    html = _cell_html("web", _cell("1.2.3", "success"), NOW)
    assert 'class="cell cell-success"' in html
    assert '<a href="/projects/web/releases/1.2.3">1.2.3</a>' in html
    assert '<a class="state" href="/tasks/12">' in html and ">Success<" in html
    assert 'datetime="2026-11-30T10:00:00+00:00"' in html and "2 hours ago" in html
    assert "Not deployed" in _cell_html("web", None, NOW)


def test_the_board_shows_a_hostile_version_as_text() -> None:
    cells = _cell_html("p", _cell(HOSTILE, "success"), NOW)
    board = {
        "environments": ["Dev"],
        "groups": [{"group": "G", "projects": [{"name": "P", "slug": "p", "cells": cells}]}],
    }
    html = TEMPLATES.get_template("_board.html").render(board=board)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
