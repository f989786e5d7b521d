"""Secrets stay secret (issue 10, item 3), on SQLite and PostgreSQL, with a real engine, real
scripts, a real SMTP server, and the API and web pages a reader uses.

A deployment that quotes sensitive values in a manual intervention's instructions, a step's
reason, an output variable, a notification and a child's variables must not put them in clear
in anything stored, audited, exported, mailed or shown. A multi-line secret (a PEM key) printed
by a script line by line is masked line by line.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from conveyor.api.app import create_app
from conveyor.domain.masking import MASK, MIN_MASKED_LINE, Masker
from conveyor.services import interruptions, releases, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import create_api_key, set_password
from conveyor.store import tables as t
from tests.conftest import caller_of
from tests.integration.notifying import BASE_URL, deploy, ended, notifying, settled
from tests.receivers import Mailbox

PASSWORD = "Tr0ub4dor&3-horse"
# A key as a script sees it: PEM armour, 64-character base64 lines, and a short last line.
PEM_BODY = [
    base64.b64encode(hashlib.sha512(bytes([i])).digest()[:48]).decode() for i in range(4)
] + ["Zm9v"]
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END PRIVATE KEY-----\n"
# What must never be readable: the password, the key, and every long line of the key.
SECRETS = [PASSWORD, PEM.strip(), *(line for line in PEM_BODY if len(line) >= MIN_MASKED_LINE)]
WEB_PASSWORD = "a-long-enough-password"


def indented(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


CONFIG = f"""
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
  - username: keeper
    email: keeper@example.com
teams:
  - name: Keepers
    members: [keeper]
    roles:
      - role: Approver
projects:
  - name: Leaf
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Receive
          type: script
          script: |
            printf '%s' "$CONN" | sha256sum | sed 's/^/received /'
  - name: Vault
    group: Apps
    lifecycle: Anywhere
    variables:
      - name: Password
        value: "{PASSWORD}"
        sensitive: true
      - name: Pem
        sensitive: true
        value: |
{indented(PEM, 10)}
    process:
      steps:
        - name: Print
          type: script
          script: |
            echo "connecting with #{{Password}}"
            printf '%s\\n' "$PEM"
            echo "second line alone: $(printf '%s\\n' "$PEM" | sed -n 3p)."
            echo "##conveyor[setVariable name='Conn' value='db://app:#{{Password}}@db']"
        - name: Tell
          type: notification
          to_addresses: [ops@example.com]
          subject: "Rotated #{{Password}}"
          body: |
            The key is
            #{{Pem}}
            and the password #{{Password}}.
          webhooks:
            - url: "http://127.0.0.1:9/hook?token=#{{Password}}"
          warn_only: true
        - name: Approve
          type: manual_intervention
          instructions: |
            Sign in with #{{Password}} and check the key:
            #{{Pem}}
          responsible_teams: [Keepers]
        - name: Use
          type: script
          script: |
            conn="#{{Conveyor.Action[Print].Output.Conn}}"
            [ "$conn" = "db://app:$PASSWORD@db" ] && echo output-intact
        - name: Hand over
          type: deploy_release
          project: Leaf
          variables:
            Conn: "db://app:#{{Password}}@db"
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


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


async def every_stored_row(services: Services) -> str:
    """Every row of every table, as text: what someone with a copy of the database reads."""
    out = []
    async with services.read() as session:
        for table in t.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                out.append(json.dumps(dict(row._mapping), default=str, ensure_ascii=False))
    return "\n".join(out)


async def log_lines(services: Services, caller: Caller, task: str) -> list[str]:
    return [line["line"] for line in (await tasks.task_log(services, caller, task))["lines"]]


async def api_reads(services: Services, task: str, interruption: str) -> dict[str, str]:
    """What a reader gets from every API that shows a deployment, its audit trail or evidence."""
    app = create_app(services.settings, services)
    key = await create_api_key(services, system_caller(), "admin", "reader")
    paths = {
        "interruption": f"/interruptions/{interruption}",
        "interruptions": f"/interruptions?task={task}",
        "task": f"/tasks/{task}",
        "task log": f"/tasks/{task}/log",
        "events": "/events?limit=500",
        "export csv": "/events/export?format=csv",
        "export jsonl": "/events/export?format=jsonl",
        "evidence": "/projects/Vault/releases/0.0.1/evidence",
        "evidence markdown": "/projects/Vault/releases/0.0.1/evidence?format=markdown",
        "deliveries": "/deliveries",
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://conveyor.test/api/v1", headers={"X-Api-Key": key}
    ) as client:
        seen = {}
        for what, path in paths.items():
            response = await client.get(path)
            assert response.status_code == 200, (what, response.text)
            seen[what] = response.text
    return seen


async def web_reads(services: Services, task: str) -> dict[str, str]:
    """The pages a signed-in person sees: the task with its interruption, audit, evidence."""
    await set_password(services, system_caller(), "admin", WEB_PASSWORD)
    app = create_app(services.settings, services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL
    ) as browser:
        page = await browser.get("/sign-in")
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = await browser.post(
            "/sign-in",
            data={"csrf": token, "username": "admin", "password": WEB_PASSWORD, "next": "/"},
        )
        assert signed.status_code == 303, signed.text
        seen = {}
        for path in (
            "/interruptions",
            f"/tasks/{task.split('-')[-1]}",
            "/audit",
            "/audit/export?format=jsonl",
            "/projects/vault/releases/0.0.1/evidence",
        ):
            response = await browser.get(path)
            assert response.status_code == 200, (path, response.text)
            seen[path] = response.text
    return seen


async def test_no_reader_gets_a_secret_back_from_instructions_reasons_outputs_or_mail(
    services: Services, admin: Caller, mailbox: Mailbox
) -> None:
    await apply_text(services, admin, CONFIG)
    await releases.create_release(services, admin, "Leaf", version="1.0.0")
    await releases.create_release(services, admin, "Vault", version="0.0.1")
    task = await deploy(services, admin, "Vault", "Dev", "0.0.1")
    assert (await ended(services, admin, task))["state"] == "waiting"

    # The person asked sees the instructions, with the secrets masked, while it waits.
    [asked] = await interruptions.list_interruptions(services, admin, task=task)
    assert asked["instructions"].startswith(f"Sign in with {MASK} and check the key:\n{MASK}")
    assert not leaks(json.dumps(asked))
    waiting_pages = await web_reads(services, task)
    mail = await mailbox.arrival("keeper@example.com", "Sign in with")
    assert MASK in mail.body and not leaks(mail.subject + mail.body)

    keeper = await caller_of(services, "keeper")
    await interruptions.submit(services, keeper, asked["id"], "proceed", "checked")
    result = await ended(services, admin, task, "success", "failed")
    assert result["state"] == "success", result
    [child] = result["children"]
    assert child["state"] == "success"

    # Secrets still reach the steps that need them: the output variable in a later step, the
    # passed variable in the child (its digest is logged, never the value).
    assert "output-intact" in await log_lines(services, admin, task)
    digest = hashlib.sha256(f"db://app:{PASSWORD}@db".encode()).hexdigest()
    assert f"received {digest}  -" in await log_lines(services, admin, child["id"])

    # The notification step's reason quotes the webhook URL that failed: masked.
    reasons = {s["name"]: s["reason"] or "" for s in result["steps"]}
    assert "deliveries failed" in reasons["Tell"] and "token=" + MASK in reasons["Tell"]
    # The notification mail: sent, with the secrets masked.
    told = await mailbox.arrival("ops@example.com", "Rotated")
    assert told.subject == f"Rotated {MASK}" and MASK in told.body
    await settled(services, admin, 1)

    reads = await api_reads(services, task, asked["id"])
    reads |= {f"web {path}": text for path, text in waiting_pages.items()}
    reads |= {f"web after {p}": text for p, text in (await web_reads(services, task)).items()}
    reads |= {f"mail {i}": m.subject + "\n" + m.body for i, m in enumerate(mailbox.mails)}
    reads["database"] = await every_stored_row(services)
    leaked = {what: leaks(text) for what, text in reads.items() if leaks(text)}
    assert not leaked, leaked
    # And the readers did get the deployment: this is not a test of empty pages.
    assert "Sign in with " + MASK in reads["evidence"] + reads["events"]
    assert "Sign in with " + MASK in reads["export csv"] and MASK in reads["web after /audit"]


async def test_a_multi_line_secret_printed_line_by_line_is_masked_in_the_log(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, CONFIG)
    await releases.create_release(services, admin, "Leaf", version="1.0.0")
    await releases.create_release(services, admin, "Vault", version="0.0.1")
    task = await deploy(services, admin, "Vault", "Dev", "0.0.1")
    assert (await ended(services, admin, task))["state"] == "waiting"
    lines = await log_lines(services, admin, task)
    text = "\n".join(lines)
    assert not leaks(text), leaks(text)
    assert f"connecting with {MASK}" in lines
    # Each long line of the key, printed on its own or inside other text, is masked; its short
    # last line is not (masking four characters would garble the log for no gain).
    start = lines.index(f"connecting with {MASK}") + 1
    assert lines[start : start + 7] == [MASK] * 5 + ["Zm9v", MASK]
    assert f"second line alone: {MASK}." in lines


def test_masker_masks_whole_values_and_each_long_line_of_a_multi_line_one() -> None:
    mask = Masker([PASSWORD, PEM, "ab"])
    # The whole key, as one piece of text (instructions, a mail body): one mask.
    assert mask(f"key:\n{PEM}done") == f"key:\n{MASK}\ndone"
    # Printed line by line (a script's output): each long line masked on its own; the armour
    # is masked too (it is long enough), a line under eight characters is not.
    assert [mask(line) for line in PEM.splitlines()] == [MASK] * 5 + ["Zm9v", MASK]
    assert mask(f"  {PEM_BODY[2]}\r") == f"  {MASK}\r"
    assert mask(f"pw={PASSWORD};") == f"pw={MASK};"
    # Values shorter than three characters are never masked: "ab" would garble every line.
    assert mask("table") == "table"
    assert mask.reveals(f"x{PEM_BODY[0]}x") and not mask.reveals("nothing here")
