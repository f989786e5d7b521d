"""What the browser tests of issue 14 share (tests/e2e/test_web_manage.py, which collects the
tests of web_manage_people.py, web_manage_processes.py and web_manage_pages.py): one chromium per
module, a server per module and database (the conftest's ``server``), each person a browser
context of their own holding the session the sign-in form gave, and screenshots kept in
tests/artifacts/web/<module>-sqlite-<name>.png (the visible part of the window, taken on the
SQLite run only: the markup is the same on PostgreSQL, whose run checks the same things without
paying for a second picture of each page).

Everyone signs in through the real form, but over HTTP and side by side (each person's password
set, then checked by the sign-in, in parallel with the others' instead of one after the other);
test_web.py types into the form."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from playwright.sync_api import APIResponse, Browser, BrowserContext, Page, sync_playwright

from tests import loopback
from tests.e2e.conftest import Server, describe
from tests.e2e.test_web import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, password

T = TypeVar("T")
DESKTOP = {"width": 1280, "height": 860}
TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def off_the_loop(work: Callable[[], T]) -> T:
    """Run ``work`` in another thread: the CLI's own code (``cli_in_process``) runs an event
    loop, which may not nest in Playwright's, already running in the test's thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


def apply(server: Server, config: str, name: str) -> None:
    path = server.tmp / f"{name}.yaml"
    path.write_text(config)
    applied = server.cli_in_process("apply", "-f", str(path))
    assert applied.returncode == 0, describe(applied)


def set_passwords(server: Server, users: tuple[str, ...]) -> None:
    def one(user: str) -> None:
        response = httpx.put(
            f"{server.url}/api/v1/users/{user}/password",
            json={"password": password(user)},
            headers={"X-Api-Key": server.api_key},
            timeout=30,
        )
        assert response.status_code == 204, response.text

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        list(pool.map(one, users))


def sign_in(server: Server, user: str, secret: str | None = None) -> dict[str, str]:
    """The sign-in form posted as a browser would; the session's cookies."""
    with loopback.client(base_url=server.url, timeout=30) as client:
        form = client.get("/sign-in")
        token = TOKEN.search(form.text)
        assert token, form.text
        signed = client.post(
            "/sign-in",
            data={
                "csrf": token[1],
                "username": user,
                "password": secret or password(user),
                "next": "/",
            },
        )
        assert signed.status_code == 303, signed.text
        return dict(client.cookies)


def passwords_and_sessions(server: Server, users: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Each of ``users`` given their password, then signed in through the form (``admin`` with
    the installation's password), each person's two argon2 steps in parallel with the others'."""

    def one(user: str) -> dict[str, str]:
        if user == "admin":
            return sign_in(server, user, server.admin_password)
        set_passwords(server, (user,))
        return sign_in(server, user)

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        return dict(zip(users, pool.map(one, users), strict=True))


@dataclass
class Site:
    """A server as its people see it in one browser: a context (own cookies) per person."""

    module: str  # the screenshots' prefix
    server: Server
    browser: Browser
    cookies: dict[str, dict[str, str]]
    contexts: dict[str, BrowserContext] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # what the set-up made
    tokens: dict[str, str] = field(default_factory=dict)  # each person's form token

    @property
    def database(self) -> str:
        return "postgres" if self.server.database_url else "sqlite"

    def context(self, user: str) -> BrowserContext:
        context = self.contexts.get(user)
        if context is None:
            context = self.browser.new_context(base_url=self.server.url, viewport=DESKTOP)
            context.set_default_timeout(15_000)
            if user in self.cookies:
                context.add_cookies(
                    [
                        {"name": k, "value": v, "url": self.server.url}
                        for k, v in self.cookies[user].items()
                    ]
                )
            # No live task stream: each page stays as loaded while it is checked.
            context.route(re.compile(r"/tasks/[^/]+/events"), lambda route: route.abort())
            self.contexts[user] = context
        return context

    def page(self, user: str) -> Page:
        """A tab of ``user``'s own browser (an existing one when there is)."""
        context = self.context(user)
        return context.pages[0] if context.pages else context.new_page()

    def shot(self, page: Page, name: str) -> None:
        """The window as ``page`` shows it now, kept as an artifact (on the SQLite run: the
        PostgreSQL run shows the same markup; a picture costs a render of the page)."""
        if self.database != "sqlite":
            return
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.module}-{self.database}-{name}.png"
        page.screenshot(path=str(path), animations="disabled")

    def post(self, user: str, path: str, form: dict[str, str]) -> APIResponse:
        """A form posted straight to ``path`` with ``user``'s session and form token, as a
        hand-made request would be: what the server answers when no control was offered."""
        context = self.context(user)
        if user not in self.tokens:  # the session's, the same on every page
            shown = context.request.get("/account")
            token = TOKEN.search(shown.text())
            assert token, shown.text()
            self.tokens[user] = token[1]
        return context.request.post(
            path,
            form={"csrf": self.tokens[user], **form},
            max_redirects=0,
            fail_on_status_code=False,
        )

    def close(self) -> None:
        for context in self.contexts.values():
            context.close()
