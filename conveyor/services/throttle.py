"""Counting password attempts in the database, so that the limits hold across parallel
requests, restarts and server nodes (the rule itself is ``conveyor.domain.throttling``).

An attempt is charged in a transaction of its own, committed before the password is checked:
the check of counters and the charge are one step under a lock, so twenty guesses sent at once
get five checks, not twenty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, text

from conveyor.domain import throttling
from conveyor.domain.errors import Unauthenticated
from conveyor.services.core import Services
from conveyor.store import tables as t

# Advisory lock key that makes "count, then charge" one step on PostgreSQL (SQLite has one
# writer already: the services' write lock).
ATTEMPT_LOCK = 7_010_005


class SignInThrottled(Unauthenticated):
    """Too many failed attempts: nothing is checked until ``retry_after`` seconds have passed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempt:
    """A charged attempt (``wait`` 0), or a refused one: ``wait`` seconds before trying again."""

    wait: int
    counters: tuple[throttling.Counter, ...]
    charge_ids: tuple[int, ...] = ()


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def charge(
    services: Services, counters: tuple[throttling.Counter, ...], now: datetime
) -> Attempt:
    """Charge an attempt to every counter, unless one of them is spent: then nothing is charged
    and the attempt says how long to wait."""
    async with services.write() as session:
        if not services.is_sqlite:
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ATTEMPT_LOCK})
        # The window is all that is kept.
        await session.execute(
            delete(t.sign_in_failures).where(t.sign_in_failures.c.at <= now - throttling.WINDOW)
        )
        wait = 0
        for counter in counters:
            recent = await _recent(session, counter, now)
            wait = max(wait, throttling.wait_seconds(counter, recent, now))
        if wait:
            return Attempt(wait, counters)
        result = await session.execute(
            insert(t.sign_in_failures).returning(t.sign_in_failures.c.id),
            [{"subject": c.subject, "at": now} for c in counters],
        )
        ids = tuple(int(i) for i in result.scalars().all())
    return Attempt(0, counters, ids)


@dataclass(frozen=True)
class Recording:
    """Whether the audit log records a refusal, and whether it is the last one it records from
    that address in the window (its message then says so)."""

    record: bool
    last: bool = False


async def recording(
    services: Services, counters: tuple[throttling.Counter, ...], now: datetime
) -> Recording:
    """Charge a refusal to ``counters`` (``throttling.refusals``) unless they are spent."""
    attempt = await charge(services, counters, now)
    if attempt.wait:
        return Recording(False)
    async with services.read() as session:
        counts = [len(await _recent(session, c, now)) >= c.most for c in counters]
    return Recording(True, last=any(counts))


def unrecorded_note(recorded: Recording) -> str:
    """What the last recorded refusal adds to its message."""
    if not recorded.last:
        return ""
    return (
        "; further refusals from this address are not recorded for "
        f"{throttling.in_words(int(throttling.WINDOW.total_seconds()))}"
    )


async def _recent(session: Any, counter: throttling.Counter, now: datetime) -> list[datetime]:
    rows = await session.execute(
        select(t.sign_in_failures.c.at)
        .where(
            t.sign_in_failures.c.subject == counter.subject,
            t.sign_in_failures.c.at > now - throttling.WINDOW,
        )
        .order_by(t.sign_in_failures.c.at.desc())
        .limit(counter.most)
    )
    return [_aware(at) for at in rows.scalars().all()]


async def refund(session: Any, attempt: Attempt) -> None:
    """The attempt succeeded: it counts against nothing, and the name's earlier failures from
    this address are forgiven (the address's and the name's elsewhere stay: they may be another
    person's guesses). Runs in the caller's transaction."""
    if attempt.charge_ids:
        await session.execute(
            delete(t.sign_in_failures).where(t.sign_in_failures.c.id.in_(attempt.charge_ids))
        )
    await session.execute(
        delete(t.sign_in_failures).where(
            t.sign_in_failures.c.subject == attempt.counters[0].subject
        )
    )
