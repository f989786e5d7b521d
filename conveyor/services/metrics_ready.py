"""Readiness: the database answers, and its schema is the one this version was built for."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from sqlalchemy import text

from conveyor.services.core import Services
from conveyor.store.db import head_revision

log = logging.getLogger("conveyor.health")

# A readiness probe must answer before the load balancer's own timeout does.
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    schema: str | None = None
    expected: str | None = None


@functools.cache
def expected_schema() -> str | None:
    """The newest migration this version ships (read once: it cannot change while running)."""
    return head_revision()


async def _current(services: Services) -> str | None:
    async with services.read() as session:
        try:
            found = await session.execute(text("SELECT version_num FROM alembic_version"))
        except Exception as exc:
            if "alembic_version" in str(exc):  # reachable, but never initialised
                return None
            raise
        rows = [str(r[0]) for r in found]
    return rows[0] if len(rows) == 1 else None


async def readiness(services: Services) -> Readiness:
    """Ready when the database answers within ``TIMEOUT_SECONDS`` and its migrations are at the
    head this version ships; otherwise not, with the reason (no connection details in it)."""
    expected = expected_schema()
    try:
        current = await asyncio.wait_for(_current(services), TIMEOUT_SECONDS)
    except TimeoutError:
        return Readiness(False, f"the database did not answer within {TIMEOUT_SECONDS:.0f} s")
    except Exception as exc:
        log.warning("readiness: the database cannot be reached: %s", exc)
        return Readiness(
            False,
            f"the database cannot be reached ({type(exc).__name__}); the server's log says why",
            expected=expected,
        )
    if current is None:
        return Readiness(
            False,
            "the database is not initialised: run `conveyor admin init`",
            expected=expected,
        )
    if current != expected:
        return Readiness(
            False,
            f"the database schema is at migration {current}, this version needs {expected}: "
            "run `conveyor admin init` (an upgrade), or run the version that matches it",
            current,
            expected,
        )
    return Readiness(True, "the database answers and its schema is current", current, expected)
