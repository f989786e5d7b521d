"""A server's services with mail configured (a real SMTP server of the test) and a running
engine node, for the notification tests; and helpers to drive deployments in-process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from conveyor.engine.node import Node
from conveyor.services import deliveries, deployments, releases, tasks
from conveyor.services.core import Caller, Services, bootstrap
from conveyor.services.users import initialise
from conveyor.settings import Settings
from conveyor.store import tables as t
from tests.receivers import Mailbox, eventually

BASE_URL = "https://conveyor.octopetshop.example"


@asynccontextmanager
async def notifying(
    database_url: str, tmp_path: Path, mailbox: Mailbox, **overrides: Any
) -> AsyncIterator[Services]:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "run_engine": False,
        "smtp_host": "127.0.0.1",
        "smtp_port": mailbox.port,
        "smtp_from": "conveyor@octopetshop.example",
        "public_url": BASE_URL,
        "delivery_backoff_seconds": 0.05,
        "delivery_attempts": 5,
        "insecure_fast_password_hashing": True,
        # The receivers listen on 127.0.0.1: an administrator allows webhooks to reach it.
        "allow_private_webhooks": True,
    } | overrides
    services = bootstrap(Settings(**values))
    await initialise(services)
    node = Node(services, slots=6, name=f"notify-{os.getpid()}")
    await node.start()
    try:
        yield services
    finally:
        await node.stop()
        await services.close()


async def ended(services: Services, caller: Caller, task: str, *ends: str) -> dict[str, Any]:
    """The task once its state is one of ``ends`` (default: finished or waiting)."""
    ends = ends or ("success", "failed", "canceled", "timed_out", "waiting")

    async def state() -> dict[str, Any] | None:
        result = await tasks.get_task(services, caller, task)
        return result if result["state"] in ends else None

    for _ in range(600):
        result = await state()
        if result is not None:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task} never reached {ends}")


async def deploy(
    services: Services, caller: Caller, project: str, environment: str, version: str | None = None
) -> str:
    if version is None:
        version = (await releases.create_release(services, caller, project)).version
    queued = await deployments.deploy(services, caller, project, version, environment)
    return str(queued.as_dict()["task"])


async def quiet(services: Services) -> None:
    """Until no task is queued or running (automatic deployments included)."""
    for _ in range(600):
        async with services.read() as session:
            busy = (
                await session.execute(
                    select(t.tasks.c.id).where(t.tasks.c.state.in_(("queued", "executing")))
                )
            ).first()
        if busy is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("tasks are still running")


async def delivery_rows(services: Services) -> list[Any]:
    async with services.read() as session:
        return list((await session.execute(select(t.deliveries).order_by(t.deliveries.c.id))).all())


async def settled(services: Services, admin: Caller, count: int) -> list[dict[str, Any]]:
    """The deliveries once at least ``count`` exist and none is pending."""

    async def check() -> list[dict[str, Any]] | None:
        rows = await deliveries.list_deliveries(services, admin)
        done = len(rows) >= count and all(r["state"] != "pending" for r in rows)
        return rows if done else None

    for _ in range(600):
        rows = await check()
        if rows is not None:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries did not settle: {await delivery_rows(services)}")


__all__ = ["BASE_URL", "deploy", "ended", "eventually", "notifying", "quiet", "settled"]
