"""The gatekeeper end to end on a real memory.db: access, pairing, links, loops, echoes,
rate limits, the daily model budget and admin commands."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest

from bot.accounts import AccountRef
from bot.commands import ONLY_ADMINS, ONLY_COORDINATOR, Commands
from bot.config import Config, CoordinatorConfig, SoulConfig
from bot.gate import ECHO_ACK, RATE_LIMITED, Gatekeeper, Verdict
from bot.guard_config import AccessConfig, GuardConfig, LimitsConfig
from bot.memory import BucketSpec, Memory, Recorded, SentSince, TurnRecord
from bot.models import Author, ConversationKind, Incoming
from bot.people import approve_pairing, link_accounts, list_people, pending_pairings, unlink_account
from bot.soul import parse_soul, sync_soul_file
from bot.speaker import Roster
from tests.pg import sql_rows

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines

COORDINATOR = "telegram:999"
START = 1_800_000_000.0  # a fixed "now" for time travel


def message(
    text: str,
    *,
    person: str = "alice",
    entrance: str = "telegram",
    conversation: str | None = None,
    kind: ConversationKind = "dm",
    bot: bool = False,
    name: str | None = None,
    title: str | None = None,
) -> Incoming:
    return Incoming(
        entrance=entrance,
        conversation_id=conversation or f"dm-{person}",
        conversation_kind=kind,
        conversation_title=title,
        author=Author(external_id=person, display_name=name or person.capitalize(), is_bot=bot),
        text=text,
    )


@pytest.fixture
def clock(memory: Memory) -> list[float]:
    now = [START]
    memory.clock = lambda: now[0]
    return now


@pytest.fixture
def config(soul_file: Path) -> Config:
    return Config(
        coordinator=CoordinatorConfig(address=COORDINATOR), soul=SoulConfig(path=soul_file)
    )


class Gate:
    """One instance's guard and command router, as `Instance` wires them, speaking for
    each message the way `Instance.handle` does (the speaker decided once, from config)."""

    def __init__(self, memory: Memory, config: Config, entrance: str, own: tuple[str, ...]):
        self.roster = Roster(config, [AccountRef.parse(account) for account in own])
        self.instance_id = f"{entrance}-1"
        self.gatekeeper = Gatekeeper(
            memory, config, self.roster, instance_id=self.instance_id, entrance=entrance
        )
        self.commands = Commands(memory, config)

    async def check(
        self, incoming: Incoming, recorded: Recorded, places: Collection[str] = ()
    ) -> Verdict:
        speaker = self.roster.speaker(incoming)
        return await self.gatekeeper.check(
            incoming, speaker, recorded, places=places or incoming.places
        )

    def sent_wanted(self, incoming: Incoming) -> SentSince | None:
        return self.gatekeeper.sent_wanted(incoming, self.roster.speaker(incoming))

    def tokens_wanted(self, incoming: Incoming) -> list[BucketSpec] | None:
        return self.gatekeeper.tokens_wanted(incoming, self.roster.speaker(incoming))

    async def handle_command(self, incoming: Incoming) -> str | None:
        outcome = await self.commands.run_text(self.roster.speaker(incoming), incoming.text)
        return None if outcome is None else outcome.text

    async def warm_up(self) -> int:
        return await self.gatekeeper.warm_up()


@pytest.fixture
def gatekeeper_for(memory: Memory, config: Config) -> Callable[..., Gate]:
    def make(
        entrance: str = "telegram",
        *,
        access: dict[str, object] | None = None,
        guard: dict[str, object] | None = None,
        limits: dict[str, object] | None = None,
        own: tuple[str, ...] = (),
    ) -> Gate:
        configured = config.model_copy(
            update={
                "guard": GuardConfig.model_validate(guard or {}),
                "access": AccessConfig.model_validate(access or {}),
                "limits": LimitsConfig.model_validate(limits or {}),
            }
        )
        return Gate(memory, configured, entrance, own)

    return make


async def turn(
    memory: Memory,
    gatekeeper: Gate,
    incoming: Incoming,
    reply: str | None = "Noted.",
    *,
    early: bool = True,
) -> tuple[Verdict, Recorded]:
    """Record, check, and (when allowed) store a reply as the mind would. `early` False:
    the rate limits' tokens are left to the check's admission (not taken when recorded)."""
    recorded = await memory.record_incoming(
        incoming,
        gatekeeper.instance_id,
        sent=gatekeeper.sent_wanted(incoming),
        take_tokens=gatekeeper.tokens_wanted(incoming) if early else None,
    )
    verdict = await gatekeeper.check(incoming, recorded)
    if verdict.allow and reply is not None:
        await answer(memory, gatekeeper, incoming, recorded, reply)
    return verdict, recorded


async def answer(
    memory: Memory,
    gatekeeper: Gate,
    incoming: Incoming,
    recorded: Recorded,
    text: str,
    *,
    tokens: int = 0,
) -> None:
    await memory.store_turn(
        TurnRecord(
            incoming_id=recorded.message_id,
            conversation_id=recorded.conversation_id,
            entrance=incoming.entrance,
            instance_id=gatekeeper.instance_id,
            person_id=recorded.person_id,
            visibility=incoming.visibility,
            reply_text=text,
            soul_version=None,
            model="openai/x" if tokens else None,
            prompt_tokens=tokens,
        )
    )


def rows(memory: Memory, sql: str, *params: object) -> list[tuple[object, ...]]:
    return sql_rows(memory.path, sql, *params)


def guard_outbox(memory: Memory) -> list[tuple[object, ...]]:
    return rows(memory, "SELECT entrance, target, text FROM outbox WHERE dedupe_key LIKE 'guard:%'")


async def status(memory: Memory, recorded: Recorded) -> str | None:
    return await memory.incoming_status(recorded.message_id)


# Basics ---------------------------------------------------------------------------------


async def test_open_by_default_and_unknown_commands_go_to_the_model(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for()
    verdict, _ = await turn(memory, gatekeeper, message("Hello, who are you?"))
    assert verdict == Verdict(allow=True)
    unknown = message("/frobnicate now")
    assert await gatekeeper.handle_command(unknown) is None
    assert (await turn(memory, gatekeeper, unknown))[0].allow


async def test_empty_messages_are_refused_quietly_and_recorded(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    verdict, recorded = await turn(memory, gatekeeper_for(), message("  \n\u200b "))
    assert verdict == Verdict(False, "refused", "empty")
    assert await status(memory, recorded) == "refused"
    [entry] = await memory.audit_log("guard.refused")
    assert entry.detail["reason"] == "empty" and entry.actor == "telegram:alice"


async def test_never_answers_its_own_accounts_or_mail_address(
    memory: Memory, clock: list[float], config: Config, gatekeeper_for: Callable[..., Gate]
) -> None:
    # The email entrance registers its own address, as the Telegram one its bot id.
    gatekeeper = gatekeeper_for(own=("telegram:4242", "email:Wren@Example.org"))
    verdict, recorded = await turn(memory, gatekeeper, message("hi me", person="4242", bot=True))
    assert verdict.status == "echo" and verdict.reply is None
    assert await status(memory, recorded) == "echo"
    mail = message("Auto-reply: out of office", person="wren@example.org", entrance="email")
    assert (await turn(memory, gatekeeper, mail))[0].status == "echo"
    gatekeeper.roster.add_own(AccountRef.of("discord", "77"))
    assert gatekeeper.roster.roles(AccountRef.of("discord", "77")) == {"own"}


# Echo ------------------------------------------------------------------------------------------

SAID_ON_TELEGRAM = "I'll bring the blue notebook to Thursday's meeting at the library, promise."


async def test_persona_telegram_text_echoed_into_discord_is_not_answered(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    telegram = gatekeeper_for("telegram")
    await turn(memory, telegram, message("Will you bring the notebook?"), SAID_ON_TELEGRAM)

    discord = gatekeeper_for("discord", access={"discord": {"bots": ["relay"]}})
    # A bridge bot relays it into a Discord channel: an echo, silently.
    relayed = message(
        f"[telegram] Wren: {SAID_ON_TELEGRAM}",
        person="relay",
        entrance="discord",
        conversation="chan-1",
        kind="group",
        bot=True,
    )
    verdict, recorded = await turn(memory, discord, relayed)
    assert verdict == Verdict(False, "echo", "text I sent elsewhere")
    assert await status(memory, recorded) == "echo"

    # A person forwards it in a DM: acknowledged once, then silence.
    forward = message(f"Fwd: {SAID_ON_TELEGRAM.upper()}", person="bob", entrance="discord")
    first, _ = await turn(memory, discord, forward)
    assert first.status == "echo" and first.reply == ECHO_ACK
    again, recorded = await turn(
        memory, discord, message(f"> {SAID_ON_TELEGRAM}", person="bob", entrance="discord")
    )
    assert again.status == "echo" and again.reply is None
    assert await status(memory, recorded) == "echo"
    [audit, *_] = await memory.audit_log("guard.echo")
    assert audit.detail["said"] == SAID_ON_TELEGRAM

    # Quoting it back in the same conversation is just conversation, not an echo.
    quoted = message(f"You said: {SAID_ON_TELEGRAM} Which library?")
    assert (await turn(memory, telegram, quoted))[0].allow


async def test_what_was_sent_comes_with_the_recording_or_the_check_reads_it(
    memory: Memory,
    clock: list[float],
    gatekeeper_for: Callable[..., Gate],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check compares a message with what the persona sent lately. Asked for when the
    message is recorded (as the mind records it), those come in the recording's transaction
    and the check reads nothing itself; recorded without them, the check reads them. The
    echo is found either way; a text too short to be an echo asks for nothing."""
    telegram = gatekeeper_for("telegram")
    await turn(memory, telegram, message("Will you bring the notebook?"), SAID_ON_TELEGRAM)
    guard_reads = []
    read_facts = memory.guard_facts

    async def counted(request: Any) -> Any:
        guard_reads.append(request)
        return await read_facts(request)

    monkeypatch.setattr(memory, "guard_facts", counted)

    discord = gatekeeper_for("discord")
    echoed = message(SAID_ON_TELEGRAM, person="bob", entrance="discord")
    recorded = await memory.record_incoming(
        echoed, discord.instance_id, sent=discord.sent_wanted(echoed)
    )
    assert [sent.text for sent in recorded.sent or []] == [SAID_ON_TELEGRAM]
    assert (await discord.check(echoed, recorded)).status == "echo"
    assert guard_reads == []

    unasked = gatekeeper_for("discord")
    again = message(SAID_ON_TELEGRAM, person="cy", entrance="discord")
    recorded = await memory.record_incoming(again, unasked.instance_id)
    assert recorded.sent is None
    assert (await unasked.check(again, recorded)).status == "echo"
    assert len(guard_reads) == 1

    assert discord.sent_wanted(message("ok, see you", person="bob", entrance="discord")) is None


async def test_old_text_is_no_echo_after_the_window(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    telegram = gatekeeper_for("telegram")
    await turn(memory, telegram, message("Will you bring the notebook?"), SAID_ON_TELEGRAM)
    clock[0] += 86400 + 60
    discord = gatekeeper_for("discord")
    verdict, _ = await turn(memory, discord, message(SAID_ON_TELEGRAM, entrance="discord"))
    assert verdict.allow


# Bots and loops ------------------------------------------------------------------------------


def bot_says(text: str, bot: str = "helper") -> Incoming:
    return message(
        text,
        person=bot,
        entrance="discord",
        conversation="chan-bots",
        kind="group",
        bot=True,
        title="#bots",
    )


def person_among_bots() -> Incoming:
    return message(
        "Bots, please behave.",
        person="dana",
        entrance="discord",
        conversation="chan-bots",
        kind="group",
    )


async def test_bots_are_ignored_unless_allowlisted(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for("discord", access={"discord": {"bots": ["helper"]}})
    stranger, recorded = await turn(memory, gatekeeper, bot_says("Hello there, Wren", "other"))
    assert stranger == Verdict(False, "refused", "a bot not on the allowlist")
    assert await status(memory, recorded) == "refused"
    assert (await turn(memory, gatekeeper, bot_says("Hello there, Wren")))[0].allow


async def test_bot_exchange_budget_stops_at_8_and_tells_the_coordinator_once(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for("discord", access={"discord": {"bots": ["helper"]}})
    verdicts = []
    for n in range(12):
        clock[0] += 2
        verdict, _ = await turn(
            memory, gatekeeper, bot_says(f"Question {n}: what is {n} squared?"), f"It is {n * n}."
        )
        verdicts.append(verdict)
    assert [v.allow for v in verdicts] == [True] * 8 + [False] * 4
    stop = verdicts[8]
    assert stop.reason == "bot budget: 8 bot exchanges in a row"
    assert stop.notify_coordinator and "#bots" in stop.notify_coordinator
    assert all(v.notify_coordinator is None and v.reply is None for v in verdicts[9:])
    [(entrance, target, text)] = guard_outbox(memory)
    assert (entrance, target, text) == ("telegram", "999", stop.notify_coordinator)
    refusals = [e for e in await memory.audit_log("guard.refused") if "bot budget" in str(e.detail)]
    assert len(refusals) == 4

    # A person speaking there starts a fresh exchange.
    assert (await turn(memory, gatekeeper, person_among_bots()))[0].allow
    assert (await turn(memory, gatekeeper, bot_says("Question 99: and now?")))[0].allow


async def test_slow_loop_is_stopped_by_the_hourly_budget(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for("discord", access={"discord": {"bots": ["helper"]}})
    allowed, notices = 0, []
    for minute in range(90):  # one exchange a minute; a person chimes in every 5 minutes
        clock[0] += 60
        if minute % 5 == 4:
            chat = message(
                f"still here ({minute})",
                person="dana",
                entrance="discord",
                conversation="chan-bots",
                kind="group",
            )
            await turn(memory, gatekeeper, chat)
            continue
        verdict, _ = await turn(memory, gatekeeper, bot_says(f"Status report number {minute}"))
        allowed += verdict.allow
        if verdict.notify_coordinator:
            notices.append(verdict.notify_coordinator)
    assert allowed == 20
    assert len(notices) == 1 and "20 bot exchanges within an hour" in notices[0]
    assert len(guard_outbox(memory)) == 1


async def test_a_spent_stop_lifts_after_the_bots_are_quiet(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for(
        "discord",
        access={"discord": {"bots": ["helper"]}},
        guard={"bot_exchanges_per_conversation": 2, "bot_cooldown_s": 600},
    )
    for n in range(3):
        clock[0] += 1
        await turn(memory, gatekeeper, bot_says(f"Ping number {n} with content"))
    clock[0] += 300
    assert not (await turn(memory, gatekeeper, bot_says("Ping again with content")))[0].allow
    clock[0] += 601
    assert (await turn(memory, gatekeeper, bot_says("Ping after a break")))[0].allow


async def test_bare_acknowledgements_and_repeats_end_a_bot_exchange(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for("discord", access={"discord": {"bots": ["helper"]}})
    assert (await turn(memory, gatekeeper, bot_says("Here is the report you asked for")))[0].allow
    assert (await turn(memory, gatekeeper, bot_says("ack")))[0].allow
    ended, recorded = await turn(memory, gatekeeper, bot_says("Understood, I'll wait"))
    assert (ended.allow, ended.reason) == (False, "bot loop: bare acknowledgements")
    assert await status(memory, recorded) == "refused"
    # The coordinator hears of the loop once (an hour, per conversation), not per message.
    assert ended.notify_coordinator is not None and "loop" in ended.notify_coordinator
    again, _ = await turn(memory, gatekeeper, bot_says("ok"))
    assert not again.allow and again.notify_coordinator is None
    assert len(guard_outbox(memory)) == 1

    other = gatekeeper_for("discord", access={"discord": {"bots": ["echoer"]}})
    texts = ["Please confirm receipt of the file.", "please confirm receipt of the file!"] * 2
    verdicts = [(await turn(memory, other, bot_says(text, "echoer")))[0] for text in texts[:3]]
    assert [v.allow for v in verdicts] == [True, True, False]
    assert verdicts[2].reason == "bot loop: repeating itself"


# Rate limits and the daily model budget ---------------------------------------------------------


@pytest.mark.parametrize("early", [True, False], ids=["taken-when-recorded", "taken-by-check"])
async def test_rate_limit_replies_once_then_stays_silent(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate], early: bool
) -> None:
    gatekeeper = gatekeeper_for(limits={"person_per_minute": 6, "person_burst": 3})

    async def ask(text: str, person: str = "alice") -> tuple[Verdict, Recorded]:
        return await turn(memory, gatekeeper, message(text, person=person), early=early)

    results = [await ask(f"question {n}") for n in range(5)]
    assert [v.allow for v, _ in results] == [True, True, True, False, False]
    assert results[3][0].reply == RATE_LIMITED and results[4][0].reply is None
    assert await status(memory, results[4][1]) == "refused"
    clock[0] += 10  # one token back (6 a minute)
    assert (await ask("question 6"))[0].allow
    limited, _ = await ask("question 7")
    assert limited.reply == RATE_LIMITED  # a new episode gets one reply again
    # The coordinator is never rate-limited.
    for n in range(5):
        assert (await ask(f"cmd {n}", person="999"))[0].allow


@pytest.mark.parametrize("early", [True, False], ids=["taken-when-recorded", "taken-by-check"])
async def test_entrance_rate_limit_is_shared_by_everyone_on_it(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate], early: bool
) -> None:
    gatekeeper = gatekeeper_for(limits={"entrance_per_minute": 1, "entrance_burst": 2})
    people = ["ann", "ben", "cat"]
    verdicts = [
        (await turn(memory, gatekeeper, message("hi there", person=p), early=early))[0]
        for p in people
    ]
    assert [v.allow for v in verdicts] == [True, True, False]


async def test_tokens_taken_when_recorded_are_the_admission_and_an_echo_gives_them_back(
    memory: Memory,
    clock: list[float],
    gatekeeper_for: Callable[..., Gate],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the mind records a person's message, its rate limits' tokens are taken in the
    same transaction: the check then writes no admission of its own. An echo refused
    afterwards gives its tokens back; a redelivered message takes none again; a bot, or a
    person where a bot exchange runs, is admitted by the check as before."""
    # The clock stands still: no bucket refills during the test.
    limits = {"person_per_minute": 1, "person_burst": 2, "entrance_per_minute": 1}
    telegram = gatekeeper_for(limits={**limits, "entrance_burst": 100})
    await turn(memory, telegram, message("Will you bring the notebook?"), SAID_ON_TELEGRAM)
    admissions: list[Any] = []
    admit = memory.admit

    async def counted(request: Any) -> Any:
        admissions.append(request)
        return await admit(request)

    monkeypatch.setattr(memory, "admit", counted)

    def tokens(key: str) -> float:
        [(left,)] = rows(memory, "SELECT tokens FROM rate_buckets WHERE key = ?", key)
        assert isinstance(left, float)
        return left

    verdict, recorded = await turn(memory, telegram, message("and the pens?", person="bob"))
    assert verdict.allow and recorded.admission is not None and admissions == []
    bob = f"person:{recorded.person_id}"
    assert tokens(bob) == pytest.approx(1.0, abs=0.01)

    forwarded = message(f"Fwd: {SAID_ON_TELEGRAM}", person="bob")
    echo, _ = await turn(memory, telegram, forwarded)
    assert echo.status == "echo" and tokens(bob) == pytest.approx(1.0, abs=0.01)

    again = message("and the pens?", person="bob").model_copy(update={"platform_message_id": "p-1"})
    first, _ = await turn(memory, telegram, again)
    assert first.allow and tokens(bob) == pytest.approx(0.0, abs=0.01)
    redelivered = await memory.record_incoming(
        again, telegram.instance_id, take_tokens=telegram.tokens_wanted(again)
    )
    assert not redelivered.created and redelivered.admission is None
    assert tokens(bob) == pytest.approx(0.0, abs=0.01) and admissions == []

    discord = gatekeeper_for("discord", access={"discord": {"bots": ["helper"]}})
    assert discord.tokens_wanted(bot_says("Question 1: what is 1 squared?")) is None
    await turn(memory, discord, bot_says("Question 1: what is 1 squared?"), "It is 1.")
    assert len(admissions) == 1  # the bot's
    verdict, recorded = await turn(memory, discord, person_among_bots())
    assert verdict.allow and recorded.admission is None and len(admissions) == 2
    assert rows(memory, "SELECT count(*) FROM bot_streaks") == [(0,)]  # the exchange is over


async def test_daily_model_budget_switches_to_the_offline_brain_and_tells_once(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for(limits={"daily_tokens": 1000})
    first, recorded = await turn(memory, gatekeeper, message("Write me a long poem"), None)
    assert first == Verdict(allow=True)
    await answer(memory, gatekeeper, message("x"), recorded, "A poem...", tokens=1200)

    over, _ = await turn(memory, gatekeeper, message("Another one"))
    assert over.allow and over.use_offline and over.notify_coordinator
    assert "model budget" in over.notify_coordinator
    again, _ = await turn(memory, gatekeeper, message("And another"))
    assert again.use_offline and again.notify_coordinator is None
    # Another process (another gatekeeper) does not tell the coordinator a second time.
    other = gatekeeper_for("discord", limits={"daily_tokens": 1000})
    elsewhere, _ = await turn(memory, other, message("Hi", entrance="discord"))
    assert elsewhere.use_offline and elsewhere.notify_coordinator is None
    assert len(guard_outbox(memory)) == 1
    assert len(await memory.audit_log("guard.budget_spent")) == 1
    clock[0] += 86400  # a new UTC day
    assert (await turn(memory, gatekeeper, message("Good morning")))[0] == Verdict(allow=True)


# Access policies -------------------------------------------------------------------------------


async def test_allowlist_and_groups(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for(
        access={"telegram": {"policy": "allowlist", "allow": ["alice"], "groups": ["-100"]}}
    )
    assert (await turn(memory, gatekeeper, message("hi")))[0].allow
    stranger, _ = await turn(memory, gatekeeper, message("hi", person="mallory"))
    assert stranger == Verdict(False, "refused", "not on the allowlist")
    assert (await turn(memory, gatekeeper, message("hi", person="999")))[0].allow  # coordinator
    in_group = message("hi all", conversation="-100", kind="group")
    assert (await turn(memory, gatekeeper, in_group))[0].allow
    elsewhere = message("hi all", conversation="-200", kind="group")
    assert (await turn(memory, gatekeeper, elsewhere))[0].reason == "a group I am not set up for"
    recorded = await memory.record_incoming(
        message("in a guild", conversation="-300", kind="group"), "t"
    )
    guild = await gatekeeper.check(
        message("in a guild", conversation="-300", kind="group"), recorded, places={"-100"}
    )
    assert guild.allow


async def test_pairing_flow(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for(
        access={"admins": ["discord:boss"], "telegram": {"policy": "pairing"}}
    )
    first, recorded = await turn(memory, gatekeeper, message("Hi, I'm Zoe", person="zoe"))
    assert not first.allow and first.reply and "valid for 60 minutes" in first.reply
    assert await status(memory, recorded) == "refused"
    [pending] = await pending_pairings(memory)
    assert pending.account == "telegram:zoe" and pending.code in first.reply
    # Repeating herself mints no new code: she is reminded once that it waits, then silence.
    second, _ = await turn(memory, gatekeeper, message("Hello??", person="zoe"))
    assert not second.allow and second.reply and pending.code in second.reply
    third, _ = await turn(memory, gatekeeper, message("Anyone?", person="zoe"))
    assert not third.allow and third.reply is None
    assert len(await pending_pairings(memory)) == 1

    # Only the coordinator or an admin may approve; anyone else is refused and audited.
    mallory = message(f"/approve-pair {pending.code}", person="mallory")
    assert await gatekeeper.handle_command(mallory) == ONLY_ADMINS
    assert (await memory.audit_log("admin.refused"))[0].actor == "telegram:mallory"
    boss = message(f"/approve-pair {pending.code.lower()}", person="boss", entrance="discord")
    approved = await gatekeeper.handle_command(boss)
    assert approved == "Approved: Zoe (telegram:zoe) can talk to me now."
    [(entrance, target, text)] = rows(
        memory, "SELECT entrance, target, text FROM outbox WHERE dedupe_key LIKE 'paired:%'"
    )
    assert (entrance, target) == ("telegram", "dm-zoe") and "You're in" in text
    assert (await turn(memory, gatekeeper, message("Thanks!", person="zoe")))[0].allow
    # A code works once.
    again = (await approve_pairing(memory, pending.code, "cli")).text
    assert again == f"I can't approve {pending.code}: that code was already used."
    assert (await memory.audit_log("access.paired"))[0].actor == "discord:boss"


async def test_pairing_codes_expire_and_are_rate_limited(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for(
        access={"telegram": {"policy": "pairing"}, "pairing_codes_per_day": 2}
    )
    await turn(memory, gatekeeper, message("hello", person="yan"))
    [pending] = await pending_pairings(memory)
    clock[0] += 3601
    assert await pending_pairings(memory) == []
    expired = await approve_pairing(memory, pending.code, "cli")
    assert not expired.ok and expired.text.endswith("that code has expired.")
    second, _ = await turn(memory, gatekeeper, message("hello again", person="yan"))
    assert second.reply is not None and pending.code not in second.reply
    clock[0] += 3601
    third, recorded = await turn(memory, gatekeeper, message("hello once more", person="yan"))
    assert third.reply is None and await status(memory, recorded) == "refused"  # 2 a day
    unknown = (await approve_pairing(memory, "ZZZZ-ZZZZ", "cli")).text
    assert unknown == "I can't approve ZZZZ-ZZZZ: there is no such code."
    # In a group nobody gets a code.
    group = message("hi all", person="xi", conversation="-5", kind="group")
    grouped, _ = await turn(memory, gatekeeper, group)
    assert grouped.reply is None and grouped.reason == "unknown account (pairing)"


# Identity links -------------------------------------------------------------------------------


async def test_link_flow_joins_two_accounts_within_ten_minutes(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    telegram, discord = gatekeeper_for("telegram"), gatekeeper_for("discord")
    _, on_telegram = await turn(memory, telegram, message("I like tea", person="t-ann"))
    _, on_discord = await turn(memory, discord, message("hey", person="d-ann", entrance="discord"))
    assert on_telegram.person_id != on_discord.person_id

    reply = await telegram.handle_command(message("/link", person="t-ann"))
    assert reply is not None and "/link " in reply
    code = reply.split("/link ", 1)[1].split()[0]
    assert await telegram.handle_command(message("/link", person="t-ann")) == reply  # same code
    assert (await telegram.handle_command(message(f"/link {code}", person="t-ann"))).startswith(
        "I can't link with that code: say it on your other account"
    )
    clock[0] += 9 * 60
    linked = await discord.handle_command(
        message(f"/link {code}", person="d-ann", entrance="discord")
    )
    assert linked == "Linked: I now know telegram:t-ann, discord:d-ann as one person."

    [person] = [p for p in await list_people(memory) if "telegram:t-ann" in p.identities]
    assert person.identities == ["telegram:t-ann", "discord:d-ann"]
    assert person.id == on_telegram.person_id  # the older person keeps everything
    assert rows(
        memory,
        "SELECT DISTINCT person_id FROM messages WHERE direction = 'in' AND identity_id IN (?, ?)",
        on_telegram.identity_id,
        on_discord.identity_id,
    ) == [(person.id,)]
    notice = rows(
        memory, "SELECT entrance, target, text FROM outbox WHERE dedupe_key LIKE 'linked:%'"
    )
    assert notice[0][:2] == ("telegram", "dm-t-ann") and "discord:d-ann" in str(notice[0][2])
    [entry] = await memory.audit_log("identity.linked")
    assert entry.actor == "discord:d-ann" and entry.detail["merged_person"] == on_discord.person_id
    # The code is used up.
    reused = await discord.handle_command(
        message(f"/link {code}", person="d-bob", entrance="discord")
    )
    assert reused == "I can't link with that code: that code was already used."


async def test_link_codes_expire_after_ten_minutes_and_stay_private(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    telegram, discord = gatekeeper_for("telegram"), gatekeeper_for("discord")
    reply = await telegram.handle_command(message("/link", person="t-ann"))
    assert reply is not None
    code = reply.split("/link ", 1)[1].split()[0]
    clock[0] += 10 * 60 + 1
    late = await discord.handle_command(
        message(f"/link {code}", person="d-ann", entrance="discord")
    )
    assert late == "I can't link with that code: that code has expired."
    assert len(await list_people(memory)) == 2
    group = message("/link", person="t-ann", conversation="-1", kind="group")
    assert "private chat" in (await telegram.handle_command(group) or "")
    # Guessing codes is rate-limited.
    replies = [
        await discord.handle_command(
            message(f"/link AAAA-AAA{n}", person="d-eve", entrance="discord")
        )
        for n in range(12)
    ]
    assert replies[-1] == "Too many code attempts; try again later."
    # Someone the persona does not talk with cannot start a link.
    closed = gatekeeper_for(access={"telegram": {"policy": "allowlist"}})
    assert await closed.handle_command(message("/link", person="nobody")) == (
        "I can only link accounts I already talk with."
    )


async def test_cli_link_and_unlink(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    telegram, discord = gatekeeper_for("telegram"), gatekeeper_for("discord")
    _, first = await turn(memory, telegram, message("secret plan", person="1"))
    _, second = await turn(memory, discord, message("hello", person="2", entrance="discord"))
    assert (await link_accounts(memory, "telegram:1", "discord:2", "cli")).text == (
        f"Linked: telegram:1, discord:2 are one person now (#{first.person_id})."
    )
    assert (await link_accounts(memory, "telegram:1", "discord:2", "cli")).text == (
        "telegram:1 and discord:2 already are one person."
    )
    message_person = "SELECT person_id FROM messages WHERE id = ?"
    assert rows(memory, message_person, second.message_id) == [(first.person_id,)]

    result = (await unlink_account(memory, "discord:2", "cli")).text
    [alone] = [p for p in await list_people(memory) if p.identities == ["discord:2"]]
    assert result == f"Unlinked: discord:2 is person #{alone.id} now."
    # Old messages stay with the person it left; new ones are its own.
    assert rows(memory, message_person, second.message_id) == [(first.person_id,)]
    _, later = await turn(memory, discord, message("me again", person="2", entrance="discord"))
    assert later.person_id == alone.id
    assert rows(
        memory, "SELECT person_id FROM conversations WHERE id = ?", later.conversation_id
    ) == [(alone.id,)]
    assert (await unlink_account(memory, "discord:2", "cli")).text == (
        "Nothing to unlink: discord:2 is not linked to another account."
    )
    assert {e.action for e in await memory.audit_log()} >= {"identity.linked", "identity.unlinked"}
    with pytest.raises(ValueError):
        await link_accounts(memory, "nonsense", "discord:2", "cli")


async def test_linked_accounts_share_a_pairing_approval(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    access = {"telegram": {"policy": "pairing"}, "discord": {"policy": "pairing"}}
    telegram = gatekeeper_for("telegram", access=access)
    discord = gatekeeper_for("discord", access=access)
    await turn(memory, telegram, message("hi", person="t-zoe"))
    [pending] = await pending_pairings(memory)
    await approve_pairing(memory, pending.code, "cli")
    reply = await telegram.handle_command(message("/link", person="t-zoe"))
    assert reply is not None
    code = reply.split("/link ", 1)[1].split()[0]
    stranger, _ = await turn(memory, discord, message("hi", person="d-zoe", entrance="discord"))
    assert not stranger.allow
    await discord.handle_command(message(f"/link {code}", person="d-zoe", entrance="discord"))
    assert (await turn(memory, discord, message("hi again", person="d-zoe", entrance="discord")))[
        0
    ].allow


# Admin commands --------------------------------------------------------------------------------


async def test_non_admin_soul_rollback_is_refused_and_audited(
    memory: Memory,
    clock: list[float],
    config: Config,
    soul_file: Path,
    gatekeeper_for: Callable[..., Gate],
) -> None:
    first = await sync_soul_file(memory, soul_file)
    assert first is not None
    soul_file.write_text(first.text.replace("Wren", "Robin", 1), encoding="utf-8")
    second = await sync_soul_file(memory, soul_file)
    assert second is not None and second.name == "Robin"
    gatekeeper = gatekeeper_for(access={"admins": ["telegram:root"]})

    refused = await gatekeeper.handle_command(message(f"/soul rollback {first.id}", person="eve"))
    assert refused == ONLY_ADMINS
    [entry] = await memory.audit_log("admin.refused")
    assert entry.actor == "telegram:eve" and entry.subject == f"/soul rollback {first.id}"
    assert (await memory.active_soul()).id == second.id  # type: ignore[union-attr]

    done = await gatekeeper.handle_command(message(f"/soul rollback {first.id}", person="root"))
    assert done is not None and done.startswith("Soul version 3 is active (Wren")
    assert parse_soul(soul_file.read_bytes()).name == "Wren"
    [rollback] = await memory.audit_log("soul.rollback")
    assert rollback.actor == "telegram:root" and rollback.detail["to_version"] == first.id

    shown = await gatekeeper.handle_command(message("/soul show", person="root"))
    assert shown is not None and shown.startswith("Soul v3 · Wren")
    history = await gatekeeper.handle_command(message("/soul history", person="999"))
    assert history is not None and history.splitlines()[0].startswith("v3 ")
    assert "Usage" in (
        await gatekeeper.handle_command(message("/soul rollback", person="root")) or ""
    )
    assert "no soul version 77" in (
        await gatekeeper.handle_command(message("/soul rollback 77", person="root")) or ""
    )
    assert "Usage" in (await gatekeeper.handle_command(message("/soul", person="root")) or "")


async def test_admins_may_list_pending_items_but_only_the_coordinator_decides(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for(access={"admins": ["telegram:root"]})
    assert await gatekeeper.handle_command(message("/pending", person="root")) == (
        "Nothing is waiting for you."
    )
    group = message("/pending", person="root", conversation="-1", kind="group")
    assert "private chat" in (await gatekeeper.handle_command(group) or "")
    resolve = message("/resolve 1 A", person="root")
    assert await gatekeeper.handle_command(resolve) == ONLY_COORDINATOR
    assert await gatekeeper.handle_command(message("/pending", person="eve")) == ONLY_ADMINS
    assert await gatekeeper.handle_command(message("/pending", person="999")) == (
        "Nothing is waiting for you."
    )


async def test_mail_addresses_match_the_allowlist_in_any_case(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    gatekeeper = gatekeeper_for(
        "email", access={"email": {"policy": "allowlist", "allow": ["Ann@Example.org"]}}
    )
    ann = message("Dear Wren, a question.", person="ann@example.org", entrance="email")
    assert (await turn(memory, gatekeeper, ann))[0].allow
    eve = message("Dear Wren, a question.", person="eve@example.org", entrance="email")
    assert not (await turn(memory, gatekeeper, eve))[0].allow


async def test_warm_up_loads_the_echo_index_before_the_first_turn(
    memory: Memory, clock: list[float], gatekeeper_for: Callable[..., Gate]
) -> None:
    telegram = gatekeeper_for("telegram")
    await turn(memory, telegram, message("Will you bring the notebook?"), SAID_ON_TELEGRAM)
    discord = gatekeeper_for("discord")
    assert await discord.warm_up() == 1
    assert await discord.warm_up() == 1  # nothing new, nothing twice
    verdict, _ = await turn(memory, discord, message(SAID_ON_TELEGRAM, entrance="discord"))
    assert verdict.status == "echo"
