"""docs/deployments.md says what a version is; the parser must agree with every example it gives.

The docs once said "SemVer 2 or 4-part" while ``1.1`` and ``1`` were accepted: the rule is one
to four numbers (as Octopus accepts) with SemVer's optional pre-release and build metadata.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from conveyor.domain.errors import ValidationFailed
from conveyor.domain.versions import is_valid_version, next_version, parse_version

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployments.md"


def version_paragraph() -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("- its **version**")
    return text[start : text.index("\n- the **package version**", start)]


def test_the_docs_name_the_short_forms_the_parser_accepts() -> None:
    said = " ".join(version_paragraph().split())
    assert "one to four numbers" in said, said
    for short in ("1", "1.1", "1.2.3.4", "1.1-rc.2"):
        assert f"`{short}`" in said, short
        assert is_valid_version(short)
    assert "`1.01` is refused" in said
    with pytest.raises(ValidationFailed, match="one to four numbers"):
        parse_version("1.01")
    with pytest.raises(ValidationFailed):
        parse_version("1.2.3.4.5")  # five numbers: not a version


def test_the_documented_order_and_suggestions_hold() -> None:
    said = " ".join(version_paragraph().split())
    chain = re.search(r"one order: `([^`]+)`", said)
    assert chain, said
    versions = [parse_version(v.strip()) for v in chain[1].split("<")]
    assert all(a < b for a, b in itertools.pairwise(versions)), chain[1]
    for before, after in re.findall(r"`([^`]+)` → `([^`]+)`", said):
        assert next_version(before) == after, (before, after)
    assert parse_version("1.1") == parse_version("1.1.0")
    assert next_version(None) == "0.0.1" and "`0.0.1`" in said
