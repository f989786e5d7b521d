"""Watch paths over changed files (domain/changes.py); build information (domain/buildinfo)."""

from __future__ import annotations

import pytest

from conveyor.domain.buildinfo import MAX_COMMITS, brought, normalise_build
from conveyor.domain.changes import changed_projects, matching
from conveyor.domain.errors import ValidationFailed

SHOP = {
    "Database": ["database/**"],
    "Shopping Cart Service": ["src/ShoppingCartService/**", "src/Shared/**"],
    "Product Service": ["src/ProductService/**", "src/Shared/**"],
    "Website": ["src/Web/**", "!src/Web/README.md", "!**/*.test.js"],
    "Deploy All": [],
}


def test_each_folder_feeds_its_project() -> None:
    changed = changed_projects(SHOP, ["database/migrations/0003.sql", "src/Web/index.html"])
    assert changed == {
        "Database": ["database/migrations/0003.sql"],
        "Website": ["src/Web/index.html"],
    }


def test_shared_code_feeds_every_project_that_watches_it() -> None:
    changed = changed_projects(SHOP, ["src/Shared/money.py"])
    assert list(changed) == ["Shopping Cart Service", "Product Service"]
    assert changed["Product Service"] == ["src/Shared/money.py"]


def test_exclusions_and_their_order() -> None:
    assert changed_projects(SHOP, ["src/Web/README.md", "src/Web/app.test.js"]) == {}
    # The last matching pattern decides: an exclusion before the inclusion excludes nothing.
    assert matching(["!*.md", "docs/**"], ["docs/a.md"]) == ["docs/a.md"]
    assert matching(["docs/**", "!*.md"], ["docs/a.md", "docs/b.txt"]) == ["docs/b.txt"]


def test_a_project_without_watch_paths_never_matches() -> None:
    everything = ["database/x.sql", "src/Web/a", "README.md"]
    assert "Deploy All" not in changed_projects(SHOP, everything)
    assert matching([], everything) == []
    assert matching(["", "   "], everything) == []


def test_gitignore_style_patterns() -> None:
    paths = [
        "database/a.sql",
        "x/database/b.sql",
        "src/Web/a/b.css",
        "top.sql",
        "dir with space/é.txt",
    ]
    # A folder name matches at any depth; anchored with a slash, only at the root.
    assert matching(["database/"], paths) == ["database/a.sql", "x/database/b.sql"]
    assert matching(["/database/"], paths) == ["database/a.sql"]
    assert matching(["*.sql"], paths) == ["database/a.sql", "top.sql", "x/database/b.sql"]
    assert matching(["src/*/a/**"], paths) == ["src/Web/a/b.css"]
    assert matching(["dir with space/**"], paths) == ["dir with space/é.txt"]


def test_matches_are_sorted_and_unique() -> None:
    assert matching(["a/**"], ["a/z", "a/b", "a/z"]) == ["a/b", "a/z"]


def test_a_bad_pattern_names_the_project() -> None:
    with pytest.raises(ValidationFailed, match="Broken"):
        changed_projects({"Broken": ["a/\\"]}, ["a/b"])


# ---------------------------------------------------------------- build information

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_build_information_is_completed_and_trimmed() -> None:
    build = normalise_build(
        {
            "commit": SHA.upper(),
            "branch": " main ",
            "commits": [
                {"sha": SHA, "author": "Dana <d@x>", "message": "  " + "x" * 5000},
                {"sha": SHA, "author": "again", "message": "duplicate"},
            ],
        }
    )
    assert build["commit"] == SHA and build["branch"] == "main" and build["build_url"] is None
    assert len(build["commits"]) == 1
    assert len(build["commits"][0]["message"]) == 1000
    assert build["commits"][0]["message"].endswith("…")
    assert normalise_build({}) == {} and normalise_build(None) == {}


@pytest.mark.parametrize(
    ("build", "where"),
    [
        ({"commit": "xyz"}, "build.commit"),
        ({"commit": "abc12"}, "build.commit"),
        ({"commit": "a" * 65}, "build.commit"),
        ({"build_url": "javascript:alert(1)"}, "build.build_url"),
        ({"branch": 7}, "build.branch"),
        ({"tag": "v1"}, "build"),
        ({"commits": "abc"}, "build.commits"),
        ({"commits": [{"author": "a"}]}, "build.commits[0].sha"),
        ({"commits": [{"sha": SHA, "files": []}]}, "build.commits[0]"),
        ({"commits": [{"sha": SHA}] * (MAX_COMMITS + 1)}, "build.commits"),
        ("main", "build"),
    ],
)
def test_bad_build_information_is_refused_naming_the_field(build: object, where: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        normalise_build(build)
    assert caught.value.problems[0].where == where, caught.value.problems


def _release(version: str, *shas: str) -> tuple[str, dict[str, object]]:
    return version, {"commit": shas[0] if shas else None, "commits": [{"sha": s} for s in shas]}


RELEASES = [
    _release("1.0.0", "a1", "a0"),
    _release("1.0.2", "c1"),
    _release("1.0.1", "b1", "a1"),
    _release("1.0.3"),
    _release("2.0.0", "d1"),
]


def test_a_deployment_brings_the_commits_of_the_releases_after_the_current_one() -> None:
    result = brought(RELEASES, "1.0.0", "1.0.3")
    assert [c["sha"] for c in result.commits] == ["c1", "b1"]
    assert [c["release"] for c in result.commits] == ["1.0.2", "1.0.1"]
    assert result.releases == ["1.0.3", "1.0.2", "1.0.1"]
    assert result.without_commits == ["1.0.3"]
    assert not result.rollback


def test_nothing_current_brings_everything_up_to_the_release() -> None:
    result = brought(RELEASES, None, "1.0.1")
    assert [c["sha"] for c in result.commits] == ["b1", "a1", "a0"]


def test_the_current_release_brings_nothing_and_an_older_one_is_a_rollback() -> None:
    assert brought(RELEASES, "1.0.2", "1.0.2").commits == []
    back = brought(RELEASES, "2.0.0", "1.0.1")
    assert back.rollback and back.commits == []


def test_what_a_deployment_brings_is_bounded() -> None:
    many = [("1.0.0", {"commits": [{"sha": f"{i:07x}"} for i in range(30)]})]
    result = brought(many, None, "1.0.0", limit=10)
    assert len(result.commits) == 10 and result.truncated
