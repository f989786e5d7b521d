"""Audit log queries at 100,000 and 1,000,000 events (performance anchor B3).

Run: .venv/bin/python bench/bench_audit.py [--sizes 100000 1000000] [--runs 20]
     [--postgres URL] [--explain] [--verify]

For each size it builds a fresh database (SQLite in a temporary folder, or a new database on the
PostgreSQL server of URL, dropped afterwards): 200 users, 500 projects, 6 environments, and
events over 18 months ending now, in about 25 categories, each with 1-3 related documents and
about 1 KB of details, bulk-inserted with a valid hash chain (computed by the same pure function
the server uses). Then it times, through the audit service (page size 50, newest first):

  (a) one user's events in the last 30 days
  (b) one project in one environment
  (c) one category in a 30-day range
  (d) everything concerning one deployment
  (e) page 200 by cursor (of the whole log: no (project, environment) pair has 200 pages), next
      to page 1 of the same listing
  (f) a reader whose EventView is scoped to 10 projects, page 1

and also: appending one event inside a business transaction (p50 added), streaming an export of
30 days (events/s), and with --verify the walk of the whole chain. The last table is the growth
ratio p95(big)/p95(small) per query (B3's target: at most 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, select, text
from throwaway_db import pg_database

from conveyor.domain.audit import GENESIS, Category, EventRecord, event_hash
from conveyor.services import audit
from conveyor.services.access import caller_for_user, get_user
from conveyor.services.config import load
from conveyor.services.configfile import apply_text
from conveyor.services.core import Services, bootstrap
from conveyor.services.users import initialise
from conveyor.settings import Settings
from conveyor.store import audit_head
from conveyor.store import tables as t
from conveyor.store.db import sync_url, upgrade

USERS, PROJECTS, ENVIRONMENTS = 200, 500, 6
SPAN = timedelta(days=548)
BATCH = 5_000
CATEGORIES = [c.value for c in Category if c.value not in ("LoggedOut", "ReleaseDeleted")]
# Categories about a deployment: they name an environment and a deployment.
IN_ENVIRONMENT = {c for c in CATEGORIES if c.startswith(("Deployment", "Interruption"))} | {
    "StepSkipped",
    "TaskCanceled",
}
# The table's columns, in its order: what the bulk insert writes.
COLUMNS = tuple(c.name for c in t.events.columns)


def config() -> str:
    envs = [f"Env {e}" for e in range(1, ENVIRONMENTS + 1)]
    lines = ["environments:", *(f"  - name: {e}" for e in envs)]
    lines += ["lifecycles:", "  - name: All", "    phases:", "      - name: All"]
    lines += [f"        environments: [{', '.join(envs)}]", "project_groups:", "  - name: G"]
    lines += ["users:", *(f"  - username: user{u}" for u in range(1, USERS + 1))]
    lines += ["teams:", "  - name: Scoped", "    members: [user1]", "    roles:"]
    lines += ["      - role: Project Viewer"]
    lines += [f"        projects: [{', '.join(f'Project {p}' for p in range(1, 11))}]"]
    lines += ["projects:"]
    for p in range(1, PROJECTS + 1):
        lines += [f"  - name: Project {p}", "    group: G", "    lifecycle: All"]
    return "\n".join(lines) + "\n"


def details_pool(rng: random.Random) -> list[dict[str, Any]]:
    """About 1 KB of JSON each: a before/after change, as document events carry."""
    words = [
        "deploy",
        "release",
        "approve",
        "package",
        "migrate",
        "rollback",
        "variable",
        "process",
        "step",
        "team",
    ]
    pool = []
    for i in range(64):
        fields = [
            {
                "field": f"steps[{k}].script",
                "before": " ".join(rng.choices(words, k=14)),
                "after": " ".join(rng.choices(words, k=14)),
            }
            for k in range(4)
        ]
        pool.append({"kind": "projects", "aspect": "process", "fields": fields, "variant": i})
    return pool


def events(count: int, ids: dict[str, list[int]], seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Rows in id order with a valid chain; time runs evenly over SPAN, ending now."""
    rng = random.Random(seed)
    pool = details_pool(rng)
    start = datetime.now(UTC) - SPAN
    step = SPAN / count
    prev = GENESIS
    for n in range(1, count + 1):
        category = rng.choice(CATEGORIES)
        user = rng.randrange(USERS)
        project = rng.choice(ids["projects"]) if rng.random() < 0.9 else None
        env = rng.choice(ids["environments"]) if category in IN_ENVIRONMENT and project else None
        docs = [f"Projects-{project}"] if project else [f"Users-{ids['users'][user]}"]
        if env:
            docs += [f"Environments-{env}", f"Deployments-{n // 8 + 1}"]
        record = EventRecord(
            id=n,
            occurred_at=start + step * n,
            category=category,
            actor_id=ids["users"][user],
            actor=f"user{user + 1}",
            on_behalf_of=None,
            ip_address=f"10.0.{user // 250}.{user % 250}",
            user_agent="conveyor-cli",
            message=f"user{user + 1}: {category} #{n}",
            project_id=project,
            environment_id=env,
            documents=sorted(docs),
            details={**rng.choice(pool), "n": n},
        )
        digest = event_hash(record, prev)
        yield record, digest, prev
        prev = digest


def fill(url: str, count: int, ids: dict[str, list[int]]) -> None:
    engine = create_engine(sync_url(url))
    sqlite = url.startswith("sqlite")
    try:
        with engine.begin() as conn:
            raw: Any = conn.connection.dbapi_connection
            cursor = raw.cursor()
            batch: list[tuple[Any, ...]] = []
            links: list[tuple[int, str]] = []

            def flush() -> None:
                if sqlite:
                    marks = ", ".join("?" * len(COLUMNS))
                    cursor.executemany(
                        f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({marks})", batch
                    )
                    cursor.executemany("INSERT INTO event_documents VALUES (?, ?)", links)
                    return
                with cursor.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
                with cursor.copy("COPY event_documents (event_id, document) FROM STDIN") as copy:
                    for link in links:
                        copy.write_row(link)

            for record, digest, prev in events(count, ids):
                when: Any = record.occurred_at
                if sqlite:  # SQLAlchemy's storage format for SQLite
                    when = when.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
                values = {
                    **record.__dict__,
                    "occurred_at": when,
                    "documents": json.dumps(list(record.documents)),
                    "details": json.dumps(record.details),
                    "hash": digest,
                    "prev_hash": prev,
                }
                batch.append(tuple(values[c] for c in COLUMNS))
                links += [(record.id, d) for d in record.documents]
                if len(batch) >= BATCH:
                    flush()
                    batch, links = [], []
            if batch:
                flush()
        with engine.begin() as conn:
            audit_head.catch_up(conn)
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


async def timed(work: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    await work()  # warm the caches once
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)] if len(values) > 1 else values[0]


async def measure(services: Services, count: int, runs: int, verify: bool) -> dict[str, Any]:
    async with services.read() as session:
        admin = await caller_for_user(session, await get_user(session, "admin"))
        scoped = await caller_for_user(session, await get_user(session, "user1"))
        newest = (await session.execute(select(func.max(t.events.c.id)))).scalar_one()
        sample = (
            await session.execute(
                select(t.events).where(t.events.c.environment_id.is_not(None)).limit(1)
            )
        ).one()
    names = {"project": None, "environment": None}
    async with services.read() as session:
        found = await audit.names_of(session)
    names["project"] = found.projects[sample.project_id]
    names["environment"] = found.environments[sample.environment_id]
    deployment = next(d for d in sample.documents if d.startswith("Deployments-"))
    now = datetime.now(UTC)
    mid = now - SPAN / 2

    def page(caller: Any = admin, before: str | None = None, **f: Any) -> Any:
        return lambda: audit.list_events(services, caller, audit.Filters(**f), before=before)

    queries = {
        "(a) user, last 30 days": page(users=("user42",), since=now - timedelta(days=30)),
        "(b) project + environment": page(
            projects=(names["project"],), environments=(names["environment"],)
        ),
        "(c) category, 30-day range": page(
            categories=("DeploymentFailed",), since=mid, until=mid + timedelta(days=30)
        ),
        "(d) one deployment": page(documents=(deployment,)),
        "(e) page 1 of all": page(),
        "(e) page 200 of all": page(before=f"Events-{newest - 199 * 50 + 1}"),
        "(f) scoped reader, page 1": page(caller=scoped),
    }
    results = {name: await timed(q, runs) for name, q in queries.items()}

    async def one_write(with_event: bool) -> None:
        async with services.tx(admin) as tx:  # a business write, with or without its event
            await tx.session.execute(
                t.users.update().where(t.users.c.id == admin.user_id).values(updated_at=tx.now)
            )
            if with_event:
                await tx.audit(Category.CONFIG_APPLIED, "bench", details={"bench": True})

    await load(services)  # the configuration cache, warm as in a running server
    bare = await timed(lambda: one_write(False), runs)
    audited = await timed(lambda: one_write(True), runs)
    extra = {"write (added p50 ms)": statistics.median(audited) - statistics.median(bare)}

    start = time.perf_counter()
    exported = 0
    since = audit.Filters(since=now - timedelta(days=30))
    async for chunk in await audit.export_events(services, admin, "jsonl", since):
        exported += chunk.count("\n")
    extra["export 30 days (events/s)"] = exported / (time.perf_counter() - start)
    if verify:
        start = time.perf_counter()
        result = await audit.verify_chain(services, admin)
        assert result["intact"], result
        extra["verify (events/s)"] = result["count"] / (time.perf_counter() - start)
    return {"queries": results, "extra": extra, "count": count}


async def explain(services: Services) -> None:
    """The plans of the queries, as the database sees them."""
    print("\nQuery plans (EXPLAIN):")
    prefix = "EXPLAIN QUERY PLAN " if services.is_sqlite else "EXPLAIN "
    statements = {
        "(a)": "SELECT id FROM events WHERE actor_id = 43 AND occurred_at >= :t "
        "AND id >= (SELECT id FROM events WHERE occurred_at >= :t "
        "ORDER BY occurred_at, id LIMIT 1) ORDER BY id DESC LIMIT 51",
        "(b)": "SELECT id FROM events WHERE project_id = 3 AND environment_id = 2 "
        "ORDER BY id DESC LIMIT 51",
        "(c)": "SELECT id FROM events WHERE category = 'DeploymentFailed' "
        "AND id >= (SELECT id FROM events WHERE occurred_at >= :t "
        "ORDER BY occurred_at, id LIMIT 1) ORDER BY id DESC LIMIT 51",
        "(d)": "SELECT id FROM events WHERE id IN (SELECT event_id FROM event_documents "
        "WHERE document = 'Deployments-5') ORDER BY id DESC LIMIT 51",
    }
    async with services.read() as session:
        for name, sql in statements.items():
            when = datetime.now(UTC) - timedelta(days=30)
            rows = await session.execute(text(prefix + sql), {"t": when})
            print(f"{name}: " + " | ".join(str(r[-1]) for r in rows))


async def one_size(url: str, count: int, runs: int, flags: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-audit-"))
    url = url or f"sqlite+aiosqlite:///{data / 'conveyor.db'}"
    try:
        upgrade(url)
        services = bootstrap(
            Settings(
                data_dir=data,
                database_url=url,
                run_engine=False,
                insecure_fast_password_hashing=True,
            )
        )
        try:
            await initialise(services)
            async with services.read() as session:
                admin = await caller_for_user(session, await get_user(session, "admin"))
            await apply_text(services, admin, config())
            ids: dict[str, list[int]] = {}
            async with services.read() as session:
                for kind, table in (
                    ("projects", t.projects),
                    ("environments", t.environments),
                    ("users", t.users),
                ):
                    query = select(table.c.id).order_by(table.c.id)
                    if kind == "users":
                        query = query.where(table.c.username.like("user%"))
                    ids[kind] = list((await session.execute(query)).scalars())
                base = (await session.execute(select(func.count()).select_from(t.events))).scalar()
            # The bench owns this database: its few set-up events are replaced by the fill.
            async with services.write() as session:
                await session.execute(t.event_documents.delete())
                await session.execute(t.events.delete())
            started = time.perf_counter()
            fill(url, count, ids)
            print(
                f"filled {count:,} events in {time.perf_counter() - started:.0f} s ({base} set-up)"
            )
            result = await measure(services, count, runs, flags.verify)
            if flags.explain:
                await explain(services)
            return result
        finally:
            await services.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def main(flags: argparse.Namespace) -> None:
    results = {}
    for count in flags.sizes:
        if flags.postgres:
            url, drop = pg_database(flags.postgres, "conveyor_bench_audit")
            try:
                results[count] = await one_size(url, count, flags.runs, flags)
            finally:
                drop()
        else:
            results[count] = await one_size("", count, flags.runs, flags)
    db = "PostgreSQL" if flags.postgres else "SQLite"
    sizes = list(results)
    print(f"\nAudit log queries ({db}, Python {sys.version.split()[0]}, {flags.runs} runs; ms)")
    header = f"{'query':<28}" + "".join(f"{f'p50 {n:,}':>14}{f'p95 {n:,}':>14}" for n in sizes)
    if len(sizes) > 1:
        header += f"{'p95 ratio':>11}"
    print(header)
    for name in results[sizes[0]]["queries"]:
        line = f"{name:<28}"
        for n in sizes:
            values = results[n]["queries"][name]
            line += f"{statistics.median(values):>14.2f}{p95(values):>14.2f}"
        if len(sizes) > 1:
            low, high = results[sizes[0]]["queries"][name], results[sizes[-1]]["queries"][name]
            line += f"{p95(high) / p95(low):>10.2f}x"
        print(line)
    for name in results[sizes[0]]["extra"]:
        values = "".join(f"{results[n]['extra'][name]:>28,.2f}" for n in sizes)
        print(f"{name:<28}{values}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL")
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    parser.add_argument("--verify", action="store_true", help="time the walk of the chain")
    asyncio.run(main(parser.parse_args()))
