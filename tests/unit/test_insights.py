"""The insights formulas on a constructed history whose answers are worked out by hand.

``HISTORY`` and ``RELEASES`` are shared with tests/integration/test_insights_sql.py, which puts
the same history in a database and checks that the SQL gives the same numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.domain import insights as ins

T0 = datetime(2026, 6, 1, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
D = timedelta(days=1)
SINCE, UNTIL = T0, T0 + 10 * D

# Web's releases 1..4 (numbers are their order), Api's release 5 (no build information).
RELEASES = [
    ins.Release(1, "Web", (T0 - 2 * H, T0 - H)),
    ins.Release(2, "Web", (T0 + D,)),
    ins.Release(3, "Web", (T0 + 2 * D,)),
    ins.Release(4, "Web", ()),
    ins.Release(5, "Api", ()),
]


def _d(
    id: int,
    env: str,
    release: int,
    state: str,
    end: datetime | None,
    run: timedelta = 10 * M,
    project: str = "Web",
    **extra: object,
) -> ins.Deployment:
    start = end - run if end is not None else None
    queued = extra.pop("queued", start or T0)
    return ins.Deployment(
        id,
        project,
        env,
        release,
        state,
        queued,
        start,
        end,
        **extra,  # type: ignore[arg-type]
    )


HISTORY = [
    # Web in Prod: the first deployment brings release 1 (earliest commit T0-2h).
    _d(1, "Prod", 1, "success", T0 + 70 * M),
    _d(2, "Prod", 2, "failed", T0 + D + 65 * M),
    # Brings release 2 (commit T0+1d); restores deployment 2.
    _d(3, "Prod", 2, "success", T0 + D + 130 * M),
    # Brings release 3, but a guided failure was ignored: a failure; and rolled back by 5.
    _d(4, "Prod", 3, "success", T0 + 2 * D + 3 * H, guided_failure_ignored=True),
    # The rollback: brings nothing, so its lead time is from its own release's commit.
    _d(5, "Prod", 2, "success", T0 + 2 * D + 4 * H),
    _d(6, "Prod", 4, "canceled", T0 + 2 * D + 5 * H),
    # Brings releases 3 and 4 (the environment had 2): lead time from T0+2d. It waited for an
    # approval given 20 minutes after it was queued, and for a manual intervention 30 minutes.
    _d(
        7,
        "Prod",
        4,
        "success",
        T0 + 3 * D,
        run=90 * M,
        queued=T0 + 3 * D - 2 * H,
        approval_waits=(
            ins.Wait("approval", ("Leads",), 20 * 60),
            ins.Wait("intervention", ("Ops", "QA"), 30 * 60),
        ),
    ),
    # Web in Dev: a failure nothing restored yet.
    _d(8, "Dev", 4, "failed", T0 + 4 * D),
    # Outside the range: counts nowhere.
    _d(9, "Prod", 4, "success", T0 + 11 * D),
    _d(10, "Dev", 5, "success", T0 + 5 * D, run=5 * M, project="Api"),
    _d(11, "Dev", 5, "executing", None, project="Api"),
]

WEB_PROD_LEADS = [
    3 * H + 10 * M,  # 1: T0-2h -> T0+1h10m
    2 * H + 10 * M,  # 3: T0+1d -> T0+1d2h10m
    3 * H,  # 4: T0+2d -> T0+2d3h
    D + 4 * H,  # 5: its own release's commit T0+1d -> T0+2d4h
    D,  # 7: T0+2d -> T0+3d
]


def _facts() -> list[ins.Fact]:
    return ins.facts(HISTORY, RELEASES, SINCE, UNTIL)


def test_which_deployments_count_and_which_failed() -> None:
    found = {f.deployment.id: f for f in _facts()}
    assert sorted(found) == [1, 2, 3, 4, 5, 7, 8, 10]  # not canceled, running or outside
    assert sorted(i for i, f in found.items() if f.failure) == [2, 4, 8]


def test_a_success_followed_by_a_rollback_is_a_failure() -> None:
    history = [
        _d(1, "Prod", 2, "success", T0 + H),
        _d(2, "Prod", 1, "success", T0 + 2 * H),  # back to an earlier release
    ]
    found = {f.deployment.id: f.failure for f in ins.facts(history, RELEASES, SINCE, UNTIL)}
    assert found == {1: True, 2: False}
    # A rollback canceled before it ran undid nothing.
    canceled = [
        _d(1, "Prod", 2, "success", T0 + H),
        _d(2, "Prod", 1, "canceled", T0 + 2 * H),
        _d(3, "Prod", 3, "success", T0 + 3 * H),
    ]
    found = {f.deployment.id: f.failure for f in ins.facts(canceled, RELEASES, SINCE, UNTIL)}
    assert found == {1: False, 3: False}


def test_lead_time_is_from_the_earliest_commit_the_deployment_brings() -> None:
    leads = {f.deployment.id: f.lead_seconds for f in _facts()}
    expected = dict(zip([1, 3, 4, 5, 7], WEB_PROD_LEADS, strict=True))
    assert leads == {
        **{i: s.total_seconds() for i, s in expected.items()},
        2: None,  # failed: no change reached the environment
        8: None,
        10: None,  # no build information
    }


def test_time_to_restore_groups_the_failures_one_success_restores() -> None:
    totals = ins.totals(_facts())
    # 2 (T0+1d1h05m) restored by 3 (T0+1d2h10m); 4 (T0+2d3h) by 5 (T0+2d4h); 8 still open.
    assert (totals.restored, totals.open_failures) == (2, 1)
    assert totals.restore_seconds == (65 * M + H).total_seconds()
    failures_in_a_row = [
        _d(1, "Prod", 1, "failed", T0 + H),
        _d(2, "Prod", 1, "failed", T0 + 2 * H),
        _d(3, "Prod", 1, "success", T0 + 4 * H),
    ]
    streak = ins.totals(ins.facts(failures_in_a_row, RELEASES, SINCE, UNTIL))
    assert (streak.restored, streak.restore_seconds) == (1, (3 * H).total_seconds())


def test_the_metrics_of_the_history() -> None:
    web_prod = [
        f for f in _facts() if (f.deployment.project, f.deployment.environment) == ("Web", "Prod")
    ]
    m = ins.metrics(ins.totals(web_prod), ins.Window(SINCE, UNTIL))
    leads = [s.total_seconds() for s in WEB_PROD_LEADS]
    assert (m.deployments, m.successes, m.failures) == (6, 5, 2)
    assert m.deployment_frequency == pytest.approx(0.5)  # 5 successes in 10 days
    assert m.change_failure_rate == pytest.approx(2 / 6)
    assert m.lead_time_seconds == pytest.approx(sum(leads) / 5)
    assert m.time_to_restore_seconds == pytest.approx((65 * 60 + 3600) / 2)
    # Five runs of 10 minutes and one of 90.
    assert m.duration_seconds == pytest.approx((5 * 600 + 5400) / 6)
    # 7 waited 20 minutes held for the approval, then 30 for the intervention.
    assert m.approvals_share_of_lead_time == pytest.approx(3000 / sum(leads))


def test_waiting_per_team_counts_each_team_asked() -> None:
    waits = {w.team: (w.waits, w.seconds) for w in ins.team_waits(_facts())}
    assert waits == {"QA": (1, 1800), "Ops": (1, 1800), "Leads": (1, 1200)}
    no_team = ins.Wait("intervention", (), 60)
    assert ins.deployment_wait([no_team, no_team]) == 120
    assert (
        ins.deployment_wait([ins.Wait("approval", ("A",), 60), ins.Wait("approval", ("B",), 90)])
        == 90
    )


def test_no_deployments_give_no_rates() -> None:
    m = ins.metrics(ins.Totals(), ins.Window(SINCE, UNTIL))
    assert m.change_failure_rate is None and m.lead_time_seconds is None
    assert m.deployment_frequency == 0


def test_the_window() -> None:
    assert ins.window(None, None, T0) == (T0 - 30 * D, T0)
    with pytest.raises(ValueError, match="before"):
        ins.window(T0, T0, T0)
    with pytest.raises(ValueError, match="shorter"):
        ins.window(T0 - 5000 * D, T0, T0)


def test_readable() -> None:
    assert [ins.readable_seconds(s) for s in (None, 5, 60, 3725, 90000)] == [
        "—",
        "5s",
        "1m",
        "1h 2m",
        "1d 1h",
    ]
    assert ins.readable_share(0.25) == "25.0%"


def test_what_a_release_keeps_of_its_commits_for_lead_times() -> None:
    build = {
        "commit": "bbbbbbb",
        "commits": [
            {"sha": "aaaaaaa", "timestamp": "2026-06-01T12:00:00+02:00"},
            {"sha": "bbbbbbb", "timestamp": "2026-06-01T11:00:00Z"},
            {"sha": "ccccccc", "timestamp": "2026-06-01T13:00:00Z"},
            {"sha": "ddddddd", "timestamp": "not a time"},
            {"sha": "eeeeeee"},
        ],
    }
    assert ins.commit_columns(build) == {
        "first_commit_at": T0 + 10 * H,  # 12:00 at +02:00
        "commit_at": T0 + 11 * H,  # the release's own commit, not the newest
    }
    assert ins.commit_columns({**build, "commit": None})["commit_at"] == T0 + 13 * H
    assert ins.commit_columns({}) == {"first_commit_at": None, "commit_at": None}
    assert ins.commit_columns(None) == {"first_commit_at": None, "commit_at": None}


def test_which_facts_a_deployments_end_rewrites() -> None:
    # The success before it (a rollback makes it a failure) and the failures since (restored).
    assert ins.refreshed_span(9, True, 4, None) == (4, 9)
    assert ins.refreshed_span(9, False, 4, None) == (4, 9)
    # No success before: every earlier one of the pair may be a failure it restores.
    assert ins.refreshed_span(9, True, None, None) == (0, 9)
    # Ending after a later success: that one's lead time now starts from this one.
    assert ins.refreshed_span(9, True, 4, 12) == (4, 12)
    # A failure changes nothing after it.
    assert ins.refreshed_span(9, False, 4, 12) == (4, 9)
