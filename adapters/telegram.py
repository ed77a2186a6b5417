"""The Telegram entrance: the persona in Telegram private chats and groups.

The only module that imports `telegram` (python-telegram-bot). It turns updates into
`Incoming` for the shared `Instance`, sends replies as plain text split to Telegram's
4096-character limit, shows "typing…" while a turn runs, delivers outbox rows for entrance
"telegram" (coordinator items come with inline buttons) and turns button presses into
coordinator decisions, accepted only from the configured coordinator in their private chat.
Everything Telegram-specific lives here (limits, ids, rate limits, retries). What the
persona says and who may do what are decided in `bot/`; this module never decides them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from telegram import (
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

from bot.config import Config
from bot.coordinator import REFUSED
from bot.entrance import EntranceFailure
from bot.instance import Instance
from bot.models import Author, Incoming, OutboxItem, Reply

log = logging.getLogger(__name__)

ENTRANCE = "telegram"
# Characters of one message's text. Counted here in UTF-16 code units, the unit of Telegram's
# entity offsets: the cautious reading, as an emoji outside the BMP may count twice.
MESSAGE_LIMIT = 4096
CALLBACK_ANSWER_LIMIT = 200  # characters of an answerCallbackQuery notification
TYPING_EVERY_S = 4.0  # Telegram shows "typing…" for about 5 s after each sendChatAction
BUTTONS_PER_ROW = 2

_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_LINE = re.compile(r"\n")
_SENTENCE = re.compile(r"[.!?…][\"'”’»)\]]*(?=\s)")
_SPACE = re.compile(r"\s")
# (pattern, cut after the match?) from the best place to split to the worst.
_BOUNDARIES = ((_PARAGRAPH, False), (_LINE, False), (_SENTENCE, True), (_SPACE, False))
_NUMERIC_CHAT = re.compile(r"^-?\d+$")


# Splitting replies ------------------------------------------------------------------------


def telegram_length(text: str) -> int:
    """Length in UTF-16 code units (an emoji outside the BMP is two), as limits are counted."""
    return len(text.encode("utf-16-le")) // 2


def _fitting(text: str, limit: int) -> int:
    """How many leading characters of `text` fit in `limit` UTF-16 units."""
    if len(text) * 2 <= limit:
        return len(text)
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut_point(window: str, end: int) -> int:
    """Where to cut `window` (at most `end`): the last paragraph break, else line break, else
    sentence end, else space; a kind counts only if it keeps at least half the window, so
    one early paragraph break does not leave a tiny message. No boundary at all: cut at end."""
    latest = 0
    for pattern, after in _BOUNDARIES:
        cuts = [
            match.end() if after else match.start()
            for match in pattern.finditer(window)
            if 0 < (match.end() if after else match.start()) <= end
        ]
        if cuts:
            if cuts[-1] >= end // 2:
                return cuts[-1]
            latest = max(latest, cuts[-1])
    return latest or end


def split_for_telegram(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split a reply into messages of at most `limit` UTF-16 units, in order.

    Splits on paragraph, then line, then sentence, then word boundaries; only a word longer
    than a whole message is cut inside. Whitespace at the split points (and around the whole
    text) is dropped; everything else is kept. Empty or blank text gives no messages.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2 (one character outside the BMP)")
    chunks: list[str] = []
    rest = text.strip()
    while rest:
        end = _fitting(rest, limit)
        if end == len(rest):
            chunks.append(rest)
            break
        # One character past the end, so a boundary right at the end is seen.
        cut = _cut_point(rest[: end + 1], end)
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return chunks


def _clip(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-16 units, with an ellipsis when something was dropped."""
    if telegram_length(text) <= limit:
        return text
    return text[: _fitting(text, limit - 1)].rstrip() + "…"


def platform_id(chat_id: int | str, message_id: int) -> str:
    """A message's id in memory: Telegram message ids are only unique within one chat."""
    return f"{chat_id}:{message_id}"


def keyboard_for(buttons: object) -> InlineKeyboardMarkup | None:
    """Inline buttons from an outbox payload's [{"label", "data"}], two to a row."""
    if not isinstance(buttons, list):
        return None
    keys = [
        InlineKeyboardButton(str(button["label"]), callback_data=str(button["data"]))
        for button in buttons
        if isinstance(button, dict) and button.get("label") and button.get("data")
    ]
    if not keys:
        return None
    rows = [keys[i : i + BUTTONS_PER_ROW] for i in range(0, len(keys), BUTTONS_PER_ROW)]
    return InlineKeyboardMarkup(rows)


def _chat_target(target: str) -> int | str:
    """An outbox target as a chat id: a number, or '@channelname'."""
    return int(target) if _NUMERIC_CHAT.match(target) else target


class Undelivered(Exception):
    """Sending failed after `sent` of the message's parts arrived; `remaining` is the rest."""

    def __init__(self, remaining: str, sent: int, cause: TelegramError) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.remaining = remaining
        self.sent = sent


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
        self.settings = config.entrances.telegram
        self.typing_every_s = typing_every_s
        self.instance = Instance(config, instance_id=ENTRANCE, entrance=ENTRANCE)
        coordinator = config.coordinator.parsed
        self.coordinator_id = coordinator.id if coordinator.entrance == ENTRANCE else None
        # httpx logs every request URL at INFO, and Bot API URLs contain the token.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
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
            .build()
        )
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
            self.instance.deliver_outbox(self.deliver)
            log.info("telegram: polling as @%s", self.app.bot.username)
            await self._stop.wait()
        finally:
            await self._shutdown()

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
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
                await self.instance.memory.record_incoming(
                    self._incoming(message, message.text), ENTRANCE
                )
                return
            incoming = self._incoming(message, text)
            async with self._typing(message.chat_id):
                reply = await self.instance.handle(incoming)
            if reply is not None:
                await self._reply(message, incoming, reply)

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
        wanted: list[str | None] = [
            MessageEntity.MENTION,
            MessageEntity.TEXT_MENTION,
            MessageEntity.BOT_COMMAND,
        ]
        for entity, text in message.parse_entities(wanted).items():
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), self.typing_every_s)

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

    async def _reply(self, message: Message, incoming: Incoming, reply: Reply) -> None:
        """Send a reply; what does not get through goes to the outbox for the courier."""
        try:
            await self.send_text(message.chat_id, reply.text, reply_to=message.message_id)
        except Undelivered as exc:
            queued = await self.instance.memory.enqueue(
                entrance=ENTRANCE,
                target=str(message.chat_id),
                text=exc.remaining,
                payload={"kind": "reply"}
                | ({"reply_to": message.message_id} if exc.sent == 0 else {}),
                dedupe_key=f"reply:{incoming.platform_message_id}",
            )
            log.warning(
                "telegram: reply to %s not sent (%s); outbox %s will retry it",
                incoming.platform_message_id,
                exc,
                queued,
            )

    # sending ------------------------------------------------------------------------------

    async def send_text(
        self,
        chat_id: int | str,
        text: str,
        *,
        reply_to: int | None = None,
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> None:
        """Send `text` as plain-text messages (no parse mode: nothing to escape).

        The first part replies to `reply_to`, the last carries `keyboard`. Raises
        `Undelivered` with what was not sent once PTB gives up (429s are retried by the
        rate limiter).
        """
        chunks = split_for_telegram(text)
        for index, chunk in enumerate(chunks):
            try:
                await self.app.bot.send_message(
                    chat_id=chat_id,
                    text=chunk,
                    reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True)
                    if reply_to is not None and index == 0
                    else None,
                    reply_markup=keyboard if index == len(chunks) - 1 else None,
                )
            except TelegramError as exc:
                raise Undelivered("\n\n".join(chunks[index:]), index, exc) from exc

    async def deliver(self, item: OutboxItem) -> None:
        """Send one outbox row (the courier marks it sent, or retries when this raises)."""
        reply_to = item.payload.get("reply_to")
        try:
            await self.send_text(
                _chat_target(item.target),
                item.text,
                reply_to=reply_to if isinstance(reply_to, int) else None,
                keyboard=keyboard_for(item.payload.get("buttons")),
            )
        except Undelivered as exc:
            if exc.sent == 0:
                raise
            # Part of it arrived: queue only the rest, so a retry repeats nothing.
            await self.instance.memory.enqueue(
                entrance=ENTRANCE,
                target=item.target,
                text=exc.remaining,
                payload={k: v for k, v in item.payload.items() if k != "reply_to"},
                dedupe_key=f"rest:{item.id}:{exc.sent}",
            )
            log.warning("telegram: outbox %d partly sent (%s); the rest is queued", item.id, exc)

    # coordinator buttons ------------------------------------------------------------------

    async def _on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        user_id = str(query.from_user.id)
        message = query.message
        chat_id = str(message.chat.id) if message is not None else None
        data = query.data or ""
        # Only the coordinator, and only in their private chat (whose id is their user id):
        # the decision's text shows private conversations.
        if self.coordinator_id is None or not user_id == chat_id == self.coordinator_id:
            await self.instance.memory.audit(
                f"{ENTRANCE}:{user_id}", "coordinator.refused", "button", data=data, chat=chat_id
            )
            log.warning("telegram: refused a button press from %s in chat %s", user_id, chat_id)
            await self._answer_press(query, REFUSED, alert=True)
            return
        outcome = await self.instance.press(user_id, data, private=True)
        await self._answer_press(query, outcome.text, alert=not outcome.changed)
        if outcome.changed:
            await self._show_decision(query, outcome.text)

    async def _answer_press(self, query: CallbackQuery, text: str, *, alert: bool) -> None:
        try:
            await query.answer(_clip(text, CALLBACK_ANSWER_LIMIT), show_alert=alert)
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
        text = _clip(_clip(message.text, max(room, 1)) + suffix, MESSAGE_LIMIT)
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


__all__ = ["TelegramEntrance", "platform_id", "split_for_telegram", "telegram_length"]
