"""The Discord entrance: the persona in Discord servers and DMs, through discord.py.

Turns gateway events into `Incoming` for the shared `Instance`, sends replies split to
Discord's 2000-character limit, delivers outbox rows for entrance "discord" (coordinator
items arrive by DM with buttons) and applies button presses. Discord does not replay what
was posted while no session was open, so after each new session the entrance reads the
channels' recent history and answers what it missed (`catch_up`). It knows everything about
Discord (ids, limits, mentions, intents, endpoints) and nothing about policy: who may act
as coordinator, what to answer and what to remember belong to `bot/`. This is the only
module that imports discord.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl

from bot.config import Config
from bot.coordinator import COMMANDS, parse_command
from bot.entrance import EntranceFailure
from bot.instance import Instance
from bot.models import Author, ConversationKind, Incoming, OutboxItem

log = logging.getLogger(__name__)

ENTRANCE = "discord"
MESSAGE_LIMIT = 2000
BUTTON_PREFIX = "mirror:"
GUILD_READY_TIMEOUT_S = 0.5
TOKEN_REFUSED = "the Discord token was refused: check MIRROR_DISCORD_TOKEN"
INTENT_REFUSED = (
    "Discord refused the message_content intent: enable 'Message Content Intent' for the bot "
    "in the Developer Portal (Bot → Privileged Gateway Intents)"
)
REFUSED = "Only my coordinator can do that."
COMMANDS_ONLY_IN_DMS = (
    "Coordinator commands work only in a DM with me, so nothing private is shown to the server."
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

# -------------------------------------------------------------------- splitting replies

_FENCE_LINE = re.compile(r" {0,3}```")
_CLOSER = "\n```"
# A code block reopened in the next chunk keeps its language tag ("```python"); a longer
# info string is not repeated, so that every piece of a line fits next to the opener.
_MAX_REOPEN = 32
_MIN_LIMIT = 100


@dataclass(frozen=True)
class _Piece:
    """A line of the text, or part of a line too long for one message."""

    text: str
    joined: bool  # continues the previous piece's line (no newline between them)
    fence_before: str | None  # the fence line of the code block open where this piece starts
    fence_after: str | None  # ... and where it ends
    is_fence: bool

    @property
    def blank(self) -> bool:
        return not self.joined and not self.text.strip()


def is_fence_line(line: str) -> bool:
    """A line that opens or closes a ``` code block."""
    return _FENCE_LINE.match(line) is not None


def _reopen(fence_line: str) -> str:
    stripped = fence_line.strip()
    return stripped if len(stripped) <= _MAX_REOPEN else "```"


def _break_line(line: str, width: int) -> list[str]:
    """Parts of at most `width` characters, cut after a space when there is one.

    A part does not start with a fence (which would open a code block the text never had)
    unless the line is a run of backticks too long to cut anywhere else.
    """
    parts: list[str] = []
    while len(line) > width:
        cut = line.rfind(" ", width // 2, width) + 1 or width
        safe = cut
        while safe > width // 2 and is_fence_line(line[safe:]):
            safe -= 1
        if not is_fence_line(line[safe:]):
            cut = safe
        parts.append(line[:cut])
        line = line[cut:]
    parts.append(line)
    return parts


def _pieces(text: str, width: int) -> list[_Piece]:
    pieces: list[_Piece] = []
    fence: str | None = None
    for line in text.split("\n"):
        fence_line = is_fence_line(line)
        after = (None if fence is not None else _reopen(line)) if fence_line else fence
        for index, part in enumerate(_break_line(line, width)):
            before = fence if index == 0 else after
            pieces.append(_Piece(part, index > 0, before, after, fence_line and index == 0))
        fence = after
    return pieces


def _block_length(pieces: Sequence[_Piece], start: int) -> int:
    """Characters of the code block opened at `start`, as one message of its own."""
    length = 0
    for index in range(start, len(pieces)):
        piece = pieces[index]
        length += len(piece.text) + (0 if index == start or piece.joined else 1)
        if index > start and piece.fence_after is None:
            return length
    return length + len(_CLOSER)  # left open: closed by the split


def _shows_something(pieces: Sequence[_Piece]) -> bool:
    """Text to read, or a code block the text itself left empty ("```\n```"), not only the
    blank lines of a block cut open (an empty code box sent on its own)."""
    if any(piece.text.strip() and not piece.is_fence for piece in pieces):
        return True
    opened = next((i for i, p in enumerate(pieces) if p.is_fence and p.fence_before is None), None)
    return opened is not None and any(p.fence_after is None for p in pieces[opened + 1 :])


def _render(pieces: Sequence[_Piece], start: int, end: int) -> str:
    """The message holding pieces[start:end]; "" when it would show nothing."""
    # A block cut where only blank lines and a fence of it fall on one side: the previous
    # message closed it already, or the next one opens it; an empty code box would show.
    first = start
    while first < end and pieces[first].blank and pieces[first].fence_before is not None:
        first += 1
    if first < end and pieces[first].is_fence and pieces[first].fence_before is not None:
        start = first + 1
    last = end
    while last > start and pieces[last - 1].blank and pieces[last - 1].fence_after is not None:
        last -= 1
    if last > start and pieces[last - 1].is_fence and pieces[last - 1].fence_before is None:
        end = last - 1
    while start < end and pieces[start].blank and pieces[start].fence_before is None:
        start += 1
    while end > start and pieces[end - 1].blank and pieces[end - 1].fence_after is None:
        end -= 1
    if start == end or not _shows_something(pieces[start:end]):
        return ""
    opener = pieces[start].fence_before
    out = [opener + "\n"] if opener else []
    for index in range(start, end):
        if index > start and not pieces[index].joined:
            out.append("\n")
        out.append(pieces[index].text)
    if pieces[end - 1].fence_after is not None:
        out.append(_CLOSER)
    return "".join(out)


def _fit(pieces: Sequence[_Piece], start: int, limit: int) -> tuple[int, list[int]]:
    """The end of the pieces from `start` that fit in one message, and sizes[k], the size
    of a message holding pieces[start:start + k] (before its closing fence)."""
    opener = pieces[start].fence_before
    sizes = [len(opener) + 1 if opener else 0]
    for index in range(start, len(pieces)):
        piece = pieces[index]
        grown = sizes[-1] + len(piece.text) + (0 if index == start or piece.joined else 1)
        if grown + (len(_CLOSER) if piece.fence_after else 0) > limit:
            return index, sizes
        sizes.append(grown)
    return len(pieces), sizes


def _best_cut(pieces: Sequence[_Piece], start: int, end: int, sizes: list[int], limit: int) -> int:
    """Where to end the chunk that may hold pieces[start:end]: the index of the next start.

    Best is a paragraph break, or just before a code block that then fits whole in the
    next message; then a line break outside code, then one inside code, then mid-line.
    Breaks that leave this chunk less than half full are only taken when nothing else is.
    """
    best, best_score = end, -100
    for cut in range(start + 1, end + 1):
        piece, previous = pieces[cut], pieces[cut - 1]
        full_enough = sizes[cut - start] >= limit // 2
        whole_block = (
            piece.is_fence and piece.fence_before is None and _block_length(pieces, cut) <= limit
        )
        if piece.joined:
            score = 0
        elif piece.fence_before is not None:
            score = 1
        elif whole_block or piece.blank or (previous.blank and previous.fence_after is None):
            score = 3
        else:
            score = 2
        if not (full_enough or whole_block):
            score -= 4
        if score >= best_score:
            best, best_score = cut, score
    return best


def split_for_discord(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split a reply into messages of at most `limit` characters, in order.

    Prefers paragraph and line breaks. A ``` code block cut between two messages is closed
    at the end of the first and reopened, with its language tag, at the start of the next,
    so every message renders on its own; a block the text leaves open is closed. Blank
    lines at the edges of a message are dropped (Discord trims them anyway), and so is a
    fence of a cut block with nothing of the block beside it: no empty code boxes.
    """
    if limit < _MIN_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_LIMIT}")
    pieces = _pieces(text, limit - (_MAX_REOPEN + 1 + len(_CLOSER)))
    chunks: list[str] = []
    start = 0
    while start < len(pieces):
        end, sizes = _fit(pieces, start, limit)
        cut = end if end == len(pieces) else _best_cut(pieces, start, end, sizes, limit)
        chunk = _render(pieces, start, cut)
        if chunk:
            chunks.append(chunk)
        start = cut
    return chunks


# -------------------------------------------------------------------- reading messages


def text_for_persona(
    content: str,
    *,
    me: int,
    my_roles: Sequence[int] = (),
    names: Mapping[int, str] | None = None,
) -> str:
    """Message text as the persona reads it: its own mention removed, others as @name."""
    own = [rf"<@!?{me}>"] + [rf"<@&{role}>" for role in my_roles]
    text = re.sub(rf"(?:{'|'.join(own)})[ \t]?", "", content)
    known = names or {}
    text = re.sub(
        r"<@!?(\d+)>", lambda m: f"@{known[int(m[1])]}" if int(m[1]) in known else m[0], text
    )
    return text.strip()


def is_coordinator_command(text: str) -> bool:
    command = parse_command(text)
    return command is not None and command.name in COMMANDS


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


def _buttons_view(buttons: object) -> discord.ui.View | None:
    """A persistent view (no timeout) for `payload["buttons"]`: [{"label", "data"}]."""
    if not isinstance(buttons, list) or not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons:
        if isinstance(button, dict) and button.get("label") and button.get("data"):
            view.add_item(
                discord.ui.Button(
                    label=str(button["label"])[:80],
                    custom_id=str(button["data"])[:100],
                    style=discord.ButtonStyle.primary,
                )
            )
    return view if view.children else None


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
        self.settings = config.entrances.discord
        self.secret = secret
        self.instance = Instance(config, instance_id=ENTRANCE, entrance=ENTRANCE)
        self.client = _MirrorClient(self)
        address = config.coordinator.parsed
        self.coordinator_user = address.id if address.entrance == ENTRANCE else None
        if self.coordinator_user is not None and not self.coordinator_user.isdigit():
            log.warning(
                "[coordinator] address %s: a Discord address is the user's numeric id", address
            )
        self._stop = asyncio.Event()
        self._stopping = False
        self._gateway: asyncio.Task[None] | None = None
        self._turns = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._threads: set[int] = set()
        self._seen: dict[int, None] = {}  # insertion-ordered: the oldest is dropped first
        self._catch_up: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        point_discord_at(self.settings.api_base, self.settings.gateway_url)
        try:
            await self._log_in()
            # The instance before the gateway: it holds the entrance's lease, so a second
            # `mirror run discord` stops (or waits, with --standby) before it opens a
            # second gateway session that would answer every message twice.
            await self.instance.start()
            if not await self._connect():
                return
            self.instance.deliver_outbox(self.deliver)
            user = self.client.user
            if user is not None:
                self.instance.add_own_account(str(user.id))
            log.info("discord entrance connected as %s (id %s)", user, user.id if user else "?")
            await self._until_stopped()
        finally:
            await self._shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def _log_in(self) -> None:
        """Check the token over REST (no gateway session yet)."""
        try:
            await self.client.login(self.secret)
        except discord.LoginFailure:
            raise EntranceFailure(TOKEN_REFUSED) from None

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
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.model.timeout_s + 10)
        except TimeoutError:
            log.warning("stopping with %d Discord turn(s) unfinished", self._turns)
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
            await self.instance.memory.record_incoming(incoming, self.instance.instance_id)
            return
        self._turns += 1
        self._idle.clear()
        try:
            if (
                message.guild is not None
                and not message.author.bot
                and is_coordinator_command(incoming.text)
            ):
                # Items show both sides, private ones included: never in a server channel.
                await self.instance.memory.record_incoming(incoming, self.instance.instance_id)
                await self.send_reply(message, COMMANDS_ONLY_IN_DMS)
                return
            async with _typing(message.channel):
                reply = await self.instance.handle(incoming)
            if reply is not None:
                await self.send_reply(message, reply.text)
        finally:
            self._turns -= 1
            if not self._turns:
                self._idle.set()

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
            latest = await self.instance.memory.latest_platform_ids(ENTRANCE)
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

    async def send_reply(self, message: discord.Message, text: str) -> None:
        """Send a reply in chunks; what Discord will not take goes to the outbox for later."""
        channel = message.channel
        chunks = split_for_discord(text)
        for n, chunk in enumerate(chunks):
            extra: dict[str, Any] = {}
            if n == 0:
                extra["reference"] = message.to_reference(fail_if_not_exists=False)
            try:
                await channel.send(
                    chunk,
                    mention_author=False,
                    allowed_mentions=ALLOWED_MENTIONS,
                    # Discord drops a repeated nonce: a retried request cannot post twice.
                    nonce=f"{message.id}-{n}",
                    **extra,
                )
            except discord.HTTPException as exc:
                log.warning(
                    "reply to %s not sent (%s); %d part(s) go to the outbox",
                    message.id,
                    exc,
                    len(chunks) - n,
                )
                for m in range(n, len(chunks)):
                    await self.instance.memory.enqueue(
                        entrance=ENTRANCE,
                        target=str(channel.id),
                        text=chunks[m],
                        payload={"reply_to": str(message.id)} if m == 0 else None,
                        dedupe_key=f"reply:{message.id}:{m}",
                    )
                return
        if isinstance(channel, discord.Thread):
            self._threads.add(channel.id)

    async def deliver(self, item: OutboxItem) -> None:
        """One outbox row: a DM to the coordinator (with buttons), or a channel message."""
        destination = await self._destination(item.target)
        chunks = split_for_discord(item.text)
        view = _buttons_view(item.payload.get("buttons"))
        reply_to = item.payload.get("reply_to")
        for n, chunk in enumerate(chunks):
            extra: dict[str, Any] = {}
            if n == 0 and isinstance(reply_to, str) and reply_to.isdigit():
                extra["reference"] = discord.MessageReference(
                    message_id=int(reply_to), channel_id=int(item.target), fail_if_not_exists=False
                )
            if n == len(chunks) - 1 and view is not None:
                extra["view"] = view
            await destination.send(
                chunk,
                mention_author=False,
                allowed_mentions=ALLOWED_MENTIONS,
                nonce=f"outbox-{item.id}-{n}",
                **extra,
            )
        if view is not None:
            view.stop()  # presses are handled by on_interaction, with no per-message state

    async def _destination(self, target: str) -> discord.abc.Messageable:
        if not target.isdigit():
            raise ValueError(f"{target!r} is not a Discord user or channel id")
        if target == self.coordinator_user:
            user = self.client.get_user(int(target)) or await self.client.fetch_user(int(target))
            return user.dm_channel or await user.create_dm()
        channel = self.client.get_channel(int(target))
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self.client.get_partial_messageable(int(target))

    # ---------------------------------------------------------------- buttons

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A press on a coordinator button; works for any message, before or after a restart."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: Any = interaction.data or {}
        custom_id = str(data.get("custom_id", ""))
        if not custom_id.startswith(BUTTON_PREFIX):
            return
        user_id = str(interaction.user.id)
        # Only the coordinator, and only in their DM (where items are sent).
        if user_id != self.coordinator_user or interaction.guild_id is not None:
            await self.instance.memory.audit(
                f"{ENTRANCE}:{user_id}",
                "coordinator.refused",
                "button",
                data=custom_id,
                channel=str(interaction.channel_id),
            )
            log.warning("refused a button press from %s in %s", user_id, interaction.channel_id)
            await interaction.response.send_message(REFUSED, ephemeral=True)
            return
        outcome = await self.instance.press(user_id, custom_id, private=True)
        if not outcome.changed:
            await interaction.response.send_message(outcome.text, ephemeral=True)
            return
        original = interaction.message.content if interaction.message else ""
        decision = f"\n\nDecision: {outcome.text}"
        content = original[: MESSAGE_LIMIT - len(decision)] + decision
        await interaction.response.edit_message(content=content[:MESSAGE_LIMIT], view=None)
