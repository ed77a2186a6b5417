"""The console's reads of memory.db: the timeline's filters, each an index walk."""

from __future__ import annotations

import sqlite3

from bot.memory import TIMELINE_SQL, Memory, TimelineFilter, timeline_statement
from bot.models import Author, Incoming


def said(entrance: str, conversation: str, person: str, text: str) -> Incoming:
    kind = "dm" if conversation.startswith("dm") else "group"
    return Incoming(
        entrance=entrance,
        conversation_id=conversation,
        conversation_kind=kind,
        author=Author(external_id=person, display_name=person),
        text=text,
    )


async def test_the_timeline_filters_and_pages_newest_first(memory: Memory) -> None:
    await memory.record_many(
        [
            said("telegram", "dm-ann", "ann", "one"),
            said("local", "club", "bob", "two"),
            said("telegram", "club-tg", "ann", "three"),
            said("local", "dm-bob", "bob", "four"),
        ],
        "phone",
    )
    texts = lambda found: [m.text for m in found]  # noqa: E731
    assert texts(await memory.timeline(TimelineFilter())) == ["four", "three", "two", "one"]
    assert texts(await memory.timeline(TimelineFilter(entrance="telegram"))) == ["three", "one"]
    [first] = await memory.timeline(TimelineFilter(limit=1, entrance="telegram", before_id=3))
    assert first.text == "one" and first.person_name == "ann"
    ann = first.person_id
    assert texts(await memory.timeline(TimelineFilter(person_id=ann))) == ["three", "one"]
    both = TimelineFilter(person_id=ann, conversation_id=first.conversation_id)
    assert texts(await memory.timeline(both)) == ["one"]
    assert texts(await memory.timeline(TimelineFilter(after_id=2))) == ["four", "three"]
    assert await memory.newest_message_id() == 4


async def test_every_timeline_query_walks_an_index_and_sorts_nothing(memory: Memory) -> None:
    conn = sqlite3.connect(memory.path)
    try:
        for key, query in [
            ("all", TimelineFilter()),
            ("entrance", TimelineFilter(entrance="telegram")),
            ("person", TimelineFilter(person_id=1, entrance="telegram")),
            ("conversation", TimelineFilter(conversation_id=1, person_id=1)),
        ]:
            sql, params = timeline_statement(query)
            assert sql == TIMELINE_SQL[key]
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "TEMP B-TREE" not in plan, plan  # no sort
            [on_messages] = [step for step in plan.split(" | ") if " m " in f"{step} "]
            if key == "all":  # the primary key, backwards from the newest row
                assert on_messages.startswith(("SCAN m", "SEARCH m USING INTEGER PRIMARY KEY"))
            else:
                assert on_messages.startswith("SEARCH m USING INDEX"), plan
    finally:
        conn.close()
