"""Command menus generated from the command router, seen at the fakes: Telegram's
setMyCommands (everyone's menu, and the coordinator's and admins' private chats) from a real
`mirror run telegram`, and Discord's application (slash) commands from a real
`mirror run discord`, whose invocation is the same command as typing it."""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.commands import COMMAND_NAMES, DECLARATIONS, command_menus, declaration
from bot.config import load_config
from bot.memory import Memory
from tests.fakes.discord_api import DEFAULT_TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import DEFAULT_TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegram
from tests.processes import MirrorProcess

COORDINATOR = 4242
ADMIN = 5151
ALICE = 1001
EVERYONE = ["help", "link", "reminders", "cancel", "snooze", "done", "timezone"]

D_GUILD = 200_000_000_000_000_001
D_CHANNEL = 300_000_000_000_000_001
D_ALICE = 400_000_000_000_000_001
D_COORDINATOR = 400_000_000_000_000_009
D_ALICE_DM = 500_000_000_000_000_001
D_COORDINATOR_DM = 500_000_000_000_000_009


def staff_config(write_config: Callable[..., Path], entrance: str, coordinator: int) -> str:
    return (
        f'[coordinator]\naddress = "{entrance}:{coordinator}"\n\n'
        f'[access]\nadmins = ["{entrance}:{ADMIN}", "email:boss@example.org"]\n\n'
    )


# the menus themselves (pure) ------------------------------------------------------------


def test_menus_come_from_the_declarations_for_each_audience(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(write_config(staff_config(write_config, "telegram", COORDINATOR)))
    everyone, coordinator, admin = command_menus(config, "telegram")
    assert everyone.account is None
    assert [d.name for d in everyone.commands] == EVERYONE
    assert str(coordinator.account) == f"telegram:{COORDINATOR}"
    assert [d.name for d in coordinator.commands] == list(COMMAND_NAMES)
    assert str(admin.account) == f"telegram:{ADMIN}"
    assert "approve-pair" in [d.name for d in admin.commands]
    assert "resolve" not in [d.name for d in admin.commands]  # the coordinator's alone
    # Other entrances' staff get no menu here; on Discord only everyone's remains.
    assert [m.account for m in command_menus(config, "discord")] == [None]


def test_every_command_fits_the_platforms_name_rules_and_reads_back() -> None:
    for item in DECLARATIONS:
        telegram = item.name.replace("-", "_")
        assert re.fullmatch(r"[a-z0-9_]{1,32}", telegram), telegram
        assert declaration(telegram) is item  # the router takes the menu's spelling
        assert re.fullmatch(r"[-_a-z0-9]{1,32}", item.name)
        assert 1 <= len(item.help) <= 100


# Telegram ---------------------------------------------------------------------------------


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


async def test_telegram_menus_by_scope_and_a_menu_command_reaches_the_router(
    telegram: FakeTelegram, write_config: Callable[..., Path]
) -> None:
    config = write_config(
        staff_config(write_config, "telegram", COORDINATOR)
        + "[entrances.telegram]\nenabled = true\n"
        f'base_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n'
    )
    process = MirrorProcess(
        "run",
        "telegram",
        "--config",
        str(config),
        env={"MIRROR_TELEGRAM_TOKEN": TELEGRAM_TOKEN},
    )
    await process.start()
    try:
        await process.wait_for_line(lambda line: "polling as @" in line, stream="stderr")

        def names(scope: dict[str, Any] | None) -> list[str]:
            return [c["command"] for c in telegram.commands(scope)]

        assert names(None) == EVERYONE
        [help_line] = [c for c in telegram.commands(None) if c["command"] == "snooze"]
        assert help_line["description"] == "N 30m|2h|tomorrow — have one come again later"
        coordinator = names({"type": "chat", "chat_id": COORDINATOR})
        assert coordinator == [name.replace("-", "_") for name in COMMAND_NAMES]
        admin = names({"type": "chat", "chat_id": ADMIN})
        assert {"pending", "approve_pair", "deny_pair", "revoke", "soul"} <= set(admin)
        assert "resolve" not in admin and "help" in admin
        scopes = [
            params.get("scope") for name, params in telegram.requests if name == "setMyCommands"
        ]
        assert len(scopes) == 3  # the email admin has no Telegram chat

        # Picked from the menu, "/deny_pair" is /deny-pair.
        asked = telegram.push_message(COORDINATOR, "/deny_pair zzzz-zzzz", user_id=COORDINATOR)
        [answer] = await telegram.wait_for_sent(
            lambda s: s["reply_to_message_id"] == asked["message"]["message_id"], timeout=30
        )
        assert answer["text"] == "I can't deny ZZZZ-ZZZZ: there is no such code."
    finally:
        assert await process.stop() == 0, process.tail()


async def test_a_refused_menu_is_logged_and_the_entrance_runs_on(
    telegram: FakeTelegram, write_config: Callable[..., Path]
) -> None:
    config = write_config(
        staff_config(write_config, "telegram", COORDINATOR)
        + "[entrances.telegram]\nenabled = true\n"
        f'base_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n'
    )
    telegram.inject_error("setMyCommands", 400, description="Bad Request: BOT_COMMAND_INVALID")
    process = MirrorProcess(
        "run", "telegram", "--config", str(config), env={"MIRROR_TELEGRAM_TOKEN": TELEGRAM_TOKEN}
    )
    await process.start()
    try:
        await process.wait_for_line(lambda line: "polling as @" in line, stream="stderr")
        assert any(
            "the command menu for everyone was refused" in line for line in process.stderr
        ), process.tail()
        assert telegram.commands(None) == []
        assert telegram.commands({"type": "chat", "chat_id": COORDINATOR}) != []
        asked = telegram.push_message(ALICE, "/help", user_id=ALICE)
        [answer] = await telegram.wait_for_sent(
            lambda s: s["reply_to_message_id"] == asked["message"]["message_id"], timeout=30
        )
        assert answer["text"].startswith("Commands you can use:")
    finally:
        assert await process.stop() == 0, process.tail()


# Discord ----------------------------------------------------------------------------------


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    fake.add_guild(D_GUILD, "Heron Club", channels=[(D_CHANNEL, "general")])
    for user_id, name in ((D_ALICE, "alice"), (D_COORDINATOR, "carol")):
        fake.add_user(user_id, name)
    fake.open_dm(D_ALICE, D_ALICE_DM)
    fake.open_dm(D_COORDINATOR, D_COORDINATOR_DM)
    async with fake:
        yield fake


async def test_discord_slash_commands_are_registered_and_answer_like_typed_ones(
    discord: FakeDiscord, write_config: Callable[..., Path], memory: Memory
) -> None:
    config = write_config(
        staff_config(write_config, "discord", D_COORDINATOR)
        + "[entrances.discord]\nenabled = true\n"
        f'api_base = "{discord.api_base}"\ngateway_url = "{discord.gateway_url}"\n'
    )
    process = MirrorProcess(
        "run", "discord", "--config", str(config), env={"MIRROR_DISCORD_TOKEN": DISCORD_TOKEN}
    )
    await process.start()
    try:
        await process.wait_for_line(
            lambda line: "slash commands registered" in line, stream="stderr", timeout=30
        )
        registered = {c["name"]: c for c in discord.application_commands}
        assert list(registered) == list(COMMAND_NAMES)
        resolve = registered["resolve"]
        assert [o["name"] for o in resolve["options"]] == ["arguments"]
        assert resolve["options"][0]["required"] is False
        assert resolve["contexts"] == [1, 2]  # DMs only: the answers show private chats
        assert str(resolve["default_member_permissions"]) == "8"  # servers: Administrator only
        assert registered["help"]["options"] == [] and registered["help"]["contexts"] is None
        assert registered["help"]["default_member_permissions"] is None

        async def slash(channel: int, user: int, name: str, arguments: str | None = None) -> str:
            before = len(discord.interaction_responses)
            await discord.push_slash_command(
                channel,
                name,
                user_id=user,
                arguments={"arguments": arguments} if arguments else None,
                guild_id=D_GUILD if channel == D_CHANNEL else None,
            )
            await discord.wait_until(
                lambda: len(discord.interaction_responses) > before, timeout=30
            )
            response = discord.interaction_responses[before]
            assert response["type"] == 4  # answered in the interaction, at once
            return str(response["content"])

        assert (await slash(D_ALICE_DM, D_ALICE, "help")).startswith("Commands you can use:")
        assert await slash(D_ALICE_DM, D_ALICE, "pending") == "Only my admins can do that."
        denied = await slash(D_COORDINATOR_DM, D_COORDINATOR, "deny-pair", "zzzz-zzzz")
        assert denied == "I can't deny ZZZZ-ZZZZ: there is no such code."
        in_server = await slash(D_CHANNEL, D_COORDINATOR, "pending")
        assert "private chat" in in_server
        # Recorded like a typed command, in its conversation.
        log = await memory.message_log(limit=50)
        typed = [(m.text, m.direction) for m in log if m.text.startswith("/")]
        assert ("/deny-pair zzzz-zzzz", "in") in typed and ("/help", "in") in typed
    finally:
        await process.stop(signal.SIGTERM)
