"""Who may talk to the persona, and the flows that change it; the guard every turn passes.

`Gatekeeper.check` runs on every incoming message after it is recorded and before the
model: empty text, the persona's own accounts and echoes of its own text, bots, group and
access policy (open | allowlist | pairing), bot loops and budgets, rate limits and the daily
model budget. A refused message keeps its row with status 'refused' or 'echo' and an audit
entry saying why: it is never silently lost. `Gatekeeper.handle_command` answers the
guard's commands (/link, /approve-pair, /soul, and /pending for admins) without the model.
The module-level functions are what the CLI calls (`mirror pair approve`, `mirror people`,
`mirror link`, `mirror unlink`).

Injection: identity changes only through SOUL.md (the file, `/soul rollback` by an admin,
the CLI); nothing a person, a mail, another instance or the model writes changes it.
Commands act only on incoming platform text, from the account configured as coordinator or
admin (checked here and in `bot.coordinator`, never by asking the model); model output is
sent as a reply and never parsed for commands. This module must never call the model.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from bot.config import Config
from bot.coordinator import Command, Coordinator, parse_command
from bot.guard import (
    BotDecision,
    EchoWindow,
    account_key,
    is_empty,
    loop_reason,
    new_code,
    normalize_code,
    normalize_for_echo,
    parse_account,
    utc_day,
)
from bot.guard_config import AccessConfig, EntranceAccess, GuardConfig, LimitsConfig
from bot.memory import Memory, Outgoing, Recorded
from bot.memory.guard_store import (
    Account,
    AdmitRequest,
    BucketSpec,
    CodeError,
    FactsRequest,
    GuardFacts,
    PendingPairing,
)
from bot.models import Incoming, Person, SoulVersion

log = logging.getLogger(__name__)

ECHO_ACK = "That looks like something I said elsewhere."
RATE_LIMITED = "You're sending messages faster than I can answer; give me a moment."
ONLY_ADMINS = "Only my admins can do that."
LINK_IN_PRIVATE = "Let's do that in a private chat: send /link to me directly."
PAIRING_REPLY = (
    "Hello! I only talk with people my coordinator has let in. To be let in, ask my "
    "coordinator to approve this code: {code} (valid for {minutes} minutes)."
)
PAIRED_WELCOME = "You're in: my coordinator approved you. Say hello whenever you like."
LINK_CODE_REPLY = (
    "Your link code is {code}. Within {minutes} minutes, send /link {code} to me from your "
    "other account (Telegram, Discord or email) and I'll know both are you."
)
LINKED_NOTICE = (
    "Your account was just linked with {account}, so I treat both as you. If that wasn't "
    "you, tell my coordinator."
)
SOUL_USAGE = "Usage: /soul show | /soul history | /soul rollback VERSION"
SHOW_LIMIT = 3500
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


def listed(ids: Iterable[str], entrance: str, external_id: str) -> bool:
    """Is the account among configured external ids (mail addresses in any case)?"""
    key = account_key(entrance, external_id)
    return any(account_key(entrance, item) == key for item in ids)


def is_admin(access: AccessConfig, entrance: str, external_id: str) -> bool:
    """Is ENTRANCE:ID in the [access] admins list? (The coordinator is not implied.)"""
    return account_key(entrance, external_id) in access.admins


class Gatekeeper:
    """The guard for one instance (one entrance in one process)."""

    def __init__(
        self,
        memory: Memory,
        config: Config,
        guard_config: GuardConfig | None = None,
        *,
        access: AccessConfig | None = None,
        limits: LimitsConfig | None = None,
        instance_id: str,
        entrance: str,
        own_accounts: Iterable[str] = (),
        coordinator: Coordinator | None = None,
    ) -> None:
        self.memory = memory
        self.config = config
        self.guard = guard_config or config.guard
        self.access = access or config.access
        self.limits = limits or config.limits
        self.instance_id = instance_id
        self.entrance = entrance
        self.own_accounts: set[str] = set()
        for account in own_accounts:
            self.add_own_account(*parse_account(account))
        if config.entrances.email.address:
            self.add_own_account("email", config.entrances.email.address)
        address = config.coordinator.parsed
        self._coordinator = account_key(address.entrance, address.id)
        self._coordinator_address = (address.entrance, address.id)
        self.coordinator = coordinator or Coordinator(memory, config)
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

    # Who is who -----------------------------------------------------------------------

    def add_own_account(self, entrance: str, external_id: str) -> None:
        """An account of the persona itself (adapters add theirs once they know the id)."""
        self.own_accounts.add(account_key(entrance, external_id))

    def is_own(self, entrance: str, external_id: str) -> bool:
        return account_key(entrance, external_id) in self.own_accounts

    def is_admin(self, entrance: str, external_id: str) -> bool:
        return is_admin(self.access, entrance, external_id)

    def is_coordinator(self, entrance: str, external_id: str) -> bool:
        return account_key(entrance, external_id) == self._coordinator

    def may_administer(self, entrance: str, external_id: str) -> bool:
        """Admins and the coordinator: trusted with admin commands, never rate-limited."""
        return self.is_admin(entrance, external_id) or self.is_coordinator(entrance, external_id)

    def rules(self, entrance: str) -> EntranceAccess:
        return self.access.entrance(entrance)

    # The check ------------------------------------------------------------------------

    async def check(
        self, incoming: Incoming, recorded: Recorded, *, places: Collection[str] = ()
    ) -> Verdict:
        """Decide about a recorded incoming message before the model sees it.

        `places`: ids the conversation also belongs to for the [access.*] groups list (a
        Discord guild id, a thread's parent channel); the conversation id always counts.
        """
        await self._maybe_prune()
        author = incoming.author
        entrance = incoming.entrance
        rules = self.rules(entrance)
        actor = account_key(entrance, author.external_id)
        if is_empty(incoming.text):
            return await self._refuse(recorded, actor, "refused", "empty")
        if self.is_own(entrance, author.external_id):
            return await self._refuse(recorded, actor, "echo", "one of my own accounts")
        trusted = self.may_administer(entrance, author.external_id)
        listed_bot = author.is_bot and listed(rules.bots, entrance, author.external_id)
        if author.is_bot and not listed_bot:
            return await self._refuse(recorded, actor, "refused", "a bot not on the allowlist")
        if (
            incoming.conversation_kind != "dm"
            and rules.groups
            and not ({incoming.conversation_id, *places} & set(rules.groups))
        ):
            return await self._refuse(recorded, actor, "refused", "a group I am not set up for")
        vetted = trusted or listed_bot or listed(rules.allow, entrance, author.external_id)
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
        if author.is_bot:
            loop = loop_reason(
                facts.recent_incoming,
                ack_run=self.guard.bot_ack_run,
                repeat_run=self.guard.bot_repeat_run,
            )
            if loop is not None:
                return await self._refuse(recorded, actor, "refused", f"bot loop: {loop}")

        admission = await self.memory.admit(
            AdmitRequest(
                buckets=[] if trusted else self._buckets(entrance, recorded.person_id),
                bot_conversation=recorded.conversation_id if author.is_bot else None,
                bot_budget=self.guard.bot_budget,
                human_conversation=None if author.is_bot else recorded.conversation_id,
            )
        )
        if admission.bot is not None and not admission.bot.allowed:
            return await self._bot_stopped(incoming, recorded, actor, admission.bot)
        if not admission.allowed:
            reason = f"rate limit: {admission.limited_by}"
            await self.memory.refuse_message(
                recorded.message_id, status="refused", reason=reason, actor=actor
            )
            reply = RATE_LIMITED if admission.first_warning and not author.is_bot else None
            return Verdict(False, "refused", reason, reply=reply)
        return await self._model_budget(facts)

    async def _facts(
        self, incoming: Incoming, recorded: Recorded, *, echo: bool, vetted: bool
    ) -> GuardFacts:
        rules = self.rules(incoming.entrance)
        recent = (
            max(self.guard.bot_ack_run, self.guard.bot_repeat_run) if incoming.author.is_bot else 0
        )
        want_grant = not vetted and rules.policy == "pairing"
        budget = bool(self.limits.daily_tokens or self.limits.daily_cost_usd)
        if not echo and not recent and not want_grant and not budget:
            return GuardFacts()
        now = self.memory.now
        return await self.memory.guard_facts(
            FactsRequest(
                message_id=recorded.message_id,
                conversation_id=recorded.conversation_id,
                person_id=recorded.person_id,
                sent_after=self.echo.last_id if echo else None,
                sent_since=now - self.guard.echo_window_s,
                recent_incoming=recent,
                want_grant=want_grant,
                usage_day=utc_day(now) if budget else None,
            )
        )

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

    def _buckets(self, entrance: str, person_id: int) -> list[BucketSpec]:
        buckets = []
        if self.limits.person_per_minute > 0:
            buckets.append(
                BucketSpec(
                    f"person:{person_id}",
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
        if incoming.conversation_kind != "dm":
            return await self._refuse(recorded, actor, "refused", "unknown account (pairing)")
        code, created = await self.memory.mint_code(
            "pair",
            recorded.identity_id,
            make_code=new_code,
            ttl_s=self.access.pairing_code_ttl_s,
            per_day=self.access.pairing_codes_per_day,
            conversation=incoming.conversation_id,
        )
        reason = "unknown account, waiting for pairing approval"
        await self.memory.refuse_message(
            recorded.message_id,
            status="refused",
            reason=reason,
            actor=actor,
            detail={"code": code, "new_code": created},
        )
        reply = None
        if created:
            minutes = round(self.access.pairing_code_ttl_s / 60)
            reply = PAIRING_REPLY.format(code=code, minutes=minutes)
        return Verdict(False, "refused", reason, reply=reply)

    async def _bot_stopped(
        self, incoming: Incoming, recorded: Recorded, actor: str, decision: BotDecision
    ) -> Verdict:
        reason = f"bot budget: {decision.reason}"
        key, outgoing, text = None, [], None
        if decision.newly_stopped:
            where = incoming.conversation_title or f"conversation {incoming.conversation_id}"
            text = (
                f"I stopped answering bots in {where} on {incoming.entrance}: "
                f"{decision.reason}. I'll answer bots there again once a person speaks there "
                f"or the bots have been quiet for {round(self.guard.bot_cooldown_s / 60)} "
                "minutes."
            )
            window = int(self.memory.now // 3600)
            key = f"bot-stop:{recorded.conversation_id}:{window}"
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
        entrance, target = self._coordinator_address
        return Outgoing(
            entrance=entrance,
            target=target,
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

    # Commands -------------------------------------------------------------------------

    async def handle_command(self, incoming: Incoming) -> str | None:
        """Answer the guard's commands; None when the text is not one of them.

        Call before the coordinator's commands (an admin's /pending is answered here).
        /link and /link CODE (private chats only), /approve-pair CODE (admins and the
        coordinator, any chat), /soul show|history|rollback VERSION (admins and the
        coordinator), /pending and /show ID for admins who are not the coordinator
        (read-only, private chats only). Never for bots or the persona's own accounts.
        """
        command = parse_command(incoming.text)
        if command is None:
            return None
        author = incoming.author
        if author.is_bot or self.is_own(incoming.entrance, author.external_id):
            # Commands are for people. A bot's "/soul …" goes through the guard like any of
            # its messages (refused unless allowlisted, and counted against the bot budget),
            # never answered here: otherwise any bot could make the persona talk to it.
            return None
        name = command.name.replace("_", "-")
        actor = account_key(incoming.entrance, author.external_id)
        allowed = self.may_administer(incoming.entrance, author.external_id)
        if name == "link":
            return await self._link(incoming, command.args, actor)
        if name in ("approve-pair", "pair-approve", "approvepair"):
            if not allowed:
                await self.memory.audit(actor, "admin.refused", "/approve-pair", args=command.args)
                return ONLY_ADMINS
            if not command.args:
                return "Usage: /approve-pair CODE"
            return await approve_pairing(self.memory, command.args[0], actor)
        if name == "soul":
            return await admin_command(self.memory, self.config, command, actor, allowed=allowed)
        if name in ("pending", "show") and not self.is_coordinator(
            incoming.entrance, author.external_id
        ):
            if not self.is_admin(incoming.entrance, author.external_id):
                return None  # the coordinator's code refuses it and audits
            if incoming.conversation_kind != "dm":
                return "Items show private conversations; ask me in a private chat."
            outcome = await self.coordinator.run(command, actor=actor, trusted=True)
            return outcome.text
        return None

    async def _link(self, incoming: Incoming, args: list[str], actor: str) -> str:
        if incoming.conversation_kind != "dm":
            return LINK_IN_PRIVATE
        author = incoming.author
        account = await self.memory.account(
            incoming.entrance,
            author.external_id,
            display_name=author.display_name,
            is_bot=author.is_bot,
        )
        assert account is not None
        minutes = round(self.access.link_code_ttl_s / 60)
        if not args:
            if not await self._lets_in(incoming, account):
                await self.memory.audit(actor, "identity.link_refused", None, reason="not let in")
                return "I can only link accounts I already talk with."
            code, _ = await self.memory.mint_code(
                "link",
                account.identity_id,
                make_code=new_code,
                ttl_s=self.access.link_code_ttl_s,
                per_day=10,
                conversation=incoming.conversation_id,
            )
            if code is None:
                return "That's enough link codes for today; try again tomorrow."
            return LINK_CODE_REPLY.format(code=code, minutes=minutes)
        attempts = self.access.code_attempts_per_hour
        limited, _ = await self.memory.take_tokens(
            [BucketSpec(f"codes:{actor}", attempts / 3600, attempts)]
        )
        if limited is not None:
            await self.memory.audit(actor, "identity.link_refused", None, reason="too many tries")
            return "Too many code attempts; try again later."
        try:
            result = await self.memory.redeem_link_code(
                normalize_code(args[0]),
                account.identity_id,
                actor,
                notice=LINKED_NOTICE.format(account=actor),
            )
        except CodeError as exc:
            return f"I can't link with that code: {exc}."
        if result.merged_person is None:
            return "These accounts are already linked."
        return f"Linked: I now know {', '.join(result.accounts)} as one person."

    async def _lets_in(self, incoming: Incoming, account: Account) -> bool:
        author = incoming.author
        rules = self.rules(incoming.entrance)
        if self.may_administer(incoming.entrance, author.external_id):
            return True
        if author.is_bot:
            return listed(rules.bots, incoming.entrance, author.external_id)
        if rules.policy == "open" or listed(rules.allow, incoming.entrance, author.external_id):
            return True
        if rules.policy == "pairing":
            return await self.memory.person_granted(account.person_id)
        return False


# Admin commands and CLI helpers ---------------------------------------------------------


async def admin_command(
    memory: Memory, config: Config, command: Command | str, actor: str, *, allowed: bool
) -> str | None:
    """/soul show | history | rollback VERSION; None when it is not a /soul command.

    `allowed`: the actor is an admin or the coordinator (the caller checks; the CLI is
    trusted). Anyone else is refused and the attempt audited, whatever the text says.
    """
    parsed = parse_command(command) if isinstance(command, str) else command
    if parsed is None or parsed.name != "soul":
        return None
    args = parsed.args
    if not allowed:
        await memory.audit(actor, "admin.refused", "/soul " + " ".join(args), args=args)
        log.warning("refused /soul %s from %s: not an admin", " ".join(args), actor)
        return ONLY_ADMINS
    sub = args[0].lower() if args else ""
    if sub == "show":
        version = await memory.active_soul()
        if version is None:
            return "There is no valid soul yet."
        text = version.text
        if len(text) > SHOW_LIMIT:
            text = text[:SHOW_LIMIT] + "\n[… the rest is in SOUL.md]"
        return f"Soul v{version.id} · {version.name} · sha256:{version.sha256[:12]}\n\n{text}"
    if sub == "history":
        versions = await memory.soul_history(limit=10)
        if not versions:
            return "There is no soul version yet."
        return "\n".join(
            f"v{v.id} {v.created_at:%Y-%m-%d %H:%M} {v.source} {v.name}"
            + (f" (by {v.author})" if v.author else "")
            for v in versions
        )
    if sub == "rollback":
        if len(args) < 2 or not args[1].lstrip("v").isdigit():
            return "Usage: /soul rollback VERSION (/soul history lists them)"
        number = int(args[1].lstrip("v"))
        try:
            version = await rollback_soul(memory, config, number, actor)
        except RollbackError as exc:
            return str(exc)
        except OSError as exc:
            return f"Soul version {number} is active again, but I could not write SOUL.md: {exc}"
        return (
            f"Soul version {version.id} is active ({version.name}, from version {number}); "
            "every instance speaks with it from its next turn."
        )
    return SOUL_USAGE


class RollbackError(Exception):
    """A soul version that cannot be made active again (the message says why)."""


async def rollback_soul(memory: Memory, config: Config, number: int, actor: str) -> SoulVersion:
    """Make soul version `number` active again (a new version, source 'rollback'), audit it,
    and write it back to SOUL.md so the file and memory agree. Raises RollbackError when
    there is no such valid version, OSError when SOUL.md cannot be written (memory has the
    new version by then: every instance uses it from its next turn)."""
    from bot.soul import SoulError, parse_soul, write_soul_file

    old = await memory.soul_version(number)
    if old is None:
        raise RollbackError(f"There is no soul version {number}; /soul history lists them.")
    try:
        soul = parse_soul(old.text, max_bytes=max(config.soul.max_bytes, len(old.text) * 4))
    except SoulError as exc:
        raise RollbackError(f"Version {number} is not a valid soul: {exc}") from None
    version, _ = await memory.record_soul_version(
        text=soul.text, name=soul.name, sha256=soul.sha256, source="rollback", author=actor
    )
    await memory.audit(actor, "soul.rollback", str(version.id), to_version=number)
    await write_soul_file(config.soul.path, soul.text)
    return version


async def approve_pairing(memory: Memory, code: str, actor: str) -> str:
    """Approve a pairing code (for `/approve-pair CODE` and `mirror pair approve CODE`).

    The caller has checked that `actor` may approve (the CLI is trusted). The account is let
    in, the code used up, the approval audited, and the person told on their entrance.
    """
    normalized = normalize_code(code)
    try:
        account = await memory.approve_pairing_code(normalized, actor, welcome=PAIRED_WELCOME)
    except CodeError as exc:
        return f"I can't approve {normalized}: {exc}."
    who = account.display_name or account.external_id
    return f"Approved: {who} ({account.entrance}:{account.external_id}) can talk to me now."


async def pending_pairings(memory: Memory) -> list[PendingPairing]:
    """Unused, unexpired pairing codes (for `mirror pair list`)."""
    return await memory.pending_pairings()


async def list_people(memory: Memory) -> list[Person]:
    """Everyone the persona knows, each with their linked accounts (`mirror people`)."""
    return await memory.people()


async def link_accounts(memory: Memory, first: str, second: str, actor: str) -> str:
    """Link two accounts ("telegram:1", "discord:2") to one person (`mirror link A B`).

    The older person keeps everything; accounts that never wrote yet are created. Raises
    ValueError when an address is not ENTRANCE:ID.
    """
    result = await memory.link_identities(parse_account(first), parse_account(second), actor)
    if result.merged_person is None:
        return f"{first} and {second} already are one person."
    return f"Linked: {', '.join(result.accounts)} are one person now (#{result.kept_person})."


async def unlink_account(memory: Memory, account: str, actor: str) -> str:
    """Give an account a person of its own again (`mirror unlink A`).

    Its private conversations go with it; what it wrote before stays with the person it
    leaves. Raises ValueError when the address is not ENTRANCE:ID.
    """
    entrance, external_id = parse_account(account)
    try:
        unlinked = await memory.unlink_identity(entrance, external_id, actor)
    except CodeError as exc:
        return f"Nothing to unlink: {exc}."
    return f"Unlinked: {entrance}:{external_id} is person #{unlinked.person_id} now."
