"""Masking: sensitive values never leave the engine in clear, in a log line or anything stored.

A sensitive value is replaced with ``********`` wherever it appears. A script sees a multi-line
value (a PEM key, a certificate) whole but prints it line by line, and the log is read line by
line, so each line of such a value is a secret of its own as well: long enough lines are masked
wherever they appear. Short lines are left alone (``-----``, ``}``, a blank line), or masking
would garble every log that prints a brace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "********"
# Values shorter than this are not masked: masking "a" or "1" would garble every log line.
MIN_MASKED = 3
# A line of a multi-line value is masked on its own only from this length (after trimming
# whitespace): a PEM body line is 64 characters, a closing brace or "-----" is not a secret.
MIN_MASKED_LINE = 8


def _fragments(value: str) -> set[str]:
    """What to look for: the value (trimmed, so a key's final newline stays in the text) and
    each long enough line of it."""
    trimmed = value.strip()
    found = {trimmed if len(trimmed) >= MIN_MASKED else value}
    lines = value.splitlines()
    if len(lines) > 1:
        found |= {line.strip() for line in lines if len(line.strip()) >= MIN_MASKED_LINE}
    return {f for f in found if len(f) >= MIN_MASKED}


class Masker:
    """Replaces every sensitive value, and every long line of a multi-line one, with ********."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.values = frozenset(s for s in secrets if len(s) >= MIN_MASKED)
        fragments: set[str] = set()
        for value in self.values:
            fragments |= _fragments(value)
        # Longest first, so a secret that contains another (or one of its lines) is masked whole.
        ordered = sorted(fragments, key=lambda f: (-len(f), f))
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

    def reveals(self, text: str) -> bool:
        """Whether ``text`` holds a sensitive value (or a line of one) and so must not be stored
        in clear."""
        return bool(self._pattern and self._pattern.search(text))

    def with_more(self, secrets: Iterable[str]) -> Masker:
        return Masker(self.values | set(secrets))
