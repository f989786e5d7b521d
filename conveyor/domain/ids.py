"""Public ids: the one parser for ``ServerTasks-12``, ``Projects-3``, ``Events-120``.

A public id is its kind's prefix, one hyphen and the row number written the one way Python
writes it: ASCII digits, no sign, no leading zero, no space. Anything else names no row, so
``Projects-7`` is not a task, ``ServerTasks--1`` is not ``ServerTasks-1``, and ``ServerTasks-٣``
(an Arabic-Indic digit, which ``str.isdigit`` accepts) is nothing. Numbers beyond the largest
row id a database column holds (64-bit) name no row either, instead of overflowing the query.
"""

from __future__ import annotations

import re

from conveyor.domain.errors import NotFound, ValidationFailed

# The largest value of a BIGINT (PostgreSQL) or INTEGER (SQLite) primary key.
MAX_ROW_ID = 2**63 - 1
_NUMBER = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)


def parse_number(text: str) -> int | None:
    """``"12"`` -> 12; ``None`` unless ``text`` is a row number a database can hold."""
    if not _NUMBER.fullmatch(text):
        return None
    number = int(text)
    return number if number <= MAX_ROW_ID else None


def parse_public_id(prefix: str, ref: str, *, bare: bool = False) -> int | None:
    """``parse_public_id("ServerTasks", "ServerTasks-12")`` -> 12, else ``None``.

    The prefix is compared without case (``servertasks-12`` is what a person types); with
    ``bare`` the number alone (``"12"``, the short form page addresses use) is accepted too.
    """
    head, hyphen, number = ref.partition("-")
    if hyphen and head.lower() == prefix.lower():
        return parse_number(number)
    return parse_number(ref) if bare else None


def is_well_formed(prefix: str, ref: str, *, bare: bool = False) -> bool:
    """Whether ``ref`` has the shape of an id of this kind, whatever the size of its number."""
    head, hyphen, number = ref.partition("-")
    if hyphen and head.lower() == prefix.lower():
        return bool(re.fullmatch(r"[1-9][0-9]*", number, re.ASCII))
    return bare and bool(re.fullmatch(r"[1-9][0-9]*", ref, re.ASCII))


def require_public_id(prefix: str, ref: str, noun: str, *, bare: bool = False) -> int:
    """The row number of ``ref``, or ``NotFound`` saying what an id of this kind looks like."""
    number = parse_public_id(prefix, ref, bare=bare)
    if number is not None:
        return number
    if is_well_formed(prefix, ref, bare=bare):
        raise NotFound(f"{noun} {ref} does not exist")
    raise NotFound(f"{_shown(ref)} is not {_article(noun)} {noun} id (they look like {prefix}-12)")


def require_cursor(prefix: str, ref: str, field: str) -> int:
    """A paging cursor (``before=``, ``after=``): its number, or ``ValidationFailed`` naming the
    parameter. A cursor beyond every row is still a valid position, so it is clamped."""
    number = parse_public_id(prefix, ref, bare=True)
    if number is not None:
        return number
    if is_well_formed(prefix, ref, bare=True):
        return MAX_ROW_ID
    raise ValidationFailed(
        f"{field}: {_shown(ref)} is not {_article(prefix)} {prefix} id (they look like "
        f"{prefix}-120)"
    )


def _shown(ref: str) -> str:
    """The text as a person can read it in a message: quoted, control characters escaped, short."""
    text = ref if len(ref) <= 60 else ref[:57] + "..."
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"
