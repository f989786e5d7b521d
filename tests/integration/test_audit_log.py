"""The audit log through its service, on SQLite and PostgreSQL: the hash chain and tampering
done directly in the database, scoped reading, filters, keyset paging, and a streamed export
of 100,000 events whose memory stays flat."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, func, insert, select, update

from conveyor.domain.audit import GENESIS, EventRecord, event_hash
from conveyor.domain.errors import NotFound, PermissionDenied, ValidationFailed
from conveyor.services import audit, audit_export, deployments, releases
from conveyor.services.audit import Filters
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.services.users import create_api_key
from conveyor.store import audit_head
from conveyor.store import tables as t
from conveyor.store.db import sync_url
from tests.conftest import caller_of

SHOP = """
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Prod]
project_groups:
  - name: Shop
users:
  - username: alice
  - username: web-reader
  - username: prod-reader
  - username: nobody
teams:
  - name: Deployers
    members: [alice]
    roles:
      - role: Project Deployer
      - role: Release Creator
  - name: Web readers
    members: [web-reader]
    roles:
      - role: Project Viewer
        projects: [Web]
  - name: Prod readers
    members: [prod-reader]
    roles:
      - role: Project Viewer
        environments: [Prod]
projects:
  - name: Web
    group: Shop
    lifecycle: Anywhere
    process:
      steps:
        - name: Hello
          type: script
          script: echo hello
  - name: Database
    group: Shop
    lifecycle: Anywhere
    process:
      steps:
        - name: Migrate
          type: script
          script: echo migrate
"""


@pytest.fixture
async def shop(services: Services, admin: Caller) -> None:
    """Config events, then releases and deployments (queued only: no engine runs here)."""
    await apply_text(services, admin, SHOP)
    alice = await caller_of(services, "alice")
    for project in ("Web", "Database"):
        release = await releases.create_release(services, alice, project)
        for env in ("Dev", "Prod"):
            await deployments.deploy(services, alice, project, release.version, env)


async def page(services: Services, caller: Caller, **filters: Any) -> list[dict[str, Any]]:
    limit = filters.pop("limit", 500)
    result = await audit.list_events(services, caller, Filters(**filters), limit=limit)
    events: list[dict[str, Any]] = result["events"]
    return events


async def sql(services: Services, statement: Any, params: dict[str, Any] | None = None) -> None:
    """Straight to the database, as someone with its password would."""
    async with services.write() as session:
        await session.execute(statement, params or {})


async def verify(services: Services, admin: Caller) -> dict[str, Any]:
    return await audit.verify_chain(services, admin)


# ---------------------------------------------------------------- the chain


async def test_every_event_is_chained_and_the_chain_verifies(
    services: Services, admin: Caller, shop: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "CHUNK", 4)  # several chunks, so their seams are walked too
    async with services.read() as session:
        rows = (await session.execute(select(t.events).order_by(t.events.c.id))).all()
    assert [r.id for r in rows] == list(range(1, len(rows) + 1)), "ids have no gaps"
    assert rows[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
        assert after.occurred_at >= before.occurred_at
    result = await verify(services, admin)
    assert result["intact"] and result["count"] == len(rows) > 4 * 3
    assert result["message"] == f"intact: {len(rows)} events"
    assert result["head"] == {"id": f"Events-{rows[-1].id}", "hash": rows[-1].hash}


async def test_concurrent_writers_keep_one_line(services: Services, admin: Caller) -> None:
    """Twenty transactions at once (on PostgreSQL on as many connections): the chain stays a
    line, without gaps or forks."""
    await asyncio.gather(*(create_api_key(services, admin, "admin", f"k{i}") for i in range(20)))
    result = await verify(services, admin)
    assert result["intact"], result
    async with services.read() as session:
        ids = list((await session.execute(select(t.events.c.id).order_by(t.events.c.id))).scalars())
    assert ids == list(range(1, len(ids) + 1))


async def test_an_edited_message_is_named(services: Services, admin: Caller, shop: None) -> None:
    await sql(services, update(t.events).where(t.events.c.id == 5).values(message="nothing"))
    result = await verify(services, admin)
    assert not result["intact"]
    assert (result["first_bad"], result["problem"]) == ("Events-5", "altered")
    assert "Events-5 was altered" in result["message"]


async def test_edited_details_are_named(services: Services, admin: Caller, shop: None) -> None:
    async with services.read() as session:
        row = (await session.execute(select(t.events).where(t.events.c.id == 7))).one()
    forged = {**row.details, "injected": True}
    await sql(services, update(t.events).where(t.events.c.id == 7).values(details=forged))
    assert (await verify(services, admin))["first_bad"] == "Events-7"


async def test_a_deleted_event_is_named(services: Services, admin: Caller, shop: None) -> None:
    await sql(services, delete(t.events).where(t.events.c.id == 4))
    result = await verify(services, admin)
    assert (result["first_bad"], result["problem"]) == ("Events-5", "removed")
    assert result["message"] == (
        "the event before Events-5 is missing or was altered: Events-4 removed"
    )


async def test_removing_the_newest_events_shows_once_the_next_one_is_written(
    services: Services, admin: Caller, shop: None
) -> None:
    """The chain's head is kept apart from the events: the next event chains to the one that
    was removed, so deleting the tail of the log is caught too, not only a gap inside it."""
    async with services.read() as session:
        newest = (await session.execute(select(func.max(t.events.c.id)))).scalar_one()
    await sql(services, delete(t.events).where(t.events.c.id >= newest - 1))
    await create_api_key(services, admin, "admin", "after the removal")
    result = await verify(services, admin)
    assert (result["first_bad"], result["problem"]) == (f"Events-{newest + 1}", "removed")


async def test_a_forged_event_is_named(services: Services, admin: Caller, shop: None) -> None:
    async with services.read() as session:
        last = (
            await session.execute(select(t.events).order_by(t.events.c.id.desc()).limit(1))
        ).one()
    forged = {
        **{k: v for k, v in last._mapping.items() if k not in ("id", "hash", "prev_hash")},
        "id": last.id + 1,
        "message": "bob approved the deployment",
        "prev_hash": last.hash,
        "hash": "ab" * 32,
    }
    await sql(services, insert(t.events).values(**forged))
    result = await verify(services, admin)
    assert result["first_bad"] == f"Events-{last.id + 1}"
    assert "altered (or forged)" in result["message"]


async def test_a_replaced_event_with_a_valid_hash_is_caught(
    services: Services, admin: Caller, shop: None
) -> None:
    """Deleting event 6 and inserting a forgery in its place, hashed with the public rules:
    the event after it is still chained to the original."""
    async with services.read() as session:
        rows = {
            r.id: r
            for r in (await session.execute(select(t.events).where(t.events.c.id.in_([5, 6]))))
        }
    original = rows[6]
    forged = replace(audit.record(original), message="a forged approval")
    digest = event_hash(forged, rows[5].hash)
    await sql(services, delete(t.events).where(t.events.c.id == 6))
    values = {k: v for k, v in original._mapping.items()}
    await sql(
        services,
        insert(t.events).values(**{**values, "message": forged.message, "hash": digest}),
    )
    result = await verify(services, admin)
    assert result["first_bad"] == "Events-7"
    assert "the event before Events-7 is missing or was altered" in result["message"]


async def test_an_event_without_a_hash_is_named(
    services: Services, admin: Caller, shop: None
) -> None:
    await sql(services, update(t.events).where(t.events.c.id == 3).values(hash=None))
    result = await verify(services, admin)
    assert (result["first_bad"], result["problem"]) == ("Events-3", "unhashed")


async def test_only_an_unscoped_reader_may_verify(
    services: Services, admin: Caller, shop: None
) -> None:
    with pytest.raises(PermissionDenied, match="every project and environment"):
        await verify(services, await caller_of(services, "web-reader"))
    with pytest.raises(PermissionDenied, match="EventView"):
        await verify(services, await caller_of(services, "nobody"))


# ---------------------------------------------------------------- reading


async def test_a_scoped_reader_sees_only_the_events_of_their_scope(
    services: Services, admin: Caller, shop: None
) -> None:
    everything = await page(services, admin)
    assert {e["project"] for e in everything} == {None, "Web", "Database"}

    web = await page(services, await caller_of(services, "web-reader"))
    assert web and {e["project"] for e in web} == {"Web"}
    assert len(web) == sum(1 for e in everything if e["project"] == "Web")
    assert {e["category"] for e in web} >= {"ReleaseCreated", "DeploymentQueued"}

    prod = await page(services, await caller_of(services, "prod-reader"))
    assert prod and {e["environment"] for e in prod} == {"Prod"}
    deployed = [e for e in prod if e["category"] == "DeploymentQueued"]
    assert {e["project"] for e in deployed} == {"Web", "Database"}
    # Besides the deployments to Prod: the creation of the Prod environment itself.
    [created] = [e for e in prod if e["project"] is None]
    assert created["category"] == "DocumentCreated" and "Prod" in created["message"]

    with pytest.raises(PermissionDenied, match="EventView"):
        await page(services, await caller_of(services, "nobody"))


async def test_filters_combine_across_fields_and_widen_within_one(
    services: Services, admin: Caller, shop: None
) -> None:
    def categories(events: list[dict[str, Any]]) -> set[str]:
        return {e["category"] for e in events}

    alice = await page(services, admin, users=("alice",))
    assert alice and {e["actor"] for e in alice} == {"alice"}
    assert categories(alice) == {"ReleaseCreated", "DeploymentQueued"}

    web_prod = await page(services, admin, projects=("web",), environments=("Prod",))
    assert [(e["category"], e["project"], e["environment"]) for e in web_prod] == [
        ("DeploymentQueued", "Web", "Prod")
    ]
    both = await page(services, admin, categories=("releasecreated", "DeploymentQueued"))
    assert categories(both) == {"ReleaseCreated", "DeploymentQueued"} and len(both) == 6

    release = web_prod[0]["documents"]
    deployment = next(d for d in release if d.startswith("Deployments-"))
    about = await page(services, admin, documents=(deployment,))
    assert [e["id"] for e in about] == [web_prod[0]["id"]]

    now = datetime.now(UTC)
    assert await page(services, admin, since=now + timedelta(minutes=1)) == []
    assert len(await page(services, admin, until=now + timedelta(minutes=1))) == len(
        await page(services, admin)
    )
    assert await page(services, admin, until=now - timedelta(days=1)) == []
    assert await page(services, admin, since=now, until=now - timedelta(seconds=1)) == []

    with pytest.raises(ValidationFailed, match="not an event category"):
        await page(services, admin, categories=("Nope",))
    with pytest.raises(NotFound, match='project "Nope"'):
        await page(services, admin, projects=("Nope",))


async def test_pages_follow_the_cursor_newest_first(services: Services, admin: Caller) -> None:
    for i in range(23):
        await create_api_key(services, admin, "admin", f"key {i}")
    everything = await page(services, admin)
    seen: list[str] = []
    cursor = None
    while True:
        result = await audit.list_events(services, admin, limit=10, before=cursor)
        seen += [e["id"] for e in result["events"]]
        cursor = result["next"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in everything]
    numbers = [int(i.split("-")[1]) for i in seen]
    assert numbers == sorted(numbers, reverse=True)
    with pytest.raises(ValidationFailed):
        await audit.list_events(services, admin, before="Events-x")


async def test_export_streams_csv_and_json_lines_in_chain_order(
    services: Services, admin: Caller, shop: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "CHUNK", 4)
    events = list(reversed(await page(services, admin)))
    lines = [
        chunk async for chunk in await audit.export_events(services, admin, "jsonl", Filters())
    ]
    exported = [json.loads(line) for line in "".join(lines).splitlines()]
    assert exported == events
    # Anyone can recompute each exported event's hash from the documented canonical form.
    for item in exported:
        record = EventRecord(
            id=int(item["id"].split("-")[1]),
            occurred_at=datetime.fromisoformat(item["occurred"]),
            category=item["category"],
            actor_id=item["actor_id"],
            actor=item["actor"],
            on_behalf_of=item["on_behalf_of"],
            ip_address=item["ip_address"],
            user_agent=item["user_agent"],
            message=item["message"],
            project_id=item["project_id"],
            environment_id=item["environment_id"],
            documents=item["documents"],
            details=item["details"],
        )
        assert event_hash(record, item["prev_hash"]) == item["hash"]

    reader = await caller_of(services, "web-reader")
    text_csv = "".join(
        [c async for c in await audit.export_events(services, reader, "csv", Filters())]
    )
    header, *rows = text_csv.splitlines()
    assert header == ",".join(audit_export.CSV_COLUMNS)
    assert len(rows) == sum(1 for e in events if e["project"] == "Web")


# ---------------------------------------------------------------- 100,000 events

BIG = 100_000


def _fill(url: str, count: int) -> None:
    """Bulk-insert a valid chain (hashed with the pure function), far faster than the service."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    engine = create_engine(sync_url(url))
    prev = GENESIS
    try:
        with engine.begin() as conn:
            base = conn.execute(select(func.coalesce(func.max(t.events.c.id), 0))).scalar_one()
            last = conn.execute(
                select(t.events.c.hash).where(t.events.c.id == base)
            ).scalar_one_or_none()
            prev = last or GENESIS
            batch: list[dict[str, Any]] = []
            for n in range(base + 1, base + count + 1):
                record = EventRecord(
                    id=n,
                    occurred_at=start + timedelta(seconds=n),
                    category="DeploymentQueued",
                    actor_id=None,
                    actor="build",
                    on_behalf_of=None,
                    ip_address="10.1.2.3",
                    user_agent="bench",
                    message=f"build queued the deployment of Web 1.0.{n} to Dev",
                    project_id=None,
                    environment_id=None,
                    documents=[f"Deployments-{n}"],
                    details={"n": n, "note": "x" * 200},
                )
                digest = event_hash(record, prev)
                batch.append({**record.__dict__, "hash": digest, "prev_hash": prev})
                prev = digest
                if len(batch) == 10_000:
                    conn.execute(insert(t.events), batch)
                    batch = []
            if batch:
                conn.execute(insert(t.events), batch)
            audit_head.catch_up(conn)
    finally:
        engine.dispose()


async def test_an_export_of_100000_events_keeps_memory_flat(
    services: Services, admin: Caller
) -> None:
    # Both databases: the fill takes a few seconds on each.
    _fill(services.settings.resolved_database_url, BIG)
    started = time.monotonic()
    tracemalloc.start()
    try:
        lines = 0
        size = 0
        async for chunk in await audit.export_events(services, admin, "jsonl", Filters()):
            lines += chunk.count("\n")
            size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = await _count(services)
    assert lines == total
    assert size > 30_000_000, "the export is much bigger than the memory it used"
    assert peak < 50_000_000, f"peak {peak / 1e6:.1f} MB"
    assert time.monotonic() - started < 60
    # The chain is verified in chunks as well; its speed at scale is the benchmark's business.


async def _count(services: Services) -> int:
    async with services.read() as session:
        return int((await session.execute(select(func.count()).select_from(t.events))).scalar_one())
