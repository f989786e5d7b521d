"""Ending a queued deployment without running it: for tests about what a deployment's end
shows (the dashboard, moves, approvals, retention), where running the engine is tested
elsewhere. The deployment and its task take the state, and the dashboard's cells (the
project's and its channel's) follow by the server's own rule (``runs.project``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from conveyor.domain.runtime import DeploymentState, TaskState
from conveyor.services.core import Caller, Services
from conveyor.store import runs
from conveyor.store import tables as t


async def end(
    services: Services,
    caller: Caller,
    queued: Any,
    version: str,
    state: TaskState = TaskState.SUCCESS,
) -> None:
    """``queued``: what ``deployments.deploy`` answered."""
    d, r = t.deployments.c, t.releases.c
    async with services.tx(caller) as tx:
        row = (
            await tx.session.execute(
                select(d.id, d.release_id, d.project_id, d.environment_id, r.channel)
                .join(t.releases, r.id == d.release_id)
                .where(d.id == queued.deployment_id)
            )
        ).one()
        await tx.session.execute(
            update(t.deployments).where(d.id == row.id).values(state=state.value)
        )
        await tx.session.execute(
            update(t.tasks).where(t.tasks.c.id == queued.task_id).values(state=state.value)
        )
        change = DeploymentState(row.id, row.release_id, version, queued.task_id, state)
        await runs.project(
            tx.session,
            tx.now,
            row.project_id,
            row.environment_id,
            row.channel,
            change,
            sqlite=services.is_sqlite,
        )
