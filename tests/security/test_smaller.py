"""Issue 10, item 7 (the smaller items), as an attacker holding an ordinary account would try
them against a real `conveyor server` (SQLite and PostgreSQL):

- SSRF: a webhook pointed at the server's own machine, its network or the cloud metadata
  service, written as an address, a spelling of one, or a name that resolves inward;
- a no-op edit by someone who may only read (it answered 200 "nothing changed");
- a release pinning a package version the feed lacks (it was created, could never deploy, and
  became the highest release);
- the test suite's cheap password hashing switched on for a real server.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.domain import webhook_targets as targets
from conveyor.engine.senders import SendRefused, post_webhook
from conveyor.services.core import bootstrap
from conveyor.settings import Settings
from tests import loopback
from tests.e2e.conftest import (  # noqa: F401  (fixtures)
    CONVEYOR,
    Server,
    clean_env,
    describe,
    e2e_database,
    free_port,
    server,
)
from tests.receivers import Receiver

pytestmark = pytest.mark.e2e

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Dev only
    phases:
      - name: Dev
        environments: [Dev]
project_groups:
  - name: Apps
users:
  - username: reader
  - username: gone
    active: false
teams:
  - name: Readers
    members: [reader]
    roles:
      - role: Auditor
projects:
  - name: Shop
    group: Apps
    lifecycle: Dev only
    process:
      steps:
        - name: Ship
          type: package
          package: Shop.Web
    variables:
      - name: Greeting
        value: hello
  - name: Hooked
    group: Apps
    lifecycle: Dev only
    process:
      steps:
        - name: Work
          type: script
          script: echo work
"""

# Each way of writing an address on the server's own machine or network.
INWARD = [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://127.1/hook", "loopback"),
    ("http://2130706433/hook", "loopback"),
    ("http://0x7f.0.0.1/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://[::ffff:a9fe:a9fe]/latest/meta-data/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("https://192.168.1.1/hook", "private"),
    ("http://[fc00::1]/hook", "private"),
    ("http://0.0.0.0:8080/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://100.100.100.200/latest/meta-data/", "not a public"),
    ("http://localhost:8080/hook", "this machine"),
    ("http://LOCALHOST./hook", "this machine"),
    ("http://admin.localhost/hook", "this machine"),
    ("http://metadata.google.internal/computeMetadata/v1/", "this machine"),
]
OUTWARD = [
    "https://hooks.slack.com/services/T000/B000/XXXX",
    "https://93.184.216.34/hook",
    "https://[2606:4700:4700::1111]/hook",
    "https://chat.example.com/hook?token=#{ChatToken}",
]


def api(
    to: Server, method: str, path: str, api_key: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {"X-Api-Key": api_key or to.api_key}
    return loopback.request(method, f"{to.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def shop(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Server:  # noqa: F811
    config = tmp_path_factory.mktemp("config") / "conveyor.yaml"
    config.write_text(CONFIG)
    server.ok("apply", "-f", str(config))
    return server


@pytest.fixture(scope="module")
def reader_key(shop: Server) -> str:
    return shop.api_key_for("reader", in_process=True)


# ---------------------------------------------------------------- SSRF


@pytest.mark.parametrize(("url", "why"), INWARD)
def test_inward_webhook_urls_are_refused_as_written(url: str, why: str) -> None:
    message = targets.target_problem(url)
    assert message is not None and why in message, (url, message)
    assert "CONVEYOR_ALLOW_PRIVATE_WEBHOOKS" in message


@pytest.mark.parametrize("url", OUTWARD)
def test_public_webhook_urls_are_accepted(url: str) -> None:
    assert targets.target_problem(url) is None


def test_a_subscription_to_an_inward_address_is_refused_with_what_to_do(shop: Server) -> None:
    for n, (url, why) in enumerate(INWARD):
        sub = {"name": f"Steal {n}", "webhook": {"url": url}, "categories": ["ReleaseCreated"]}
        response = api(shop, "POST", "/subscriptions", json=sub)
        assert response.status_code == 422, (url, response.text)
        problem = response.json()
        assert problem["problems"][0]["path"].endswith("webhook.url"), problem
        message = problem["problems"][0]["message"]
        assert why in message and "CONVEYOR_ALLOW_PRIVATE_WEBHOOKS=true" in message, message
    names = [s["name"] for s in api(shop, "GET", "/subscriptions").json()]
    assert not any(name.startswith("Steal") for name in names)


def test_config_as_code_and_notification_steps_are_refused_too(
    shop: Server, tmp_path: Path
) -> None:
    hook = tmp_path / "hook.yaml"
    hook.write_text(
        "subscriptions:\n"
        "  - name: Metadata\n"
        "    webhook: {url: 'http://169.254.169.254/latest/meta-data/iam/'}\n"
    )
    applied = shop.cli("apply", "-f", str(hook))
    assert applied.returncode == 2, describe(applied)
    assert "link-local" in applied.stderr and "Traceback" not in applied.stderr

    process = api(shop, "GET", "/projects/Hooked/process").json()
    step = {
        "name": "Tell",
        "type": "notification",
        "subject": "deployed",
        "body": "deployed",
        "webhooks": [{"url": "http://127.0.0.1:6379/"}],
    }
    sent = {"version": process["version"], "steps": [*process["steps"], step]}
    response = api(shop, "PUT", "/projects/Hooked/process", json=sent)
    assert response.status_code == 422, response.text
    assert "loopback" in response.text


def _resolves_inward(name: str) -> bool:
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = [targets.literal_address(str(info[4][0])) for info in infos]
    return any(a is not None and targets.blocked(a) for a in addresses)


def test_a_name_that_resolves_to_loopback_is_refused_when_sent_and_recorded_failed(
    shop: Server,
) -> None:
    # The machine's own name is no obviously local name, so it passes the check when saved;
    # what it resolves to (127.0.0.1 here) is only known when sending.
    name = socket.gethostname()
    if targets.is_local_name(name) or not _resolves_inward(name):
        pytest.skip(f"this machine's name {name!r} does not resolve to a loopback address")
    receiver = Receiver().start()
    try:
        url = f"http://{name}:{receiver.port}/hook"
        sub = {
            "name": "Rebound",
            "webhook": {"url": url},
            "categories": ["ReleaseCreated"],
            "projects": ["Hooked"],
        }
        assert api(shop, "POST", "/subscriptions", json=sub).status_code == 201
        created = api(shop, "POST", "/projects/Hooked/releases", json={"version": "1.0.0"})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 30
        mine: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            mine = [
                d for d in api(shop, "GET", "/deliveries").json() if d["subscription"] == "Rebound"
            ]
            if mine and mine[0]["state"] != "pending":
                break
            time.sleep(0.1)
        assert receiver.requests == [], "the webhook reached the server's own machine"
    finally:
        receiver.stop()
        api(shop, "DELETE", "/subscriptions/Rebound")
    [delivery] = mine
    # Refused by policy: failed at once, not retried for hours.
    assert delivery["state"] == "failed" and delivery["attempts"] == 1, delivery
    assert "loopback" in delivery["last_error"] and "127.0.0.1" in delivery["last_error"]
    assert "CONVEYOR_ALLOW_PRIVATE_WEBHOOKS" in delivery["last_error"]


async def test_the_sender_connects_to_the_address_it_checked() -> None:
    """Allowed by the administrator: the request still carries its name (Host), so a receiver
    behind a name-based virtual host gets it; refused otherwise, before any connection."""
    name = socket.gethostname()
    if not _resolves_inward(name):
        pytest.skip(f"this machine's name {name!r} does not resolve to a loopback address")
    receiver = Receiver().start()
    try:
        url = f"http://{name}:{receiver.port}/hook"
        with pytest.raises(SendRefused, match="loopback"):
            await post_webhook(url, b"{}")
        assert receiver.requests == []
        assert await post_webhook(url, b"{}", allow_private=True) == 200
    finally:
        receiver.stop()
    [request] = receiver.requests
    assert request.headers["host"] == f"{name}:{receiver.port}"


# ---------------------------------------------------------------- a no-op edit needs permission


def test_a_reader_cannot_put_a_document_back_unchanged(shop: Server, reader_key: str) -> None:
    """Each of these PUTs sends exactly what the reader read. It changes nothing, and answered
    200 to anyone who could reach it: now it is refused like any other edit."""
    for path in ("/projects/Shop", "/environments/Dev", "/teams/Readers", "/users/reader"):
        document = api(shop, "GET", path, reader_key)
        assert document.status_code == 200, (path, document.text)
        response = api(shop, "PUT", path, reader_key, json=document.json())
        assert response.status_code == 403, (path, response.text)
        assert response.json()["code"] == "permission_denied"
    for path in ("/projects/Shop/process", "/projects/Shop/variables"):
        document = api(shop, "GET", path, reader_key)
        assert document.status_code == 200, (path, document.text)
        response = api(shop, "PUT", path, reader_key, json=document.json())
        assert response.status_code == 403, (path, response.text)
    # Deactivating a user who is inactive already, and setting someone's preference to what it is.
    assert api(shop, "DELETE", "/users/gone", reader_key).status_code == 403
    same = {"notify_interruptions": True}
    assert api(shop, "PUT", "/users/admin/preferences", reader_key, json=same).status_code == 403
    # Someone who may edit gets "nothing changed" as before.
    document = api(shop, "GET", "/environments/Dev").json()
    assert api(shop, "PUT", "/environments/Dev", json=document).status_code == 200


def test_apply_still_checks_only_what_differs(shop: Server, reader_key: str) -> None:
    """CLI.md: `apply` checks only what differs against permissions, so that a file holding
    everything can be applied by someone who may change only part of it."""
    exported = api(shop, "GET", "/config/export").text
    body = {"text": exported, "dry_run": False}
    response = api(shop, "POST", "/config/apply", reader_key, json=body)
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- package pins


def _zip() -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("index.html", "<h1>shop</h1>")
    return data.getvalue()


@pytest.fixture(scope="module")
def feed(shop: Server) -> Server:
    for version in ("1.0.0", "1.2.0"):
        files = {"file": (f"Shop.Web.{version}.zip", _zip(), "application/zip")}
        pushed = api(shop, "POST", "/packages", files=files)
        assert pushed.status_code == 201, pushed.text
    return shop


def _releases(of: Server) -> list[str]:
    return [r["version"] for r in api(of, "GET", "/projects/Shop/releases").json()]


def test_a_release_cannot_pin_a_package_version_the_feed_lacks(feed: Server) -> None:
    body = {"version": "9.0.0", "packages": {"Shop.Web": "9.9.9"}}
    response = api(feed, "POST", "/projects/Shop/releases", json=body)
    assert response.status_code == 422, response.text
    message = response.json()["problems"][0]["message"]
    assert "Shop.Web 9.9.9 is not in the package feed" in message
    assert "1.2.0, 1.0.0" in message, message

    made = feed.cli(
        "release", "create", "--project", "Shop", "--version", "9.0.1",
        "--package", "Shop.Web:9.9.9",
    )  # fmt: skip
    assert made.returncode == 2, describe(made)
    assert "Shop.Web 9.9.9 is not in the package feed" in made.stderr
    assert "Traceback" not in made.stderr
    # Nothing was created: no release that can never deploy, and none that is now the highest.
    assert "9.0.0" not in _releases(feed) and "9.0.1" not in _releases(feed)


def test_a_pin_the_feed_has_and_the_default_both_work(feed: Server) -> None:
    pinned = feed.cli(
        "release", "create", "--project", "Shop", "--version", "1.0.0",
        "--package", "shop.web:1.0.0", "--output", "json",
    )  # fmt: skip
    assert pinned.returncode == 0, describe(pinned)
    # The package id as the process spells it.
    assert json.loads(pinned.stdout)["packages"] == {"Shop.Web": "1.0.0"}
    chosen = feed.ok(
        "release", "create", "--project", "Shop", "--version", "1.1.0", "--output", "json"
    )
    assert json.loads(chosen.stdout)["packages"] == {"Shop.Web": "1.2.0"}


# ---------------------------------------------------------------- cheap password hashing


@pytest.mark.parametrize("command", [("server", "--port"), ("demo", "--port")])
def test_a_server_refuses_to_start_with_cheap_password_hashing(
    command: tuple[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = clean_env(
        {
            "CONVEYOR_DATA_DIR": str(tmp_path / "data"),
            "CONVEYOR_INSECURE_FAST_PASSWORD_HASHING": "1",
        }
    )
    started = subprocess.run(
        [str(CONVEYOR), *command, str(port)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 2, started
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and "CONVEYOR_INSECURE_FAST_PASSWORD_HASHING" in lines[0], lines
    assert "Traceback" not in started.stderr + started.stdout
    # Refused before anything was made or served.
    assert not (tmp_path / "data").exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def two_settings(tmp_path: Path) -> Iterator[tuple[Settings, Settings]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    real = Settings(data_dir=tmp_path / "a", database_url=url, insecure_fast_password_hashing=False)
    cheap = Settings(data_dir=tmp_path / "b", database_url=url, insecure_fast_password_hashing=True)
    yield real, cheap


async def test_hashing_follows_each_services_settings_not_the_process(
    two_settings: tuple[Settings, Settings],
) -> None:
    """Two sets of services in one process: each hashes as its own settings say (a module
    global read at import gave both whatever the environment said)."""
    real, cheap = (bootstrap(s) for s in two_settings)
    try:
        strong = await asyncio.to_thread(real.passwords.hash, "correct horse battery")
        weak = await asyncio.to_thread(cheap.passwords.hash, "correct horse battery")
    finally:
        await real.close()
        await cheap.close()
    assert "$m=65536,t=3," in strong, strong  # argon2's recommended parameters
    assert "$m=8,t=1," in weak, weak
    # Either verifies the other's hashes (the parameters travel in the hash).
    assert real.passwords.verify(weak, "correct horse battery")
    assert not real.passwords.verify(None, "decoy password that matches nothing")
