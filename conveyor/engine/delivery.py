"""The outbox's sender: a loop in every node that claims due deliveries, sends them, and records
each outcome right after the receiver answered.

Woken when a local commit queued deliveries; otherwise it sleeps until the earliest pending
delivery falls due, at most ``POLL_SECONDS`` (other nodes' deliveries, expired leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, timedelta

from conveyor.engine.senders import SendFailed, SendRefused, post_webhook, send_mail
from conveyor.services import deliveries
from conveyor.services.core import Services

log = logging.getLogger("conveyor.engine")

POLL_SECONDS = 2.0
# Longer than any one send may take (SMTP and webhook time out well before).
LEASE = timedelta(seconds=90)
BATCH = 10


class Deliverer:
    def __init__(self, services: Services, node: str) -> None:
        self.services = services
        self.node = node
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        freed = await deliveries.release(self.services, self.node)
        if freed:
            log.warning("%d delivery(ies) caught mid-send by a restart will be sent again", freed)
        self.services.delivery_wakers.append(self.wake)
        self._loop = asyncio.create_task(self._run(), name="conveyor-deliveries")

    async def stop(self) -> None:
        if self.wake in self.services.delivery_wakers:
            self.services.delivery_wakers.remove(self.wake)
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def _run(self) -> None:
        while True:
            try:
                while await self.round():
                    pass
                wait = await self._until_due()
            except Exception:
                log.exception("sending notifications failed; trying again shortly")
                wait = POLL_SECONDS
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _until_due(self) -> float:
        due = await deliveries.next_due(self.services)
        if due is None:
            return POLL_SECONDS
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        seconds = (due - self.services.clock()).total_seconds()
        return min(POLL_SECONDS, max(0.05, seconds))

    async def round(self) -> int:
        """Send one batch of due deliveries, concurrently; how many were claimed."""
        batch = await deliveries.claim(self.services, self.node, LEASE, BATCH)
        await asyncio.gather(*(self._deliver(due) for due in batch))
        return len(batch)

    async def _deliver(self, due: deliveries.Due) -> None:
        try:
            await self._send(due)
        except SendFailed as exc:
            # A refusal by policy (a private address) is final: retrying cannot change it.
            final = isinstance(exc, SendRefused)
            state = await deliveries.failed(self.services, due, self.node, str(exc), final=final)
            log.warning(
                "%s to %s: attempt %d failed (%s)%s",
                due.public_id,
                due.target,
                due.attempts,
                exc,
                "; giving up" if state == "failed" else "",
            )
            return
        except Exception as exc:  # a bug must not leave the row leased until the lease ends
            log.exception("%s could not be sent", due.public_id)
            await deliveries.failed(self.services, due, self.node, f"internal error: {exc}")
            return
        await deliveries.succeeded(self.services, due, self.node)

    async def _send(self, due: deliveries.Due) -> None:
        payload = due.payload
        if due.channel == "email":
            await send_mail(
                self.services.settings, due.target, str(payload["subject"]), str(payload["body"])
            )
            return
        cipher = payload.get("cipher")
        secret = self.services.box.decrypt(str(cipher)) if cipher else None
        extra = {"X-Conveyor-Delivery": due.public_id}
        if due.event_id is not None:
            extra["X-Conveyor-Event"] = f"Events-{due.event_id}"
        await post_webhook(
            due.target,
            str(payload["body"]).encode(),
            [(str(k), str(v)) for k, v in payload.get("headers") or ()],
            secret=secret,
            extra=extra,
            allow_private=self.services.settings.allow_private_webhooks,
        )
