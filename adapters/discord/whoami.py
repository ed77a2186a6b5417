"""`mirror setup` on Discord: catch the coordinator's `/whoami` in a private message.

A short-lived discord.py client connects to the gateway with the bot's token, waits for a
direct message starting with `/whoami` from a person (not a bot), answers it with their
address, and disconnects. Discord allows several gateway sessions per bot, so a running
entrance is not disturbed (it would see the message too). Nothing here touches memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import discord

from adapters.discord.manifest import DiscordSettings
from adapters.discord.runtime import intents, point_discord_at


async def wait_for_whoami(
    settings: DiscordSettings, token: str, *, wait_s: float
) -> tuple[str, str] | None:
    """(user id, name) of whoever sends /whoami to the bot in a DM within `wait_s`, or None.

    A refused token or an unreachable gateway is None too (the caller asks for the id)."""
    point_discord_at(settings.api_base, settings.gateway_url)
    client = discord.Client(intents=intents())
    found: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if found.done() or message.guild is not None or message.author.bot:
            return
        if not message.content.strip().lower().startswith("/whoami"):
            return
        user = message.author
        with contextlib.suppress(discord.HTTPException):
            await message.channel.send(
                f"You are discord:{user.id}. MirrorOS setup has made you the coordinator."
            )
        if not found.done():
            found.set_result((str(user.id), user.global_name or user.name))

    runner = asyncio.create_task(client.start(token, reconnect=False))
    try:
        either: set[asyncio.Future[Any]] = {found, runner}
        done, _ = await asyncio.wait(either, timeout=wait_s, return_when="FIRST_COMPLETED")
        return found.result() if found in done else None
    finally:
        await client.close()
        runner.cancel()
        with contextlib.suppress(BaseException):
            await runner
