"""Entrances as if on three hosts, sharing nothing but a PostgreSQL URL.

Telegram, Discord and the scheduler run as separate `mirror run` processes, each with its
own folder (config, SOUL.md) and `MIRROR_DB` set to one PostgreSQL database: a promise
made on one entrance is known on the other, their conflict reaches the coordinator on
Telegram through the scheduler, the decision is seen by both, and a SOUL.md edit on the
Telegram host changes how the Discord host's persona introduces itself.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SOUL_EXAMPLE
from tests.fakes.discord_api import DEFAULT_TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeTelegram
from tests.processes import MirrorProcess
from tests.waiting import wait_until

TELEGRAM_TOKEN = "123:TEST"
COORDINATOR = 4242
TG_ALICE = 1001
DC_BOB = 400_000_000_000_000_002
TURN_S = 60.0


def host(folder: Path, settings: str) -> Path:
    """One host's own folder: its SOUL.md and its config (no [memory]: MIRROR_DB says)."""
    folder.mkdir()
    soul = folder / "SOUL.md"
    shutil.copy(SOUL_EXAMPLE, soul)
    config = folder / "mirror.toml"
    config.write_text(
        f'[soul]\npath = "{soul}"\n\n'
        "[persona]\ninstance_dead_after_s = 3\n\n"
        "[scheduler]\ninterval_s = 0.3\nlease_s = 2\n\n"
        f'[coordinator]\naddress = "telegram:{COORDINATOR}"\n\n' + settings,
        encoding="utf-8",
    )
    return config


@dataclass
class Hosts:
    telegram: FakeTelegram
    discord: FakeDiscord
    dm_bob: int
    soul_a: Path

    async def telegram_says(self, text: str) -> str:
        since = len(self.telegram.sent)
        self.telegram.push_message(TG_ALICE, text, user_id=TG_ALICE, first_name="Alice")
        [reply] = await self.telegram.wait_for_sent(
            lambda sent: sent["chat_id"] == TG_ALICE, since=since, timeout=TURN_S
        )
        return str(reply["text"])

    async def discord_says(self, text: str) -> str:
        since = len(self.discord.sent)
        await self.discord.push_message(self.dm_bob, text, author_id=DC_BOB)
        [reply] = await self.discord.wait_for_sent(
            lambda sent: sent["channel_id"] == self.dm_bob, since=since, timeout=TURN_S
        )
        return str(reply["content"])


@pytest.fixture
async def hosts(tmp_path: Path, pg_url: str) -> AsyncIterator[Hosts]:
    telegram = FakeTelegram(tokens=[TELEGRAM_TOKEN])
    discord = FakeDiscord()
    discord.add_user(DC_BOB, "bob")
    dm_bob = discord.open_dm(DC_BOB)
    async with telegram, discord:
        a = host(
            tmp_path / "host-a",
            "[entrances.telegram]\nenabled = true\n"
            f'base_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n',
        )
        b = host(
            tmp_path / "host-b",
            "[entrances.discord]\nenabled = true\n"
            f'api_base = "{discord.api_base}"\ngateway_url = "{discord.gateway_url}"\n',
        )
        c = host(tmp_path / "host-c", "")
        env = {"MIRROR_DB": pg_url}
        processes = [
            (
                MirrorProcess(
                    "run",
                    "telegram",
                    "--config",
                    str(a),
                    env={**env, "MIRROR_TELEGRAM_TOKEN": TELEGRAM_TOKEN},
                ),
                "polling as",
            ),
            (
                MirrorProcess(
                    "run",
                    "discord",
                    "--config",
                    str(b),
                    env={**env, "MIRROR_DISCORD_TOKEN": DISCORD_TOKEN},
                ),
                "connected",
            ),
            (MirrorProcess("run", "scheduler", "--config", str(c), env=env), "now the leader"),
        ]
        try:
            for process, ready in processes:
                await process.start()
                await process.wait_for_line(
                    lambda line, ready=ready: ready in line, stream="stderr", timeout=TURN_S
                )
            yield Hosts(telegram, discord, dm_bob, a.parent / "SOUL.md")
        finally:
            for process, _ in processes:
                assert await process.stop() == 0, process.tail()


async def test_three_hosts_share_one_persona_through_postgresql(hosts: Hosts) -> None:
    # A conflict between what Discord and Telegram promised reaches the coordinator on
    # Telegram, surfaced by the scheduler on a third host.
    assert "review" in await hosts.discord_says("Could you review my draft on Saturday at 4pm?")
    assert await hosts.telegram_says("Can you call me on Saturday at 4pm?")
    [item] = await hosts.telegram.wait_for_sent(
        lambda sent: sent["chat_id"] == COORDINATOR and "Conflict #" in str(sent["text"]),
        timeout=TURN_S,
    )
    assert "review" in item["text"] and "call" in item["text"]
    keyboard = item["reply_markup"]["inline_keyboard"]
    keep_a = next(b for row in keyboard for b in row if b["text"] == "Keep A")
    since = len(hosts.telegram.edits)
    hosts.telegram.push_callback_query(
        COORDINATOR, COORDINATOR, item["message_id"], keep_a["callback_data"]
    )
    [edit] = await hosts.telegram.wait_for_edits(since=since, timeout=TURN_S)
    assert "Decision: Resolved" in str(edit["text"])
    # Both hosts' persona knows the decision.
    assert "My coordinator decided" in await hosts.discord_says("What have you promised?")
    assert "My coordinator decided" in await hosts.telegram_says("What have you promised?")

    # SOUL.md edited on the Telegram host only: the Discord host speaks with the new name.
    hosts.soul_a.write_text(hosts.soul_a.read_text().replace("Wren", "Kestrel"))
    answers: list[str] = []

    async def renamed() -> bool:
        answers.append(await hosts.discord_says("What is your name?"))
        return "Kestrel" in answers[-1]

    await wait_until(renamed, TURN_S, lambda: f"Kestrel on Discord; last: {answers[-1:]}", 0.2)
