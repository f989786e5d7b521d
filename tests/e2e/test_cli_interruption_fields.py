"""`conveyor interruption show|submit --field NAME=VALUE` against a real server: the questions
are printed, a wrong answer exits 2 naming the field, a right one lets the deployment go on with
the answer as a variable of the next step."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import Server, describe
from tests.integration.test_interruption_fields import CONFIG

pytestmark = pytest.mark.e2e


def answer_as_json(server: Server, *args: str, api_key: str | None = None) -> Any:
    result = server.cli_in_process(*args, "--output", "json", api_key=api_key)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def waiting_interruption(server: Server, task: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = answer_as_json(server, "interruption", "list", "--task", task)
        if found:
            return str(found[0]["id"])
        time.sleep(0.1)
    raise AssertionError(f"{task} never asked")


def test_questions_shown_wrong_answers_exit_2_and_the_answer_reaches_the_next_step(
    server: Server,
) -> None:
    config = server.tmp / "fields.yaml"
    config.write_text(CONFIG.format(approvals=1))
    applied = server.cli_in_process("apply", "-f", str(config))
    assert applied.returncode == 0, describe(applied)
    bob = server.api_key_for("bob", in_process=True)
    release = answer_as_json(server, "release", "create", "--project", "Shop")
    deploy = ("release", "deploy", "--project", "Shop", "--version", release["version"])
    task = answer_as_json(server, *deploy, "--to", "Dev")["task"]
    ident = waiting_interruption(server, task)

    shown = server.cli("interruption", "show", ident, api_key=bob)
    assert shown.returncode == 0, describe(shown)
    assert "asks (answer with --field NAME=VALUE):" in shown.stdout
    assert "ChangeTicket: Change ticket (matching ^CHG-[0-9]+$)" in shown.stdout
    assert "Risk: Risk (one of low, high)" in shown.stdout
    assert "Remark: Remark, optional" in shown.stdout

    submit = ("interruption", "submit", ident, "--result", "proceed")
    wrong = server.cli(*submit, "--field", "ChangeTicket=CHG-x", "--field", "Risk=low", api_key=bob)
    assert wrong.returncode == 2, describe(wrong)
    assert "fields.ChangeTicket: must match ^CHG-[0-9]+$" in wrong.stderr
    junk = server.cli_in_process(*submit, "--field", "ChangeTicket", api_key=bob)
    assert junk.returncode == 2 and '"ChangeTicket" is not NAME=VALUE' in junk.stderr

    right = server.cli_in_process(
        *submit, "--field", "ChangeTicket=CHG-42", "--field", "Risk=high", api_key=bob
    )
    assert right.returncode == 0, describe(right)
    waited = answer_as_json(server, "task", "wait", task, "--timeout", "30")
    assert waited["state"] == "success", waited
    log = server.cli_in_process("task", "log", task)
    assert "ticket=CHG-42" in log.stdout and "risk=high" in log.stdout, describe(log)
    answered = server.cli("interruption", "show", ident, api_key=bob)
    assert "ChangeTicket: Change ticket (matching ^CHG-[0-9]+$) = CHG-42" in answered.stdout
