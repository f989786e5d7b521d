"""The pure rules of notifications: matching, who may be told, signing, backoff, documents."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from conveyor.domain import permissions as perms
from conveyor.domain import subscriptions as rules
from conveyor.domain.codec import decode, encode
from conveyor.domain.diff import diff, needs
from conveyor.domain.documents import (
    Environment,
    Lifecycle,
    Phase,
    Project,
    ProjectGroup,
    Subscription,
    SubscriptionWebhook,
    Team,
    User,
)
from conveyor.domain.errors import Problem
from conveyor.domain.model import Model, rename

SEEN = perms.ProjectRef("Seen", "Apps")
TOOL = perms.ProjectRef("Tool", "Tools")


def event(category: str = "DeploymentFailed", project=SEEN, environment="Prod"):  # type: ignore[no-untyped-def]
    return rules.EventFacts(
        id=7,
        category=category,
        message="The deployment failed",
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        actor="system",
        on_behalf_of="ops",
        project=project,
        environment=environment,
        documents=("Deployments-3", "ServerTasks-9"),
    )


@pytest.mark.parametrize(
    ("sub", "expected"),
    [
        (Subscription("s", team="T"), True),
        (Subscription("s", team="T", disabled=True), False),
        (Subscription("s", team="T", categories=("deploymentfailed",)), True),
        (Subscription("s", team="T", categories=("DeploymentSucceeded",)), False),
        # Within a field any value; across fields all of them.
        (Subscription("s", team="T", projects=("Other", "seen")), True),
        (Subscription("s", team="T", projects=("Seen",), environments=("Dev",)), False),
        (Subscription("s", team="T", project_groups=("Apps",), environments=("Prod",)), True),
        (Subscription("s", team="T", project_groups=("Tools",)), False),
    ],
)
def test_matching(sub: Subscription, expected: bool) -> None:
    assert rules.matches(sub, event()) is expected


def test_an_event_without_a_project_matches_no_project_filter() -> None:
    loose = event(project=None, environment=None)
    assert rules.matches(Subscription("s", team="T"), loose)
    assert not rules.matches(Subscription("s", team="T", projects=("Seen",)), loose)
    assert not rules.matches(Subscription("s", team="T", environments=("Prod",)), loose)


def principal(**scope: frozenset[str]) -> perms.Principal:
    grant = perms.Grant("T", "Project Viewer", frozenset({perms.Permission.EventView}), **scope)
    return perms.Principal("p", True, (grant,))


def test_who_may_be_told_follows_the_audit_logs_rule() -> None:
    everywhere = principal()
    seen_only = principal(projects=frozenset({"Seen"}))
    prod_only = principal(environments=frozenset({"Prod"}))
    assert rules.may_view_event(everywhere, TOOL, "Dev")
    assert rules.may_view_event(everywhere, None, None)
    assert rules.may_view_event(seen_only, SEEN, "Dev")
    assert not rules.may_view_event(seen_only, TOOL, "Dev")
    assert not rules.may_view_event(seen_only, None, None), "a scoped reader sees no loose events"
    assert rules.may_view_event(prod_only, TOOL, "Prod")
    assert not rules.may_view_event(prod_only, TOOL, "Dev")
    assert not rules.may_view_event(perms.Principal("p", False, everywhere.grants), SEEN, "Dev")


def test_signature_and_backoff() -> None:
    body = rules.body_bytes({"text": "héllo"})
    assert body == '{"text":"héllo"}'.encode()
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert rules.sign("k", body) == f"sha256={expected}"
    assert [rules.backoff(n, 10) for n in (1, 2, 3)] == [10, 20, 40]
    assert rules.backoff(30, 10) == 3600


def test_what_a_mail_and_a_webhook_say() -> None:
    subject, body = rules.event_mail(event(), "https://c.example", "Failures")
    assert subject == "[Conveyor] The deployment failed"
    assert "https://c.example/tasks/ServerTasks-9" in body and "Failures" in body
    payload = rules.event_webhook(event(project=None, environment=None), "https://c.example", "x")
    assert payload["text"].startswith("The deployment failed\n")
    assert payload["link"] == "https://c.example/tasks/ServerTasks-9"
    assert payload["event"]["id"] == "Events-7" and payload["event"]["project"] is None


def model(*subs: Subscription) -> Model:
    return Model(
        environments=(Environment("Prod"),),
        lifecycles=(Lifecycle("L", (Phase("P", ("Prod",)),)),),
        project_groups=(ProjectGroup("Apps"),),
        projects=(Project("Seen", "Apps", "L"),),
        users=(User("ann"),),
        teams=(Team("Ops", ("ann",)),),
        subscriptions=subs,
    )


def test_validation_names_every_problem() -> None:
    problems = rules.subscription_problems(
        model(
            Subscription("none"),
            Subscription("two", team="Ops", user="ann"),
            Subscription("ghost", team="Nobody", categories=("Deployed",)),
            Subscription("hook", webhook=SubscriptionWebhook("ftp://x"), projects=("Gone",)),
            Subscription("fine", user="ann", environments=("Prod",), project_groups=("Apps",)),
        )
    )
    assert [(p.where, p.message) for p in problems] == [
        ("subscriptions[none]", "a subscription has one subscriber: team, user or webhook"),
        (
            "subscriptions[two]",
            "a subscription has one subscriber: team, user or webhook (this one has team and user)",
        ),
        ("subscriptions[ghost].team", 'team "Nobody" does not exist'),
        (
            "subscriptions[ghost].categories[0]",
            '"Deployed" is not an event category '
            "(they are listed by GET /api/v1/events/categories)",
        ),
        ("subscriptions[hook].webhook.url", "must start with http:// or https://"),
        ("subscriptions[hook].projects[0]", 'project "Gone" does not exist'),
    ]


def test_the_document_round_trips_without_its_secret() -> None:
    sub = Subscription(
        "Chat",
        webhook=SubscriptionWebhook("https://h.example", (("X-A", "1"),), "s3cret"),
        categories=("DeploymentFailed",),
    )
    plain = encode("subscriptions", sub)
    assert plain == {
        "name": "Chat",
        "webhook": {"url": "https://h.example", "headers": {"X-A": "1"}},
        "categories": ["DeploymentFailed"],
    }
    problems: list[Problem] = []
    full = decode("subscriptions", encode("subscriptions", sub, with_secrets=True), (), problems)
    assert full == sub and not problems


def test_renames_reach_subscriptions_and_changes_need_subscription_permissions() -> None:
    sub = Subscription("S", team="Ops", projects=("Seen",), environments=("Prod",))
    renamed = rename(
        rename(rename(model(sub), "teams", "Ops", "Run"), "projects", "Seen", "Shop"),
        "environments",
        "Prod",
        "Live",
    )
    assert renamed.subscriptions == (
        replace(sub, team="Run", projects=("Shop",), environments=("Live",)),
    )
    user_sub = Subscription("U", user="ann")
    assert rename(model(user_sub), "users", "ann", "anna").subscriptions[0].user == "anna"
    before, after = model(), model(sub)
    [created] = diff(before, after)
    assert [n.permission for n in needs(created, before, after)] == ["SubscriptionCreate"]
    [edited] = diff(after, model(replace(sub, disabled=True)))
    assert [n.permission for n in needs(edited, after, after)] == ["SubscriptionEdit"]
    [deleted] = diff(after, before)
    assert [n.permission for n in needs(deleted, after, before)] == ["SubscriptionDelete"]
