"""The guard every turn passes: who may talk to the persona, loops, echoes, rate limits.

`Gatekeeper.check` runs on every incoming message after it is recorded and before the
model: empty text, the persona's own accounts and echoes of its own text, bots, group and
access policy (open | allowlist | pairing), bot loops and budgets, rate limits and the daily
model budget. It reads who is speaking from the turn's `Speaker` (decided once, in
`bot.speaker`) instead of asking again. A person's message that only an echo could still
stop has its rate limits' tokens taken in the transaction that records it (`tokens_wanted`;
a message refused before its admission gives them back). A refused message keeps its row
with status 'refused' or 'echo' and an audit entry saying why: it is never silently lost.
This module must never call the model.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Literal

from bot.config import Config
from bot.guard import (
    BotDecision,
    EchoWindow,
    is_empty,
    loop_reason,
    new_code,
    normalize_for_echo,
    utc_day,
)
from bot.memory import (
    PERSON_KEY,
    Account,
    AdmitRequest,
    BucketSpec,
    FactsRequest,
    GuardFacts,
    Memory,
    Outgoing,
    Recorded,
    SentSince,
)
from bot.models import Incoming
from bot.people import PAIRING_WAITING, REVOKED_NOTICE, pairing_announcement
from bot.speaker import Roster, Speaker

log = logging.getLogger(__name__)

ECHO_ACK = "That looks like something I said elsewhere."
RATE_LIMITED = "You're sending messages faster than I can answer; give me a moment."
PAIRING_REPLY = (
    "Hello! I only talk with people my coordinator has let in. To be let in, ask my "
    "coordinator to approve this code: {code} (valid for {minutes} minutes)."
)
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Verdict:
    """What the guard decided about one recorded incoming message.

    allow: answer it (with the offline brain when `use_offline`). Otherwise `status` is
    what the message was marked ('refused' | 'echo'), `reason` why (also audited), and
    `reply` what to say instead (None: stay silent). `notify_coordinator` is the text of a
    one-time notice to the coordinator: it is already queued in the outbox (deduplicated
    across processes); it is returned for logs and tests, not to be sent again.
    """

    allow: bool
    status: Literal["refused", "echo"] | None = None
    reason: str | None = None
    reply: str | None = None
    use_offline: bool = False
    notify_coordinator: str | None = None


ALLOW = Verdict(allow=True)


async def lets_in(memory: Memory, config: Config, speaker: Speaker, account: Account) -> bool:
    """Does the access policy let this account talk to the persona (now)?"""
    if speaker.trusted:
        return True
    if speaker.is_bot:
        return speaker.has("listed_bot")
    rules = config.access.entrance(speaker.account.entrance)
    if rules.policy == "open" or speaker.has("allowed"):
        return True
    if rules.policy == "pairing":
        return await memory.person_granted(account.person_id)
    return False


class Gatekeeper:
    """The guard for one instance (one entrance in one process)."""

    def __init__(
        self,
        memory: Memory,
        config: Config,
        roster: Roster,
        *,
        instance_id: str,
        entrance: str,
    ) -> None:
        self.memory = memory
        self.config = config
        self.guard = config.guard
        self.access = config.access
        self.limits = config.limits
        self.roster = roster
        self.instance_id = instance_id
        self.entrance = entrance
        self.echo = EchoWindow(self.guard.echo_window_s, max_candidates=self.guard.echo_candidates)
        self._pruned_at: float | None = None
        self._budget_told_day: int | None = None

    async def warm_up(self) -> int:
        """Load the last day's outgoing texts into the echo index now, rather than on the
        first turn (tens of milliseconds per 10 000 replies); returns how many it holds."""
        now = self.memory.now
        for sent in await self.memory.sent_since(self.echo.last_id, now - self.guard.echo_window_s):
            self.echo.add(sent.id, sent.at, sent.conversation_id, sent.text)
        return len(self.echo)

    # The check ------------------------------------------------------------------------

    def sent_wanted(self, incoming: Incoming, speaker: Speaker) -> SentSince | None:
        """What the persona sent that `check` will compare this message with (the echo
        window's news since it last looked), for the caller to read when it records the
        message (`Memory.record_incoming(sent=…)`: one read a turn fewer); None when
        `check` will not compare it (a trusted speaker, a text too short to be an echo)."""
        if speaker.trusted or len(normalize_for_echo(incoming.text)) < self.guard.echo_min_chars:
            return None
        return SentSince(self.echo.last_id, self.memory.now - self.guard.echo_window_s)

    def tokens_wanted(self, incoming: Incoming, speaker: Speaker) -> list[BucketSpec] | None:
        """The rate limits' buckets to take a token from when the message is recorded
        (`Memory.record_incoming(take_tokens=…)`: the admission's write transaction a turn
        fewer; `Recorded.admission`), or None to leave the admission to `check`.

        Asked only when every check before the admission is known to pass but the echo
        check (a person's non-empty message, in a place and under a policy that let them
        in). A message `check` refuses before its admission gives the tokens back. Bots,
        and people the policy must look up, are admitted by `check` alone."""
        rules = self.access.entrance(incoming.entrance)
        if (
            speaker.own
            or speaker.is_bot
            or is_empty(incoming.text)
            or not (speaker.vetted or rules.policy == "open")
        ):
            return None
        if self._unlisted_group(incoming, speaker, incoming.places):
            return None
        return [] if speaker.trusted else self._buckets(incoming.entrance)

    async def check(
        self,
        incoming: Incoming,
        speaker: Speaker,
        recorded: Recorded,
        *,
        places: Collection[str] = (),
    ) -> Verdict:
        """Decide about a recorded incoming message before the model sees it.

        `places`: ids the conversation also belongs to for the [access.*] groups list (a
        Discord guild id, a thread's parent channel); the conversation id always counts.
        """
        await self._maybe_prune()
        screened = await self._screen(incoming, speaker, recorded, places)
        if isinstance(screened, Verdict):
            taken = recorded.admission  # refused before its admission: its tokens go back
            if taken is not None and taken.taken:
                await self.memory.give_back_tokens(taken.taken)
            return screened
        facts, person = screened, recorded.person_id
        # Taken when the message was recorded (`tokens_wanted`), or now.
        admission = recorded.admission or await self.memory.admit(
            AdmitRequest(
                buckets=[] if speaker.trusted else self._buckets(incoming.entrance, person),
                bot_conversation=recorded.conversation_id if speaker.is_bot else None,
                bot_budget=self.guard.bot_budget,
                human_conversation=None if speaker.is_bot else recorded.conversation_id,
            )
        )
        actor = speaker.actor
        if admission.bot is not None and not admission.bot.allowed:
            return await self._bot_stopped(incoming, recorded, actor, admission.bot)
        if not admission.allowed:
            reason = f"rate limit: {admission.limited_by}"
            first = await self.memory.refuse_message(
                recorded.message_id,
                status="refused",
                reason=reason,
                actor=actor,
                warn_bucket=admission.limited_by,
            )
            reply = RATE_LIMITED if first and not speaker.is_bot else None
            return Verdict(False, "refused", reason, reply=reply)
        return await self._model_budget(facts)

    async def _screen(
        self, incoming: Incoming, speaker: Speaker, recorded: Recorded, places: Collection[str]
    ) -> Verdict | GuardFacts:
        """Every check before the admission: a refusal, or the facts read for them."""
        rules = self.access.entrance(incoming.entrance)
        actor = speaker.actor
        if is_empty(incoming.text):
            return await self._refuse(recorded, actor, "refused", "empty")
        if speaker.own:
            return await self._refuse(recorded, actor, "echo", "one of my own accounts")
        trusted = speaker.trusted
        listed_bot = speaker.has("listed_bot")
        if speaker.is_bot and not listed_bot:
            return await self._refuse(recorded, actor, "refused", "a bot not on the allowlist")
        if self._unlisted_group(incoming, speaker, places):
            return await self._refuse(recorded, actor, "refused", "a group I am not set up for")
        vetted = speaker.vetted
        heard = "" if trusted else normalize_for_echo(incoming.text)
        echo = len(heard) >= self.guard.echo_min_chars  # shorter is never an echo ("ok")
        facts = await self._facts(incoming, recorded, echo=echo, vetted=vetted)

        if echo:
            found = self._echo_of(heard, recorded, facts)
            if found is not None and not await self._said_it_first(heard, recorded, found[0]):
                return await self._echo(incoming, recorded, actor, found[1])
        if not vetted and rules.policy == "allowlist":
            return await self._refuse(recorded, actor, "refused", "not on the allowlist")
        if not vetted and rules.policy == "pairing" and not facts.granted:
            return await self._pairing(incoming, recorded, actor)
        if speaker.is_bot:
            loop = loop_reason(
                facts.recent_incoming,
                ack_run=self.guard.bot_ack_run,
                repeat_run=self.guard.bot_repeat_run,
            )
            if loop is not None:
                return await self._loop_ended(incoming, recorded, actor, loop)
        return facts

    def _unlisted_group(
        self, incoming: Incoming, speaker: Speaker, places: Collection[str]
    ) -> bool:
        """A group conversation outside the entrance's [access.*] groups list (when it has
        one); `places`: ids it also belongs to (a guild, a thread's parent channel)."""
        groups = self.access.entrance(incoming.entrance).groups
        return (
            not speaker.private
            and bool(groups)
            and not ({incoming.conversation_id, *places} & set(groups))
        )

    async def _facts(
        self, incoming: Incoming, recorded: Recorded, *, echo: bool, vetted: bool
    ) -> GuardFacts:
        rules = self.access.entrance(incoming.entrance)
        recent = (
            max(self.guard.bot_ack_run, self.guard.bot_repeat_run) if incoming.author.is_bot else 0
        )
        want_grant = not vetted and rules.policy == "pairing"
        budget = bool(self.limits.daily_tokens or self.limits.daily_cost_usd)
        read_sent = echo and recorded.sent is None  # not read when it was recorded
        if not read_sent and not recent and not want_grant and not budget:
            return GuardFacts(sent=recorded.sent or [])
        now = self.memory.now
        facts = await self.memory.guard_facts(
            FactsRequest(
                message_id=recorded.message_id,
                conversation_id=recorded.conversation_id,
                person_id=recorded.person_id,
                sent_after=self.echo.last_id if read_sent else None,
                sent_since=now - self.guard.echo_window_s,
                recent_incoming=recent,
                want_grant=want_grant,
                usage_day=utc_day(now) if budget else None,
            )
        )
        return facts if read_sent else replace(facts, sent=recorded.sent or [])

    def _echo_of(self, heard: str, recorded: Recorded, facts: GuardFacts) -> tuple[int, str] | None:
        """The persona's message sent elsewhere that this (normalised) text repeats, if any:
        (its id, an excerpt)."""
        for sent in facts.sent:
            self.echo.add(sent.id, sent.at, sent.conversation_id, sent.text)
        now = self.memory.now
        self.echo.expire(now)
        return self.echo.find(
            heard,
            now=now,
            conversation_id=recorded.conversation_id,
            min_chars=self.guard.echo_min_chars,
            min_fragment_chars=self.guard.echo_min_fragment_chars,
        )

    async def _said_it_first(self, heard: str, recorded: Recorded, sent_id: int) -> bool:
        """Did this person write `heard` before the persona sent message `sent_id`?

        Then the persona was quoting them ("On Telegram you told me: …") or happened to use
        their words, and their saying it again is no echo. Asked only when the text matched
        something the persona sent (rare): one indexed read of their latest messages.
        """
        earlier = await self.memory.said_before(
            recorded.person_id, sent_id, self.memory.now - self.guard.echo_window_s
        )
        padded = f" {heard} "
        return any(padded in f" {normalize_for_echo(text)} " for text in earlier)

    def _buckets(self, entrance: str, person_id: int | None = None) -> list[BucketSpec]:
        """The buckets a message takes from; the speaker's named by `person_id` (None: by
        `PERSON_KEY`, for the recording to fill in)."""
        buckets = []
        if self.limits.person_per_minute > 0:
            buckets.append(
                BucketSpec(
                    PERSON_KEY if person_id is None else PERSON_KEY.format(person=person_id),
                    self.limits.person_per_minute / 60,
                    self.limits.person_burst,
                )
            )
        if self.limits.entrance_per_minute > 0:
            buckets.append(
                BucketSpec(
                    f"entrance:{entrance}",
                    self.limits.entrance_per_minute / 60,
                    self.limits.entrance_burst,
                )
            )
        return buckets

    async def _refuse(
        self, recorded: Recorded, actor: str, status: Literal["refused", "echo"], reason: str
    ) -> Verdict:
        await self.memory.refuse_message(
            recorded.message_id, status=status, reason=reason, actor=actor
        )
        log.info("message %s %s: %s", recorded.message_id, status, reason)
        return Verdict(False, status, reason)

    async def _echo(self, incoming: Incoming, recorded: Recorded, actor: str, said: str) -> Verdict:
        reason = "text I sent elsewhere"
        human_dm = not incoming.author.is_bot and incoming.conversation_kind == "dm"
        key = None
        if human_dm and self.guard.acknowledge_echo:
            key = f"echo-ack:{recorded.conversation_id}:{utc_day(self.memory.now)}"
        told = await self.memory.refuse_message(
            recorded.message_id,
            status="echo",
            reason=reason,
            actor=actor,
            detail={"said": said[:200]},
            notice_key=key,
        )
        return Verdict(False, "echo", reason, reply=ECHO_ACK if told else None)

    async def _pairing(self, incoming: Incoming, recorded: Recorded, actor: str) -> Verdict:
        """An account not let in yet, under policy 'pairing'. In a private chat: a code, and
        the coordinator asked at once (Approve / Deny buttons); a second message is reminded
        once that the code is waiting, later ones get silence. An account the coordinator
        denied or revoked gets silence (a revoked one is told once). See `bot.people`."""
        if incoming.conversation_kind != "dm":
            return await self._refuse(recorded, actor, "refused", "unknown account (pairing)")
        closed = await self.memory.access_closed(recorded.identity_id)
        if closed is not None:
            how, at = closed
            told = await self.memory.refuse_message(
                recorded.message_id,
                status="refused",
                reason=f"access {how}",
                actor=actor,
                notice_key=f"revoked-told:{recorded.identity_id}:{at}"
                if how == "revoked"
                else None,
            )
            return Verdict(
                False, "refused", f"access {how}", reply=REVOKED_NOTICE if told else None
            )
        code, created = await self.memory.mint_code(
            "pair",
            recorded.identity_id,
            make_code=new_code,
            ttl_s=self.access.pairing_code_ttl_s,
            per_day=self.access.pairing_codes_per_day,
            conversation=incoming.conversation_id,
        )
        reason = "unknown account, waiting for pairing approval"
        minutes = round(self.access.pairing_code_ttl_s / 60)
        key, outgoing = None, []
        if code is not None and created:
            key = f"pair-asked:{code}"
            outgoing = [self._announce_pairing(incoming, actor, code, minutes)]
        elif code is not None:
            key = f"pair-reminded:{code}"
        told = await self.memory.refuse_message(
            recorded.message_id,
            status="refused",
            reason=reason,
            actor=actor,
            detail={"code": code, "new_code": created},
            notice_key=key,
            outgoing=outgoing,
        )
        reply, announced = None, None
        if created:
            reply = PAIRING_REPLY.format(code=code, minutes=minutes)
            if told:
                announced = outgoing[0].text
                log.info("pairing request %s from %s: the coordinator is asked", code, actor)
        elif told:
            reply = PAIRING_WAITING.format(code=code)
        return Verdict(False, "refused", reason, reply=reply, notify_coordinator=announced)

    def _announce_pairing(
        self, incoming: Incoming, account: str, code: str, minutes: int
    ) -> Outgoing:
        coordinator = self.roster.coordinator
        text, buttons = pairing_announcement(
            account, incoming.author.display_name, code, minutes, incoming.text
        )
        return Outgoing(
            entrance=coordinator.entrance,
            target=coordinator.external_id,
            text=text,
            dedupe_key=f"pair-asked:{code}",
            payload={"kind": "pairing", "code": code, "buttons": buttons},
        )

    async def _bot_stopped(
        self, incoming: Incoming, recorded: Recorded, actor: str, decision: BotDecision
    ) -> Verdict:
        where = incoming.conversation_title or f"conversation {incoming.conversation_id}"
        text = (
            f"I stopped answering bots in {where} on {incoming.entrance}: "
            f"{decision.reason}. I'll answer bots there again once a person speaks there "
            f"or the bots have been quiet for {round(self.guard.bot_cooldown_s / 60)} "
            "minutes."
        )
        return await self._end_bot_exchange(
            recorded,
            actor,
            f"bot budget: {decision.reason}",
            text if decision.newly_stopped else None,
            "bot-stop",
        )

    async def _loop_ended(
        self, incoming: Incoming, recorded: Recorded, actor: str, loop: str
    ) -> Verdict:
        """A bot answering with bare acknowledgements or repeating itself gets no answer;
        the coordinator hears of it once an hour per conversation (the seed experiment: two
        models thanking each other forever)."""
        where = incoming.conversation_title or f"conversation {incoming.conversation_id}"
        text = (
            f"I stopped answering a bot in {where} on {incoming.entrance}: a loop of "
            f"{loop}. I answer it again when it says something new."
        )
        return await self._end_bot_exchange(recorded, actor, f"bot loop: {loop}", text, "bot-loop")

    async def _end_bot_exchange(
        self,
        recorded: Recorded,
        actor: str,
        reason: str,
        text: str | None,
        kind: str,
    ) -> Verdict:
        """Refuse a bot's message; tell the coordinator `text` once per conversation and
        hour (None: say nothing)."""
        key, outgoing = None, []
        if text is not None:
            window = int(self.memory.now // 3600)
            key = f"{kind}:{recorded.conversation_id}:{window}"
            outgoing = [self._to_coordinator(text, key)]
        told = await self.memory.refuse_message(
            recorded.message_id,
            status="refused",
            reason=reason,
            actor=actor,
            notice_key=key,
            outgoing=outgoing,
        )
        if told:
            log.warning("stopped a bot exchange in conversation %s", recorded.conversation_id)
        return Verdict(False, "refused", reason, notify_coordinator=text if told else None)

    async def _model_budget(self, facts: GuardFacts) -> Verdict:
        tokens, cost = self.limits.daily_tokens, self.limits.daily_cost_usd
        over = (tokens and facts.usage_tokens >= tokens) or (cost and facts.usage_cost_usd >= cost)
        if not over:
            return ALLOW
        day = utc_day(self.memory.now)
        if self._budget_told_day == day:
            return Verdict(True, use_offline=True)
        text = (
            f"Today's model budget is spent ({facts.usage_tokens} tokens, "
            f"${facts.usage_cost_usd:.2f}); I'm answering with the offline brain until "
            "midnight UTC."
        )
        key = f"budget:{day}"
        told = await self.memory.claim_notice(
            key,
            outgoing=[self._to_coordinator(text, key)],
            audit=(
                self.instance_id,
                "guard.budget_spent",
                {"tokens": facts.usage_tokens, "cost_usd": facts.usage_cost_usd},
            ),
        )
        self._budget_told_day = day
        return Verdict(True, use_offline=True, notify_coordinator=text if told else None)

    def _to_coordinator(self, text: str, key: str) -> Outgoing:
        coordinator = self.roster.coordinator
        return Outgoing(
            entrance=coordinator.entrance,
            target=coordinator.external_id,
            text=text,
            dedupe_key=f"guard:{key}",
            payload={"kind": "guard"},
        )

    async def _maybe_prune(self) -> None:
        now = self.memory.now
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            await self.memory.prune_guard()
        except Exception:  # housekeeping must never cost a turn
            log.exception("pruning the guard's tables failed")
