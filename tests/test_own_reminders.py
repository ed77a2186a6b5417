"""People manage their own reminders and promises through the command router (/reminders,
/cancel, /snooze, /done, /timezone), only their own; and a coordinator's decision on a
cross-entrance request reaches the person who asked, in their own conversation."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import Config
from bot.instance import Instance
from bot.memory import NewIntention
from bot.models import Author, Incoming
from tests.test_instance_door import Platform, tiny_config

ROOT = Path(__file__).resolve().parents[1]
_pids = itertools.count(1)


@pytest.fixture
def config(tmp_path: Path, soul_file: Path) -> Iterator[Config]:
    with tiny_config(tmp_path, soul_file) as cfg:
        yield cfg


@pytest.fixture
async def tiny(config: Config) -> AsyncIterator[Instance]:
    async with Instance(config, instance_id="tiny", entrance="tiny", send=Platform().send) as it:
        yield it


def said(text: str, *, person: str = "ann", kind: str = "dm") -> Incoming:
    return Incoming(
        entrance="tiny",
        conversation_id=f"c-{person}" if kind == "dm" else "g1",
        conversation_kind=kind,  # type: ignore[arg-type]
        author=Author(external_id=person, display_name=person.title()),
        text=text,
        platform_message_id=f"m{next(_pids)}",
    )


async def say(instance: Instance, text: str, **kwargs: str) -> str:
    reply = await instance.handle(said(text, **kwargs))
    assert reply is not None
    return reply.text


async def reminder_for(instance: Instance, person: str, text: str, in_s: float) -> int:
    await say(instance, "/help", person=person)  # the person and their private chat exist
    return await instance.memory.add_reminder(
        "tiny", person, text, instance.memory.now + in_s, actor="test"
    )


def intention_row(config: Config, intention_id: int) -> tuple[str, float, str | None]:
    with sqlite3.connect(config.memory.path) as conn:
        row = conn.execute(
            "SELECT status, due_at, follow_up FROM intentions WHERE id = ?", (intention_id,)
        ).fetchone()
    return row[0], row[1], row[2]


async def test_help_lists_the_commands_for_ones_own_reminders(tiny: Instance) -> None:
    text = await say(tiny, "/help")
    for usage in ("/reminders", "/cancel N", "/snooze N", "/done N", "/timezone"):
        assert usage in text


async def test_a_person_lists_their_own_reminders_in_their_timezone(
    tiny: Instance, config: Config
) -> None:
    mine = await reminder_for(tiny, "ann", "stand up", 3600)
    theirs = await reminder_for(tiny, "bob", "water the plants", 7200)
    assert "UTC" in await say(tiny, "/timezone")
    assert "Europe/Lisbon" in await say(tiny, "/timezone Europe/Lisbon")
    assert "don't know the timezone" in await say(tiny, "/timezone Mars/Olympus")
    assert await say(tiny, "/timezone") == "Your timezone is Europe/Lisbon."
    listing = await say(tiny, "/reminders")
    local = datetime.fromtimestamp(intention_row(config, mine)[1], ZoneInfo("Europe/Lisbon"))
    assert f"#{mine} reminder · {local:%a %Y-%m-%d %H:%M} Europe/Lisbon · “stand up”" in listing
    assert f"#{theirs}" not in listing and "plants" not in listing
    assert "private chat" in await say(tiny, "/reminders", kind="group")
    audits = await tiny.memory.audit_log("person.timezone")
    assert [entry.actor for entry in audits] == ["tiny:ann"]


async def test_someone_elses_reminder_is_no_such_reminder_of_yours(
    tiny: Instance, config: Config
) -> None:
    await reminder_for(tiny, "ann", "stand up", 3600)
    theirs = await reminder_for(tiny, "bob", "water the plants", 7200)
    before = intention_row(config, theirs)
    for command in (f"/cancel {theirs}", f"/done {theirs}", f"/snooze {theirs} 2h"):
        assert "no such reminder of yours" in await say(tiny, command)
    assert "no such reminder of yours" in await say(tiny, "/cancel 999")
    assert intention_row(config, theirs) == before


async def test_done_and_cancel_end_ones_own(tiny: Instance, config: Config) -> None:
    first = await reminder_for(tiny, "ann", "stand up", 3600)
    second = await reminder_for(tiny, "ann", "call mum", 7200)
    assert await say(tiny, f"/done {first}") == "Marked done: “stand up”."
    assert await say(tiny, f"/cancel #{second}") == "Cancelled: “call mum”."
    assert intention_row(config, first)[0] == "done"
    assert intention_row(config, second)[0] == "cancelled"
    assert "no such reminder of yours" in await say(tiny, f"/cancel {second}")  # over already
    assert "no reminders" in await say(tiny, "/reminders")
    assert [e.subject for e in await tiny.memory.audit_log("intention.cancelled")] == [str(second)]


async def test_snooze_moves_it_and_a_queued_follow_up_falls_due_again(
    tiny: Instance, config: Config
) -> None:
    mine = await reminder_for(tiny, "ann", "stand up", 3600)
    _, due, _ = intention_row(config, mine)
    assert "Snoozed" in await say(tiny, f"/snooze {mine} 2h")
    assert intention_row(config, mine)[1] == pytest.approx(due + 7200)
    # It fell due: the scheduler queued its follow-up, not yet sent.
    with sqlite3.connect(config.memory.path) as conn:
        conn.execute("UPDATE intentions SET follow_up = 'queued' WHERE id = ?", (mine,))
    await tiny.memory.enqueue(
        entrance="tiny", target="c-ann", text="stand up", dedupe_key=f"due:{mine}"
    )
    await say(tiny, "/timezone America/New_York")
    assert "America/New_York" in await say(tiny, f"/snooze {mine} tomorrow")
    status, moved, follow_up = intention_row(config, mine)
    zone = ZoneInfo("America/New_York")
    was = datetime.fromtimestamp(due + 7200, zone)
    today = datetime.fromtimestamp(tiny.memory.now, zone).date()
    assert datetime.fromtimestamp(moved, zone).time() == was.time()
    assert datetime.fromtimestamp(moved, zone).date() == today + timedelta(days=1)
    assert (status, follow_up) == ("open", None)
    assert not [r for r in await tiny.memory.outbox() if r.dedupe_key == f"due:{mine}"]
    assert "Usage" in await say(tiny, f"/snooze {mine} someday")


async def test_a_denied_request_reaches_its_requester_and_no_one_else(
    tiny: Instance, config: Config
) -> None:
    await say(tiny, "/help")
    await say(tiny, "/help", person="bob")
    account = await tiny.memory.account("tiny", "ann")
    assert account is not None
    with sqlite3.connect(config.memory.path) as conn:
        chat = conn.execute("SELECT id FROM conversations WHERE external_id = 'c-ann'").fetchone()
    _, found = await tiny.memory.add_intention(
        NewIntention(
            owner_instance="tiny",
            entrance="tiny",
            conversation_id=chat[0],
            person_id=account.person_id,
            visibility="private",
            text="post the minutes on Discord",
            subject="post minutes",
            due_at=None,
            duration_s=3600,
            target_entrance="discord",
            source_message_id=None,
        )
    )
    assert found == 1
    [item] = await tiny.memory.pending_items()
    answer = await say(tiny, f"/deny {item.id}", person="boss")
    assert "denied" in answer and "tell the person who asked" in answer
    told = [r for r in await tiny.memory.outbox() if r.payload.get("kind") in ("denied", "passed")]
    assert [(r.entrance, r.target, r.dedupe_key, r.text) for r in told] == [
        (
            "tiny",
            "c-ann",
            f"denied:{item.id}",
            "My coordinator decided not to pass on “post the minutes on Discord”; "
            "I won't be able to do that.",
        )
    ]
    others = [r for r in await tiny.memory.outbox("pending") if r.target != "c-ann"]
    assert others == []


async def test_an_approved_request_tells_its_requester_it_was_passed_on(
    tiny: Instance, config: Config
) -> None:
    await say(tiny, "/help")
    account = await tiny.memory.account("tiny", "ann")
    assert account is not None
    elsewhere = said("hello", person="team", kind="group").model_copy(update={"entrance": "other"})
    await tiny.memory.record_incoming(elsewhere, "other")
    with sqlite3.connect(config.memory.path) as conn:
        chat = conn.execute("SELECT id FROM conversations WHERE external_id = 'c-ann'").fetchone()
    await tiny.memory.add_intention(
        NewIntention(
            owner_instance="tiny",
            entrance="tiny",
            conversation_id=chat[0],
            person_id=account.person_id,
            visibility="private",
            text="say hi to the team",
            subject="say hi team",
            due_at=None,
            duration_s=3600,
            target_entrance="other",
            source_message_id=None,
        )
    )
    [item] = await tiny.memory.pending_items()
    await say(tiny, f"/approve {item.id}", person="boss")
    rows = {r.dedupe_key: r for r in await tiny.memory.outbox("pending")}
    assert rows[f"request:{item.id}"].target == "g1"
    passed = rows[f"passed:{item.id}"]
    assert (passed.entrance, passed.target) == ("tiny", "c-ann")
    assert passed.text == "My coordinator passed on “say hi to the team” to other, as you asked."


async def test_cancel_ends_a_recurring_series_and_done_lets_it_go_on(
    tiny: Instance, config: Config
) -> None:
    rule = '{"hour": 8, "minute": 30, "timezone": "UTC"}'
    first = await reminder_for(tiny, "ann", "stretch", 3600)
    with sqlite3.connect(config.memory.path) as conn:
        conn.execute("UPDATE intentions SET recurrence = ? WHERE id = ?", (rule, first))
    assert "(repeats)" in await say(tiny, "/reminders")
    assert await say(tiny, f"/done {first}") == "Marked done: “stretch”."
    with sqlite3.connect(config.memory.path) as conn:
        [(following, status)] = conn.execute(
            "SELECT id, status FROM intentions WHERE id <> ? AND text = 'stretch'", (first,)
        ).fetchall()
    assert status == "open"  # the next occurrence waits
    with sqlite3.connect(config.memory.path) as conn:  # and, claimed, made one after it
        conn.execute("UPDATE intentions SET follow_up = 'queued' WHERE id = ?", (following,))
        conn.execute(
            "INSERT INTO intentions (owner_instance, entrance, conversation_id, person_id,"
            " visibility, text, subject, due_at, duration_s, status, kind, recurrence,"
            " created_at, updated_at) SELECT owner_instance, entrance, conversation_id,"
            " person_id, visibility, text, subject, due_at + 86400, duration_s, 'open', kind,"
            " recurrence, created_at, updated_at FROM intentions WHERE id = ?",
            (following,),
        )
    assert await say(tiny, f"/cancel {following}") == "Cancelled: “stretch”."
    with sqlite3.connect(config.memory.path) as conn:
        left = conn.execute(
            "SELECT count(*) FROM intentions WHERE text = 'stretch'"
            " AND status IN ('open', 'conflicted', 'resolved')"
        ).fetchone()[0]
    assert left == 0
    assert "no reminders" in await say(tiny, "/reminders")


async def test_snoozing_a_reminder_that_fired_makes_it_fall_due_again(
    tiny: Instance, config: Config
) -> None:
    mine = await reminder_for(tiny, "ann", "stand up", 60)
    # It fell due, was followed up and its turn marked it done.
    with sqlite3.connect(config.memory.path) as conn:
        conn.execute(
            "UPDATE intentions SET status = 'done', follow_up = 'sent', due_at = due_at - 120"
            " WHERE id = ?",
            (mine,),
        )
    for key in (f"due:{mine}", f"due-reply:{mine}"):
        await tiny.memory.enqueue(entrance="tiny", target="c-ann", text="-", dedupe_key=key)
    assert "Snoozed" in await say(tiny, f"/snooze {mine} 30m")
    status, due, follow_up = intention_row(config, mine)
    assert (status, follow_up) == ("open", None)
    assert due == pytest.approx(tiny.memory.now + 1800, abs=5)
    keys = {r.dedupe_key for r in await tiny.memory.outbox()}
    assert not keys & {f"due:{mine}", f"due-reply:{mine}"}  # the next follow-up can queue
    assert "private chat" in await say(tiny, "/reminders", kind="group")
    assert [e.actor for e in await tiny.memory.audit_log("reminders.refused")] == ["tiny:ann"]
