"""The notification step: mail to teams, users and addresses, and webhooks, sent directly.

Direct, not through the outbox, because the step must know the outcome: each message is tried a
few times with a growing wait (every failure logged), and what still fails fails the step, or
only warns when the step says so.
"""

from __future__ import annotations

from conveyor.domain import subscriptions as rules
from conveyor.domain.documents import NotificationAction
from conveyor.domain.runtime import Outcome
from conveyor.domain.variables import substitute
from conveyor.engine.notify import recipients
from conveyor.engine.senders import mail_configured, post_webhook, send_mail, with_retries
from conveyor.engine.steps.base import StepContext, StepResult
from conveyor.services.config import load


class NotificationStep:
    async def run(self, ctx: StepContext) -> StepResult:
        action = ctx.step.action
        assert isinstance(action, NotificationAction)
        settings = ctx.services.settings
        values, say = ctx.values, ctx.say
        # Mail and webhook bodies leave the server and are kept by whoever receives them: a
        # sensitive value in them is masked. (A webhook's URL and headers keep theirs: that is
        # where a token legitimately goes.)
        subject = ctx.log.masker(substitute(action.subject, values, what="the subject"))
        body = ctx.log.masker(substitute(action.body, values, what="the body"))
        addresses = recipients((await load(ctx.services)).model, action)
        if addresses and not mail_configured(settings):
            reason = "mail is not configured (set CONVEYOR_SMTP_HOST to deliver notifications)"
            if not action.webhooks:
                return Outcome.skipped(reason)
            say(f"Not mailing {len(addresses)} recipient(s): {reason}", "warn")
            addresses = []
        if not addresses and not action.webhooks:
            return Outcome.succeeded("nobody to notify (no addresses)")

        errors: list[str] = []
        for address in addresses:

            async def mail(to: str = address) -> None:
                await send_mail(settings, to, subject, body)

            error = await with_retries(mail, say, f"Mail to {address}")
            if error:
                errors.append(error)
            else:
                say(f"Mail sent to {address}: {subject}")
        payload = rules.body_bytes(rules.step_webhook(subject, body, values))
        for hook in action.webhooks:
            url = substitute(hook.url, values, what="the webhook URL")
            secret = None
            if hook.secret_variable:
                if hook.secret_variable not in ctx.variables.sensitive:
                    errors.append(
                        f'{url}: "{hook.secret_variable}" is not a sensitive variable of this '
                        "deployment, so the webhook cannot be signed"
                    )
                    say(errors[-1], "error")
                    continue
                secret = values[hook.secret_variable]
            headers = [(k, substitute(v, values, what=f"the header {k}")) for k, v in hook.headers]

            async def post(
                url: str = url,
                headers: list[tuple[str, str]] = headers,
                secret: str | None = secret,
            ) -> None:
                await post_webhook(
                    url,
                    payload,
                    headers,
                    secret=secret,
                    allow_private=settings.allow_private_webhooks,
                )

            error = await with_retries(post, say, f"Webhook {url}")
            if error:
                errors.append(error)
            else:
                say(f"Webhook {url} answered with success")

        done = f"{len(addresses)} mail(s), {len(action.webhooks)} webhook(s)"
        if errors:
            reason = f"{len(errors)} of {len(addresses) + len(action.webhooks)} deliveries failed: "
            reason += "; ".join(errors)
            if action.warn_only:
                say(f"Warning: {reason}", "warn")
                return Outcome.succeeded(f"with a warning: {reason}")
            return Outcome.failed(reason)
        return Outcome.succeeded(f"delivered {done}")
