"""The whole system: `mirror up` with Telegram, Discord and email on one memory.db.

Fakes of the Telegram Bot API and of Discord (REST + gateway) and a real Dovecot with an
SMTP sink run in this test process; `mirror up` supervises one real process per entrance
plus the scheduler. The persona runs on its offline brain.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_mirror
from tests.fakes import mail_servers
from tests.fakes.discord_api import DEFAULT_TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.mail_servers import ALICE, PERSONA, PERSONA_PASSWORD, Dovecot, SmtpSink
from tests.fakes.telegram_api import FakeTelegram
from tests.processes import MirrorProcess
from tests.waiting import wait_until

# Each test runs on SQLite and on PostgreSQL (tests/pg.py): `mirror up` given only the URL.
pytestmark = pytest.mark.both_engines

dovecot = mail_servers.dovecot
smtp_sink = mail_servers.smtp_sink

TELEGRAM_TOKEN = "123:TEST"
COORDINATOR = 4242  # the coordinator's Telegram user id (= their private chat id)
TG_ALICE, TG_GROUP = 1001, -5005
GUILD, CHANNEL = 200_000_000_000_000_001, 300_000_000_000_000_001
DC_BOB, DC_DANA = 400_000_000_000_000_002, 400_000_000_000_000_003
TURN_S = 60.0


@dataclass
class System:
    up: MirrorProcess
    config: Path
    telegram: FakeTelegram
    discord: FakeDiscord
    dovecot: Dovecot
    smtp: SmtpSink
    dm_bob: int
    mails: int = 0

    async def telegram_says(self, text: str, *, chat: int, user: int, kind: str = "private") -> str:
        since = len(self.telegram.sent)
        self.telegram.push_message(
            chat,
            text,
            user_id=user,
            chat_type=kind,
            first_name=f"user{user}",
            chat_title="Heron Club" if kind != "private" else None,
        )
        [reply] = await self.telegram.wait_for_sent(
            lambda sent: sent["chat_id"] == chat, since=since, timeout=TURN_S
        )
        return str(reply["text"])

    async def discord_says(
        self, text: str, *, channel: int, author: int, guild: int | None = None
    ) -> str:
        since = len(self.discord.sent)
        await self.discord.push_message(channel, text, author_id=author, guild_id=guild)
        [reply] = await self.discord.wait_for_sent(
            lambda sent: sent["channel_id"] == channel, since=since, timeout=TURN_S
        )
        return str(reply["content"])

    async def mail_says(self, subject: str, body: str) -> str:
        self.mails += 1
        message = EmailMessage()
        message["From"] = f"Alice <{ALICE}>"
        message["To"] = PERSONA
        message["Subject"] = subject
        message["Message-ID"] = f"<e2e-{self.mails}@example.test>"
        message.set_content(body)
        before = len([m for m in self.smtp.received if ALICE in m.rcpt_tos])
        self.dovecot.deliver(PERSONA, message)
        received = await self.smtp.wait_for(
            lambda mail: ALICE in mail.rcpt_tos, count=before + 1, timeout=TURN_S
        )
        body_part = received[-1].message.get_body(("plain",))
        assert body_part is not None
        return str(body_part.get_content())

    def status(self) -> dict[str, Any]:
        result = run_mirror("status", "--json", "--config", str(self.config))
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))


def system_config(
    write_config: Callable[..., Path],
    telegram: FakeTelegram,
    discord: FakeDiscord,
    mail: Dovecot,
    smtp: SmtpSink,
) -> Path:
    return write_config(
        "[persona]\ninstance_dead_after_s = 3\n\n"
        "[scheduler]\ninterval_s = 0.3\nlease_s = 2\n\n"
        f'[coordinator]\naddress = "telegram:{COORDINATOR}"\n\n'
        "[entrances.telegram]\nenabled = true\n"
        f'base_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n\n'
        "[entrances.discord]\nenabled = true\n"
        f'api_base = "{discord.api_base}"\ngateway_url = "{discord.gateway_url}"\n'
        f'channels = ["{CHANNEL}"]\n\n'
        "[entrances.email]\nenabled = true\n"
        f'address = "{PERSONA}"\nimap_host = "127.0.0.1"\nimap_port = {mail.imap_port}\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\nsecurity = "none"\n'
    )


async def ask_until_the_answer_has(ask: Callable[[], Awaitable[str]], word: str) -> str:
    """Ask again (every 0.2 s) until the answer holds `word`; that answer."""
    answers: list[str] = []

    async def has_word() -> str | None:
        answers.append(await ask())
        return answers[-1] if word in answers[-1] else None

    return await wait_until(
        has_word, TURN_S, lambda: f"{word!r} in an answer; the last: {answers[-1]!r}", 0.2
    )


def ready(name: str, words: str) -> Callable[[str], bool]:
    return lambda line: line.startswith(f"[{name}]") and words in line


@pytest.fixture
async def system(
    write_config: Callable[..., Path], dovecot: Dovecot, smtp_sink: SmtpSink
) -> AsyncIterator[System]:
    telegram = FakeTelegram(tokens=[TELEGRAM_TOKEN])
    discord = FakeDiscord()
    discord.add_guild(GUILD, "Heron Club", channels=[(CHANNEL, "general")])
    for user_id, name in ((DC_BOB, "bob"), (DC_DANA, "dana")):
        discord.add_user(user_id, name)
    dm_bob = discord.open_dm(DC_BOB)
    async with telegram, discord:
        config = system_config(write_config, telegram, discord, dovecot, smtp_sink)
        up = MirrorProcess(
            "up",
            "--config",
            str(config),
            env={
                "MIRROR_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
                "MIRROR_DISCORD_TOKEN": DISCORD_TOKEN,
                "MIRROR_EMAIL_PASSWORD": PERSONA_PASSWORD,
            },
        )
        await up.start()
        try:
            for name, words in [
                ("telegram", "polling as"),
                ("discord", "connected"),
                ("email", "watching"),
                ("scheduler", "now the leader"),
            ]:
                await up.wait_for_line(ready(name, words), stream="stderr", timeout=TURN_S)
            yield System(up, config, telegram, discord, dovecot, smtp_sink, dm_bob)
        finally:
            code = await up.stop(signal.SIGTERM, timeout=60)
            assert code == 0, up.tail()


async def test_promise_conflict_decision_and_soul_across_three_entrances(
    system: System, soul_file: Path
) -> None:
    # A promise made in a Telegram group: another group (a Discord channel) learns only that
    # there is one, on Telegram; the person who asked sees it in their private chat.
    made = await system.telegram_says(
        "@mirror_test_bot can you post the minutes on Friday at 10am?",
        chat=TG_GROUP,
        user=TG_ALICE,
        kind="supergroup",
    )
    assert "post the minutes" in made
    known = await system.discord_says(
        "What have you promised?", channel=CHANNEL, author=DC_DANA, guild=GUILD
    )
    assert "post the minutes" not in known and "telegram" in known.lower()
    mine = await system.telegram_says("What have you promised?", chat=TG_ALICE, user=TG_ALICE)
    assert "post the minutes" in mine

    # A conflict between Discord and email reaches the coordinator on Telegram.
    await system.discord_says(
        "Could you review my draft on Saturday at 4pm?", channel=system.dm_bob, author=DC_BOB
    )
    await system.mail_says("A call", "Can you call me on Saturday at 4pm?")
    [item] = await system.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == COORDINATOR and "Conflict #" in str(sent["text"]),
        timeout=TURN_S,
    )
    assert "review" in item["text"] and "call" in item["text"]
    keyboard = item["reply_markup"]["inline_keyboard"]
    keep_a = next(b for row in keyboard for b in row if b["text"] == "Keep A")
    since = len(system.telegram.edits)
    system.telegram.push_callback_query(
        COORDINATOR, COORDINATOR, item["message_id"], keep_a["callback_data"]
    )
    [edit] = await system.telegram.wait_for_edits(since=since, timeout=TURN_S)
    assert "Decision: Resolved" in str(edit["text"])

    # The resolution is seen by all three.
    for answer in (
        await system.telegram_says("What have you promised?", chat=TG_ALICE, user=TG_ALICE),
        await system.discord_says(
            "What have you promised?", channel=CHANNEL, author=DC_DANA, guild=GUILD
        ),
        await system.mail_says("Promises", "What have you promised?"),
    ):
        assert "My coordinator decided" in answer

    # A second poller on the Telegram token is refused while the first holds the lease.
    second = await asyncio.to_thread(
        run_mirror,
        "run",
        "telegram",
        "--config",
        str(system.config),
        MIRROR_TELEGRAM_TOKEN=TELEGRAM_TOKEN,
    )
    assert second.returncode == 2 and "telegram is already running" in second.stderr

    # A SOUL.md edit: every entrance answers with the new name.
    soul_file.write_text(soul_file.read_text().replace("Wren", "Kestrel"))
    asks: list[Callable[[], Any]] = [
        lambda: system.telegram_says("What is your name?", chat=TG_ALICE, user=TG_ALICE),
        lambda: system.discord_says(
            "What is your name?", channel=CHANNEL, author=DC_DANA, guild=GUILD
        ),
        lambda: system.mail_says("Name", "What is your name?"),
    ]
    for ask in asks:
        await ask_until_the_answer_has(ask, "Kestrel")

    def one_version() -> bool:  # each instance reports its soul on its next heartbeat
        versions = {
            i["soul_version"]
            for i in system.status()["instances"]
            if i["entrance"] in ("telegram", "discord", "email")
        }
        return len(versions) == 1

    await wait_until(one_version, 15.0, "every instance reporting the same soul version")


async def test_killed_discord_comes_back_and_nothing_is_lost_or_answered_twice(
    system: System,
) -> None:
    first = await system.discord_says("hello", channel=system.dm_bob, author=DC_BOB)
    assert first
    pid = next(i["pid"] for i in system.status()["instances"] if i["id"] == "discord")
    mark = len(system.up.stderr)
    os.kill(pid, signal.SIGKILL)
    await system.up.wait_for_line(
        lambda line: line.startswith("discord: exited"),
        stream="stderr",
        since=mark,
        timeout=TURN_S,
    )
    await system.discord.wait_until(lambda: not system.discord.connected, timeout=TURN_S)

    # The others keep answering.
    assert await system.telegram_says("still there?", chat=TG_ALICE, user=TG_ALICE)
    assert await system.mail_says("Hi", "still there?")

    # What arrives on Discord meanwhile is answered once Discord is back.
    since = len(system.discord.sent)
    system.discord.store_message(system.dm_bob, "Are you back?", author_id=DC_BOB)
    await system.up.wait_for_line(
        ready("discord", "connected"), stream="stderr", since=mark, timeout=TURN_S
    )
    await system.discord.wait_for_sent(
        lambda s: s["channel_id"] == system.dm_bob, since=since, timeout=TURN_S
    )
    # A later message's answer comes after any duplicate would have: one answer each.
    assert await system.discord_says("and now?", channel=system.dm_bob, author=DC_BOB)
    answered = [s for s in system.discord.sent[since:] if s["channel_id"] == system.dm_bob]
    assert len(answered) == 2
    assert any(
        i["id"] == "discord" and i["status"] == "alive" for i in system.status()["instances"]
    )
