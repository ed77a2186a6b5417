"""A fake of Discord's REST API (``/api/v10``) and gateway websocket, served by aiohttp, for tests.

Tests run a real discord.py ``Client`` against it, in the test's own event loop or in a separate
OS process. discord.py has no base-URL option, so the client process must patch two class
attributes *before* ``Client.login()`` / ``Client.start()``::

    import discord.gateway, discord.http, yarl
    discord.http.Route.BASE = fake.api_base                       # "http://127.0.0.1:PORT/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    #                                                     # "ws://127.0.0.1:PORT/gateway"

``Route.BASE`` is read whenever a ``Route`` is built, so it covers every REST call, including
interaction callbacks and webhook follow-ups (``discord.webhook`` uses the same ``Route``).
Note that ``discord.http._set_api_version()`` overwrites ``Route.BASE``; do not call it after
patching. ``DEFAULT_GATEWAY`` is used for the first connection and after an INVALID_SESSION; a
non-sharded ``Client`` never asks ``GET /gateway/bot``. RESUMEs go to ``resume_gateway_url``
from READY, which this fake sets to :attr:`FakeDiscord.gateway_url`, so nothing else needs
patching. discord.py appends ``?v=10&encoding=json&compress=zlib-stream`` (or ``zstd-stream``):
the fake ignores ``compress`` and always sends plain JSON text frames, which discord.py accepts
(it only decompresses binary frames). The query of every connection is kept in
:attr:`FakeDiscord.gateway_connections`. Pass ``guild_ready_timeout=0.1`` (or similar) to the
``Client``, or ``on_ready`` fires only 2 s after the last GUILD_CREATE.

What is faked:

* Start-up: ``GET /users/@me`` (401 for a wrong token, so ``login`` raises LoginFailure),
  ``GET /oauth2/applications/@me``, ``GET /gateway`` and ``GET /gateway/bot``.
* Gateway: HELLO, heartbeat ACK, IDENTIFY -> READY (guilds unavailable) + one GUILD_CREATE per
  guild, RESUME -> replay of the missed events + RESUMED (unknown session: INVALID_SESSION),
  close 4004 on a wrong token, 4014 on refused intents (see ``refuse_privileged`` and
  ``require_intents``).
* History: every message users post and the bot sends is kept per channel (deleted and
  ephemeral ones excepted); ``GET /channels/{id}/messages`` pages it with ``limit`` and one of
  ``before`` / ``after`` / ``around``, newest first, like Discord. Discord does not replay
  messages posted while a bot was disconnected on its next IDENTIFY:
  :meth:`FakeDiscord.store_message` posts such a message (history only, no MESSAGE_CREATE).
* Events: MESSAGE_CREATE (:meth:`FakeDiscord.push_message`; delivered only to sessions with the
  GUILD_MESSAGES / DIRECT_MESSAGES intent, and with an empty content, embeds, attachments and
  components in guilds unless the session has MESSAGE_CONTENT or the bot is mentioned, like
  Discord), INTERACTION_CREATE for component presses (:meth:`FakeDiscord.push_interaction`)
  and slash commands (:meth:`FakeDiscord.push_slash_command`, registered ones only),
  anything else with :meth:`FakeDiscord.dispatch`. Messages the bot sends come back to it as
  MESSAGE_CREATE too, as on Discord (``echo_own_messages=False`` turns that off).
* REST: create / edit / get / delete messages (JSON or multipart ``payload_json``; 2000
  characters at most, else 400 code 50035), reactions, typing, ``GET /channels/{id}``,
  ``POST /users/@me/channels`` (DM), ``GET /users/{id}``, interaction callbacks
  (``?with_response=1`` answered like Discord) and webhook follow-ups / ``@original`` edits;
  global application commands: ``PUT`` (bulk overwrite, names and descriptions checked like
  Discord) and ``GET /applications/{id}/commands``, kept in
  :attr:`FakeDiscord.application_commands`.
  Unknown routes answer 404 ``{"message": "Unknown", "code": 0}`` and are recorded in
  :attr:`FakeDiscord.unknown_requests`.
* Rate limits: :meth:`FakeDiscord.inject_429` answers the next matching requests with a 429
  that discord.py retries (it needs a ``Via`` header, otherwise it assumes a Cloudflare ban).

Wire details that matter: REST answers carry ``Content-Type: application/json`` *exactly*
(discord.py compares the header verbatim and treats ``application/json; charset=utf-8`` as
text, so ``web.json_response`` / ``web.Response(text=..., content_type=...)`` must not be
used); snowflakes are strings on the wire. Records kept for tests (``sent``, ``edits``, ...)
use ``int`` ids.

Run on its own (``python -m tests.fakes.discord_api --port 0``) it prints
``READY http://127.0.0.1:PORT`` and serves until SIGTERM; the test-side API is then reachable
over HTTP under ``/_fake/`` (see :meth:`FakeDiscord._control_routes`).

Deliberate simplifications: one bot; every session gets every event (no sharding); guilds hold
only the bot as a member, with one ``@everyone`` role granting all permissions; permissions are
never checked; message ids are unique across channels; history ignores permissions and the
message-content intent; threads, guild-scoped application commands and MESSAGE_UPDATE events
are not implemented.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.server import FakeServer

JSON = dict[str, Any]

API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway"
DEFAULT_TOKEN = "TEST.TOKEN"
DEFAULT_BOT_USER_ID = 100_000_000_000_000_001
DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_CONTENT_LENGTH = 2000
ALL_PERMISSIONS = str((1 << 53) - 1)

# Gateway opcodes.
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_RESUME = 6
OP_RECONNECT = 7
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

# Gateway intents (bit values from discord.flags.Intents).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Channel and interaction types.
CHANNEL_GUILD_TEXT = 0
CHANNEL_DM = 1
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_COMPONENT = 3
OPTION_STRING = 3
CALLBACK_CHANNEL_MESSAGE = 4
CALLBACK_DEFERRED_CHANNEL_MESSAGE = 5
CALLBACK_UPDATE_MESSAGE = 7
MESSAGE_FLAG_EPHEMERAL = 1 << 6

# Parsed request body, stored on the request by the middleware for the route handlers.
_PAYLOAD: web.RequestKey[JSON | None] = web.RequestKey("payload")
_FILES: web.RequestKey[list[JSON]] = web.RequestKey("files")
_MENTION_RE = re.compile(r"<@!?(\d+)>")
_SNOWFLAKE_KEYS = ("message_id", "channel_id", "guild_id")
_COMMAND_NAME_RE = re.compile(r"^[-_a-z0-9]{1,32}$")  # Discord allows any lowercase letter


class ApiError(Exception):
    """A Discord error answer: HTTP status plus Discord's ``{"message", "code"}`` body."""

    def __init__(self, status: int, message: str, code: int = 0, errors: JSON | None = None):
        super().__init__(f"{status} {message} (code {code})")
        self.status = status
        self.body: JSON = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors


def _json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer whose Content-Type is exactly ``application/json`` (see module docstring)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def _no_content() -> web.Response:
    return web.Response(status=204)


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _int_ids(reference: Any) -> JSON | None:
    """A copy of a message_reference-like dict with its snowflake fields as ints."""
    if not isinstance(reference, dict):
        return None
    result = dict(reference)
    for key in _SNOWFLAKE_KEYS:
        if result.get(key) is not None:
            result[key] = int(result[key])
    return result


@dataclass(eq=False)
class _Connection:
    """One live gateway websocket."""

    ws: web.WebSocketResponse
    query: dict[str, str]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: _Session | None = None
    close_task: asyncio.Task[bool] | None = None

    async def send(self, payload: JSON) -> bool:
        """Send one JSON text frame; False if the socket is already gone."""
        async with self.lock:
            if self.ws.closed:
                return False
            try:
                await self.ws.send_str(json.dumps(payload))
            except (ConnectionError, RuntimeError):
                return False
            return True


@dataclass(eq=False)
class _Session:
    """A gateway session: survives disconnects so that a RESUME can replay missed events."""

    session_id: str
    intents: int
    seq: int = 0
    events: list[JSON] = field(default_factory=list)
    connection: _Connection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _RateLimitInjection:
    pattern: str
    retry_after: float
    remaining: int
    global_: bool


@dataclass
class _Interaction:
    interaction_id: int
    token: str
    channel_id: int
    message_id: int
    responded: bool = False
    original_message_id: int | None = None


class FakeDiscord(FakeServer):
    """In-memory Discord: a world of guilds, channels and users, a REST API and a gateway.

    Use ``await start()`` / ``await stop()`` or ``async with FakeDiscord() as fake:``. Build the
    world (:meth:`add_guild`, :meth:`add_user`) before the bot connects: guilds are announced
    in READY / GUILD_CREATE. All state lives on the instance and is only touched from the
    event loop that serves it.
    """

    def __init__(
        self,
        bot_user_id: int = DEFAULT_BOT_USER_ID,
        bot_username: str = "mirror",
        token: str = DEFAULT_TOKEN,
        *,
        application_id: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval_ms: int = 41_250,
        refuse_privileged: bool = False,
        require_intents: int = 0,
        echo_own_messages: bool = True,
    ) -> None:
        super().__init__(host=host, port=port)
        self.bot_user_id = bot_user_id
        self.bot_username = bot_username
        self.token = token
        self.application_id = application_id if application_id is not None else bot_user_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        #: Close IDENTIFYs that ask for a privileged intent (members, presences, message
        #: content) with 4014, as Discord does when they are not enabled for the application.
        self.refuse_privileged = refuse_privileged
        #: Intent bits every IDENTIFY must carry; a session lacking one is closed with 4014.
        #: (A test convenience: Discord itself would accept it and then withhold data.)
        self.require_intents = require_intents
        self.echo_own_messages = echo_own_messages

        # World.
        self.users: dict[int, JSON] = {}
        self.guilds: dict[int, JSON] = {}
        self.channels: dict[int, JSON] = {}
        self.messages: dict[int, JSON] = {}
        self.add_user(bot_user_id, bot_username, bot=True)

        # Records of what the bot did, in order (test-side API).
        self.sent: list[JSON] = []
        self.edits: list[JSON] = []
        self.deleted: list[JSON] = []
        self.reactions: list[JSON] = []
        self.interaction_responses: list[JSON] = []
        #: The global application commands as Discord holds them after the last PUT.
        self.application_commands: list[JSON] = []
        self.typing: list[int] = []
        self.requests: list[JSON] = []
        self.unknown_requests: list[JSON] = []
        self.gateway_connections: list[JSON] = []
        self.gateway_received: list[JSON] = []
        self.identify_payloads: list[JSON] = []
        self.identify_count = 0
        self.resume_count = 0
        self.replayed_count = 0
        self.heartbeat_count = 0

        self._last_id = 0
        self._dm_by_user: dict[int, int] = {}
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._injections: list[_RateLimitInjection] = []
        self._interactions: dict[int, _Interaction] = {}

    # ------------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(GATEWAY_PATH, self._handle_gateway)
        self._api_routes(app)
        self._control_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._unknown_route)
        return app

    async def stop(self) -> None:
        """Close every gateway connection (code 1001) and shut the server down."""
        for connection in list(self._connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._close_connection(connection, 1001), 2.0)
        await super().stop()

    @property
    def base_url(self) -> str:
        """Root URL of the server, e.g. ``http://127.0.0.1:PORT`` (the same as :attr:`url`)."""
        return self.url

    @property
    def api_base(self) -> str:
        """Value for ``discord.http.Route.BASE``."""
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """Value for ``DiscordWebSocket.DEFAULT_GATEWAY`` (wrap it in ``yarl.URL``)."""
        return f"ws://{self.host}:{self.port}{GATEWAY_PATH}"

    @property
    def connected(self) -> bool:
        """True while a gateway connection has an identified or resumed session."""
        return any(c.session is not None for c in self._connections)

    # ------------------------------------------------------------------ world

    def add_user(self, user_id: int, username: str, bot: bool = False) -> JSON:
        """Register (or replace) a user; returns its wire payload."""
        user: JSON = {
            "id": str(user_id),
            "username": username,
            "discriminator": "0",
            "global_name": None if bot else username,
            "avatar": None,
            "bot": bot,
            "system": False,
            "public_flags": 0,
        }
        self.users[user_id] = user
        return copy.deepcopy(user)

    def add_guild(self, guild_id: int, name: str, channels: Iterable[tuple[int, str]] = ()) -> JSON:
        """Register a guild with text channels ``(channel_id, name)``; returns its GUILD_CREATE."""
        self.guilds[guild_id] = {"id": guild_id, "name": name, "channel_ids": []}
        for position, (channel_id, channel_name) in enumerate(channels):
            self.add_channel(guild_id, channel_id, channel_name, position=position)
        return self.guild_payload(guild_id)

    def add_channel(self, guild_id: int, channel_id: int, name: str, *, position: int = 0) -> JSON:
        """Add a text channel to an existing guild; returns its wire payload."""
        channel: JSON = {
            "id": str(channel_id),
            "type": CHANNEL_GUILD_TEXT,
            "guild_id": str(guild_id),
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        self.guilds[guild_id]["channel_ids"].append(channel_id)
        self.channels[channel_id] = channel
        return copy.deepcopy(channel)

    def open_dm(self, user_id: int, channel_id: int | None = None) -> int:
        """The id of the DM channel between the bot and ``user_id``, created on first use."""
        if user_id in self._dm_by_user:
            return self._dm_by_user[user_id]
        if user_id not in self.users:
            raise KeyError(f"unknown user {user_id}; add_user() it first")
        channel_id = channel_id if channel_id is not None else self._new_id()
        self.channels[channel_id] = {
            "id": str(channel_id),
            "type": CHANNEL_DM,
            "recipients": [copy.deepcopy(self.users[user_id])],
            "last_message_id": None,
            "flags": 0,
        }
        self._dm_by_user[user_id] = channel_id
        return channel_id

    def guild_payload(self, guild_id: int) -> JSON:
        """The GUILD_CREATE payload of a guild, as the bot sees it."""
        guild = self.guilds[guild_id]
        bot_member = self._member_payload(self.bot_user_id, with_user=True)
        return {
            "id": str(guild_id),
            "name": guild["name"],
            "unavailable": False,
            "owner_id": str(self.bot_user_id),
            "icon": None,
            "splash": None,
            "banner": None,
            "description": None,
            "features": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "joined_at": _now_iso(),
            "large": False,
            "member_count": len(self.users),
            "roles": [
                {
                    "id": str(guild_id),
                    "name": "@everyone",
                    "permissions": ALL_PERMISSIONS,
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "channels": [copy.deepcopy(self.channels[c]) for c in guild["channel_ids"]],
            "members": [bot_member],
            "emojis": [],
            "stickers": [],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # ------------------------------------------------------------------ test-side API: events

    async def push_message(
        self,
        channel_id: int,
        content: str,
        *,
        author_id: int,
        guild_id: int | None = None,
        mentions_bot: bool = False,
        message_reference: int | JSON | None = None,
        author_bot: bool = False,
    ) -> JSON:
        """Have ``author_id`` post ``content`` in a channel; dispatch MESSAGE_CREATE to the bot.

        The guild is taken from the channel when ``guild_id`` is None. A channel id that is
        not a known guild channel (with no ``guild_id``) is the DM channel with the author.
        Unknown authors are registered on the fly. ``mentions_bot`` puts the bot in
        ``mentions`` and prefixes ``<@BOT_ID>`` to the content unless it is already there
        (other ``<@id>`` mentions of known users are detected in the content).
        ``message_reference`` is a message id or a reference dict; the referenced message is
        attached as ``referenced_message`` when the fake knows it. Returns the full payload
        (before any per-session content stripping). Raises RuntimeError when no bot has
        identified yet (the message would be lost; see :meth:`wait_until_connected`, or
        :meth:`store_message` for a message posted while the bot is away).
        """
        self._require_session("MESSAGE_CREATE")
        message = self._post_as_user(
            channel_id,
            content,
            author_id=author_id,
            guild_id=guild_id,
            mentions_bot=mentions_bot,
            message_reference=message_reference,
            author_bot=author_bot,
        )
        await self._dispatch_message(message)
        return copy.deepcopy(message)

    def store_message(
        self,
        channel_id: int,
        content: str,
        *,
        author_id: int,
        guild_id: int | None = None,
        mentions_bot: bool = False,
        message_reference: int | JSON | None = None,
        author_bot: bool = False,
    ) -> JSON:
        """Like :meth:`push_message`, but only into the channel's history: no MESSAGE_CREATE.

        For a message posted while the bot is disconnected (Discord does not replay those
        on a new IDENTIFY); the bot sees it only through ``GET /channels/{id}/messages``.
        Works whether or not a bot is connected. Returns the full payload.
        """
        message = self._post_as_user(
            channel_id,
            content,
            author_id=author_id,
            guild_id=guild_id,
            mentions_bot=mentions_bot,
            message_reference=message_reference,
            author_bot=author_bot,
        )
        self._notify()
        return copy.deepcopy(message)

    def history(self, channel_id: int) -> list[JSON]:
        """The channel's messages, oldest first, as ``GET /channels/{id}/messages`` sees them
        (what users and the bot posted, minus deleted and ephemeral messages)."""
        channel = str(channel_id)
        found = [
            m
            for m in self.messages.values()
            if m["channel_id"] == channel and not int(m["flags"]) & MESSAGE_FLAG_EPHEMERAL
        ]
        return sorted(found, key=lambda m: int(m["id"]))

    def _post_as_user(
        self,
        channel_id: int,
        content: str,
        *,
        author_id: int,
        guild_id: int | None,
        mentions_bot: bool,
        message_reference: int | JSON | None,
        author_bot: bool,
    ) -> JSON:
        """Store a user's message in a channel (see :meth:`push_message`); no dispatch."""
        if author_id not in self.users:
            self.add_user(author_id, f"user{author_id}", bot=author_bot)
        author = copy.deepcopy(self.users[author_id])
        author["bot"] = author["bot"] or author_bot

        channel = self.channels.get(channel_id)
        if guild_id is None and channel is not None:
            guild_id = _opt_int(channel.get("guild_id"))
        if channel is None:
            if guild_id is not None:
                raise KeyError(f"unknown channel {channel_id} in guild {guild_id}")
            self.open_dm(author_id, channel_id)
            channel = self.channels[channel_id]

        mention = f"<@{self.bot_user_id}>"
        if mentions_bot and mention not in content and f"<@!{self.bot_user_id}>" not in content:
            content = f"{mention} {content}"
        if isinstance(message_reference, int):
            message_reference = {"message_id": message_reference}
        return self._store_message(
            channel,
            author,
            content,
            message_reference=message_reference,
            with_member=guild_id is not None,
        )

    async def push_interaction(
        self,
        channel_id: int,
        custom_id: str,
        *,
        user_id: int,
        message_id: int | None = None,
        guild_id: int | None = None,
        component_type: int = 2,
        values: list[str] | None = None,
    ) -> JSON:
        """Have ``user_id`` press a component (a button by default) on a bot message.

        ``message_id`` names the message carrying the component (one the bot sent, usually);
        when None a placeholder message by the bot is made up. Dispatches INTERACTION_CREATE;
        the bot's answers land in :attr:`interaction_responses`. Returns the payload.
        Raises RuntimeError when no bot has identified yet.
        """
        self._require_session("INTERACTION_CREATE")
        payload, channel = self._interaction_base(channel_id, user_id, guild_id)
        message = self.messages.get(message_id) if message_id is not None else None
        if message is None:
            message = self._store_message(
                channel,
                copy.deepcopy(self.users[self.bot_user_id]),
                "",
                with_member=False,
                message_id=message_id,
            )
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
        payload.update(type=INTERACTION_COMPONENT, data=data, message=_without_reference(message))
        self._interactions[int(payload["id"])] = _Interaction(
            int(payload["id"]), payload["token"], channel_id, int(message["id"])
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return copy.deepcopy(payload)

    async def push_slash_command(
        self,
        channel_id: int,
        name: str,
        *,
        user_id: int,
        arguments: dict[str, str] | None = None,
        guild_id: int | None = None,
    ) -> JSON:
        """Have ``user_id`` invoke the registered global command ``name`` (string options
        ``arguments``) in ``channel_id``. Dispatches INTERACTION_CREATE; the bot's answers
        land in :attr:`interaction_responses`. Raises KeyError for a command not registered
        (Discord's client offers only those) and RuntimeError when no bot has identified."""
        command = next((c for c in self.application_commands if c["name"] == name), None)
        if command is None:
            raise KeyError(f"no application command {name!r} is registered")
        self._require_session("INTERACTION_CREATE")
        payload, _ = self._interaction_base(channel_id, user_id, guild_id)
        data: JSON = {"id": command["id"], "name": name, "type": 1}
        if arguments:
            data["options"] = [
                {"name": key, "type": OPTION_STRING, "value": value}
                for key, value in arguments.items()
            ]
        payload.update(type=INTERACTION_APPLICATION_COMMAND, data=data)
        self._interactions[int(payload["id"])] = _Interaction(
            int(payload["id"]), payload["token"], channel_id, 0
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return copy.deepcopy(payload)

    def _interaction_base(
        self, channel_id: int, user_id: int, guild_id: int | None
    ) -> tuple[JSON, JSON]:
        """The fields every interaction carries (who, where, a fresh id and token), and the
        channel (a DM opened for ``user_id`` when ``channel_id`` is unknown)."""
        if user_id not in self.users:
            self.add_user(user_id, f"user{user_id}")
        channel = self.channels.get(channel_id)
        if channel is None:
            if guild_id is not None:
                raise KeyError(f"unknown channel {channel_id} in guild {guild_id}")
            self.open_dm(user_id, channel_id)
            channel = self.channels[channel_id]
        if guild_id is None:
            guild_id = _opt_int(channel.get("guild_id"))
        payload: JSON = {
            "id": str(self._new_id()),
            "application_id": str(self.application_id),
            "channel_id": str(channel_id),
            "channel": {**copy.deepcopy(channel), "permissions": ALL_PERMISSIONS},
            "token": f"fake-interaction-{secrets.token_urlsafe(24)}",
            "version": 1,
            "locale": "en-US",
            "app_permissions": ALL_PERMISSIONS,
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["context"] = 0
            member = self._member_payload(user_id, with_user=True)
            member["permissions"] = ALL_PERMISSIONS
            payload["member"] = member
        else:
            payload["context"] = 1
            payload["user"] = copy.deepcopy(self.users[user_id])
        return payload, channel

    async def dispatch(self, event: str, data: JSON) -> None:
        """Dispatch any event to every session (live ones now, disconnected ones on RESUME)."""
        self._require_session(event)
        for session in list(self._sessions.values()):
            await self._dispatch_to(session, event, data)

    def _require_session(self, event: str) -> None:
        if not self._sessions:
            raise RuntimeError(f"cannot dispatch {event}: no gateway session (bot not connected)")

    async def close_gateway(self, code: int = 4000) -> int:
        """Close every live gateway connection with ``code``; sessions stay resumable.

        discord.py RESUMEs after 4000-4003, 4005-4009 and 1000/1001; it gives up on 4004 and
        4010-4014. Returns the number of connections closed.
        """
        connections = list(self._connections)
        for connection in connections:
            await self._close_connection(connection, code)
        return len(connections)

    def invalidate_sessions(self) -> None:
        """Forget every session: the next RESUME gets INVALID_SESSION and re-IDENTIFYs."""
        self._sessions.clear()

    def inject_429(
        self,
        route_substring: str,
        retry_after: float = 0.5,
        times: int = 1,
        global_: bool = False,
    ) -> None:
        """Answer the next ``times`` requests whose ``"METHOD /path"`` contains
        ``route_substring`` (e.g. ``"/messages"`` or ``"POST /api/v10/channels/1/"``) with 429.
        """
        self._injections.append(_RateLimitInjection(route_substring, retry_after, times, global_))

    # ------------------------------------------------------------------ test-side API: waiting

    async def wait_for_sent(
        self,
        predicate: Callable[[JSON], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
        since: int = 0,
    ) -> list[JSON]:
        """Wait until ``count`` entries of ``sent[since:]`` match ``predicate``; return them.

        Raises TimeoutError (listing what was sent) if that does not happen in ``timeout``.
        """

        def check() -> list[JSON] | None:
            found = [r for r in self.sent[since:] if predicate is None or predicate(r)]
            return found[:count] if len(found) >= count else None

        result = await self._wait(check, timeout)
        if result is None:
            seen = [(r["channel_id"], r["content"]) for r in self.sent[since:]]
            raise TimeoutError(f"fewer than {count} matching sent within {timeout}s; {seen}")
        return result

    async def wait_for_interaction_response(
        self, predicate: Callable[[JSON], bool] | None = None, *, timeout: float = 10.0
    ) -> JSON:
        """Wait for the first entry of :attr:`interaction_responses` matching ``predicate``."""

        def check() -> JSON | None:
            return next(
                (r for r in self.interaction_responses if predicate is None or predicate(r)),
                None,
            )

        result = await self._wait(check, timeout)
        if result is None:
            raise TimeoutError(
                f"no matching interaction response within {timeout}s; {self.interaction_responses}"
            )
        return result

    async def wait_until(
        self, condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Wait until ``condition()`` (re-checked on every change in the fake) is true."""
        if await self._wait(lambda: True if condition() else None, timeout) is None:
            raise TimeoutError(f"{what} not met within {timeout}s")

    async def wait_until_connected(self, timeout: float = 10.0) -> None:
        """Wait until a connection has an identified or resumed session."""
        await self.wait_until(lambda: self.connected, timeout=timeout, what="gateway session")

    # ------------------------------------------------------------------ gateway

    async def _handle_gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=0)
        await ws.prepare(request)
        connection = _Connection(ws, dict(request.query))
        self._connections.add(connection)
        self.gateway_connections.append({"query": connection.query})
        self._notify()
        hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-gateway"]}
        await connection.send({"op": OP_HELLO, "d": hello, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                self.gateway_received.append(payload)
                await self._handle_op(connection, payload)
        finally:
            self._connections.discard(connection)
            session = connection.session
            if session is not None and session.connection is connection:
                session.connection = None
            connection.session = None
            self._notify()
            if connection.close_task is not None:
                with contextlib.suppress(Exception):
                    await connection.close_task
        return ws

    async def _handle_op(self, connection: _Connection, payload: JSON) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == OP_HEARTBEAT:
            self.heartbeat_count += 1
            await connection.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY and isinstance(data, dict):
            await self._identify(connection, data)
        elif op == OP_RESUME and isinstance(data, dict):
            await self._resume(connection, data)
        # Presence updates (3), voice (4), member requests (8) ...: recorded, not answered.
        self._notify()

    async def _identify(self, connection: _Connection, data: JSON) -> None:
        self.identify_count += 1
        self.identify_payloads.append(data)
        if data.get("token") != self.token:
            await self._close_connection(connection, 4004, "Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        refused = self.refuse_privileged and intents & PRIVILEGED_INTENTS
        missing = self.require_intents & ~intents
        if refused or missing:
            await self._close_connection(connection, 4014, "Disallowed intent(s).")
            return

        session = _Session(session_id=secrets.token_hex(16), intents=intents)
        async with session.lock:  # events pushed meanwhile wait until GUILD_CREATEs are out
            self._sessions[session.session_id] = session
            self._attach(connection, session)
            ready: JSON = {
                "v": 10,
                "user": {
                    **copy.deepcopy(self.users[self.bot_user_id]),
                    "verified": True,
                    "mfa_enabled": False,
                    "flags": 0,
                    "email": None,
                },
                "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
                "session_id": session.session_id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "geo_ordered_rtc_regions": [],
                "auth": {},
                "_trace": ["fake-gateway"],
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            await self._dispatch_locked(session, "READY", ready)
            for guild_id in self.guilds:
                await self._dispatch_locked(session, "GUILD_CREATE", self.guild_payload(guild_id))

    async def _resume(self, connection: _Connection, data: JSON) -> None:
        self.resume_count += 1
        if data.get("token") != self.token:
            await self._close_connection(connection, 4004, "Authentication failed.")
            return
        session = self._sessions.get(str(data.get("session_id")))
        if session is None:
            await connection.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        last_seq = int(data.get("seq") or 0)
        async with session.lock:
            old = session.connection
            if old is not None and old is not connection:
                old.session = None
                old.close_task = old.close_task or asyncio.create_task(old.ws.close(code=4000))
            self._attach(connection, session)
            for event in session.events:
                if event["s"] > last_seq:
                    self.replayed_count += 1
                    await connection.send(event)
            session.seq += 1
            await connection.send({"op": OP_DISPATCH, "t": "RESUMED", "s": session.seq, "d": {}})

    def _attach(self, connection: _Connection, session: _Session) -> None:
        connection.session = session
        session.connection = connection
        self._notify()

    async def _dispatch_to(self, session: _Session, event: str, data: JSON) -> None:
        async with session.lock:
            await self._dispatch_locked(session, event, data)

    async def _dispatch_locked(self, session: _Session, event: str, data: JSON) -> None:
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        if session.connection is not None:
            await session.connection.send(frame)

    async def _dispatch_message(self, message: JSON) -> None:
        """MESSAGE_CREATE to each session allowed to see it, stripped like Discord does."""
        in_guild = "guild_id" in message
        needed = INTENT_GUILD_MESSAGES if in_guild else INTENT_DIRECT_MESSAGES
        from_bot = int(message["author"]["id"]) == self.bot_user_id
        mentioned = any(int(u["id"]) == self.bot_user_id for u in message["mentions"])
        for session in list(self._sessions.values()):
            if not session.intents & needed:
                continue
            data = copy.deepcopy(message)
            readable = session.intents & INTENT_MESSAGE_CONTENT or mentioned or from_bot
            if in_guild and not readable:
                data.update(content="", embeds=[], attachments=[], components=[])
                data.pop("poll", None)
            await self._dispatch_to(session, "MESSAGE_CREATE", data)

    async def _close_connection(self, connection: _Connection, code: int, reason: str = "") -> None:
        if connection.close_task is None:
            connection.close_task = asyncio.create_task(
                connection.ws.close(code=code, message=reason.encode())
            )
        with contextlib.suppress(Exception):
            await connection.close_task

    # ------------------------------------------------------------------ REST plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Record API requests, apply injected 429s and check the bot token."""
        path = request.path
        if not path.startswith(API_PREFIX + "/"):
            return await handler(request)
        payload, files = await self._read_body(request)
        request[_PAYLOAD] = payload
        request[_FILES] = files
        record: JSON = {
            "method": request.method,
            "path": path,
            "query": dict(request.query),
            "json": payload,
            "files": files,
            "status": None,
        }
        self.requests.append(record)
        try:
            injected = self._take_injection(f"{request.method} {path}")
            if injected is not None:
                response: web.StreamResponse = self._rate_limited(injected, path)
            else:
                self._check_auth(request)
                response = await handler(request)
        except ApiError as exc:
            response = _json_response(exc.body, status=exc.status)
        record["status"] = response.status
        self._notify()
        return response

    def _check_auth(self, request: web.Request) -> None:
        """Every bot route needs ``Authorization: Bot TOKEN``; webhook-token routes do not."""
        route = request.path[len(API_PREFIX) :]
        if route.startswith(("/interactions/", "/webhooks/")):
            return
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise ApiError(401, "401: Unauthorized", 0)

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[JSON | None, list[JSON]]:
        """The JSON payload (plain or multipart ``payload_json``) and uploaded files."""
        if not request.can_read_body:
            return None, []
        if request.content_type == "multipart/form-data":
            form = await request.post()
            files: list[JSON] = []
            payload: JSON | None = None
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    size = len(value.file.read())
                    files.append({"field": name, "filename": value.filename, "size": size})
                elif name == "payload_json":
                    payload = json.loads(str(value))
            return payload, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "400: Bad Request", 50109) from None
        return (body if isinstance(body, dict) else {"_": body}), []

    def _take_injection(self, route: str) -> _RateLimitInjection | None:
        for injection in self._injections:
            if injection.remaining > 0 and injection.pattern in route:
                injection.remaining -= 1
                if injection.remaining == 0:
                    self._injections.remove(injection)
                return injection
        return None

    @staticmethod
    def _rate_limited(injection: _RateLimitInjection, path: str) -> web.Response:
        retry_after = injection.retry_after
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{abs(hash(path)) % 10**8:08d}",
            "X-RateLimit-Scope": "global" if injection.global_ else "user",
        }
        if injection.global_:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": injection.global_,
        }
        return _json_response(body, status=429, headers=headers)

    async def _unknown_route(self, request: web.Request) -> web.Response:
        self.unknown_requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "json": request.get(_PAYLOAD),
            }
        )
        self._notify()
        return _json_response({"message": "Unknown", "code": 0}, status=404)

    # ------------------------------------------------------------------ REST routes

    def _api_routes(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/users/{user_id:\\d+}", self._get_user),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/channels/{channel_id:\\d+}", self._get_channel),
            ("POST", "/channels/{channel_id:\\d+}/typing", self._trigger_typing),
            ("POST", "/channels/{channel_id:\\d+}/messages", self._create_message),
            ("GET", "/channels/{channel_id:\\d+}/messages", self._get_messages),
            ("GET", "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}", self._get_message),
            ("PATCH", "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}", self._edit_message),
            ("DELETE", "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}", self._delete),
            (
                "PUT",
                "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}/reactions/{emoji}/@me",
                self._add_reaction,
            ),
            ("POST", "/interactions/{interaction_id:\\d+}/{token}/callback", self._callback),
            ("PUT", "/applications/{application_id:\\d+}/commands", self._put_commands),
            ("GET", "/applications/{application_id:\\d+}/commands", self._get_commands),
            ("POST", "/webhooks/{application_id:\\d+}/{token}", self._followup),
            (
                "PATCH",
                "/webhooks/{application_id:\\d+}/{token}/messages/@original",
                self._edit_original,
            ),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, API_PREFIX + path, handler)

    def _bot_user_payload(self) -> JSON:
        return {
            **copy.deepcopy(self.users[self.bot_user_id]),
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "locale": "en-US",
            "email": None,
        }

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json_response(self._bot_user_payload())

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self.users.get(int(request.match_info["user_id"]))
        if user is None:
            raise ApiError(404, "Unknown User", 10013)
        return _json_response(user)

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_username,
                "description": "",
                "icon": None,
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": {**copy.deepcopy(self.users[self.bot_user_id]), "bot": False},
                "team": None,
                "bot": self._bot_user_payload(),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    def _channel(self, request: web.Request) -> JSON:
        channel = self.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise ApiError(404, "Unknown Channel", 10003)
        return channel

    def _message(self, request: web.Request) -> JSON:
        channel = self._channel(request)
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None or message["channel_id"] != channel["id"]:
            raise ApiError(404, "Unknown Message", 10008)
        return message

    async def _get_channel(self, request: web.Request) -> web.Response:
        return _json_response(self._channel(request))

    async def _create_dm(self, request: web.Request) -> web.Response:
        payload = _payload(request)
        try:
            user_id = int(payload["recipient_id"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "Invalid Form Body", 50035) from None
        if user_id not in self.users:
            raise ApiError(400, "Invalid Recipient(s)", 50033)
        return _json_response(self.channels[self.open_dm(user_id)])

    async def _trigger_typing(self, request: web.Request) -> web.Response:
        self.typing.append(int(self._channel(request)["id"]))
        return _no_content()

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        payload = _payload(request)
        files: list[JSON] = request[_FILES]
        content = _check_content(payload.get("content"))
        components = payload.get("components") or []
        embeds = payload.get("embeds") or []
        if not (content or components or embeds or files or payload.get("sticker_ids")):
            raise ApiError(400, "Cannot send an empty message", 50006)
        message = self._store_message(
            channel,
            copy.deepcopy(self.users[self.bot_user_id]),
            content,
            message_reference=payload.get("message_reference"),
            with_member="guild_id" in channel,
            components=components,
            embeds=embeds,
            attachments=files,
            flags=int(payload.get("flags") or 0),
        )
        if payload.get("nonce") is not None:
            message["nonce"] = payload["nonce"]
        self.sent.append(
            {
                "id": int(message["id"]),
                "channel_id": int(channel["id"]),
                "guild_id": _opt_int(channel.get("guild_id")),
                "content": content,
                "message_reference": _int_ids(payload.get("message_reference")),
                "components": components,
                "embeds": embeds,
                "attachments": [f["filename"] for f in files],
                "payload": payload,
            }
        )
        self._notify()
        await self._echo(message)
        return _json_response(message)

    async def _get_messages(self, request: web.Request) -> web.Response:
        """Channel history, newest first like Discord: ``limit`` (1-100, default 50) messages
        ``before`` an id (the newest ones before it), ``after`` an id (the oldest ones after
        it) or ``around`` an id (half before it, the rest from it on); only one of the three.
        """
        channel = self._channel(request)
        query = request.query
        try:
            limit = int(query.get("limit", "50"))
            anchors = {
                key: int(query[key]) for key in ("before", "after", "around") if key in query
            }
        except ValueError:
            raise ApiError(400, "Invalid Form Body", 50035) from None
        if not 1 <= limit <= 100 or len(anchors) > 1:
            raise ApiError(400, "Invalid Form Body", 50035)
        history = self.history(int(channel["id"]))  # oldest first
        if "after" in anchors:
            page = [m for m in history if int(m["id"]) > anchors["after"]][:limit]
        elif "around" in anchors:
            older = [m for m in history if int(m["id"]) < anchors["around"]]
            older = older[max(0, len(older) - limit // 2) :]
            rest = [m for m in history if int(m["id"]) >= anchors["around"]]
            page = older + rest[: limit - len(older)]
        else:
            before = anchors.get("before")
            page = [m for m in history if before is None or int(m["id"]) < before][-limit:]
        return _json_response(list(reversed(page)))

    async def _get_message(self, request: web.Request) -> web.Response:
        return _json_response(self._message(request))

    async def _edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        payload = _payload(request)
        self._apply_edit(message, payload)
        self.edits.append(
            {
                "channel_id": int(message["channel_id"]),
                "message_id": int(message["id"]),
                "content": message["content"],
                "components": message["components"],
                "embeds": message["embeds"],
                "payload": payload,
            }
        )
        self._notify()
        return _json_response(message)

    async def _delete(self, request: web.Request) -> web.Response:
        message = self._message(request)
        del self.messages[int(message["id"])]
        self.deleted.append(
            {"channel_id": int(message["channel_id"]), "message_id": int(message["id"])}
        )
        return _no_content()

    async def _add_reaction(self, request: web.Request) -> web.Response:
        message = self._message(request)
        self.reactions.append(
            {
                "channel_id": int(message["channel_id"]),
                "message_id": int(message["id"]),
                "emoji": request.match_info["emoji"],
            }
        )
        return _no_content()

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = self._interactions.get(int(request.match_info["interaction_id"]))
        if interaction is None or interaction.token != request.match_info["token"]:
            raise ApiError(404, "Unknown interaction", 10062)
        if interaction.responded:
            raise ApiError(400, "Interaction has already been acknowledged.", 40060)
        payload = _payload(request)
        callback_type = int(payload.get("type", 0))
        data: JSON = payload.get("data") or {}
        channel = self.channels[interaction.channel_id]
        message: JSON | None = None
        if callback_type == CALLBACK_CHANNEL_MESSAGE:
            content = _check_content(data.get("content"))
            message = self._store_message(
                channel,
                copy.deepcopy(self.users[self.bot_user_id]),
                content,
                with_member="guild_id" in channel,
                components=data.get("components") or [],
                embeds=data.get("embeds") or [],
                flags=int(data.get("flags") or 0),
            )
            interaction.original_message_id = int(message["id"])
        elif callback_type == CALLBACK_UPDATE_MESSAGE:
            message = self.messages.get(interaction.message_id)
            if message is not None:
                self._apply_edit(message, data)
        interaction.responded = True
        self.interaction_responses.append(
            {
                "kind": "callback",
                "interaction_id": interaction.interaction_id,
                "token": interaction.token,
                "type": callback_type,
                "content": data.get("content"),
                "components": data.get("components"),
                "data": data,
            }
        )
        self._notify()
        if callback_type == CALLBACK_CHANNEL_MESSAGE and message is not None:
            if not int(message["flags"]) & MESSAGE_FLAG_EPHEMERAL:
                await self._echo(message)
        if request.query.get("with_response") not in ("1", "true", "True"):
            return _no_content()
        resource: JSON = {"type": callback_type}
        if message is not None:
            resource["message"] = message
        return _json_response(
            {
                "interaction": {
                    "id": str(interaction.interaction_id),
                    "type": INTERACTION_COMPONENT,
                    "activity_instance_id": None,
                    "response_message_id": message["id"] if message is not None else None,
                    "response_message_loading": callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE,
                    "response_message_ephemeral": bool(
                        int(data.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL
                    ),
                },
                "resource": resource,
            }
        )

    async def _put_commands(self, request: web.Request) -> web.Response:
        """Bulk overwrite of the global commands, checked the way Discord checks them."""
        if int(request.match_info["application_id"]) != self.application_id:
            raise ApiError(403, "Missing Access", 50001)
        commands = (_payload(request) or {}).get("_")
        if not isinstance(commands, list):
            raise ApiError(400, "Invalid Form Body", 50035)
        names = [str(c.get("name", "")) for c in commands if isinstance(c, dict)]
        if len(names) != len(commands) or len(set(names)) != len(names) or len(names) > 100:
            raise ApiError(400, "Invalid Form Body", 50035)
        registered: list[JSON] = []
        for command in commands:
            problems = [
                not _COMMAND_NAME_RE.fullmatch(str(command.get("name", ""))),
                not 1 <= len(str(command.get("description") or "")) <= 100,
            ]
            for option in command.get("options") or []:
                problems.append(not _COMMAND_NAME_RE.fullmatch(str(option.get("name", ""))))
                problems.append(not 1 <= len(str(option.get("description") or "")) <= 100)
            if any(problems):
                raise ApiError(400, "Invalid Form Body", 50035)
            old = next((c for c in self.application_commands if c["name"] == command["name"]), None)
            registered.append(
                {
                    "id": old["id"] if old is not None else str(self._new_id()),
                    "application_id": str(self.application_id),
                    "version": str(self._new_id()),
                    "type": int(command.get("type") or 1),
                    "name": command["name"],
                    "description": command["description"],
                    "options": copy.deepcopy(command.get("options") or []),
                    "default_member_permissions": command.get("default_member_permissions"),
                    "dm_permission": command.get("dm_permission", True),
                    "contexts": command.get("contexts"),
                    "integration_types": command.get("integration_types") or [0],
                    "nsfw": bool(command.get("nsfw", False)),
                }
            )
        self.application_commands = registered
        return _json_response(copy.deepcopy(registered))

    async def _get_commands(self, request: web.Request) -> web.Response:
        return _json_response(copy.deepcopy(self.application_commands))

    def _interaction_by_token(self, request: web.Request) -> _Interaction:
        token = request.match_info["token"]
        for interaction in self._interactions.values():
            if interaction.token == token:
                return interaction
        raise ApiError(404, "Unknown Webhook", 10015)

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = self._interaction_by_token(request)
        payload = _payload(request)
        channel = self.channels[interaction.channel_id]
        message = self._store_message(
            channel,
            copy.deepcopy(self.users[self.bot_user_id]),
            _check_content(payload.get("content")),
            with_member="guild_id" in channel,
            components=payload.get("components") or [],
            embeds=payload.get("embeds") or [],
            flags=int(payload.get("flags") or 0),
        )
        if interaction.original_message_id is None:  # follow-up after a deferral
            interaction.original_message_id = int(message["id"])
        self.interaction_responses.append(
            {
                "kind": "followup",
                "interaction_id": interaction.interaction_id,
                "token": interaction.token,
                "type": None,
                "content": payload.get("content"),
                "components": payload.get("components"),
                "data": payload,
            }
        )
        self._notify()
        return _json_response(message)

    async def _edit_original(self, request: web.Request) -> web.Response:
        interaction = self._interaction_by_token(request)
        payload = _payload(request)
        message_id = interaction.original_message_id or interaction.message_id
        message = self.messages.get(message_id)
        if message is None:
            raise ApiError(404, "Unknown Message", 10008)
        self._apply_edit(message, payload)
        self.interaction_responses.append(
            {
                "kind": "edit_original",
                "interaction_id": interaction.interaction_id,
                "token": interaction.token,
                "type": None,
                "content": payload.get("content"),
                "components": payload.get("components"),
                "data": payload,
            }
        )
        self._notify()
        return _json_response(message)

    # ------------------------------------------------------------------ model helpers

    def _new_id(self) -> int:
        """A fresh, increasing snowflake whose timestamp is now."""
        now = int(time.time() * 1000) - DISCORD_EPOCH_MS
        self._last_id = max(self._last_id + 1, now << 22)
        return self._last_id

    def _member_payload(self, user_id: int, *, with_user: bool) -> JSON:
        member: JSON = {
            "roles": [],
            "joined_at": _now_iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "nick": None,
            "avatar": None,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            member["user"] = copy.deepcopy(self.users[user_id])
        return member

    def _store_message(
        self,
        channel: JSON,
        author: JSON,
        content: str,
        *,
        with_member: bool,
        message_reference: JSON | None = None,
        components: list[JSON] | None = None,
        embeds: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
        flags: int = 0,
        message_id: int | None = None,
    ) -> JSON:
        """Build a message payload as Discord sends it, and remember it."""
        message_id = message_id if message_id is not None else self._new_id()
        guild_id = channel.get("guild_id")
        mentions = []
        for user_id in dict.fromkeys(int(m) for m in _MENTION_RE.findall(content)):
            if user_id in self.users:
                mention = copy.deepcopy(self.users[user_id])
                if guild_id is not None:
                    mention["member"] = self._member_payload(user_id, with_user=False)
                mentions.append(mention)
        message: JSON = {
            "id": str(message_id),
            "channel_id": channel["id"],
            "type": 0,
            "author": author,
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": [
                {
                    "id": str(self._new_id()),
                    "filename": f["filename"],
                    "size": f["size"],
                    "url": f"{self.base_url}/attachments/{f['filename']}",
                    "proxy_url": f"{self.base_url}/attachments/{f['filename']}",
                }
                for f in attachments or []
            ],
            "embeds": embeds or [],
            "components": components or [],
            "pinned": False,
            "flags": flags,
        }
        if guild_id is not None:
            message["guild_id"] = guild_id
            if with_member:
                message["member"] = self._member_payload(int(author["id"]), with_user=False)
        if message_reference and message_reference.get("message_id") is not None:
            reference: JSON = {
                "type": 0,
                "message_id": str(message_reference["message_id"]),
                "channel_id": str(message_reference.get("channel_id") or channel["id"]),
            }
            if guild_id is not None:
                reference["guild_id"] = guild_id
            message["type"] = 19  # reply
            message["message_reference"] = reference
            target = self.messages.get(int(reference["message_id"]))
            if target is not None:
                message["referenced_message"] = _without_reference(target)
        self.messages[message_id] = message
        channel["last_message_id"] = str(message_id)
        return message

    @staticmethod
    def _apply_edit(message: JSON, payload: JSON) -> None:
        if "content" in payload:
            message["content"] = _check_content(payload["content"])
        for key in ("components", "embeds"):
            if key in payload:
                message[key] = payload[key] or []
        message["edited_timestamp"] = _now_iso()

    async def _echo(self, message: JSON) -> None:
        """Deliver the bot's own message back to it, as Discord does."""
        if self.echo_own_messages and self._sessions:
            await self._dispatch_message(message)

    # ------------------------------------------------------------------ control routes

    def _control_routes(self, app: web.Application) -> None:
        """Routes under ``/_fake/`` exposing the test-side API to another process.

        POST push_message / push_interaction (JSON body = keyword arguments) -> payload
        (409 when the bot has no gateway session); POST store_message (same body as
        push_message; history only, works with no bot connected); POST close_gateway {code};
        POST inject_429 {route_substring, retry_after, times, global_};
        POST add_guild {guild_id, name, channels: [[id, name], ...]};
        POST add_user {user_id, username, bot}; POST wait_for_sent {count, timeout, since,
        channel_id} -> list, or 408 on timeout; POST wait_until_connected {timeout};
        GET sent / edits / interaction_responses / typing / requests / unknown_requests ->
        list; GET state -> counters. Answers are ``{"ok": true, "result": ...}``.
        """

        def ok(result: Any) -> web.Response:
            return _json_response({"ok": True, "result": result})

        def fail(status: int, exc: Exception) -> web.Response:
            return _json_response({"ok": False, "description": str(exc)}, status=status)

        def call(action: Callable[[JSON], Any]) -> Callable[[web.Request], Any]:
            async def handler(request: web.Request) -> web.Response:
                body = await request.json() if request.can_read_body else {}
                try:
                    result = action(body)
                    if asyncio.iscoroutine(result):
                        result = await result
                except RuntimeError as exc:
                    return fail(409, exc)
                except TimeoutError as exc:
                    return fail(408, exc)
                except (TypeError, ValueError, KeyError) as exc:
                    return fail(400, exc)
                return ok(result)

            return handler

        def record_list(name: str) -> Callable[[web.Request], Any]:
            async def handler(request: web.Request) -> web.Response:
                return ok(getattr(self, name))

            return handler

        async def state(request: web.Request) -> web.Response:
            return ok(
                {
                    "connected": self.connected,
                    "identify_count": self.identify_count,
                    "resume_count": self.resume_count,
                    "heartbeat_count": self.heartbeat_count,
                    "sent_count": len(self.sent),
                    "api_base": self.api_base,
                    "gateway_url": self.gateway_url,
                }
            )

        async def wait_for_sent(body: JSON) -> list[JSON]:
            channel_id = body.get("channel_id")
            return await self.wait_for_sent(
                None if channel_id is None else (lambda r: r["channel_id"] == int(channel_id)),
                count=int(body.get("count", 1)),
                timeout=float(body.get("timeout", 10.0)),
                since=int(body.get("since", 0)),
            )

        def add_guild(body: JSON) -> JSON:
            channels = [(int(c), str(n)) for c, n in body.get("channels", [])]
            return self.add_guild(int(body["guild_id"]), str(body["name"]), channels)

        add = app.router.add_post
        add("/_fake/push_message", call(lambda b: self.push_message(**b)))
        add("/_fake/store_message", call(lambda b: self.store_message(**b)))
        add("/_fake/push_interaction", call(lambda b: self.push_interaction(**b)))
        add("/_fake/close_gateway", call(lambda b: self.close_gateway(int(b.get("code", 4000)))))
        add("/_fake/inject_429", call(lambda b: self.inject_429(**b)))
        add("/_fake/add_guild", call(add_guild))
        add("/_fake/add_user", call(lambda b: self.add_user(**b)))
        add("/_fake/wait_for_sent", call(wait_for_sent))
        add(
            "/_fake/wait_until_connected",
            call(lambda b: self.wait_until_connected(float(b.get("timeout", 10.0)))),
        )
        app.router.add_get("/_fake/state", state)
        for name in (
            "sent",
            "edits",
            "interaction_responses",
            "typing",
            "requests",
            "unknown_requests",
        ):
            app.router.add_get(f"/_fake/{name}", record_list(name))


def _payload(request: web.Request) -> JSON:
    """The request's JSON payload as parsed by the middleware ({} when there was none)."""
    return request.get(_PAYLOAD) or {}


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _check_content(content: Any) -> str:
    """Message content as Discord validates it: at most 2000 characters."""
    text = "" if content is None else str(content)
    if len(text) > MAX_CONTENT_LENGTH:
        errors = {
            "content": {
                "_errors": [
                    {
                        "code": "BASE_TYPE_MAX_LENGTH",
                        "message": f"Must be {MAX_CONTENT_LENGTH} or fewer in length.",
                    }
                ]
            }
        }
        raise ApiError(400, "Invalid Form Body", 50035, errors)
    return text


def _without_reference(message: JSON) -> JSON:
    """A copy of a stored message without its nested ``referenced_message``."""
    result = copy.deepcopy(message)
    result.pop("referenced_message", None)
    return result


# ---------------------------------------------------------------------- CLI


def _parse_guild(spec: str) -> tuple[int, str, list[tuple[int, str]]]:
    """``GUILD_ID:NAME[:CHANNEL_ID:CHANNEL_NAME]...`` -> (guild_id, name, channels)."""
    parts = spec.split(":")
    if len(parts) < 2 or len(parts) % 2:
        raise argparse.ArgumentTypeError(f"bad --guild {spec!r}")
    channels = [(int(parts[i]), parts[i + 1]) for i in range(2, len(parts), 2)]
    return int(parts[0]), parts[1], channels


def _parse_user(spec: str) -> tuple[int, str]:
    user_id, _, username = spec.partition(":")
    if not username:
        raise argparse.ArgumentTypeError(f"bad --user {spec!r}")
    return int(user_id), username


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeDiscord(
        args.bot_user_id,
        args.bot_username,
        args.token,
        host=args.host,
        port=args.port,
        refuse_privileged=args.refuse_privileged,
    )
    for guild_id, name, channels in args.guild or []:
        fake.add_guild(guild_id, name, channels)
    for user_id, username in args.user or []:
        fake.add_user(user_id, username)
    await fake.serve_until_signalled()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Discord REST API + gateway for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--bot-user-id", type=int, default=DEFAULT_BOT_USER_ID)
    parser.add_argument("--bot-username", default="mirror")
    parser.add_argument(
        "--guild",
        type=_parse_guild,
        action="append",
        help="GUILD_ID:NAME[:CHANNEL_ID:CHANNEL_NAME]... (repeatable)",
    )
    parser.add_argument("--user", type=_parse_user, action="append", help="ID:NAME (repeatable)")
    parser.add_argument("--refuse-privileged", action="store_true")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
