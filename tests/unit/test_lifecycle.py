from conveyor.domain.documents import Lifecycle, Phase
from conveyor.domain.lifecycle import (
    Attempt,
    LifecycleDecision,
    Outcome,
    PhaseProgress,
    PhaseState,
    allowed_environments,
    automatic_after_success,
    automatic_on_creation,
    can_deploy,
    progression,
)

# The Octo Pet Shop lifecycles: components start in Development, automatically; Deploy All in Test.
COMPONENTS = Lifecycle(
    name="Components",
    phases=(
        Phase("Development", ("Development",), automatic=("Development",)),
        Phase("Test", ("Test",)),
        Phase("Staging", ("Staging",)),
        Phase("Production", ("Production",)),
    ),
)
ORCHESTRATION = Lifecycle(
    name="Orchestration",
    phases=(
        Phase("Test", ("Test",)),
        Phase("Staging", ("Staging",)),
        Phase("Production", ("Production",)),
    ),
)


def ok(env: str) -> Attempt:
    return Attempt(env, Outcome.SUCCESS)


def failed(env: str) -> Attempt:
    return Attempt(env, Outcome.FAILED)


def running(env: str) -> Attempt:
    return Attempt(env, Outcome.RUNNING)


def states(lifecycle: Lifecycle, history: list[Attempt]) -> list[PhaseState]:
    return [p.state for p in progression(lifecycle, history)]


C, R, P = PhaseState.COMPLETE, PhaseState.CURRENT, PhaseState.PENDING


# --- Octo Pet Shop ---------------------------------------------------------------------------


def test_new_component_release_may_only_go_to_development() -> None:
    assert allowed_environments(COMPONENTS, []) == ["Development"]
    assert states(COMPONENTS, []) == [R, P, P, P]


def test_component_release_promotes_one_phase_at_a_time() -> None:
    history = [ok("Development")]
    assert allowed_environments(COMPONENTS, history) == ["Development", "Test"]
    history += [ok("Test")]
    assert allowed_environments(COMPONENTS, history) == ["Development", "Test", "Staging"]
    history += [ok("Staging"), ok("Production")]
    assert allowed_environments(COMPONENTS, history) == [
        "Development",
        "Test",
        "Staging",
        "Production",
    ]
    assert states(COMPONENTS, history) == [C, C, C, C]


def test_orchestration_starts_in_test() -> None:
    assert allowed_environments(ORCHESTRATION, []) == ["Test"]
    assert can_deploy(ORCHESTRATION, [], "Test").allowed


def test_refusal_names_the_missing_phase() -> None:
    decision = can_deploy(ORCHESTRATION, [], "Staging")
    assert decision == LifecycleDecision(
        False,
        'Staging is not allowed yet: phase "Test" must be complete first '
        "(needs a successful deployment to Test; none yet).",
    )


def test_refusal_names_the_first_incomplete_phase_not_the_previous_one() -> None:
    decision = can_deploy(COMPONENTS, [], "Production")
    assert not decision.allowed
    assert 'phase "Development" must be complete first' in decision.reason


def test_environment_outside_the_lifecycle_is_refused() -> None:
    decision = can_deploy(COMPONENTS, [ok("Development")], "QA")
    assert decision == LifecycleDecision(False, "QA is not part of lifecycle Components")


def test_names_match_case_insensitively_and_keep_the_lifecycle_spelling() -> None:
    assert can_deploy(ORCHESTRATION, [], "test").allowed
    assert allowed_environments(ORCHESTRATION, [ok("TEST")]) == ["Test", "Staging"]
    decision = can_deploy(ORCHESTRATION, [], "staging")
    assert decision.reason.startswith("Staging is not allowed yet")


# --- outcomes --------------------------------------------------------------------------------


def test_failed_attempt_does_not_unlock_the_next_phase() -> None:
    history = [failed("Test")]
    assert not can_deploy(ORCHESTRATION, history, "Staging").allowed
    assert states(ORCHESTRATION, history) == [R, P, P]


def test_running_attempt_does_not_unlock_the_next_phase() -> None:
    assert not can_deploy(ORCHESTRATION, [running("Test")], "Staging").allowed


def test_success_after_a_failure_unlocks() -> None:
    assert can_deploy(ORCHESTRATION, [failed("Test"), ok("Test")], "Staging").allowed


def test_redeploy_is_always_allowed() -> None:
    decision = can_deploy(ORCHESTRATION, [ok("Test"), ok("Staging")], "Test")
    assert decision.allowed
    assert "redeploying" in decision.reason
    # Even after a failure, and even where the phases before are not (or no longer) complete.
    assert can_deploy(ORCHESTRATION, [failed("Test")], "Test").allowed
    assert can_deploy(ORCHESTRATION, [failed("Staging")], "Staging").allowed


def test_allowed_reason_names_the_phase() -> None:
    decision = can_deploy(ORCHESTRATION, [ok("Test")], "Staging")
    assert decision == LifecycleDecision(True, 'Staging is in phase "Staging", which is open')


# --- optional phases and minimums ------------------------------------------------------------

WITH_OPTIONAL = Lifecycle(
    name="With optional",
    phases=(
        Phase("Development", ("Development",)),
        Phase("Test", ("Test",), automatic=("Test",), optional=True),
        Phase("Staging", ("Staging",), automatic=("Staging",)),
        Phase("Production", ("Production",)),
    ),
)


def test_optional_phase_may_be_skipped() -> None:
    history = [ok("Development")]
    assert allowed_environments(WITH_OPTIONAL, history) == ["Development", "Test", "Staging"]
    assert states(WITH_OPTIONAL, history) == [C, R, R, P]
    assert can_deploy(WITH_OPTIONAL, [*history, ok("Staging")], "Production").allowed


def test_optional_phase_is_not_blamed_for_a_refusal() -> None:
    decision = can_deploy(WITH_OPTIONAL, [ok("Development")], "Production")
    assert 'phase "Staging" must be complete first' in decision.reason


def test_optional_phase_still_waits_for_earlier_required_phases() -> None:
    decision = can_deploy(WITH_OPTIONAL, [], "Test")
    assert not decision.allowed
    assert 'phase "Development" must be complete first' in decision.reason


TWO_TEST_ENVIRONMENTS = Lifecycle(
    name="Two test environments",
    phases=(
        Phase("Test", ("Test A", "Test B"), minimum_environments=1),
        Phase("Production", ("Production",)),
    ),
)
ALL_TEST_ENVIRONMENTS = Lifecycle(
    name="All test environments",
    phases=(
        Phase("Test", ("Test A", "Test B")),
        Phase("Production", ("Production",)),
    ),
)


def test_minimum_environments_completes_a_phase_early() -> None:
    assert not can_deploy(TWO_TEST_ENVIRONMENTS, [], "Production").allowed
    history = [ok("Test B")]
    assert can_deploy(TWO_TEST_ENVIRONMENTS, history, "Production").allowed
    # The other environment of the complete phase stays open.
    assert allowed_environments(TWO_TEST_ENVIRONMENTS, history) == [
        "Test A",
        "Test B",
        "Production",
    ]


def test_minimum_zero_means_all() -> None:
    history = [ok("Test A")]
    decision = can_deploy(ALL_TEST_ENVIRONMENTS, history, "Production")
    assert decision.reason == (
        'Production is not allowed yet: phase "Test" must be complete first '
        "(needs successful deployments to all of Test A, Test B; so far only Test A)."
    )
    assert can_deploy(ALL_TEST_ENVIRONMENTS, [*history, ok("Test B")], "Production").allowed


def test_minimum_refusal_says_how_many() -> None:
    decision = can_deploy(TWO_TEST_ENVIRONMENTS, [failed("Test A")], "Production")
    assert "(needs a successful deployment to one of Test A, Test B; none yet)" in decision.reason
    three = Lifecycle(
        "Three",
        (Phase("Test", ("A", "B", "C"), minimum_environments=2), Phase("Prod", ("Prod",))),
    )
    decision = can_deploy(three, [ok("B")], "Prod")
    assert "(needs successful deployments to 2 of A, B, C; so far only B)" in decision.reason


def test_minimum_above_the_number_of_environments_means_all() -> None:
    lifecycle = Lifecycle(
        "Odd", (Phase("Test", ("Test",), minimum_environments=3), Phase("P", ("P",)))
    )
    assert progression(lifecycle, [])[0].required == 1
    assert can_deploy(lifecycle, [ok("Test")], "P").allowed


def test_progression_details() -> None:
    progress = progression(TWO_TEST_ENVIRONMENTS, [ok("Test B"), running("Test A")])
    assert progress == [
        PhaseProgress(
            name="Test",
            state=PhaseState.COMPLETE,
            optional=False,
            environments=("Test A", "Test B"),
            succeeded=("Test B",),
            required=1,
        ),
        PhaseProgress(
            name="Production",
            state=PhaseState.CURRENT,
            optional=False,
            environments=("Production",),
            succeeded=(),
            required=1,
        ),
    ]


def test_automatic_environment_belongs_to_its_phase_even_if_not_listed() -> None:
    lifecycle = Lifecycle("Short", (Phase("Dev", (), automatic=("Dev",)), Phase("Test", ("Test",))))
    assert allowed_environments(lifecycle, []) == ["Dev"]
    assert automatic_on_creation(lifecycle) == ["Dev"]
    assert can_deploy(lifecycle, [ok("Dev")], "Test").allowed


def test_phase_without_environments_does_not_block() -> None:
    lifecycle = Lifecycle("Gap", (Phase("Empty", ()), Phase("Test", ("Test",))))
    assert allowed_environments(lifecycle, []) == ["Test"]


# --- automatic deployments -------------------------------------------------------------------


def test_automatic_on_creation() -> None:
    assert automatic_on_creation(COMPONENTS) == ["Development"]
    assert automatic_on_creation(ORCHESTRATION) == []


def test_optional_first_phase_deploys_nothing_automatically() -> None:
    lifecycle = Lifecycle(
        "Optional first",
        (Phase("Dev", ("Dev",), automatic=("Dev",), optional=True), Phase("Test", ("Test",))),
    )
    assert automatic_on_creation(lifecycle) == []


def test_phase_opened_by_an_optional_first_phase_deploys_on_creation() -> None:
    lifecycle = Lifecycle(
        "Optional first",
        (Phase("Dev", ("Dev",), optional=True), Phase("Test", ("Test",), automatic=("Test",))),
    )
    assert automatic_on_creation(lifecycle) == ["Test"]


AUTO_STAGING = Lifecycle(
    name="Auto staging",
    phases=(
        Phase("Development", ("Development",), automatic=("Development",)),
        Phase("Test", ("Test",)),
        Phase("Staging", ("Staging", "Staging EU"), automatic=("Staging", "Staging EU")),
        Phase("Production", ("Production",), automatic=("Production",)),
    ),
)


def test_automatic_after_success_opens_the_next_phase() -> None:
    history = [ok("Development"), ok("Test")]
    assert automatic_after_success(AUTO_STAGING, history, "Test") == ["Staging", "Staging EU"]


def test_automatic_after_success_waits_for_the_phase_to_complete() -> None:
    history = [ok("Development"), ok("Test"), ok("Staging")]
    assert automatic_after_success(AUTO_STAGING, history, "Staging") == []
    history += [ok("Staging EU")]
    assert automatic_after_success(AUTO_STAGING, history, "Staging EU") == ["Production"]


def test_automatic_after_success_ignores_phases_already_open() -> None:
    # Development was already open before its success; success there opens Test (no automatics).
    assert automatic_after_success(AUTO_STAGING, [ok("Development")], "Development") == []


def test_automatic_after_success_skips_environments_already_deployed_to() -> None:
    history = [ok("Development"), failed("Staging EU"), ok("Test")]
    assert automatic_after_success(AUTO_STAGING, history, "Test") == ["Staging"]


def test_redeploy_success_triggers_nothing_again() -> None:
    history = [ok("Development"), ok("Test"), ok("Test")]
    assert automatic_after_success(AUTO_STAGING, history, "Test") == []


def test_automatic_after_success_skips_optional_phases_and_opens_past_them() -> None:
    history = [ok("Development")]
    # Test is optional (its automatic is not evaluated); Staging opens too and is automatic.
    assert automatic_after_success(WITH_OPTIONAL, history, "Development") == ["Staging"]


def test_automatic_after_failure_or_without_success_is_nothing() -> None:
    assert automatic_after_success(AUTO_STAGING, [ok("Development"), failed("Test")], "Test") == []
    assert automatic_after_success(AUTO_STAGING, [], "Test") == []
    assert automatic_after_success(AUTO_STAGING, [ok("Development")], "Nowhere") == []
