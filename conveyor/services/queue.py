"""The task queue: which node runs which task, and taking over from nodes that died.

Nodes claim runnable tasks (the oldest whose project and environment are free), renew the
leases of the tasks they run, and take over the tasks of nodes whose leases expired. The rows
are written by `conveyor.store.runs` (the runtime's one writer); what a task does once claimed
goes through `conveyor.services.execution`, every write fenced by the claim's lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain.runtime import Lease
from conveyor.services.core import Services
from conveyor.store import runs
from conveyor.store.runs import Renewal

__all__ = ["STOPPED", "Renewal", "claim", "claim_many", "let_go", "recover", "renew"]

STOPPED = "the server stopped while this step was running"


async def claim(services: Services, node: str, lease: timedelta) -> Lease | None:
    """Take the oldest runnable task whose project and environment are free; None if none."""
    claimed = await claim_many(services, node, lease, 1)
    return claimed[0] if claimed else None


async def claim_many(services: Services, node: str, lease: timedelta, limit: int) -> list[Lease]:
    """Take up to ``limit`` runnable tasks, oldest first, in one transaction (a node with many
    free slots, in a burst of 100 deployments, does not pay a transaction per task)."""
    async with services.write() as session:
        return await runs.claim(
            session, services.clock(), node, lease, limit, sqlite=services.is_sqlite
        )


async def renew(
    services: Services, node: str, leases: Sequence[Lease], lease: timedelta
) -> Renewal:
    """Extend the leases this node holds; which tasks to cancel, and which it lost."""
    async with services.write() as session:
        return await runs.renew(session, services.clock(), node, leases, lease)


async def recover(services: Services, node: str, *, own_tasks_too: bool) -> list[int]:
    """Take over tasks whose node died: steps caught mid-run fail, the rest resumes (on
    whichever node claims them first: every node is told)."""
    async with services.write() as session:
        taken = await runs.take_over(
            session, services.clock(), node, STOPPED, own_tasks_too=own_tasks_too
        )
        if taken:
            await _tell_nodes(services, session)
        return taken


async def let_go(services: Services, leases: Sequence[Lease]) -> list[int]:
    """A stopping node's tasks still mid-step: released at once for the other nodes."""
    async with services.write() as session:
        taken = await runs.let_go(session, services.clock(), leases, STOPPED)
        if taken:
            await _tell_nodes(services, session)
        return taken


async def wake_forgotten_parents(services: Services) -> int:
    """Wake parents whose child ended unseen (`runs.wake_forgotten_parents`)."""
    async with services.write() as session:
        woken = await runs.wake_forgotten_parents(session)
        if woken:
            await _tell_nodes(services, session)
        return woken


async def _tell_nodes(services: Services, session: AsyncSession) -> None:
    """PostgreSQL delivers it at commit to every node that listens (`engine/node.py`)."""
    if not services.is_sqlite:
        await session.execute(text("NOTIFY conveyor_tasks"))
