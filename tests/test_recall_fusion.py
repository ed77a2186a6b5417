"""How a turn fuses word matches with vector hits (bot.recall.fuse, issue 21): a row that
shares no word with the question is ranked by its cosine alone, so fusion never loses to
vectors where words do not match; a row holding the question's words is lifted over its
look-alikes. The recall@5 figures on the two sets are bench/recall.py's; here the rules,
and a turn that shows them.

The turn test needs the `recall` extra (in the dev extra, so CI runs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.recall import WORD_WEIGHT, Hit, fuse, word_overlap
from tests.privacy_world import (
    SAM,
    SAM_ON_DISCORD,
    PrivacyWorld,
    needs_recall,
    private_chat,
)

ROOT = Path(__file__).resolve().parents[1]


def _fused(
    words: list[int],
    hits: list[tuple[int, float]],
    overlap: dict[int, float],
    word_similarity: dict[int, float] | None = None,
    limit: int = 5,
) -> list[int]:
    found = fuse(
        words,
        [Hit("message", row, similarity) for row, similarity in hits],
        "message",
        limit,
        overlap=overlap,
        word_similarity=word_similarity or {},
        floor=0.2,
    )
    return [s.row_id for s in found]


def test_rows_sharing_only_a_common_word_do_not_push_out_nearer_rows() -> None:
    """The newest FTS5 matches for "what should I avoid at dinner?" share one word with it
    ("dinner" in chatter) and mean nothing like it; the five nearest rows stay the top 5,
    in their order. (Reciprocal-rank fusion put the first word match above the second
    vector hit: the bench's paraphrase recall fell below vectors alone.)"""
    nearest = [(1, 0.52), (2, 0.44), (3, 0.41), (4, 0.35), (5, 0.31), (6, 0.24)]
    chatter = [100, 101, 102]
    assert _fused(
        chatter,
        nearest,
        overlap={row: 1 / 3 for row in chatter},
        word_similarity={100: 0.05, 101: 0.02, 102: 0.08},
    ) == [1, 2, 3, 4, 5]


def test_the_row_naming_the_thing_asked_about_is_lifted_over_its_look_alikes() -> None:
    """ "how is Falcon going?": the Nimbus project's line is a little nearer, the Falcon
    line holds the question's words."""
    look_alike, named = 7, 8
    order = _fused(
        [named],
        [(look_alike, 0.55), (named, 0.50)],
        overlap={named: 1.0, look_alike: 0.0},
    )
    assert order == [named, look_alike]


def test_without_a_shared_word_the_order_is_the_vectors_order() -> None:
    hits = [(row, 0.9 - row / 20) for row in range(1, 11)]
    assert _fused([], hits, overlap={}, limit=10) == list(range(1, 11))


def test_a_word_match_not_embedded_yet_counts_at_the_floor() -> None:
    """A row written a moment ago has no vector yet: it ranks as a row at the cosine floor
    holding its share of the question's words, and says it has no similarity."""
    found = fuse(
        [42],
        [Hit("message", 1, 0.6), Hit("message", 2, 0.21)],
        "message",
        5,
        overlap={42: 1.0},
        word_similarity={},
        floor=0.2,
    )
    assert [s.row_id for s in found] == [1, 42, 2]
    [fresh] = [s for s in found if s.row_id == 42]
    assert fresh.similarity is None and fresh.fts_rank == 1 and fresh.vector_rank is None
    assert fresh.fused == pytest.approx(0.2 + WORD_WEIGHT)


def test_a_word_matchs_cosine_comes_from_the_shelf_while_it_holds_the_row() -> None:
    """`Shelf.similarities` finds rows by id, also after the oldest were dropped (the shelf
    keeps its newest `cap` rows)."""
    import numpy as np

    from bot.recall import Shelf

    vectors = np.eye(24, 384, dtype=np.float32)  # row i: the i-th unit vector
    shelf = Shelf("message", cap=16, dimensions=384)  # room for 20: then the oldest go
    for first in range(0, 24, 4):
        shelf.append([(i, 1, None, "group", vectors[i].tobytes()) for i in range(first, first + 4)])
    assert list(shelf.row_ids[: shelf.n]) == list(range(8, 24))
    query = vectors[9] + 0.5 * vectors[20]
    found = shelf.similarities(query, [0, 7, 9, 20, 23, 99])
    assert found == {9: 1.0, 20: 0.5, 23: 0.0}  # 0 and 7 dropped, 99 never held


def test_fusion_keeps_its_scores_and_order_on_random_lists() -> None:
    """`fuse` ranks plain tuples and builds a Scored only for the rows it keeps: against
    the plain statement of the rule (one entry per row, a rank from each list, the
    cosine, else the word match's, else the floor, plus WORD_WEIGHT x the overlap; best
    first, the newer row on a tie), on random lists with repeats and ties."""
    import random

    from bot.recall import Scored

    def plainly(
        words: list[int],
        meanings: list[Hit],
        limit: int,
        overlap: dict[int, float],
        word_similarity: dict[int, float],
    ) -> list[Scored]:
        fts = {row: rank for rank, row in enumerate(words, 1)}  # a repeat: its last rank
        vector = {hit.row_id: (rank, hit.similarity) for rank, hit in enumerate(meanings, 1)}
        scored = []
        for row in dict.fromkeys([*words, *(hit.row_id for hit in meanings)]):
            rank, similarity = vector.get(row, (None, word_similarity.get(row)))
            base = similarity if similarity is not None else 0.2
            fused = round(base + WORD_WEIGHT * overlap.get(row, 0.0), 6)
            scored.append(Scored("note", row, fts.get(row), rank, similarity, fused))
        return sorted(scored, key=lambda s: (-s.fused, -s.row_id))[:limit]

    draw = random.Random(5)
    for _ in range(300):
        rows = range(1, 40)
        words = [draw.choice(rows) for _ in range(draw.randint(0, 12))]
        # Cosines on a coarse grid, so that fused scores tie.
        meanings = [
            Hit("note", row, draw.choice([0.2, 0.3, 0.45, 0.5]))
            for row in draw.sample(rows, draw.randint(0, 12))
        ]
        overlap = {row: draw.choice([0.0, 0.5, 1.0]) for row in draw.sample(rows, 10)}
        word_similarity = {row: draw.choice([0.25, 0.5]) for row in draw.sample(rows, 10)}
        limit = draw.randint(1, 8)
        found = fuse(
            words,
            meanings,
            "note",
            limit,
            overlap=overlap,
            word_similarity=word_similarity,
            floor=0.2,
        )
        assert found == plainly(words, meanings, limit, overlap, word_similarity)


def test_word_overlap_reads_words_as_fts5_does() -> None:
    assert word_overlap(["cafe", "zurich"], "Le Café in Zürich!") == 1.0
    assert word_overlap(["cow", "milk"], "no cow's cheese") == 0.5
    assert word_overlap([], "anything") == 0.0


def test_the_bench_sets_are_the_templates_output() -> None:
    """tests/data holds what bench/recall.py generates (`--write-pairs`), 240 paraphrase
    pairs and 200 word-overlap pairs, each of whose facts is in memory's lines."""
    from bench.recall import PAIRS, WORD_PAIRS, paraphrase_pairs, word_overlap_set

    assert json.loads(PAIRS.read_text()) == paraphrase_pairs()
    told = json.loads(WORD_PAIRS.read_text())
    made = word_overlap_set()
    assert told["pairs"] == made["pairs"] and len(told["pairs"]) == 200
    assert told["lines"] == [[line["kind"], line["thing"], line["text"]] for line in made["lines"]]
    assert {p["fact"] for p in told["pairs"]} <= {text for _, _, text in told["lines"]}


@needs_recall
async def test_a_turn_recalls_the_named_thing_first(tmp_path: Path) -> None:
    """Two look-alike lines told on Telegram; on Discord a question naming one of them
    brings that one first, and its provenance shows both the word rank and the cosine."""
    said = [
        "the Falcon project deadline moved to March",
        "the Nimbus project deadline moved to April",
        "the Quartz project deadline moved to May",
    ]
    async with PrivacyWorld(tmp_path, entrances=("telegram", "discord")) as world:
        await world.link(SAM, SAM_ON_DISCORD)
        for text in said:
            await world.say(SAM, private_chat(SAM), text)
        for instance in world.instances.values():
            assert await instance.memory.flush_embedder()
        asked = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), "how is Nimbus?")
        for instance in world.instances.values():
            assert await instance.memory.flush_embedder()
        assert world.memory is not None and asked.reply is not None
        scores = await world.memory.recall_scores(asked.reply.message_id or 0)

    recalled = asked.prompt.split("# Recalled from memory\n", 1)[1].split("\n\n", 1)[0]
    first = recalled.splitlines()[0]
    assert "Nimbus" in first, recalled
    assert "Nimbus" in asked.text  # the offline brain quotes the first recalled line
    best = scores[0]
    assert best["fts_rank"] == 1 and best["vector_rank"] is not None
    assert best["fused"] == pytest.approx(best["similarity"] + WORD_WEIGHT)
