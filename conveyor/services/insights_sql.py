"""The SQL of the insights (``conveyor.services.insights``): one statement for the sums of the
deployments that ended in a range, one for the approval waits per team, spelt for SQLite or
PostgreSQL. The rules they follow are ``conveyor.domain.insights``; the tests check that the
two agree on a constructed history."""

from __future__ import annotations

from dataclasses import dataclass


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


_ENDED = "('success', 'failed', 'timed_out')"


def _ended(where: str) -> str:
    """The deployments that count: ended in the range, visible, as filtered."""
    return f"""
    SELECT d.id, d.project_id, d.environment_id, d.release_id, d.state, d.guided_failure,
           d.created_at, d.started_at, d.completed_at
    FROM deployments d
    WHERE d.completed_at >= :since AND d.completed_at < :until
      AND d.state IN {_ENDED}{where}"""


def sums_sql(q: Dialect, where: str) -> str:
    """The sums, from the deployments that ended in the range (``facts``)."""
    ep = q.epoch
    facts = _facts_by_probes if q.sqlite else _facts_by_sets
    return f"""
WITH d AS ({_ended(where)}
), {facts(q)}), g AS MATERIALIZED (
  SELECT f.*,
    CASE WHEN f.state = 'success' THEN f.done - COALESCE(
      (SELECT min({ep("r.first_commit_at")}) FROM releases r
       WHERE r.project_id = f.project_id AND r.id > COALESCE(f.had, 0)
       AND r.id <= f.release_id),
      (SELECT {ep("r.commit_at")} FROM releases r WHERE r.id = f.release_id)) END AS lead,
    CASE WHEN f.failure = 1 THEN
      (SELECT {ep("x.completed_at")} FROM deployments x
       WHERE x.project_id = f.project_id AND x.environment_id = f.environment_id
       AND x.id > f.id AND x.state = 'success' ORDER BY x.id LIMIT 1) END AS restored
  FROM f
), incidents AS (
  SELECT project_id, environment_id, restored, min(done) AS began
  FROM g WHERE failure = 1 GROUP BY project_id, environment_id, restored
)
SELECT 'pair' AS kind, project_id, environment_id, NULL AS day, count(*) AS n,
  sum(CASE WHEN state = 'success' THEN 1 ELSE 0 END) AS successes, sum(failure) AS failures,
  count(lead) AS lead_count, sum(lead) AS lead_sum,
  sum(CASE WHEN lead IS NOT NULL THEN waited ELSE 0 END) AS lead_waited,
  count(took) AS duration_count, sum(took) AS duration_sum,
  0 AS restored_count, 0 AS restore_sum, 0 AS open_count
FROM g GROUP BY project_id, environment_id
UNION ALL
SELECT 'day', NULL, NULL, {q.day("completed_at")}, count(*),
  sum(CASE WHEN state = 'success' THEN 1 ELSE 0 END), sum(failure),
  count(lead), sum(lead), 0, 0, 0, 0, 0, 0
FROM g GROUP BY {q.day("completed_at")}
UNION ALL
SELECT 'restore', project_id, environment_id, NULL, 0, 0, 0, 0, 0, 0, 0, 0,
  count(restored), sum(restored - began),
  sum(CASE WHEN restored IS NULL THEN 1 ELSE 0 END)
FROM incidents GROUP BY project_id, environment_id
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
            AND x.state IN {_ENDED} ORDER BY x.id LIMIT 1) < d.release_id THEN 1
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
    """``f`` as set operations: neighbours by window functions over the range (only the first
    and last of each project and environment look beyond it), interruptions and approvals by
    joins. On PostgreSQL, where a subquery per row costs far more than on SQLite."""
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
              AND x.state IN {_ENDED} ORDER BY x.id LIMIT 1)) < w.release_id THEN 1
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


def waits_sql(q: Dialect, where: str) -> str:
    ep = q.epoch
    return f"""
WITH d AS ({_ended(where)}
), w AS (
  SELECT COALESCE(tm.value, :no_team) AS team,
         {ep("i.answered_at")} - {ep("i.created_at")} AS seconds
  FROM d JOIN interruptions i ON i.deployment_id = d.id
  {q.teams("i.responsible_teams", "tm")}
  WHERE i.kind = 'manual_intervention' AND i.answered_at IS NOT NULL
  UNION ALL
  SELECT COALESCE(tm.value, :no_team), {ep("a.given_at")} - {ep("d.created_at")}
  FROM d JOIN approvals a ON a.release_id = d.release_id
    AND a.environment_id = d.environment_id AND a.revoked_at IS NULL
    AND a.given_at > d.created_at AND a.given_at <= COALESCE(d.started_at, d.completed_at)
  {q.teams("a.teams", "tm")}
)
SELECT team, count(*) AS waits, sum(seconds) AS seconds FROM w GROUP BY team
"""
