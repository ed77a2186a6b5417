"""Conflict rules (pure) and their storage: one row per pair, idempotent."""

from __future__ import annotations

import pytest

from bot.intentions import Decision, IntentionFacts, find_conflicts, normalize_subject
from bot.memory import Memory, NewIntention

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines

FRI_3PM = 1_800_000_000.0


def facts(
    id: int,
    owner: str,
    subject: str,
    text: str,
    due: float | None = FRI_3PM,
    duration: int = 3600,
    status: str = "open",
) -> IntentionFacts:
    return IntentionFacts(id, owner, subject, text, due, duration, status)


def test_subjects_are_short_stable_keys() -> None:
    assert normalize_subject("Call me on Friday at 3pm", person="Alice") == "call alice"
    assert normalize_subject("call Alice") == "call alice"
    assert normalize_subject("Review the draft tomorrow") == "review draft"
    assert normalize_subject("???") == "unspecified"


def test_double_booking_across_instances() -> None:
    new = facts(2, "desk", "review draft", "review the draft")
    [finding] = find_conflicts(new, [facts(1, "phone", "call alice", "call alice")], [])
    assert (finding.intention_a, finding.intention_b) == (1, 2)
    assert finding.reasons == ("double-booking",)


def test_touching_windows_and_same_instance_do_not_conflict() -> None:
    new = facts(2, "desk", "b", "b", due=FRI_3PM + 3600)
    assert find_conflicts(new, [facts(1, "phone", "a", "a")], []) == []
    same_owner = facts(2, "phone", "b", "b")
    assert find_conflicts(same_owner, [facts(1, "phone", "a", "a")], []) == []


def test_same_subject_different_content() -> None:
    new = facts(2, "desk", "team meeting", "team meeting on Saturday", due=None)
    old = facts(1, "phone", "team meeting", "team meeting on Friday", due=None)
    [finding] = find_conflicts(new, [old], [])
    assert finding.reasons == ("same subject, different content",)
    same_text = facts(2, "desk", "team meeting", "Team meeting on Friday!", due=None)
    assert find_conflicts(same_text, [old], []) == []


def test_both_rules_make_one_finding_per_pair() -> None:
    new = facts(2, "desk", "call alice", "call alice at home")
    [finding] = find_conflicts(new, [facts(1, "phone", "call alice", "call alice")], [])
    assert len(finding.reasons) == 2


def test_contradicting_a_decision() -> None:
    decision = Decision(7, "call alice", ("call alice",))
    [finding] = find_conflicts(facts(3, "desk", "call alice", "skip the call"), [], [decision])
    assert finding.decision_of == 7 and finding.intention_b is None
    assert find_conflicts(facts(3, "desk", "call alice", "Call Alice"), [], [decision]) == []


def test_inactive_intentions_are_ignored() -> None:
    new = facts(2, "desk", "x", "x")
    assert find_conflicts(new, [facts(1, "phone", "y", "y", status="done")], []) == []


def intention(
    owner: str, subject: str, text: str, due: float | None = FRI_3PM, target: str | None = None
) -> NewIntention:
    return NewIntention(
        owner_instance=owner,
        entrance="local",
        conversation_id=None,
        person_id=None,
        visibility="private",
        text=text,
        subject=subject,
        due_at=due,
        duration_s=3600,
        target_entrance=target,
        source_message_id=None,
    )


async def test_stored_conflict_marks_both_and_is_idempotent(memory: Memory) -> None:
    a, _ = await memory.add_intention(intention("phone", "call alice", "call alice"))
    b, found = await memory.add_intention(intention("desk", "review draft", "review draft"))
    assert found == 1
    [conflict] = await memory.conflicts()
    assert (conflict.intention_a, conflict.intention_b) == (a, b)
    assert {i.status for i in await memory.intentions()} == {"conflicted"}
    # A third, unrelated in time, adds nothing.
    _, found = await memory.add_intention(intention("desk", "lunch", "lunch", due=FRI_3PM + 86400))
    assert found == 0 and len(await memory.conflicts()) == 1


async def test_request_for_another_entrance_is_an_item(memory: Memory) -> None:
    _, found = await memory.add_intention(
        intention("phone", "tell group", "tell the group the meeting moved", None, "discord")
    )
    [item] = await memory.conflicts()
    assert found == 1 and item.kind == "request" and item.intention_b is None
