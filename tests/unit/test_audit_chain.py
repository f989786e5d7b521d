"""The audit log's pure rules: the canonical form and hash, the chain walk, and event scopes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.domain import permissions as perms
from conveyor.domain.audit import (
    GENESIS,
    ChainCheck,
    EventRecord,
    EventScope,
    canonical,
    canonical_parts,
    event_hash,
    event_scopes,
    plain_json,
    utc_text,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def event(n: int, **changes: object) -> EventRecord:
    base = EventRecord(
        id=n,
        occurred_at=T0 + timedelta(seconds=n),
        category="DeploymentQueued",
        actor_id=2,
        actor="alice",
        on_behalf_of=None,
        ip_address="10.0.0.1",
        user_agent="conveyor-cli",
        message=f"event {n}",
        project_id=3,
        environment_id=4,
        documents=["Releases-1", "Projects-3"],
        details={"b": 1, "a": [1, 2], "n": n},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def chain(count: int) -> list[EventRecord]:
    out: list[EventRecord] = []
    prev = GENESIS
    for n in range(1, count + 1):
        e = event(n)
        digest = event_hash(e, prev)
        out.append(replace(e, hash=digest, prev_hash=prev))
        prev = digest
    return out


def walk(events: list[EventRecord], chunk: int = 3) -> ChainCheck:
    check = ChainCheck()
    for i in range(0, len(events), chunk):
        if not check.feed(events[i : i + chunk]):
            break
    return check


def test_the_canonical_form_is_stable_json_with_sorted_keys() -> None:
    text = canonical(event(1), GENESIS).decode()
    assert text.startswith('{"actor":"alice","actor_id":2,"category":"DeploymentQueued"')
    assert '"details":{"a":[1,2],"b":1,"n":1}' in text
    assert '"documents":["Projects-3","Releases-1"]' in text
    assert '"occurred_at":"2025-03-01T12:00:01.123456Z"' in text
    assert " " not in text.replace("event 1", "")


def test_the_hash_reads_the_same_time_from_both_databases() -> None:
    aware = event(1)
    naive = replace(aware, occurred_at=aware.occurred_at.replace(tzinfo=None))
    other_zone = replace(aware, occurred_at=aware.occurred_at.astimezone(UTC).astimezone())
    assert event_hash(aware, GENESIS) == event_hash(naive, GENESIS)
    assert event_hash(aware, GENESIS) == event_hash(other_zone, GENESIS)


def test_every_field_is_covered_by_the_hash() -> None:
    original = event_hash(event(1), GENESIS)
    for name, value in {
        "id": 9,
        "occurred_at": T0,
        "category": "DeploymentFailed",
        "actor_id": 5,
        "actor": "mallory",
        "on_behalf_of": "bob",
        "ip_address": "10.0.0.2",
        "user_agent": "curl",
        "message": "nothing happened",
        "project_id": 7,
        "environment_id": 8,
        "documents": ["Releases-1"],
        "details": {"b": 2, "a": [1, 2], "n": 1},
    }.items():
        assert event_hash(event(1, **{name: value}), GENESIS) != original, name
    assert event_hash(event(1), "f" * 64) != original


def test_an_intact_chain_counts_its_events() -> None:
    check = walk(chain(10))
    assert check.finding is None and check.count == 10
    assert check.head is not None and check.head.id == 10


def test_an_altered_event_is_named() -> None:
    events = chain(10)
    events[4] = replace(events[4], message="something else")
    finding = walk(events).finding
    assert finding is not None
    assert (finding.event_id, finding.kind) == (5, "altered")
    assert "Events-5 was altered" in finding.message


def test_an_altered_and_rehashed_event_breaks_the_next_link() -> None:
    events = chain(10)
    forged = replace(events[4], message="something else")
    events[4] = replace(forged, hash=event_hash(forged, forged.prev_hash or ""))
    finding = walk(events).finding
    assert finding is not None and finding.event_id == 6
    assert "the event before Events-6 is missing or was altered" in finding.message


def test_a_removed_event_is_named_by_the_gap() -> None:
    events = chain(10)
    del events[3]
    finding = walk(events).finding
    assert finding is not None
    assert (finding.event_id, finding.kind) == (5, "removed")
    assert (
        finding.message == "the event before Events-5 is missing or was altered: Events-4 removed"
    )


def test_removing_the_first_events_is_caught() -> None:
    finding = walk(chain(10)[2:]).finding
    assert finding is not None and finding.kind == "removed"
    assert "Events-1 to Events-2 removed" in finding.message


def test_an_inserted_event_is_caught_even_with_a_valid_hash() -> None:
    events = chain(10)
    # The forger renumbers events 5..10 to make room and computes the intruder's hash
    # correctly; the renumbered events no longer match theirs (the hash covers the id).
    intruder = replace(event(5, message="forged approval"), prev_hash=events[3].hash)
    intruder = replace(intruder, hash=event_hash(intruder, events[3].hash or ""))
    shifted = [replace(e, id=e.id + 1) for e in events[4:]]
    finding = walk([*events[:4], intruder, *shifted]).finding
    assert finding is not None and finding.event_id == 6


def test_an_event_inserted_into_a_gap_is_named() -> None:
    # A chain with gaps between ids (as a forger might find after a renumbering of their own):
    # the intruder links to its predecessor, but its successor still links past it.
    spaced: list[EventRecord] = []
    prev = GENESIS
    for n in range(1, 11):
        e = replace(event(n * 10), prev_hash=prev)
        e = replace(e, hash=event_hash(e, prev))
        spaced.append(e)
        prev = e.hash or ""
    intruder = replace(event(45, message="forged approval"), prev_hash=spaced[3].hash)
    intruder = replace(intruder, hash=event_hash(intruder, spaced[3].hash or ""))
    finding = walk([*spaced[:4], intruder, *spaced[4:]]).finding
    assert finding is not None
    assert (finding.event_id, finding.kind) == (45, "inserted")
    assert finding.message == "Events-45 was inserted: Events-50 is chained to Events-40"


def test_a_forged_event_without_a_valid_hash_is_named() -> None:
    events = chain(5)
    forged = event(6, prev_hash=events[-1].hash, hash="0" * 64)
    finding = walk([*events, forged]).finding
    assert finding is not None and (finding.event_id, finding.kind) == (6, "altered")


def test_a_missing_hash_after_the_chain_started_is_tampering() -> None:
    events = chain(5)
    events[2] = replace(events[2], hash=None)
    finding = walk(events).finding
    assert finding is not None and (finding.event_id, finding.kind) == (3, "unhashed")


def test_events_from_before_the_chain_are_counted_as_unchained() -> None:
    legacy = [event(1), event(2)]
    prev = GENESIS
    rest = []
    for n in range(3, 6):
        e = replace(event(n), prev_hash=prev)
        e = replace(e, hash=event_hash(e, prev))
        rest.append(e)
        prev = e.hash or ""
    check = walk([*legacy, *rest])
    assert check.finding is None and check.unchained == 2 and check.count == 5


# ---------------------------------------------------------------- scopes

ROLE = frozenset({perms.Permission.EventView})
PROJECTS = [
    perms.ProjectRef("Web", "Shop"),
    perms.ProjectRef("Database", "Shop"),
    perms.ProjectRef("Ops", "Tools"),
]
ENVS = ["Dev", "Test", "Prod"]


def principal(*grants: perms.Grant, active: bool = True) -> perms.Principal:
    return perms.Principal("reader", active, grants)


def test_an_unscoped_grant_sees_everything() -> None:
    assert event_scopes(principal(perms.Grant("T", "Auditor", ROLE)), PROJECTS, ENVS) is None


def test_scoped_grants_each_keep_their_own_scope() -> None:
    web = perms.Grant("A", "Viewer", ROLE, projects=frozenset({"web"}))
    shop_prod = perms.Grant(
        "B", "Viewer", ROLE, project_groups=frozenset({"Shop"}), environments=frozenset({"Prod"})
    )
    no_events = perms.Grant("C", "Deployer", frozenset({perms.Permission.DeploymentCreate}))
    scopes = event_scopes(principal(web, shop_prod, no_events), PROJECTS, ENVS)
    assert scopes == [
        EventScope(frozenset({"Web"}), None),
        EventScope(frozenset({"Web", "Database"}), frozenset({"Prod"})),
    ]


def test_nobody_inactive_or_without_the_permission_sees_anything() -> None:
    grant = perms.Grant("T", "Auditor", ROLE)
    assert event_scopes(principal(grant, active=False), PROJECTS, ENVS) == []
    assert event_scopes(principal(), PROJECTS, ENVS) == []


@pytest.mark.parametrize(
    "details",
    [{}, {"note": 'quotes " and \\ and \u2603 and \n'}, {"z": [1, {"b": None, "a": 2.5}], "id": 7}],
)
def test_the_parts_the_database_fills_in_give_the_canonical_form(details: dict[str, Any]) -> None:
    """PostgreSQL appends an event in one statement: it fills the id, the time and the previous
    hash into the canonical form cut by `canonical_parts`, and hashes it. Joined, the parts must
    be the canonical form to the byte, whatever the event holds."""
    event = EventRecord(
        id=41,
        occurred_at=datetime(2026, 11, 30, 21, 0, 1, 2, tzinfo=UTC),
        category="DeploymentQueued",
        actor_id=None,
        actor='o"brien\u00e9',
        on_behalf_of="alice",
        ip_address=None,
        user_agent="curl/8",
        message="deployed\tit",
        project_id=3,
        environment_id=None,
        documents=["ServerTasks-2", "Deployments-1"],
        details=plain_json(details),
    )
    parts = canonical_parts(event)
    joined = parts.joined(41, utc_text(event.occurred_at), "ab" * 32)
    assert joined == canonical(event, "ab" * 32)
