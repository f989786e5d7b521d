"""A node of the task engine: claims work when a slot is free, keeps its leases alive, and
takes over the tasks of nodes that died.

Woken on commit (an in-process event; LISTEN/NOTIFY on PostgreSQL), with a slow poll as the
safety net. A task waiting for a person or a child holds no slot: the executor suspends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.domain.runtime import Lease
from conveyor.engine import sandbox
from conveyor.engine.delivery import Deliverer
from conveyor.engine.executor import Executor
from conveyor.engine.health import HealthChecks
from conveyor.services import gates, nodes, queue, retention_apply
from conveyor.services.core import Services
from conveyor.services.metrics import Metrics, finished_run

log = logging.getLogger("conveyor.engine")

POLL_SECONDS = 5.0
# A node renews its leases every tenth of the lease, and at least this often.
HEARTBEAT_SECONDS = 2.0
# Tasks claimed in one transaction when that many slots are free (a burst of deployments).
CLAIM_BATCH = 20
# Each node asks at least this often whether the retention job is due (docs/retention.md).
RETENTION_TICK_SECONDS = 60.0


def node_name() -> str:
    return os.environ.get("CONVEYOR_NODE_NAME") or socket.gethostname()


@dataclass(frozen=True)
class Running:
    """A task this node runs: the lease it claimed it under, and how to stop it."""

    lease: Lease
    cancel: asyncio.Event


class Node:
    def __init__(
        self,
        services: Services,
        slots: int | None = None,
        name: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.services = services
        # Durations of the deployments and steps that end here (GET /metrics).
        self.metrics = metrics
        self.name = name or node_name()
        self.slots = services.settings.task_slots if slots is None else slots
        self.lease = timedelta(seconds=services.settings.lease_seconds)
        self.heartbeat_seconds = min(HEARTBEAT_SECONDS, services.settings.lease_seconds / 10)
        self.executor = Executor(services, self.name)
        # Notifications from the outbox: sent by every node, each row by one.
        self.deliverer = Deliverer(services, self.name)
        # Target health: `conveyor target check` and the periodic check, with this node's runners.
        self.health = HealthChecks(services, self.executor.runners)
        self._wake = asyncio.Event()
        self._running: dict[int, Running] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self.services.wakers.append(self.wake)
        # Before any task runs: the data folder private, no run's leftovers from a crash (its
        # script files may hold secrets), and the sandbox probed once, so a step never waits.
        await asyncio.to_thread(sandbox.private_data_folder, self.services.settings)
        await asyncio.to_thread(self.executor.clean_work)
        found = await asyncio.to_thread(sandbox.status, self.services.settings)
        (log.info if found.usable else log.warning)("%s", found.describe())
        # Listed by `conveyor node list` from now on, idle or not.
        await nodes.heartbeat(self.services, self.name, self.slots, starting=True)
        if (shortfall := await nodes.connection_warning(self.services)) is not None:
            log.warning("%s", shortfall)
        # Tasks this node held before a restart cannot still be running: take them over now.
        recovered = await queue.recover(self.services, self.name, own_tasks_too=True)
        if recovered:
            log.warning("took over %d task(s) interrupted by a restart", len(recovered))
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="conveyor-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="conveyor-heartbeat"),
        ]
        if not self.services.is_sqlite:
            self._loops.append(asyncio.create_task(self._listen(), name="conveyor-listen"))
        self._loops.append(asyncio.create_task(self._gate_loop(), name="conveyor-gates"))
        if (every := self.services.settings.target_check_seconds) > 0:
            checks = self.health.run_periodically(every)
            self._loops.append(asyncio.create_task(checks, name="conveyor-health"))
        if (every := self.services.settings.retention_interval) > 0:
            pruning = self._retention_loop(every)
            self._loops.append(asyncio.create_task(pruning, name="conveyor-retention"))
        await self.deliverer.start()
        self.wake()

    async def stop(self) -> None:
        """Stop claiming; running tasks carry on to their next step and are handed over there
        (any node, or this one restarted, continues them). A step still running after the
        grace period is stopped and handed over as interrupted, as after a crash, but at once
        instead of when its lease expires."""
        self._stopping = True
        if self.wake in self.services.wakers:
            self.services.wakers.remove(self.wake)
        await self.deliverer.stop()
        heartbeat = [loop for loop in self._loops if loop.get_name() == "conveyor-heartbeat"]
        for loop in self._loops:
            if loop not in heartbeat:  # leases stay renewed while the tasks wind down
                loop.cancel()
        self.executor.draining = True
        jobs = set(self._jobs)
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=self.services.settings.stop_grace_seconds)
            if late:
                leases = [running.lease for running in self._running.values()]
                for job in late:
                    job.cancel()  # its processes are stopped (process group, SIGTERM then KILL)
                await asyncio.wait(late, timeout=30)
                with contextlib.suppress(Exception):
                    let_go = await queue.let_go(self.services, leases)
                    log.warning(
                        "stopping: %d task(s) interrupted mid-step, handed over", len(let_go)
                    )
        for loop in heartbeat:
            loop.cancel()
        # What the tasks logged last (a task cut short by the grace period too) is written.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.executor.logs.close(), timeout=10)
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        for runner in self.executor.runners.values():
            runner.close()  # kept SSH connections end now, not when their idle time runs out

    async def _claim_loop(self) -> None:
        while not self._stopping:
            # Cleared before claiming, not after: a wake-up that comes while a claim runs (its
            # commit not yet seen by it) makes the next round claim again instead of being lost.
            self._wake.clear()
            try:
                while len(self._running) < self.slots:
                    free = min(self.slots - len(self._running), CLAIM_BATCH)
                    claimed = await queue.claim_many(self.services, self.name, self.lease, free)
                    for lease in claimed:
                        self._launch(lease)
                    if len(claimed) < free:
                        break
            except Exception:
                log.exception("claiming tasks failed; trying again shortly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=POLL_SECONDS)

    def _launch(self, lease: Lease) -> None:
        running = Running(lease, asyncio.Event())
        # A task this node lost while frozen and claims again: the old run stops at its next
        # write (its lease is stale), and the new one is the one listed here.
        self._running[lease.task_id] = running

        async def job() -> None:
            began = self.services.clock()
            try:
                await self.executor.run(lease, running.cancel)
            finally:
                if self._running.get(lease.task_id) is running:
                    del self._running[lease.task_id]
                self.wake()  # a slot is free, and what this task did may unblock others
            await self._observe(lease.task_id, began)

        task = asyncio.create_task(job(), name=f"conveyor-task-{lease.task_id}")
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _observe(self, task_id: int, began: datetime) -> None:
        """The durations of what this run finished, for /metrics (never fails the task)."""
        if self.metrics is None:
            return
        try:
            run = await finished_run(self.services, task_id, began)
        except Exception:
            log.warning("task %s: reading its durations for the metrics failed", task_id)
            return
        if run is not None:
            self.metrics.observe_run(run)

    async def _gate_loop(self) -> None:
        """Held deployments are looked at again every few seconds: a window opens, a start
        time or a freeze passes, an approval expires (an approval itself acts at once)."""
        while True:
            try:
                if await gates.reevaluate(self.services):
                    self.wake()
            except Exception:
                log.exception("checking held deployments failed; trying again")
            await asyncio.sleep(self.services.settings.gate_check_seconds)

    async def _retention_loop(self, every: float) -> None:
        """Retention (docs/retention.md): every node asks now and then; the one that claims the
        job's lease applies the policies, about once per interval across the cluster."""
        while True:
            await asyncio.sleep(min(every, RETENTION_TICK_SECONDS))
            try:
                await retention_apply.run_if_due(self.services, self.name)
            except Exception:
                log.exception("applying the retention policies failed; trying again later")

    async def _heartbeat_loop(self) -> None:
        while True:  # until stop() cancels it, after the tasks wound down
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await nodes.heartbeat(self.services, self.name, self.slots)
                leases = [running.lease for running in self._running.values()]
                renewal = await queue.renew(self.services, self.name, leases, self.lease)
                for task_id in renewal.lost:
                    log.warning(
                        "task %s: this node lost the lease (it stopped renewing for longer "
                        "than %s s); stopping it here",
                        task_id,
                        self.services.settings.lease_seconds,
                    )
                for task_id in renewal.cancel | renewal.lost:
                    running = self._running.get(task_id)
                    if running is not None:
                        running.cancel.set()
                if await queue.recover(self.services, self.name, own_tasks_too=False):
                    self.wake()
                if await queue.wake_forgotten_parents(self.services):
                    self.wake()
            except Exception:
                log.exception("heartbeat failed; trying again")

    async def _listen(self) -> None:
        """PostgreSQL LISTEN: another node (or this one) queued or resumed work."""
        import psycopg

        from conveyor.store.db import sync_url

        url = sync_url(self.services.settings.resolved_database_url).replace(
            "postgresql+psycopg://", "postgresql://"
        )
        while not self._stopping:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute("LISTEN conveyor_tasks")
                    async for _ in conn.notifies():
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("LISTEN connection lost; polling until it is back")
                await asyncio.sleep(POLL_SECONDS)

    def cancel_local(self, task_id: int) -> bool:
        """Cancel a task running here without waiting for the next heartbeat."""
        running = self._running.get(task_id)
        if running is None:
            return False
        running.cancel.set()
        return True
