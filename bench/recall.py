"""Recall by meaning: recall@5 on a paraphrase set, and a turn's cost at 1M messages.

1. recall@5. tests/data/recall_paraphrases.json holds 240 (fact, question) pairs made from
   templates (`python -m bench.recall --write-pairs` remakes it): twelve kinds of fact about
   oneself (an allergy, a pet, a job, a town, …), each said four ways and asked four ways,
   most questions sharing no word with their fact. For each pair, memory holds its fact,
   every fact of the other kinds (one person has one allergy; the other allergies are
   left out) and 300 lines of chatter; the question must bring its fact into the top 5:
   by FTS5 alone (`recall_query`, newest matches first, as a turn reads them), by vectors
   alone, and fused as a turn fuses them (`bot.recall.fuse`).
2. The turn at 1M messages (bench.prefill's cached memory) with recall by meaning on:
   20 000 vectors in RAM (the default caps: the newest 16 000 messages people wrote, 4 000
   notes; random unit vectors, as the search costs the same whatever they hold), turns
   through `Mind.turn` as bench/turn.py takes them, blocks with recall on and off
   interleaved. The query's embedding is left out of the turn (its vector comes from a
   stand-in encoder) and measured on its own with the real one. Goal: p50 <= 8 ms.

python -m bench.recall [--write-pairs | --turns-at N]   (or python -m bench recall)
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from bench import prefill
from bench.common import ROOT, Figure, median, percentile, print_figures, progress, run_dir

PAIRS = ROOT / "tests" / "data" / "recall_paraphrases.json"
CHATTER = 300
TURNS = 400
BLOCK = 20

# kind: (facts, questions, fillers). Facts are said four ways, questions asked four ways.
# fmt: off
FAMILIES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "allergy": (
        [
            "I'm allergic to {x}",
            "{x} makes my throat swell up",
            "I can't have {x}, I get hives",
            "my doctor told me never to touch {x}",
        ],
        [
            "is there anything I can't eat?",
            "what should I avoid at dinner?",
            "which foods are off limits for me?",
            "what must I skip at a restaurant?",
        ],
        ["peanuts", "shellfish", "gluten", "eggs", "cow's milk", "sesame", "soy", "kiwi",
         "almonds", "strawberries", "walnuts", "mustard", "celery", "lupin", "crab",
         "hazelnuts", "cashews", "wheat", "sulphites", "mango"],
    ),
    "pet": (
        [
            "my dog is called {x}",
            "we adopted a cat named {x} last spring",
            "{x} is my parrot and he talks a lot",
            "I walk {x}, my beagle, every morning",
        ],
        [
            "do I have any animals at home?",
            "who waits for me at the door wagging a tail?",
            "what is the name of my furry friend?",
            "remind me about my four-legged companion",
        ],
        ["Biscuit", "Luna", "Pepper", "Milo", "Nala", "Rocky", "Ziggy", "Olive", "Bruno",
         "Maple", "Pickles", "Juno", "Toffee", "Ramses", "Mochi", "Clover", "Otis", "Pippin",
         "Hazel", "Waffles"],
    ),
    "job": (
        [
            "I work as a {x}",
            "I've been a {x} for ten years now",
            "my job? I'm a {x}",
            "being a {x} pays the bills",
        ],
        [
            "what do I do for a living?",
            "what is my profession?",
            "how do I earn money?",
            "what's my occupation?",
        ],
        ["nurse", "plumber", "teacher", "lawyer", "baker", "pilot", "dentist", "carpenter",
         "journalist", "chef", "librarian", "firefighter", "architect", "pharmacist",
         "electrician", "accountant", "translator", "surgeon", "gardener", "photographer"],
    ),
    "home": (
        [
            "I live in {x}",
            "we moved to {x} last year",
            "my flat is in {x}",
            "{x} has been home for a decade",
        ],
        [
            "where is my house?",
            "which town am I based in?",
            "where do I reside?",
            "what city do I call home?",
        ],
        ["Porto", "Lyon", "Leeds", "Gdansk", "Bilbao", "Graz", "Turin", "Malmo", "Ghent",
         "Cork", "Brno", "Aarhus", "Split", "Utrecht", "Basel", "Tartu", "Bergen", "Nantes",
         "Krakow", "Seville"],
    ),
    "birthday": (
        [
            "my birthday is on {x}",
            "I was born on {x}",
            "{x} is the day I turn a year older",
            "I celebrate every {x} with cake",
        ],
        [
            "when should you congratulate me?",
            "what day do I get older?",
            "when is my special day each year?",
            "on which date do I have a party?",
        ],
        [f"{month} {day}" for month, day in zip(
            ["March", "May", "July", "October", "January"] * 4,
            [3, 9, 14, 21, 27, 5, 11, 17, 23, 29, 2, 8, 13, 19, 25, 6, 12, 18, 24, 30],
            strict=False,
        )],
    ),
    "sibling": (
        [
            "my sister {x} is a nurse",
            "my brother {x} lives abroad",
            "{x} is my younger sibling",
            "I grew up with my twin {x}",
        ],
        [
            "do I have any family members you know of?",
            "who are my relatives?",
            "tell me about my kin",
            "who shares my parents?",
        ],
        ["Ana", "Tom", "Ines", "Luca", "Mei", "Omar", "Sara", "Jonas", "Priya", "Felix",
         "Greta", "Hugo", "Ida", "Karl", "Lena", "Mateo", "Nora", "Pablo", "Rosa", "Theo"],
    ),
    "hobby": (
        [
            "I play {x} on weekends",
            "{x} is what I do to relax",
            "every Sunday I go to {x} practice",
            "I've been into {x} since school",
        ],
        [
            "what do I do for fun?",
            "how do I spend my free time?",
            "what is my pastime?",
            "what keeps me busy when I'm off work?",
        ],
        ["chess", "tennis", "volleyball", "the cello", "badminton", "rugby", "the drums",
         "golf", "table tennis", "handball", "bridge", "squash", "water polo", "cricket",
         "the violin", "lacrosse", "hockey", "baseball", "curling", "fencing"],
    ),
    "trip": (
        [
            "I'm flying to {x} next month",
            "we booked a week in {x} for August",
            "my holiday this year is in {x}",
            "I leave for {x} on the 3rd",
        ],
        [
            "where am I going on vacation?",
            "what journey do I have coming up?",
            "which place will I visit soon?",
            "where will I be travelling?",
        ],
        ["Lisbon", "Tokyo", "Oslo", "Cairo", "Lima", "Hanoi", "Dublin", "Nairobi", "Quito",
         "Seoul", "Athens", "Havana", "Reykjavik", "Marrakesh", "Vienna", "Sydney",
         "Montreal", "Tbilisi", "Bali", "Zanzibar"],
    ),
    "car": (
        [
            "I drive an old {x}",
            "my {x} broke down again",
            "I bought a second-hand {x}",
            "the {x} is parked outside my place",
        ],
        [
            "what vehicle do I own?",
            "what do I get around in?",
            "which motor do I have?",
            "what am I behind the wheel of?",
        ],
        ["Volvo", "Fiat Panda", "Skoda", "Toyota Corolla", "Land Rover", "Mini", "Saab",
         "Renault Clio", "Subaru", "Peugeot", "Citroen", "Mazda", "Jeep", "Lada", "Seat",
         "Honda Civic", "Opel", "Kia", "Dacia", "Tesla"],
    ),
    "music": (
        [
            "I love listening to {x}",
            "{x} is always playing in my kitchen",
            "nothing beats {x} on a Friday night",
            "I went to a {x} concert last week",
        ],
        [
            "what kind of songs do I enjoy?",
            "which genre is my favourite?",
            "what tunes do I like?",
            "what should you put on for me?",
        ],
        ["jazz", "punk", "opera", "reggae", "techno", "bluegrass", "salsa", "k-pop",
         "heavy metal", "fado", "flamenco", "soul", "grunge", "disco", "gospel", "ska",
         "hip hop", "trance", "tango", "bossa nova"],
    ),
    "medication": (
        [
            "I take {x} every morning",
            "my doctor put me on {x}",
            "I need {x} twice a day",
            "don't let me forget my {x}",
        ],
        [
            "what pills am I on?",
            "which medicine do I need?",
            "what prescription do I have?",
            "what tablets must I swallow daily?",
        ],
        ["insulin", "metformin", "aspirin", "levothyroxine", "ibuprofen", "lisinopril",
         "vitamin D", "iron supplements", "statins", "antihistamines", "omeprazole",
         "warfarin", "prednisone", "melatonin", "amoxicillin", "sertraline", "folic acid",
         "beta blockers", "inhalers", "magnesium"],
    ),
    "language": (
        [
            "I'm learning {x}",
            "I take {x} lessons on Tuesdays",
            "my {x} is getting better every week",
            "I practise {x} with an app",
        ],
        [
            "which tongue am I studying?",
            "what am I trying to speak?",
            "what course am I following?",
            "how am I improving myself?",
        ],
        ["Japanese", "Portuguese", "Finnish", "Arabic", "Swahili", "Korean", "Dutch",
         "Greek", "Hindi", "Polish", "Turkish", "Icelandic", "Welsh", "Mandarin", "Czech",
         "Hebrew", "Thai", "Italian", "Basque", "Irish"],
    ),
}
# fmt: on


def paraphrase_pairs() -> list[dict[str, str]]:
    """The 240 pairs, deterministically (the file in tests/data is this list)."""
    pairs = []
    for kind, (facts, questions, fillers) in FAMILIES.items():
        for n, filler in enumerate(fillers):
            pairs.append(
                {
                    "kind": kind,
                    "fact": facts[n % len(facts)].format(x=filler),
                    "question": questions[(n // len(facts)) % len(questions)],
                }
            )
    return pairs


def chatter(count: int) -> list[str]:
    world, rng = prefill.World(prefill.SEED), random.Random(5)
    return [world.words(rng, 4, 18) for _ in range(count)]


def recall_at_5() -> list[Figure]:
    import numpy as np

    from bot.config import RecallConfig
    from bot.memory import recall_query
    from bot.recall import Hit, encode_now, fuse

    pairs = json.loads(PAIRS.read_text())
    lines = [p["fact"] for p in pairs] + chatter(CHATTER)
    kinds = [p["kind"] for p in pairs] + ["chatter"] * CHATTER
    order = list(range(len(lines)))
    random.Random(3).shuffle(order)  # the order memory received them in: FTS takes newest
    rowid = {line: n + 1 for n, line in enumerate(order)}  # line index -> rowid
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5 (text, tokenize = 'unicode61 remove_diacritics 2')"
    )
    conn.executemany(
        "INSERT INTO t (rowid, text) VALUES (?, ?)",
        [(rowid[i], lines[i]) for i in range(len(lines))],
    )
    by_rowid = {r: i for i, r in rowid.items()}
    progress(f"recall: embedding {len(lines)} lines and {len(pairs)} questions")
    started = time.perf_counter()
    matrix = np.concatenate([encode_now(lines[i : i + 64]) for i in range(0, len(lines), 64)])
    questions = encode_now([p["question"] for p in pairs])
    rate = (len(lines) + len(pairs)) / (time.perf_counter() - started)
    floor = RecallConfig().min_similarity
    found = {"fts": 0, "vectors": 0, "fused": 0}
    shared_word = 0
    for q, pair in enumerate(pairs):
        allowed = [i for i in range(len(lines)) if kinds[i] != pair["kind"] or i == q]
        allowed_set = set(allowed)
        query = recall_query(pair["question"])
        words: list[int] = []
        if query:
            words = [
                by_rowid[row[0]]
                for row in conn.execute(
                    "SELECT rowid FROM t WHERE t MATCH ? ORDER BY rowid DESC LIMIT 200", (query,)
                )
                if by_rowid[row[0]] in allowed_set
            ][:16]
            shared_word += q in words
        scores = matrix @ questions[q]
        mask = np.full(len(lines), -np.inf, dtype=np.float32)
        mask[allowed] = 0
        scores = scores + mask
        nearest = [int(i) for i in np.argsort(-scores)[:16] if scores[i] >= floor]
        hits = [Hit("message", i, float(scores[i])) for i in nearest]
        fused = [s.row_id for s in fuse(words, hits, "message", 5)]
        found["fts"] += q in words[:5]
        found["vectors"] += q in nearest[:5]
        found["fused"] += q in fused
    total = len(pairs)
    return [
        Figure("recall: paraphrase pairs (no word in common)", f"{total} ({total - shared_word})"),
        Figure("recall@5: FTS5 alone", f"{found['fts'] / total:.1%}"),
        Figure("recall@5: vectors alone", f"{found['vectors'] / total:.1%}"),
        Figure(
            "recall@5: FTS5 + vectors (RRF, as a turn)",
            f"{found['fused'] / total:.1%}",
            "> FTS5 alone",
            found["fused"] > found["fts"],
        ),
        Figure("recall: embedding rate, batches of 64", f"{rate:.0f} lines/s"),
    ]


def query_embedding_ms(texts: list[str]) -> list[float]:
    from bot.recall import encode_now

    encode_now(["warm up"])
    spent = []
    for text in texts:
        started = time.perf_counter()
        encode_now([text])
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def _fill_vectors(db: Path, messages: int, notes: int) -> Any:
    """Random unit vectors for the newest rows people wrote and the newest notes; returns
    the messages' vectors."""
    import numpy as np

    rng = np.random.default_rng(1)
    with sqlite3.connect(db) as conn:
        for kind, sql, count in (
            (
                "message",
                "SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC",
                messages,
            ),
            ("note", "SELECT id FROM notes ORDER BY id DESC", notes),
        ):
            ids = [row[0] for row in conn.execute(f"{sql} LIMIT ?", (count,))][::-1]
            vectors = rng.normal(size=(len(ids), 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            conn.executemany(
                "INSERT OR IGNORE INTO vectors (kind, row_id, model, vector, created_at)"
                " VALUES (?, ?, 'bench-random', ?, 0)",
                [(kind, i, v.astype("<f4").tobytes()) for i, v in zip(ids, vectors, strict=True)],
            )
            if kind == "message":
                kept = vectors
    return kept


async def turn_with_recall(size: int = 1_000_000) -> list[Figure]:
    import numpy as np

    from bench import turn
    from bot import recall

    await prefill.ensure([size])
    folder = run_dir("recall")
    db = prefill.working_copy(size, folder)
    settings = turn.bench_config(db).recall
    stored = _fill_vectors(db, settings.max_messages, settings.max_notes)
    # The stand-in encoder: a unit vector near one stored vector (cosine ~0.8), so that the
    # search finds something when the audience may see it.
    rng = np.random.default_rng(2)
    real_encode = recall.encode_now

    def stand_in(texts: list[str]) -> Any:
        near = stored[rng.integers(0, len(stored), len(texts))]
        vectors = near + 0.04 * rng.normal(size=(len(texts), 384)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    recall.encode_now = stand_in  # type: ignore[assignment]
    turner = turn.Turner(db)
    # The query vectors, ready before the turns (the same texts, drawn as the Turner draws
    # them): a turn then pays for no embedding at all, not even a thread hand-off.
    world, draw = prefill.World(prefill.SEED), random.Random(11)
    recall.CACHE_SIZE = 10 * TURNS
    for n in range(turn.WARM_UP + 2 * TURNS):
        text = turn.incoming(world, draw, n, 0.0).text
        recall._cache[text] = stand_in([text])[0]
    turner.config.recall.enabled = True
    on, off = turn.Timings(), turn.Timings()
    try:
        started = time.perf_counter()
        await turner.open()  # warm-up turns: the index loads in the first
        load_s = time.perf_counter() - started
        index = turner.memory._vector_index
        progress(f"recall: {TURNS} turns at {size:,} messages, recall on and off by turns")
        for block in range(TURNS // BLOCK * 2):
            enabled = block % 2 == 0
            turner.config.recall.enabled = enabled
            turner.timings = on if enabled else off
            await turner.turns(BLOCK)
    finally:
        recall.encode_now = real_encode  # type: ignore[assignment]
        await turner.memory.close()
        shutil.rmtree(folder, ignore_errors=True)
    texts = [turn.texts(turner.world, random.Random(n), "telegram") for n in range(100)]
    embed = query_embedding_ms(texts)
    p50_on, p50_off = median(on.total), median(off.total)
    kept = index.size if index is not None else 0
    mib = (index.nbytes if index is not None else 0) / 2**20
    return [
        Figure(
            f"recall: turn @{turn.label(size)} with recall by meaning, p50 (no query embedding)",
            f"{p50_on:.2f} ms",
            "<= 8 ms",
            p50_on <= 8,
        ),
        Figure(
            f"recall: turn @{turn.label(size)} with it, p99", f"{percentile(on.total, 0.99):.2f} ms"
        ),
        Figure(
            f"recall: turn @{turn.label(size)}, FTS5 only, p50 / p99",
            f"{p50_off:.2f} / {percentile(off.total, 0.99):.2f} ms",
        ),
        Figure(
            "recall: context part, on / off (p50)",
            f"{on.part('context', 0.5)} / {off.part('context', 0.5)} ms",
        ),
        Figure(
            "recall: query embedding (real encoder), p50 / p99",
            f"{median(embed):.1f} / {percentile(embed, 0.99):.1f} ms",
        ),
        Figure("recall: vectors in RAM per process", f"{kept:,} ({mib:.0f} MiB)"),
        Figure("recall: memory opened + index loaded + warm-up turns", f"{load_s:.1f} s"),
    ]


def run() -> list[Figure]:
    from bot.recall import one_blas_thread

    one_blas_thread()  # as a chat process runs it (before numpy loads)
    return recall_at_5() + asyncio.run(turn_with_recall())


def write_pairs() -> None:
    PAIRS.parent.mkdir(parents=True, exist_ok=True)
    PAIRS.write_text(json.dumps(paraphrase_pairs(), indent=1) + "\n")
    print(f"wrote {len(paraphrase_pairs())} pairs to {PAIRS}")


if __name__ == "__main__":
    if "--write-pairs" in sys.argv:
        write_pairs()
    elif "--turns-at" in sys.argv:  # the turn figures alone, at another prefilled size
        from bot.recall import one_blas_thread

        one_blas_thread()
        size = int(sys.argv[sys.argv.index("--turns-at") + 1])
        print_figures(asyncio.run(turn_with_recall(size)))
    else:
        from bench.__main__ import main

        sys.exit(main(["recall"]))
