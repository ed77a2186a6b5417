"""One turn: Incoming -> clean -> record -> guard -> context -> model -> store -> Reply.

The incoming message is cleaned (control characters dropped, huge text cut with a note)
and recorded before anything else can fail, so nothing is lost; a message already handled
is not handled again (platform redelivery, crash and restart). The guard (`bot.gate`)
then decides before the model is called: a refused or echoed message keeps its row and
an audit entry saying why. When every model fails, the offline brain's apology is sent and
the message stays marked 'unanswered' for a later look.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot import llm, offline_brain, recall
from bot import recurrence as recurrence_rule
from bot.config import Config
from bot.context import Context, DuePromise, trim_context
from bot.crash import crash_point
from bot.gate import Gatekeeper
from bot.guard import clip_incoming
from bot.intentions import normalize_subject
from bot.memory import Memory, NewIntention, Recorded, ReplyDelivery, TurnRecord
from bot.models import Incoming, IntentionDraft, Reply
from bot.reminders import known_timezone
from bot.soul import parse_soul
from bot.speaker import Roster, Speaker

log = logging.getLogger(__name__)

_settled = False  # has this process frozen its start-up heap (`settle_heap`)?


def settle_heap() -> None:
    """Move everything the process holds after its first turn out of the garbage
    collector's reach (`gc.freeze`), once per process.

    By its first turn a process holds its start-up heap for good: modules, config, the
    soul, dateparser's and the encoder's tables. A full (generation 2) collection walks all
    of it: 25 ms of CPU measured at 1M messages with recall by meaning on (a busy host),
    about 3 times in 800 turns, each inside one turn (its p99). Frozen, a full collection
    walks only what came later (under 0.1 ms right after the freeze). What freezing
    costs: a cycle among those start-up objects that later becomes garbage is never
    collected (they live as long as the process).
    """
    global _settled
    if not _settled:
        _settled = True
        gc.freeze()


@dataclass(frozen=True)
class TurnTimings:
    """Where one turn's time went (seconds), for bench/turn.py."""

    ingest: float = 0.0
    guard: float = 0.0
    context: float = 0.0
    model: float = 0.0
    store: float = 0.0


class Mind:
    """The persona's turn for one instance."""

    def __init__(
        self,
        memory: Memory,
        config: Config,
        *,
        instance_id: str,
        entrance: str,
        gatekeeper: Gatekeeper | None = None,
    ):
        self.memory = memory
        self.config = config
        self.instance_id = instance_id
        self.entrance = entrance
        self.gatekeeper = gatekeeper or Gatekeeper(
            memory, config, Roster(config), instance_id=instance_id, entrance=entrance
        )
        self.last_timings = TurnTimings()

    async def turn(
        self,
        incoming: Incoming,
        speaker: Speaker | None = None,
        *,
        delivery: ReplyDelivery | None = None,
        preface: str | None = None,
    ) -> Reply | None:
        """Answer one incoming message; None when there is nothing to send.

        Nothing to send: the message was handled before, or the guard refused it without a
        word (a bot, an echo, a spent budget). A refusal with words (a pairing code, "slow
        down") comes back as a Reply with `model=None`. `delivery`: queue the reply in the
        outbox in the turn's own transaction, claimed for this instance to send at once (the
        row comes back on the Reply); `preface`: a sentence put before the reply (a late
        answer says so).
        """
        started = time.perf_counter()
        incoming = self.cleaned(incoming)
        speaker = speaker or self.gatekeeper.roster.speaker(incoming)
        recorded = await self.memory.record_incoming(
            incoming,
            self.instance_id,
            sent=self.gatekeeper.sent_wanted(incoming, speaker),
            take_tokens=self.gatekeeper.tokens_wanted(incoming, speaker),
        )
        crash_point("after-record")
        if not recorded.created and await self.memory.incoming_status(recorded.message_id) in (
            "answered",
            "refused",
            "echo",
        ):
            log.info("message %s was already handled; not answering twice", recorded.message_id)
            return None
        ingested = time.perf_counter()
        verdict = await self.gatekeeper.check(incoming, speaker, recorded, places=incoming.places)
        guarded = time.perf_counter()
        if not verdict.allow:
            self.last_timings = TurnTimings(ingest=ingested - started, guard=guarded - ingested)
            if verdict.reply is None:
                return None
            return Reply(text=verdict.reply, model=None)
        return await self.answer(
            incoming,
            speaker,
            recorded,
            delivery=delivery,
            preface=preface,
            offline=verdict.use_offline,
            timings=TurnTimings(ingest=ingested - started, guard=guarded - ingested),
        )

    def cleaned(self, incoming: Incoming) -> Incoming:
        """The text as memory should keep it: no control characters, huge text cut."""
        # Outside text is already clean (bot.models.OutsideText); huge text is cut here.
        text = clip_incoming(incoming.text, self.config.guard.max_message_chars)
        return incoming if text == incoming.text else incoming.model_copy(update={"text": text})

    async def answer(
        self,
        incoming: Incoming,
        speaker: Speaker,
        recorded: Recorded,
        *,
        delivery: ReplyDelivery | None = None,
        preface: str | None = None,
        offline: bool = False,
        timings: TurnTimings | None = None,
        due: DuePromise | None = None,
    ) -> Reply:
        """Context, model, store: the turn after the guard let the message in.

        `offline`: answer with the offline brain (the daily model budget is spent); `due`:
        the turn follows up a promise that fell due (an internal event: no guard, and the
        promise is marked done in the turn's transaction).
        """
        timings = timings or TurnTimings()
        started = time.perf_counter()
        context = await self.build_context(incoming, speaker, recorded, due=due)
        built = time.perf_counter()
        model_config = self.config.model
        if offline:
            model_config = model_config.model_copy(
                update={
                    "name": llm.OFFLINE_MODEL,
                    "fallbacks": [],
                    "offline_because": "Today's model budget is spent; my model "
                    f"{model_config.name} answers again tomorrow (UTC).",
                }
            )
        try:
            crash_point("during-model")
            answer = await llm.complete(model_config, context)
            reply, model, answered = answer.reply, answer.model, True
            usage = (answer.prompt_tokens, answer.completion_tokens, answer.cost_usd)
        except llm.ModelUnavailable as exc:
            if due is not None:
                raise  # a follow-up is tried again later, never replaced by an apology
            log.error("no model answered message %s: %s", recorded.message_id, exc)
            reply = Reply(
                text=offline_brain.apology(
                    context, "my model is not answering", llm.offline_notice(model_config)
                )
            )
            model, answered, usage = llm.OFFLINE_MODEL, False, (0, 0, 0.0)
        thought = time.perf_counter()
        if preface:
            reply = reply.model_copy(update={"text": f"{preface}\n\n{reply.text}"})
        stored = await self.memory.store_turn(
            TurnRecord.answering(
                recorded,
                incoming,
                self.instance_id,
                reply.text,
                soul_version=context.soul_version,
                model=model,
                answered=answered,
                context_rows=context.used_rows(),
                intentions=[
                    self._new_intention(draft, incoming, recorded, context)
                    for draft in reply.intentions
                ],
                notes=reply.notes,
                done=reply.done,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
                cost_usd=usage[2],
                delivery=delivery,
                followed_up=due.intention_id if due is not None else None,
                person_name=(reply.person_name or "").strip() or None,
            )
        )
        crash_point("after-store")
        finished = time.perf_counter()
        settle_heap()
        self.last_timings = TurnTimings(
            ingest=timings.ingest,
            guard=timings.guard,
            context=built - started,
            model=thought - built,
            store=finished - thought,
        )
        if stored.conflicts_found:
            log.info(
                "turn %s: %d new conflict(s) for the coordinator",
                stored.message_id,
                stored.conflicts_found,
            )
        return reply.model_copy(
            update={
                "message_id": stored.message_id,
                "model": model,
                "answered": answered,
                "outbox": stored.outbox,
            }
        )

    async def build_context(
        self,
        incoming: Incoming,
        speaker: Speaker,
        recorded: Recorded,
        *,
        due: DuePromise | None = None,
    ) -> Context:
        audience = speaker.audience(
            recorded.conversation_id, recorded.person_id, elsewhere=incoming.reply_elsewhere
        )
        # The coordinator's wider view exists only in their own private chat.
        coordinator = audience.everyone
        # Recall by meaning: the vector of what was said (a promise falling due said nothing).
        meaning = (
            await recall.meaning(self.memory, self.config, incoming.text, self.instance_id)
            if due is None
            else None
        )
        view = await self.memory.turn_view(
            conversation_id=recorded.conversation_id,
            person_id=recorded.person_id,
            audience=audience,
            incoming_id=recorded.message_id,
            text=incoming.text,
            dead_after_s=self.config.persona.instance_dead_after_s,
            meaning=meaning,
        )
        soul = view.soul  # read in the view's snapshot: the turn's identity
        if soul is None:
            soul_text, soul_name = _fallback_soul(self.config)
        else:
            soul_text, soul_name = soul.text, soul.name
        entrance_config = self.config.entrance(incoming.entrance)
        # Read in the view's own snapshot: no extra await on the hot path.
        timezone = view.speaker_timezone
        person_name = view.speaker_name
        if timezone is None or known_timezone(timezone) is None:
            timezone = self.config.persona.timezone
        context = Context(
            soul_name=soul_name,
            soul_text=soul_text,
            soul_version=soul.id if soul else None,
            instance_id=self.instance_id,
            entrance=incoming.entrance,
            style=entrance_config.style,
            timezone=timezone,
            reminder_time=self.config.persona.reminder_time,
            now=datetime.fromtimestamp(self.memory.now, UTC),
            person_id=recorded.person_id,
            person_name=person_name or incoming.author.display_name or incoming.author.external_id,
            is_coordinator=coordinator,
            reply_elsewhere=incoming.reply_elsewhere,
            conversation_kind=incoming.conversation_kind,
            incoming_id=recorded.message_id,
            text=incoming.text,
            view=view,
            due=due,
        )
        return trim_context(context)

    def _new_intention(
        self, draft: IntentionDraft, incoming: Incoming, recorded: Recorded, context: Context
    ) -> NewIntention:
        due = draft.due_at
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=ZoneInfo(context.timezone))
        recurrence = recurrence_rule.normalized(draft.recurrence, context.timezone)
        if draft.recurrence and recurrence is None:
            log.warning("dropping a recurrence CronTrigger refuses: %s", draft.recurrence)
        if recurrence is not None and due is None:
            due = recurrence_rule.next_occurrence(recurrence, context.now)
        return NewIntention(
            owner_instance=self.instance_id,
            entrance=incoming.entrance,
            conversation_id=recorded.conversation_id,
            person_id=recorded.person_id,
            visibility=incoming.visibility,
            text=draft.text,
            subject=normalize_subject(draft.subject or draft.text),
            due_at=due.timestamp() if isinstance(due, datetime) else None,
            duration_s=draft.duration_minutes * 60,
            target_entrance=draft.target_entrance,
            source_message_id=recorded.message_id,
            kind=draft.kind,
            recurrence=json.dumps(recurrence) if recurrence is not None else None,
        )


def _fallback_soul(config: Config) -> tuple[str, str]:
    """When memory has no valid soul yet, say so honestly rather than invent one."""
    try:
        soul = parse_soul(config.soul.path.read_bytes(), max_bytes=config.soul.max_bytes)
        return soul.text, soul.name
    except Exception:
        return "# Name\nMirror\n\n(No valid SOUL.md is configured.)", "Mirror"
