"""Sending one message: a mail over SMTP, or a webhook POST. Used by the notification step and by
the outbox's sender; both decide themselves what a failure means.
"""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import httpx

from conveyor.domain import webhook_targets as targets
from conveyor.domain.subscriptions import SIGNATURE_HEADER, sign
from conveyor.services import tls
from conveyor.settings import Settings

SMTP_TIMEOUT = 30.0
WEBHOOK_TIMEOUT = 10.0
STEP_ATTEMPTS = 3
STEP_BACKOFF = 1.0


class SendFailed(Exception):
    """One attempt failed; the message says why, for the log and the delivery list."""


class SendRefused(SendFailed):
    """Not sent, by policy (a webhook to a private address): trying again will not help."""


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


async def _pinned(url: httpx.URL) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The URL to connect to, with its host replaced by an address the name resolves to now and
    that was checked; the Host header and TLS name that keep the request what it was. Every
    address the name has must be allowed: a name that also resolves inward is refused, and the
    connection goes to the address checked (not to a second answer, which is DNS rebinding)."""
    host = url.raw_host.decode("ascii")
    address = targets.literal_address(host)
    if address is not None:
        addresses = [address]
    else:
        if targets.is_local_name(host):
            raise SendRefused(
                targets.refusal(host, "a name of this machine or an internal network")
            )
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise SendFailed(f"cannot resolve {host}: {exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise SendFailed(f"cannot resolve {host}: no addresses")
    for candidate in addresses:
        reason = targets.blocked(candidate)
        if reason is not None:
            shown = host if str(candidate) == host.strip("[]") else f"{host} ({candidate})"
            raise SendRefused(targets.refusal(shown, reason))
    chosen = addresses[0]
    pinned = url.copy_with(host=str(chosen))
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if url.scheme == "https" and address is None else {}
    return pinned, headers, extensions


async def post_webhook(
    url: str,
    body: bytes,
    headers: Iterable[tuple[str, str]] = (),
    *,
    secret: str | None = None,
    extra: dict[str, str] | None = None,
    allow_private: bool = False,
) -> int:
    """POST the exact ``body``; only a 2xx answer is success. Returns the status.

    Unless ``allow_private``, loopback, link-local and private addresses are refused (SSRF),
    after resolution, and redirects are never followed (a 3xx is a failure)."""
    sent = {"Content-Type": "application/json", "User-Agent": "Conveyor"}
    sent.update(dict(headers))
    sent.update(extra or {})
    if secret:
        sent[SIGNATURE_HEADER] = sign(secret, body)
    try:
        target = httpx.URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise SendRefused("not an http:// or https:// URL")
        extensions: dict[str, str] = {}
        if not allow_private:
            target, host_header, extensions = await _pinned(target)
            sent.update(host_header)
        # No proxies from the environment: the connection goes to the address checked above.
        async with httpx.AsyncClient(
            verify=tls.client_context(),
            timeout=WEBHOOK_TIMEOUT,
            follow_redirects=False,
            trust_env=allow_private,
        ) as client:
            request = client.build_request(
                "POST", target, content=body, headers=sent, extensions=extensions
            )
            response = await client.send(request)
    except SendRefused as exc:
        raise SendRefused(f"POST {url} not sent: {exc}") from exc
    except SendFailed as exc:
        raise SendFailed(f"POST {url} not sent: {exc}") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
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
        except SendRefused as exc:  # by policy: another attempt would be refused the same way
            say(f"{what}: refused ({exc})")
            return str(exc)
        except SendFailed as exc:
            error = str(exc)
        if n < attempts:
            wait = backoff * 2 ** (n - 1)
            say(f"{what}: attempt {n} of {attempts} failed ({error}); trying again in {wait:g} s")
            await asyncio.sleep(wait)
        else:
            say(f"{what}: attempt {n} of {attempts} failed ({error})")
    return error
