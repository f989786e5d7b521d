"""Delivery insights' per-deployment facts (``deployment_facts``, ``deployment_waits``), so that
reading insights is a plain indexed aggregate (``conveyor.services.insights_sql``).

A deployment's facts are written in the transaction that ends it (``record``, from
``runs.write_task``), with those of the neighbours its end changes in its project and
environment (``conveyor.domain.insights.refreshed_span``): the success before it may now be
rolled back, failures before it restored, the next success bring fewer releases. ``rebuild``
computes every deployment's facts at once (the 0020 migration, the benchmark, tests): one SQL
computation (``_facts_sql``, ``_waits_sql``) serves both, restricted by a condition on ``d``.
The rules are ``conveyor.domain.insights``; the tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import insights as ins
from conveyor.store import tables as t


@dataclass(frozen=True)
class Dialect:
    """The few expressions SQLite and PostgreSQL spell differently."""

    sqlite: bool

    def epoch(self, column: str) -> str:
        """Seconds since the epoch (any origin: only differences are used)."""
        if self.sqlite:
            return f"(julianday({column}) * 86400.0)"
        return f"EXTRACT(EPOCH FROM {column})"

    def day(self, column: str) -> str:
        if self.sqlite:
            return f"substr({column}, 1, 10)"
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def teams(self, column: str, alias: str) -> str:
        """A LEFT JOIN of the team names in the JSON list ``column``, as ``alias.value``."""
        if self.sqlite:
            return f"LEFT JOIN json_each({column}) {alias} ON 1 = 1"
        return f"LEFT JOIN LATERAL json_array_elements_text({column}) {alias}(value) ON true"


ENDED = "(" + ", ".join(f"'{s}'" for s in ins.ENDED_STATES) + ")"


def _ended(where: str) -> str:
    """The deployments whose facts are computed: ended (not canceled), as ``where`` says."""
    return f"""
    SELECT d.id, d.project_id, d.environment_id, d.release_id, d.state, d.guided_failure,
           d.created_at, d.started_at, d.completed_at
    FROM deployments d
    WHERE d.completed_at IS NOT NULL AND d.state IN {ENDED}{where}"""


FACT_COLUMNS = (
    "deployment_id, project_id, environment_id, release_id, completed_at, day, success, "
    "failure, took, lead, waited, restored_at"
)


def _facts_sql(q: Dialect, where: str) -> str:
    """INSERT the facts of the deployments ``where`` picks (a condition on ``d``)."""
    ep = q.epoch
    facts = _facts_by_probes if q.sqlite else _facts_by_sets
    return f"""
INSERT INTO deployment_facts ({FACT_COLUMNS})
WITH d AS ({_ended(where)}
), {facts(q)})
SELECT f.id, f.project_id, f.environment_id, f.release_id, f.completed_at,
  {q.day("f.completed_at")}, CASE WHEN f.state = 'success' THEN 1 ELSE 0 END, f.failure,
  f.took,
  CASE WHEN f.state = 'success' THEN f.done - COALESCE(
    (SELECT min({ep("r.first_commit_at")}) FROM releases r
     WHERE r.project_id = f.project_id AND r.id > COALESCE(f.had, 0)
     AND r.id <= f.release_id),
    (SELECT {ep("r.commit_at")} FROM releases r WHERE r.id = f.release_id)) END,
  f.waited,
  CASE WHEN f.failure = 1 THEN
    (SELECT x.completed_at FROM deployments x
     WHERE x.project_id = f.project_id AND x.environment_id = f.environment_id
     AND x.id > f.id AND x.state = 'success' ORDER BY x.id LIMIT 1) END
FROM f
"""


def _facts_by_probes(q: Dialect) -> str:
    """``f``, each deployment's facts, looking up its neighbours in its project and environment,
    its interruptions and approvals one by one by index: on SQLite, where that measured faster
    than window functions and joins."""
    ep = q.epoch
    same = "x.project_id = d.project_id AND x.environment_id = d.environment_id"
    return f"""f AS MATERIALIZED (
  SELECT d.id, d.project_id, d.environment_id, d.release_id, d.state, d.completed_at,
    {ep("d.completed_at")} AS done,
    {ep("d.completed_at")} - {ep("d.started_at")} AS took,
    CASE WHEN d.state <> 'success' THEN 1
      WHEN d.guided_failure AND EXISTS (SELECT 1 FROM interruptions i WHERE i.deployment_id = d.id
                   AND i.kind = 'guided_failure' AND i.result = 'ignore') THEN 1
      WHEN (SELECT x.release_id FROM deployments x WHERE {same} AND x.id > d.id
            AND x.state IN {ENDED} ORDER BY x.id LIMIT 1) < d.release_id THEN 1
      ELSE 0 END AS failure,
    CASE WHEN d.state = 'success' THEN
      (SELECT x.release_id FROM deployments x WHERE {same} AND x.id < d.id
       AND x.state = 'success' ORDER BY x.id DESC LIMIT 1) END AS had,
    COALESCE((SELECT sum({ep("i.answered_at")} - {ep("i.created_at")}) FROM interruptions i
              WHERE i.deployment_id = d.id AND i.kind = 'manual_intervention'
              AND i.answered_at IS NOT NULL), 0)
    + COALESCE((SELECT max({ep("a.given_at")}) FROM approvals a
                WHERE a.release_id = d.release_id AND a.environment_id = d.environment_id
                AND a.revoked_at IS NULL AND a.given_at > d.created_at
                AND a.given_at <= COALESCE(d.started_at, d.completed_at))
               - {ep("d.created_at")}, 0) AS waited
  FROM d"""


# A deployment's number and its release's in one integer, so that one window function finds
# the release of the last success before each deployment.
_KEY = 4294967296


def _facts_by_sets(q: Dialect) -> str:
    """``f`` as set operations: neighbours by window functions over ``d`` (only the first and
    last of each project and environment look beyond it), interruptions and approvals by
    joins. On PostgreSQL, where a subquery per row costs far more than on SQLite. ``d`` must
    hold, per project and environment, ended deployments with no ended one between them."""
    ep = q.epoch
    same = "x.project_id = w.project_id AND x.environment_id = w.environment_id"
    return f"""w AS (
  SELECT d.*,
    LEAD(d.release_id) OVER pair AS next_release,
    MAX(CASE WHEN d.state = 'success' THEN d.id * {_KEY} + d.release_id END)
      OVER (pair ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS had_key
  FROM d
  WINDOW pair AS (PARTITION BY d.project_id, d.environment_id ORDER BY d.id)
), ignored AS (
  SELECT DISTINCT i.deployment_id FROM d JOIN interruptions i ON i.deployment_id = d.id
  WHERE i.kind = 'guided_failure' AND i.result = 'ignore'
), asked AS (
  SELECT i.deployment_id, sum({ep("i.answered_at")} - {ep("i.created_at")}) AS seconds
  FROM d JOIN interruptions i ON i.deployment_id = d.id
  WHERE i.kind = 'manual_intervention' AND i.answered_at IS NOT NULL
  GROUP BY i.deployment_id
), held AS (
  SELECT d.id, max({ep("a.given_at")}) - {ep("d.created_at")} AS seconds
  FROM d JOIN approvals a ON a.release_id = d.release_id
    AND a.environment_id = d.environment_id AND a.revoked_at IS NULL
    AND a.given_at > d.created_at AND a.given_at <= COALESCE(d.started_at, d.completed_at)
  GROUP BY d.id, d.created_at
), f AS MATERIALIZED (
  SELECT w.id, w.project_id, w.environment_id, w.release_id, w.state, w.completed_at,
    {ep("w.completed_at")} AS done,
    {ep("w.completed_at")} - {ep("w.started_at")} AS took,
    CASE WHEN w.state <> 'success' THEN 1
      WHEN ignored.deployment_id IS NOT NULL THEN 1
      WHEN COALESCE(w.next_release,
             (SELECT x.release_id FROM deployments x WHERE {same} AND x.id > w.id
              AND x.state IN {ENDED} ORDER BY x.id LIMIT 1)) < w.release_id THEN 1
      ELSE 0 END AS failure,
    CASE WHEN w.state = 'success' THEN COALESCE(w.had_key % {_KEY},
      (SELECT x.release_id FROM deployments x WHERE {same} AND x.id < w.id
       AND x.state = 'success' ORDER BY x.id DESC LIMIT 1)) END AS had,
    COALESCE(asked.seconds, 0) + COALESCE(held.seconds, 0) AS waited
  FROM w
  LEFT JOIN ignored ON ignored.deployment_id = w.id
  LEFT JOIN asked ON asked.deployment_id = w.id
  LEFT JOIN held ON held.id = w.id
"""


def _waits_sql(q: Dialect, where: str) -> str:
    """INSERT each approval wait of the deployments ``where`` picks, once per team (no team:
    NULL): answered manual interventions, and approvals given after a deployment was queued."""
    ep = q.epoch
    return f"""
INSERT INTO deployment_waits (deployment_id, project_id, environment_id, completed_at, team,
                              seconds)
WITH d AS ({_ended(where)})
SELECT d.id, d.project_id, d.environment_id, d.completed_at, tm.value,
       {ep("i.answered_at")} - {ep("i.created_at")}
FROM d JOIN interruptions i ON i.deployment_id = d.id
{q.teams("i.responsible_teams", "tm")}
WHERE i.kind = 'manual_intervention' AND i.answered_at IS NOT NULL
UNION ALL
SELECT d.id, d.project_id, d.environment_id, d.completed_at, tm.value,
       {ep("a.given_at")} - {ep("d.created_at")}
FROM d JOIN approvals a ON a.release_id = d.release_id
  AND a.environment_id = d.environment_id AND a.revoked_at IS NULL
  AND a.given_at > d.created_at AND a.given_at <= COALESCE(d.started_at, d.completed_at)
{q.teams("a.teams", "tm")}
"""


def rebuild_statements(sqlite: bool) -> list[str]:
    """Every deployment's facts and waits, anew."""
    q = Dialect(sqlite)
    return [
        "DELETE FROM deployment_waits",
        "DELETE FROM deployment_facts",
        _facts_sql(q, ""),
        _waits_sql(q, ""),
    ]


async def rebuild(session: AsyncSession, *, sqlite: bool) -> None:
    for statement in rebuild_statements(sqlite):
        await session.execute(text(statement))


def rebuild_sync(connection: Connection, *, sqlite: bool) -> None:
    """``rebuild`` on a synchronous connection (migrations, the benchmark's bulk load)."""
    for statement in rebuild_statements(sqlite):
        connection.execute(text(statement))


_PAIR = "\n      AND d.project_id = :project AND d.environment_id = :environment"
_SPAN = f"{_PAIR} AND d.id >= :low AND d.id <= :high"


async def record(
    session: AsyncSession,
    deployment_id: int,
    project_id: int,
    environment_id: int,
    succeeded: bool,
    *,
    sqlite: bool,
) -> None:
    """A deployment ended (success, failed or timed out): write its facts and waits, and
    rewrite those of the neighbours its end changes, in the caller's transaction."""
    d = t.deployments
    pair = (d.c.project_id == project_id, d.c.environment_id == environment_id)
    success = (*pair, d.c.state == ins.SUCCESS)
    before = (
        await session.execute(select(func.max(d.c.id)).where(*success, d.c.id < deployment_id))
    ).scalar()
    after = (
        await session.execute(select(func.min(d.c.id)).where(*success, d.c.id > deployment_id))
    ).scalar()
    low, high = ins.refreshed_span(deployment_id, succeeded, before, after)
    span: Mapping[str, Any] = {
        "project": project_id,
        "environment": environment_id,
        "low": low,
        "high": high,
    }
    # By the deployments' index of the pair: the facts' key alone would span other pairs.
    spanned = select(d.c.id).where(*pair, d.c.id.between(low, high)).scalar_subquery()
    f = t.deployment_facts
    await session.execute(delete(f).where(f.c.deployment_id.in_(spanned)))
    q = Dialect(sqlite)
    await session.execute(text(_facts_sql(q, _SPAN)), span)
    w = t.deployment_waits
    await session.execute(delete(w).where(w.c.deployment_id == deployment_id))
    await session.execute(
        text(_waits_sql(q, "\n      AND d.id = :deployment")), {"deployment": deployment_id}
    )


async def forget(session: AsyncSession, deployments: list[int]) -> None:
    """Retention: the facts and waits of deployments that go."""
    await session.execute(
        delete(t.deployment_waits).where(t.deployment_waits.c.deployment_id.in_(deployments))
    )
    await session.execute(
        delete(t.deployment_facts).where(t.deployment_facts.c.deployment_id.in_(deployments))
    )
