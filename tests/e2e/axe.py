"""axe-core, the accessibility engine, run inside a page that Playwright drives.

axe-core comes from the npm registry at the version pinned, with its integrity, in
tests/e2e/browser-checks/package.json and package-lock.json. .ci/run installs it with `npm ci`
into a folder outside the repository (CONVEYOR_TEST_NPM_DIR, by default
~/.cache/conveyor-tests/npm); the same command does it on a developer's machine:

    d=~/.cache/conveyor-tests/npm; mkdir -p $d && cp tests/e2e/browser-checks/package*.json $d \
      && npm ci --prefix $d --ignore-scripts --no-audit --no-fund

Without it the accessibility checks are skipped with that notice; under CI they fail instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page

MANIFEST = Path(__file__).with_name("browser-checks") / "package.json"
NPM_DIR = Path(
    os.environ.get("CONVEYOR_TEST_NPM_DIR") or Path.home() / ".cache" / "conveyor-tests" / "npm"
)
AXE = NPM_DIR / "node_modules" / "axe-core" / "axe.min.js"
# The rules of WCAG 2.2 A and AA, and axe's best practices; only these impacts fail a page.
TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice")
BLOCKING = ("serious", "critical")
INSTALL = (
    f"d={NPM_DIR}; mkdir -p $d && cp tests/e2e/browser-checks/package*.json $d "
    "&& npm ci --prefix $d --ignore-scripts --no-audit --no-fund"
)


@cache
def axe_source() -> str:
    """axe.min.js as pinned; skip (fail under CI) when it is not installed at that version."""
    wanted = json.loads(MANIFEST.read_text())["dependencies"]["axe-core"]
    try:
        installed = json.loads((AXE.parent / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        installed = None
    if installed != wanted:
        message = f"axe-core {wanted} is not installed in {NPM_DIR} (found {installed}): {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return AXE.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Violation:
    page: str
    rule: str
    impact: str
    help: str
    nodes: tuple[str, ...]  # each: the element's selector and what is wrong with it

    def __str__(self) -> str:
        where = "\n".join(f"    {n}" for n in self.nodes)
        return f"{self.page}: {self.rule} ({self.impact}): {self.help}\n{where}"


def add_axe(context: BrowserContext) -> None:
    """axe.min.js run first in every page ``context`` opens from now on (an init script, given
    to the browser once), so that ``violations`` need not send its half a megabyte per page.
    Init scripts run through the DevTools protocol too: the pages' CSP does not apply."""
    context.add_init_script(script=axe_source())


def violations(page: Page, name: str) -> list[Violation]:
    """Every serious or critical violation axe finds in the page as it is now. The script is
    evaluated through the DevTools protocol, which the page's Content-Security-Policy (no inline
    script) does not apply to, so the page is checked with its real headers."""
    # Its stylesheet applied: the text a test waited for is in the DOM before the CSS is, and
    # axe measures what is laid out (touch targets, contrast). Seen under load after a redirect.
    page.wait_for_load_state("load")
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    found: list[dict[str, Any]] = page.evaluate(
        """async tags => (await axe.run(document, {
            runOnly: {type: "tag", values: tags}, resultTypes: ["violations"],
        })).violations""",
        list(TAGS),
    )
    return [
        Violation(
            page=name,
            rule=v["id"],
            impact=v["impact"],
            help=v["help"],
            nodes=tuple(
                f"{' '.join(n['target'])}: {n.get('failureSummary', '').replace(chr(10), ' ')}"
                for n in v["nodes"]
            ),
        )
        for v in found
        if v["impact"] in BLOCKING
    ]
