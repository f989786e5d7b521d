"""Each node caches the decoded configuration per revision (issue 11, item 4).

Two ``Services`` on one database stand for two server processes (nodes): a change through one is
seen by the other on its next read; a read with nothing changed decodes nothing; sensitive values
are decrypted only for the deployment that needs them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from conveyor.domain.documents import Variable
from conveyor.engine.node import Node
from conveyor.services import documents, model_cache
from conveyor.services.access import caller_for_user, get_user
from conveyor.services.config import load, load_outline
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, bootstrap
from conveyor.services.secrets import SecretBox, load_or_create_key
from conveyor.settings import Settings
from conveyor.store.documents import Sealed, load_model, read_revision, reveal
from tests.integration.test_engine import deploy, finished, log_text

SECRETS = {"Billing": "billing-pa55word-1", "Ledger": "ledger-pa55word-2"}

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Apps
users:
  - username: viewer
teams:
  - name: Viewers
    members: [viewer]
    roles:
      - role: Project Viewer
projects:
"""

PROJECT = """  - name: {name}
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Check
          type: script
          script: |
            printf 'digest %s\\n' "$(printf %s "$DBPASSWORD" | sha256sum | cut -c1-16)"
    variables:
      - name: DbPassword
        value: "{secret}"
        sensitive: true
"""


def config_text(description: str = "") -> str:
    projects = "".join(PROJECT.format(name=n, secret=s) for n, s in SECRETS.items())
    text = CONFIG + projects
    if description:
        text = text.replace("  - name: Dev\n", f"  - name: Dev\n    description: {description}\n")
    return text


class CountingBox(SecretBox):
    """The real box, recording which ciphers it was asked to open."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.opened: list[str] = []

    def decrypt(self, cipher: str) -> str:
        self.opened.append(cipher)
        return super().decrypt(cipher)


def counting(services: Services) -> CountingBox:
    return CountingBox(load_or_create_key(services.settings))


@pytest.fixture
async def other_node(settings: Settings) -> AsyncIterator[Services]:
    """A second node: its own engine, sessions and cache, on the same database and data folder."""
    node = bootstrap(settings)
    try:
        yield node
    finally:
        await node.close()


async def revision(services: Services) -> int:
    async with services.read() as session:
        return await read_revision(session)


async def description(services: Services) -> str:
    return (await load(services)).model.get("environments", "Dev").description


async def test_a_change_through_one_node_is_seen_by_the_other_on_its_next_read(
    services: Services, other_node: Services, admin: Caller
) -> None:
    await apply_text(services, admin, config_text("first"))
    assert await description(other_node) == "first"
    assert await description(services) == "first"
    # Both nodes now hold the model: reading again decodes nothing.
    reloads = model_cache.cache_of(other_node).reloads
    for _ in range(5):
        assert await description(other_node) == "first"
    assert model_cache.cache_of(other_node).reloads == reloads

    before = await revision(services)
    await apply_text(services, admin, config_text("second"))
    assert await revision(services) == before + 1, "one change, one revision"
    assert await description(other_node) == "second"

    # And the other way round, through the document API of the second node.
    other_admin = await _admin(other_node)
    await documents.update_document(
        other_node, other_admin, "environments", "Dev", {"name": "Dev", "description": "third"}
    )
    assert await description(services) == "third"
    assert (await load_outline(services)).model.get("environments", "Dev").description == "third"


async def test_access_follows_the_revision(
    services: Services, other_node: Services, admin: Caller
) -> None:
    await apply_text(services, admin, config_text())
    viewer = await _caller(other_node, "viewer")
    assert any(g.team == "Viewers" for g in viewer.principal.grants)
    # Remove viewer from the team through the first node: the second computes access anew.
    await apply_text(services, admin, config_text().replace("members: [viewer]", "members: []"))
    viewer = await _caller(other_node, "viewer")
    assert not any(g.team == "Viewers" for g in viewer.principal.grants)


async def test_concurrent_readers_share_one_reload(
    services: Services, other_node: Services, admin: Caller
) -> None:
    await apply_text(services, admin, config_text("one"))
    cache = model_cache.cache_of(other_node)
    before = cache.reloads
    found = await asyncio.gather(*(load(other_node) for _ in range(20)))
    assert cache.reloads == before + 1, "20 readers of a new revision decode it once"
    assert all(f is found[0] for f in found)
    assert found[0].model.get("environments", "Dev").description == "one"


async def test_readers_never_see_a_model_older_than_a_committed_change(
    services: Services, other_node: Services, admin: Caller
) -> None:
    """A writer on one node, readers on the other: once a change has committed, every read
    that starts after it sees it (the revision is checked on each read)."""
    await apply_text(services, admin, config_text("v0"))
    committed = "v0"
    stale: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            expected = committed
            seen = await description(other_node)
            if int(seen[1:]) < int(expected[1:]):
                stale.append((expected, seen))
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    try:
        for i in range(1, 8):
            await apply_text(services, admin, config_text(f"v{i}"))
            committed = f"v{i}"
            await asyncio.sleep(0.01)
    finally:
        done.set()
        await asyncio.gather(*readers)
    assert stale == []
    assert await description(other_node) == "v7"


async def test_a_plain_read_decrypts_no_secret(services: Services, admin: Caller) -> None:
    await apply_text(services, admin, config_text())
    box = counting(services)
    services.box = box
    loaded = await load(services)
    await load_outline(services)
    await documents.get_variables(services, admin, "Billing")
    assert box.opened == [], "reading the configuration decrypted sensitive values"
    [variable] = loaded.model.get("projects", "Billing").variables
    assert isinstance(variable.value, Sealed)
    assert SECRETS["Billing"] not in repr(loaded.model)
    assert reveal(box, variable.value) == SECRETS["Billing"]


async def test_a_deployment_decrypts_only_its_own_secrets(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, config_text())
    box = counting(services)
    services.box = box
    async with services.read() as session:
        stored = (await load_model(session, services.box, decrypt=False)).model
    ciphers = {
        p.name: {str(v.value) for v in p.variables if isinstance(v, Variable) and v.sensitive}
        for p in stored.projects
    }
    node = Node(services, slots=2, name="cache-test")
    await node.start()
    try:
        task = await deploy(services, admin, "Billing")
        result = await finished(services, admin, task)
    finally:
        await node.stop()
    assert result["state"] == "success", result
    digest = hashlib.sha256(SECRETS["Billing"].encode()).hexdigest()[:16]
    assert f"digest {digest}" in await log_text(services, admin, task), "the step got its secret"
    assert box.opened, "the deployment's step needs its secret"
    # The release copied the stored cipher; only the deployed project's secret was opened.
    assert set(box.opened) <= ciphers["Billing"], "another project's secret was decrypted"


async def _admin(services: Services) -> Caller:
    return await _caller(services, "admin")


async def _caller(services: Services, username: str) -> Caller:
    async with services.read() as session:
        user = await get_user(session, username)
        return await caller_for_user(session, user, services=services)
