"""The Discord entrance: the persona in Discord servers and DMs, through discord.py.

Turns gateway events into `Incoming` for the shared `Instance` (its only door into the
core), gives it `send` — one message to a channel or a DM, buttons when asked — and hands
button presses to `Instance.press`. The commands `bot.commands` declares are registered as
application (slash) commands at start; invoking one is the same command as typing it (the
same `Instance.handle`, recorded and answered once), answered in the interaction.
Splitting to Discord's 2000-character limit, the order of parts, retries and the outbox are
the core's; who may press a button is too. Discord does not replay what was posted while
no session was open, so after each new session the entrance reads the channels' recent
history and answers what it missed (`catch_up`). It knows everything about Discord (ids,
limits, mentions, intents, endpoints) and nothing about policy: who may act as
coordinator, what to answer and what to remember belong to `bot/`. This is the only module
that imports discord.py; the pure text rules are in `splitting` and `reading`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from adapters.discord.manifest import MANIFEST
from adapters.discord.reading import text_for_persona
from adapters.discord.splitting import MESSAGE_LIMIT, split_for_discord
from bot.commands import DECLARATIONS, Declaration
from bot.config import Config
from bot.entrance import EntranceFailure
from bot.instance import Instance
from bot.models import Author, ConversationKind, Incoming
from bot.outbox import Button, Unreachable
from bot.timeouts import wait_event

log = logging.getLogger(__name__)

ENTRANCE = MANIFEST.name
BUTTON_PREFIX = "mirror:"
GUILD_READY_TIMEOUT_S = 0.5
RECONNECT_FIRST_S = 1.0  # an unreachable API at start: retried after 1 s, 2 s, … 30 s
RECONNECT_MAX_S = 30.0
TOKEN_REFUSED = "the Discord token was refused: check MIRROR_DISCORD_TOKEN"
INTENT_REFUSED = (
    "Discord refused the message_content intent: enable 'Message Content Intent' for the bot "
    "in the Developer Portal (Bot → Privileged Gateway Intents)"
)
# Catching up after downtime: per channel, at most this many messages, none older than this.
CATCH_UP_LIMIT = 50
CATCH_UP_WINDOW = datetime.timedelta(hours=24)
CATCH_UP_CHANNELS_AT_ONCE = 4
# Message ids this process has taken (live or from history), so none is handled twice.
SEEN_LIMIT = 10_000
# Replies may ping people by id, never @everyone or a role, and never the person answered.
ALLOWED_MENTIONS = discord.AllowedMentions(
    everyone=False, roles=False, users=True, replied_user=False
)
SLASH_DESCRIPTION_LIMIT = 100  # characters of an application command's description
SLASH_ANSWER_WITHIN_S = 2.0  # Discord drops an interaction not answered within 3 s
DMS_ONLY = app_commands.AppCommandContext(guild=False, dm_channel=True, private_channel=True)

# -------------------------------------------------------------------- reading messages


def conversation_kind(channel: object) -> ConversationKind:
    if isinstance(channel, discord.Thread):
        return "thread"
    if isinstance(channel, discord.DMChannel):
        return "dm"
    return "group"


def conversation_title(channel: object) -> str | None:
    if isinstance(channel, discord.DMChannel):
        recipient = channel.recipient
        return f"DM with {recipient.display_name}" if recipient else None
    name = getattr(channel, "name", None)
    guild = getattr(channel, "guild", None)
    if name and guild is not None:
        return f"#{name} ({guild.name})"
    return None


def _buttons_view(buttons: Sequence[Button]) -> discord.ui.View | None:
    """A persistent view (no timeout) with these buttons; presses reach `on_interaction`."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(
            discord.ui.Button(
                label=button.label[:80],
                custom_id=button.data[:100],
                style=discord.ButtonStyle.primary,
            )
        )
    return view


@contextlib.asynccontextmanager
async def _typing(channel: discord.abc.Messageable) -> AsyncIterator[None]:
    """Show "typing…" while the block runs; a failure to show it never fails the turn."""
    typing = channel.typing()
    try:
        await typing.__aenter__()
        shown = True
    except (discord.HTTPException, OSError) as exc:
        log.debug("typing indicator failed: %s", exc)
        shown = False
    try:
        yield
    finally:
        if shown:
            await typing.__aexit__(None, None, None)


def point_discord_at(api_base: str, gateway_url: str) -> None:
    """discord.py has no base-URL option: it reads these two class attributes."""
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def intents() -> discord.Intents:
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


def _failure(exc: BaseException) -> BaseException:
    """What a gateway or login error means for the admin."""
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return EntranceFailure(INTENT_REFUSED)
    if isinstance(exc, discord.LoginFailure) or (
        isinstance(exc, discord.ConnectionClosed) and exc.code == 4004
    ):
        return EntranceFailure(TOKEN_REFUSED)
    return exc


# -------------------------------------------------------------------- slash commands


def slash_commands(entrance: DiscordEntrance) -> list[app_commands.Command[Any, Any, None]]:
    """Every declared command as an application command with one optional free-text option,
    `arguments` (the words typed after the name). Discord cannot show a command to one user
    only, so all are registered: those for a private chat only in DMs, and those for admins
    or the coordinator hidden in servers from members without the Administrator permission
    (the router still decides who may use what, as for typed commands)."""
    return [_slash_command(entrance, item) for item in DECLARATIONS]


def _slash_command(
    entrance: DiscordEntrance, item: Declaration
) -> app_commands.Command[Any, Any, None]:
    name = item.name
    if item.args:

        @app_commands.describe(arguments=item.args[:SLASH_DESCRIPTION_LIMIT])
        async def with_arguments(
            interaction: discord.Interaction, arguments: str | None = None
        ) -> None:
            await entrance.on_slash(interaction, name, arguments)

        callback: Any = with_arguments
    else:

        async def bare(interaction: discord.Interaction) -> None:
            await entrance.on_slash(interaction, name, None)

        callback = bare
    description = item.help + (" (in a DM)" if item.private_only else "")
    command: app_commands.Command[Any, Any, None] = app_commands.Command(
        name=name,
        description=description[:SLASH_DESCRIPTION_LIMIT],
        callback=callback,
    )
    if item.private_only:
        command.allowed_contexts = DMS_ONLY
    if item.roles:
        command.default_permissions = discord.Permissions(administrator=True)
    return command


class _MirrorClient(discord.Client):
    """discord.Client whose events go to the entrance."""

    def __init__(self, entrance: DiscordEntrance) -> None:
        # The persona never joins voice: no warning about voice libraries at every start.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(intents=intents(), guild_ready_timeout=GUILD_READY_TIMEOUT_S)
        self.entrance = entrance
        self.connected = asyncio.Event()

    async def on_connect(self) -> None:
        self.connected.set()

    async def on_ready(self) -> None:
        # After every IDENTIFY (a resumed session replays what it missed; this one did not).
        self.entrance.on_ready()

    async def on_message(self, message: discord.Message) -> None:
        await self.entrance.on_message(message)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        await self.entrance.on_interaction(interaction)


class DiscordEntrance:
    """`mirror run discord`: one instance of the persona on Discord."""

    def __init__(self, config: Config, secret: str) -> None:
        self.config = config
        self.settings = MANIFEST.settings_of(config)
        self.secret = secret
        self.instance = Instance(config, instance_id=ENTRANCE, entrance=ENTRANCE, send=self.send)
        self.client = _MirrorClient(self)
        self.tree: app_commands.CommandTree[_MirrorClient] = app_commands.CommandTree(self.client)
        for command in slash_commands(self):
            self.tree.add_command(command)
        address = config.coordinator.parsed
        self.coordinator_user = address.external_id if address.entrance == ENTRANCE else None
        if self.coordinator_user is not None and not self.coordinator_user.isdigit():
            log.warning(
                "[coordinator] address %s: a Discord address is the user's numeric id", address
            )
        self._stop = asyncio.Event()
        self._stopping = False
        self._gateway: asyncio.Task[None] | None = None
        self._threads: set[int] = set()
        self._seen: dict[int, None] = {}  # insertion-ordered: the oldest is dropped first
        self._catch_up: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        point_discord_at(self.settings.api_base, self.settings.gateway_url)
        try:
            if not await self._log_in():
                return
            # The instance before the gateway: it holds the entrance's lease, so a second
            # `mirror run discord` stops (or waits, with --standby) before it opens a
            # second gateway session that would answer every message twice.
            await self.instance.start()
            if not await self._connect():
                return
            self.instance.deliver_outbox()
            await self._register_commands()
            user = self.client.user
            if user is not None:
                self.instance.add_own_account(str(user.id))
            log.info("discord entrance connected as %s (id %s)", user, user.id if user else "?")
            await self._until_stopped()
        finally:
            await self._shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def _register_commands(self) -> None:
        """Publish the slash commands (one bulk overwrite: unchanged ones stay as they are).
        A refusal is logged; typed commands work without them."""
        try:
            registered = await self.tree.sync()
        except (discord.HTTPException, discord.app_commands.AppCommandError) as exc:
            log.warning("discord: the slash commands were not registered: %s", exc)
            return
        log.info("discord: %d slash commands registered", len(registered))

    async def _log_in(self) -> bool:
        """Check the token over REST (no gateway session yet); False when a stop came first.

        An unreachable API (no network yet, a DNS failure, a 5xx) is retried with capped
        backoff, one line per attempt, as Telegram's start is; a refused token is not.
        """
        delay = RECONNECT_FIRST_S
        while not self._stop.is_set():
            try:
                await self.client.login(self.secret)
                return True
            except discord.LoginFailure:
                raise EntranceFailure(TOKEN_REFUSED) from None
            except (OSError, aiohttp.ClientError, TimeoutError, discord.DiscordServerError) as exc:
                log.warning(
                    "discord: cannot reach the API at %s (%s); retrying in %.0f s",
                    self.settings.api_base,
                    exc or type(exc).__name__,
                    delay,
                )
            # login() opened an HTTP session; close it, and its connector, before the next try.
            await self.client.http.close()
            self.client.http.connector = discord.utils.MISSING
            await wait_event(self._stop, delay)
            delay = min(delay * 2, RECONNECT_MAX_S)
        return False

    async def _connect(self) -> bool:
        """Open the gateway session; False when a stop came first."""
        self._gateway = asyncio.create_task(
            self.client.connect(reconnect=True), name="discord:gateway"
        )
        connected = asyncio.create_task(self.client.connected.wait())
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait(
                {self._gateway, connected, stop}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connected.cancel()
            stop.cancel()
        if self._gateway.done():
            self._raise_gateway_end()
        return not self._stop.is_set()

    async def _until_stopped(self) -> None:
        assert self._gateway is not None
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({self._gateway, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not self._stop.is_set():
            self._raise_gateway_end()

    def _raise_gateway_end(self) -> None:
        assert self._gateway is not None
        exc = self._gateway.exception()
        if exc is None:
            raise RuntimeError("the Discord gateway connection ended")
        failure = _failure(exc)
        if failure is exc:
            raise exc
        raise failure from None

    async def _shutdown(self) -> None:
        """Finish the turns in flight (and their replies), then disconnect and stop."""
        self._stopping = True
        if self.instance.started:
            await self.instance.settle()  # while the client can still send
        if self._catch_up is not None:
            self._catch_up.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._catch_up
        await self.client.close()
        if self._gateway is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._gateway, 10)
        if self.instance.started:
            await self.instance.stop()

    # ---------------------------------------------------------------- incoming messages

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if me is None or message.author.id == me.id:
            return  # our own messages come back from the gateway; mind recorded them
        if not self._first_sight(message.id):
            return  # both live and in the history read after a reconnect
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return  # joins, pins, thread notices
        incoming = self.incoming_from(message, me)
        # Bots go to the guard too: it refuses those not allowlisted (recorded, with why)
        # and holds allowlisted ones to the bot-exchange budget.
        if self._stopping or not self.addressed(message, me):
            await self.instance.observe(incoming)
            return
        await self.instance.handle(incoming, while_thinking=_typing(message.channel))

    def _first_sight(self, message_id: int) -> bool:
        """True the first time this process takes a message (live or from history)."""
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        if len(self._seen) > SEEN_LIMIT:
            del self._seen[next(iter(self._seen))]
        return True

    def incoming_from(self, message: discord.Message, me: discord.ClientUser) -> Incoming:
        names = {user.id: user.display_name for user in message.mentions}
        text = text_for_persona(
            message.content, me=me.id, my_roles=self._my_role_ids(message, me), names=names
        )
        attachments = [f"[attachment: {a.filename}]" for a in message.attachments]
        text = "\n".join(part for part in [text, *attachments] if part)
        reference = message.reference
        places = [str(message.guild.id)] if message.guild is not None else []
        if isinstance(message.channel, discord.Thread) and message.channel.parent_id:
            places.append(str(message.channel.parent_id))
        return Incoming(
            entrance=ENTRANCE,
            conversation_id=str(message.channel.id),
            conversation_kind=conversation_kind(message.channel),
            conversation_title=conversation_title(message.channel),
            author=Author(
                external_id=str(message.author.id),
                display_name=message.author.display_name,
                is_bot=message.author.bot,
            ),
            text=text or "(a message with no text)",
            platform_message_id=str(message.id),
            reply_to_platform_id=(
                str(reference.message_id) if reference and reference.message_id else None
            ),
            received_at=message.created_at,
            places=tuple(places),
        )

    def addressed(self, message: discord.Message, me: discord.ClientUser) -> bool:
        """DMs; in servers: a mention (or a reply to us), a configured channel, our threads."""
        channel = message.channel
        if message.guild is None:
            return True
        if any(user.id == me.id for user in message.mentions):
            return True
        if set(self._my_role_ids(message, me)) & {role.id for role in message.role_mentions}:
            return True
        resolved = message.reference.resolved if message.reference else None
        if isinstance(resolved, discord.Message) and resolved.author.id == me.id:
            return True
        ids = {str(channel.id)}
        if isinstance(channel, discord.Thread):
            ids.add(str(channel.parent_id))
            if channel.me is not None or channel.owner_id == me.id or channel.id in self._threads:
                return True
        return bool(ids & set(self.settings.channels))

    @staticmethod
    def _my_role_ids(message: discord.Message, me: discord.ClientUser) -> list[int]:
        """The role Discord made for this bot in the guild (people mention it by mistake)."""
        if message.guild is None:
            return []
        return [
            role.id
            for role in message.guild.roles
            if role.tags is not None and role.tags.bot_id == me.id
        ]

    # ---------------------------------------------------------------- catching up

    def on_ready(self) -> None:
        """A new gateway session (first start, or a reconnect that could not resume)."""
        if self._stopping or (self._catch_up is not None and not self._catch_up.done()):
            return
        self._catch_up = asyncio.create_task(self.catch_up(), name="discord:catch-up")

    async def catch_up(self) -> None:
        """Answer what was posted while no session was open, oldest first, through
        `on_message` (same mention rules; memory.db makes each message count once).

        Reads the channels of every Discord conversation in memory.db (DMs, servers,
        threads) and the configured channels: the messages after the newest one memory.db
        holds, at most CATCH_UP_LIMIT per channel (the newest) and none older than
        CATCH_UP_WINDOW. A memory.db with no Discord message yet has missed nothing: the
        configured channels' old talk is not answered on a first start.
        """
        try:
            latest = await self.instance.newest_platform_ids()
            since = discord.utils.utcnow() - CATCH_UP_WINDOW
            floor = discord.utils.time_snowflake(since, high=True)
            after: dict[int, int] = {}
            for conversation, message_id in latest.items():
                if conversation.isdigit() and message_id.isdigit():
                    after[int(conversation)] = max(int(message_id), floor)
            if latest:
                for channel_id in self.settings.channels:
                    if channel_id.isdigit():
                        after.setdefault(int(channel_id), floor)
            slots = asyncio.Semaphore(CATCH_UP_CHANNELS_AT_ONCE)

            async def one(channel_id: int, after_id: int) -> int:
                async with slots:
                    return await self._catch_up_channel(channel_id, after_id)

            read = await asyncio.gather(*(one(c, a) for c, a in after.items()))
            if any(read):
                log.info(
                    "caught up on %d message(s) posted while disconnected, in %d channel(s)",
                    sum(read),
                    sum(1 for n in read if n),
                )
        except Exception:
            log.exception("catching up on Discord history failed")

    async def _catch_up_channel(self, channel_id: int, after_id: int) -> int:
        """Feed one channel's missed messages to `on_message`; returns how many (not ours)."""
        try:
            channel = await self._history_channel(channel_id)
            last = getattr(channel, "last_message_id", None)
            if channel is None or (isinstance(last, int) and last <= after_id):
                return 0
            newest_first = [
                message
                async for message in channel.history(
                    limit=CATCH_UP_LIMIT, after=discord.Object(after_id), oldest_first=False
                )
            ]
        except discord.HTTPException as exc:
            log.warning("could not read the history of Discord channel %s: %s", channel_id, exc)
            return 0
        except Exception:
            log.exception("could not read the history of Discord channel %s", channel_id)
            return 0
        me = self.client.user
        read = 0
        for message in reversed(newest_first):
            if self._stopping:
                break
            if me is None or message.author.id != me.id:
                read += 1
            try:
                await self.on_message(message)
            except Exception:
                log.exception("catching up on Discord message %s failed", message.id)
        return read

    async def _history_channel(self, channel_id: int) -> discord.abc.Messageable | None:
        """The channel (a DM, server channel or thread) whose history can be read."""
        channel = self.client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.client.fetch_channel(channel_id)
            except (discord.NotFound, discord.Forbidden) as exc:
                log.info("not catching up on Discord channel %s: %s", channel_id, exc)
                return None
        return channel if isinstance(channel, discord.abc.Messageable) else None

    # ---------------------------------------------------------------- sending

    async def send(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Sequence[Button] = (),
        key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        """One message (already split to fit) to a channel, thread or the coordinator's DM.

        Raises discord.HTTPException when Discord will not take it; `bot.instance` queues
        what did not arrive. `key` becomes the nonce: Discord drops a repeated nonce, so a
        retried request cannot post twice.
        """
        destination = await self._destination(target)
        extras: dict[str, Any] = {}
        if reply_to is not None and reply_to.isdigit() and target.isdigit():
            extras["reference"] = discord.MessageReference(
                message_id=int(reply_to), channel_id=int(target), fail_if_not_exists=False
            )
        view = _buttons_view(buttons)
        if view is not None:
            extras["view"] = view
        if key:
            extras["nonce"] = key[:25]
        sent = await destination.send(
            text, mention_author=False, allowed_mentions=ALLOWED_MENTIONS, **extras
        )
        if view is not None:
            view.stop()  # presses are handled by on_interaction, with no per-message state
        if isinstance(sent.channel, discord.Thread):
            self._threads.add(sent.channel.id)  # a thread we spoke in: answered from now on
        return str(sent.id)

    async def _destination(self, target: str) -> discord.abc.Messageable:
        if not target.isdigit():
            raise Unreachable(f"{target!r} is not a Discord user or channel id")
        if target == self.coordinator_user:
            user = self.client.get_user(int(target)) or await self.client.fetch_user(int(target))
            return user.dm_channel or await user.create_dm()
        channel = self.client.get_channel(int(target))
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self.client.get_partial_messageable(int(target))

    # ---------------------------------------------------------------- slash commands

    async def on_slash(
        self, interaction: discord.Interaction, name: str, arguments: str | None
    ) -> None:
        """A slash command: the text it stands for ("/resolve 12 A") goes through
        `Instance.handle` like a typed command (recorded, answered once, who may do what
        decided in bot/), and the answer is the interaction's response."""
        channel = interaction.channel
        private = interaction.guild_id is None
        text = f"/{name} {arguments.strip()}" if arguments and arguments.strip() else f"/{name}"
        incoming = Incoming(
            entrance=ENTRANCE,
            conversation_id=str(interaction.channel_id),
            conversation_kind=conversation_kind(channel) if not private else "dm",
            conversation_title=conversation_title(channel),
            author=Author(
                external_id=str(interaction.user.id),
                display_name=interaction.user.display_name,
                is_bot=interaction.user.bot,
            ),
            text=text,
            # An interaction id is a snowflake like a message id: ordered in time, unique.
            platform_message_id=str(interaction.id),
            received_at=interaction.created_at,
        )
        # Discord waits 3 s for a response: a command answers in milliseconds, but one held
        # up (memory.db busy) is deferred ("thinking…") and its answer follows.
        handling = asyncio.ensure_future(self.instance.handle(incoming, deliver=False))
        try:
            reply = await asyncio.wait_for(asyncio.shield(handling), SLASH_ANSWER_WITHIN_S)
        except TimeoutError:
            await interaction.response.defer(thinking=True)
            reply = await handling
        answer = reply.text if reply is not None and reply.text.strip() else None
        parts = split_for_discord(answer) if answer else ["Already answered."]
        if not interaction.response.is_done():
            first = parts.pop(0)
            await interaction.response.send_message(first, allowed_mentions=ALLOWED_MENTIONS)
        for part in parts:
            await interaction.followup.send(part, allowed_mentions=ALLOWED_MENTIONS)

    # ---------------------------------------------------------------- buttons

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A press on a coordinator button; works for any message, before or after a restart."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: Any = interaction.data or {}
        custom_id = str(data.get("custom_id", ""))
        if not custom_id.startswith(BUTTON_PREFIX):
            return
        # Who may press what is decided in bot/; a press outside a server is in a DM.
        outcome = await self.instance.press(
            str(interaction.user.id),
            custom_id,
            conversation=str(interaction.channel_id),
            private=interaction.guild_id is None,
        )
        if not outcome.changed:
            await interaction.response.send_message(outcome.text, ephemeral=True)
            return
        original = interaction.message.content if interaction.message else ""
        decision = f"\n\nDecision: {outcome.text}"
        content = original[: MESSAGE_LIMIT - len(decision)] + decision
        await interaction.response.edit_message(content=content[:MESSAGE_LIMIT], view=None)
