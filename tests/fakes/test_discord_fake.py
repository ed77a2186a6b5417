"""Self-test of tests/fakes/discord_api.py: a real discord.py Client against FakeDiscord."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import discord
import discord.http
import pytest
import yarl
from discord.gateway import DiscordWebSocket

from tests.fakes.discord_api import FakeDiscord

BOT_ID = 100_000_000_000_000_001
GUILD_ID = 200_000_000_000_000_001
CHANNEL_ID = 300_000_000_000_000_001
ALICE = 400_000_000_000_000_001
BOB = 400_000_000_000_000_002
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Bot:
    """A connected discord.py Client plus what it received."""

    client: discord.Client
    task: asyncio.Task[None]
    inbox: asyncio.Queue[discord.Message] = field(default_factory=asyncio.Queue)

    async def next_message(self, timeout: float = 5.0) -> discord.Message:
        return await asyncio.wait_for(self.inbox.get(), timeout)


@pytest.fixture
def patch_discord() -> Iterator[None]:
    """Restore discord.py's URLs after a test (each bot helper sets them for its fake)."""
    base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE = base
    DiscordWebSocket.DEFAULT_GATEWAY = gateway


@pytest.fixture
async def fake(patch_discord: None) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord(bot_user_id=BOT_ID)
    fake.add_guild(GUILD_ID, "Mirror Test", channels=[(CHANNEL_ID, "general")])
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def point_discord_at(fake: FakeDiscord) -> None:
    """Exactly what a client process must patch before login."""
    discord.http.Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)


def make_intents(message_content: bool = True) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = message_content
    return intents


class QuickClient(discord.Client):
    """discord.Client minus the 5 s sleep it takes before every IDENTIFY but the first."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeDiscord, *, message_content: bool = True, views: tuple[discord.ui.View, ...] = ()
) -> AsyncIterator[Bot]:
    point_discord_at(fake)
    client = QuickClient(intents=make_intents(message_content), guild_ready_timeout=0.05)
    ready = asyncio.Event()
    inbox: asyncio.Queue[discord.Message] = asyncio.Queue()

    @client.event
    async def on_ready() -> None:
        ready.set()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if client.user is None or message.author.id != client.user.id:
            inbox.put_nowait(message)

    await client.login(fake.token)
    for view in views:
        client.add_view(view)
    task = asyncio.create_task(client.connect(reconnect=True))
    try:
        await asyncio.wait_for(ready.wait(), 5.0)
        yield Bot(client, task, inbox)
    finally:
        await client.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5.0)


async def test_startup_builds_guild_and_speaks_plain_json(fake: FakeDiscord) -> None:
    async with running_bot(fake) as bot:
        assert bot.client.user is not None and bot.client.user.id == BOT_ID
        assert bot.client.application_id == BOT_ID
        guild = bot.client.get_guild(GUILD_ID)
        assert guild is not None and guild.name == "Mirror Test"
        channel = guild.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel) and channel.name == "general"
        assert guild.me is not None and guild.me.id == BOT_ID
        assert fake.identify_count == 1
        identify = fake.identify_payloads[0]
        assert identify["intents"] == make_intents().value
        # discord.py asks for a compressed stream; the fake answers with text frames anyway.
        assert fake.gateway_connections[0]["query"]["encoding"] == "json"
        assert "compress" in fake.gateway_connections[0]["query"]
        paths = [r["path"] for r in fake.requests]
        assert "/api/v10/users/@me" in paths
        assert "/api/v10/oauth2/applications/@me" in paths
        assert fake.unknown_requests == []

    headers = {"Authorization": f"Bot {fake.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{fake.api_base}/users/@me", headers=headers) as response,
    ):
        assert response.headers["Content-Type"] == "application/json"
        assert (await response.json())["id"] == str(BOT_ID)


async def test_wrong_token_fails_login(fake: FakeDiscord) -> None:
    point_discord_at(fake)
    client = discord.Client(intents=make_intents())
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("WRONG.TOKEN")
    finally:
        await client.close()


async def test_refused_privileged_intent_closes_with_4014(patch_discord: None) -> None:
    async with FakeDiscord(bot_user_id=BOT_ID, refuse_privileged=True) as fake:
        point_discord_at(fake)
        client = discord.Client(intents=make_intents(message_content=True))
        try:
            await client.login(fake.token)
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(client.connect(reconnect=True), 5.0)
        finally:
            await client.close()


async def test_guild_mention_reply_round_trip(fake: FakeDiscord) -> None:
    async with running_bot(fake) as bot:
        pushed = await fake.push_message(
            CHANNEL_ID, "hello mirror", author_id=ALICE, mentions_bot=True
        )
        message = await bot.next_message()
        assert message.id == int(pushed["id"])
        assert message.guild is not None and message.guild.id == GUILD_ID
        assert message.author.id == ALICE
        assert message.content == f"<@{BOT_ID}> hello mirror"
        assert bot.client.user in message.mentions

        async with message.channel.typing():
            await message.reply("hi alice")
        (sent,) = await fake.wait_for_sent(lambda r: r["content"] == "hi alice")
        assert sent["channel_id"] == CHANNEL_ID and sent["guild_id"] == GUILD_ID
        assert sent["message_reference"]["message_id"] == message.id
        assert CHANNEL_ID in fake.typing

        # A reply to the bot's message carries the referenced message.
        await fake.push_message(
            CHANNEL_ID, "thanks", author_id=BOB, message_reference=sent["id"], mentions_bot=True
        )
        reply = await bot.next_message()
        assert reply.reference is not None and reply.reference.message_id == sent["id"]
        assert isinstance(reply.reference.resolved, discord.Message)
        assert reply.reference.resolved.content == "hi alice"


async def test_content_hidden_without_message_content_intent(fake: FakeDiscord) -> None:
    async with running_bot(fake, message_content=False) as bot:
        await fake.push_message(CHANNEL_ID, "secret", author_id=ALICE)
        assert (await bot.next_message()).content == ""
        await fake.push_message(CHANNEL_ID, "visible", author_id=ALICE, mentions_bot=True)
        assert (await bot.next_message()).content == f"<@{BOT_ID}> visible"
        await fake.push_message(fake.open_dm(ALICE), "dm text", author_id=ALICE)
        assert (await bot.next_message()).content == "dm text"


async def test_over_long_message_raises_http_exception(fake: FakeDiscord) -> None:
    async with running_bot(fake) as bot:
        channel = bot.client.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as excinfo:
            await channel.send("x" * 2001)
        assert excinfo.value.status == 400 and excinfo.value.code == 50035
        assert fake.sent == []
        await channel.send("x" * 2000)
        assert len(fake.sent) == 1


@pytest.mark.parametrize("global_", [False, True])
async def test_injected_429_is_retried(fake: FakeDiscord, global_: bool) -> None:
    async with running_bot(fake) as bot:
        channel = bot.client.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        fake.inject_429("/messages", retry_after=0.3, global_=global_)
        started = time.monotonic()
        message = await channel.send("after the rate limit")
        assert time.monotonic() - started >= 0.3
        assert message.content == "after the rate limit"
        statuses = [r["status"] for r in fake.requests if r["path"].endswith("/messages")]
        assert statuses == [429, 200]
        assert [s["content"] for s in fake.sent] == ["after the rate limit"]


async def test_gateway_close_is_followed_by_resume(fake: FakeDiscord) -> None:
    async with running_bot(fake) as bot:
        assert await fake.close_gateway(4000) == 1
        # Pushed while the bot is away (the old socket is closed, the RESUME not yet in):
        # kept in the session and replayed on RESUME.
        await fake.push_message(CHANNEL_ID, "while away", author_id=ALICE)
        await fake.wait_until(lambda: fake.resume_count == 1 and fake.connected, timeout=5.0)
        resumes = [p["d"] for p in fake.gateway_received if p["op"] == 6]
        assert len(resumes) == 1 and resumes[0]["token"] == fake.token
        await fake.push_message(CHANNEL_ID, "after resume", author_id=ALICE)
        assert (await bot.next_message()).content == "while away"
        assert (await bot.next_message()).content == "after resume"
        assert fake.identify_count == 1
        assert fake.replayed_count == 1


async def test_invalidated_session_reidentifies(fake: FakeDiscord) -> None:
    async with running_bot(fake) as bot:
        fake.invalidate_sessions()
        await fake.close_gateway(4000)
        await fake.wait_until(lambda: fake.identify_count == 2 and fake.connected, timeout=5.0)
        assert fake.resume_count == 1
        await fake.push_message(CHANNEL_ID, "fresh session", author_id=ALICE)
        assert (await bot.next_message()).content == "fresh session"


async def test_dm_round_trip(fake: FakeDiscord) -> None:
    async with running_bot(fake) as bot:
        dm_id = fake.open_dm(ALICE)
        await fake.push_message(dm_id, "psst", author_id=ALICE)
        message = await bot.next_message()
        assert message.guild is None and message.channel.id == dm_id
        assert message.content == "psst"
        await message.channel.send("dm reply")
        (sent,) = await fake.wait_for_sent(lambda r: r["content"] == "dm reply")
        assert sent["channel_id"] == dm_id and sent["guild_id"] is None

        # Bot-initiated DM: fetch the user, open the channel, send.
        bob = await bot.client.fetch_user(BOB)
        await bob.send("hello bob")
        (sent,) = await fake.wait_for_sent(lambda r: r["content"] == "hello bob")
        assert sent["channel_id"] == fake.open_dm(BOB)


class ApproveView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.pressed: asyncio.Queue[discord.Interaction] = asyncio.Queue()

    @discord.ui.button(label="Approve", custom_id="mirror:approve")
    async def approve(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.pressed.put_nowait(interaction)
        await interaction.response.send_message("approved")


async def test_button_press_reaches_persistent_view(fake: FakeDiscord) -> None:
    view = ApproveView()
    async with running_bot(fake, views=(view,)) as bot:
        # A press on a message this process never sent (e.g. before a restart): only the
        # persistent registration (message id None) can route it.
        pushed = await fake.push_interaction(CHANNEL_ID, "mirror:approve", user_id=ALICE)
        interaction = await asyncio.wait_for(view.pressed.get(), 5.0)
        assert interaction.id == int(pushed["id"])
        assert interaction.user.id == ALICE
        assert isinstance(interaction.user, discord.Member)
        response = await fake.wait_for_interaction_response()
        assert response["type"] == 4 and response["content"] == "approved"
        assert response["interaction_id"] == interaction.id

        # A press on a message the bot sent with the view attached.
        channel = bot.client.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        await channel.send("approve?", view=view)
        (sent,) = await fake.wait_for_sent(lambda r: r["content"] == "approve?")
        button = sent["components"][0]["components"][0]
        assert button["custom_id"] == "mirror:approve"
        await fake.push_interaction(
            fake.open_dm(BOB), "mirror:approve", user_id=BOB, message_id=None
        )
        dm_press = await asyncio.wait_for(view.pressed.get(), 5.0)
        assert dm_press.guild is None and dm_press.user.id == BOB
        await fake.push_interaction(
            CHANNEL_ID, "mirror:approve", user_id=BOB, message_id=sent["id"]
        )
        press = await asyncio.wait_for(view.pressed.get(), 5.0)
        assert press.message is not None and press.message.id == sent["id"]
        await fake.wait_until(lambda: len(fake.interaction_responses) == 3, timeout=5.0)


async def test_unknown_route_is_recorded(fake: FakeDiscord) -> None:
    async with running_bot(fake) as bot:
        route = discord.http.Route("GET", "/guilds/{guild_id}/audit-logs", guild_id=GUILD_ID)
        with pytest.raises(discord.NotFound):
            await bot.client.http.request(route)
        assert fake.unknown_requests[-1]["path"] == f"/api/v10/guilds/{GUILD_ID}/audit-logs"


async def test_cli_mode_serves_control_routes() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.discord_api",
            "--port",
            "0",
            "--guild",
            f"{GUILD_ID}:Mirror Test:{CHANNEL_ID}:general",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 10.0)
        assert line.startswith("READY http://127.0.0.1:")
        base = line.split()[1]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/_fake/state") as response:
                state = (await response.json())["result"]
            assert state["api_base"] == f"{base}/api/v10" and state["connected"] is False
            body = {"channel_id": CHANNEL_ID, "content": "hi", "author_id": ALICE}
            async with http.post(f"{base}/_fake/push_message", json=body) as response:
                assert response.status == 409  # no bot connected yet
            headers = {"Authorization": "Bot TEST.TOKEN"}
            url = f"{base}/api/v10/channels/{CHANNEL_ID}/messages"
            async with http.post(url, json={"content": "from cli"}, headers=headers) as response:
                assert response.status == 200
            async with http.get(f"{base}/_fake/sent") as response:
                sent = (await response.json())["result"]
            assert [s["content"] for s in sent] == ["from cli"]
            assert json.dumps(sent)  # records are plain JSON
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(process.wait, 10)
        if process.stdout is not None:
            process.stdout.close()
    assert returncode == 0


async def test_application_commands_are_checked_like_discord_and_only_registered_ones_run(
    fake: FakeDiscord,
) -> None:
    url = f"{fake.api_base}/applications/{fake.application_id}/commands"
    headers = {"Authorization": f"Bot {fake.token}"}
    good = [{"name": "deny-pair", "description": "refuse a request", "type": 1}]
    async with aiohttp.ClientSession(headers=headers) as http:
        for bad in (
            [{"name": "Deny Pair", "description": "spaces and capitals", "type": 1}],
            [{"name": "help", "description": "", "type": 1}],
            good + good,  # one name twice
        ):
            async with http.put(url, json=bad) as response:
                assert response.status == 400
        assert fake.application_commands == []
        async with http.put(url, json=good) as response:
            assert response.status == 200
            [registered] = await response.json()
        async with http.put(url, json=good) as response:  # an overwrite keeps the id
            assert (await response.json())[0]["id"] == registered["id"]
    assert [c["name"] for c in fake.application_commands] == ["deny-pair"]
    with pytest.raises(KeyError):
        await fake.push_slash_command(CHANNEL_ID, "help", user_id=ALICE, guild_id=GUILD_ID)
