"""The import layers of DESIGN.md, enforced: domain <- services <- (api, web, cli, engine)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "conveyor"

# What each layer may import from conveyor.
ALLOWED: dict[str, set[str]] = {
    "domain": {"domain"},
    "store": {"domain", "store"},
    "services": {"domain", "store", "services", "settings"},
    "engine": {"domain", "store", "services", "engine", "settings"},
    "api": {"domain", "services", "api", "settings", "web", "engine"},
    "web": {"domain", "services", "web", "settings", "api"},
    "cli": {"domain", "services", "cli", "settings", "api", "store", "engine"},
    "settings": set(),
}

# The domain is pure: the standard library plus pure, I/O-free libraries.
DOMAIN_THIRD_PARTY = {"jinja2", "pathspec", "yaml"}
STDLIB_IO = {"sqlite3", "socket", "subprocess", "requests", "httpx", "sqlalchemy", "fastapi"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def test_layers_import_only_what_they_may() -> None:
    problems = []
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        layer = _layer(path)
        if layer not in ALLOWED:
            continue
        for name in _imports(path):
            if name.startswith("conveyor."):
                target = name.split(".")[1]
                if target not in ALLOWED[layer]:
                    problems.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_domain_is_pure() -> None:
    problems = []
    for path in (PACKAGE / "domain").rglob("*.py"):
        for name in _imports(path):
            root = name.split(".")[0]
            if root == "conveyor":
                continue
            if root in STDLIB_IO or (root not in DOMAIN_THIRD_PARTY and not _is_stdlib(root)):
                problems.append(f"domain/{path.name} imports {name}")
    assert not problems, "the domain must stay pure:\n" + "\n".join(problems)


def _is_stdlib(module: str) -> bool:
    import sys

    return module in sys.stdlib_module_names or module == "__future__"


def test_the_api_and_web_never_touch_the_store() -> None:
    for layer in ("api", "web"):
        for path in (PACKAGE / layer).rglob("*.py"):
            assert not any(n.startswith("conveyor.store") for n in _imports(path)), path
