"""Octo Pet Shop, story 3: a commit changes only `database/` and `src/Web/`; `conveyor changes`
reports exactly Database and Website; the build server releases those two only, and they reach
Development.

A real git repository made from a copy of `examples/octopetshop/`, its own server per database,
and every command run as the build server's service account, as a CI job would run it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import EXAMPLE, Server, describe
from tests.gitrepos import GitRepo

pytestmark = pytest.mark.e2e

EXAMPLES = EXAMPLE.parent
COMPONENTS = {
    # project: (package id, folder in the repository)
    "Database": ("OctoPetShop.Database", "database"),
    "Shopping Cart Service": ("OctoPetShop.ShoppingCartService", "src/ShoppingCartService"),
    "Product Service": ("OctoPetShop.ProductService", "src/ProductService"),
    "Website": ("OctoPetShop.Web", "src/Web"),
}
REVIEWS = (
    "-- Product reviews.\nCREATE TABLE reviews (\n    id INTEGER PRIMARY KEY,\n"
    "    product_id INTEGER NOT NULL REFERENCES products (id),\n"
    "    stars INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5)\n);\n"
)
WAIT_SECONDS = 60.0


class Build:
    """The build server: its API key, its checkout, and what it runs."""

    def __init__(self, server: Server, key: str, repo: GitRepo, out: Path) -> None:
        self.server, self.key, self.repo, self.out = server, key, repo, out

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.server.cli(*args, api_key=self.key)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, describe(result)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--output", "json"))

    def pack_and_push(self, project: str) -> str:
        """Pack the component's folder at the version its VERSION file says, and push it."""
        package_id, folder = COMPONENTS[project]
        source = self.repo.root / folder
        version = (source / "VERSION").read_text(encoding="utf-8").strip()
        made = self.json(
            "package", "pack", str(source), "--id", package_id, "--version", version,
            "-o", str(self.out),
        )  # fmt: skip
        self.ok("package", "push", made["path"])
        return version

    def wait(self, task: str) -> None:
        data = self.json("task", "wait", task, "--timeout", str(WAIT_SECONDS))
        assert data == {"id": task, "state": "success"}, data

    def development(self) -> dict[str, dict[str, Any]]:
        rows = self.json("deployment", "list", "--environment", "Development")
        return {f"{r['project']} {r['release']}": r for r in rows}


@pytest.fixture(scope="module")
def build(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The example applied, the build server's key, and its checkout: a git repository made
    from a copy of the example, with one commit."""
    result = server.cli("apply", "-f", str(EXAMPLE))
    assert result.returncode == 0, describe(result)
    tmp = tmp_path_factory.mktemp("story3")
    repo = GitRepo(tmp / "octopetshop")
    repo.copy_in(EXAMPLES)
    repo.commit("Octo Pet Shop")
    return Build(server, server.api_key_for("build"), repo, tmp / "dist")


def test_story_3_only_what_changed_is_released(build: Build) -> None:
    repo = ("--repo", str(build.repo.root))
    first = build.repo.git("rev-parse", "HEAD")

    # Story 1 from the first commit: each component packed, pushed and released by its own
    # build, with the commit it was built from.
    def release_first(project: str) -> Any:
        version = build.pack_and_push(project)
        return build.json(
            "release", "create", "--project", project, "--version", version,
            "--commit", first, *repo,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=len(COMPONENTS)) as pool:
        made = list(pool.map(release_first, COMPONENTS))
    assert [(r["project"], r["version"]) for r in made] == [(p, "1.0.0") for p in COMPONENTS]
    with ThreadPoolExecutor(max_workers=len(COMPONENTS)) as pool:
        list(pool.map(lambda r: build.wait(r["task"]), build.development().values()))
    assert build.json("changes", *repo, "--since", "last-release")["projects"] == []

    # Story 3: one commit changes the database and the website only.
    build.repo.write(
        {
            "database/migrations/0003_add_reviews.sql": REVIEWS,
            "database/VERSION": "1.0.1\n",
            "src/Web/VERSION": "1.0.1\n",
        }
    )
    index = build.repo.root / "src/Web/index.html"
    index.write_text(index.read_text().replace("</body>", "<p>Reviews!</p>\n</body>"))
    second = build.repo.commit("Product reviews")
    expected = {
        "since": "last-release",
        "until": second,
        "projects": ["Database", "Website"],
        "files": {
            "Database": ["database/VERSION", "database/migrations/0003_add_reviews.sql"],
            "Website": ["src/Web/VERSION", "src/Web/index.html"],
        },
    }
    changed = build.json("changes", *repo, "--since", "last-release")
    assert changed == expected
    between = build.json("changes", *repo, "--since", first, "--until", second)
    assert between == {**expected, "since": first}
    text = build.ok("changes", *repo, "--since", "last-release")
    assert "Unchanged: Shopping Cart Service, Product Service" in text, text

    # Before the build pushed the packages, releasing them is refused and creates nothing.
    create = ("release", "create", "--changed-since", "last-release", "--version", "1.0.1", *repo)
    refused = build.run(*create)
    assert refused.returncode == 2, describe(refused)
    assert "OctoPetShop.Database 1.0.1" in refused.stderr, describe(refused)
    assert "OctoPetShop.Web 1.0.1" in refused.stderr, describe(refused)
    assert not any(r.endswith("1.0.1") for r in build.development())

    # The build server packs and pushes what changed, then releases exactly that.
    assert [build.pack_and_push(p) for p in changed["projects"]] == ["1.0.1", "1.0.1"]
    released = build.json(*create)
    assert released == [
        {
            "id": released[0]["id"],
            "project": "Database",
            "version": "1.0.1",
            "packages": {"OctoPetShop.Database": "1.0.1"},
            "children": {},
        },
        {
            "id": released[1]["id"],
            "project": "Website",
            "version": "1.0.1",
            "packages": {"OctoPetShop.Web": "1.0.1"},
            "children": {},
        },
    ]
    shown = build.json("release", "show", "--project", "Website", "--version", "1.0.1")
    assert shown["build"]["commit"] == second
    assert [c["message"] for c in shown["build"]["commits"]] == ["Product reviews"]

    # Both reach Development by themselves; the services stay at 1.0.0.
    development = build.development()
    newest = [r for name, r in development.items() if name.endswith("1.0.1")]
    assert sorted(r["project"] for r in newest) == ["Database", "Website"], development
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda r: build.wait(r["task"]), newest))
    board = build.json("dashboard")
    current = {
        c["project"]: c["release"] for c in board["cells"] if c["environment"] == "Development"
    }
    assert current == {
        "Database": "1.0.1",
        "Shopping Cart Service": "1.0.0",
        "Product Service": "1.0.0",
        "Website": "1.0.1",
    }, board
    folder = next(build.server.data_dir.glob("targets/*/development"))
    with sqlite3.connect(folder / "database" / "octopetshop-Development.sqlite") as conn:
        applied = [n for (n,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert applied[-1] == "0003_add_reviews.sql", applied
    live = folder / "website" / "current"
    assert "Reviews!" in (live / "index.html").read_text(encoding="utf-8")

    # Nothing is left to release, from either point of view.
    for since in ("last-release", "last-deployed:Development"):
        assert build.json("changes", *repo, "--since", since)["projects"] == [], since
