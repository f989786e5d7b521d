"""`conveyor package pack|push|list|delete` against a real server, with CLI.md's exit codes."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import httpx
import pytest

from tests import loopback
from tests.e2e.conftest import Server, describe

pytestmark = pytest.mark.e2e


def make_site(root: Path, text: str = "<h1>Pet shop</h1>") -> Path:
    (root / "site").mkdir(parents=True, exist_ok=True)
    (root / "site" / "index.html").write_text(text)
    (root / "deploy.sh").write_text("echo deployed\n")
    (root / "deploy.sh").chmod(0o755)
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    return root


@pytest.fixture(scope="module")
def build_key(server: Server) -> str:
    """A service account holding the Build Server role: may push, may not replace."""
    server.ok("admin", "user", "add", "build", "--service-account")
    response = loopback.post(
        f"{server.url}/api/v1/teams",
        headers={"X-Api-Key": server.api_key},
        json={"name": "Build", "members": ["build"], "roles": [{"role": "Build Server"}]},
    )
    assert response.status_code == 201, response.text
    return server.api_key_for("build")


def test_pack_is_reproducible_and_prints_the_path(server: Server) -> None:
    src = make_site(server.tmp / "web-src")
    out = server.tmp / "dist"
    first = server.ok(
        "package",
        "pack",
        str(src),
        "--id",
        "OctoPetShop.Web",
        "--version",
        "1.0.0",
        "-o",
        str(out),
        "--output",
        "json",
    )
    data = json.loads(first.stdout)
    path = Path(data["path"])
    assert path == out / "OctoPetShop.Web.1.0.0.zip"
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["size"] == path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["deploy.sh", "site/", "site/index.html"]

    (src / "deploy.sh").touch()  # a new time changes nothing
    second = server.ok(
        "package",
        "pack",
        str(src),
        "--id",
        "OctoPetShop.Web",
        "--version",
        "1.0.0",
        "-o",
        str(out),
        "--output",
        "json",
    )
    assert json.loads(second.stdout)["sha256"] == data["sha256"]

    text = server.ok(
        "package",
        "pack",
        str(src),
        "--id",
        "OctoPetShop.Web",
        "--version",
        "1.0.0",
        "-o",
        str(out),
        "--format",
        "tar.gz",
    )
    assert text.stdout.strip() == str(out / "OctoPetShop.Web.1.0.0.tar.gz")

    bad = server.cli("package", "pack", str(src), "--id", "Web", "--version", "1.0.x")
    assert bad.returncode == 2, describe(bad)
    assert "1.2.3" in bad.stderr


def test_push_conflict_replace_and_list(server: Server, build_key: str) -> None:
    src = make_site(server.tmp / "db-src")
    out = server.tmp / "dist-db"
    server.ok(
        "package",
        "pack",
        str(src),
        "--id",
        "OctoPetShop.Database",
        "--version",
        "1.0.1",
        "-o",
        str(out),
    )
    package = out / "OctoPetShop.Database.1.0.1.zip"

    pushed = server.ok("package", "push", str(package), api_key=build_key)
    assert "Pushed OctoPetShop.Database 1.0.1" in pushed.stdout, describe(pushed)
    assert hashlib.sha256(package.read_bytes()).hexdigest() in pushed.stdout

    again = server.cli("package", "push", str(package), api_key=build_key)
    assert again.returncode == 5, describe(again)
    assert "--replace" in again.stderr

    refused = server.cli("package", "push", str(package), "--replace", api_key=build_key)
    assert refused.returncode == 3, describe(refused)
    assert "BuiltInFeedAdminister" in refused.stderr

    make_site(src, "<h1>Pet shop, now with cats</h1>")
    server.ok(
        "package",
        "pack",
        str(src),
        "--id",
        "OctoPetShop.Database",
        "--version",
        "1.0.1",
        "-o",
        str(out),
    )
    replaced = server.ok("package", "push", str(package), "--replace", "--output", "json")
    assert json.loads(replaced.stdout)["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()

    renamed = server.tmp / "artifact.zip"
    renamed.write_bytes(package.read_bytes())
    server.ok(
        "package", "push", str(renamed), "--id", "OctoPetShop.Database", "--version", "1.0.10"
    )

    listed = json.loads(
        server.ok("package", "list", "--id", "octopetshop.database", "--output", "json").stdout
    )
    assert [p["version"] for p in listed] == ["1.0.10", "1.0.1"]
    table = server.ok("package", "list").stdout
    assert "OctoPetShop.Database" in table and "1.0.10" in table


def test_bad_archives_and_missing_things_exit_with_their_codes(server: Server) -> None:
    evil = server.tmp / "Evil.1.0.0.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../../outside.sh", "echo gotcha")
    bad = server.cli("package", "push", str(evil), "--output", "json")
    assert bad.returncode == 2, describe(bad)
    error = json.loads(bad.stderr)["error"]
    assert error["code"] == "validation_failed" and "../../outside.sh" in error["message"]

    missing = server.cli("package", "push", str(server.tmp / "Nope.1.0.0.zip"))
    assert missing.returncode == 2, describe(missing)

    gone = server.cli("package", "delete", "Nope", "1.0.0")
    assert gone.returncode == 4, describe(gone)
    listed = json.loads(server.ok("package", "list", "--id", "Evil", "--output", "json").stdout)
    assert listed == []


def test_the_upload_progress_follows_what_httpx_reads(tmp_path: Path) -> None:
    from typing import IO, cast

    from conveyor.cli.packages import _Tracked

    data = bytes(range(256)) * 1024
    (tmp_path / "big.zip").write_bytes(data)
    seen: list[int] = []
    with (tmp_path / "big.zip").open("rb") as fh:
        upload = cast(IO[bytes], _Tracked(fh, seen.append))
        request = httpx.Request("POST", "http://x/", files={"file": ("big.zip", upload)})
        assert int(request.headers["content-length"]) > len(data)  # sized, not chunked
        body = request.read()
    assert data in body
    assert seen[-1] == len(data) and seen == sorted(seen)
