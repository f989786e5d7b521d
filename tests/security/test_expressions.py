"""No `#{ }` expression can stall the server (issue 10, item 2).

`#{ (9**15000000) % 7 == 1 }` as a run condition froze every request for 12-30 s when the plan
endpoint or the engine evaluated it. Evaluation is now bounded before any work is done (power,
repetition, concatenation, filters, output size; no loops or calls) and runs off the event loop;
the quoting filters make free text safe to put in a script.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from typing import Any

import httpx
import pytest

from conveyor.domain.expressions import MAX_INT_BITS, ExpressionLimit
from conveyor.domain.variables import substitute
from tests import loopback
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Server
from tests.security.latency import attack_for, probing

# The real server of tests/e2e, on SQLite and PostgreSQL.
server = e2e.server
e2e_database = e2e.e2e_database

FREEZE = "#{ (9**15000000) % 7 == 1 }"


# ---------------------------------------------------------------- the bounds, unit by unit


@pytest.mark.parametrize(
    ("template", "says"),
    [
        (FREEZE, "too large a number"),
        ("#{ 10**4000 * 10**4000 }", "too large a number"),
        ("#{ 'a' * 10**9 }", "longer than the limit"),
        ("#{ ['a'] * 10**8 }", "longer than the limit"),
        ("#{ ('ab' * 400000) + ('ab' * 400000) }", "longer than the limit"),
        ("#{ ('a' * 600000) ~ ('b' * 600000) }", "longer than the limit"),
        ("#{ ('a' * 1000) | replace('a', 'b' * 2000) }", "longer than the limit"),
        ("#{ ('a' * 600000) | list | join('--') }", "longer than the limit"),
        ("#{ ('a\n' * 1000) | indent(2000) }", "longer than the limit"),
        ("#{ '%0999999999d' % 1 }", "formatting with %"),
        (
            "#{% for i in range(99999) %}#{% for j in range(99999) %}#{% endfor %}#{% endfor %}",
            "loop",
        ),
        ("#{ 'x'.ljust(10**9) }", "calling a function"),
        ("#{" + "(" * 5000 + "1" + ")" * 5000 + "}", "nests too deeply"),
    ],
)
def test_costly_expressions_are_refused_before_they_run(template: str, says: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ExpressionLimit) as raised:
        substitute(template, {}, what='the run condition of step "Migrate"')
    assert time.perf_counter() - started < 0.5
    assert 'the run condition of step "Migrate"' in raised.value.message
    assert says in raised.value.message


def test_output_over_the_limit_is_refused_as_it_is_produced() -> None:
    values = {"Notes": "n" * 600}
    with pytest.raises(ExpressionLimit, match="longer than the limit of 1000 bytes"):
        substitute("#{Notes}#{Notes}", values, what="the script", limit=1000)
    assert substitute("#{Notes}", values, limit=1000) == "n" * 600


def test_ordinary_expressions_still_work() -> None:
    values = {"Env": "Production", "RunMigrations": "True"}
    assert substitute("#{Env | upper}-#{ 2**10 }", values) == "PRODUCTION-1024"
    assert substitute("#{ 3 ** 100 > 5 }", {}) == "True"
    assert substitute("#{RunMigrations}", values) == "True"
    assert substitute("#{% if 1 < 2 %}yes#{% endif %}", {}) == "yes"
    assert substitute("#{ 2 ** 2000 }", {}) == str(2**2000)
    assert len(str(2**2000)) < MAX_INT_BITS


def test_a_filter_that_is_not_offered_is_an_error_naming_it() -> None:
    with pytest.raises(Exception, match="No filter named 'center'"):
        substitute("#{ 'a' | center(999999999) }", {})


# ---------------------------------------------------------------- quoting filters

HOSTILE = [
    '"; echo INJECTED',
    "it's $(echo INJECTED) `echo INJECTED` $HOME \\ \n; echo INJECTED",
    '\u2018typographic\u2019 quotes \' and "double"',
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("name", ["shell", "quote"])
def test_shell_filter_gives_one_word_that_bash_reads_back_unchanged(name: str, text: str) -> None:
    script = substitute(f"printf '%s' #{{Notes | {name}}}", {"Notes": text})
    assert shlex.split(script)[2:] == [text]
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert ran.stdout == text
    assert "INJECTED" not in ran.stdout.replace(text, "")


@pytest.mark.parametrize("text", HOSTILE)
def test_python_filter_gives_a_literal_with_the_same_text(text: str) -> None:
    script = substitute("import sys; sys.stdout.write(#{Notes | python})", {"Notes": text})
    ran = subprocess.run(["python3", "-c", script], capture_output=True, text=True, check=True)
    assert ran.stdout == text


PWSH_QUOTES = "'\u2018\u2019\u201a\u201b"


def _pwsh_unquote(quoted: str) -> str:
    """How PowerShell reads a single-quoted string: two quotes in a row are one quote, and any
    lone quote (of its five kinds) ends the string."""
    assert quoted[0] in PWSH_QUOTES
    out, i = [], 1
    while quoted[i] not in PWSH_QUOTES or quoted[i + 1 : i + 2] in tuple(PWSH_QUOTES):
        if quoted[i] in PWSH_QUOTES:
            i += 1
        out.append(quoted[i])
        i += 1
    assert i == len(quoted) - 1, f"the string ends early, at {i}: {quoted!r}"
    return "".join(out)


@pytest.mark.parametrize("text", HOSTILE)
def test_pwsh_filter_gives_a_string_powershell_reads_back_unchanged(text: str) -> None:
    assert _pwsh_unquote(substitute("#{Notes | pwsh}", {"Notes": text})) == text


# ---------------------------------------------------------------- on the real server

CONFIG = f"""
environments:
  - name: Development
lifecycles:
  - name: Straight
    phases:
      - name: Development
        environments: [Development]
project_groups:
  - name: Attacks
projects:
  - name: Freezer
    group: Attacks
    lifecycle: Straight
    process:
      steps:
        - name: Migrate
          type: script
          condition: variable
          condition_expression: "{FREEZE}"
          script: echo never
"""


def _api(server: Server) -> httpx.Client:
    return loopback.client(
        base_url=f"{server.url}/api/v1", headers={"X-Api-Key": server.api_key}, timeout=120
    )


def _wait_for_task(api: httpx.Client, task: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state: dict[str, Any] = api.get(f"/tasks/{task}").json()
        if state["state"] in ("success", "failed", "canceled", "timed_out"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"task {task} did not finish: {state}")


@pytest.mark.e2e
def test_a_freezing_run_condition_neither_freezes_the_plan_nor_the_engine(server: Server) -> None:
    with _api(server) as api:
        applied = api.post("/config/apply", json={"text": CONFIG})
        assert applied.status_code == 200, applied.text
        created = api.post("/projects/Freezer/releases", json={"version": "1.0.0"})
        assert created.status_code == 201, created.text
        answers: list[httpx.Response] = []

        def ask_for_the_plan() -> None:
            answers.append(api.get("/projects/Freezer/releases/1.0.0/plan?to=Development"))

        with probing(server.url) as probe:
            attack_for(3.0, ask_for_the_plan)
        probe.assert_responsive()
        for answer in answers:
            assert answer.status_code == 422, answer.text
            message = answer.json()["message"]
            assert 'the run condition of step "Migrate"' in message
            assert "too large a number" in message

        with probing(server.url) as probe:
            queued = api.post(
                "/deployments",
                json={"project": "Freezer", "version": "1.0.0", "environment": "Development"},
            )
            assert queued.status_code == 201, queued.text
            task = _wait_for_task(api, queued.json()["task"])
            attack_for(1.0, lambda: None)
        probe.assert_responsive()
        assert task["state"] == "failed"
        lines = api.get(f"/tasks/{queued.json()['task']}/log").json()["lines"]
        log = "\n".join(line["line"] for line in lines)
        assert 'the run condition of step "Migrate"' in log
        assert "too large a number" in log
