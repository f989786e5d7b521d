"""The choices a new release offers: for each package step the feed's versions, for each
``deploy_release`` step the child project's releases; the highest of each is preselected, which
is what creating a release without a choice picks (services/releases.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from conveyor.domain.versions import Version

# A select with more options than this is no help; the rest are counted, and any version may
# still be given by the CLI or the API.
MOST_OFFERED = 50


@dataclass(frozen=True)
class Choice:
    step: str
    name: str  # the package id or the child project
    options: tuple[str, ...]  # highest first
    selected: str | None  # the highest, or None when there is nothing to choose
    more: int = 0  # lower versions not offered


def choice(step: str, name: str, versions: Iterable[str], most: int = MOST_OFFERED) -> Choice:
    ordered = sorted(versions, key=Version, reverse=True)
    return Choice(
        step=step,
        name=name,
        options=tuple(ordered[:most]),
        selected=ordered[0] if ordered else None,
        more=max(0, len(ordered) - most),
    )
