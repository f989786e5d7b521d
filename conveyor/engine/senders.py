"""Sending one message: a mail over SMTP, or a webhook POST. Used by the notification step and by
the outbox's sender; both decide themselves what a failure means.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Awaitable, Callable, Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import httpx

from conveyor.domain.subscriptions import SIGNATURE_HEADER, sign
from conveyor.settings import Settings

SMTP_TIMEOUT = 30.0
WEBHOOK_TIMEOUT = 10.0
STEP_ATTEMPTS = 3
STEP_BACKOFF = 1.0


class SendFailed(Exception):
    """One attempt failed; the message says why, for the log and the delivery list."""


def mail_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host)


def sender(settings: Settings) -> str:
    return settings.smtp_from or f"conveyor@{settings.host}"


def _send_blocking(settings: Settings, to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = sender(settings)
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="conveyor")
    message.set_content(body)
    with smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        smtp.send_message(message)


async def send_mail(settings: Settings, to: str, subject: str, body: str) -> None:
    if not mail_configured(settings):
        raise SendFailed("mail is not configured (set CONVEYOR_SMTP_HOST)")
    try:
        await asyncio.to_thread(_send_blocking, settings, to, subject, body)
    except (OSError, smtplib.SMTPException) as exc:
        raise SendFailed(f"sending mail to {to} failed: {exc}") from exc


async def post_webhook(
    url: str,
    body: bytes,
    headers: Iterable[tuple[str, str]] = (),
    *,
    secret: str | None = None,
    extra: dict[str, str] | None = None,
) -> int:
    """POST the exact ``body``; only a 2xx answer is success. Returns the status."""
    sent = {"Content-Type": "application/json", "User-Agent": "Conveyor"}
    sent.update(dict(headers))
    sent.update(extra or {})
    if secret:
        sent[SIGNATURE_HEADER] = sign(secret, body)
    try:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT, follow_redirects=False) as client:
            response = await client.post(url, content=body, headers=sent)
    except httpx.HTTPError as exc:
        raise SendFailed(f"POST {url} failed: {exc.__class__.__name__}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise SendFailed(f"POST {url} was answered {response.status_code}")
    return response.status_code


async def with_retries(
    attempt: Callable[[], Awaitable[object]],
    say: Callable[[str], None],
    what: str,
    *,
    attempts: int = STEP_ATTEMPTS,
    backoff: float | None = None,
) -> str | None:
    """Try up to ``attempts`` times, waiting ``backoff`` then twice as long, saying each failure;
    ``None`` on success, else the last error."""
    backoff = STEP_BACKOFF if backoff is None else backoff
    error = ""
    for n in range(1, attempts + 1):
        try:
            await attempt()
            return None
        except SendFailed as exc:
            error = str(exc)
        if n < attempts:
            wait = backoff * 2 ** (n - 1)
            say(f"{what}: attempt {n} of {attempts} failed ({error}); trying again in {wait:g} s")
            await asyncio.sleep(wait)
        else:
            say(f"{what}: attempt {n} of {attempts} failed ({error})")
    return error
