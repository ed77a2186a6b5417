"""Recall by meaning: recall@5 on two sets of questions, and a turn's cost at 1M messages.

1. recall@5, on two sets made from templates (`python -m bench.recall --write-pairs`
   remakes both files in tests/data):
   - the paraphrase set, recall_paraphrases.json: 240 (fact, question) pairs, twelve kinds
     of fact about oneself (an allergy, a pet, a job, a town, …), each said four ways and
     asked four ways, most questions sharing no word with their fact. Memory holds the
     pair's fact, every fact of the other kinds (one person has one allergy; the other
     allergies are left out) and 300 lines of chatter;
   - the word-overlap set, recall_word_overlap.json: ten families of named things
     (colleagues, projects, parcels, recipes, …), 20 things each, every thing said four
     ways with an aside ("…, and the train was late again"), and 200 questions naming
     one thing. Memory holds every other thing said every way (the look-alikes), the
     question's fact and the chatter.
   The question must bring its fact into the top 5: by FTS5 alone (`recall_query`, the
   newest 8 matches, as a turn reads them), by vectors alone (16 nearest above the
   cosine floor), fused as a turn fuses them (`bot.recall.fuse`), and, for the
   before/after comparison, the reciprocal-rank fusion and 0.3 floor used before.
   Tuned on half the families (`held_out`): figures are held-out / all.
2. The turn at 1M messages (bench.prefill's cached memory) with recall by meaning on:
   ~20 000 vectors in RAM (the default caps: the newest 16 000 messages people wrote, 4 000
   notes, and the active intentions among the newest 2 000; random unit vectors, as the
   search costs the same whatever they hold), turns through `Mind.turn` as bench/turn.py
   takes them, blocks with recall on and off interleaved. The query's embedding is left
   out of the turn (its vector comes from a stand-in encoder) and measured on its own
   with the real one. Goal: p50 <= 8 ms.

python -m bench.recall [--write-pairs | --turns-at N]   (or python -m bench recall)
The encoder is numpy's, the default; BENCH_ENCODER=int8 measures the onnxruntime int8 one
(`[recall] encoder = "int8"`); its figures name the one that ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import prefill
from bench.common import ROOT, Figure, median, percentile, print_figures, progress, run_dir

PAIRS = ROOT / "tests" / "data" / "recall_paraphrases.json"
WORD_PAIRS = ROOT / "tests" / "data" / "recall_word_overlap.json"
TURN_LIMIT = 8  # a turn's recall limit (ViewLimits.recall): word matches it reads, per kind
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
# The word-overlap set: facts about named things (people, projects, parcels, recipes, …),
# every one of a family said the same few ways, and questions that name the thing, so the
# name is what tells the right fact from its siblings (all kept in memory, unlike above).
WORD_FAMILIES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "colleague": (
        [
            "{x} from accounting is on leave until May",
            "{x} is moving to the Berlin office",
            "{x} just had a baby girl",
            "{x} still owes me twenty euros",
        ],
        [
            "what's the news about {x}?",
            "anything I should remember about {x}?",
            "what do you know about {x}?",
            "did I mention {x}?",
        ],
        ["Okafor", "Lindqvist", "Moreau", "Takahashi", "Brennan", "Kowalczyk", "Haddad",
         "Ferreira", "Novak", "Abernathy", "Castellano", "Dubois", "Eriksen", "Gallagher",
         "Horvath", "Ivanova", "Jablonski", "Kapoor", "Laurent", "Mbeki"],
    ),
    "project": (
        [
            "the {x} project deadline moved to March",
            "we ship {x} to the client next week",
            "{x} is over budget again",
            "I'm leading the {x} migration",
        ],
        [
            "how is {x} going?",
            "when is {x} due?",
            "what's happening with {x}?",
            "any update on {x}?",
        ],
        ["Falcon", "Nimbus", "Quartz", "Atlas", "Borealis", "Cobalt", "Zephyr", "Ember",
         "Fjord", "Granite", "Helix", "Tundra", "Juniper", "Kestrel", "Lantern", "Meridian",
         "Nova", "Obsidian", "Pinnacle", "Quasar"],
    ),
    "plant": (
        [
            "the {x} on the balcony needs water every two days",
            "my {x} is finally flowering",
            "I repotted the {x} last weekend",
            "the {x} by the window has yellow leaves",
        ],
        [
            "how is my {x}?",
            "what did I say about the {x}?",
            "how often should I water the {x}?",
            "is the {x} doing well?",
        ],
        ["basil", "monstera", "fern", "orchid", "cactus", "bonsai", "lavender", "rosemary",
         "ficus", "aloe", "begonia", "peace lily", "succulent", "geranium", "jasmine",
         "tomato plant", "mint", "hibiscus", "bamboo", "ivy"],
    ),
    "parcel": (
        [
            "order {x} should arrive on Monday",
            "the parcel {x} is stuck in customs",
            "I returned order {x} for a refund",
            "package {x} was left with the neighbour",
        ],
        [
            "where is {x}?",
            "what happened to {x}?",
            "any news on {x}?",
            "status of {x}?",
        ],
        ["4471", "8823", "1930", "5562", "7204", "3318", "9045", "2687", "6150", "4799",
         "1276", "8391", "5038", "7612", "2954", "6483", "3107", "9820", "4265", "1549"],
    ),
    "recipe": (
        [
            "grandma's {x} needs three eggs",
            "my {x} takes forty minutes in the oven",
            "the secret of my {x} is smoked paprika",
            "I make {x} every Sunday",
        ],
        [
            "how do I cook {x}?",
            "what goes in my {x}?",
            "remind me of the {x} recipe",
            "what's the trick with {x}?",
        ],
        ["lasagne", "goulash", "risotto", "paella", "moussaka", "ratatouille", "gazpacho",
         "tiramisu", "pierogi", "biryani", "ramen", "shakshuka", "bouillabaisse", "carbonara",
         "tagine", "falafel", "pavlova", "strudel", "borscht", "empanadas"],
    ),
    "friend": (
        [
            "{x} is getting married in June",
            "{x} broke an arm skiing",
            "{x} started a new job at the bank",
            "{x} is visiting us at Easter",
        ],
        [
            "how is {x}?",
            "what's new with {x}?",
            "anything going on with {x}?",
            "remind me about {x}",
        ],
        ["Beatrix", "Casimir", "Dmitri", "Esme", "Florian", "Gwendolyn", "Horatio", "Isolde",
         "Jasper", "Katya", "Leopold", "Magnus", "Ottilie", "Percival", "Quentin", "Rosalind",
         "Sebastian", "Tamsin", "Ulrich", "Vivienne"],
    ),
    "book": (
        [
            "I'm halfway through {x}",
            "{x} had a terrible ending",
            "I lent my copy of {x} to a friend",
            "I want to reread {x} this summer",
        ],
        [
            "what did I think of {x}?",
            "where am I with {x}?",
            "did I finish {x}?",
            "what about {x}?",
        ],
        ["Middlemarch", "Dune", "Beloved", "Ulysses", "Rebecca", "Emma", "Frankenstein",
         "Dracula", "Persuasion", "Lolita", "Siddhartha", "Ivanhoe", "Kidnapped", "Matilda",
         "Coraline", "Neuromancer", "Solaris", "Hyperion", "Stoner", "Watership Down"],
    ),
    "client": (
        [
            "{x} wants the contract signed by Friday",
            "the call with {x} moved to Thursday",
            "{x} complained about the invoice",
            "{x} asked for a discount",
        ],
        [
            "what does {x} want?",
            "when am I meeting {x}?",
            "any trouble with {x}?",
            "what's the deal with {x}?",
        ],
        ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Soylent", "Stark",
         "Wayne", "Tyrell", "Cyberdyne", "Wonka", "Gringotts", "Monarch", "Oscorp",
         "Massive Dynamic", "Aperture", "Black Mesa", "Dunder Mifflin", "Pied Piper"],
    ),
    "bill": (
        [
            "the {x} bill is due on the 15th",
            "I pay {x} by direct debit",
            "{x} overcharged me last month",
            "I cancelled my {x} subscription",
        ],
        [
            "when do I pay {x}?",
            "what about the {x} bill?",
            "am I still with {x}?",
            "what's up with {x}?",
        ],
        ["Netflix", "Spotify", "Vodafone", "Hulu", "Audible", "Dropbox", "Patreon", "Duolingo",
         "Peloton", "Strava", "Disney Plus", "Deezer", "Tidal", "Crunchyroll", "Evernote",
         "Grammarly", "Canva", "Notion", "Headspace", "Calm"],
    ),
    "street": (
        [
            "the spare key is with the neighbour on {x}",
            "we used to live on {x}",
            "there's a good bakery on {x}",
            "the dentist moved to {x}",
        ],
        [
            "what's on {x}?",
            "why does {x} matter to me?",
            "what did I tell you about {x}?",
            "anything at {x}?",
        ],
        ["Elm Street", "Baker Street", "Rue Cler", "Calle Mayor", "Via Roma", "Nevsky Prospekt",
         "Karl Johans gate", "Abbey Road", "Princes Street", "Kings Road", "Grafton Street",
         "Rua Augusta", "Oxford Road", "Mill Lane", "Church Walk", "Harbour Row", "Orchard Close",
         "Station Approach", "Wharf Terrace", "Quarry Hill"],
    ),
}
# fmt: on


# People say more than one thing at once: each line of the word-overlap set carries an
# aside, as messages do (a line holding only the fact would be easy for vectors alone).
ASIDES = [
    "the weather here has been awful all week",
    "I'm so tired after the long weekend",
    "the kids have a school trip on Thursday",
    "traffic on the way home was terrible",
    "I finally fixed the leaking tap in the kitchen",
    "we watched a great film last night",
    "my phone battery keeps dying",
    "I should really go to bed earlier",
    "the coffee machine at work is broken again",
    "I need to buy new running shoes",
    "it rained the whole afternoon",
    "the train was late again this morning",
]


def word_overlap_set() -> dict[str, list[dict[str, str]]]:
    """The word-overlap set, deterministically (tests/data/recall_word_overlap.json): every
    thing said every way ("lines"), and 200 questions, each naming one thing and asked
    about one way it was said ("pairs")."""
    lines: list[dict[str, str]] = []
    pairs: list[dict[str, str]] = []
    for kind, (facts, questions, fillers) in WORD_FAMILIES.items():
        for n, filler in enumerate(fillers):
            for way, fact in enumerate(facts):
                aside = ASIDES[len(lines) % len(ASIDES)]
                fact = fact.format(x=filler)
                text = f"{fact}, and {aside}" if len(lines) % 2 else f"{aside}; {fact}"
                lines.append({"kind": kind, "thing": filler, "text": text})
                if way == n % len(facts):
                    question = questions[(n // len(facts)) % len(questions)]
                    pairs.append(
                        {
                            "kind": kind,
                            "thing": filler,
                            "fact": text,
                            "question": question.format(x=filler),
                        }
                    )
    return {"pairs": pairs, "lines": lines}


def paraphrase_pairs() -> list[dict[str, str]]:
    """The 240 pairs, deterministically (the file in tests/data is this list)."""
    return _pairs(FAMILIES)


def _pairs(families: dict[str, tuple[list[str], list[str], list[str]]]) -> list[dict[str, str]]:
    pairs = []
    for kind, (facts, questions, fillers) in families.items():
        for n, filler in enumerate(fillers):
            pairs.append(
                {
                    "kind": kind,
                    "fact": facts[n % len(facts)].format(x=filler),
                    "question": questions[(n // len(facts)) % len(questions)].format(x=filler),
                }
            )
    return pairs


def chatter(count: int) -> list[str]:
    world, rng = prefill.World(prefill.SEED), random.Random(5)
    return [world.words(rng, 4, 18) for _ in range(count)]


@dataclass
class Case:
    """One question of a set: the line that answers it, and the lines memory holds for it."""

    family: str
    question: str
    answer: int  # index into the set's lines
    allowed: Any  # bool array over the set's lines


@dataclass
class RecallSet:
    name: str
    lines: list[str]
    cases: list[Case]


def paraphrase_set() -> RecallSet:
    """Each pair's fact, every fact of the other kinds, and the chatter."""
    import numpy as np

    pairs = json.loads(PAIRS.read_text())
    lines = [p["fact"] for p in pairs] + chatter(CHATTER)
    kinds = np.array([p["kind"] for p in pairs] + ["chatter"] * CHATTER)
    cases = []
    for q, pair in enumerate(pairs):
        allowed = kinds != pair["kind"]
        allowed[q] = True
        cases.append(Case(pair["kind"], pair["question"], q, allowed))
    return RecallSet("paraphrase", lines, cases)


def word_set() -> RecallSet:
    """Every named thing said every way (its look-alikes), and the chatter; for a question,
    memory holds its fact but not the other ways its own thing was said (those would answer
    it too)."""
    import numpy as np

    told = json.loads(WORD_PAIRS.read_text())
    lines = [text for _, _, text in told["lines"]] + chatter(CHATTER)
    things = np.array([thing for _, thing, _ in told["lines"]] + [""] * CHATTER)
    index = {line: n for n, line in enumerate(lines)}
    cases = []
    for pair in told["pairs"]:
        answer = index[pair["fact"]]
        allowed = things != pair["thing"]
        allowed[answer] = True
        cases.append(Case(pair["kind"], pair["question"], answer, allowed))
    return RecallSet("word-overlap", lines, cases)


def held_out(families: list[str]) -> set[str]:
    """The families fusion was NOT tuned on: every second one, in the order of the file
    (WORD_WEIGHT and min_similarity were chosen on the others)."""
    return set(list(dict.fromkeys(families))[1::2])


def recall_at_5() -> list[Figure]:
    """recall@5 of each method on both sets: held-out families, and all."""
    import numpy as np

    from bot.config import RecallConfig
    from bot.embedding import backend
    from bot.memory import recall_query
    from bot.recall import Hit, encode_now, fuse, word_overlap

    sets = [paraphrase_set(), word_set()]
    floor = RecallConfig().min_similarity
    methods = ("fts", "vectors", "fused", "rrf", "vectors-0.3")
    figures, spent, embedded = [], 0.0, 0
    for recall_set in sets:
        lines = recall_set.lines
        order = list(range(len(lines)))
        random.Random(3).shuffle(order)  # the order memory received them in: FTS takes newest
        by_rowid = {n + 1: line for n, line in enumerate(order)}
        conn = sqlite3.connect(":memory:")
        conn.execute(
            "CREATE VIRTUAL TABLE t USING fts5 (text, tokenize = 'unicode61 remove_diacritics 2')"
        )
        conn.executemany("INSERT INTO t (rowid, text) VALUES (?, ?)",
                         [(r, lines[i]) for r, i in by_rowid.items()])  # fmt: skip
        progress(f"recall: embedding {len(lines)} lines and {len(recall_set.cases)} questions")
        started = time.perf_counter()
        matrix = np.concatenate([encode_now(lines[i : i + 64]) for i in range(0, len(lines), 64)])
        questions = encode_now([case.question for case in recall_set.cases])
        spent += time.perf_counter() - started
        embedded += len(lines) + len(recall_set.cases)
        hidden = held_out([case.family for case in recall_set.cases])
        found = {(m, part): 0 for m in methods for part in ("held", "all")}
        shared_word = 0
        for q, case in enumerate(recall_set.cases):
            query = recall_query(case.question)
            words: list[int] = []
            if query:  # as a turn reads them: the newest matches the audience may see
                words = [
                    by_rowid[row[0]]
                    for row in conn.execute(
                        "SELECT rowid FROM t WHERE t MATCH ? ORDER BY rowid DESC LIMIT 200",
                        (query,),
                    )
                    if case.allowed[by_rowid[row[0]]]
                ][:TURN_LIMIT]
            shared_word += case.answer in words
            similarity = matrix @ questions[q]
            scores = np.where(case.allowed, similarity, -np.inf)
            nearest = [int(i) for i in np.argsort(-scores)[: 2 * TURN_LIMIT] if scores[i] >= floor]
            hits = [Hit("message", i, float(scores[i])) for i in nearest]
            terms = list(dict.fromkeys(w.strip('"') for w in (query or "").split(" OR ") if w))
            candidates = set(words) | set(nearest)
            fused = fuse(
                words,
                hits,
                "message",
                5,
                overlap={i: word_overlap(terms, lines[i]) for i in candidates},
                word_similarity={i: float(similarity[i]) for i in words},
                floor=floor,
            )
            # Before (reciprocal-rank fusion, cosine floor 0.3), for the paired comparison.
            before = [Hit("message", i, float(scores[i])) for i in nearest if scores[i] >= 0.3]
            got = {
                "fts": words[:5],
                "vectors": nearest[:5],
                "fused": [s.row_id for s in fused],
                "rrf": reciprocal_rank_fusion(words, before)[:5],
                "vectors-0.3": [hit.row_id for hit in before[:5]],
            }
            for method in methods:
                hit = case.answer in got[method]
                found[method, "all"] += hit
                found[method, "held"] += hit and case.family in hidden
        total = len(recall_set.cases)
        held = sum(case.family in hidden for case in recall_set.cases)
        rate = {
            method: f"{found[method, 'held'] / held:.1%} / {found[method, 'all'] / total:.1%}"
            for method in methods
        }
        name = recall_set.name
        figures += [
            Figure(
                f"recall {name}: pairs (answer in the FTS5 list) / held-out",
                f"{total} ({shared_word}) / {held}",
            ),
            Figure(f"recall@5 {name}: FTS5 alone (held-out / all)", rate["fts"]),
            Figure(f"recall@5 {name}: vectors alone (held-out / all)", rate["vectors"]),
            Figure(f"recall@5 {name}: before, RRF, floor 0.3 (held-out / all)", rate["rrf"]),
            Figure(f"recall@5 {name}: before, vectors, floor 0.3", rate["vectors-0.3"]),
        ]
        best_half = max(found["fts", "held"], found["vectors", "held"])
        goal, met = ">= both halves", found["fused", "held"] >= best_half
        if name == "word-overlap":  # here words matter: fusion must beat both
            goal, met = "> both halves", found["fused", "held"] > best_half
        figures.append(
            Figure(f"recall@5 {name}: fused, as a turn (held-out / all)", rate["fused"], goal, met)
        )
    figures.append(
        Figure("recall: embedding rate, batches of 64", f"{embedded / spent:.0f} lines/s")
    )
    figures.append(Figure("recall: encoder (BENCH_ENCODER=int8 for onnxruntime)", backend()))
    return figures


def reciprocal_rank_fusion(words: list[int], meanings: list[Any]) -> list[int]:
    """The fusion turns used before (RRF, k = 60), for the before/after figure."""
    score: dict[int, float] = {}
    for rank, row_id in enumerate(words, 1):
        score[row_id] = score.get(row_id, 0.0) + 1 / (60 + rank)
    similarity = {hit.row_id: hit.similarity for hit in meanings}
    for rank, hit in enumerate(meanings, 1):
        score[hit.row_id] = score.get(hit.row_id, 0.0) + 1 / (60 + rank)
    return sorted(score, key=lambda i: (-score[i], -similarity.get(i, 0.0), -i))


def query_embedding_ms(texts: list[str]) -> list[float]:
    from bot.recall import encode_now

    encode_now(["warm up"])
    spent = []
    for text in texts:
        started = time.perf_counter()
        encode_now([text])
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def _fill_vectors(db: Path, messages: int, notes: int, intentions: int) -> Any:
    """Random unit vectors for the newest rows people wrote, the newest notes and
    intentions; returns the messages' vectors."""
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
            ("intention", "SELECT id FROM intentions ORDER BY id DESC", intentions),
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
    from bot.embedding import backend

    await prefill.ensure([size])
    folder = run_dir(f"recall-{os.getpid()}")  # two benchmarks at once: one folder each
    db = prefill.working_copy(size, folder)
    settings = turn.bench_config(db).recall
    stored = _fill_vectors(db, settings.max_messages, settings.max_notes, settings.max_intentions)
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
            f"recall: query embedding (real encoder, {backend()}), p50 / p99",
            f"{median(embed):.1f} / {percentile(embed, 0.99):.1f} ms",
        ),
        Figure("recall: vectors in RAM per process", f"{kept:,} ({mib:.0f} MiB)"),
        Figure("recall: memory opened + index loaded + warm-up turns", f"{load_s:.1f} s"),
    ]


def as_a_chat_process() -> None:
    """One BLAS thread (before numpy loads) and the encoder BENCH_ENCODER names."""
    from bot.embedding import choose
    from bot.recall import one_blas_thread

    one_blas_thread()
    choose(os.environ.get("BENCH_ENCODER", "numpy"))


def run() -> list[Figure]:
    as_a_chat_process()
    return recall_at_5() + asyncio.run(turn_with_recall())


def write_pairs() -> None:
    PAIRS.parent.mkdir(parents=True, exist_ok=True)
    PAIRS.write_text(json.dumps(paraphrase_pairs(), indent=1) + "\n")
    print(f"wrote {len(paraphrase_pairs())} pairs to {PAIRS}")
    told = word_overlap_set()
    # One line of the file per line told: [kind, thing, text].
    lines = ",\n  ".join(
        json.dumps([line["kind"], line["thing"], line["text"]]) for line in told["lines"]
    )
    pairs = json.dumps(told["pairs"], indent=1)
    WORD_PAIRS.write_text(f'{{"pairs": {pairs},\n "lines": [\n  {lines}\n ]\n}}\n')
    print(f"wrote {len(told['pairs'])} pairs ({len(told['lines'])} lines) to {WORD_PAIRS}")


if __name__ == "__main__":
    if "--write-pairs" in sys.argv:
        write_pairs()
    elif "--turns-at" in sys.argv:  # the turn figures alone, at another prefilled size
        as_a_chat_process()
        size = int(sys.argv[sys.argv.index("--turns-at") + 1])
        print_figures(asyncio.run(turn_with_recall(size)))
    else:
        from bench.__main__ import main

        sys.exit(main(["recall"]))
