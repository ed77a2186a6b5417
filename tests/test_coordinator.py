"""The coordinator loop end to end with real processes on one temporary memory.db."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.commands import Command, Commands, parse_button, parse_command
from bot.config import load_config
from bot.memory import Memory, NewIntention
from bot.models import Author, Incoming
from bot.outcome import Outcome
from bot.scheduler import Scheduler
from bot.speaker import Roster
from tests.conftest import run_mirror
from tests.processes import ChatProcess, MirrorProcess

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines

COORDINATOR = (
    '[coordinator]\naddress = "local:carol"\n\n[scheduler]\ninterval_s = 0.2\nlease_s = 1.0\n'
)


def mirror_json(config: Path, *args: str) -> object:
    result = run_mirror(*args, "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_command_and_button_parsing() -> None:
    assert parse_command("/resolve 12 A take the call") == Command(
        "resolve", ["12", "A", "take", "the", "call"]
    )
    assert parse_command("/pending@mirror_bot") == Command("pending", [])
    assert parse_command("hello") is None
    assert parse_command('/resolve 3 "unbalanced') is not None
    assert parse_button("mirror:resolve:12:A") == Command("resolve", ["12", "A"])
    assert parse_button("mirror:approve:4") == Command("approve", ["4"])
    assert parse_button("evil:resolve:1:A") is None


async def test_conflict_reaches_the_coordinator_and_the_decision_every_instance(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(COORDINATOR)
    phone = await ChatProcess(config, "phone", "alice").start()
    desk = await ChatProcess(config, "desk", "bob").start()
    carol = await ChatProcess(config, "console", "carol").start()
    try:
        await phone.say("Can you call me on Friday at 3pm?")
        reply = await desk.say("Could you review my draft on Friday at 3pm?")
        assert "coordinator" in reply["text"]

        [conflict] = mirror_json(config, "conflicts")  # type: ignore[misc]
        assert conflict["reason"] == "double-booking" and conflict["status"] == "open"

        first = run_mirror("scheduler", "--once", "--config", str(config))
        assert "surfaced 1" in first.stdout, first.stdout + first.stderr
        second = run_mirror("scheduler", "--once", "--config", str(config))
        assert "surfaced 0" in second.stdout

        item = await carol.next_outbox()
        assert f"Conflict #{conflict['id']}" in item["text"]
        assert "call alice" in item["text"] and "review" in item["text"]  # private content
        assert item["payload"]["buttons"][0]["data"] == f"mirror:resolve:{conflict['id']}:A"

        # Only carol may decide; bob trying is refused and changes nothing.
        refused = await desk.say(f"/resolve {conflict['id']} B")
        assert "Only my coordinator" in refused["text"]
        assert mirror_json(config, "conflicts")[0]["status"] == "surfaced"  # type: ignore[index]

        done = await carol.say(f"/resolve {conflict['id']} A the call matters more --notify")
        assert f"Resolved #{conflict['id']}" in done["text"]
        again = await carol.say(f"/resolve {conflict['id']} B")
        assert "already resolved" in again["text"]

        [resolved] = mirror_json(config, "conflicts")  # type: ignore[misc]
        assert resolved["status"] == "resolved" and resolved["choice"] == "A"
        assert resolved["resolved_by"] == "local:carol"

        promised = await desk.say("What have you promised?")
        assert "My coordinator decided" in promised["text"]
        # Bob hears the decision about his own side; Alice's private request stays hers.
        assert "drop “review bob's draft”" in promised["text"]
        assert "call alice" not in promised["text"]
        assert "keep a plan from a private conversation" in promised["text"]

        note = await desk.next_outbox()  # --notify: bob hears about it on his own entrance
        assert "my coordinator decided" in note["text"] and "call alice" not in note["text"]
    finally:
        for chat in (phone, desk, carol):
            await chat.quit()
    statuses = {i["subject"]: i["status"] for i in mirror_json(config, "intentions")}  # type: ignore[union-attr]
    assert statuses == {"call alice": "resolved", "review your draft bob": "cancelled"} or (
        set(statuses.values()) == {"resolved", "cancelled"}
    )


async def test_bad_coordinator_input_is_answered_and_audited(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = load_config(write_config(COORDINATOR))
    async with Memory(config.memory.path) as memory:
        await memory.add_intention(
            NewIntention(
                "phone", "local", None, None, "private", "call", "call", 1e9, 3600, None, None
            )
        )
        await memory.add_intention(
            NewIntention(
                "desk", "local", None, None, "private", "review", "review", 1e9, 3600, None, None
            )
        )
        commands = Commands(memory, config)
        roster = Roster(config)

        async def say(person: str, text: str, *, private: bool = True) -> Outcome | None:
            incoming = Incoming(
                entrance="local",
                conversation_id=person if private else "group",
                conversation_kind="dm" if private else "group",
                author=Author(external_id=person),
                text=text,
            )
            return await commands.run_text(roster.speaker(incoming), text)

        for text, expected in [
            ("/resolve 99 A", "there is no item 99"),
            ("/resolve 1", "needs a choice"),
            ("/resolve x A", "not an item id"),
            ("/approve 1", "is a conflict"),
            ("/show", "needs an item id"),
        ]:
            outcome = await say("carol", text)
            assert outcome is not None and expected in outcome.text and not outcome.changed
        outcome = await say("mallory", "/resolve 1 A")
        assert outcome is not None and "Only my coordinator" in outcome.text
        assert (await memory.conflict(1)).status == "open"  # type: ignore[union-attr]
        assert len(await memory.audit_log("coordinator.invalid")) == 5
        assert len(await memory.audit_log("coordinator.refused")) == 1
        assert (await memory.conflict(1)).status == "open"  # type: ignore[union-attr]
        assert await say("carol", "/unknowncommand") is None
        group = await say("carol", "/pending", private=False)
        assert group is not None and "only in a private chat" in group.text


async def test_cross_entrance_request_is_approved_into_the_target_outbox(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(COORDINATOR)
    group = load_config(config)
    async with Memory(group.memory.path) as memory:
        from bot.models import Author, Incoming

        await memory.record_incoming(
            Incoming(
                entrance="discord",
                conversation_id="chan-42",
                conversation_kind="group",
                author=Author(external_id="u1", display_name="Dee"),
                text="hi all",
                platform_message_id="d1",
            ),
            "discord",
        )
    phone = await ChatProcess(config, "phone", "alice").start()
    try:
        reply = await phone.say("Please tell the Discord group the meeting moved to Monday")
        assert "coordinator" in reply["text"]
    finally:
        await phone.quit()
    [item] = mirror_json(config, "pending")  # type: ignore[misc]
    assert item["kind"] == "request"
    assert "surfaced 1" in run_mirror("scheduler", "--once", "--config", str(config)).stdout
    approved = run_mirror("resolve", str(item["id"]), "approve", "--config", str(config))
    assert approved.returncode == 0, approved.stderr
    again = run_mirror("resolve", str(item["id"]), "approve", "--config", str(config))
    assert again.returncode == 2 and "already resolved" in again.stdout
    async with Memory(group.memory.path) as memory:
        rows = [r for r in await memory.outbox() if r.entrance == "discord"]
    assert len(rows) == 1 and rows[0].target == "chan-42"
    assert "meeting moved" in rows[0].text


async def test_two_schedulers_never_both_act_and_standby_takes_over(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(write_config(COORDINATOR))
    async with Memory(config.memory.path) as memory:
        first, second = Scheduler(config, memory=memory), Scheduler(config, memory=memory)
        now = [1000.0]
        memory.clock = lambda: now[0]
        reports = [await first.tick(), await second.tick()]
        assert [r.leader for r in reports] == [True, False]
        for _ in range(5):
            now[0] += 0.5
            a, b = await first.tick(), await second.tick()
            assert a.leader and not b.leader
        now[0] += config.scheduler.lease_s + 0.1  # the leader stops ticking (it died)
        taken = await second.tick()
        assert taken.leader and taken.epoch == 2
        assert not (await first.tick()).leader


async def test_killing_the_leader_process_lets_the_standby_take_over(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(COORDINATOR)
    leader = await MirrorProcess("run", "scheduler", "--config", str(config)).start()
    await leader.wait_for_line(lambda line: "now the leader" in line, stream="stderr")
    standby = await MirrorProcess("run", "scheduler", "--config", str(config)).start()
    try:
        await standby.wait_for_line(lambda line: "now a standby" in line, stream="stderr")
        import signal

        await leader.stop(signal.SIGKILL)
        line = await standby.wait_for_line(
            lambda line: "now the leader" in line, stream="stderr", timeout=10
        )
        assert "epoch 2" in line
    finally:
        await leader.stop()
        await standby.stop()


@pytest.mark.parametrize("n", [1])
async def test_fenced_write_is_refused_after_the_lease_moved(
    write_config: Callable[..., Path], n: int
) -> None:
    from bot.memory import LeaseLost, Outgoing

    config = load_config(write_config(COORDINATOR))
    async with Memory(config.memory.path) as memory:
        old = Scheduler(config, memory=memory)
        report = await old.tick()
        assert report.leader and report.epoch == n
        await memory.release_lease("scheduler", old.holder)
        new = Scheduler(config, memory=memory)
        assert (await new.tick()).leader
        with pytest.raises(LeaseLost):
            await memory.fenced_enqueue(
                Outgoing("local", "carol", "stale", "stale-1"),
                lease="scheduler",
                holder=old.holder,
                epoch=n,
            )
        assert await memory.outbox() == []
    await asyncio.sleep(0)


async def test_reminders_escalation_expiry_and_dead_instances(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(write_config(COORDINATOR))
    config.coordinator.remind_after_s = 3600
    config.scheduler.expire_after_s = 86400
    async with Memory(config.memory.path) as memory:
        now = [1_000_000.0]
        memory.clock = lambda: now[0]
        due = now[0] + 7200
        await memory.add_intention(
            NewIntention(
                "phone", "local", None, None, "private", "call", "call", due, 3600, None, None
            )
        )
        await memory.add_intention(
            NewIntention(
                "desk", "local", None, None, "private", "review", "review", due, 3600, None, None
            )
        )
        await memory.add_intention(
            NewIntention(
                "desk",
                "local",
                None,
                None,
                "private",
                "old",
                "old",
                now[0] - 2 * 86400,
                3600,
                None,
                None,
            )
        )
        await memory.register_instance("phone", "local", "h", 1, None)
        scheduler = Scheduler(config, memory=memory)

        report = await scheduler.tick()
        assert report.surfaced == [1] and report.reminded == [] and report.escalated == []
        assert len(report.expired) == 1  # the intention two days past due

        now[0] += 1800  # no heartbeat from phone for half an hour: dead
        report = await scheduler.tick()
        assert report.reminded == [] and report.dead == ["phone"]
        now[0] += 1900  # an hour after surfacing: one reminder, not two
        assert (await scheduler.tick()).reminded == [1]
        assert (await scheduler.tick()).reminded == []

        now[0] += 3700  # past due: escalated once
        report = await scheduler.tick()
        assert report.escalated == [1] and report.dead == []
        assert (await scheduler.tick()).escalated == []
        kinds = [row.text.split("\n")[0] for row in reversed(await memory.outbox())]
        assert kinds[0].startswith("Conflict #1")
        assert kinds[1].startswith("Reminder") and kinds[-1].startswith("OVERDUE")
