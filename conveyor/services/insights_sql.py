"""The SQL of the insights (``conveyor.services.insights``): sums of the per-deployment facts
written when each deployment ended (``conveyor.store.facts``), for those that ended in a range,
as ``where`` (a condition on ``d``) filters them: one statement for the sums per project and
environment, per day and of the restore incidents, one for the approval waits per team."""

from __future__ import annotations

from conveyor.store.facts import Dialect

__all__ = ["Dialect", "sums_sql", "waits_sql"]

_IN_RANGE = "d.completed_at >= :since AND d.completed_at < :until"


def sums_sql(q: Dialect, where: str) -> str:
    """Rows of (kind, project_id, environment_id, day, then the ``Totals`` in order). Each part
    reads one covering index in the order it groups by (``tables.deployment_facts``); the days
    of the range (``since_day``, ``until_day``: UTC, inclusive) let the days' part seek."""
    return f"""
SELECT 'pair' AS kind, project_id, environment_id, NULL AS day, count(*) AS n,
  sum(success) AS successes, sum(failure) AS failures,
  count(lead) AS lead_count, sum(lead) AS lead_sum,
  sum(CASE WHEN lead IS NOT NULL THEN waited ELSE 0 END) AS lead_waited,
  count(took) AS duration_count, sum(took) AS duration_sum,
  0 AS restored_count, 0 AS restore_sum, 0 AS open_count
FROM deployment_facts d WHERE {_IN_RANGE}{where}
GROUP BY project_id, environment_id
UNION ALL
SELECT 'day', NULL, NULL, day, count(*), sum(success), sum(failure),
  count(lead), sum(lead), 0, 0, 0, 0, 0, 0
FROM deployment_facts d
WHERE d.day >= :since_day AND d.day <= :until_day AND {_IN_RANGE}{where}
GROUP BY day
UNION ALL
SELECT 'restore', project_id, environment_id, NULL, 0, 0, 0, 0, 0, 0, 0, 0,
  count(restored_at), sum({q.epoch("restored_at")} - began),
  sum(CASE WHEN restored_at IS NULL THEN 1 ELSE 0 END)
FROM (
  -- An incident: the failures in the range that one success restored (or none yet).
  SELECT project_id, environment_id, restored_at, min({q.epoch("completed_at")}) AS began
  FROM deployment_facts d WHERE d.failure = 1 AND {_IN_RANGE}{where}
  GROUP BY project_id, environment_id, restored_at
) incidents
GROUP BY project_id, environment_id
"""


def waits_sql(where: str) -> str:
    return f"""
SELECT COALESCE(team, :no_team) AS team, count(*) AS waits, sum(seconds) AS seconds
FROM deployment_waits d WHERE {_IN_RANGE}{where}
GROUP BY COALESCE(team, :no_team)
"""
