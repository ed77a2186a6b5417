"""Outbox delivery for an entrance: the one loop every adapter reuses.

An idle courier costs almost nothing: it checks `PRAGMA data_version` (which changes only
when another connection commits) every `poll_s` without a thread hand-off
(`Memory.data_version_now`), and looks for due rows only then, or
once a `recheck_s` for retries that have come due. Looking is a read; only when something
is due does it claim (a write), so couriers never take the write lock on every commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.memory import Memory
from bot.models import OutboxItem

log = logging.getLogger(__name__)

Send = Callable[[OutboxItem], Awaitable[None]]


class OutboxCourier:
    def __init__(
        self,
        memory: Memory,
        entrance: str,
        claimer: str,
        send: Send,
        *,
        targets: list[str] | None = None,
        poll_s: float = 0.05,
        recheck_s: float = 1.0,
        max_attempts: int = 5,
        backoff_s: float = 2.0,
    ) -> None:
        self.memory = memory
        self.entrance = entrance
        self.claimer = claimer
        self.send = send
        self.targets = targets
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s

    async def run(self) -> None:
        last_version: int | None = None
        last_check = 0.0
        while True:
            version = self.memory.data_version_now()
            now = time.monotonic()
            if version is None or version != last_version or now - last_check >= self.recheck_s:
                last_version, last_check = version, now
                try:
                    if await self.memory.outbox_due(self.entrance, targets=self.targets):
                        await self.deliver_due()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("outbox delivery for %s failed; will retry", self.entrance)
            await asyncio.sleep(self.poll_s)

    async def deliver_due(self) -> int:
        """Claim and deliver what is due now; returns how many were sent."""
        sent = 0
        while True:
            items = await self.memory.claim_outbox(
                self.entrance, self.claimer, targets=self.targets
            )
            if not items:
                return sent
            for item in items:
                try:
                    await self.send(item)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    status = await self.memory.mark_failed_attempt(
                        item.id,
                        self.claimer,
                        f"{type(exc).__name__}: {exc}",
                        max_attempts=self.max_attempts,
                        backoff_s=self.backoff_s,
                    )
                    log.warning(
                        "outbox %d to %s:%s not delivered (%s): %s",
                        item.id,
                        item.entrance,
                        item.target,
                        status,
                        exc,
                    )
                    continue
                await self.memory.mark_sent(item.id, self.claimer)
                sent += 1
                log.info("outbox %d delivered to %s:%s", item.id, item.entrance, item.target)
