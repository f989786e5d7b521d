"""Release and package versions: parse them and put them in one total order.

Accepted (docs/deployments.md, as Octopus accepts): one to four numbers (``1``, ``1.2``,
``1.2.3``, ``1.2.3.4``) with SemVer 2's optional pre-release and build metadata (``1.2.3-beta.1``,
``1.2.3+build.7``). Missing numeric parts count as 0, so
``1.2.3`` and ``1.2.3.0`` have the same precedence and can never both be "the highest".
Leading zeros are refused, as SemVer requires: ``0.0.01`` next to ``0.0.1`` would be two
texts for one version (Octopus crashed on exactly that, OctopusDeploy/Issues#5886).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from conveyor.domain.errors import ValidationFailed

EXAMPLE = "use one to four numbers, like 1.2.3, 1.2, 1.2.3.4 or 1.2.3-beta.1"
# The width of every version column (releases, packages, the dashboard).
MAX_LENGTH = 100

_NUMBER = r"(?:0|[1-9][0-9]*)"
_IDENTIFIER = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_PATTERN = re.compile(
    rf"(?P<release>{_NUMBER}(?:\.{_NUMBER}){{0,3}})"
    rf"(?:-(?P<pre>{_IDENTIFIER}(?:\.{_IDENTIFIER})*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_LEADING_ZERO = re.compile(r"(?:^|[.+-])(0[0-9]+)(?=$|[.+-])")

# Numeric identifiers sort below alphanumeric ones (SemVer 2, rule 11.4.3).
_PreKey = tuple[tuple[int, int, str], ...]


@dataclass(frozen=True, eq=False)
class Version:
    """A parsed version; compares and hashes by precedence, never by its text."""

    text: str
    release: tuple[int, ...] = field(init=False, repr=False)
    prerelease: tuple[str, ...] = field(init=False, repr=False)
    build: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.text) > MAX_LENGTH:
            raise ValidationFailed(
                f"a version is at most {MAX_LENGTH} characters; this one has {len(self.text)}"
            )
        match = _PATTERN.fullmatch(self.text)
        if match is None:
            raise ValidationFailed(_complaint(self.text))
        pre = match["pre"]
        object.__setattr__(self, "release", tuple(int(p) for p in match["release"].split(".")))
        object.__setattr__(self, "prerelease", tuple(pre.split(".")) if pre else ())
        object.__setattr__(self, "build", match["build"] or "")

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @property
    def _key(self) -> tuple[tuple[int, ...], int, _PreKey]:
        padded = self.release + (0,) * (4 - len(self.release))
        # A release (1) outranks every pre-release (0) of the same numbers.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return padded, 0 if self.prerelease else 1, pre

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __le__(self, other: Version) -> bool:
        return self._key <= other._key

    def __gt__(self, other: Version) -> bool:
        return self._key > other._key

    def __ge__(self, other: Version) -> bool:
        return self._key >= other._key

    def __str__(self) -> str:
        return self.text


def _complaint(text: str) -> str:
    # Build metadata may have leading zeros; only the numbers and pre-release may not.
    zero = _LEADING_ZERO.search(text.split("+", 1)[0])
    why = f"{zero[1]} has a leading zero; " if zero else ""
    return f'version "{text}" is not valid: {why}{EXAMPLE}'


def parse_version(text: str) -> Version:
    """Parse ``text`` or raise ``ValidationFailed`` naming it and showing valid examples."""
    return Version(text)


def is_valid_version(text: str) -> bool:
    try:
        Version(text)
    except ValidationFailed:
        return False
    return True


def highest(versions: Iterable[str]) -> str | None:
    """The version of highest precedence (the first of equals), or None for none at all."""
    best: Version | None = None
    for text in versions:
        candidate = Version(text)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best.text


def next_version(latest: str | None) -> str:
    """The version to give a new release after ``latest``.

    A pre-release is followed by its own release (``1.0.0-beta.1`` -> ``1.0.0``); otherwise
    the last number written is bumped (``1.2.3.4`` -> ``1.2.3.5``). Build metadata is dropped.
    """
    if latest is None:
        return "0.0.1"
    version = Version(latest)
    numbers = list(version.release)
    if not version.is_prerelease:
        numbers[-1] += 1
    return ".".join(str(n) for n in numbers)
