"""Reminders people ask for, and recurring plans (issue 17, items 3 and 4).

"remind me to X …" becomes a reminder of X for that person in that conversation, due in
their timezone (a day alone at [persona] reminder_time, "in 2 hours" from now, no time at
all: a question back); "every weekday at 8:30" stores CronTrigger fields, and each
occurrence is its own due turn, the next one scheduled when the last is queued, keeping
the wall-clock time across a daylight-saving change."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bot.config import Config, PersonaConfig
from bot.instance import Instance
from bot.llm import parse_reply
from bot.memory import Recorded
from bot.scheduler import Scheduler
from tests.test_due_turns import Clock, text_to
from tests.test_instance_door import Platform, said, tiny_config

ROOT = Path(__file__).resolve().parents[1]
ZONES = ["UTC", "Europe/Lisbon", "America/New_York"]

# Wednesday 2026-12-02 10:00 UTC (05:00 in New York; Lisbon is on UTC in winter).
WEDNESDAY = datetime(2026, 12, 2, 10, tzinfo=UTC).timestamp()


@pytest.fixture
def config(tmp_path: Path, soul_file: Path) -> Iterator[Config]:
    with tiny_config(tmp_path, soul_file) as cfg:
        yield cfg


@pytest.fixture
async def door(config: Config) -> AsyncIterator[tuple[Instance, Platform, Clock]]:
    platform = Platform()
    clock = Clock(WEDNESDAY)
    instance = Instance(config, instance_id="tiny", entrance="tiny", send=platform.send)
    instance.memory.clock = clock
    async with instance:
        yield instance, platform, clock


def rows(config: Config) -> list[dict[str, Any]]:
    with sqlite3.connect(config.memory.path) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM intentions ORDER BY id").fetchall()
    return [dict(row) for row in found]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


async def ask(instance: Instance, text: str, pid: str = "m1") -> str:
    reply = await instance.handle(said(text, pid=pid))
    assert reply is not None
    return reply.text


# Tomorrow (Thu 3 Dec) at 09:00 local; two hours from Wed 10:00 UTC.
TOMORROW_9AM = {
    "UTC": utc(2026, 12, 3, 9),
    "Europe/Lisbon": utc(2026, 12, 3, 9),
    "America/New_York": utc(2026, 12, 3, 14),
}
IN_TWO_HOURS = {"UTC": "Wed 12:00", "Europe/Lisbon": "Wed 12:00", "America/New_York": "Wed 07:00"}


@pytest.mark.parametrize("zone", ZONES)
async def test_remind_me_to_buy_milk_tomorrow_is_a_reminder_at_nine_local_not_a_day_from_now(
    door: tuple[Instance, Platform, Clock], config: Config, zone: str
) -> None:
    instance, _, _ = door
    config.persona.timezone = zone
    text = await ask(instance, "remind me to buy milk tomorrow")
    assert f"I'll remind you to buy milk on Thu 09:00 ({zone})" in text
    assert "I'll buy milk" not in text
    [row] = rows(config)
    assert row["kind"] == "reminder" and row["text"] == "buy milk"
    assert row["due_at"] == TOMORROW_9AM[zone] and row["recurrence"] is None
    assert row["conversation_id"] is not None and row["person_id"] is not None


@pytest.mark.parametrize("zone", ZONES)
async def test_remind_me_in_two_hours_is_now_plus_two_hours_shown_in_local_time(
    door: tuple[Instance, Platform, Clock], config: Config, zone: str
) -> None:
    instance, _, clock = door
    config.persona.timezone = zone
    text = await ask(instance, "remind me in 2 hours to call mum")
    assert f"I'll remind you to call mum on {IN_TWO_HOURS[zone]} ({zone})" in text
    [row] = rows(config)
    assert row["kind"] == "reminder" and row["text"] == "call mum"
    assert row["due_at"] == clock.now + 2 * 3600


@pytest.mark.parametrize("zone", ZONES)
async def test_a_reminder_without_a_time_gets_a_question_back_and_no_intention(
    door: tuple[Instance, Platform, Clock], config: Config, zone: str
) -> None:
    instance, _, _ = door
    config.persona.timezone = zone
    text = await ask(instance, "remind me to call mum")
    assert "When should I remind you" in text
    assert rows(config) == []


async def test_the_person_timezone_wins_over_the_persona_one_and_the_default_time_is_config(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    instance, _, _ = door
    config.persona.reminder_time = "07:45"
    await ask(instance, "hello", pid="m0")
    with sqlite3.connect(config.memory.path) as conn:
        conn.execute("UPDATE people SET timezone = 'America/New_York'")
    text = await ask(instance, "Please remind me to water the plants on Friday.")
    assert "I'll remind you to water the plants on Fri 07:45 (America/New_York)" in text
    [row] = rows(config)
    assert row["due_at"] == utc(2026, 12, 4, 12, 45)


async def test_a_reminder_falls_due_as_reminder_x_in_its_conversation(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    instance, platform, clock = door
    await ask(instance, "remind me to call my sister tomorrow at 18:30")
    [row] = rows(config)
    assert row["due_at"] == utc(2026, 12, 3, 18, 30) and row["text"] == "call Ann's sister"
    clock.now = row["due_at"] + 5
    before = len(platform.sent)
    assert (await Scheduler(config, memory=instance.memory).tick()).due == [row["id"]]
    assert instance.courier is not None
    await instance.courier.deliver_due()
    assert "Reminder: call your sister." in text_to(platform, "c-ann", before)
    [after] = rows(config)  # once: no next occurrence
    assert after["status"] == "done" and after["follow_up"] == "sent"


# (zone, what is said, the clock when it is said, first occurrence, second, third): each
# recurring plan crosses a daylight-saving change between its first and second occurrence.
RECURRING = [
    (
        "Europe/Lisbon",  # summer time starts Sun 29 March 2026: 08:30 goes from +00 to +01
        "every weekday at 8:30 remind me to stand up",
        utc(2026, 3, 26, 10),
        utc(2026, 3, 27, 8, 30),
        utc(2026, 3, 30, 7, 30),
        utc(2026, 3, 31, 7, 30),
    ),
    (
        "America/New_York",  # standard time starts Sun 1 November 2026: -04 to -05
        "remind me every day at 21:00 to take my pills",
        utc(2026, 10, 31, 12),
        utc(2026, 11, 1, 1),
        utc(2026, 11, 2, 2),
        utc(2026, 11, 3, 2),
    ),
    (
        "UTC",
        "every Monday at 9 remind me to send the report",
        utc(2026, 12, 2, 10),
        utc(2026, 12, 7, 9),
        utc(2026, 12, 14, 9),
        utc(2026, 12, 21, 9),
    ),
]


@pytest.mark.parametrize(("zone", "said_text", "start", "first", "second", "third"), RECURRING)
async def test_a_recurring_reminder_schedules_each_occurrence_at_the_same_wall_clock_time(
    door: tuple[Instance, Platform, Clock],
    config: Config,
    zone: str,
    said_text: str,
    start: float,
    first: float,
    second: float,
    third: float,
) -> None:
    instance, platform, clock = door
    config.persona.timezone = zone
    clock.now = start
    text = await ask(instance, said_text)
    assert f"({zone}); the first is" in text and "I'll remind you to" in text
    [row] = rows(config)
    assert row["kind"] == "reminder" and row["due_at"] == first
    rule = json.loads(row["recurrence"])
    assert rule["timezone"] == zone
    scheduler = Scheduler(config, memory=instance.memory)
    assert instance.courier is not None

    for due, following in [(first, second), (second, third)]:
        clock.now = due - 60
        assert (await scheduler.tick()).due == []
        clock.now = due + 5
        current = rows(config)[-1]
        before = len(platform.sent)
        assert (await scheduler.tick()).due == [current["id"]]
        await instance.courier.deliver_due()
        assert "Reminder:" in text_to(platform, "c-ann", before)
        assert (await scheduler.tick()).due == []  # once per occurrence
        done, nxt = rows(config)[-2:]
        assert done["id"] == current["id"] and done["status"] == "done"
        assert nxt["due_at"] == following and nxt["status"] == "open"
        assert nxt["follow_up"] is None and nxt["kind"] == "reminder"
        assert json.loads(nxt["recurrence"]) == rule and nxt["text"] == row["text"]
        local = datetime.fromtimestamp(following, UTC).astimezone(_zone(zone))
        assert local.strftime("%H:%M") == f"{rule['hour']:02d}:{rule['minute']:02d}"


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


async def test_a_recurring_request_is_a_recurring_promise(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    instance, _, _ = door
    text = await ask(instance, "can you check in with me every day at 21:00?")
    assert "every day at 21:00 (UTC)" in text and "check in with you" in text
    [row] = rows(config)
    assert row["kind"] == "promise" and row["due_at"] == utc(2026, 12, 2, 21)
    assert json.loads(row["recurrence"]) == {"hour": 21, "minute": 0, "timezone": "UTC"}


async def test_a_real_model_may_propose_a_reminder_with_a_recurrence_checked_by_crontrigger(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    reply = parse_reply(
        json.dumps(
            {
                "reply": "Sure.",
                "intentions": [
                    {"text": "stretch", "kind": "reminder", "due_at": None,
                     "recurrence": {"day_of_week": "mon-fri", "hour": 8, "minute": 30}},
                    {"text": "nonsense", "kind": "odd", "due_at": None,
                     "recurrence": {"hour": "twenty-five"}},
                ],
            }
        )
    )  # fmt: skip
    good, bad = reply.intentions
    assert good.kind == "reminder" and good.recurrence == {
        "day_of_week": "mon-fri",
        "hour": 8,
        "minute": 30,
    }
    assert bad.kind == "promise"
    instance, _, _ = door
    config.persona.timezone = "Europe/Lisbon"
    await ask(instance, "hello", pid="m0")  # the person and conversation exist
    mind = instance.mind
    with sqlite3.connect(config.memory.path) as conn:
        message_id, conversation_id, person_id, identity_id = conn.execute(
            "SELECT id, conversation_id, person_id, identity_id FROM messages"
            " WHERE direction = 'in' ORDER BY id LIMIT 1"
        ).fetchone()
    recorded = Recorded(message_id, conversation_id, person_id, identity_id, False)
    incoming = said("hello", pid="m0")
    context = await mind.build_context(incoming, mind.gatekeeper.roster.speaker(incoming), recorded)
    stored = mind._new_intention(good, incoming, recorded, context)
    assert stored.kind == "reminder" and stored.recurrence is not None
    assert json.loads(stored.recurrence)["timezone"] == "Europe/Lisbon"
    assert stored.due_at == utc(2026, 12, 3, 8, 30)  # the first occurrence (Thu)
    assert mind._new_intention(bad, incoming, recorded, context).recurrence is None


def test_reminder_time_must_be_a_time_of_day() -> None:
    assert PersonaConfig(reminder_time="7:05").reminder_time == "07:05"
    for wrong in ("25:00", "9am", "noon", "09:60"):
        with pytest.raises(ValidationError, match=r"reminder_time|time of day"):
            PersonaConfig(reminder_time=wrong)


async def test_a_real_model_is_told_about_reminders_and_a_reminder_follow_up_says_so(
    door: tuple[Instance, Platform, Clock], config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import llm
    from bot.context import Context, render_system

    instance, _, clock = door
    config.persona.timezone = "America/New_York"
    seen: list[Context] = []
    complete = llm.complete

    async def watching(model: Any, context: Context) -> llm.Answer:
        seen.append(context)
        return await complete(model, context)

    monkeypatch.setattr(llm, "complete", watching)
    await ask(instance, "remind me in 1 hour to stretch")
    system = render_system(seen[-1])
    assert '"kind": "promise' in system and "reminder" in system and "day_of_week" in system
    assert "(America/New_York)" in system and "09:00" in system
    [row] = rows(config)
    clock.now = row["due_at"] + 5
    await Scheduler(config, memory=instance.memory).tick()
    assert instance.courier is not None
    await instance.courier.deliver_due()
    due = seen[-1].due
    assert due is not None and due.kind == "reminder" and due.text == "stretch"
    system = render_system(seen[-1])
    assert "a reminder" in system and "Reminder:" in system


async def test_tomorrow_at_nine_across_a_daylight_saving_change_is_nine_on_the_local_clock(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    # Saturday 28 March 2026, 20:00 in Lisbon: Sunday starts on summer time (+01).
    instance, _, clock = door
    config.persona.timezone = "Europe/Lisbon"
    clock.now = utc(2026, 3, 28, 20)
    text = await ask(instance, "remind me to buy milk tomorrow at 9am", pid="m1")
    assert "I'll remind you to buy milk on Sun 09:00 (Europe/Lisbon)" in text
    text = await ask(instance, "can you call me tomorrow at 10am?", pid="m2")
    assert "call you on Sun 2026-03-29 10:00" in text
    text = await ask(instance, "remind me to pay rent on the 5th", pid="m3")
    assert "I'll remind you to pay rent on Sun 05 Apr 09:00 (Europe/Lisbon)" in text
    milk, call, rent = rows(config)
    assert milk["due_at"] == utc(2026, 3, 29, 8) and milk["kind"] == "reminder"
    assert call["due_at"] == utc(2026, 3, 29, 9) and call["kind"] == "promise"
    assert rent["due_at"] == utc(2026, 4, 5, 8) and rent["text"] == "pay rent"


async def test_an_occurrence_falling_due_again_does_not_start_a_second_series(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    instance, _, clock = door
    await ask(instance, "every day at 21:00 remind me to lock the door")
    scheduler = Scheduler(config, memory=instance.memory)
    assert instance.courier is not None
    [first] = rows(config)
    clock.now = first["due_at"] + 5
    assert (await scheduler.tick()).due == [first["id"]]
    await instance.courier.deliver_due()
    assert len(rows(config)) == 2
    # Snoozed for ten minutes (what /snooze does to the row): it falls due again, once.
    with sqlite3.connect(config.memory.path) as conn:
        conn.execute(
            "UPDATE intentions SET status = 'open', follow_up = NULL, due_at = ? WHERE id = ?",
            (clock.now + 600, first["id"]),
        )
    clock.now += 605
    assert (await scheduler.tick()).due == [first["id"]]
    assert len(rows(config)) == 2  # the series' next occurrence was already waiting
