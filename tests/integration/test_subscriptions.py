"""Subscriptions through the outbox, with a real SMTP server and a real HTTP receiver, on SQLite
and PostgreSQL: who is told what, signatures, retries, secrets at rest, and who may change them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from conveyor.domain.errors import PermissionDenied
from conveyor.services import deliveries, documents, outbox
from conveyor.services.config import load
from conveyor.services.configfile import apply_text, export_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from conveyor.store.documents import reveal
from tests.conftest import caller_of
from tests.integration.notifying import deploy, ended, notifying, settled
from tests.receivers import Mailbox, Receiver

CONFIG = """
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Prod]
project_groups:
  - name: Apps
  - name: Tools
user_roles:
  - name: Notification Manager
    permissions: [SubscriptionView, SubscriptionCreate, SubscriptionEdit, SubscriptionDelete]
users:
  - username: wide
    email: wide@example.com
  - username: narrow
    email: narrow@example.com
  - username: lead
    email: lead@example.com
teams:
  - name: Watchers
    members: [wide, narrow]
  - name: Everything
    members: [wide]
    roles:
      - role: Project Viewer
  - name: Seen only
    members: [narrow]
    roles:
      - role: Project Viewer
        projects: [Seen]
  - name: Leads
    members: [lead]
    roles:
      - role: Notification Manager
projects:
  - name: Seen
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Work
          type: script
          script: echo work
  - name: Hidden
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Work
          type: script
          script: echo work
  - name: Tool
    group: Tools
    lifecycle: Anywhere
    process:
      steps:
        - name: Work
          type: script
          script: echo work
"""

WATCH = """
subscriptions:
  - name: Watch deployments
    team: Watchers
    categories: [DeploymentSucceeded]
"""

HOOK = """
subscriptions:
  - name: Chat
    webhook:
      url: {url}
      headers: {{Authorization: Bearer chat-token}}
      secret: ${{env:HOOK_SECRET}}
    categories: [DeploymentSucceeded, DeploymentFailed]
    project_groups: [Apps]
    environments: [Prod]
"""


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture
async def services(database_url: str, tmp_path: Path, mailbox: Mailbox) -> AsyncIterator[Services]:
    async with notifying(database_url, tmp_path, mailbox) as svc:
        yield svc


async def test_each_member_hears_only_of_what_they_may_view(
    services: Services, admin: Caller, mailbox: Mailbox
) -> None:
    await apply_text(services, admin, CONFIG + WATCH)
    for project in ("Hidden", "Seen"):
        task = await deploy(services, admin, project, "Dev")
        assert (await ended(services, admin, task))["state"] == "success"
    await settled(services, admin, 3)
    wide = sorted(m.subject for m in mailbox.to("wide@example.com"))
    narrow = [m.subject for m in mailbox.to("narrow@example.com")]
    assert len(wide) == 2 and any("Hidden" in s for s in wide)
    # narrow may view Seen only: one mail, about Seen; never a word about Hidden.
    assert len(narrow) == 1 and "Seen" in narrow[0]
    assert not any("Hidden" in m.body for m in mailbox.to("narrow@example.com"))
    assert all(len(m.to) == 1 for m in mailbox.mails)


async def test_a_webhook_failing_twice_is_delivered_once_and_signed(
    services: Services, admin: Caller
) -> None:
    receiver = Receiver(statuses=[500, 503]).start()
    try:
        config = CONFIG + HOOK.format(url=receiver.url)
        await apply_text(services, admin, config, secrets={"HOOK_SECRET": "hook-s3cret"})
        # Filtered out: Dev is not Prod, Tool is not in Apps.
        for project, env in (("Seen", "Dev"), ("Tool", "Prod"), ("Seen", "Prod")):
            task = await deploy(services, admin, project, env)
            assert (await ended(services, admin, task))["state"] == "success"
        [delivery] = await settled(services, admin, 1)
    finally:
        receiver.stop()
    assert delivery["state"] == "succeeded" and delivery["attempts"] == 3
    assert delivery["subscription"] == "Chat" and delivery["target"] == receiver.url
    assert len(receiver.requests) == 3
    bodies = {r.body for r in receiver.requests}
    assert len(bodies) == 1, "every attempt sends the same bytes"
    for request in receiver.requests:
        assert request.signed_by("hook-s3cret")
        assert request.headers["authorization"] == "Bearer chat-token"
        assert request.headers["x-conveyor-delivery"] == delivery["id"]
    payload = receiver.requests[0].json()
    assert payload["event"]["category"] == "DeploymentSucceeded"
    assert payload["event"]["project"] == "Seen" and payload["event"]["environment"] == "Prod"
    assert "Seen" in payload["text"] and payload["subscription"] == "Chat"


async def test_a_delivery_that_never_succeeds_is_marked_failed(
    services: Services, admin: Caller
) -> None:
    receiver = Receiver(statuses=[500] * 20).start()
    try:
        config = CONFIG + HOOK.format(url=receiver.url)
        await apply_text(services, admin, config, secrets={"HOOK_SECRET": "x-secret"})
        await deploy(services, admin, "Seen", "Prod")
        [delivery] = await settled(services, admin, 1)
    finally:
        receiver.stop()
    assert delivery["state"] == "failed" and delivery["attempts"] == 5
    assert delivery["last_error"].endswith("was answered 500")
    assert len(receiver.requests) == 5
    assert await deliveries.list_deliveries(services, admin, state="pending") == []


async def test_the_secret_is_encrypted_at_rest_never_exported_and_kept(
    services: Services, admin: Caller
) -> None:
    config = CONFIG + HOOK.format(url="https://chat.example/hook")
    await apply_text(services, admin, config, secrets={"HOOK_SECRET": "very-s3cret"})
    async with services.read() as session:
        body = (await session.execute(select(t.subscriptions.c.body))).scalar_one()
    assert "very-s3cret" not in json.dumps(body) and body["webhook"]["cipher"]
    exported = await export_text(services, admin)
    assert "very-s3cret" not in exported and "secret" not in exported
    view = await documents.get_document(services, admin, "subscriptions", "Chat")
    assert "secret" not in json.dumps(view.as_dict())
    # The export, and the API document as read, apply without changes: the secret stays.
    assert not (await apply_text(services, admin, exported)).changed
    await documents.update_document(services, admin, "subscriptions", "Chat", view.as_dict())
    model = (await load(services)).model
    # Read back sealed (never decrypted on a read), it opens to the secret that was set.
    assert reveal(services.box, model.get("subscriptions", "Chat").webhook.secret) == "very-s3cret"
    # A new secret is a change, shown masked.
    changed = await apply_text(services, admin, config, secrets={"HOOK_SECRET": "rotated"})
    [change] = changed.changes
    assert change.render() == '~ subscription "Chat"\n    webhook.secret: "********" -> "********"'
    secret = (await load(services)).model.get("subscriptions", "Chat").webhook.secret
    assert reveal(services.box, secret) == "rotated"


async def test_only_subscription_editors_change_subscriptions(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, CONFIG)
    wide = await caller_of(services, "wide")
    lead = await caller_of(services, "lead")
    with pytest.raises(PermissionDenied, match="SubscriptionCreate"):
        await apply_text(services, wide, WATCH)
    await apply_text(services, lead, WATCH)
    with pytest.raises(PermissionDenied, match="SubscriptionEdit"):
        await apply_text(services, wide, WATCH.replace("Watchers", "Everything"))
    assert await documents.list_documents(services, wide, "subscriptions") == []
    assert len(await documents.list_documents(services, lead, "subscriptions")) == 1
    with pytest.raises(PermissionDenied, match="SubscriptionView"):
        await deliveries.list_deliveries(services, wide)
    await documents.delete_document(services, lead, "subscriptions", "Watch deployments")
    # Renaming the team rewrites the subscription that names it.
    await apply_text(services, lead, WATCH)
    await documents.update_document(
        services, admin, "teams", "Watchers", {"name": "Lookouts", "members": ["wide"]}
    )
    assert (await load(services)).model.get("subscriptions", "Watch deployments").team == "Lookouts"


async def test_the_outbox_is_written_in_the_events_transaction(
    services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply_text(services, admin, CONFIG + WATCH)

    async def broken(*_: object, **__: object) -> int:
        raise RuntimeError("the outbox is unavailable")

    monkeypatch.setattr(outbox, "enqueue", broken)
    with pytest.raises(RuntimeError):
        await documents.create_document(services, admin, "environments", {"name": "Lost"})
    monkeypatch.undo()
    assert not (await load(services)).model.has("environments", "Lost")
