"""Sign-in throttling: which counters an attempt is charged to, and how long to wait.

Every attempt is charged before its password is checked (so parallel guesses cannot overtake
the count); a successful one is refunded. Three counters, each over a sliding window:

- the address: many people may share one (an office behind NAT), so it gets the most attempts,
  and running out of them throttles that address only;
- the name from one address: the usual guesser, throttled after a few attempts; the owner of
  the name, signing in from anywhere else, is not affected;
- the name from every address: a cap on guessing spread over many addresses. Reaching it takes
  more addresses than one (each is capped lower), and it frees a place as the window moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = timedelta(minutes=5)
MAX_PER_ADDRESS = 20
MAX_PER_NAME_FROM_ADDRESS = 5
MAX_PER_NAME = 30
SUBJECT_MAX = 200
# Stands for the address when the caller's is not known (a call made inside the server).
UNKNOWN_ADDRESS = "-"


@dataclass(frozen=True)
class Counter:
    """One counter an attempt is charged to: its key and how many attempts a window allows."""

    subject: str
    most: int


def counters(name_key: str, address: str | None) -> tuple[Counter, ...]:
    """The counters of an attempt at ``name_key`` (the name's case-folded key) from ``address``;
    the first is the name-from-this-address counter (a success clears it)."""
    where = address or UNKNOWN_ADDRESS
    return (
        Counter(f"name-from:{where}:{name_key}"[:SUBJECT_MAX], MAX_PER_NAME_FROM_ADDRESS),
        Counter(f"name:{name_key}"[:SUBJECT_MAX], MAX_PER_NAME),
        Counter(f"ip:{where}"[:SUBJECT_MAX], MAX_PER_ADDRESS),
    )


# Refusals of anonymous callers that the audit log records per address in a window: sign-ins
# refused unchecked (throttled), CI token exchanges and webhook deliveries refused. Past it the
# caller is still answered, but not recorded again until the window moves: a flood of refusals
# must not flood the audit log, nor hold its hash chain's lock for every other writer.
MAX_RECORDED_REFUSALS = 20


def refusals(kind: str, address: str | None) -> tuple[Counter, ...]:
    """The counter of the recorded refusals of ``kind`` from ``address``."""
    subject = f"refused-{kind}:{address or UNKNOWN_ADDRESS}"[:SUBJECT_MAX]
    return (Counter(subject, MAX_RECORDED_REFUSALS),)


def wait_seconds(counter: Counter, recent: list[datetime], now: datetime) -> int:
    """Seconds until ``counter`` allows another attempt (0: now), given the times of its
    attempts inside the window, newest first (at most ``counter.most`` are needed)."""
    if len(recent) < counter.most:
        return 0
    # The oldest of the last ``most`` attempts frees a place when it leaves the window.
    free_at = recent[counter.most - 1] + WINDOW
    return max(1, int((free_at - now).total_seconds()) + 1)


def in_words(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = -(-seconds // 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
