"""A fake of the Telegram Bot API, served by aiohttp on 127.0.0.1, for tests.

Tests run the real python-telegram-bot (PTB) stack against it, either in the test's own event
loop or in a separate OS process, by pointing PTB at the fake::

    Application.builder().token(fake.token).base_url(fake.base_url)
        .base_file_url(fake.base_file_url).build()

The fake speaks the wire format PTB uses (``/bot<token>/<method>``; form-encoded, JSON or
multipart parameters; ``{"ok": ..., "result": ...}`` answers with Telegram's error codes) and
implements the methods a text chat bot needs: getMe, deleteWebhook, getUpdates (a real long
poll), sendMessage, sendChatAction, editMessageText, editMessageReplyMarkup,
answerCallbackQuery, set/get/deleteMyCommands, close and logOut. Unknown methods answer 404.

Test code in the same process drives it directly: :meth:`FakeTelegram.push_message` and
:meth:`FakeTelegram.push_callback_query` create incoming updates; :attr:`FakeTelegram.sent`,
:attr:`FakeTelegram.edits`, :attr:`FakeTelegram.chat_actions`,
:attr:`FakeTelegram.callback_answers` and :attr:`FakeTelegram.requests` record what the bot did;
:meth:`FakeTelegram.wait_for_sent` waits for replies; :meth:`FakeTelegram.inject_429` and
:meth:`FakeTelegram.inject_error` make the next calls of a method fail.

Run on its own (``python -m tests.fakes.telegram_api --port 0``) it prints
``READY http://127.0.0.1:PORT`` and serves until SIGTERM; the same test-side API is then
reachable over HTTP under ``/_fake/`` (see :meth:`FakeTelegram._control_routes`).

Deliberate simplifications: one update queue shared by all accepted tokens; message ids are
unique across chats; ``text`` is stored verbatim (``parse_mode`` is recorded, not parsed);
length limits count Python characters; unknown chats are synthesised (private for positive
ids, supergroup for negative ones) rather than rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import re
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer

JSON = dict[str, Any]

DEFAULT_TOKEN = "123:TEST"
DEFAULT_BOT_USERNAME = "mirror_test_bot"
MAX_TEXT_LENGTH = 4096
MAX_CALLBACK_DATA_BYTES = 64

# Parameters whose string form is JSON (numbers, booleans, objects, arrays) in PTB's
# form-encoded requests. Everything else (text, data, parse_mode, ...) stays a string.
JSON_PARAMS = frozenset(
    {
        "allow_sending_without_reply",
        "allowed_updates",
        "cache_time",
        "caption_entities",
        "chat_id",
        "commands",
        "disable_notification",
        "disable_web_page_preview",
        "drop_pending_updates",
        "entities",
        "from_chat_id",
        "limit",
        "link_preview_options",
        "message_id",
        "message_ids",
        "message_thread_id",
        "offset",
        "protect_content",
        "reply_markup",
        "reply_parameters",
        "reply_to_message_id",
        "scope",
        "show_alert",
        "timeout",
        "user_id",
    }
)

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)

_MENTION_RE = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{5,32}\b")
_COMMAND_RE = re.compile(r"/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
_BOT_COMMAND_NAME_RE = re.compile(r"[a-z0-9_]{1,32}")


class ApiError(Exception):
    """A Bot API error answer: HTTP status, description and optional ``parameters``."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def payload(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram entity offsets."""
    return len(text.encode("utf-16-le")) // 2


def _decode_param(name: str, value: Any) -> Any:
    """JSON-decode ``value`` if ``name`` is a parameter the Bot API types as non-string."""
    if name not in JSON_PARAMS or not isinstance(value, str):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value  # e.g. chat_id="@channelname"
    if isinstance(decoded, dict | list | bool | int | float):
        return decoded
    return value


def _as_int(value: Any, name: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise ApiError(400, f"Bad Request: {name} is empty")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Bad Request: invalid {name} specified") from None


def _chat_key(chat_id: Any) -> int | str:
    """Normalise a chat id: integers stay integers, '@name' stays a string."""
    if isinstance(chat_id, bool):
        raise ApiError(400, "Bad Request: chat not found")
    if isinstance(chat_id, int):
        return chat_id
    if isinstance(chat_id, str) and chat_id:
        with contextlib.suppress(ValueError):
            return int(chat_id)
        return chat_id
    raise ApiError(400, "Bad Request: chat_id is empty")


def _auto_entities(text: str) -> list[JSON]:
    """Entities Telegram would compute: a leading ``/command`` and ``@username`` mentions."""
    entities: list[JSON] = []
    command_end = 0
    if text.startswith("/"):
        match = _COMMAND_RE.match(text)
        if match:
            command_end = match.end()
            entities.append({"type": "bot_command", "offset": 0, "length": _utf16_len(match[0])})
    for match in _MENTION_RE.finditer(text, command_end):
        entities.append(
            {
                "type": "mention",
                "offset": _utf16_len(text[: match.start()]),
                "length": _utf16_len(match[0]),
            }
        )
    return entities


class FakeTelegram(FakeServer):
    """An in-memory Telegram Bot API server for one bot.

    Use ``await start()`` / ``await stop()`` or ``async with FakeTelegram() as fake:``.
    All state lives on the instance and is only touched from the event loop that serves it.
    """

    def __init__(
        self,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_username: str = DEFAULT_BOT_USERNAME,
        bot_first_name: str = "Mirror",
        can_read_all_group_messages: bool = False,
    ) -> None:
        super().__init__(host=host, port=port)
        self.tokens: tuple[str, ...] = tuple(dict.fromkeys(tokens))
        if not self.tokens:
            raise ValueError("FakeTelegram needs at least one valid token")
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.can_read_all_group_messages = can_read_all_group_messages

        # Records of what the bot did, in order (test-side API).
        self.sent: list[JSON] = []
        self.edits: list[JSON] = []
        self.chat_actions: list[JSON] = []
        self.callback_answers: list[JSON] = []
        self.requests: list[tuple[str, JSON]] = []

        self._closing = False
        self._updates: list[JSON] = []
        self._allowed_updates: frozenset[str] | None = None
        self._poll_generation = 0
        self._messages: dict[tuple[int | str, int], JSON] = {}
        self._chats: dict[int | str, JSON] = {}
        self._callback_queries: dict[str, JSON] = {}
        self._commands: dict[tuple[str, str], list[JSON]] = {}
        self._faults: dict[str, list[ApiError]] = {}
        self._next_update_id = 1
        self._next_message_id = 1
        self._next_callback_id = 1
        self._methods: dict[str, Callable[[JSON, JSON], Any]] = {
            "getme": self._get_me,
            "deletewebhook": self._delete_webhook,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "sendchataction": self._send_chat_action,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "answercallbackquery": self._answer_callback_query,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "close": self._ok,
            "logout": self._ok,
        }

    # ------------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_route("*", "/file/bot{token}/{path:.*}", self._handle_file)
        self._control_routes(app)
        return app

    async def start(self) -> None:
        self._closing = False
        await super().start()

    async def stop(self) -> None:
        """Release pending long polls at once, then shut the server down."""
        self._closing = True
        self._notify()
        await super().stop()

    @property
    def base_url(self) -> str:
        """Value for PTB's ``base_url`` (the token is appended by PTB)."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for PTB's ``base_file_url``."""
        return f"{self.url}/file/bot"

    @property
    def token(self) -> str:
        """The first accepted token."""
        return self.tokens[0]

    # ------------------------------------------------------------------ test-side API

    def push_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "Alice",
        reply_to_message_id: int | None = None,
        entities: list[JSON] | None = None,
        is_bot: bool = False,
        chat_title: str | None = None,
    ) -> JSON:
        """Queue an incoming text message; return the Update (``["message"]`` is the message).

        Entities default to what Telegram computes: a ``bot_command`` for a leading
        ``/command[@bot]`` and a ``mention`` for every ``@username``.
        """
        sender: JSON = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        if username is not None:
            sender["username"] = username
        if chat_type == "private":
            chat: JSON = {"id": chat_id, "type": "private", "first_name": first_name}
            if username is not None:
                chat["username"] = username
        else:
            chat = {"id": chat_id, "type": chat_type, "title": chat_title or f"Chat {chat_id}"}
        self._chats[chat_id] = chat
        reply_to: JSON | None = None
        if reply_to_message_id is not None:
            reply_to = self._messages.get((chat_id, reply_to_message_id)) or {
                "message_id": reply_to_message_id,
                "date": int(time.time()),
                "chat": chat,
            }
        message = self._new_message(chat, sender, text, reply_to=reply_to)
        computed = _auto_entities(text) if entities is None else entities
        if computed:
            message["entities"] = computed
        return self._push_update({"message": message})

    def push_callback_query(
        self,
        chat_id: int,
        user_id: int,
        message_id: int,
        data: str,
        *,
        username: str | None = None,
        first_name: str = "Alice",
    ) -> JSON:
        """Queue a press on an inline button of message ``message_id``; return the Update."""
        sender: JSON = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username is not None:
            sender["username"] = username
        message = self._messages.get((chat_id, message_id)) or {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "text": "",
        }
        query_id = str(self._next_callback_id)
        self._next_callback_id += 1
        query: JSON = {
            "id": query_id,
            "from": sender,
            "message": message,
            "chat_instance": str(chat_id),
            "data": data,
        }
        self._callback_queries[query_id] = query
        return self._push_update({"callback_query": query})

    def message(self, chat_id: int | str, message_id: int) -> JSON | None:
        """Current state of a stored message (incoming or sent, after edits), or None."""
        stored = self._messages.get((_chat_key(chat_id), message_id))
        return copy.deepcopy(stored) if stored is not None else None

    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        """The command list set with setMyCommands for ``scope`` and ``language_code``."""
        return copy.deepcopy(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed by a getUpdates ``offset``."""
        return copy.deepcopy(self._updates)

    def inject_429(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` answer 429 with ``retry_after``."""
        error = ApiError(
            429,
            f"Too Many Requests: retry after {retry_after}",
            {"retry_after": retry_after},
        )
        self._faults.setdefault(method.lower(), []).extend([error] * times)

    def inject_error(
        self,
        method: str,
        status: int = 500,
        times: int = 1,
        description: str | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` answer ``status``."""
        if description is None:
            with contextlib.suppress(ValueError):
                description = HTTPStatus(status).phrase
        description = description or f"Error {status}"
        self._faults.setdefault(method.lower(), []).extend([ApiError(status, description)] * times)

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
        return await self._wait_for_records(self.sent, "sent", predicate, count, timeout, since)

    async def wait_for_edits(
        self,
        predicate: Callable[[JSON], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
        since: int = 0,
    ) -> list[JSON]:
        """Like :meth:`wait_for_sent`, for :attr:`edits`."""
        return await self._wait_for_records(self.edits, "edits", predicate, count, timeout, since)

    async def wait_for_request(
        self,
        method: str,
        predicate: Callable[[JSON], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[JSON]:
        """Wait until ``count`` calls of ``method`` (matching ``predicate`` on their params)."""

        def check() -> list[JSON] | None:
            found = [
                params
                for name, params in self.requests
                if name.lower() == method.lower() and (predicate is None or predicate(params))
            ]
            return found[:count] if len(found) >= count else None

        result = await self._wait(check, timeout)
        if result is None:
            raise TimeoutError(f"no {count} {method} call(s) within {timeout}s")
        return result

    # ------------------------------------------------------------------ waiting

    async def _wait_for_records(
        self,
        records: list[JSON],
        name: str,
        predicate: Callable[[JSON], bool] | None,
        count: int,
        seconds: float,
        since: int,
    ) -> list[JSON]:
        def check() -> list[JSON] | None:
            found = [r for r in records[since:] if predicate is None or predicate(r)]
            return found[:count] if len(found) >= count else None

        result = await self._wait(check, seconds)
        if result is None:
            seen = [(r.get("chat_id"), r.get("text")) for r in records[since:]]
            raise TimeoutError(f"fewer than {count} matching {name} within {seconds}s; {seen}")
        return result

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle_api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params = await self._read_params(request)
        self.requests.append((method, params))
        self._notify()
        try:
            if token not in self.tokens:
                raise ApiError(401, "Unauthorized")
            faults = self._faults.get(method.lower())
            if faults:
                raise faults.pop(0)
            handler = self._methods.get(method.lower())
            if handler is None:
                raise ApiError(404, "Not Found")
            result = handler(self._bot_user(token), params)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as exc:
            return web.json_response(exc.payload(), status=exc.status)
        return web.json_response({"ok": True, "result": result})

    async def _handle_file(self, request: web.Request) -> web.Response:
        return web.json_response(ApiError(404, "Not Found").payload(), status=404)

    @staticmethod
    async def _read_params(request: web.Request) -> JSON:
        """Merge query string and body (JSON, form-encoded or multipart) into one dict."""
        raw: JSON = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    return {**raw, **body}  # already typed
            elif request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                form = await request.post()
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        raw[name] = {
                            "filename": value.filename,
                            "content_type": value.content_type,
                            "data": value.file.read(),
                        }
                    else:
                        raw[name] = value
        return {name: _decode_param(name, value) for name, value in raw.items()}

    def _control_routes(self, app: web.Application) -> None:
        """Routes under ``/_fake/`` exposing the test-side API to another process.

        POST push_message / push_callback_query (JSON body = keyword arguments) -> Update;
        GET sent / edits / chat_actions / callback_answers / requests -> list;
        POST inject_429 {method, retry_after, times}; POST inject_error {method, status, times};
        POST wait_for_sent {count, timeout, since, chat_id} -> list, or 408 on timeout.
        Answers are ``{"ok": true, "result": ...}``.
        """

        def ok(result: Any) -> web.Response:
            return web.json_response({"ok": True, "result": result}, dumps=_dumps)

        def call(action: Callable[[JSON], Any]) -> Callable[[web.Request], Any]:
            async def handler(request: web.Request) -> web.Response:
                body = await request.json() if request.can_read_body else {}
                try:
                    result = action(body)
                    if asyncio.iscoroutine(result):
                        result = await result
                except (TypeError, ValueError) as exc:
                    return web.json_response({"ok": False, "description": str(exc)}, status=400)
                except TimeoutError as exc:
                    return web.json_response({"ok": False, "description": str(exc)}, status=408)
                return ok(result)

            return handler

        def record_list(name: str) -> Callable[[web.Request], Any]:
            async def handler(request: web.Request) -> web.Response:
                return ok(getattr(self, name))

            return handler

        async def wait_for_sent(body: JSON) -> list[JSON]:
            chat_id = body.get("chat_id")
            return await self.wait_for_sent(
                None if chat_id is None else (lambda r: r["chat_id"] == chat_id),
                count=int(body.get("count", 1)),
                timeout=float(body.get("timeout", 10.0)),
                since=int(body.get("since", 0)),
            )

        app.router.add_post("/_fake/push_message", call(lambda b: self.push_message(**b)))
        app.router.add_post(
            "/_fake/push_callback_query", call(lambda b: self.push_callback_query(**b))
        )
        app.router.add_post("/_fake/inject_429", call(lambda b: self.inject_429(**b)))
        app.router.add_post("/_fake/inject_error", call(lambda b: self.inject_error(**b)))
        app.router.add_post("/_fake/wait_for_sent", call(wait_for_sent))
        for name in ("sent", "edits", "chat_actions", "callback_answers", "requests"):
            app.router.add_get(f"/_fake/{name}", record_list(name))

    # ------------------------------------------------------------------ state helpers

    def _bot_user(self, token: str) -> JSON:
        prefix = token.split(":", 1)[0]
        return {
            "id": int(prefix) if prefix.isdigit() else 1,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def _chat(self, chat_id: int | str) -> JSON:
        chat = self._chats.get(chat_id)
        if chat is None:
            if isinstance(chat_id, str):
                chat = {
                    "id": -1000000000000 - len(self._chats),
                    "type": "channel",
                    "title": chat_id,
                    "username": chat_id.lstrip("@"),
                }
            elif chat_id > 0:
                chat = {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}
            else:
                chat = {"id": chat_id, "type": "supergroup", "title": f"Chat {chat_id}"}
            self._chats[chat_id] = chat
        return chat

    def _new_message(
        self,
        chat: JSON,
        sender: JSON,
        text: str,
        *,
        reply_to: JSON | None = None,
        reply_markup: JSON | None = None,
    ) -> JSON:
        message: JSON = {
            "message_id": self._next_message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
            "text": text,
        }
        self._next_message_id += 1
        if reply_to is not None:
            nested = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
            message["reply_to_message"] = copy.deepcopy(nested)
        if reply_markup is not None:
            message["reply_markup"] = reply_markup
        self._messages[(chat["id"], message["message_id"])] = message
        return message

    def _push_update(self, payload: JSON) -> JSON:
        update = {"update_id": self._next_update_id, **copy.deepcopy(payload)}
        self._next_update_id += 1
        self._updates.append(update)
        self._notify()
        return copy.deepcopy(update)

    def _find_message(self, chat_id: int | str, message_id: int) -> JSON | None:
        chat = self._chat(chat_id)
        return self._messages.get((chat["id"], message_id))

    @staticmethod
    def _check_markup(markup: Any) -> JSON | None:
        """Validate an inline keyboard; other markups (reply keyboards) are accepted as is."""
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
                raise ApiError(400, 'Bad Request: field "inline_keyboard" must be an Array')
            for row in rows:
                for button in row:
                    if not isinstance(button, dict) or not button.get("text"):
                        raise ApiError(400, "Bad Request: can't parse inline keyboard button")
                    data = button.get("callback_data")
                    if data is not None and not (
                        1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES
                    ):
                        raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    @staticmethod
    def _check_text(text: Any) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        return text

    def _reply_target(self, chat_id: int | str, params: JSON) -> JSON | None:
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            target_chat = _chat_key(reply.get("chat_id", chat_id))
            message_id = _as_int(reply.get("message_id"), "message_id")
            allow_missing = bool(reply.get("allow_sending_without_reply"))
        elif params.get("reply_to_message_id") not in (None, ""):
            target_chat = chat_id
            message_id = _as_int(params["reply_to_message_id"], "reply_to_message_id")
            allow_missing = bool(params.get("allow_sending_without_reply"))
        else:
            return None
        target = self._find_message(target_chat, message_id)
        if target is None and not allow_missing:
            raise ApiError(400, "Bad Request: message to be replied not found")
        return target

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope = scope if isinstance(scope, dict) else {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(language_code or "")

    # ------------------------------------------------------------------ Bot API methods

    def _ok(self, bot: JSON, params: JSON) -> bool:
        return True

    def _get_me(self, bot: JSON, params: JSON) -> JSON:
        return {
            **bot,
            "can_join_groups": True,
            "can_read_all_group_messages": self.can_read_all_group_messages,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _delete_webhook(self, bot: JSON, params: JSON) -> bool:
        if params.get("drop_pending_updates") is True:
            self._updates.clear()
        return True

    async def _get_updates(self, bot: JSON, params: JSON) -> list[JSON]:
        offset = _as_int(params.get("offset"), "offset", 0)
        limit = min(max(_as_int(params.get("limit"), "limit", 100), 1), 100)
        timeout = max(float(_as_int(params.get("timeout"), "timeout", 0)), 0.0)
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(allowed) or None
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        if self._allowed_updates is not None:
            allowed_types = self._allowed_updates
            self._updates = [u for u in self._updates if set(u) & allowed_types]

        # Like Telegram, a newer getUpdates call terminates an older pending one with 409.
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()

        def check() -> list[JSON] | None:
            if self._closing:
                return []
            if generation != self._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            return copy.deepcopy(self._updates[:limit]) if self._updates else None

        return await self._wait(check, timeout) or []

    def _send_message(self, bot: JSON, params: JSON) -> JSON:
        chat_id = _chat_key(params.get("chat_id"))
        text = self._check_text(params.get("text"))
        markup = self._check_markup(params.get("reply_markup"))
        reply_to = self._reply_target(chat_id, params)
        chat = self._chat(chat_id)
        message = self._new_message(chat, bot, text, reply_to=reply_to, reply_markup=markup)
        self.sent.append(
            {
                "chat_id": chat["id"],
                "message_id": message["message_id"],
                "text": text,
                "reply_markup": markup,
                "reply_to_message_id": reply_to["message_id"] if reply_to else None,
                "parse_mode": params.get("parse_mode"),
                "params": params,
            }
        )
        self._notify()
        return copy.deepcopy(message)

    def _send_chat_action(self, bot: JSON, params: JSON) -> bool:
        chat_id = _chat_key(params.get("chat_id"))
        action = params.get("action")
        if action not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self.chat_actions.append({"chat_id": self._chat(chat_id)["id"], "action": action})
        self._notify()
        return True

    def _editable(self, bot: JSON, params: JSON) -> JSON | None:
        """The stored bot message an edit targets, or None for an inline message."""
        if params.get("inline_message_id"):
            return None
        chat_id = _chat_key(params.get("chat_id"))
        message_id = _as_int(params.get("message_id"), "message_id")
        message = self._find_message(chat_id, message_id)
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if message.get("from", {}).get("id") != bot["id"]:
            raise ApiError(400, "Bad Request: message can't be edited")
        return message

    def _record_edit(self, method: str, message: JSON | None, params: JSON, **changes: Any) -> None:
        self.edits.append(
            {
                "method": method,
                "chat_id": message["chat"]["id"] if message else None,
                "message_id": message["message_id"] if message else None,
                "inline_message_id": params.get("inline_message_id"),
                **changes,
                "params": params,
            }
        )
        self._notify()

    def _edit_message_text(self, bot: JSON, params: JSON) -> JSON | bool:
        text = self._check_text(params.get("text"))
        # As on Telegram, an edit without reply_markup removes the inline keyboard.
        markup = self._check_markup(params.get("reply_markup"))
        message = self._editable(bot, params)
        if message is not None:
            if message.get("text") == text and message.get("reply_markup") == markup:
                raise ApiError(400, NOT_MODIFIED)
            message["text"] = text
            message["edit_date"] = int(time.time())
            message.pop("entities", None)
            if markup is None:
                message.pop("reply_markup", None)
            else:
                message["reply_markup"] = markup
        self._record_edit("editMessageText", message, params, text=text, reply_markup=markup)
        return copy.deepcopy(message) if message is not None else True

    def _edit_message_reply_markup(self, bot: JSON, params: JSON) -> JSON | bool:
        markup = self._check_markup(params.get("reply_markup"))
        message = self._editable(bot, params)
        if message is not None:
            if message.get("reply_markup") == markup:
                raise ApiError(400, NOT_MODIFIED)
            message["edit_date"] = int(time.time())
            if markup is None:
                message.pop("reply_markup", None)
            else:
                message["reply_markup"] = markup
        text = message.get("text") if message else None
        self._record_edit("editMessageReplyMarkup", message, params, text=text, reply_markup=markup)
        return copy.deepcopy(message) if message is not None else True

    def _answer_callback_query(self, bot: JSON, params: JSON) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._callback_queries:
            raise ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self.callback_answers.append(
            {
                "callback_query_id": query_id,
                "text": params.get("text"),
                "show_alert": bool(params.get("show_alert", False)),
                "url": params.get("url"),
                "cache_time": params.get("cache_time"),
            }
        )
        self._notify()
        return True

    def _set_my_commands(self, bot: JSON, params: JSON) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, 'Bad Request: parameter "commands" is required')
        for command in commands:
            name = command.get("command", "") if isinstance(command, dict) else ""
            if not _BOT_COMMAND_NAME_RE.fullmatch(name):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    def _get_my_commands(self, bot: JSON, params: JSON) -> list[JSON]:
        return self.commands(params.get("scope"), str(params.get("language_code") or ""))

    def _delete_my_commands(self, bot: JSON, params: JSON) -> bool:
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands.pop(key, None)
        return True


def _dumps(value: Any) -> str:
    """json.dumps that renders uploaded file bytes as a short placeholder."""

    def fallback(obj: object) -> str:
        return f"<{len(obj)} bytes>" if isinstance(obj, bytes) else str(obj)

    return json.dumps(value, default=fallback)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeTelegram(
        args.token or (DEFAULT_TOKEN,),
        host=args.host,
        port=args.port,
        bot_username=args.username,
    )
    await fake.serve_until_signalled()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Telegram Bot API server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", action="append", help="accepted token (repeatable)")
    parser.add_argument("--username", default=DEFAULT_BOT_USERNAME, help="bot username")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
