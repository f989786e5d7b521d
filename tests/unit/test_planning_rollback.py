"""Rolling back a train, and pins, in the plan: which children a deploy_release step runs."""

from __future__ import annotations

import pytest

from conveyor.domain.documents import DeploymentCondition, DeployReleaseAction, Step, key
from conveyor.domain.holds import Block, Pin, block_refusal, is_rollback, pin_refusal
from conveyor.domain.planning import Action, ChildChoice, Situation, decide, plan

IF_NEWER = DeploymentCondition.IF_NEWER
IF_NOT_CURRENT = DeploymentCondition.IF_NOT_CURRENT
ALWAYS = DeploymentCondition.ALWAYS


def step(condition: DeploymentCondition, project: str = "Database") -> Step:
    return Step(f"Deploy {project}", DeployReleaseAction(project, condition))


def situation(
    chosen: str, current: str | None, *, rollback: bool, pinned: dict[str, Pin] | None = None
) -> Situation:
    return Situation(
        environment="Staging",
        current={"database": current},
        children={key("Deploy Database"): ChildChoice("Database", chosen)},
        rollback=rollback,
        pinned=pinned or {},
    )


@pytest.mark.parametrize("condition", [IF_NEWER, IF_NOT_CURRENT])
def test_a_rollback_runs_a_child_that_differs_and_says_so(condition: DeploymentCondition) -> None:
    decision = decide(step(condition), situation("1.0.0", "1.1.0", rollback=True))
    assert decision.action is Action.RUN
    assert decision.rollback
    assert decision.reason == "rollback: Database 1.0.0 replaces 1.1.0 in Staging"


def test_without_rollback_an_older_child_is_skipped_by_if_newer() -> None:
    decision = decide(step(IF_NEWER), situation("1.0.0", "1.1.0", rollback=False))
    assert decision.action is Action.SKIP and not decision.rollback
    assert "older than 1.1.0" in decision.reason


@pytest.mark.parametrize("condition", [IF_NEWER, IF_NOT_CURRENT, ALWAYS])
def test_a_rollback_skips_a_child_already_current_unless_always(
    condition: DeploymentCondition,
) -> None:
    decision = decide(step(condition), situation("1.0.0", "1.0.0", rollback=True))
    if condition is ALWAYS:
        assert decision.action is Action.RUN and not decision.rollback
        assert decision.reason == "deploys Database 1.0.0 (deployment condition: always)"
    else:
        assert decision.action is Action.SKIP and not decision.rollback
        assert decision.reason == "Database 1.0.0 is already the current release in Staging"


def test_always_in_a_rollback_keeps_its_reason_and_is_marked_rollback() -> None:
    decision = decide(step(ALWAYS), situation("1.0.0", "1.1.0", rollback=True))
    assert decision.action is Action.RUN and decision.rollback
    assert decision.reason == "deploys Database 1.0.0 (deployment condition: always)"


def test_a_rollback_deploys_a_child_with_nothing_there_as_a_first_deployment() -> None:
    decision = decide(step(IF_NEWER), situation("1.0.0", None, rollback=True))
    assert decision.action is Action.RUN and not decision.rollback
    assert decision.reason == "Database has no release in Staging yet"


def test_a_pinned_child_is_skipped_with_who_and_why_even_when_always() -> None:
    pin = Pin("Database", "1.1.0", "hotfix under test", "olivia")
    for condition in (IF_NEWER, ALWAYS):
        decision = decide(
            step(condition), situation("1.0.0", "1.1.0", rollback=True, pinned={"database": pin})
        )
        assert decision.action is Action.SKIP and decision.pinned and not decision.rollback
        assert decision.reason == "Database 1.1.0 is pinned in Staging by olivia: hotfix under test"


def test_the_pinned_release_itself_is_decided_as_usual() -> None:
    pin = Pin("Database", "1.1.0", "keep", "olivia")
    decision = decide(
        step(ALWAYS), situation("1.1.0", "1.1.0", rollback=False, pinned={"database": pin})
    )
    assert decision.action is Action.RUN and not decision.pinned


def test_the_preview_carries_rollback_and_pins() -> None:
    steps = [step(IF_NEWER), step(IF_NEWER, "Website")]
    base = situation("1.0.0", "1.1.0", rollback=True)
    both = Situation(
        environment="Staging",
        current={"database": "1.1.0", "website": "2.0.0"},
        children={
            key("Deploy Database"): base.children[key("Deploy Database")],
            key("Deploy Website"): ChildChoice("Website", "2.0.0"),
        },
        rollback=True,
        pinned={},
    )
    planned = plan(steps, both)
    assert [(p.decision.action, p.decision.rollback) for p in planned] == [
        (Action.RUN, True),
        (Action.SKIP, False),
    ]


def test_rules_for_pins_blocks_and_rollbacks() -> None:
    assert is_rollback("1.0.0", "1.1.0") and not is_rollback("1.1.0", "1.1.0")
    assert not is_rollback("1.0.0", None) and not is_rollback("1.2.0", "1.1.0")
    pin = Pin("Database", "1.1.0", "keep it", "olivia")
    assert pin_refusal(pin, "1.1.0", "Staging") is None  # redeploying the pinned release
    assert pin_refusal(None, "1.0.0", "Staging") is None
    refused = pin_refusal(pin, "1.0.0", "Staging")
    assert refused is not None
    assert "Database 1.1.0 is pinned in Staging by olivia: keep it" in refused
    assert 'conveyor release unpin --project "Database" --environment "Staging"' in refused
    block = Block("breaks checkout", "bob")
    assert block_refusal(block, succeeded_there=True) is None
    assert block_refusal(None, succeeded_there=False) is None
    said = block_refusal(block, succeeded_there=False)
    assert said is not None and "blocked by bob: breaks checkout" in said
