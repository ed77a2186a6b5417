"""The guard's pure rules (bot.guard) and its tables (bot.memory.guard_store)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.accounts import AccountRef
from bot.guard import (
    CODE_ALPHABET,
    BotBudget,
    BotStreak,
    Bucket,
    EchoWindow,
    clip_incoming,
    decode_text,
    echo_match,
    is_bare_acknowledgement,
    is_empty,
    loop_reason,
    new_code,
    next_bot_exchange,
    normalize_code,
    normalize_for_echo,
    similar,
    take_token,
    utc_day,
)
from bot.guard_config import AccessConfig, GuardConfig, LimitsConfig
from bot.memory import BucketSpec, Memory, TurnRecord
from bot.memory.hot_queries import BOT_HOUR_SQL, GRANTED_SQL, RECENT_INCOMING_SQL, SENT_SINCE_SQL
from bot.models import Author, Incoming
from tests.conftest import ROOT, sqlite_memory_at_version
from tests.pg import sql_rows

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines

# Bad input ------------------------------------------------------------------------------


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode_text(b"caf\xc3\xa9 \xff\xfe ok") == "café \ufffd\ufffd ok"
    assert decode_text(b"\xef\xbb\xbfhello\x00") == "hello"
    assert decode_text(b"") == ""


def test_huge_message_is_cut_with_a_note() -> None:
    text = "word " * 4000  # 20 000 characters
    clipped = clip_incoming(text, 8000)
    assert len(clipped) <= 8000
    head, note = clipped.rsplit("\n", 1)
    assert text.startswith(head)
    assert note == f"[cut: {len(text) - len(head)} characters omitted]"
    assert clip_incoming("short", 8000) == "short"


def test_empty_means_only_whitespace() -> None:
    assert is_empty("") and is_empty("  \n\t ") and is_empty("\u200b \ufeff")
    assert not is_empty(".") and not is_empty("👍")


# Echo -------------------------------------------------------------------------------------


def test_echo_normalisation_ignores_case_punctuation_quotes_and_forward_prefixes() -> None:
    said = "I'll bring the blue notebook to Thursday's meeting!"
    expected = "i ll bring the blue notebook to thursday s meeting"
    assert normalize_for_echo(said) == expected
    assert normalize_for_echo(f"Fwd: {said.upper()}") == expected
    assert normalize_for_echo(f"> {said}\n>   ") == expected
    assert normalize_for_echo(f"Re: Fwd:   {said}  🙂") == expected
    assert normalize_for_echo("---------- Forwarded message ---------\n" + said) == expected


SAID = "I'll bring the blue notebook to Thursday's meeting at the library, promise."


def test_echo_match_recognises_repeats_forwards_and_long_fragments() -> None:
    said = [
        "Sure, I can do that.",
        "I'll bring the blue notebook to Thursday's meeting at the library, promise.",
    ]
    assert echo_match(
        "i'll bring the BLUE notebook to thursday's meeting at the library, promise", said
    )
    forwarded = (
        "Fwd: look what it said\n"
        "> I'll bring the blue notebook to Thursday's meeting at the library, promise."
    )
    assert echo_match(forwarded, said) == said[1]
    fragment = "bring the blue notebook to Thursday's meeting at the library"
    assert echo_match(fragment, said) == said[1]
    # Short common phrases are not echoes; neither is a different sentence.
    assert echo_match("Sure, I can do that.", said) is None
    assert echo_match("Bring the red notebook to Friday's meeting instead please", said) is None
    # Whole words only: "notebook" inside "notebooks" is not the same text.
    assert echo_match("the blue notebooks", ["the blue notebook"], min_chars=5) is None


def test_echo_window_finds_repeats_forwards_and_pieces_in_other_conversations() -> None:
    window = EchoWindow(window_s=100)
    window.add(1, 10.0, conversation_id=1, text="Sure, I can do that.")
    window.add(2, 20.0, conversation_id=1, text=SAID)
    window.add(3, 30.0, conversation_id=2, text="The garden party moved to Sunday at noon.")
    assert window.last_id == 3 and len(window) == 3
    assert window.match(f"Fwd: {SAID.upper()}", now=50.0, conversation_id=5) == SAID
    assert window.match(f"look at this! > {SAID} lol", now=50.0) == SAID
    piece = "bring the blue notebook to Thursday's meeting at the library"
    assert window.match(piece, now=50.0) == SAID
    assert window.match(SAID, now=50.0, conversation_id=1) is None  # said right here
    assert window.match("Sure, I can do that.", now=50.0) is None  # too short to tell
    assert window.match("The garden party is on Saturday, isn't it?", now=50.0) is None
    window.expire(now=120.5)  # the first two are older than the window now
    assert len(window) == 1 and window.match(SAID, now=120.5) is None
    assert window.match("the garden party moved to sunday at noon", now=120.5) is not None
    window.add(3, 30.0, conversation_id=2, text="ignored: already known")
    assert len(window) == 1


def test_echo_window_compares_a_bounded_number_of_candidates() -> None:
    window = EchoWindow(window_s=1e9, max_candidates=8)
    for n in range(500):
        window.add(n + 1, float(n), conversation_id=1, text=f"status report number {n} is fine")
    assert window.match("status report number 499 is fine", now=600.0) is not None
    assert len(window._candidates("status report number 7 is fine")) <= 16


# Loops --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["ack", ".", "[END]", "ok", "👍", "Understood, I'll wait", "OK!", "...", "Got it, thanks"],
)
def test_bare_acknowledgements(text: str) -> None:
    assert is_bare_acknowledgement(text)


@pytest.mark.parametrize(
    "text", ["What time is the meeting?", "ok, but the build failed on step 3", "Send the file"]
)
def test_messages_with_content_are_not_acknowledgements(text: str) -> None:
    assert not is_bare_acknowledgement(text)


def test_near_duplicates() -> None:
    assert similar("Please confirm receipt.", "please confirm receipt!!")
    assert similar(".", "👍")
    assert not similar(".", "hello")
    assert not similar("Please confirm receipt.", "The report is attached.")


def test_loop_reason_needs_bots_and_a_run() -> None:
    assert loop_reason([("ok", True), ("ack", True)]) == "bare acknowledgements"
    assert loop_reason([("ok", True), ("Here is the report", True)]) is None
    assert loop_reason([("ok", False), ("ack", False)]) is None  # people may say ok twice
    same = [("Please confirm receipt of 42", True)] * 3
    assert loop_reason(same) == "repeating itself"
    assert loop_reason(same[:2]) is None
    assert loop_reason([*same[:2], ("Please confirm receipt of 42", False)]) is None


# Token buckets and the bot budget -------------------------------------------------------------


def test_token_bucket_starts_full_refills_and_caps_at_burst() -> None:
    allowed, bucket = take_token(None, 100.0, rate_per_s=1.0, burst=3)
    assert allowed and bucket == Bucket(2.0, 100.0)
    for _ in range(2):
        allowed, bucket = take_token(bucket, 100.0, 1.0, 3)
        assert allowed
    allowed, bucket = take_token(bucket, 100.0, 1.0, 3)
    assert not allowed and bucket.tokens == 0
    allowed, bucket = take_token(bucket, 101.5, 1.0, 3)
    assert allowed and bucket.tokens == pytest.approx(0.5)
    _, bucket = take_token(bucket, 10_000.0, 1.0, 3)
    assert bucket.tokens == 2.0  # refilled to the burst, then one taken
    _, skewed = take_token(Bucket(1.0, 200.0), 150.0, 1.0, 3)  # another process's clock
    assert skewed.tokens == 0.0 and skewed.updated_at == 200.0


def test_bot_budget_counts_a_streak_and_stops_sticky() -> None:
    budget = BotBudget(per_conversation=3, per_hour=100, streak_gap_s=60, cooldown_s=600)
    state: BotStreak | None = None
    for second in range(3):
        decision = next_bot_exchange(state, 0, 1000.0 + second, budget)
        assert decision.allowed
        state = decision.state
    stop = next_bot_exchange(state, 0, 1003.0, budget)
    assert not stop.allowed and stop.newly_stopped and "3 bot exchanges" in (stop.reason or "")
    again = next_bot_exchange(stop.state, 0, 1100.0, budget)
    assert not again.allowed and not again.newly_stopped
    lifted = next_bot_exchange(again.state, 0, 1100.0 + 601, budget)
    assert lifted.allowed and lifted.state.streak == 1
    hourly = next_bot_exchange(None, 100, 5000.0, budget)
    assert not hourly.allowed and "within an hour" in (hourly.reason or "")
    gap = next_bot_exchange(BotStreak(streak=2, last_at=0.0), 0, 61.0, budget)
    assert gap.allowed and gap.state.streak == 1


# Codes and addresses ------------------------------------------------------------------------


def test_codes_are_unambiguous_and_normalised() -> None:
    code = new_code()
    assert len(code) == 9 and code[4] == "-"
    assert all(ch in CODE_ALPHABET for ch in code.replace("-", ""))
    assert normalize_code(code.lower().replace("-", " ")) == code
    assert new_code() != new_code()


def test_accounts() -> None:
    assert AccountRef.parse("telegram:123") == AccountRef("telegram", "123")
    assert AccountRef.parse("email:Ann@Example.org").key == "email:ann@example.org"
    assert AccountRef.of("email", "Ann@X.org").key == "email:ann@x.org"
    assert AccountRef.of("telegram", "Ann") != AccountRef.of("telegram", "ann")
    with pytest.raises(ValueError):
        AccountRef.parse("telegram")
    assert utc_day(86400 * 3 + 5) == 3


def test_config_sections_default_open_and_validate_admins() -> None:
    access = AccessConfig.model_validate(
        {"admins": ["Telegram:1", "email:Boss@X.org"], "discord": {"policy": "pairing"}}
    )
    assert access.admins == ["telegram:1", "email:boss@x.org"]
    assert access.entrance("discord").policy == "pairing"
    assert access.entrance("telegram").policy == "open"
    assert access.entrance("nowhere").policy == "open"
    with pytest.raises(ValueError):
        AccessConfig.model_validate({"admins": ["nobody"]})
    with pytest.raises(ValueError):
        AccessConfig.model_validate({"telegram": {"policy": "closed"}})
    assert GuardConfig().max_message_chars == 8000
    assert GuardConfig().bot_budget.per_conversation == 8
    assert LimitsConfig().daily_tokens == 0


# The tables -------------------------------------------------------------------------------------


def incoming(text: str, *, person: str = "alice", entrance: str = "telegram") -> Incoming:
    return Incoming(
        entrance=entrance,
        conversation_id=f"{entrance}-{person}",
        author=Author(external_id=person, display_name=person.capitalize()),
        text=text,
    )


async def test_token_buckets_in_memory_take_all_or_nothing(memory: Memory) -> None:
    now = [1_000_000.0]
    memory.clock = lambda: now[0]
    person = BucketSpec("person:1", 0.0, 2)
    entrance = BucketSpec("entrance:telegram", 0.0, 3)
    assert await memory.take_tokens([person, entrance]) == (None, False)
    assert await memory.take_tokens([person, entrance]) == (None, False)
    assert await memory.take_tokens([person, entrance]) == ("person:1", True)
    assert await memory.take_tokens([person, entrance]) == ("person:1", False)  # told once
    # The entrance bucket lost nothing for the refused attempts: one token is left.
    other = BucketSpec("person:2", 0.0, 5)
    assert await memory.take_tokens([other, entrance]) == (None, False)
    assert await memory.take_tokens([other, entrance]) == ("entrance:telegram", True)


TAKER = """
import asyncio, sys
from bot.memory import BucketSpec, Memory

async def main(path, attempts):
    allowed = 0
    async with Memory(path) as memory:
        for _ in range(attempts):
            limited, _ = await memory.take_tokens([BucketSpec("person:42", 0.0, 5)])
            allowed += limited is None
    print(allowed)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_a_rate_limit_holds_across_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with Memory(path):
        pass  # schema in place before the race
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, str(path), "5"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [await asyncio.to_thread(taker.communicate, timeout=60) for taker in takers]
    assert [taker.returncode for taker in takers] == [0, 0], [err for _, err in results]
    assert sum(int(out) for out, _ in results) == 5


async def test_daily_model_usage_is_kept_by_a_trigger(memory: Memory) -> None:
    from bot.memory import FactsRequest

    now = [86400.0 * 20000 + 10]
    memory.clock = lambda: now[0]
    recorded = await memory.record_incoming(incoming("hello there"), "phone")
    for tokens in (100, 250):
        await memory.store_turn(
            TurnRecord(
                incoming_id=recorded.message_id,
                conversation_id=recorded.conversation_id,
                entrance="telegram",
                instance_id="phone",
                person_id=recorded.person_id,
                visibility="private",
                reply_text="hi",
                soul_version=None,
                model="openai/x",
                prompt_tokens=tokens,
                completion_tokens=10,
                cost_usd=0.01,
            )
        )
    request = FactsRequest(
        message_id=recorded.message_id,
        conversation_id=recorded.conversation_id,
        person_id=recorded.person_id,
        usage_day=20000,
    )
    facts = await memory.guard_facts(request)
    assert facts.usage_tokens == 370 and facts.usage_cost_usd == pytest.approx(0.02)
    tomorrow = FactsRequest(**{**request.__dict__, "usage_day": 20001})
    assert (await memory.guard_facts(tomorrow)).usage_tokens == 0


async def test_hot_guard_queries_use_indexes(memory: Memory) -> None:
    if memory.engine != "sqlite":
        pytest.skip("SQLite's query plans (PostgreSQL's: tests/test_pg_engine.py)")
    conn = sqlite3.connect(memory.path)
    try:

        def plan(sql: str, params: dict[str, object]) -> str:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            return "\n".join(row[3] for row in rows)

        sent = plan(SENT_SINCE_SQL, {"after": 10, "since": 0.0})
        assert sent.splitlines() == [
            "SEARCH l USING INTEGER PRIMARY KEY (rowid>?)",
            "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)",
        ]
        recent = plan(RECENT_INCOMING_SQL, {"conversation": 1, "message": 10, "limit": 3})
        assert "USING INDEX messages_conversation" in recent
        assert "SCAN" not in recent
        granted = plan(GRANTED_SQL, {"person": 1})
        assert "identities_person" in granted and "SCAN" not in granted
        hour = plan(BOT_HOUR_SQL, {"conversation": 1, "since": 0.0})
        assert "bot_exchanges_conversation" in hour and "SCAN" not in hour
    finally:
        conn.close()


async def test_outgoing_messages_are_logged_for_the_echo_window(memory: Memory) -> None:
    recorded = await memory.record_incoming(incoming("hello there"), "phone")
    stored = await memory.store_turn(
        TurnRecord(
            incoming_id=recorded.message_id,
            conversation_id=recorded.conversation_id,
            entrance="telegram",
            instance_id="phone",
            person_id=recorded.person_id,
            visibility="private",
            reply_text="hi",
            soul_version=None,
            model=None,
        )
    )
    logged = sql_rows(memory.path, "SELECT message_id FROM outgoing_log")
    assert logged == [(stored.message_id,)]


async def test_upgrading_a_version_2_memory_backfills_the_guard_tables(tmp_path: Path) -> None:
    from bot.memory.database import schema_files

    path = tmp_path / "old.db"
    conn = sqlite_memory_at_version(path, 2)
    now = time.time()
    conn.execute("INSERT INTO people (id, name, created_at) VALUES (1, 'Ann', ?)", (now,))
    conn.execute(
        "INSERT INTO conversations (id, entrance, external_id, kind, created_at)"
        " VALUES (1, 'telegram', 'c1', 'dm', ?)",
        (now,),
    )
    conn.execute(
        "INSERT INTO messages (id, conversation_id, instance_id, entrance, direction, text,"
        " created_at, visibility) VALUES (7, 1, 'phone', 'telegram', 'out', 'hello', ?,"
        " 'private')",
        (now - 60,),
    )
    conn.execute(
        "INSERT INTO model_usage (at, instance_id, model, prompt_tokens, completion_tokens)"
        " VALUES (?, 'phone', 'm', 40, 2)",
        (now,),
    )
    conn.close()
    async with Memory(path) as memory:
        assert memory.schema_version == len(schema_files())
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT message_id FROM outgoing_log").fetchall() == [(7,)]
        assert conn.execute(
            "SELECT prompt_tokens, completion_tokens FROM usage_daily"
        ).fetchall() == [(40, 2)]
        assert conn.execute("SELECT merged_into FROM people").fetchall() == [(None,)]
    finally:
        conn.close()


async def test_prune_drops_what_the_guard_no_longer_needs(memory: Memory) -> None:
    from bot.memory import AdmitRequest

    now = [1_000_000.0]
    memory.clock = lambda: now[0]
    recorded = await memory.record_incoming(incoming("hello there"), "phone")
    await memory.take_tokens([BucketSpec("person:1", 1.0, 5)])
    await memory.admit(AdmitRequest(bot_conversation=recorded.conversation_id))
    await memory.claim_notice("once")
    assert await memory.prune_guard() == 0
    now[0] += 8 * 86400
    assert await memory.prune_guard() == 4  # bucket, bot exchange, bot streak, notice
    assert await memory.claim_notice("once")  # claimable again after a week
