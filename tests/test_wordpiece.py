"""bot/wordpiece.py gives the ids Hugging Face `tokenizers` gives for the model's
tokenizer.json: the encoder's vectors (tests/test_recall_encoder.py) depend on them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bot import wordpiece
from bot.embedding import MAX_TOKENS, missing, model_dir

pytestmark = pytest.mark.skipif(bool(missing()), reason="recall extra not installed")

# Characters from blocks both Python's and the Rust crates' Unicode tables know alike (see
# the module on newer characters): ASCII (five times as likely), Latin, Greek, Cyrillic,
# CJK punctuation and kana, ideographs, emoji, general punctuation, combining accents,
# and the whitespace and invisible characters the normaliser handles.
_ALPHABET = [
    chr(c)
    for c in [
        *range(32, 127),
        *range(32, 127),
        *range(32, 127),
        *range(32, 127),
        *range(32, 127),
        *range(0xA0, 0x250),
        *range(0x370, 0x3FF),
        *range(0x400, 0x4FF),
        *range(0x3000, 0x3100),
        *range(0x4E00, 0x4E80),
        *range(0x1F300, 0x1F400),
        *range(0x2000, 0x2070),
        *(0x300, 0x301, 0x308, 0x327, 9, 10, 13, 0xAD, 0x200D, 0xFEFF, 0xE000, 0x378, 0x1C, 0x7F),
    ]
]

EDGE_CASES = [
    "",
    "Hello, World!",
    "Héllo wörld — naïve café",
    "ΣΊΣΥΦΟΣ ΟΔΟΣ",  # capital sigma at a word's end: "σ", not "ς"
    "İstanbul'da",
    "日本語のテキスト、中文字符",
    "emoji 🦩🏳️‍🌈 ok",
    "tab\there\nnew\rline\x0bvt\x0cff\x1cfs\x85nel",
    "zero\u200bwidth nbsp\u00a0here line\u2028sep",
    "[CLS] hi [MASK]x[SEP] [UNK",  # added tokens are matched in the raw text
    "a" * 150,  # longer than max_input_chars_per_word: [UNK]
    "supercalifragilisticexpialidocious",
    "price: $5.00 + 3€ = ~8, don't stop",
    "ﬁne ligature Ⅻ ﾊﾝｶｸ Ｆｕｌｌ ß straße",
    "\ufffdbad x\x00y",
    "word" + " word" * 400,  # cut to MAX_TOKENS
]


@pytest.fixture(scope="module")
def both() -> tuple[object, wordpiece.WordPiece]:
    tokenizers = pytest.importorskip("tokenizers")
    path = model_dir() / "tokenizer.json"
    reference = tokenizers.Tokenizer.from_file(str(path))
    reference.enable_truncation(max_length=MAX_TOKENS)
    reference.no_padding()
    return reference, wordpiece.load(path, MAX_TOKENS)


def test_edge_cases_give_the_reference_ids(both: tuple[object, wordpiece.WordPiece]) -> None:
    reference, ours = both
    for text in EDGE_CASES:
        assert ours.ids(text) == reference.encode(text).ids, text  # type: ignore[attr-defined]


def test_random_texts_give_the_reference_ids(both: tuple[object, wordpiece.WordPiece]) -> None:
    reference, ours = both
    rng = random.Random(7)
    words = list(ours.vocab)
    texts = ["".join(rng.choices(_ALPHABET, k=rng.randint(0, 40))) for _ in range(4000)]
    texts += [" ".join(rng.choices(words, k=rng.randint(1, 300))) for _ in range(200)]
    wrong = [t for t in texts if ours.ids(t) != reference.encode(t).ids]  # type: ignore[attr-defined]
    assert wrong == []


def test_the_ids_are_capped_at_the_model_length(both: tuple[object, wordpiece.WordPiece]) -> None:
    _, ours = both
    ids = ours.ids("heron " * 1000)
    assert len(ids) == MAX_TOKENS
    assert ids[0] == ours.cls and ids[-1] == ours.sep


def test_another_pipeline_is_refused_with_what_differs(tmp_path: Path) -> None:
    spec = json.loads((model_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"]["lowercase"] = False
    spec["model"]["type"] = "BPE"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(wordpiece.UnsupportedTokenizer, match=r"lowercase is False.*not WordPiece"):
        wordpiece.load(path, MAX_TOKENS)
