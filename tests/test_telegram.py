"""The Telegram entrance: a real `mirror run telegram` process against a fake Bot API.

python-telegram-bot runs unpatched in the child process; FakeTelegram runs in the test's
event loop, so tests push updates and read what the bot sent directly. Splitting replies is
a pure function, tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.telegram import split_for_telegram, telegram_length
from bot.memory import Memory
from bot.models import OutboxItem
from tests.conftest import run_mirror
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.processes import ChatProcess, MirrorProcess
from tests.waiting import wait_until

ALICE = 1001
BOB = 1002
COORDINATOR = 4242
STRANGER = 7777
GROUP = -100123
FIRST_REPLY_S = 30.0  # the first turn of a process waits for litellm's import


# splitting --------------------------------------------------------------------------------


def test_short_text_is_one_message_and_blank_text_none() -> None:
    assert split_for_telegram("  hello there \n") == ["hello there"]
    assert split_for_telegram(" \n\t ") == []


def test_split_prefers_paragraphs_then_sentences_then_words() -> None:
    first, second = "a" * 3000, "b" * 3000
    assert split_for_telegram(f"{first}\n\n{second}") == [first, second]

    sentences = " ".join(f"Sentence {i} is here." for i in range(300))
    chunks = split_for_telegram(sentences)
    assert len(chunks) == 2 and chunks[0].endswith("is here.")
    assert " ".join(chunks) == sentences

    words = " ".join(f"word{i}" for i in range(1000))
    chunks = split_for_telegram(words, limit=100)
    assert " ".join(chunks) == words  # no word was cut
    assert all(len(chunk) <= 100 for chunk in chunks)


def test_an_early_paragraph_break_does_not_leave_a_tiny_message() -> None:
    text = "Short intro.\n\n" + " ".join(["filler words"] * 400) + "."
    chunks = split_for_telegram(text)
    assert len(chunks) == 2
    assert len(chunks[0]) > 2048


def test_a_word_longer_than_a_message_is_cut_and_emoji_count_twice() -> None:
    assert [len(c) for c in split_for_telegram("x" * 10_000)] == [4096, 4096, 1808]
    chunks = split_for_telegram("😀" * 3000)
    assert [telegram_length(c) for c in chunks] == [4096, 1904]
    assert "".join(chunks) == "😀" * 3000


def test_limit_below_two_is_refused() -> None:
    with pytest.raises(ValueError):
        split_for_telegram("abc", limit=1)


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.lists(st.sampled_from([*"ab cd.!?\n\t,’😀é", "\n\n", ". ", "word "])).map("".join),
        st.text(max_size=300),
    ),
    limit=st.integers(min_value=2, max_value=80),
)
def test_split_keeps_every_character_in_order_within_the_limit(text: str, limit: int) -> None:
    chunks = split_for_telegram(text, limit=limit)
    assert all(chunk and chunk == chunk.strip() for chunk in chunks)
    assert all(telegram_length(chunk) <= limit for chunk in chunks)
    assert re.sub(r"\s", "", "".join(chunks)) == re.sub(r"\s", "", text)
    position = 0
    for chunk in chunks:  # each chunk is the next stretch of the text
        found = text.find(chunk, position)
        assert found >= 0
        assert not text[position:found].strip()
        position = found + len(chunk)
    assert not text[position:].strip()


# helpers for process tests ----------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def telegram_config(write_config: Callable[..., Path], fake: FakeTelegram, extra: str = "") -> Path:
    return write_config(
        "[entrances.telegram]\nenabled = true\n"
        f'base_url = "{fake.base_url}"\nbase_file_url = "{fake.base_file_url}"\n\n' + extra
    )


async def start_entrance(config: Path, *flags: str, **env: str) -> MirrorProcess:
    process = MirrorProcess(
        "run",
        "telegram",
        *flags,
        "--config",
        str(config),
        env={"MIRROR_TELEGRAM_TOKEN": DEFAULT_TOKEN, **env},
    )
    await process.start()
    try:
        await process.wait_for_line(lambda line: "polling as @" in line, stream="stderr")
    except BaseException:
        await process.stop()
        raise
    return process


@contextlib.asynccontextmanager
async def running_entrance(config: Path, *flags: str, **env: str) -> AsyncIterator[MirrorProcess]:
    """`mirror run telegram` for the block; it must then stop cleanly on SIGTERM."""
    process = await start_entrance(config, *flags, **env)
    try:
        yield process
    except BaseException:
        await process.stop()
        raise
    assert await process.stop() == 0, process.tail()
    assert any("instance telegram stopped" in line for line in process.stderr), process.tail()


async def status_is(memory: Memory, row_id: int, status: str) -> bool:
    [row] = [item for item in await memory.outbox() if item.id == row_id]
    return row.status == status


async def mirror_json(*args: str) -> Any:
    """A `mirror … --json` command, off the event loop so the fake keeps serving."""
    result = await asyncio.to_thread(run_mirror, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def in_chat(chat_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda sent: sent["chat_id"] == chat_id


# process tests ----------------------------------------------------------------------------


async def test_private_chat_round_trip_and_group_mention_rule(
    fake: FakeTelegram, write_config: Callable[..., Path], memory: Memory
) -> None:
    config = telegram_config(write_config, fake)
    async with running_entrance(config):
        asked = fake.push_message(ALICE, "what is your name?", user_id=ALICE, first_name="Alice")
        asked_id = asked["message"]["message_id"]
        [reply] = await fake.wait_for_sent(in_chat(ALICE), timeout=FIRST_REPLY_S)
        assert "Wren" in reply["text"]
        assert reply["reply_to_message_id"] == asked_id
        assert reply["parse_mode"] is None
        assert {"chat_id": ALICE, "action": "typing"} in fake.chat_actions

        # Telegram redelivers what was not confirmed (say, after a crash): answered once only.
        fake._push_update({"message": asked["message"]})
        thanks = fake.push_message(ALICE, "thanks", user_id=ALICE, first_name="Alice")
        await fake.wait_for_sent(
            lambda s: s["reply_to_message_id"] == thanks["message"]["message_id"]
        )
        assert [s["reply_to_message_id"] for s in fake.sent].count(asked_id) == 1

        since = len(fake.sent)
        chatter = "anyone seen the heron today?"
        fake.push_message(GROUP, chatter, user_id=BOB, chat_type="supergroup", first_name="Bob")

        async def chatter_recorded() -> Any:
            log = await memory.message_log(limit=50)
            return next((m for m in log if m.text == chatter), None)

        recorded = await wait_until(chatter_recorded, 10.0, "the group chatter recorded")
        assert recorded.conversation_kind == "group" and recorded.status == "observed"

        mention = fake.push_message(
            GROUP, f"@{fake.bot_username} what is your name?", user_id=BOB, chat_type="supergroup"
        )
        [answer] = await fake.wait_for_sent(in_chat(GROUP), since=since)
        assert answer["reply_to_message_id"] == mention["message"]["message_id"]
        assert "Wren" in answer["text"]

        follow_up = fake.push_message(
            GROUP,
            "and what have you promised?",
            user_id=BOB,
            chat_type="supergroup",
            reply_to_message_id=answer["message_id"],
        )
        answers = await fake.wait_for_sent(in_chat(GROUP), count=2, since=since)
        assert answers[1]["reply_to_message_id"] == follow_up["message"]["message_id"]
        assert len([s for s in fake.sent if s["chat_id"] == GROUP]) == 2  # chatter unanswered

    log = await memory.message_log(limit=50)
    [incoming] = [m for m in log if m.platform_message_id == f"{ALICE}:{asked_id}"]
    assert incoming.text == "what is your name?" and incoming.conversation_kind == "dm"


async def test_long_reply_is_split_and_send_faults_are_retried(
    fake: FakeTelegram, write_config: Callable[..., Path], memory: Memory
) -> None:
    paragraphs = [f"Paragraph {i}. " + "All work and no play. " * 45 for i in range(9)]
    long_reply = "\n\n".join(p.strip() for p in paragraphs)
    assert len(long_reply) > 9000
    async with FakeOpenAI() as model:
        config = telegram_config(
            write_config,
            fake,
            f'[model]\nname = "openai/fake-model"\napi_base = "{model.base_url}"\nretries = 0\n',
        )
        async with running_entrance(config, OPENAI_API_KEY="sk-test") as bot:
            model.queue_reply(long_reply)
            asked = fake.push_message(ALICE, "tell me everything", user_id=ALICE)
            parts = await fake.wait_for_sent(in_chat(ALICE), count=3, timeout=FIRST_REPLY_S)
            assert all(len(part["text"]) <= 4096 for part in parts)
            assert "\n\n".join(part["text"] for part in parts) == long_reply
            assert [part["reply_to_message_id"] for part in parts] == [
                asked["message"]["message_id"],
                None,
                None,
            ]

            # A 429 is waited out (retry_after) and the reply still arrives, once.
            fake.inject_429("sendMessage", retry_after=1)
            model.queue_reply("Rate limits are fine.")
            fake.push_message(ALICE, "still there?", user_id=ALICE)
            await fake.wait_for_sent(lambda s: s["text"] == "Rate limits are fine.")
            tries = [
                p for m, p in fake.requests if m == "sendMessage" and "Rate limits" in p["text"]
            ]
            assert len(tries) == 2
            assert [s["text"] for s in fake.sent].count("Rate limits are fine.") == 1

            # Every reply goes out through its own outbox row: this one was sent at once.
            async def marked_sent() -> OutboxItem | None:
                [row] = [r for r in await memory.outbox() if r.text == "Rate limits are fine."]
                return row if row.status == "sent" else None

            row = await wait_until(marked_sent, 10.0, "the reply's outbox row marked sent")
            assert row.attempts == 1

            # A reply that cannot be sent goes to the outbox, and the courier delivers it.
            fake.inject_error("sendMessage", 500)
            model.queue_reply("Delivered later.")
            failed = fake.push_message(ALICE, "and now?", user_id=ALICE)
            [late] = await fake.wait_for_sent(lambda s: s["text"] == "Delivered later.")
            assert late["reply_to_message_id"] == failed["message"]["message_id"]

            async def queued_reply_sent() -> OutboxItem | None:
                key = f"reply:{ALICE}:{failed['message']['message_id']}"
                rows = [r for r in await memory.outbox() if r.dedupe_key == key]
                return rows[0] if rows and rows[0].status == "sent" else None

            await wait_until(queued_reply_sent, 10.0, "the queued reply marked sent")

            # Polling survives a failed getUpdates: PTB's updater retries after a pause.
            fake.inject_error("getUpdates", 502)
            model.queue_reply("One.")
            model.queue_reply("Two.")
            fake.push_message(ALICE, "one", user_id=ALICE)  # fetched by the pending poll
            await bot.wait_for_line(lambda line: "polling failed" in line, stream="stderr")
            fake.push_message(ALICE, "two", user_id=ALICE)
            await fake.wait_for_sent(lambda s: s["text"] == "Two.")

            # Asked to stop mid-turn, it finishes the turn and sends the reply first.
            asked_so_far = len(model.requests)
            model.queue_delay(1.0, "Finished before leaving.")
            fake.push_message(ALICE, "one last thing", user_id=ALICE)
            await model.wait_for_requests(asked_so_far + 1)
            assert await bot.stop() == 0
            assert fake.sent[-1]["text"] == "Finished before leaving."


async def test_conflict_is_resolved_by_the_telegram_coordinator_with_a_button(
    fake: FakeTelegram, write_config: Callable[..., Path], memory: Memory
) -> None:
    config = telegram_config(
        write_config, fake, f'[coordinator]\naddress = "telegram:{COORDINATOR}"\n'
    )
    desk = ChatProcess(config, "desk", "bob")
    bot: MirrorProcess | None = None
    try:
        bot, _ = await asyncio.gather(start_entrance(config), desk.start())
        # Alice asks on Telegram, Bob on the desk instance: two promises for one hour.
        fake.push_message(ALICE, "Can you call me on Friday at 3pm?", user_id=ALICE)
        await asyncio.gather(
            fake.wait_for_sent(in_chat(ALICE), timeout=FIRST_REPLY_S),
            desk.say("Could you review my draft on Friday at 3pm?"),
        )
        report = await asyncio.to_thread(run_mirror, "scheduler", "--once", "--config", str(config))
        assert report.returncode == 0, report.stderr

        [item] = await fake.wait_for_sent(in_chat(COORDINATOR))
        [conflict] = await memory.conflicts()
        keyboard = item["reply_markup"]["inline_keyboard"]
        buttons = {b["text"]: b["callback_data"] for row in keyboard for b in row}
        assert buttons["Keep A"] == f"mirror:resolve:{conflict.id}:A"
        assert set(buttons) == {"Keep A", "Keep B", "Both", "Neither"}
        assert f"#{conflict.id}" in item["text"]

        # Typed commands take the same path as any message.
        command = fake.push_message(COORDINATOR, "/pending", user_id=COORDINATOR)
        [pending] = await fake.wait_for_sent(
            lambda s: s["reply_to_message_id"] == command["message"]["message_id"]
        )
        assert f"#{conflict.id}" in pending["text"]
        # In a group, even the coordinator's commands are refused: answers show private chats.
        in_group = fake.push_message(
            GROUP, f"/pending@{fake.bot_username}", user_id=COORDINATOR, chat_type="supergroup"
        )
        [refused] = await fake.wait_for_sent(
            lambda s: s["reply_to_message_id"] == in_group["message"]["message_id"]
        )
        assert "private chat" in refused["text"] and f"#{conflict.id}" not in refused["text"]

        async def press(chat_id: int, user_id: int, data: str) -> dict[str, Any]:
            update = fake.push_callback_query(chat_id, user_id, item["message_id"], data)
            query_id = update["callback_query"]["id"]
            await fake.wait_for_request(
                "answerCallbackQuery", lambda p: p["callback_query_id"] == query_id
            )
            [answer] = [a for a in fake.callback_answers if a["callback_query_id"] == query_id]
            return answer

        # Someone else, or the coordinator outside their private chat: refused, nothing changes.
        for chat_id, user_id, why in (
            (COORDINATOR, STRANGER, "Only my coordinator can do that."),
            (GROUP, COORDINATOR, "only in a private chat"),
        ):
            refused = await press(chat_id, user_id, buttons["Keep A"])
            assert why in refused["text"]
        assert fake.edits == []
        [still_open] = await memory.conflicts()
        assert still_open.status == "surfaced"

        accepted = await press(COORDINATOR, COORDINATOR, buttons["Keep A"])
        assert accepted["text"].startswith(f"Resolved #{conflict.id}")
        [edit] = await fake.wait_for_edits()
        assert edit["text"].startswith(item["text"] + "\n\nDecision: Resolved")
        assert edit["reply_markup"] is None
        assert "reply_markup" not in (fake.message(COORDINATOR, item["message_id"]) or {})
        [resolved] = await mirror_json("conflicts", "--json", "--config", str(config))
        assert resolved["status"] == "resolved" and resolved["choice"] == "A"
        assert resolved["resolved_by"] == f"telegram:{COORDINATOR}"

        again = await press(COORDINATOR, COORDINATOR, buttons["Keep B"])
        assert "already resolved" in again["text"] and again["show_alert"]
        assert len(fake.edits) == 1

        promised = await desk.say("What have you promised?")
        assert "My coordinator decided" in promised["text"]
        # Bob (desk) hears the decision about his side; Alice's private request stays hers.
        assert "“review bob's draft” (desk)" in promised["text"]
        assert "a plan from a private conversation (telegram)" in promised["text"]
        assert "call Alice" not in promised["text"]
    finally:
        await asyncio.gather(desk.stop(), *([bot.stop()] if bot is not None else []))


async def test_outbox_row_is_delivered_once_across_a_kill_and_restart(
    fake: FakeTelegram, write_config: Callable[..., Path], memory: Memory
) -> None:
    # The killed process's entrance lease runs out after 1.5 s; the restart waits for it.
    config = telegram_config(write_config, fake, "[persona]\ninstance_dead_after_s = 1.5\n")
    bot = await start_entrance(config)
    try:
        first = await memory.enqueue(
            entrance="telegram", target=str(ALICE), text="Before the kill.", dedupe_key="t:1"
        )
        assert first is not None
        await fake.wait_for_sent(lambda s: s["text"] == "Before the kill.")
        await wait_until(lambda: status_is(memory, first, "sent"), 10.0, "the first row sent")
    except BaseException:
        await bot.stop()
        raise
    assert await bot.stop(signal.SIGKILL) == -signal.SIGKILL

    second = await memory.enqueue(
        entrance="telegram", target=str(ALICE), text="While it was down.", dedupe_key="t:2"
    )
    assert second is not None
    async with running_entrance(config, "--standby"):
        await fake.wait_for_sent(lambda s: s["text"] == "While it was down.")
        await wait_until(lambda: status_is(memory, second, "sent"), 10.0, "the second row sent")
    assert [s["text"] for s in fake.sent] == ["Before the kill.", "While it was down."]


async def test_invalid_token_exits_2_with_one_line(
    fake: FakeTelegram, write_config: Callable[..., Path]
) -> None:
    config = telegram_config(write_config, fake)
    process = await MirrorProcess(
        "run", "telegram", "--config", str(config), env={"MIRROR_TELEGRAM_TOKEN": "999:WRONG"}
    ).start()
    assert process.proc is not None
    code = await asyncio.wait_for(process.proc.wait(), 30)
    await process.stop()
    assert code == 2
    assert process.stderr == [
        "mirror: telegram: the Telegram token was refused (401 on getMe): "
        "check MIRROR_TELEGRAM_TOKEN"
    ]
    assert [method for method, _ in fake.requests] == ["getMe"]
