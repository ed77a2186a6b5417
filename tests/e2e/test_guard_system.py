"""The guard end to end: real `mirror run telegram` and `mirror run discord` processes on one
memory.db, against the fake Telegram Bot API and the fake Discord (REST + gateway).

One set of fakes and processes serves the whole module (each test uses its own users,
chats and channels); the rate-limit test runs two `mirror chat` processes on a memory.db of
its own. The persona runs on its offline brain. Tests read memory.db directly (read-only
queries) to check statuses, audit entries and the outbox.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.commands import ONLY_ADMINS
from bot.gate import ECHO_ACK, RATE_LIMITED
from bot.guard import normalize_for_echo
from bot.people import PAIRED_WELCOME
from tests.conftest import SOUL_EXAMPLE, run_mirror
from tests.fakes.discord_api import DEFAULT_TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeTelegram
from tests.processes import ChatProcess, MirrorProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

TELEGRAM_TOKEN = "123:TEST"
TURN_S = 30.0

# Telegram accounts (a private chat's id is the user's id).
COORDINATOR = 4242
ADMIN = 4343
TG_ALICE, TG_BEA, TG_EVE = 1001, 1002, 1003  # on the allowlist
TG_ZOE, TG_YAN = 1004, 1005  # strangers: pairing

# Discord.
GUILD = 200_000_000_000_000_001
LOOP_CHANNEL, SLOW_CHANNEL, ECHO_CHANNEL = (
    300_000_000_000_000_001,
    300_000_000_000_000_002,
    300_000_000_000_000_003,
)
LOOP_BOT, SLOW_BOT = 500_000_000_000_000_001, 500_000_000_000_000_002
STRANGER_BOT = 500_000_000_000_000_009  # not on the allowlist
DC_DANA, DC_BEA = 400_000_000_000_000_003, 400_000_000_000_000_004

# [guard] budgets, small so that loops end fast: a streak of 3, 4 an hour, and a streak is
# broken by 1.5 s of bot silence (a turn on the offline brain takes milliseconds).
STREAK_BUDGET, HOURLY_BUDGET, STREAK_GAP_S = 3, 4, 1.5

CODE = re.compile(r"\b[A-Z2-9]{4}-[A-Z2-9]{4}\b")

# Bot messages all different, so the near-duplicate rule does not end the exchange first.
BOT_LINES = [
    "Which river is the longest in Europe?",
    "How many moons does Jupiter have these days?",
    "Tell me the boiling point of water on a mountain.",
    "Who painted the ceiling of the Sistine Chapel?",
    "What colour is a ripe persimmon?",
    "Name a prime number larger than ninety.",
    "Where do arctic terns spend the winter?",
    "Why is the sky blue in the afternoon?",
]


# Reading memory.db ------------------------------------------------------------------------


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@dataclass
class System:
    db: Path
    config: Path
    soul: Path
    telegram: FakeTelegram
    discord: FakeDiscord
    processes: list[MirrorProcess] = field(default_factory=list)

    # Memory ---------------------------------------------------------------------------

    def incoming(self, entrance: str, platform_id: object) -> tuple[int, str] | None:
        """(id in memory, status) of an incoming message, by its platform id."""
        found = query(
            self.db,
            "SELECT id, status FROM messages WHERE direction = 'in' AND entrance = ? "
            "AND platform_message_id = ?",
            entrance,
            str(platform_id),
        )
        return (int(found[0][0]), str(found[0][1])) if found else None

    async def handled(self, entrance: str, platform_id: object) -> tuple[int, str]:
        """Wait until the incoming message is answered, refused or recognised as an echo;
        (its id in memory, its status)."""

        def done() -> tuple[int, str] | None:
            row = self.incoming(entrance, platform_id)
            return row if row and row[1] in ("answered", "unanswered", "refused", "echo") else None

        what = f"{entrance} message {platform_id} handled"
        return await wait_until(
            done, TURN_S, lambda: f"{what} (now {self.incoming(entrance, platform_id)})"
        )

    def refusal(self, message_id: int, action: str = "guard.refused") -> dict[str, Any]:
        """The audit entry saying why message `message_id` was not answered."""
        [(_, _, detail)] = [entry for entry in self.audit(action) if entry[1] == str(message_id)]
        return detail

    def audit(self, action: str) -> list[tuple[str, str | None, dict[str, Any]]]:
        return self.audit_of(self.db, action)

    @staticmethod
    def audit_of(db: Path, action: str) -> list[tuple[str, str | None, dict[str, Any]]]:
        """(actor, subject, detail) of each audit entry for `action`, oldest first."""
        return [
            (actor, subject, json.loads(detail) if detail else {})
            for actor, subject, detail in query(
                db,
                "SELECT actor, subject, detail FROM audit WHERE action = ? ORDER BY id",
                action,
            )
        ]

    async def outbox_delivered(self) -> None:
        """Wait until no outbox row is left to deliver (so a second notice would show)."""
        await wait_until(
            lambda: (
                not query(self.db, "SELECT id FROM outbox WHERE status IN ('pending', 'sending')")
            ),
            TURN_S,
            "every outbox row delivered",
        )

    # Telegram -------------------------------------------------------------------------

    def telegram_push(self, text: str, *, user: int, name: str = "Someone") -> str:
        update = self.telegram.push_message(user, text, user_id=user, first_name=name)
        return f"{user}:{update['message']['message_id']}"

    async def telegram_asks(
        self, text: str, *, user: int, name: str = "Someone"
    ) -> tuple[str, str]:
        """A private message to the persona on Telegram: (its platform id, the answer)."""
        since = len(self.telegram.sent)
        platform_id = self.telegram_push(text, user=user, name=name)
        [reply] = await self.telegram.wait_for_sent(
            lambda sent: sent["chat_id"] == user, since=since, timeout=TURN_S
        )
        return platform_id, str(reply["text"])

    async def telegram_says(self, text: str, *, user: int, name: str = "Someone") -> str:
        return (await self.telegram_asks(text, user=user, name=name))[1]

    def telegram_to(self, chat: int, since: int = 0) -> list[str]:
        return [str(s["text"]) for s in self.telegram.sent[since:] if s["chat_id"] == chat]

    # Discord --------------------------------------------------------------------------

    async def discord_push(self, channel: int, text: str, *, author: int, bot: bool = False) -> int:
        message = await self.discord.push_message(channel, text, author_id=author, author_bot=bot)
        return int(message["id"])

    async def discord_reply_to(self, message_id: int, since: int = 0) -> str:
        [reply] = await self.discord.wait_for_sent(
            lambda sent: (sent["message_reference"] or {}).get("message_id") == message_id,
            since=since,
            timeout=TURN_S,
        )
        return str(reply["content"])

    def discord_replies_to(self, message_id: int) -> list[str]:
        return [
            str(s["content"])
            for s in self.discord.sent
            if (s["message_reference"] or {}).get("message_id") == message_id
        ]

    async def discord_says(self, channel: int, text: str, *, author: int) -> str:
        since = len(self.discord.sent)
        message_id = await self.discord_push(channel, text, author=author)
        return await self.discord_reply_to(message_id, since)

    async def mirror(self, *args: str) -> str:
        """Run a `mirror` command on this system's config (off the event loop)."""
        result = await asyncio.to_thread(run_mirror, *args, "--config", str(self.config))
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


def system_config(root: Path, telegram: FakeTelegram, discord: FakeDiscord) -> str:
    soul = root / "soul" / "SOUL.md"
    return (
        f'[memory]\npath = "{root / "memory.db"}"\n\n'
        f'[soul]\npath = "{soul}"\n\n'
        "[persona]\ninstance_dead_after_s = 3\n\n"
        f'[coordinator]\naddress = "telegram:{COORDINATOR}"\n\n'
        "[entrances.telegram]\nenabled = true\n"
        f'base_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n\n'
        "[entrances.discord]\nenabled = true\n"
        f'api_base = "{discord.api_base}"\ngateway_url = "{discord.gateway_url}"\n'
        f'channels = ["{LOOP_CHANNEL}", "{SLOW_CHANNEL}", "{ECHO_CHANNEL}"]\n\n'
        f'[access]\nadmins = ["telegram:{ADMIN}"]\n\n'
        '[access.telegram]\npolicy = "pairing"\n'
        f'allow = ["{TG_ALICE}", "{TG_BEA}", "{TG_EVE}"]\n\n'
        f'[access.discord]\nbots = ["{LOOP_BOT}", "{SLOW_BOT}"]\n\n'
        f"[guard]\nbot_exchanges_per_conversation = {STREAK_BUDGET}\n"
        f"bot_exchanges_per_hour = {HOURLY_BUDGET}\nbot_streak_gap_s = {STREAK_GAP_S}\n"
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    root = tmp_path_factory.mktemp("guard-system")
    soul = root / "soul" / "SOUL.md"
    soul.parent.mkdir()
    shutil.copy(SOUL_EXAMPLE, soul)
    telegram = FakeTelegram(tokens=[TELEGRAM_TOKEN])
    discord = FakeDiscord()
    discord.add_guild(
        GUILD,
        "Heron Club",
        channels=[(LOOP_CHANNEL, "bots"), (SLOW_CHANNEL, "slow-bots"), (ECHO_CHANNEL, "general")],
    )
    for user_id, name, is_bot in [
        (LOOP_BOT, "chatterbot", True),
        (SLOW_BOT, "slowbot", True),
        (DC_DANA, "dana", False),
        (DC_BEA, "bea", False),
    ]:
        discord.add_user(user_id, name, bot=is_bot)
    async with telegram, discord:
        config = root / "mirror.toml"
        config.write_text(system_config(root, telegram, discord), encoding="utf-8")
        env = {"MIRROR_TELEGRAM_TOKEN": TELEGRAM_TOKEN, "MIRROR_DISCORD_TOKEN": DISCORD_TOKEN}
        processes = [
            MirrorProcess("run", entrance, "--config", str(config), env=env)
            for entrance in ("telegram", "discord")
        ]
        system = System(root / "memory.db", config, soul, telegram, discord, processes)
        try:
            for process in processes:
                await process.start()
            await asyncio.gather(
                processes[0].wait_for_line(
                    lambda line: "polling as" in line, stream="stderr", timeout=60
                ),
                processes[1].wait_for_line(
                    lambda line: "discord entrance connected" in line, stream="stderr", timeout=60
                ),
            )
            # A first turn in each process: the model library is loaded after it, so the bot
            # exchanges below are not slowed down (and their streaks broken) by the import.
            dm = discord.open_dm(DC_DANA)
            await asyncio.gather(
                system.telegram_says("Hello!", user=COORDINATOR),
                system.discord_says(dm, "Hello!", author=DC_DANA),
            )
            yield system
        finally:
            codes = await asyncio.gather(*(process.stop(timeout=30) for process in processes))
            assert codes == [0, 0], "".join(process.tail() for process in processes)


# 1-2. Bots that always answer ----------------------------------------------------------------


@dataclass
class BotMessage:
    platform_id: int
    message_id: int  # in memory
    status: str


async def play_bot(
    system: System, channel: int, bot: int, *, pause_s: float = 0.0
) -> list[BotMessage]:
    """Play a bot that answers every message the persona posts in `channel` (each time with
    a new question), until the persona stops answering; the bot's messages, in order."""
    said: list[BotMessage] = []
    for line in BOT_LINES:
        since = len(system.discord.sent)
        platform_id = await system.discord_push(channel, line, author=bot, bot=True)
        message_id, status = await system.handled("discord", platform_id)
        said.append(BotMessage(platform_id, message_id, status))
        if status != "answered":
            return said
        await system.discord_reply_to(platform_id, since)
        if pause_s:
            await asyncio.sleep(pause_s)  # a slow bot: it waits before it answers
    raise AssertionError(f"the persona never stopped answering the bot: {said}")


async def the_bot_insists(system: System, channel: int, bot: int) -> list[BotMessage]:
    """The bot keeps talking after the persona stopped: each message refused, quietly."""
    later = []
    for line in ["Hello? Are you still there, friend?", "I have another riddle for you now."]:
        platform_id = await system.discord_push(channel, line, author=bot, bot=True)
        message_id, status = await system.handled("discord", platform_id)
        later.append(BotMessage(platform_id, message_id, status))
    return later


def stop_notices(system: System, where: str) -> list[str]:
    return [
        text
        for text in system.telegram_to(COORDINATOR)
        if text.startswith("I stopped answering bots") and where in text
    ]


async def test_two_bots_answering_each_other_stop_at_the_budget_and_the_coordinator_hears_once(
    system: System,
) -> None:
    said = await play_bot(system, LOOP_CHANNEL, LOOP_BOT)
    assert [m.status for m in said] == ["answered"] * STREAK_BUDGET + ["refused"]
    reason = f"{STREAK_BUDGET} bot exchanges in a row"
    assert system.refusal(said[-1].message_id)["reason"] == f"bot budget: {reason}"
    [notice] = await system.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == COORDINATOR and "#bots (Heron Club)" in str(sent["text"]),
        timeout=TURN_S,
    )
    assert reason in notice["text"] and "discord" in notice["text"]

    later = await the_bot_insists(system, LOOP_CHANNEL, LOOP_BOT)
    assert [m.status for m in later] == ["refused", "refused"]
    for message in later:
        assert system.refusal(message.message_id)["reason"] == f"bot budget: {reason}"
    await system.outbox_delivered()
    assert len(stop_notices(system, "#bots (Heron Club)")) == 1
    for message in [said[-1], *later]:
        assert system.discord_replies_to(message.platform_id) == []
    persona_posts = [s for s in system.discord.sent if s["channel_id"] == LOOP_CHANNEL]
    assert len(persona_posts) == STREAK_BUDGET


async def test_a_slow_bot_loop_stops_at_the_hourly_budget(system: System) -> None:
    # The bot waits longer than the streak gap each time: the streak never builds.
    said = await play_bot(system, SLOW_CHANNEL, SLOW_BOT, pause_s=STREAK_GAP_S + 0.2)
    assert [m.status for m in said] == ["answered"] * HOURLY_BUDGET + ["refused"]
    assert HOURLY_BUDGET > STREAK_BUDGET
    reason = f"{HOURLY_BUDGET} bot exchanges within an hour"
    assert system.refusal(said[-1].message_id)["reason"] == f"bot budget: {reason}"
    [(kind, streak)] = query(
        system.db,
        "SELECT stop_kind, streak FROM bot_streaks JOIN conversations c "
        "ON c.id = conversation_id WHERE c.external_id = ?",
        str(SLOW_CHANNEL),
    )
    assert kind == "hour" and streak < STREAK_BUDGET
    await system.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == COORDINATOR and "#slow-bots" in str(sent["text"]),
        timeout=TURN_S,
    )
    later = await the_bot_insists(system, SLOW_CHANNEL, SLOW_BOT)
    assert [m.status for m in later] == ["refused", "refused"]
    await system.outbox_delivered()
    [notice] = stop_notices(system, "#slow-bots (Heron Club)")
    assert reason in notice


# 3. Echoes, and bots not on the allowlist --------------------------------------------------


async def test_persona_telegram_text_echoed_into_discord_is_not_answered(system: System) -> None:
    answer = await system.telegram_says("What have you promised?", user=TG_ALICE, name="Alice")
    assert len(normalize_for_echo(answer)) >= 20

    forwarded = await system.discord_push(ECHO_CHANNEL, f"Fwd: {answer}", author=DC_DANA)
    message_id, status = await system.handled("discord", forwarded)
    assert status == "echo"
    said = system.refusal(message_id, "guard.echo")
    assert said["reason"] == "text I sent elsewhere" and answer.startswith(said["said"])

    # The next message in the channel is answered; the echo never was.
    assert await system.discord_says(
        ECHO_CHANNEL, "Dana here: when does the club meet next?", author=DC_DANA
    )
    assert system.discord_replies_to(forwarded) == []


async def test_a_bot_not_on_the_allowlist_gets_no_answer_to_commands_either(
    system: System,
) -> None:
    system.discord.add_user(STRANGER_BOT, "spambot", bot=True)
    sent = []
    for text in ["/soul show", "/link", "Hello there, persona!"]:
        platform_id = await system.discord_push(ECHO_CHANNEL, text, author=STRANGER_BOT, bot=True)
        message_id, status = await system.handled("discord", platform_id)
        assert status == "refused"
        assert system.refusal(message_id)["reason"] == "a bot not on the allowlist"
        sent.append(platform_id)
    # A person's message after them is answered; none of the bot's ever was.
    assert await system.discord_says(ECHO_CHANNEL, "Dana again: all quiet?", author=DC_DANA)
    assert [system.discord_replies_to(platform_id) for platform_id in sent] == [[], [], []]


# 4. Pairing ----------------------------------------------------------------------------------


async def test_pairing_flow_with_the_coordinator_and_the_cli(system: System) -> None:
    since = len(system.telegram.sent)
    first, asked = await system.telegram_asks("Hi, I'm Zoe. Can we talk?", user=TG_ZOE, name="Zoe")
    [code] = set(CODE.findall(asked))
    assert "ask my coordinator to approve this code" in asked
    assert (await system.handled("telegram", first))[1] == "refused"
    # Asking again gets no new code: a reminder that the code waits (once only).
    again = system.telegram_push("Hello?? Anyone?", user=TG_ZOE, name="Zoe")
    assert (await system.handled("telegram", again))[1] == "refused"
    [reminder] = await system.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == TG_ZOE and "still waiting" in str(sent["text"]),
        since=since,
        timeout=TURN_S,
    )

    # The coordinator was told at once (before approving: the announcement goes out through
    # the outbox, and must not be taken for the approval's answer).
    [announced] = await system.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == COORDINATOR and code in str(sent["text"]),
        since=since,
        timeout=TURN_S,
    )
    assert "asks to talk with me" in str(announced["text"])

    approved = await system.telegram_says(f"/approve-pair {code}", user=COORDINATOR)
    assert approved == f"Approved: Zoe (telegram:{TG_ZOE}) can talk to me now."
    await system.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == TG_ZOE and sent["text"] == PAIRED_WELCOME,
        since=since,
        timeout=TURN_S,
    )
    name = await system.telegram_says("What is your name?", user=TG_ZOE, name="Zoe")
    assert name.startswith("I'm Wren")
    # Nothing else: one reminder, and one welcome.
    assert sorted(system.telegram_to(TG_ZOE, since)) == sorted(
        [asked, reminder["text"], PAIRED_WELCOME, name]
    )
    [(actor, _, _)] = [a for a in system.audit("access.paired") if code in json.dumps(a)]
    assert actor == f"telegram:{COORDINATOR}"

    # The same through the CLI: `mirror pair list` shows the code, `mirror pair approve` lets
    # the person in.
    asked = await system.telegram_says("Good evening!", user=TG_YAN, name="Yan")
    [code] = set(CODE.findall(asked))
    pending = json.loads(await system.mirror("pair", "list", "--json"))
    assert [(p["code"], p["account"]) for p in pending] == [(code, f"telegram:{TG_YAN}")]
    done = await system.mirror("pair", "approve", code.lower())
    assert done.strip() == f"Approved: Yan (telegram:{TG_YAN}) can talk to me now."
    await system.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == TG_YAN and sent["text"] == PAIRED_WELCOME,
        timeout=TURN_S,
    )
    assert (await system.telegram_says("Who are you?", user=TG_YAN, name="Yan")).startswith(
        "I'm Wren"
    )


# 5. Links ------------------------------------------------------------------------------------


async def test_link_flow_joins_telegram_and_discord_and_privacy_follows(system: System) -> None:
    dm = system.discord.open_dm(DC_BEA)
    secret = "My secret word is pineapple, and my bicycle is the green one behind the library."
    await system.telegram_says(secret, user=TG_BEA, name="Bea")
    before = await system.discord_says(dm, "What did I tell you on telegram?", author=DC_BEA)
    assert "nothing from you on telegram" in before and "pineapple" not in before

    offered = await system.telegram_says("/link", user=TG_BEA, name="Bea")
    [code] = set(CODE.findall(offered))
    linked = await system.discord_says(dm, f"/link {code}", author=DC_BEA)
    accounts = {f"telegram:{TG_BEA}", f"discord:{DC_BEA}"}
    assert linked.startswith("Linked: I now know") and all(a in linked for a in accounts)
    await system.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == TG_BEA and f"discord:{DC_BEA}" in str(sent["text"]),
        timeout=TURN_S,
    )  # told on the other account, in case it wasn't them

    people = json.loads(await system.mirror("people", "--json"))
    [bea] = [p for p in people if accounts & set(p["identities"])]
    assert set(bea["identities"]) == accounts
    [(actor, _, _)] = system.audit("identity.linked")
    assert actor == f"discord:{DC_BEA}"

    after = await system.discord_says(dm, "What did I tell you on telegram?", author=DC_BEA)
    assert secret in after
    # The persona quoted her; her own words said again are hers, not an echo of its reply.
    again, answer = await system.telegram_asks(secret, user=TG_BEA, name="Bea")
    assert (await system.handled("telegram", again))[1] == "answered" and answer != ECHO_ACK
    # Another person still sees nothing of it.
    other = await system.discord_says(
        ECHO_CHANNEL, "What did Bea tell you about her secret word?", author=DC_DANA
    )
    assert "pineapple" not in other


# 6. Admin commands ---------------------------------------------------------------------------


def souls(system: System) -> list[tuple[int, str]]:
    return [(int(i), str(n)) for i, n in query(system.db, "SELECT id, name FROM soul_versions")]


async def test_non_admin_soul_rollback_is_refused_and_audited_and_an_admin_may(
    system: System,
) -> None:
    assert souls(system) == [(1, "Wren")]
    system.soul.write_text(system.soul.read_text().replace("Wren", "Robin"), encoding="utf-8")
    await wait_until(
        lambda: souls(system) == [(1, "Wren"), (2, "Robin")],
        TURN_S,
        lambda: f"soul v2 (souls: {souls(system)})",
    )

    refused = await system.telegram_says("/soul rollback 1", user=TG_EVE, name="Eve")
    assert refused == ONLY_ADMINS
    [(actor, subject, _)] = system.audit("admin.refused")
    assert (actor, subject) == (f"telegram:{TG_EVE}", "/soul rollback 1")
    assert souls(system) == [(1, "Wren"), (2, "Robin")]
    assert "Robin" in system.soul.read_text() and system.audit("soul.rollback") == []
    assert (await system.telegram_says("What is your name?", user=TG_EVE)).startswith("I'm Robin")

    done = await system.telegram_says("/soul rollback 1", user=ADMIN, name="Root")
    assert done.startswith("Soul version 3 is active (Wren, from version 1)")
    assert souls(system)[-1] == (3, "Wren") and "Robin" not in system.soul.read_text()
    [(actor, subject, detail)] = system.audit("soul.rollback")
    assert (actor, subject, detail["to_version"]) == (f"telegram:{ADMIN}", "3", 1)
    assert (await system.telegram_says("What is your name?", user=TG_EVE)).startswith("I'm Wren")


# 7. Rate limits across processes -------------------------------------------------------------


async def test_a_rate_limit_holds_across_two_processes(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Sam talks to two `mirror chat` processes on one memory.db; the bucket is in memory.db."""
    config = write_config("[limits]\nperson_burst = 3\nperson_per_minute = 0.01\n")
    db = tmp_path / "memory.db"
    first, second = await asyncio.gather(
        ChatProcess(config, "desk-a", "sam").start(), ChatProcess(config, "desk-b", "sam").start()
    )
    try:
        for n in range(3):
            answer = await first.say(f"question {n}: what is your name?")
            assert answer["text"].startswith("I'm Wren")
        # The second process has answered nothing yet, and still knows the burst is spent.
        assert (await second.say("question 3: what is your name?"))["text"] == RATE_LIMITED
        # Later ones are refused silently, in either process: each answers the command sent
        # after it (commands are answered by code, never rate-limited) and nothing before it.
        for n, chat in [(4, first), (5, second)]:
            replies = len(chat.events("reply"))
            await chat.write(f"question {n}: are you there?")
            marker = await chat.say("/pending")
            assert "Only my admins" in marker["text"]
            assert len(chat.events("reply")) == replies + 1
        statuses = query(  # commands are recorded (and answered) too: leave them out here
            db,
            "SELECT instance_id, status FROM messages WHERE direction = 'in'"
            " AND text NOT LIKE '/%' ORDER BY id",
        )
        assert statuses == [("desk-a", "answered")] * 3 + [
            ("desk-b", "refused"),
            ("desk-a", "refused"),
            ("desk-b", "refused"),
        ]
        reasons = [detail["reason"] for _, _, detail in System.audit_of(db, "guard.refused")]
        assert len(reasons) == 3 and len(set(reasons)) == 1
        assert reasons[0].startswith("rate limit: person:")
    finally:
        await asyncio.gather(first.quit(), second.quit())
