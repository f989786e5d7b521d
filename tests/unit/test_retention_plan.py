"""The retention planner: what the policies let go, and what they never touch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.domain.codec import decode, encode
from conveyor.domain.documents import Lifecycle, Phase, RetentionPolicy, RetentionUnit
from conveyor.domain.errors import Problem
from conveyor.domain.retention import (
    DeploymentFact,
    Facts,
    PackageFact,
    ReleaseFact,
    plan,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ITEMS2 = RetentionPolicy(2)


def lifecycle(
    dev: RetentionPolicy | None = ITEMS2,
    prod: RetentionPolicy | None = None,
    default: RetentionPolicy | None = None,
    logs: RetentionPolicy | None = None,
    packages: RetentionPolicy | None = None,
) -> Lifecycle:
    return Lifecycle(
        "Normal",
        (
            Phase("Development", ("Dev",), release_retention=dev),
            Phase("Production", ("Prod",), release_retention=prod),
        ),
        release_retention=default,
        task_log_retention=logs,
        package_retention=packages,
    )


def releases(n: int, project: str = "Web", **kw: object) -> list[ReleaseFact]:
    return [
        ReleaseFact(i, project, f"1.0.{i}", NOW - timedelta(days=n - i), **kw)  # type: ignore[arg-type]
        for i in range(1, n + 1)
    ]


def deployed(release_ids: list[int], env: str = "Dev", start: int = 100) -> list[DeploymentFact]:
    return [
        DeploymentFact(start + i, rid, "Web", env, NOW - timedelta(hours=100 - i), task=start + i)
        for i, rid in enumerate(release_ids)
    ]


def test_keep_the_last_two_releases_of_a_phase_and_never_what_an_environment_runs() -> None:
    facts = Facts(
        NOW,
        {"Web": lifecycle()},
        releases=releases(6),
        deployments=deployed([1, 2, 3, 4, 5, 6]),
        # Dev runs 6; 5 was there before (rollback); 1 is pinned somewhere.
        current_deployments=frozenset({105, 104}),
        current_releases=frozenset({6, 5}),
        pinned_releases=frozenset({1}),
    )
    p = plan(facts)
    assert sorted(r.id for r in p.releases) == [2, 3, 4]
    assert sorted(d.id for d in p.deployments) == [101, 102, 103]
    reason = next(r.reason for r in p.releases if r.id == 2)
    assert reason == "Development keeps the last 2 releases"


def test_a_release_goes_only_when_every_phase_it_reached_lets_it_go() -> None:
    facts = Facts(
        NOW,
        {"Web": lifecycle(dev=RetentionPolicy(1), prod=RetentionPolicy(3))},
        releases=releases(5),
        deployments=deployed([1, 2, 3, 4, 5]) + deployed([1, 2], env="Prod", start=200),
    )
    # Dev keeps 5; Prod keeps 1 and 2 (its last 3 are all it has): 3 and 4 go.
    assert sorted(r.id for r in plan(facts).releases) == [3, 4]


def test_no_policy_keeps_everything_forever() -> None:
    facts = Facts(
        NOW,
        {"Web": lifecycle(dev=None)},
        releases=releases(5),
        deployments=deployed([1, 2, 3, 4, 5]),
    )
    assert plan(facts).empty
    # A project the facts give no lifecycle for keeps everything too.
    assert plan(Facts(NOW, {}, releases=releases(3), deployments=deployed([1, 2, 3]))).empty


def test_undeployed_releases_follow_the_lifecycle_default_and_days_count_from_creation() -> None:
    facts = Facts(
        NOW,
        {"Web": lifecycle(default=RetentionPolicy(2, RetentionUnit.DAYS))},
        releases=releases(5),  # created 4, 3, 2, 1 and 0 days ago
    )
    p = plan(facts)
    assert sorted(r.id for r in p.releases) == [1, 2]
    assert p.releases[0].reason.startswith("deployed nowhere")


def test_children_of_kept_releases_and_active_deployments_stay() -> None:
    db = [ReleaseFact(i, "Database", f"2.0.{i}", NOW) for i in (10, 11, 12, 13)]
    train = [
        ReleaseFact(20, "Train", "1.0.0", NOW, children=(10,)),
        ReleaseFact(21, "Train", "1.0.1", NOW, children=(11,)),
    ]
    lc = lifecycle(dev=RetentionPolicy(1))
    dep = [
        DeploymentFact(1 + i, rid, "Database", "Dev", NOW - timedelta(hours=10 - i), task=i)
        for i, rid in enumerate((10, 11, 12, 13))
    ]
    dep += [
        DeploymentFact(9, 20, "Train", "Dev", NOW, task=9),
        DeploymentFact(8, 21, "Train", "Dev", NOW, task=8),
        # Database 12 is being deployed (still running) to Prod.
        DeploymentFact(7, 12, "Database", "Prod", NOW, finished=False, task=7),
    ]
    facts = Facts(NOW, {"Database": lc, "Train": lc}, releases=db + train, deployments=dep)
    p = plan(facts)
    # Train keeps 1.0.1 (id 21, its newest in Dev) -> Database 11 stays; 13 is Database's
    # newest; 12 is running. Train 20 goes, and with it nothing keeps Database 10.
    assert sorted(r.id for r in p.releases) == [10, 20]


def test_redeployments_of_a_kept_release_are_pruned_but_its_newest_stays() -> None:
    facts = Facts(
        NOW,
        {"Web": lifecycle()},
        releases=releases(2),
        deployments=deployed([1, 2, 2, 2, 2]),  # 100..104: release 2 deployed four times
        current_deployments=frozenset({104}),
        current_releases=frozenset({2}),
    )
    p = plan(facts)
    assert p.releases == ()
    # The last 2 deployments (104, 103) stay, 100 is the newest of release 1: 101, 102 go.
    assert [d.id for d in p.deployments] == [101, 102]


def test_task_logs_go_from_older_deployments_but_never_the_current_one() -> None:
    facts = Facts(
        NOW,
        {"Web": lifecycle(dev=None, logs=RetentionPolicy(1))},
        releases=releases(4),
        deployments=[
            *deployed([1, 2, 3, 4]),
            DeploymentFact(120, 1, "Web", "Dev", NOW, task=120, has_log=False),
        ],
        current_deployments=frozenset({101}),
    )
    p = plan(facts)
    assert p.releases == () and p.deployments == ()
    # 120 is newest (kept; it has no log anyway); 101 is current; 100, 102 and 103 lose theirs.
    assert [x.id for x in p.task_logs] == [100, 102, 103]


def test_package_versions_go_unless_a_kept_release_pinned_them_or_a_policy_keeps_them() -> None:
    rels = [
        ReleaseFact(1, "Web", "1.0.1", NOW, packages=(("Acme.Web", "1.0.1"),)),
        ReleaseFact(2, "Web", "1.0.2", NOW, packages=(("acme.web", "1.0.2"),)),
    ]
    pkgs = [
        PackageFact(i, "Acme.Web", f"1.0.{i}", NOW - timedelta(days=10), size=100)
        for i in range(1, 6)
    ]
    pkgs.append(PackageFact(9, "Other", "1.0.0", NOW - timedelta(days=10)))
    facts = Facts(
        NOW,
        {"Web": lifecycle(dev=None, packages=RetentionPolicy(1))},
        releases=rels,
        packages=pkgs,
        package_users={"acme.web": frozenset({"Web"})},
        other_pins=frozenset({("ACME.WEB", "1.0.3")}),
    )
    p = plan(facts)
    # 1.0.5 is the newest (kept); 1, 2 pinned by kept releases; 3 by another project's release.
    # "Other" is used by no project: kept.
    assert [x.id for x in p.packages] == [4]
    assert p.packages[0].size == 100
    # A second user of the package whose lifecycle has no package policy keeps every version.
    users = {"acme.web": frozenset({"Web", "Api"})}
    both = Facts(
        NOW,
        {"Web": facts.lifecycles["Web"], "Api": lifecycle(dev=None)},
        releases=rels,
        packages=pkgs,
        package_users=users,
    )
    assert plan(both).packages == ()


def test_policies_round_trip_through_config_as_code_and_bad_ones_are_explained() -> None:
    data = {
        "name": "Normal",
        "release_retention": {"keep": 10, "unit": "items"},
        "task_log_retention": {"keep": 30, "unit": "days"},
        "package_retention": {"keep": 5, "unit": "items"},
        "phases": [
            {"name": "Dev", "environments": ["Dev"], "release_retention": {"keep": 2}},
        ],
    }
    problems: list[Problem] = []
    lc = decode("lifecycles", data, ("lifecycles", 0), problems)
    assert problems == [] and isinstance(lc, Lifecycle)
    assert lc.phases[0].release_retention == RetentionPolicy(2)
    assert lc.task_log_retention == RetentionPolicy(30, RetentionUnit.DAYS)
    again = encode("lifecycles", lc)
    assert again["phases"][0]["release_retention"] == {"keep": 2, "unit": "items"}
    assert again["package_retention"] == {"keep": 5, "unit": "items"}

    bad = {
        "name": "Bad",
        "release_retention": {"keep": 0, "unit": "weeks"},
        "phases": [{"name": "Dev", "environments": ["Dev"], "package_retention": {"keep": 1}}],
    }
    problems = []
    assert decode("lifecycles", bad, ("lifecycles", 0), problems) is None
    said = {(p.path[-1], p.message.split(" (")[0]) for p in problems}
    assert ("keep", "must be at least 1") in said
    assert ("unit", '"weeks" is not one of: items, days') in said
    assert any(p.path[-1] == "package_retention" for p in problems)


def test_the_plan_is_for_administrators_and_those_who_read_everything() -> None:
    from conveyor.domain import permissions as perms
    from conveyor.domain.retention import may_read_plan

    P = perms.Permission
    reads = frozenset({P.ReleaseView, P.DeploymentView})

    def holding(*grants: perms.Grant) -> perms.Principal:
        return perms.Principal("someone", True, grants)

    assert may_read_plan(holding(perms.Grant("Ops", "Admin", frozenset({P.AdministerSystem}))))
    assert may_read_plan(holding(perms.Grant("Audit", "Auditor", reads)))
    # Held in a scope only: the plan would show what is outside it.
    assert not may_read_plan(holding(perms.Grant("Dev", "V", reads, projects=frozenset({"web"}))))
    assert not may_read_plan(
        holding(perms.Grant("Dev", "V", reads, environments=frozenset({"Test"})))
    )
    assert not may_read_plan(holding(perms.Grant("Audit", "R", frozenset({P.ReleaseView}))))


# ---------------------------------------------------------------- channels (issue 16, item 2)


def channel_release(i: int, channel: str, days_ago: float = 0) -> ReleaseFact:
    return ReleaseFact(i, "Web", f"{i}.0.0", NOW - timedelta(days=days_ago), channel=channel)


def test_each_channel_keeps_its_own_last_n_releases() -> None:
    # Main 1, 2, 4, 6 and Hotfix 3, 5 all reach Dev, interleaved; Dev keeps the last 2.
    lines = {1: "Default", 2: "Default", 3: "Hotfix", 4: "Default", 5: "Hotfix", 6: "default"}
    facts = Facts(
        NOW,
        {"Web": lifecycle()},
        releases=[channel_release(i, ch) for i, ch in lines.items()],
        deployments=deployed([1, 2, 3, 4, 5, 6]),
    )
    p = plan(facts)
    # Counted together, 5 and 6 would push out the main line's 4 and the hotfixes' 3.
    assert sorted(r.id for r in p.releases) == [1, 2]
    assert p.releases[0].reason == "Development keeps the last 2 releases in channel Default"
    # A new hotfix pushes out only the oldest hotfix.
    more = Facts(
        NOW,
        facts.lifecycles,
        releases=[*facts.releases, channel_release(7, "Hotfix")],
        deployments=[*facts.deployments, *deployed([7], start=200)],
    )
    assert sorted(r.id for r in plan(more).releases) == [1, 2, 3]


def test_a_channel_with_its_own_lifecycle_follows_that_lifecycle() -> None:
    hotfix = Lifecycle(
        "Hotfix",
        (Phase("Development", ("Dev",)), Phase("Production", ("Prod",))),
        release_retention=RetentionPolicy(1),
    )
    facts = Facts(
        NOW,
        {"Web": lifecycle(dev=RetentionPolicy(3))},
        releases=[channel_release(i, "Hotfix" if i % 2 else "Default") for i in range(1, 9)],
        deployments=deployed(list(range(1, 9))),
        channel_lifecycles={("Web", "hotfix"): hotfix},
    )
    p = plan(facts)
    # Hotfix 1, 3, 5, 7 keeps only 7, and 5 before it in Dev (its dashboard line's rollback);
    # the main line 2, 4, 6, 8 keeps its last 3.
    assert sorted(r.id for r in p.releases) == [1, 2, 3]
    reason = next(r.reason for r in p.releases if r.id == 3)
    assert reason == "Development keeps the last release in channel Hotfix"


def test_what_each_channels_dashboard_line_shows_stays_under_a_days_policy() -> None:
    days = RetentionPolicy(1, RetentionUnit.DAYS)
    old = NOW - timedelta(days=10)
    facts = Facts(
        NOW,
        {"Web": lifecycle(dev=days, prod=days)},
        releases=[
            channel_release(1, "Hotfix", 30),
            channel_release(2, "Hotfix", 20),
            channel_release(3, "Default", 12),
            channel_release(4, "Default", 11),
            channel_release(5, "Default", 10),
        ],
        deployments=[
            DeploymentFact(10, 1, "Web", "Prod", old - timedelta(days=5), task=10),
            DeploymentFact(11, 2, "Web", "Prod", old - timedelta(days=4), task=11),
            DeploymentFact(12, 3, "Web", "Prod", old, task=12),
            DeploymentFact(13, 4, "Web", "Prod", old, task=13),
            DeploymentFact(14, 5, "Web", "Prod", old, task=14, succeeded=False),
        ],
        # The dashboard's one cell for Prod: 5 (failed) now, 4 before it.
        current_deployments=frozenset({14, 13}),
        current_releases=frozenset({5, 4}),
    )
    p = plan(facts)
    # The Hotfix line shows 2 in Prod (1 before it); the main line's last success is 4. Only 3,
    # neither current, previous nor last success anywhere, goes.
    assert [r.id for r in p.releases] == [3]
    assert (
        p.releases[0].reason
        == "Production keeps those deployed in the last 1 day in channel Default"
    )


# ---------------------------------------------------------------- inheritance (as Octopus)


def test_a_phase_without_a_policy_takes_the_nearest_earlier_phases() -> None:
    from conveyor.domain.retention import policy_source, release_policy, task_log_policy

    lc = Lifecycle(
        "Three",
        (
            Phase("Development", ("Dev",), release_retention=RetentionPolicy(1)),
            Phase("Test", ("Test",), release_retention=RetentionPolicy(3)),
            Phase("Production", ("Prod",), task_log_retention=RetentionPolicy(4)),
            Phase("Archive", ("Archive",)),
        ),
        release_retention=RetentionPolicy(10),
        task_log_retention=RetentionPolicy(20),
    )
    dev, test, prod, archive = lc.phases
    assert release_policy(lc, prod) == RetentionPolicy(3)  # Test's, not the lifecycle's 10
    assert release_policy(lc, archive) == RetentionPolicy(3)
    assert release_policy(lc, dev) == RetentionPolicy(1)
    assert task_log_policy(lc, dev) == RetentionPolicy(20)  # no earlier phase: the lifecycle's
    assert task_log_policy(lc, archive) == RetentionPolicy(4)
    assert release_policy(lc, None) == RetentionPolicy(10)
    assert policy_source(lc, prod, "release_retention") == "Test"
    assert policy_source(lc, test, "release_retention") == "own"
    assert policy_source(lc, dev, "task_log_retention") == "lifecycle"

    # Production, with no policy of its own, keeps Development's last 2 (not forever).
    facts = Facts(
        NOW,
        {"Web": lifecycle(dev=RetentionPolicy(2), prod=None)},
        releases=releases(5),
        deployments=deployed([1, 2, 3, 4, 5]) + deployed([1, 2, 3, 4, 5], "Prod", start=200),
    )
    p = plan(facts)
    assert sorted(r.id for r in p.releases) == [1, 2, 3]
    assert "Production keeps the last 2 releases" in p.releases[0].reason
