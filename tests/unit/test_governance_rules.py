"""The environment checks' rules (conveyor.domain.governance), without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.domain import governance as gov
from conveyor.domain import inputs
from conveyor.domain import permissions as perms
from conveyor.domain.documents import (
    ApprovalCheck,
    ChangeWindow,
    Environment,
    EnvironmentChecks,
    Freeze,
    InputField,
    TeamQuorum,
    User,
)
from conveyor.domain.errors import ValidationFailed

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # a Wednesday
SUBJECT = gov.Subject(perms.ProjectRef("Web", "Apps"), "Prod", digest="d1")


def approval(user: str, *, hours: float = 1, digest: str = "d1", revoked: bool = False) -> Any:
    return gov.Approval(
        id=1,
        username=user,
        given_at=NOW - timedelta(hours=hours),
        expires_at=NOW - timedelta(hours=hours) + timedelta(hours=72),
        digest=digest,
        revoked=revoked,
    )


def test_a_window_past_midnight_in_its_own_time_zone() -> None:
    night = ChangeWindow(start="22:00", end="02:00", days=("fri",), time_zone="Europe/Berlin")
    # Friday 22:30 in Berlin is 21:30 UTC (winter); Saturday 01:59 Berlin is still inside.
    inside = gov.window_state([night], datetime(2026, 12, 4, 21, 30, tzinfo=UTC))
    assert inside.open and inside.until == datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
    late = gov.window_state([night], datetime(2026, 12, 5, 0, 59, tzinfo=UTC))
    assert late.open
    after = gov.window_state([night], datetime(2026, 12, 5, 1, 0, tzinfo=UTC))
    assert not after.open and after.until == datetime(2026, 12, 11, 21, 0, tzinfo=UTC)


def test_a_window_follows_summer_time() -> None:
    morning = ChangeWindow(start="09:00", end="10:00", time_zone="Europe/Berlin")
    summer = gov.window_state([morning], datetime(2026, 7, 1, 7, 30, tzinfo=UTC))
    winter = gov.window_state([morning], datetime(2026, 12, 1, 7, 30, tzinfo=UTC))
    assert summer.open and not winter.open


def test_the_freeze_that_ends_last_is_in_force() -> None:
    freezes = [
        Freeze("Short", "2026-12-01T00:00:00Z", "2026-12-03T00:00:00Z"),
        Freeze("Long", "2026-12-01T00:00:00+01:00", "2026-12-10T00:00:00Z"),
        Freeze("Later", "2026-12-20T00:00:00Z", "2026-12-21T00:00:00Z"),
    ]
    found = gov.active_freeze(freezes, NOW)
    assert found is not None and found[0].name == "Long"
    assert gov.active_freeze(freezes, datetime(2026, 12, 10, tzinfo=UTC)) is None  # end excluded


def test_one_approver_counts_for_one_team_only() -> None:
    check = ApprovalCheck((TeamQuorum("QA"), TeamQuorum("Owners")))
    teams = {"both": {"qa", "owners"}, "qa1": {"qa"}}
    result, _ = gov.judge_approvals(check, SUBJECT, [approval("both")], {}, teams, NOW)
    assert result.state is gov.CheckState.PENDING
    # With a second person from QA the one in both teams fills the Owners place.
    two = [approval("both"), approval("qa1")]
    result, _ = gov.judge_approvals(check, SUBJECT, two, {}, teams, NOW)
    assert result.passed and "Owners: both" in result.reason and "QA: qa1" in result.reason


def test_a_quorum_needs_distinct_people() -> None:
    check = ApprovalCheck((TeamQuorum("QA", 2),))
    teams = {"a": {"qa"}, "b": {"qa"}}
    once, _ = gov.judge_approvals(check, SUBJECT, [approval("a"), approval("a")], {}, teams, NOW)
    assert not once.passed and "QA 1 of 2" in once.reason
    twice, _ = gov.judge_approvals(check, SUBJECT, [approval("a"), approval("b")], {}, teams, NOW)
    assert twice.passed


@pytest.mark.parametrize(
    ("given", "subject", "why"),
    [
        (approval("a", revoked=True), SUBJECT, "revoked"),
        (approval("a", hours=73), SUBJECT, "expired"),
        (approval("a", digest="old"), SUBJECT, "before it changed"),
        (approval("a"), gov.Subject(SUBJECT.project, "Prod", "d1", "", "a"), "queued this"),
        (approval("a"), gov.Subject(SUBJECT.project, "Prod", "d1", "a"), "created this release"),
        (
            approval("a"),
            gov.Subject(SUBJECT.project, "Prod", "d1", commit_authors=("Ann <ann@x.example>",)),
            "wrote commits",
        ),
    ],
)
def test_what_does_not_count(given: Any, subject: gov.Subject, why: str) -> None:
    check = ApprovalCheck((TeamQuorum("QA"),))
    users = {"a": User("a", email="ann@x.example")}
    result, judged = gov.judge_approvals(check, subject, [given], users, {"a": {"qa"}}, NOW)
    assert not result.passed and why in judged[0].reason and why in result.reason


def test_creator_and_commit_authors_count_when_the_check_allows_it() -> None:
    check = ApprovalCheck((TeamQuorum("QA"),), block_creator=False, block_commit_authors=False)
    subject = gov.Subject(SUBJECT.project, "Prod", "d1", "a", "a", ("a",))
    result, _ = gov.judge_approvals(check, subject, [approval("a")], {}, {"a": {"qa"}}, NOW)
    assert result.passed


def test_authorship_by_email_username_or_display_name() -> None:
    user = User("dana", display_name="Dana Developer", email="Dana@Shop.example")
    assert gov.authored(user, "dana", ["Someone <dana@shop.example>"])
    assert gov.authored(user, "dana", ["Dana Developer"])
    assert gov.authored(None, "dana", ["dana <other@x.example>"])
    assert not gov.authored(user, "dana", ["Danielle <dani@shop.example>"])


def test_evaluate_in_the_order_a_person_asks() -> None:
    checks = (
        EnvironmentChecks(
            approval=ApprovalCheck((TeamQuorum("QA"),)),
            windows=(ChangeWindow("09:00", "17:00", ("mon", "tue", "wed")),),
            freezes=(Freeze("Year end", "2026-12-20T00:00:00Z", "2027-01-04T00:00:00Z"),),
            run_latest=True,
        ),
    )
    start = NOW + timedelta(hours=1)
    subject = gov.Subject(SUBJECT.project, "Prod", "d1", start_at=start)
    done = gov.evaluate(checks, subject, [approval("q")], {}, {"q": {"qa"}}, NOW)
    kinds = [(r.kind.value, r.state.value) for r in done.results]
    assert kinds == [
        ("window", "pending"),  # the scheduled start
        ("freeze", "passed"),
        ("window", "passed"),
        ("approval", "passed"),
        ("run_latest", "passed"),
    ]
    assert not done.passed and "queued to start at 2026-12-02 11:00 UTC" in done.waiting_for()
    later = gov.evaluate(checks, subject, [approval("q")], {}, {"q": {"qa"}}, start)
    assert later.passed
    # Started too late: the window closed first.
    closed = gov.evaluate(checks, subject, [], {}, {}, datetime(2026, 12, 2, 17, 30, tzinfo=UTC))
    assert closed.expired.startswith("the change window closed")


def test_scheduling_rules() -> None:
    checks = (EnvironmentChecks(windows=(ChangeWindow("09:00", "17:00", ("wed",)),)),)
    assert "in the past" in gov.scheduled_problem(checks, NOW - timedelta(hours=2), NOW)
    assert "30 days" in gov.scheduled_problem(checks, NOW + timedelta(days=31), NOW)
    assert "outside the change window" in gov.scheduled_problem(
        checks, NOW + timedelta(days=1), NOW
    )
    assert gov.scheduled_problem(checks, NOW + timedelta(hours=3), NOW) is None


def test_checks_apply_by_project_group() -> None:
    apps = EnvironmentChecks(project_groups=("Apps",), run_latest=True)
    every = EnvironmentChecks(run_latest=True)
    env = Environment("Prod", checks=(apps, every))
    assert gov.applicable(env, "apps") == (apps, every)
    assert gov.applicable(env, "Tools") == (every,)


def test_may_approve_names_the_teams_and_the_permission() -> None:
    check = ApprovalCheck((TeamQuorum("QA"),))
    grant = perms.Grant(
        "QA", "Approver", frozenset({perms.Permission.InterruptionViewSubmitResponsible})
    )
    qa = perms.Principal("q", True, (grant,))
    assert gov.may_approve(qa, ["QA"], [check], SUBJECT, None).teams == ("QA",)
    outsider = gov.may_approve(qa, ["Dev"], [check], SUBJECT, None)
    assert not outsider.allowed and "only members of QA" in outsider.reason
    nobody = perms.Principal("n", True, ())
    assert not gov.may_approve(nobody, ["QA"], [check], SUBJECT, None).allowed


def test_invalid_checks_are_named_field_by_field() -> None:
    env = Environment(
        "Prod",
        checks=(
            EnvironmentChecks(
                project_groups=("Nope",),
                approval=ApprovalCheck(
                    (TeamQuorum("Ghosts", 0),), fields=(InputField("1bad", pattern="("),)
                ),
                windows=(ChangeWindow("9", "17:00", ("funday",), "Mars/Base"),),
                freezes=(Freeze("", "tomorrow", "2026-01-01T00:00:00"),),
            ),
            EnvironmentChecks(),
        ),
    )
    problems = {
        (p.where, p.message)
        for p in gov.checks_problems(env, ("environments", "Prod"), set(), set())
    }
    text = " | ".join(f"{w}: {m}" for w, m in sorted(problems))
    for expected in (
        'no project group "Nope"',
        'no team "Ghosts"',
        "quorum: must be at least 1",
        "must start with a letter",
        "is not a regular expression",
        '"9" is not a time of day',
        '"funday" is not a day',
        '"Mars/Base" is not a time zone',
        '"tomorrow" is not an instant',
        '2026-01-01T00:00:00" is not an instant',
        "name: is required",
        "checks nothing",
    ):
        assert expected in text, expected


def test_answers_are_checked_against_the_questions() -> None:
    fields = (
        InputField("Ticket", pattern="^CHG-[0-9]+$"),
        InputField("Risk", choices=("low", "high")),
        InputField("Why", required=False),
    )
    assert inputs.check_answers(fields, {"ticket": " CHG-7 ", "Risk": "low"}) == {
        "Ticket": "CHG-7",
        "Risk": "low",
    }
    with pytest.raises(ValidationFailed) as refused:
        inputs.check_answers(fields, {"Ticket": "7", "Risk": "medium", "Extra": "x"})
    where = {p.where for p in refused.value.problems}
    assert where == {"fields.Ticket", "fields.Risk", "fields.Extra"}
    assert inputs.parse_pairs(["A=b=c", "B="]) == {"A": "b=c", "B": ""}
    with pytest.raises(ValidationFailed, match="NAME=VALUE"):
        inputs.parse_pairs(["novalue"])
