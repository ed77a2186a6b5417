"""The Telegram entrance: the persona in Telegram private chats and groups.

The only module that imports `telegram` (python-telegram-bot). It turns updates into
`Incoming` for the shared `Instance` (its only door into the core), gives it `send` — one
plain-text message, inline buttons when asked — shows "typing…" while a turn runs, hands
button presses to `Instance.press`, and publishes the command menu (setMyCommands) that
`bot.commands` generates. Splitting to Telegram's 4096-character limit,
the order of parts, retries and the outbox are the core's; who may press a button is too.
Everything Telegram-specific lives in this package (limits, ids, rate limits, retries; the
pure text rules in `splitting`). What the persona says and who may do what are decided in
`bot/`; this module never decides them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeDefault,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType
from telegram.error import (
    BadRequest,
    Conflict,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    BaseRateLimiter,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from adapters.telegram.manifest import MANIFEST
from adapters.telegram.plain_request import plain_request
from adapters.telegram.splitting import (
    MESSAGE_LIMIT,
    chat_target,
    clip,
    platform_id,
    telegram_length,
)
from bot.commands import Menu, command_menus
from bot.config import Config
from bot.entrance import EntranceFailure
from bot.instance import Instance
from bot.models import Author, Incoming
from bot.outbox import Button, Unreachable
from bot.timeouts import wait_event

log = logging.getLogger(__name__)

ENTRANCE = MANIFEST.name
CALLBACK_ANSWER_LIMIT = 200  # characters of an answerCallbackQuery notification
TYPING_EVERY_S = 4.0  # Telegram shows "typing…" for about 5 s after each sendChatAction
BUTTONS_PER_ROW = 2
MENU_DESCRIPTION_LIMIT = 256  # characters of a BotCommand description


# Buttons ----------------------------------------------------------------------------------


def keyboard_for(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    """Inline buttons, two to a row."""
    keys = [InlineKeyboardButton(button.label, callback_data=button.data) for button in buttons]
    if not keys:
        return None
    rows = [keys[i : i + BUTTONS_PER_ROW] for i in range(0, len(keys), BUTTONS_PER_ROW)]
    return InlineKeyboardMarkup(rows)


def message_id_of(reply_to: str | None) -> int | None:
    """The Telegram message id in a platform id "CHAT:MESSAGE" (or a bare number)."""
    if reply_to is None:
        return None
    tail = reply_to.rsplit(":", 1)[-1]
    return int(tail) if tail.lstrip("-").isdigit() else None


# The command menu -------------------------------------------------------------------------


def bot_commands(menu: Menu) -> list[BotCommand]:
    """A menu as Telegram takes it: names with "_" for "-" (Telegram allows no "-"; the
    router reads them back), the arguments and help line as the description."""
    commands = []
    for item in menu.commands:
        description = f"{item.args} — {item.help}" if item.args else item.help
        if item.private_only:
            description += " (private chat)"
        commands.append(
            BotCommand(item.name.replace("-", "_"), clip(description, MENU_DESCRIPTION_LIMIT))
        )
    return commands


# The entrance -----------------------------------------------------------------------------


class TelegramEntrance:
    """`mirror run telegram`: long polling with python-telegram-bot, one `Instance`."""

    def __init__(
        self,
        config: Config,
        secret: str,
        *,
        rate_limiter: BaseRateLimiter[Any] | None = None,
        typing_every_s: float = TYPING_EVERY_S,
    ) -> None:
        self.config = config
        self.settings = MANIFEST.settings_of(config)
        self.typing_every_s = typing_every_s
        self.instance = Instance(config, instance_id=ENTRANCE, entrance=ENTRANCE, send=self.send)
        # httpx logs every request URL at INFO, and Bot API URLs contain the token.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        builder = (
            Application.builder()
            .token(secret)
            .base_url(self.settings.base_url)
            .base_file_url(self.settings.base_file_url)
            # Waits out a 429's retry_after and tries again (PTB alone does not).
            .rate_limiter(rate_limiter or AIORateLimiter(max_retries=3))
            # A slow turn in one chat must not hold up others (or a coordinator's button);
            # turns within one chat stay in order through `_chat_lock`.
            .concurrent_updates(True)
            .job_queue(None)
        )
        # The Bot API over bot/http_client: a tenth of httpx's CPU a request (see
        # plain_request), unless a proxy is named.
        requests, updates = plain_request(), plain_request()
        if requests is not None and updates is not None:
            builder = builder.request(requests).get_updates_request(updates)
        self.app: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self.app.add_handler(
            MessageHandler(
                filters.UpdateType.MESSAGE
                & filters.TEXT  # commands included: /pending is a message like any other
                & (filters.ChatType.PRIVATE | filters.ChatType.GROUPS),
                self._on_message,
            )
        )
        self.app.add_handler(CallbackQueryHandler(self._on_press))
        self.app.add_error_handler(self._on_error)
        self._stop = asyncio.Event()
        self._chat_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        if not await self._connect():
            return
        try:
            if not await self._start_instance():
                return
            self.instance.add_own_account(str(self.app.bot.id))
            await self.app.start()
            assert self.app.updater is not None
            await self.app.updater.start_polling(
                allowed_updates=[Update.MESSAGE, Update.CALLBACK_QUERY],
                bootstrap_retries=3,
                error_callback=self._on_polling_error,
            )
            self.instance.deliver_outbox()
            await self._publish_menus()
            log.info("telegram: polling as @%s", self.app.bot.username)
            await self._stop.wait()
        finally:
            await self._shutdown()

    async def _publish_menus(self) -> None:
        """setMyCommands: everyone's commands as the default menu, and in the private chat of
        the coordinator and of each admin on Telegram (a private chat's id is the user's id)
        their own. A menu Telegram refuses is logged; the entrance runs on without it."""
        for menu in command_menus(self.config, ENTRANCE):
            if menu.account is None:
                scope: BotCommandScopeDefault | BotCommandScopeChat = BotCommandScopeDefault()
            elif menu.account.external_id.lstrip("-").isdigit():
                scope = BotCommandScopeChat(int(menu.account.external_id))
            else:
                log.warning("telegram: %s is no Telegram user id; no menu for it", menu.account)
                continue
            try:
                await self.app.bot.set_my_commands(bot_commands(menu), scope=scope)
            except TelegramError as exc:
                log.warning(
                    "telegram: the command menu for %s was refused: %s",
                    menu.account or "everyone",
                    exc,
                )

    def request_stop(self) -> None:
        """Stop polling, finish the turns in flight, then leave run()."""
        self._stop.set()

    async def _connect(self) -> bool:
        """getMe until Telegram answers (backing off on network errors); False if stopped."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                await self.app.initialize()
                return True
            except InvalidToken as exc:
                if "not found" in str(exc).lower():
                    raise EntranceFailure(
                        "the Telegram Bot API answered 404 on getMe: check MIRROR_TELEGRAM_TOKEN "
                        f"and [entrances.telegram] base_url ({self.settings.base_url})"
                    ) from None
                raise EntranceFailure(
                    "the Telegram token was refused (401 on getMe): check MIRROR_TELEGRAM_TOKEN"
                ) from None
            except (NetworkError, RetryAfter) as exc:
                log.warning(
                    "telegram: cannot reach the Bot API at %s (%s); retrying in %.0f s",
                    self.settings.base_url,
                    exc,
                    delay,
                )
            await wait_event(self._stop, delay)
            delay = min(delay * 2, 30.0)
        return False

    async def _start_instance(self) -> bool:
        """Start the instance; False when a stop came first (say, while on --standby)."""
        starting = asyncio.create_task(self.instance.start(), name="telegram:start")
        stopping = asyncio.create_task(self._stop.wait(), name="telegram:stop-requested")
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
        if starting.cancelled():
            return False
        starting.result()  # raises what start() raised (e.g. another process holds the lease)
        return True

    async def _shutdown(self) -> None:
        """Reverse order of start; each step runs even if an earlier one failed."""
        steps: list[tuple[str, Callable[[], Awaitable[None]], bool]] = [
            ("stop polling", self._stop_updater, True),
            # Handles the updates already fetched and waits for their turns and replies.
            ("stop the application", self.app.stop, self.app.running),
            ("stop the instance", self.instance.stop, True),
            ("shut the application down", self.app.shutdown, True),
        ]
        for what, step, needed in steps:
            if not needed:
                continue
            try:
                await step()
            except Exception:
                log.exception("telegram: could not %s", what)

    async def _stop_updater(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()

    # incoming messages --------------------------------------------------------------------

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or message.text is None or message.from_user is None:
            return
        private = message.chat.type == ChatType.PRIVATE
        async with self._chat_lock(message.chat_id):
            if private or self.settings.group_reply == "always" or self._addressed(message):
                text = self._without_address(message.text)
            else:
                # Not for us: remembered, so every instance sees the group's chatter.
                await self.instance.observe(self._incoming(message, message.text))
                return
            incoming = self._incoming(message, text)
            await self.instance.handle(incoming, while_thinking=self._typing(message.chat_id))

    def _incoming(self, message: Message, text: str) -> Incoming:
        chat = message.chat
        user = message.from_user
        assert user is not None
        private = chat.type == ChatType.PRIVATE
        replied = message.reply_to_message
        return Incoming(
            entrance=ENTRANCE,
            conversation_id=str(chat.id),
            conversation_kind="dm" if private else "group",
            conversation_title=None if private else chat.title,
            author=Author(
                external_id=str(user.id),
                display_name=user.first_name or user.username,
                is_bot=user.is_bot,
            ),
            text=text,
            platform_message_id=platform_id(chat.id, message.message_id),
            reply_to_platform_id=platform_id(chat.id, replied.message_id) if replied else None,
            received_at=message.date,
        )

    def _addressed(self, message: Message) -> bool:
        """In a group: a reply to one of our messages, an @mention, or /command@us."""
        bot = self.app.bot
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None:
            if replied.from_user.id == bot.id:
                return True
        username = (bot.username or "").lower()
        # Every entity, filtered here: parse_entities' `types` parameter is typed differently
        # across python-telegram-bot 22.x releases.
        wanted = {MessageEntity.MENTION, MessageEntity.TEXT_MENTION, MessageEntity.BOT_COMMAND}
        for entity, text in message.parse_entities().items():
            if entity.type not in wanted:
                continue
            if entity.type == MessageEntity.MENTION and text[1:].lower() == username:
                return True
            if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None:
                if entity.user.id == bot.id:
                    return True
            # A bare /command may be meant for any bot in the group; only /command@us is ours.
            if entity.type == MessageEntity.BOT_COMMAND and "@" in text:
                if text.split("@", 1)[1].lower() == username:
                    return True
        return False

    def _without_address(self, text: str) -> str:
        """'@bot, what is your name?' -> 'what is your name?' (the model needs no @bot)."""
        username = self.app.bot.username
        if not username:
            return text
        stripped = re.sub(rf"^\s*@{re.escape(username)}\b[\s,:;.!-]*", "", text, flags=re.I)
        return stripped or text

    def _chat_lock(self, chat_id: int) -> asyncio.Lock:
        lock = self._chat_locks.get(chat_id)
        if lock is None:
            lock = asyncio.Lock()
            self._chat_locks[chat_id] = lock
        return lock

    @contextlib.asynccontextmanager
    async def _typing(self, chat_id: int) -> AsyncIterator[None]:
        """Show "typing…" in the chat until the block ends, renewed every `typing_every_s`."""
        done = asyncio.Event()

        async def keep_typing() -> None:
            while not done.is_set():
                try:
                    await self.app.bot.send_chat_action(chat_id, ChatAction.TYPING)
                except TelegramError as exc:
                    log.debug("telegram: typing indicator for %s failed: %s", chat_id, exc)
                await wait_event(done, self.typing_every_s)

        task = asyncio.create_task(keep_typing(), name=f"telegram:typing:{chat_id}")
        try:
            yield
        finally:
            done.set()
            # Let an action in flight land first: one arriving after the reply would show
            # "typing…" again for five seconds.
            try:
                await asyncio.wait_for(task, 2.0)
            except TimeoutError:
                log.debug("telegram: typing indicator for %s was slow; cancelled", chat_id)

    # sending ------------------------------------------------------------------------------

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
        """One plain-text message (no parse mode: nothing to escape), already split to fit.

        Raises TelegramError once PTB gives up (429s are waited out by the rate limiter);
        `bot.instance` queues what did not arrive.
        """
        chat_id = chat_target(target)
        if chat_id is None:
            raise Unreachable(f"{target!r} is neither a Telegram chat id nor an @channel name")
        replied = message_id_of(reply_to)
        sent = await self.app.bot.send_message(
            chat_id=chat_id,
            text=text,
            reply_parameters=ReplyParameters(replied, allow_sending_without_reply=True)
            if replied is not None
            else None,
            reply_markup=keyboard_for(buttons),
        )
        return platform_id(sent.chat_id, sent.message_id)

    # coordinator buttons ------------------------------------------------------------------

    async def _on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        user_id = str(query.from_user.id)
        message = query.message
        chat_id = str(message.chat.id) if message is not None else ""
        # A private chat's id is the user's id; who may press what is decided in bot/.
        outcome = await self.instance.press(
            user_id, query.data or "", conversation=chat_id, private=chat_id == user_id
        )
        await self._answer_press(query, outcome.text, alert=not outcome.changed)
        if outcome.changed:
            await self._show_decision(query, outcome.text)

    async def _answer_press(self, query: CallbackQuery, text: str, *, alert: bool) -> None:
        try:
            await query.answer(clip(text, CALLBACK_ANSWER_LIMIT), show_alert=alert)
        except TelegramError as exc:
            log.warning("telegram: could not answer a button press: %s", exc)

    async def _show_decision(self, query: CallbackQuery, decision: str) -> None:
        """Edit the item's message: its text, the decision, and no more buttons."""
        message = query.message
        if not isinstance(message, Message) or not message.text:
            log.info("telegram: the pressed message is not accessible; decision not shown")
            return
        suffix = f"\n\nDecision: {decision}"
        room = MESSAGE_LIMIT - telegram_length(suffix)
        text = clip(clip(message.text, max(room, 1)) + suffix, MESSAGE_LIMIT)
        try:
            await query.edit_message_text(text)  # no reply_markup: the keyboard goes
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                log.warning("telegram: could not show the decision: %s", exc)
        except TelegramError as exc:
            log.warning("telegram: could not show the decision: %s", exc)

    # errors -------------------------------------------------------------------------------

    def _on_polling_error(self, error: TelegramError) -> None:
        if isinstance(error, Conflict):
            log.error(
                "telegram: another process is polling with this token (409); "
                "run one `mirror run telegram` per bot"
            )
            return
        # PTB's updater retries on its own, backing off from 1 s up to 30 s.
        log.warning("telegram: polling failed (%s: %s); retrying", type(error).__name__, error)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        log.error(
            "telegram: handling an update failed: %s",
            error,
            exc_info=(type(error), error, error.__traceback__) if error else None,
        )


__all__ = ["TelegramEntrance"]
