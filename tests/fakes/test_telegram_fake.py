"""Self-test of the fake Telegram Bot API, driven by python-telegram-bot's real client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, InvalidToken, RetryAfter
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fakes.telegram_api import DEFAULT_BOT_USERNAME, FakeTelegram

USER_ID = 4242


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def make_bot(fake: FakeTelegram, token: str | None = None) -> Bot:
    return Bot(token or fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)


@asynccontextmanager
async def polling_app(fake: FakeTelegram, *handlers: object) -> AsyncIterator[Application]:
    app = (
        Application.builder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .build()
    )
    for handler in handlers:
        app.add_handler(handler)  # type: ignore[arg-type]
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=5)
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


async def test_get_me_returns_username(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        me = await bot.get_me()
    assert me.username == DEFAULT_BOT_USERNAME
    assert me.id == 123
    assert me.is_bot


async def test_bad_token_raises_invalid_token(fake: FakeTelegram) -> None:
    bot = make_bot(fake, token="999:WRONG")
    with pytest.raises(InvalidToken):
        await bot.get_me()
    await bot.shutdown()


async def test_send_message_too_long_is_bad_request(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        ok = await bot.send_message(chat_id=7, text="x" * 4096)
        with pytest.raises(BadRequest, match="too long"):
            await bot.send_message(chat_id=7, text="x" * 4097)
    assert ok.text == "x" * 4096
    assert [s["message_id"] for s in fake.sent] == [ok.message_id]


async def test_free_text_is_never_json_decoded(fake: FakeTelegram) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="1")]])
    async with make_bot(fake) as bot:
        message = await bot.send_message(chat_id=7, text="42", reply_markup=markup)
        await bot.edit_message_text("true", chat_id=7, message_id=message.message_id)
    assert fake.sent[0]["text"] == "42"
    assert fake.sent[0]["chat_id"] == 7
    assert fake.sent[0]["reply_markup"] == markup.to_dict()
    assert fake.edits[0]["text"] == "true"
    assert fake.edits[0]["reply_markup"] is None  # an edit without markup drops the keyboard


async def test_injected_429_raises_retry_after(
    fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without PTB_TIMEDELTA, PTB 22 emits a deprecation warning whenever it builds RetryAfter.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    fake.inject_429("sendMessage", retry_after=3)
    async with make_bot(fake) as bot:
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(chat_id=7, text="hello")
        await bot.send_message(chat_id=7, text="hello again")
    assert caught.value.retry_after == timedelta(seconds=3)
    assert [s["text"] for s in fake.sent] == ["hello again"]


async def test_application_long_polling_replies(fake: FakeTelegram) -> None:
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"echo: {update.effective_message.text}")

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("started")

    handlers = (
        CommandHandler("start", start),
        MessageHandler(filters.TEXT & ~filters.COMMAND, echo),
    )
    async with polling_app(fake, *handlers):
        pushed = fake.push_message(USER_ID, "hi there", user_id=USER_ID)
        (reply,) = await fake.wait_for_sent(timeout=5)
        command = f"/start@{DEFAULT_BOT_USERNAME}"
        fake.push_message(-100, command, user_id=USER_ID, chat_type="supergroup")
        (started,) = await fake.wait_for_sent(lambda s: s["chat_id"] == -100, timeout=5)
    assert reply["chat_id"] == USER_ID
    assert reply["text"] == "echo: hi there"
    assert started["text"] == "started"
    assert pushed["message"]["message_id"] != reply["message_id"]


async def test_callback_query_round_trip(fake: FakeTelegram) -> None:
    pressed: asyncio.Queue[str] = asyncio.Queue()

    async def on_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None
        await query.answer("noted")
        await query.edit_message_text(f"chose {query.data}")
        pressed.put_nowait(query.data)

    markup = InlineKeyboardMarkup([[InlineKeyboardButton("A", callback_data="a")]])
    async with polling_app(fake, CallbackQueryHandler(on_press)) as app:
        message = await app.bot.send_message(USER_ID, "pick one", reply_markup=markup)
        fake.push_callback_query(USER_ID, USER_ID, message.message_id, "a")
        assert await asyncio.wait_for(pressed.get(), 5) == "a"
    assert fake.callback_answers[0]["text"] == "noted"
    assert fake.edits[-1]["text"] == "chose a"
    assert fake.message(USER_ID, message.message_id)["text"] == "chose a"  # type: ignore[index]
