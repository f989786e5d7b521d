"""Which moves a deployed release offers (domain/release_moves.py), and the choices a new
release preselects (domain/release_choices.py): pure rules, no database."""

from __future__ import annotations

from conveyor.domain.documents import Lifecycle, Phase
from conveyor.domain.release_choices import choice
from conveyor.domain.release_moves import (
    Move,
    MoveKind,
    Place,
    after_deployment,
    lifecycle_order,
    next_environment,
    rollback_target,
)
from conveyor.web.routes.dashboard import _moves_html

ORDER = ("Development", "Test", "Production")


def places(*items: Place) -> dict[str, Place]:
    return {p.environment.lower(): p for p in items}


def kinds(moves: list[Move]) -> list[tuple[str, str, str]]:
    return [(m.kind.value, m.version, m.environment) for m in moves]


def test_the_order_is_the_lifecycles_and_the_next_environment_follows_it() -> None:
    lifecycle = Lifecycle(
        "Main",
        phases=(
            Phase("Dev", environments=(), automatic=("Development",)),
            Phase("Test", environments=("Test", "Development")),
            Phase("Prod", environments=("Production",)),
        ),
    )
    assert lifecycle_order(lifecycle) == ORDER
    assert next_environment(ORDER, "test") == "Production"
    assert next_environment(ORDER, "Production") is None
    assert next_environment(ORDER, "Elsewhere") is None


def test_rollback_goes_to_the_newest_older_release_not_a_newer_one() -> None:
    # Newest first: 1.0.3 was rolled back to 1.0.2 before; going to 1.0.3 is not a rollback.
    assert rollback_target("1.0.2", ["1.0.2", "1.0.3", "1.0.1", "1.0.0"]) == "1.0.1"
    assert rollback_target("1.0.0", ["1.0.0"]) is None
    assert rollback_target(None, ["1.0.0"]) is None


def test_a_current_release_is_promoted_redeployed_and_rolled_back() -> None:
    here = Place("Test", 7, "1.0.1", "success", current="1.0.1", rollback_to="1.0.0")
    moves = after_deployment("1.0.1", "Test", "success", 7, places(here), ORDER)
    assert kinds(moves) == [
        ("promote", "1.0.1", "Production"),
        ("redeploy", "1.0.1", "Test"),
        ("rollback", "1.0.0", "Test"),
    ]
    assert [m.label for m in moves] == [
        "Promote to Production…",
        "Redeploy to Test…",
        "Roll back to 1.0.0 in Test…",
    ]


def test_no_promotion_where_the_release_went_already() -> None:
    here = Place("Test", 7, "1.0.1", "success", current="1.0.1")
    failed_there = Place("Production", 9, "1.0.1", "failed", current="1.0.0")
    moves = after_deployment("1.0.1", "Test", "success", 7, places(here, failed_there), ORDER)
    assert kinds(moves) == [("redeploy", "1.0.1", "Test")]


def test_only_the_newest_failure_is_retried() -> None:
    here = Place("Test", 8, "1.0.2", "failed", current="1.0.1")
    assert kinds(after_deployment("1.0.2", "Test", "failed", 8, places(here), ORDER)) == [
        ("retry", "1.0.2", "Test")
    ]
    # An older failure, since followed by another deployment: nothing to retry.
    assert after_deployment("1.0.0", "Test", "canceled", 3, places(here), ORDER) == []
    # Not current and not failed: no move at all.
    assert after_deployment("1.0.0", "Test", "success", 3, places(here), ORDER) == []


def test_a_new_release_preselects_the_highest_by_precedence() -> None:
    made = choice("Deploy Database", "Database", ["1.0.9", "1.0.10", "1.0.10-beta.1"], most=2)
    assert made.selected == "1.0.10"
    assert made.options == ("1.0.10", "1.0.10-beta.1") and made.more == 1
    assert choice("s", "Empty", []).selected is None


def test_the_boards_moves_are_escaped() -> None:
    move = Move(MoveKind.PROMOTE, "1.0.0", '<b>"Prod"</b>')
    made = _moves_html("web", [move])
    assert "<b>" not in made
    assert 'href="/projects/web/releases/1.0.0/deploy?to=%3Cb%3E%22Prod%22%3C%2Fb%3E"' in made
    assert "Promote to &lt;b&gt;&quot;Prod&quot;&lt;/b&gt;…" in made
    assert _moves_html("web", []) == ""
