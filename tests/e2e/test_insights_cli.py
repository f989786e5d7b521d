"""`conveyor insights` and the /insights page against a real server (SQLite; the SQL on both
databases is tests/integration/test_insights_sql.py): JSON and CSV for scripts, a table for
people, the page's charts with their numbers beside them, and the errors' exit codes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Iterator

import pytest

from conveyor.services.access import caller_for_user, get_user
from conveyor.services.core import bootstrap
from conveyor.settings import Settings
from tests import loopback
from tests.e2e.conftest import Server, describe
from tests.integration.test_insights_sql import put_history

pytestmark = pytest.mark.e2e

RANGE = ("--since", "2026-06-01T00:00:00+00:00", "--until", "2026-06-11T00:00:00+00:00")


@pytest.fixture(scope="module")
def e2e_database() -> None:
    """One database is enough here: SQLite."""
    return None


@pytest.fixture(scope="module")
def history(server: Server) -> Iterator[Server]:
    """The constructed history of tests/unit/test_insights.py, written into the server's
    database as the engine would have left it."""

    async def fill() -> None:
        services = bootstrap(Settings(data_dir=server.data_dir, run_engine=False))
        try:
            async with services.read() as session:
                admin = await caller_for_user(session, await get_user(session, "admin"))
            await put_history(services, admin)
        finally:
            await services.close()

    asyncio.run(fill())
    yield server


def test_json_csv_and_table(history: Server) -> None:
    as_json = history.cli_in_process("insights", *RANGE, "--output", "json")
    assert as_json.returncode == 0, describe(as_json)
    body = json.loads(as_json.stdout)
    assert (body["overall"]["deployments"], body["overall"]["failures"]) == (8, 3)
    [prod] = [e for e in body["environments"] if e["name"] == "Prod"]
    assert prod["change_failure_rate"] == pytest.approx(2 / 6, abs=1e-4)

    as_csv = history.cli_in_process("insights", *RANGE, "--environment", "prod", "--output", "csv")
    assert as_csv.returncode == 0, describe(as_csv)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["scope"], r["name"]) for r in rows] == [
        ("overall", "All"),
        ("project_group", "Apps"),
        ("project_group", "Services"),
        ("project", "Web"),
        ("project", "Api"),
        ("environment", "Prod"),
    ]
    assert rows[-1]["deployments"] == "6" and rows[-1]["successes"] == "5"

    table = history.cli_in_process("insights", *RANGE, "--project", "Web")
    assert table.returncode == 0, describe(table)
    for text in ("Projects", "Web", "Prod", "33.3%", "Waiting for approvals", "Leads"):
        assert text in table.stdout, table.stdout


def test_errors_have_their_exit_codes(history: Server) -> None:
    bad = history.cli_in_process("insights", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since" in bad.stderr, describe(bad)
    backwards = history.cli_in_process("insights", "--since", "2026-06-02", "--until", "2026-06-01")
    assert backwards.returncode == 2 and "before" in backwards.stderr, describe(backwards)
    missing = history.cli_in_process("insights", "--project", "Nope")
    assert missing.returncode == 4, describe(missing)
    devs = history.api_key_for("devs-only", in_process=True)
    refused = history.cli_in_process("insights", "--environment", "Prod", api_key=devs)
    assert refused.returncode == 3 and "DeploymentView" in refused.stderr, describe(refused)


def test_the_page_draws_charts_with_their_numbers(history: Server) -> None:
    with loopback.client(base_url=history.url, timeout=30) as browser:
        page = browser.get("/sign-in")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text
        form = {
            "csrf": found.group(1),
            "username": "admin",
            "password": history.admin_password,
            "next": "/insights",
        }
        assert browser.post("/sign-in", data=form).status_code in (302, 303)
        shown = browser.get("/insights", params={"since": "2026-06-01", "until": "2026-06-10"})
        assert shown.status_code == 200, shown.text
        html = shown.text
        assert 'href="/insights" aria-current="page"' in html  # in the navigation
        assert "<script" not in html.split("</header>", 1)[1]
        # Each chart is an image with a title and a description that says its numbers…
        assert html.count('role="img"') >= 5
        assert re.search(r'<desc id="chart-failure-d">[^<]*Prod: 33\.3%', html), html
        # …and a table of the same numbers beside it.
        assert re.search(r"<th scope=\"row\">Prod</th><td class=\"right\">33\.3%</td>", html)
        assert re.search(r"<th scope=\"row\">Leads</th><td class=\"right\">1</td>", html)
        assert 'value="2026-06-10"' in html  # the last day chosen, included
        as_csv = browser.get("/insights.csv", params={"since": "2026-06-01"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        bad = browser.get("/insights", params={"since": "soon"})
        assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text
