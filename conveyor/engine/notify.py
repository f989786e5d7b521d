"""The notification step: email to teams, users and addresses, when mail is configured."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from typing import TYPE_CHECKING

from conveyor.domain.documents import NotificationAction, Step, key
from conveyor.domain.variables import substitute
from conveyor.services import execution as ex
from conveyor.services.config import load

if TYPE_CHECKING:
    from conveyor.engine.executor import Context, Executor


async def deliver_step(
    executor: Executor,
    ctx: Context,
    idx: int,
    step: Step,
    action: NotificationAction,
    values: dict[str, str],
) -> str:
    from conveyor.engine.executor import DONE

    services = executor.services
    settings = services.settings
    if not settings.smtp_host:
        reason = "mail is not configured (set CONVEYOR_SMTP_HOST to deliver notifications)"
        ctx.log.line(f'Step "{step.name}" skipped: {reason}', step=idx)
        await ex.set_step(services, ctx.run, idx, "skipped", reason=reason)
        return DONE
    model = (await load(services)).model
    addresses = set(action.to_addresses)
    for team in model.teams:
        if key(team.name) in {key(t) for t in action.to_teams}:
            for member in team.members:
                user = model.get("users", member)
                if user is not None and user.active and user.email:
                    addresses.add(user.email)
    for name in action.to_users:
        user = model.get("users", name)
        if user is not None and user.active and user.email:
            addresses.add(user.email)
    subject = substitute(action.subject, values, what="the subject")
    body = substitute(action.body, values, what="the body")
    if not addresses:
        return await executor._succeeded(ctx, idx, step, "nobody to notify (no addresses)")
    message = EmailMessage()
    message["From"] = settings.smtp_from or f"conveyor@{settings.host}"
    message["To"] = ", ".join(sorted(addresses))
    message["Subject"] = subject
    message.set_content(body)

    def send() -> None:
        with smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=30) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password or "")
            smtp.send_message(message)

    try:
        await asyncio.to_thread(send)
    except (OSError, smtplib.SMTPException) as exc:
        reason = f"sending mail failed: {exc}"
        if action.warn_only:
            ctx.log.line(f"Warning: {reason}", step=idx, level="warn")
            return await executor._succeeded(ctx, idx, step, f"with a warning: {reason}")
        return await executor._failed(ctx, idx, step, reason)
    ctx.log.line(f"Mail sent to {', '.join(sorted(addresses))}: {subject}", step=idx)
    return await executor._succeeded(ctx, idx, step, f"mailed {len(addresses)} recipient(s)")
