"""The dashboard's line per channel: grouping every deployment against the projection.

Run: .venv/bin/python bench/bench_channel_lines.py [--sizes 100000] [--runs 30]
     [--postgres URL]

For each size it builds a fresh database (SQLite in a temporary folder, or a new database on the
PostgreSQL server of URL, dropped afterwards) at migration 0020: 50 projects of 3 channels
(Main, Beta, Hotfix), 6 environments, 12 releases per project (4 per channel), and the
deployments bulk-inserted spread evenly over projects and environments with the dashboard row of
each (project, environment). Then it upgrades to 0021 (timed: the backfill of
``dashboard_channels`` from that history) and times, through the real app in process:

  - "old SQL": the two GROUP BY queries the line per channel ran before the projection (the
    latest deployment of each project, environment and channel; the channel's latest success),
    run here as they were written; their answer is checked to equal the projection's
  - "projection SQL": the one query over ``dashboard_channels`` that replaced them
  - "dashboard API": GET /api/v1/dashboard as the administrator (the board and its 150 lines)
  - "one state change": ``runs.project`` of a deployment ending, now also keeping its channel's
    cell (one transaction each), and "... dashboard row only": the same as it was before

Measured (2 cores shared with other work, load ~5; Python 3.11; 30 runs; ms, p50 / p95):

                               SQLite 100,000        PostgreSQL 15 100,000
  old SQL (before)             121 / 154             73 / 113
  projection SQL (after)       3.9 / 7.9             4.4 / 4.5
  dashboard API (after)        19.6 / 26.9           28.4 / 35.1
  one state change             1.8 / 2.0             5.3 / 8.6
  ... dashboard row only       0.9 / 1.1             4.0 / 8.1
  backfill in the upgrade      0.5 s                 0.2 s

Before, the API answered in about "dashboard API" + "old SQL" (the old queries ran on every
request); the lines' cost no longer grows with the history.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from bench_dashboard import BATCH, p95
from seeded import seeded
from sqlalchemy import create_engine, func, insert, select, text
from throwaway_db import pg_database

from conveyor.api.app import create_app, settle_heap
from conveyor.domain import runtime as rt
from conveyor.domain.documents import key
from conveyor.services.config import load
from conveyor.services.core import Services, bootstrap, system_caller
from conveyor.services.users import create_api_key
from conveyor.settings import Settings
from conveyor.store import runs
from conveyor.store import tables as t
from conveyor.store.db import sync_url, upgrade

PROJECTS, ENVIRONMENTS, CHANNELS, RELEASES = 50, 6, ("Main", "Beta", "Hotfix"), 4
STATES = ["success"] * 90 + ["failed"] * 7 + ["canceled"] * 3
D, R, C = t.deployments.c, t.releases.c, t.dashboard_channels.c


def config() -> str:
    envs = [f"Env {e}" for e in range(1, ENVIRONMENTS + 1)]
    lines = ["environments:", *(f"  - name: {e}" for e in envs)]
    lines += ["lifecycles:", "  - name: All", "    phases:", "      - name: All"]
    lines += [f"        environments: [{', '.join(envs)}]", "project_groups:", "  - name: Apps"]
    lines += ["projects:"]
    for p in range(1, PROJECTS + 1):
        lines += [f"  - name: Project {p}", "    group: Apps", "    lifecycle: All"]
        lines += ["    channels:", f"      - {{name: {CHANNELS[0]}, default: true}}"]
        lines += [f"      - {{name: {c}}}" for c in CHANNELS[1:]]
    return "\n".join(lines) + "\n"


def _stamp(moment: datetime, sqlite: bool) -> Any:
    return moment.replace(tzinfo=None) if sqlite else moment


def fill(url: str, count: int, projects: list[int], environments: list[int]) -> None:
    """Releases in every channel, ``count`` deployments and the dashboard rows."""
    engine = create_engine(sync_url(url))
    sqlite = url.startswith("sqlite")
    rng = random.Random(21)
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / count
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(t.releases),
                [
                    {
                        "project_id": project,
                        "version": f"{c}.0.{r}",
                        "notes": "",
                        "created_at": _stamp(start, sqlite),
                        "created_by": "bench",
                        "snapshot": {},
                        "packages": {},
                        "children": {},
                        "build": {},
                        "channel": channel,
                    }
                    for project in projects
                    for c, channel in enumerate(CHANNELS, start=1)
                    for r in range(RELEASES)
                ],
            )
            found = conn.execute(select(R.id, R.project_id, R.version)).all()
            by_project: dict[int, list[tuple[int, str]]] = {}
            for release_id, project, version in found:
                by_project.setdefault(project, []).append((release_id, version))
            newest: dict[tuple[int, int], dict[str, Any]] = {}
            batch: list[dict[str, Any]] = []
            for n in range(1, count + 1):
                project = projects[n % len(projects)]
                env = environments[(n // len(projects)) % len(environments)]
                release_id, version = rng.choice(by_project[project])
                when = start + step * n
                row = {
                    "id": n,
                    "release_id": release_id,
                    "project_id": project,
                    "environment_id": env,
                    "task_id": n,
                    "parent_id": None,
                    "created_at": _stamp(when, sqlite),
                    "created_by": "bench",
                    "state": rng.choice(STATES),
                    "skip": [],
                    "guided_failure": False,
                    "variables": {},
                    "started_at": _stamp(when, sqlite),
                    "completed_at": _stamp(when + timedelta(seconds=30), sqlite),
                }
                newest[(project, env)] = row | {"version": version}
                batch.append(row)
                if len(batch) >= BATCH:
                    conn.execute(insert(t.deployments), batch)
                    batch = []
            if batch:
                conn.execute(insert(t.deployments), batch)
            conn.execute(
                insert(t.dashboard),
                [
                    {
                        "project_id": project,
                        "environment_id": env,
                        "deployment_id": row["id"],
                        "release_id": row["release_id"],
                        "release_version": row["version"],
                        "state": row["state"],
                        "task_id": row["task_id"],
                        "completed_at": row["completed_at"],
                        "previous_deployment_id": None,
                        "success_release_id": row["release_id"],
                        "success_version": row["version"],
                        "updated_at": row["completed_at"],
                    }
                    for (project, env), row in newest.items()
                ],
            )
            if not sqlite:
                conn.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('deployments', 'id'), "
                        "(SELECT max(id) FROM deployments))"
                    )
                )
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


async def old_sql(services: Services, project_ids: list[int]) -> dict[tuple[Any, ...], Any]:
    """The two queries services/channels.py ran before the projection, as they were."""
    joined = t.deployments.join(t.releases, R.id == D.release_id)
    latest = (
        select(func.max(D.id))
        .select_from(joined)
        .where(D.project_id.in_(project_ids))
        .group_by(D.project_id, D.environment_id, R.channel)
    )
    query = (
        select(
            D.id,
            D.project_id,
            D.environment_id,
            D.state,
            D.task_id,
            D.completed_at,
            R.version,
            R.channel,
        )
        .select_from(joined)
        .where(D.id.in_(latest.scalar_subquery()))
    )
    succeeded = (
        select(D.project_id, D.environment_id, R.channel, R.version)
        .select_from(joined)
        .where(
            D.id.in_(
                select(func.max(D.id))
                .select_from(joined)
                .where(D.project_id.in_(project_ids), D.state == "success")
                .group_by(D.project_id, D.environment_id, R.channel)
                .scalar_subquery()
            )
        )
    )
    async with services.read() as session:
        rows = (await session.execute(query)).all()
        current = {
            (r.project_id, key(r.channel), r.environment_id): r.version
            for r in (await session.execute(succeeded)).all()
        }
    return {
        (r.project_id, key(r.channel), r.environment_id): (
            r.id,
            r.version,
            r.state,
            current.get((r.project_id, key(r.channel), r.environment_id)),
        )
        for r in rows
    }


async def projection_sql(services: Services, project_ids: list[int]) -> dict[tuple[Any, ...], Any]:
    query = select(
        C.project_id,
        C.environment_id,
        C.channel,
        C.deployment_id,
        C.release_version,
        C.state,
        C.task_id,
        C.completed_at,
        C.success_version,
    ).where(C.project_id.in_(project_ids))
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    return {
        (r.project_id, r.channel, r.environment_id): (
            r.deployment_id,
            r.release_version,
            r.state,
            r.success_version,
        )
        for r in rows
    }


async def timed(work: Callable[[], Awaitable[Any]], runs_: int) -> list[float]:
    await work()  # warm the caches once
    out = []
    for _ in range(runs_):
        start = time.perf_counter()
        await work()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def measure(
    services: Services, settings: Settings, project_ids: list[int], runs_: int
) -> dict[str, list[float]]:
    assert await old_sql(services, project_ids) == await projection_sql(services, project_ids)
    admin_key = await create_api_key(services, system_caller(), "admin", "bench")
    app = create_app(settings, services)
    await load(services)
    settle_heap()
    transport = httpx.ASGITransport(app=app)
    api = httpx.AsyncClient(
        transport=transport,
        base_url="http://conveyor.bench/api/v1",
        headers={"X-Api-Key": admin_key},
    )
    async with services.read() as session:
        last = (await session.execute(select(D).order_by(D.id.desc()).limit(1))).one()
        version, channel = (
            await session.execute(select(R.version, R.channel).where(R.id == last.release_id))
        ).one()

    async def dashboard() -> None:
        response = await api.get("/dashboard")
        response.raise_for_status()
        assert len(response.json()["channels"]) == PROJECTS * len(CHANNELS)

    async def state_change() -> None:
        # The newest deployment ends again (the rule and the writes are those of any change).
        change = rt.DeploymentState(
            last.id, last.release_id, version, last.task_id, rt.TaskState.SUCCESS
        )
        async with services.tx(system_caller()) as tx:
            await runs.project(
                tx.session,
                tx.now,
                last.project_id,
                last.environment_id,
                channel,
                change,
                sqlite=services.is_sqlite,
            )

    async def state_change_before() -> None:
        # The same change as the server wrote it before: the dashboard row only.
        change = rt.DeploymentState(
            last.id, last.release_id, version, last.task_id, rt.TaskState.SUCCESS
        )
        pair = {"project_id": last.project_id, "environment_id": last.environment_id}
        async with services.tx(system_caller()) as tx:
            await runs._keep(
                tx.session, tx.now, t.dashboard, pair, change, new=False, sqlite=services.is_sqlite
            )

    try:
        return {
            "old SQL": await timed(lambda: old_sql(services, project_ids), runs_),
            "projection SQL": await timed(lambda: projection_sql(services, project_ids), runs_),
            "dashboard API": await timed(dashboard, runs_),
            "one state change": await timed(state_change, runs_),
            "... dashboard row only": await timed(state_change_before, runs_),
        }
    finally:
        await api.aclose()


async def one_size(url: str, count: int, runs_: int) -> tuple[float, dict[str, list[float]]]:
    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-channels-"))
    url = url or f"sqlite+aiosqlite:///{data / 'conveyor.db'}"
    try:
        upgrade(url, "0020")
        settings = Settings(
            data_dir=data, database_url=url, run_engine=False, insecure_fast_password_hashing=True
        )
        services = bootstrap(settings)
        try:
            _, projects, environments = await seeded(services, config())
            fill(url, count, projects, environments)
            started = time.perf_counter()
            upgrade(url)  # 0021: the backfill from the history just written
            backfill = time.perf_counter() - started
            return backfill, await measure(services, settings, projects, runs_)
        finally:
            await services.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def main(flags: argparse.Namespace) -> None:
    db = "PostgreSQL" if flags.postgres else "SQLite"
    for count in flags.sizes:
        if flags.postgres:
            url, drop = pg_database(flags.postgres, "conveyor_bench_channels")
            try:
                backfill, results = await one_size(url, count, flags.runs)
            finally:
                drop()
        else:
            backfill, results = await one_size("", count, flags.runs)
        print(f"\n{db}, {count:,} deployments, {PROJECTS} projects x {len(CHANNELS)} channels")
        print(f"x {ENVIRONMENTS} envs, Python {sys.version.split()[0]}, {flags.runs} runs (ms)")
        print(f"backfill in the upgrade to 0021: {backfill:.1f} s")
        for name, values in results.items():
            print(f"{name:<24}{statistics.median(values):>10.2f}{p95(values):>10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL")
    asyncio.run(main(parser.parse_args()))
