"""An instance: what every entrance process shares, whatever its platform; the adapter's
only door into the core.

It opens memory.db, keeps the soul in sync with SOUL.md, registers and heartbeats in
`instances`, holds the entrance's lease, and runs the outbox courier. Adapters hand it
platform facts — an `Incoming` to answer (`handle`) or only to remember (`observe`), a
button press (`press`), the persona's own account ids — and give it a `Send`; it decides
who is speaking (once), runs commands or the turn, and sends the reply split to the
entrance's limits, queueing what fails. No adapter touches memory. It is an async context
manager; it owns every background task it starts and cancels them on `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from bot.accounts import AccountRef
from bot.commands import Commands
from bot.config import Config
from bot.context import DuePromise
from bot.entrance import EntranceFailure, manifest
from bot.gate import Gatekeeper
from bot.in_flight import InFlight
from bot.memory import Memory, Outgoing, ReplyDelivery, TurnRecord, Unfinished
from bot.mind import Mind
from bot.models import Incoming, OutboxItem, Reply, from_epoch
from bot.outbox import Delivery, OutboxCourier, Send
from bot.outcome import Outcome
from bot.soul import SoulWatcher
from bot.speaker import Roster, Speaker

log = logging.getLogger(__name__)

LATE_PREFACE = "Sorry for the slow answer: I was away for a while."
# How long a stop waits for sending, beyond the model's own timeout: a turn that began just
# before it (or a follow-up the courier is running) finishes its model call, then sends.
SEND_GRACE_S = 10.0
DUE_KIND = "due"  # an outbox row asking this entrance to follow up a promise that fell due


class Instance:
    def __init__(
        self,
        config: Config,
        *,
        instance_id: str,
        entrance: str,
        send: Send | None = None,
        send_failures: bool = True,
        heartbeat_s: float | None = None,
        watch_soul: bool = True,
        exclusive: bool | None = None,
    ) -> None:
        """`send`: the adapter's way out (replies and the outbox go through it); without
        one, `handle` only returns the reply. `send_failures` False: a turn that failed
        before storing anything sends no apology (mail: the mail stays unread and is
        tried again)."""
        self.config = config
        self.instance_id = instance_id
        self.entrance = entrance
        self.manifest = manifest(entrance)
        # Three heartbeats fit in the time after which others consider us dead.
        self.heartbeat_s = heartbeat_s or min(5.0, config.persona.instance_dead_after_s / 3)
        # One poller per platform entrance: a second `mirror run NAME` must not also poll.
        self.exclusive = self.manifest.exclusive if exclusive is None else exclusive
        self.lease_name = f"entrance:{entrance}"
        self.lease_ttl_s = self.heartbeat_s * 3
        self.holder = f"{instance_id}@{socket.gethostname()}:{os.getpid()}"
        self.memory = Memory(config.memory.path, busy_timeout_ms=config.memory.busy_timeout_ms)
        self.roster = Roster(config)
        self.gatekeeper = Gatekeeper(
            self.memory, config, self.roster, instance_id=instance_id, entrance=entrance
        )
        self.commands = Commands(self.memory, config)
        self.mind = Mind(
            self.memory,
            config,
            instance_id=instance_id,
            entrance=entrance,
            gatekeeper=self.gatekeeper,
        )
        self.watcher = (
            SoulWatcher(self.memory, config.soul.path, max_bytes=config.soul.max_bytes)
            if watch_soul
            else None
        )
        self.delivery = (
            Delivery(self.memory, entrance, send, self.manifest.chunks)
            if send is not None
            else None
        )
        self.send_failures = send_failures
        self.courier = (
            OutboxCourier(
                self.memory,
                entrance,
                instance_id,
                self.delivery.deliver,
                runs={DUE_KIND: self.follow_up_due},
                on_failed=self._undeliverable,
            )
            if self.delivery is not None
            else None
        )
        self.turns = InFlight()
        self._in_flight: set[str] = set()  # platform ids of the messages being answered
        self._tasks: list[asyncio.Task[Any]] = []
        self.started = False

    async def __aenter__(self) -> Instance:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        return socket.gethostname()

    async def start(self) -> None:
        """Open memory, take the entrance, watch the soul, register. Whatever fails (a lease
        held elsewhere, memory that cannot be written) leaves nothing open behind: a process
        with aiosqlite's threads still running would never exit."""
        # The model library and the recall encoder load in threads while memory opens and
        # the entrance is taken: the first message waits for neither (bench/startup.py).
        self.spawn(self._preload_model(), "preload-model")
        try:
            await self.memory.open()
            await self._start()
        except BaseException:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            if self.watcher is not None:
                with contextlib.suppress(Exception):
                    await self.watcher.stop()
            await self.memory.close()
            raise

    async def _start(self) -> None:
        if self.exclusive:
            await self._take_lease()
            # We are the only deliverer for this entrance now: rows a killed predecessor had
            # claimed come back at once instead of after their claim expires.
            released = await self.memory.release_claims(self.entrance, self.instance_id)
            if released:
                log.info(
                    "%s: took back %d outbox row(s) claimed before a crash",
                    self.instance_id,
                    released,
                )
        if self.watcher is not None:
            await self.watcher.start()
        soul = await self.memory.active_soul()
        await self.memory.register_instance(
            self.instance_id, self.entrance, self.host, os.getpid(), soul.id if soul else None
        )
        await self.gatekeeper.warm_up()
        self.spawn(self._heartbeat(), "heartbeat")
        self.started = True
        log.info(
            "instance %s (%s) started; memory %s; soul %s",
            self.instance_id,
            self.entrance,
            self.config.memory.shown,  # a PostgreSQL URL's password stays out of the log
            f"v{soul.id} {soul.name}" if soul else "none (check SOUL.md)",
        )

    async def settle(self) -> None:
        """Let the turns in flight finish (their replies sent) and the outbox rows being
        sent go out; the courier claims nothing new. An adapter whose platform connection
        closes before `stop` calls this first; `stop` does it anyway."""
        if not await self.turns.settled(self.config.model.timeout_s + SEND_GRACE_S):
            log.warning("stopping with %d turn(s) still running", self.turns.count)
        if self.courier is not None:
            await self.courier.finish(timeout_s=self.config.model.timeout_s + SEND_GRACE_S)

    async def stop(self) -> None:
        """Settle (turns and the rows in hand finish), cancel every task, mark the instance
        stopped."""
        if not self.started:
            await self.memory.close()
            return
        await self.settle()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.watcher is not None:
            await self.watcher.stop()
        with contextlib.suppress(Exception):
            await self.memory.stop_instance(self.instance_id)
        if self.exclusive:
            with contextlib.suppress(Exception):
                await self.memory.release_lease(self.lease_name, self.holder)
        await self.memory.close()
        self.started = False
        log.info("instance %s stopped", self.instance_id)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a background task this instance owns (cancelled on stop)."""
        task = asyncio.create_task(coroutine, name=f"{self.instance_id}:{name}")
        self._tasks.append(task)
        return task

    def deliver_outbox(self, *, targets: list[str] | None = None) -> OutboxCourier:
        """Deliver this entrance's outbox rows through the adapter's `send` (only those for
        `targets`, when given)."""
        if self.courier is None:
            raise RuntimeError("deliver_outbox needs the adapter's send (Instance(send=...))")
        if targets is not None:
            self.courier.targets = targets
        self.spawn(self.courier.run(), "outbox")
        if self.exclusive:
            # The entrance can send now: answer what a dead predecessor left unanswered.
            self.spawn(self._resume_turns(), "resume")
        return self.courier

    async def resume_turns(self, *, stale_after_s: float) -> int:
        """Answer once each message of this entrance whose turn never finished: its process
        died mid-turn ('received' for longer than `stale_after_s`), or every model failed
        ('unanswered', tried again with backoff). Too old, or tried too often: marked missed
        and the coordinator told once. Returns how many turns ran."""
        turns = self.config.turns
        due = await self.memory.take_unfinished(
            self.entrance,
            stale_after_s=stale_after_s,
            retry_after_s=turns.retry_after_s,
            attempts=turns.attempts,
            give_up_after_s=turns.give_up_after_s,
            missed_notice=self._missed_notice,
        )
        for found in due:
            late = self.memory.now - found.at > turns.late_after_s
            log.info(
                "%s: answering message %d again (attempt %d)%s",
                self.instance_id,
                found.message_id,
                found.attempts + 1,
                ", late" if late else "",
            )
            # An unanswered message's apology holds the plain reply key: a retry needs its own.
            retry = found.attempts + 1 if found.status == "unanswered" else found.attempts
            await self.handle(found.incoming, preface=LATE_PREFACE if late else None, attempt=retry)
        return len(due)

    async def follow_up_due(self, item: OutboxItem) -> str | None:
        """A promise made in one of this entrance's conversations fell due (an outbox row of
        kind 'due' the scheduler queued): run its turn, an internal event through the same
        pipeline (soul, context for that conversation's audience, model, store), and send
        the reply like any other (dedupe key `due-reply:ID`). The turn marks the promise
        done in its own transaction; run again after a crash, it repeats nothing. Raises
        when the turn fails: the courier tries the row again with backoff."""
        intention_id = int(str(item.payload["intention_id"]))
        found = await self.memory.due_follow_up(intention_id)
        if found is None:
            await self._undeliverable(item, "nobody to address in its conversation")
            return None
        if found.follow_up != "queued":
            # Followed up already (its reply, if unsent, is an outbox row of its own).
            return None
        if found.status not in ("open", "resolved", "conflicted"):
            log.info(
                "%s: intention %d is %s; no follow-up", self.instance_id, intention_id, found.status
            )
            return None
        incoming = self.mind.cleaned(found.incoming)
        late = self.memory.now - found.due_at > self.config.turns.late_after_s
        due_at = from_epoch(found.due_at)
        assert due_at is not None
        async with self.turns.track():
            recorded = await self.memory.record_incoming(
                incoming, self.instance_id, status="observed"
            )
            reply = await self.mind.answer(
                incoming,
                self.roster.speaker(incoming),
                recorded,
                delivery=ReplyDelivery(
                    target=incoming.conversation_id,
                    dedupe_key=f"due-reply:{intention_id}",
                    payload={"due_intention": intention_id},
                ),
                due=DuePromise(
                    intention_id=intention_id,
                    text=found.text,
                    due_at=due_at,
                    late=late,
                    kind=found.kind,
                ),
            )
        log.info("%s: followed up intention %d%s", self.instance_id, intention_id, late * " (late)")
        if reply.outbox is not None:
            await self._send_now(reply.outbox)
        return None

    async def _undeliverable(self, item: OutboxItem, error: str) -> None:
        """An outbox row's attempts ran out. For a follow-up (the 'due' row: its turn kept
        failing; or its reply: the platform kept refusing the conversation) the promise is
        marked unreachable and the coordinator told, once."""
        raw = item.payload.get("intention_id") if item.payload.get("kind") == DUE_KIND else None
        raw = raw if raw is not None else item.payload.get("due_intention")
        if raw is None:
            return
        intention_id = int(str(raw))
        coordinator = self.roster.coordinator
        notice = Outgoing(
            entrance=coordinator.entrance,
            target=coordinator.external_id,
            text=(
                f"I could not follow up promise #{intention_id} on {self.manifest.label}: "
                f"attempts ran out ({error}). It stays open until it expires."
            ),
            dedupe_key=f"due-unreachable:{intention_id}",
            payload={"kind": "due_unreachable"},
        )
        if await self.memory.mark_follow_up_unreachable(intention_id, notice):
            log.warning("%s: intention %d cannot be followed up", self.instance_id, intention_id)

    def _missed_notice(self, missed: list[Unfinished]) -> Outgoing | None:
        coordinator = self.roster.coordinator
        oldest = min(found.at for found in missed)
        since = datetime.fromtimestamp(oldest, UTC).strftime("%Y-%m-%d %H:%M")
        return Outgoing(
            entrance=coordinator.entrance,
            target=coordinator.external_id,
            text=(
                f"I could not answer {len(missed)} message(s) on {self.manifest.label} in "
                f"time (the oldest from {since} UTC): I was down, or no model answered. "
                "They are marked missed (`mirror memory log` shows them)."
            ),
            dedupe_key=f"missed:{self.entrance}:{missed[0].message_id}",
            payload={"kind": "missed"},
        )

    async def _resume_turns(self) -> None:
        """At start, every unfinished turn is an orphan (none of ours is running yet);
        later, only those older than a whole turn can take (model timeout and retries)."""
        stale_after_s = 0.0
        model = self.config.model
        while True:
            try:
                await self.resume_turns(stale_after_s=stale_after_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: resuming unfinished turns failed", self.instance_id)
            stale_after_s = model.timeout_s * (model.retries + 1) + 30
            await asyncio.sleep(self.config.turns.check_every_s)

    def add_own_account(self, external_id: str) -> None:
        """The persona's own account on this entrance (a bot id, its mail address): never
        answered, never taken for a person."""
        self.roster.add_own(AccountRef.of(self.entrance, external_id))

    async def handle(
        self,
        incoming: Incoming,
        *,
        reply_target: str | None = None,
        reply_extra: Mapping[str, Any] | None = None,
        deliver: bool = True,
        while_thinking: contextlib.AbstractAsyncContextManager[Any] | None = None,
        preface: str | None = None,
        attempt: int = 0,
    ) -> Reply | None:
        """One message for the persona: a command or a turn, then the reply sent (when the
        adapter gave a `send`). Returns the reply (None: nothing to say).

        The reply is stored with its outbox row in the turn's own transaction and sent from
        there at once, so a crash anywhere loses nothing: the row is claimed by this
        instance, which sends it on its next start (any holder of the entrance does once the
        claim runs out). `reply_target`: where the reply goes (default: the
        conversation); `reply_extra`: what the adapter's `send` gets back with it (mail
        headers); `deliver` False: the caller shows the reply itself (the terminal prints
        it); `while_thinking`: entered around the turn only, not the sending (a platform's
        "typing…", which must not show again after the reply); `preface`: a sentence put
        before the reply; `attempt`: how many times this message was tried before (its
        earlier apology keeps its outbox row). Commands are answered by code, never by the
        model; the model's output is only ever sent, never read as a command. Shutdown
        waits for turns in flight and for the rows being sent (`settle`).
        """
        pid = incoming.platform_message_id
        if pid is not None and pid in self._in_flight:
            # The same message twice at once (a redelivery racing a resumed turn): one turn.
            log.info("%s: message %s is being answered already", self.instance_id, pid)
            return None
        async with self.turns.track():
            with self._handling(pid):
                plan = None
                if deliver and self.delivery is not None:
                    payload = dict(reply_extra or {})
                    if incoming.platform_message_id:
                        payload["reply_to"] = incoming.platform_message_id
                    key = incoming.platform_message_id or f"t{time.time_ns()}"
                    if attempt:
                        key = f"{key}:{attempt}"
                    plan = ReplyDelivery(
                        target=reply_target or incoming.conversation_id,
                        dedupe_key=f"reply:{key}",
                        payload=payload,
                    )
                async with while_thinking or contextlib.nullcontext():
                    reply = await self._answer(incoming, plan, preface)
                if reply is None or plan is None or not reply.text.strip():
                    return reply
            if reply.outbox is not None:
                await self._send_now(reply.outbox)
            elif reply.message_id is None and (reply.answered or self.send_failures):
                # Said without a stored turn (a guard's refusal, an apology): sent directly,
                # what fails queued.
                await self.delivery.reply(  # type: ignore[union-attr]
                    plan.target,
                    reply.text,
                    reply_to=incoming.platform_message_id,
                    key=plan.dedupe_key.removeprefix("reply:"),
                    extra=reply_extra,
                )
            return reply

    @contextlib.contextmanager
    def _handling(self, platform_id: str | None) -> Iterator[None]:
        if platform_id is None:
            yield
            return
        self._in_flight.add(platform_id)
        try:
            yield
        finally:
            self._in_flight.discard(platform_id)

    async def _answer(
        self, incoming: Incoming, plan: ReplyDelivery | None, preface: str | None
    ) -> Reply | None:
        try:
            incoming = self.mind.cleaned(incoming)
            speaker = self.roster.speaker(incoming)
            if self.commands.takes(speaker, incoming.text):
                return await self._command(incoming, speaker, plan)
            return await self.mind.turn(incoming, speaker, delivery=plan, preface=preface)
        except Exception:
            # The message is recorded (or the failure is in recording it); the log says which.
            log.exception("turn failed for a message on %s", incoming.entrance)
            return Reply(
                text="Sorry, something went wrong on my side; I've logged it.", answered=False
            )

    async def _command(
        self, incoming: Incoming, speaker: Speaker, plan: ReplyDelivery | None
    ) -> Reply | None:
        """A command, recorded like any message and answered once: a platform delivering
        it twice (or a restart replaying it) changes nothing and says nothing twice."""
        recorded = await self.memory.record_incoming(incoming, self.instance_id)
        if not recorded.created and await self.memory.incoming_status(recorded.message_id) in (
            "answered",
            "refused",
        ):
            log.info("command %s was already handled; not again", recorded.message_id)
            return None
        outcome = await self.commands.run_text(speaker, incoming.text)
        assert outcome is not None  # `takes` said it is a declared command for people
        stored = await self.memory.store_turn(
            TurnRecord.answering(recorded, incoming, self.instance_id, outcome.text, delivery=plan)
        )
        return Reply(
            text=outcome.text,
            model=None,
            message_id=stored.message_id,
            outbox=stored.outbox,
        )

    async def _send_now(self, item: OutboxItem) -> None:
        """Send a stored reply's outbox row now. It was stored claimed by this instance, so
        no courier has it; if this process dies first, its next start gives it back."""
        assert self.courier is not None
        await self.courier.deliver_item(item)

    async def observe(self, incoming: Incoming) -> None:
        """Remember a message not addressed to the persona (a group's chatter), so every
        instance sees it; it is not answered."""
        await self.memory.record_incoming(
            self.mind.cleaned(incoming), self.instance_id, status="observed"
        )

    async def refuse(self, incoming: Incoming, reason: str) -> None:
        """Remember a message the adapter will not answer (a mail too large, an automatic
        reply) with the reason in the audit log; a message handled before stays as it was."""
        memory = self.memory
        incoming = self.mind.cleaned(incoming)
        recorded = await memory.record_incoming(incoming, self.instance_id)
        if await memory.incoming_status(recorded.message_id) not in (None, "received"):
            return
        await memory.set_message_status(recorded.message_id, "refused")
        await memory.audit(
            AccountRef.of(incoming.entrance, incoming.author.external_id).key,
            f"{self.entrance}.refused",
            incoming.platform_message_id,
            reason=reason,
        )
        log.info(
            "not answering %s from %s: %s",
            incoming.platform_message_id,
            incoming.author.external_id,
            reason,
        )

    async def press(
        self, external_id: str, data: str, *, conversation: str, private: bool
    ) -> Outcome:
        """A button press by `external_id` in `conversation` (private: a private chat); who
        may press what is decided in bot/, the same as typing the command."""
        speaker = self.roster.presser(
            AccountRef.of(self.entrance, external_id), conversation, private=private
        )
        async with self.turns.track():
            return await self.commands.press(speaker, data)

    async def newest_platform_ids(self) -> dict[str, str]:
        """Per conversation (its platform id), the newest message id memory holds: where an
        adapter catching up after downtime starts reading."""
        return await self.memory.latest_platform_ids(self.entrance)

    async def soul_name(self) -> str:
        soul = await self.memory.active_soul()
        return soul.name if soul else "persona"

    async def _take_lease(self) -> None:
        """Hold this entrance's lease, or refuse (or, with --standby, wait for it)."""
        announced = False
        while True:
            held, lease = await self.memory.acquire_lease(
                self.lease_name, self.holder, self.host, os.getpid(), ttl_s=self.lease_ttl_s
            )
            if held:
                if announced:
                    log.info("%s: took over the %s lease", self.instance_id, self.entrance)
                return
            since = datetime.fromtimestamp(lease.acquired_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            who = f"pid {lease.pid} on {lease.host} since {since} UTC"
            if not self.config.standby:
                raise EntranceFailure(
                    f"{self.entrance} is already running ({who}); stop it, or start this one "
                    "with --standby to take over when it stops"
                )
            if not announced:
                log.info(
                    "%s: standby; the %s entrance is held by %s",
                    self.instance_id,
                    self.entrance,
                    who,
                )
                announced = True
            await asyncio.sleep(max(0.2, self.lease_ttl_s / 5))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                if self.exclusive:
                    held, lease = await self.memory.acquire_lease(
                        self.lease_name,
                        self.holder,
                        self.host,
                        os.getpid(),
                        ttl_s=self.lease_ttl_s,
                    )
                    if not held:
                        # Someone took over while we were stalled: stop, never poll twice.
                        log.error(
                            "%s: lost the %s lease to pid %d; stopping",
                            self.instance_id,
                            self.entrance,
                            lease.pid,
                        )
                        os.kill(os.getpid(), signal.SIGTERM)
                        return
                soul = await self.memory.active_soul()
                await self.memory.heartbeat(self.instance_id, soul.id if soul else None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed")

    async def _preload_model(self) -> None:
        from bot import llm, recall

        try:
            # Loads litellm only when the configured model (or a fallback) needs it.
            await llm.preload(self.config.model)
        except Exception:
            log.exception("could not load the model library")
        try:
            # The encoder of recall by meaning (when on), before the first message needs it.
            await recall.preload(self.config)
        except Exception:
            log.exception("could not load the recall encoder; recall is by words only")
