"""Recall by meaning (issue 21): a fact told on one entrance comes back on another to a
question that shares no word with it, only for an audience that may see it, with its
scores kept as the reply's provenance; `mirror memory reindex` finishes after a crash.

Every test here needs the `recall` extra (in the dev extra, so CI runs them)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import RecallConfig
from bot.models import Audience, Author, Incoming
from tests.privacy_world import (
    SAM,
    SAM_ON_DISCORD,
    Account,
    PrivacyWorld,
    group_chat,
    needs_recall,
    private_chat,
    recalled_section,
)

pytestmark = needs_recall

ROOT = Path(__file__).resolve().parents[1]
ROBIN = Account("discord", "robin", "Robin")
FACT = "I'm allergic to peanuts"
QUESTION = "is there anything I can't eat?"  # not one word in common with FACT


@pytest.fixture(params=["own", "host"])
def host(request: pytest.FixtureRequest) -> bool:
    """Each process embeds and searches for itself (a process run alone), or one process
    does for every entrance of the host (under `mirror up`, bot/recall_host.py)."""
    return bool(request.param == "host")


async def test_fact_told_on_telegram_is_recalled_on_discord_by_meaning(
    tmp_path: Path, host: bool
) -> None:
    async with PrivacyWorld(tmp_path, entrances=("telegram", "discord"), host=host) as world:
        await world.link(SAM, SAM_ON_DISCORD)
        await world.say(SAM, private_chat(SAM), FACT)
        await world.settle_embedders()
        asked = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), QUESTION)
        await world.settle_embedders()
        assert world.memory is not None and asked.reply is not None
        scores = await world.memory.recall_scores(asked.reply.message_id or 0)
        # Under a host's recall, no entrance holds an index (nor embeds).
        indexes = [i.memory._vector_index is not None for i in world.instances.values()]

    assert "peanuts" in asked.text
    assert "peanuts" in recalled_section(asked.prompt)
    assert any(indexes) is not host
    # Found by meaning alone (no word in common), and the provenance says so.
    by_meaning = [s for s in scores if s["vector_rank"] is not None]
    assert by_meaning and all(s["fts_rank"] is None for s in by_meaning)
    floor = RecallConfig().min_similarity
    assert all(floor <= s["similarity"] <= 1 and s["fused"] > 0 for s in by_meaning)


async def test_without_recall_by_meaning_the_same_question_finds_nothing(tmp_path: Path) -> None:
    async with PrivacyWorld(tmp_path, entrances=("telegram", "discord"), recall=False) as world:
        await world.link(SAM, SAM_ON_DISCORD)
        await world.say(SAM, private_chat(SAM), FACT)
        asked = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), QUESTION)

    assert "peanuts" not in recalled_section(asked.prompt)
    assert "peanuts" not in asked.text


async def test_when_the_hosts_recall_does_not_answer_the_turn_recalls_by_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bot import recall_host

    monkeypatch.setenv(recall_host.SOCKET_ENV, str(tmp_path / "nobody-listens.sock"))
    monkeypatch.setattr(recall_host, "_said_at", -recall_host._QUIET_S)  # said once a minute
    async with PrivacyWorld(tmp_path, entrances=("telegram", "discord")) as world:
        await world.link(SAM, SAM_ON_DISCORD)
        await world.say(SAM, private_chat(SAM), FACT)
        asked = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), "any peanuts?")

    assert "peanuts" in recalled_section(asked.prompt)  # by words: the turn went on
    assert any("recall by words only" in r.getMessage() for r in caplog.records)


async def test_recall_by_meaning_keeps_a_private_fact_from_other_audiences(
    tmp_path: Path, host: bool
) -> None:
    lunch = group_chat("discord", "lunch")
    async with PrivacyWorld(tmp_path, entrances=("telegram", "discord"), host=host) as world:
        await world.link(SAM, SAM_ON_DISCORD)
        await world.say(SAM, private_chat(SAM), FACT)
        await world.settle_embedders()
        someone_else = await world.say(ROBIN, private_chat(ROBIN), QUESTION)
        in_a_group = await world.say(SAM_ON_DISCORD, lunch, QUESTION)
        at_home = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), QUESTION)

    assert "peanuts" in at_home.text  # the same question does find it where it may
    for turn in (someone_else, in_a_group):
        assert "peanuts" not in turn.prompt and "peanuts" not in turn.text


@pytest.mark.parametrize("passes", ["exact", "two passes"])
def test_the_audience_is_filtered_before_ranking(passes: str) -> None:
    """Twenty rows the audience may not see, all nearer than the one it may: the search
    still returns the visible one (a filter after ranking top-5 would return nothing), in
    the exact search of a small shelf and in the two passes of a large one."""
    import numpy as np

    from bot.recall import Shelf

    rng = np.random.default_rng(7)
    query = rng.normal(size=384).astype(np.float32)
    query /= np.linalg.norm(query)

    def near(weight: float) -> bytes:
        noise = rng.normal(size=384).astype(np.float32)
        vector = weight * query + (1 - weight) * noise / np.linalg.norm(noise)
        return (vector / np.linalg.norm(vector)).astype("<f4").tobytes()

    shelf = Shelf("note", cap=100, dimensions=384, coarse_from=8 if passes == "two passes" else 999)
    # (row_id, conversation_id, person_id, visibility, vector): others' private notes …
    shelf.append([(i, 100 + i, 50 + i, "private", near(0.9)) for i in range(20)])
    # … and one of person 7's own, from another conversation, further away.
    shelf.append([(99, 3, 7, "private", near(0.5))])
    mine = Audience(conversation_id=1, person_id=7)
    [hit] = shelf.search(query, mine, exclude_conversation=None, limit=5, floor=0.0)
    assert hit.row_id == 99
    group = Audience(conversation_id=1)
    assert shelf.search(query, group, exclude_conversation=None, limit=5, floor=0.0) == []
    everyone = Audience(conversation_id=1, everyone=True)
    assert len(shelf.search(query, everyone, exclude_conversation=None, limit=5, floor=0.0)) == 5
    assert (shelf.basis is not None) == (passes == "two passes")


def test_two_passes_find_what_the_exact_search_finds() -> None:
    """On clustered vectors (as sentence vectors are), the first pass over 64 principal
    directions keeps the exact top 5 in its 512 candidates nearly always."""
    import numpy as np

    from bot.recall import Shelf

    rng = np.random.default_rng(3)
    centers = rng.normal(size=(50, 384)).astype(np.float32)
    vectors = centers[rng.integers(0, 50, 8000)] + 0.8 * rng.normal(size=(8000, 384))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    rows = [(i, i % 40, i % 30, "group", v.astype("<f4").tobytes()) for i, v in enumerate(vectors)]
    two, exact = Shelf("message", 8000, 384), Shelf("message", 8000, 384, coarse_from=10**9)
    two.coarse_from = 2000
    two.append(rows[:3000])  # fitted on the first rows …
    two.append(rows[3000:])  # … and the later ones projected
    exact.append(rows)
    assert two.basis is not None and exact.basis is None
    audience, same = Audience(conversation_id=3, person_id=5), 0
    for n in range(100):
        query = vectors[n * 37] + 0.5 * rng.normal(size=384).astype(np.float32)
        query /= np.linalg.norm(query)
        found = {
            h.row_id
            for h in two.search(query, audience, exclude_conversation=None, limit=5, floor=-1)
        }
        best = {
            h.row_id
            for h in exact.search(query, audience, exclude_conversation=None, limit=5, floor=-1)
        }
        same += len(found & best)
    assert same / 500 >= 0.9


@pytest.mark.parametrize("path", ["floor first", "mask first", "two passes"])
def test_each_search_path_finds_what_a_plain_ranking_finds(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small shelf applies the floor before the audience mask (few rows pass it), a
    larger one the mask first, a large one ranks in two passes: on rows of every kind of
    visibility and audiences of every kind, the first two return exactly the rows and
    cosines of a plain ranking (mask, floor, then the nearest), the two passes nearly."""
    import numpy as np

    from bot import recall
    from bot.recall import Shelf

    monkeypatch.setattr(recall, "FLOOR_FIRST", 10**9 if path == "floor first" else 0)
    rng = np.random.default_rng(11)
    count = 3000
    centers = rng.normal(size=(30, 384)).astype(np.float32)
    vectors = centers[rng.integers(0, 30, count)] + 0.9 * rng.normal(size=(count, 384))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    conversations = rng.integers(1, 12, count)
    people = [int(p) if p < 9 else None for p in rng.integers(1, 12, count)]
    groups = rng.random(count) < 0.3
    shelf = Shelf("message", count, 384, coarse_from=1000 if path == "two passes" else 10**9)
    shelf.append(
        [
            (
                i + 1,
                int(conversations[i]),
                people[i],
                "group" if groups[i] else "private",
                vectors[i].astype("<f4").tobytes(),
            )
            for i in range(count)
        ]
    )
    assert (shelf.basis is not None) == (path == "two passes")
    # The shelf holds its vectors in int8 (a scale a row): its exact answer is the plain
    # ranking of what it holds, within a few thousandths of the float32 vectors' cosines.
    held = shelf.rows(slice(0, count))
    assert float(np.abs((held * vectors).sum(axis=1) - 1).max()) < 0.003
    audiences = [
        Audience(conversation_id=3),
        Audience(conversation_id=3, person_id=4),
        Audience(conversation_id=None, person_id=5),
        Audience(conversation_id=None),
        Audience(conversation_id=2, everyone=True),
    ]
    same = total = 0
    for n in range(40):
        query = vectors[n * 71] + 0.6 * rng.normal(size=384).astype(np.float32)
        query = (query / np.linalg.norm(query)).astype(np.float32)
        for audience in audiences:
            exclude = 3 if n % 2 else None
            seen = [
                audience.everyone
                or conversations[i] == (audience.conversation_id or -2)
                or (
                    audience.person_id is not None
                    and (groups[i] or people[i] == audience.person_id)
                )
                for i in range(count)
            ]
            assert float(np.abs(held @ query - vectors @ query).max()) < 0.005
            scores = held @ query
            plain = sorted(
                (
                    (-float(scores[i]), i + 1)
                    for i in range(count)
                    if seen[i] and conversations[i] != exclude and scores[i] >= 0.2
                ),
            )[:5]
            found = shelf.search(query, audience, exclude_conversation=exclude, limit=5, floor=0.2)
            if path == "two passes":
                same += len({h.row_id for h in found} & {row for _, row in plain})
                total += len(plain)
                continue
            assert [h.row_id for h in found] == [row for _, row in plain]
            assert [h.similarity for h in found] == pytest.approx([-s for s, _ in plain], abs=1e-5)
    assert path != "two passes" or same >= 0.9 * total


async def test_the_embedders_look_starts_past_what_its_previous_poll_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedder looks for its instance's rows without a vector after the newest id of
    its previous poll's look, once that look found every missing row. Before, it looked
    after the last row it had embedded itself: a turn's incoming message is handed over,
    never found missing, so each poll re-read every message since the process started
    (and every instance's notes and intentions), growing with every turn."""
    import asyncio
    import re

    from bot.memory import vector_store
    from bot.memory.database import run_in_thread

    monkeypatch.setattr(vector_store, "POLL_S", 0.02)
    statements: list[str] = []
    async with PrivacyWorld(tmp_path, entrances=("telegram",)) as world:
        instance = world.instances["telegram"]
        await world.say(SAM, private_chat(SAM), "hello there")
        await world.settle_embedders()
        reader = instance.memory._reader
        assert reader is not None
        await run_in_thread(reader, lambda raw: raw.set_trace_callback(statements.append))
        for text in ("my sister lives in Porto", "I'm moving to Lisbon in March", QUESTION):
            await world.say(SAM, private_chat(SAM), text)
            await asyncio.sleep(0.1)  # polls between turns, as between messages
        # The newest row is the last reply (never embedded, so never found missing).
        newest = await instance.memory.read(
            lambda conn: conn.execute("SELECT max(id) FROM messages").fetchone()[0]
        )

        def looked_after() -> list[int]:
            return [
                int(found)
                for statement in list(statements)
                if "FROM messages m WHERE m.direction = 'in'" in statement
                for found in re.findall(r"m\.id > (\d+)", statement)
            ]

        for _ in range(100):  # the polls after the last turn (a busy host: up to 5 s)
            await instance.memory.audit("test", "test.poke")  # memory changed: a new look
            await asyncio.sleep(0.05)
            if looked_after() and looked_after()[-1] >= newest:
                break
        await run_in_thread(reader, lambda raw: raw.set_trace_callback(None))
    assert looked_after() and looked_after()[-1] >= newest, (looked_after(), newest)


def test_mirror_memory_why_shows_the_scores(tmp_path: Path) -> None:
    import asyncio

    async def story() -> int:
        async with PrivacyWorld(tmp_path, entrances=("telegram", "discord")) as world:
            await world.link(SAM, SAM_ON_DISCORD)
            await world.say(SAM, private_chat(SAM), FACT)
            await world.settle_embedders()
            asked = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), QUESTION)
            await world.settle_embedders()
            assert asked.reply is not None and asked.reply.message_id is not None
            return asked.reply.message_id

    reply_id = asyncio.run(story())
    shown = _mirror("memory", "why", str(reply_id), "--db", str(tmp_path / "memory.db"))
    assert shown.returncode == 0, shown.stderr
    assert "meaning #1" in shown.stdout and "fused" in shown.stdout
    as_json = _mirror("memory", "why", str(reply_id), "--json", "--db", str(tmp_path / "memory.db"))
    recalled = json.loads(as_json.stdout)["recall"]
    assert any(r["vector_rank"] == 1 and r["similarity"] > 0.3 for r in recalled)


# mirror memory reindex ----------------------------------------------------------------------


def _mirror(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    from tests.conftest import mirror_env

    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**mirror_env(), **(env or {})},
    )


def _filled_memory(tmp_path: Path, count: int) -> Path:
    """A memory.db with `count` messages people wrote and none of their vectors (as before
    recall was turned on)."""
    import asyncio
    from datetime import UTC, datetime

    from bot.memory import Memory
    from bot.models import Author, Incoming

    db = tmp_path / "memory.db"
    topics = ("the garden", "my bike", "the concert", "a recipe", "the office", "our trip")

    async def fill() -> None:
        async with Memory(db) as memory:
            await memory.record_many(
                [
                    Incoming(
                        entrance="telegram",
                        conversation_id=f"chat-{i % 5}",
                        conversation_kind="dm",
                        author=Author(external_id=f"person-{i % 5}", display_name=f"P{i % 5}"),
                        text=f"message {i} about {topics[i % len(topics)]}",
                        platform_message_id=f"m{i}",
                        received_at=datetime(2026, 1, 1, tzinfo=UTC),
                    )
                    for i in range(count)
                ],
                "telegram",
            )

    asyncio.run(fill())
    return db


def _vectors(db: Path) -> dict[int, int]:
    """message id -> vector id."""
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT row_id, id FROM vectors WHERE kind = 'message'"))


def test_reindex_killed_in_the_middle_finishes_on_the_next_run(tmp_path: Path) -> None:
    db = _filled_memory(tmp_path, 100)
    killed = _mirror(
        "memory", "reindex", "--db", str(db), "--batch", "10",
        env={"MIRROR_CRASH_AT": "during-reindex"},
    )  # fmt: skip
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    before = _vectors(db)
    assert len(before) == 20  # two batches committed, the third died in hand

    finished = _mirror("memory", "reindex", "--db", str(db), "--batch", "10")
    assert finished.returncode == 0, finished.stderr
    assert "embedded 80 rows" in finished.stdout
    after = _vectors(db)
    assert sorted(after) == list(range(1, 101))  # every message, once
    assert all(after[row] == vector for row, vector in before.items())  # none embedded twice
    again = _mirror("memory", "reindex", "--db", str(db))
    assert "nothing to embed" in again.stdout


def test_reindex_says_so_when_recall_by_meaning_is_off(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text(f'[memory]\npath = "{tmp_path / "memory.db"}"\n\n[recall]\nenabled = false\n')
    done = _mirror("memory", "reindex", "--config", str(config))
    assert done.returncode != 0
    assert "FTS5 only" in done.stdout + done.stderr


def test_vectors_are_not_kept_for_the_personas_own_replies(tmp_path: Path) -> None:
    import asyncio

    async def story() -> None:
        async with PrivacyWorld(tmp_path, entrances=("telegram",)) as world:
            await world.say(SAM, private_chat(SAM), FACT)
            await world.say(SAM, private_chat(SAM), "my sister lives in Porto")
            await world.settle_embedders()

    asyncio.run(story())
    with sqlite3.connect(tmp_path / "memory.db") as conn:
        kinds = dict(conn.execute("SELECT kind, count(*) FROM vectors GROUP BY kind").fetchall())
        replies_embedded = conn.execute(
            "SELECT count(*) FROM vectors v JOIN messages m ON m.id = v.row_id"
            " WHERE v.kind = 'message' AND m.direction = 'out'"
        ).fetchone()[0]
        people_wrote = conn.execute(
            "SELECT count(*) FROM messages WHERE direction = 'in'"
        ).fetchone()[0]
    assert replies_embedded == 0
    assert kinds["message"] == people_wrote and kinds["note"] >= 2


def test_describe_says_which_recall_is_active() -> None:
    from bot.config import Config, RecallConfig
    from bot.recall import describe

    assert describe(Config()).startswith("FTS5 + vectors (all-MiniLM-L6-v2, 384-d")
    off = Config(recall=RecallConfig(enabled=False))
    assert describe(off) == "FTS5 only ([recall] enabled = false)"


async def test_each_text_is_embedded_once_by_a_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn's query and the embedder's rows share one encoder and its cache: the message a
    person wrote, and a note of the same words, cost one embedding, however the embedder's
    poll falls against the turn (here it runs first: the message is recorded and embedded
    before its turn asks for the same vector)."""
    from collections import OrderedDict

    from bot import embedding, recall

    monkeypatch.setattr(recall, "_cache", OrderedDict())  # what earlier tests embedded
    encoded: list[str] = []
    encode = embedding.Encoder.encode

    def counting(self: embedding.Encoder, texts: list[str]) -> object:
        encoded.extend(texts)
        return encode(self, texts)

    monkeypatch.setattr(embedding.Encoder, "encode", counting)
    statements = [FACT, "I'm moving to Lisbon in March", "my sister lives in Porto"]
    async with PrivacyWorld(tmp_path, entrances=("telegram",)) as world:
        for text in statements:
            await world.say(SAM, private_chat(SAM), text)
            await world.settle_embedders()
        # The embedder first: the next message recorded (as a platform's redelivery after a
        # crash finds it) and embedded before the turn that answers it.
        instance = world.instances["telegram"]
        early = Incoming(
            entrance="telegram",
            conversation_id=private_chat(SAM).external_id,
            conversation_kind="dm",
            author=Author(external_id=SAM.external_id, display_name=SAM.name),
            text=QUESTION,
            platform_message_id=f"m{len(statements) + 1}",  # the id `say` gives it next
        )
        await instance.memory.record_incoming(early, instance.instance_id)
        await world.settle_embedders()
        await world.say(SAM, private_chat(SAM), QUESTION)
        await world.settle_embedders()

    twice = sorted({text for text in encoded if encoded.count(text) > 1})
    assert not twice, f"embedded more than once: {twice}"
    assert set(statements) <= set(encoded)
