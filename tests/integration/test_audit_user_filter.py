"""`audit list --user U` is what U did; what the engine did for U is `--user system`
(docs/audit.md), on SQLite and PostgreSQL."""

from __future__ import annotations

from conveyor.services import audit, execution, releases
from conveyor.services.audit import Filters
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.conftest import caller_of

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - {name: All, environments: [Dev]}
project_groups:
  - name: Shop
users:
  - username: dev
teams:
  - name: Releasers
    members: [dev]
    roles:
      - role: Release Creator
projects:
  - name: Web
    group: Shop
    lifecycle: Anywhere
    process: {steps: [{name: Hello, type: script, script: echo hello}]}
"""


async def test_a_user_filter_leaves_out_what_the_engine_did_for_them(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, CONFIG)
    dev = await caller_of(services, "dev")
    await releases.create_release(services, dev, "Web", version="1.0.0")
    # What the engine does for dev (a child deployment, an automatic one) acts as dev's
    # permissions allow, attributed to the system on dev's behalf.
    for_dev = await execution.creator_caller(services, "dev")
    await releases.create_release(services, for_dev, "Web", version="1.0.1")

    async def versions(user: str) -> list[tuple[str, str | None, str]]:
        found = await audit.list_events(services, admin, Filters(users=(user,)), limit=500)
        return [
            (e["actor"], e["on_behalf_of"], e["details"]["version"])
            for e in found["events"]
            if e["category"] == "ReleaseCreated"
        ]

    assert await versions("dev") == [("dev", None, "1.0.0")]
    assert await versions("system") == [("system", "dev", "1.0.1")]
