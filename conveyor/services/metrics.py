"""Prometheus metrics of one node (``GET /metrics``, docs/operations.md).

Two kinds:

- **observed here**, as things happen on this node: HTTP request latency by route template
  (never the raw path, so the number of series is bounded by the routes), and the durations of
  the deployments and steps that finished on this node;
- **read at scrape time** from the database, shared by every node and therefore the same on
  each: tasks by state (queued, held, executing, waiting for a person or a child), notification
  deliveries by channel and state, and each node's heartbeat age. One small query per kind, on
  indexed columns, reused for ``metrics_cache_seconds`` so that several Prometheus servers (or a
  tight scrape interval) cost the database nothing more.

One registry per app (no process-global state): tests run several apps in one process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from sqlalchemy import func, select

from conveyor import __version__
from conveyor.domain.runtime import StepState, TaskState
from conveyor.services.core import Services, utcnow
from conveyor.store import tables as t

__all__ = ["CONTENT_TYPE", "Metrics", "StepRun", "TaskRun", "finished_run"]

# Requests: from a cached page (ms) to a package upload (minutes).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
# Deployments and steps: from a skipped step to an hour-long migration.
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"
# Tasks that have not ended, by state; each state is always reported (0 when none).
OPEN_STATES = (TaskState.QUEUED, TaskState.EXECUTING, TaskState.WAITING)


@dataclass(frozen=True)
class StepRun:
    type: str
    state: str
    seconds: float


@dataclass(frozen=True)
class TaskRun:
    """A task as a run on this node left it: its state, and, if it ended, how long it took."""

    kind: str
    state: str
    seconds: float | None
    steps: tuple[StepRun, ...]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


async def finished_run(services: Services, task_id: int, since: datetime) -> TaskRun | None:
    """What a run of a task on this node, started at ``since``, finished: the steps that ended
    during it, and the task's own duration when it ended (a suspended task has none yet)."""
    async with services.read() as session:
        task = (
            await session.execute(
                select(
                    t.tasks.c.kind, t.tasks.c.state, t.tasks.c.started_at, t.tasks.c.completed_at
                ).where(t.tasks.c.id == task_id)
            )
        ).one_or_none()
        if task is None:
            return None
        rows = await session.execute(
            select(
                t.task_steps.c.type,
                t.task_steps.c.state,
                t.task_steps.c.started_at,
                t.task_steps.c.completed_at,
            ).where(t.task_steps.c.task_id == task_id, t.task_steps.c.completed_at >= since)
        )
        steps = tuple(
            StepRun(r.type, r.state, seconds)
            for r in rows
            if StepState(r.state).ended
            and (seconds := _seconds(r.started_at, r.completed_at)) is not None
        )
    ended = TaskState(task.state).ended
    seconds = _seconds(task.started_at, task.completed_at) if ended else None
    return TaskRun(task.kind, task.state, seconds, steps)


class Metrics:
    """The metrics of one node: a registry of its own, what it observes, and the scrape."""

    def __init__(self, cache_seconds: float = 5.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        info = Gauge(
            "conveyor_build_info", "This node's Conveyor version", ["version"], registry=registry
        )
        info.labels(version=__version__).set(1)
        self.http = Histogram(
            "conveyor_http_request_duration_seconds",
            "HTTP requests by method, route template and status code",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.deployments = Histogram(
            "conveyor_deployment_duration_seconds",
            "Deployments that ended on this node, from start to end (waiting included), by state",
            ["state"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.steps = Histogram(
            "conveyor_step_duration_seconds",
            "Deployment steps that ended on this node, by step type and state",
            ["type", "state"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.tasks = Gauge(
            "conveyor_tasks",
            "Tasks that have not ended, by state; reason: held (queued behind the environment's "
            "checks) or what a waiting task waits for (interruption, block, child)",
            ["state", "reason"],
            registry=registry,
        )
        self.deliveries = Gauge(
            "conveyor_notification_deliveries",
            "Notification deliveries (mail, webhooks) in the outbox, by channel and state",
            ["channel", "state"],
            registry=registry,
        )
        self.heartbeat_age = Gauge(
            "conveyor_node_heartbeat_age_seconds",
            "Seconds since each node's last heartbeat (a node past its lease is dead)",
            ["node"],
            registry=registry,
        )
        self.node_slots = Gauge(
            "conveyor_node_task_slots", "Task slots of each node", ["node"], registry=registry
        )
        self.database_up = Gauge(
            "conveyor_metrics_database_up",
            "1 when the last scrape could read the database, 0 when it could not",
            registry=registry,
        )
        self.cache_seconds = cache_seconds
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ observed here

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        self.http.labels(
            method if method in METHODS else "other", route or UNMATCHED, str(status)
        ).observe(seconds)

    def observe_run(self, run: TaskRun) -> None:
        for step in run.steps:
            self.steps.labels(step.type, step.state).observe(step.seconds)
        if run.seconds is not None and run.kind == "deploy":
            self.deployments.labels(run.state).observe(run.seconds)

    # ------------------------------------------------------------------ read at scrape time

    async def scrape(self, services: Services) -> bytes:
        """The text exposition; the database's part is read again once the cache is stale."""
        async with self._lock:
            fresh = self._read_at is not None and (
                time.monotonic() - self._read_at < self.cache_seconds
            )
            if not fresh:
                try:
                    await self._read(services)
                    self.database_up.set(1)
                except Exception:
                    # The node's own metrics are still worth having; readyz says what is wrong.
                    self.database_up.set(0)
                self._read_at = time.monotonic()
        return generate_latest(self.registry)

    async def _read(self, services: Services) -> None:
        c = t.tasks.c
        async with services.read() as session:
            tasks = (
                await session.execute(
                    select(c.state, c.held, c.waiting_on, func.count())
                    .where(c.state.in_([str(s) for s in OPEN_STATES]))
                    .group_by(c.state, c.held, c.waiting_on)
                )
            ).all()
            d = t.deliveries.c
            deliveries = (
                await session.execute(
                    select(d.channel, d.state, func.count()).group_by(d.channel, d.state)
                )
            ).all()
            nodes = (
                await session.execute(
                    select(t.nodes.c.name, t.nodes.c.slots, t.nodes.c.heartbeat_at)
                )
            ).all()
        self._set_tasks((r[0], r[1], r[2], r[3]) for r in tasks)
        self.deliveries.clear()
        for channel, state, count in deliveries:
            self.deliveries.labels(channel, state).set(count)
        now = utcnow()
        self.heartbeat_age.clear()
        self.node_slots.clear()
        for name, slots, heartbeat in nodes:
            if heartbeat.tzinfo is None:  # SQLite gives back naive UTC
                heartbeat = heartbeat.replace(tzinfo=now.tzinfo)
            self.heartbeat_age.labels(name).set(max((now - heartbeat).total_seconds(), 0.0))
            self.node_slots.labels(name).set(slots)

    def _set_tasks(self, rows: Iterable[tuple[str, bool, str | None, int]]) -> None:
        counts: dict[tuple[str, str], int] = {(str(s), ""): 0 for s in OPEN_STATES}
        for state, held, waiting_on, count in rows:
            if state == TaskState.QUEUED:
                reason = "held" if held else ""
            elif state == TaskState.WAITING:
                reason = waiting_on or ""
            else:
                reason = ""
            counts[(state, reason)] = counts.get((state, reason), 0) + count
        self.tasks.clear()
        for (state, reason), count in counts.items():
            self.tasks.labels(state, reason).set(count)
