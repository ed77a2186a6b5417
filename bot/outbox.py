"""Sending for every entrance: text split to the platform's limits and sent in order, what
fails queued in the outbox, and the courier that delivers the outbox.

Adapters only give a `Send`: one platform message out, its platform id back, an exception
on failure. `Delivery` owns the rest once for every entrance: the order of the parts, the
reply-to on the first and the buttons on the last, partial sends (the part that failed and
everything after it goes to the outbox; what arrived is never sent again), and retries.

A courier sleeps until a commit queues rows due now (`Memory.wait_for_outbox`: the outbox
bell, bot/memory/bell.py; not every commit, which cost each entrance about 0.5 ms of CPU a
commit) or for its look once a `recheck_s` (retries and rows that came due by time); a row
goes out at once, and a busy outbox is looked at at most once per `poll_s`. Where the bell
cannot be heard (not Linux, the LISTEN connection down) it looks every `poll_s`. Looking
is a read (on SQLite an index seek on the event loop, `Memory.outbox_due`: no thread
hand-off); only when something is due does it claim (a write), so couriers never take the
write lock for nothing. A turn's own reply never reaches a courier: it is stored claimed by
the turn's instance, which sends it at once. Stopping, a courier claims nothing more and
lets the row in hand go out (`finish`); a target no chat can have fails its row at once
(`Unreachable`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.crash import crash_point
from bot.in_flight import InFlight
from bot.memory import Memory
from bot.models import OutboxItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Button:
    """A button under a message: what it says, and the data its press carries back."""

    label: str
    data: str


class Send(Protocol):
    """An adapter's one way out: send one message (already split to fit) to `target`.

    `reply_to`: the platform id of the message this answers (first part only); `buttons`:
    shown under it (last part only); `key`: a stable idempotency key for this part (a
    platform that can drop a repeat, like Discord's nonce, uses it); `extra`: what the
    adapter asked to carry with a queued reply (mail threading headers). Returns the sent
    message's platform id (None if the platform has none); raises on failure.
    """

    def __call__(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Sequence[Button] = (),
        key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Awaitable[str | None]: ...


Chunks = Callable[[str], list[str]]  # text -> the messages the platform takes, in order


class Unreachable(ValueError):
    """`Send`'s refusal of a target this platform can never deliver to (not one of its ids,
    not an address): the row fails at once, with no retries, and is reported like any row
    whose attempts ran out."""


class Undelivered(Exception):
    """Sending stopped at part `sent`; `rest` is that part and everything after it."""

    def __init__(
        self, rest: str, sent: int, cause: BaseException, first_id: str | None = None
    ) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.rest = rest
        self.sent = sent
        self.cause = cause
        self.first_id = first_id  # the platform id of the first part, when it arrived


def buttons_of(payload: Mapping[str, Any]) -> list[Button]:
    """Buttons from an outbox payload's [{"label", "data"}]."""
    raw = payload.get("buttons")
    if not isinstance(raw, list):
        return []
    return [
        Button(str(item["label"]), str(item["data"]))
        for item in raw
        if isinstance(item, dict) and item.get("label") and item.get("data")
    ]


class Delivery:
    """Sends texts for one entrance through its adapter's `Send`."""

    def __init__(self, memory: Memory, entrance: str, send: Send, chunks: Chunks) -> None:
        self.memory = memory
        self.entrance = entrance
        self.send = send
        self.chunks = chunks

    async def send_parts(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Sequence[Button] = (),
        key: str,
        extra: Mapping[str, Any] | None = None,
    ) -> list[str | None]:
        """Send `text` in order; returns the parts' platform ids. Raises `Undelivered`."""
        parts = self.chunks(text)
        sent: list[str | None] = []
        for n, part in enumerate(parts):
            try:
                sent.append(
                    await self.send(
                        target,
                        part,
                        reply_to=reply_to if n == 0 else None,
                        buttons=buttons if n == len(parts) - 1 else (),
                        key=f"{key}-{n}",
                        extra=extra,
                    )
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                first = sent[0] if sent else None
                raise Undelivered("\n\n".join(parts[n:]), n, exc, first) from exc
            if n == 0:
                crash_point("during-send")
        return sent

    async def reply(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None,
        key: str,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Send a reply now; what does not get through goes to the outbox for the courier."""
        try:
            await self.send_parts(target, text, reply_to=reply_to, key=key, extra=extra)
        except Undelivered as exc:
            payload: dict[str, Any] = dict(extra or {})
            if exc.sent == 0 and reply_to is not None:
                payload["reply_to"] = reply_to
            queued = await self.queue(target, exc.rest, payload, f"reply:{key}")
            log.warning(
                "%s: reply to %s not sent (%s); outbox %s will retry it",
                self.entrance,
                reply_to or target,
                exc,
                queued,
            )

    async def queue(
        self, target: str, text: str, payload: dict[str, Any], dedupe_key: str
    ) -> int | None:
        return await self.memory.enqueue(
            entrance=self.entrance,
            target=target,
            text=text,
            payload=payload or None,
            dedupe_key=dedupe_key,
        )

    async def deliver(self, item: OutboxItem) -> str | None:
        """Send one outbox row (the courier marks it sent, or retries when this raises);
        returns the platform id of its first message."""
        reply_to = item.payload.get("reply_to")
        try:
            sent = await self.send_parts(
                item.target,
                item.text,
                reply_to=str(reply_to) if reply_to is not None else None,
                buttons=buttons_of(item.payload),
                key=f"outbox-{item.id}",
                extra=item.payload,
            )
        except Undelivered as exc:
            if exc.sent == 0:
                raise exc.cause from None
            # Part of it arrived: queue only the rest, so a retry repeats nothing.
            payload = {k: v for k, v in item.payload.items() if k not in ("reply_to", "out_id")}
            await self.queue(item.target, exc.rest, payload, f"rest:{item.id}:{exc.sent}")
            log.warning(
                "%s: outbox %d partly sent (%s); the rest is queued", self.entrance, item.id, exc
            )
            return exc.first_id
        return sent[0] if sent else None


class OutboxCourier:
    def __init__(
        self,
        memory: Memory,
        entrance: str,
        claimer: str,
        send: Callable[[OutboxItem], Awaitable[str | None]],
        *,
        targets: list[str] | None = None,
        poll_s: float = 0.05,
        recheck_s: float = 1.0,
        max_attempts: int = 5,
        backoff_s: float = 2.0,
        runs: Mapping[str, Callable[[OutboxItem], Awaitable[str | None]]] | None = None,
        on_failed: Callable[[OutboxItem, str], Awaitable[None]] | None = None,
    ) -> None:
        """`runs`: per payload kind, what to do with such a row instead of sending its text
        (kind 'due': run the follow-up turn of a promise that fell due); it raises to be
        retried like a failed send. `on_failed`: called once for a row whose attempts ran
        out."""
        self.memory = memory
        self.entrance = entrance
        self.claimer = claimer
        self.send = send
        self.targets = targets
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.runs = dict(runs or {})
        self.on_failed = on_failed
        self.sending = InFlight()  # claims and deliveries under way (a turn's own send too)
        self.stopping = False

    async def finish(self, *, timeout_s: float) -> None:
        """Claim nothing more, and let the rows in hand go out (`timeout_s` at most): a stop
        that cancelled a row mid-send would leave half a reply, the rest sent again by the
        next holder only when the claim runs out."""
        self.stopping = True
        if not await self.sending.settled(timeout_s):
            log.warning(
                "stopping with %d outbox send(s) for %s unfinished",
                self.sending.count,
                self.entrance,
            )

    async def run(self) -> None:
        while not self.stopping:
            looked = time.monotonic()
            try:
                if await self.memory.outbox_due(self.entrance, targets=self.targets):
                    await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox delivery for %s failed; will retry", self.entrance)
            if self.memory.hears_outbox:
                # Woken when a commit queues rows (the outbox bell) or for the next look
                # (retries and rows that came due by time), and then at most one look per
                # poll_s however often the bell rings.
                left = looked + self.recheck_s - time.monotonic()
                await self.memory.wait_for_outbox(max(left, 0.0))
                pause = looked + self.poll_s - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            else:
                await asyncio.sleep(self.poll_s)

    async def deliver_due(self) -> int:
        """Claim and deliver what is due now; returns how many were sent. Stopping, it
        ends after the row in hand (rows claimed with it go back at the next start)."""
        sent = 0
        async with self.sending.track():
            while not self.stopping:
                items = await self.memory.claim_outbox(
                    self.entrance, self.claimer, targets=self.targets
                )
                if not items:
                    break
                for item in items:
                    if self.stopping:
                        break
                    sent += await self.deliver_item(item)
        return sent

    async def deliver_item(self, item: OutboxItem) -> bool:
        """Send one claimed row and mark it: sent (with the platform's id), or a failed
        attempt to retry with backoff. Between the platform taking it and the mark, a crash
        sends it again on restart: the one window where a message can arrive twice."""
        async with self.sending.track():
            return await self._deliver(item)

    async def _deliver(self, item: OutboxItem) -> bool:
        run = self.runs.get(str(item.payload.get("kind")), self.send)
        try:
            platform_id = await run(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = await self.memory.mark_failed_attempt(
                item.id,
                self.claimer,
                f"{type(exc).__name__}: {exc}",
                max_attempts=0 if isinstance(exc, Unreachable) else self.max_attempts,
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
            if status == "failed" and self.on_failed is not None:
                try:
                    await self.on_failed(item, f"{type(exc).__name__}: {exc}")
                except Exception:
                    log.exception("reporting outbox %d as failed did not work", item.id)
            return False
        crash_point("after-send")
        await self.memory.mark_sent(item.id, self.claimer, platform_id)
        log.info("outbox %d delivered to %s:%s", item.id, item.entrance, item.target)
        return True
