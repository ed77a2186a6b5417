"""BERT's tokenizer for all-MiniLM-L6-v2 in plain Python: text -> token ids, as Hugging
Face `tokenizers` gives them for the model's tokenizer.json.

Why not `tokenizers` itself: the host's recall (bot/recall_host.py) is the largest process
of `mirror up`, and the Rust tokenizer cost it 14 MiB resident (its library's pages, 5 MiB,
and the loaded tokenizer's tables, 9 MiB; measured 2026-12-03) to split a few sentences a
second. This one holds the vocabulary as a dict (30 522 entries, about 3 MiB) and spends
tens of µs on a chat message, which the encoder's forward pass dwarfs.

The pipeline is the one tokenizer.json declares, and `load` refuses any other:
- BertNormalizer (clean_text, handle_chinese_chars, lowercase, accents stripped as
  lowercase implies): control characters dropped, whitespace made ' ', CJK ideographs
  spaced out, NFD with nonspacing marks removed, then each character lowercased;
- BertPreTokenizer: split on whitespace, each punctuation character a word of its own
  (ASCII punctuation and Unicode's P* categories);
- WordPiece: greedy longest match from the vocabulary, "##" before a word's later pieces;
  a word longer than `max_input_chars_per_word`, or one the vocabulary cannot cover, is
  [UNK];
- [CLS] ... [SEP] around it, cut to `max_length` ids in all.
tests/test_wordpiece.py checks the ids against `tokenizers` itself where it is installed.
One known difference: character classes come from Python's unicodedata, whose Unicode
version is newer than the Rust crates' tables: a punctuation mark or accent assigned since
is split off or stripped here, and kept inside its word (then [UNK]) there.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from string import punctuation

_ASCII_PUNCTUATION = frozenset(punctuation)
# BertNormalizer's "Chinese characters": the CJK Unified Ideographs blocks.
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


# Control, format, private use (and lone surrogates): dropped. Unassigned characters are
# kept, as the Rust normalizer keeps them (the word holding one becomes [UNK]).
_REMOVED = frozenset({"Cc", "Cf", "Co", "Cs"})


class UnsupportedTokenizer(ValueError):
    """A tokenizer.json whose pipeline is not BERT's WordPiece as this module implements it."""


@dataclass
class WordPiece:
    """Token ids for texts (`ids`), from a BERT WordPiece vocabulary."""

    vocab: dict[str, int]
    max_length: int
    unk: int
    cls: int
    sep: int
    prefix: str = "##"
    max_word_chars: int = 100
    # Tokens matched in the raw text before anything else ("[CLS]" typed by a person is
    # [CLS]), as `tokenizers` does with a tokenizer.json's added tokens.
    added: dict[str, int] = field(default_factory=dict)
    _pieces: Callable[[str], tuple[int, ...]] = field(init=False, repr=False)
    _added: re.Pattern[str] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Chat repeats its words: a word's pieces are cached (a few hundred KiB at most).
        self._pieces = lru_cache(maxsize=8192)(self._word_pieces)
        longest_first = sorted(self.added, key=len, reverse=True)
        self._added = re.compile("|".join(map(re.escape, longest_first))) if self.added else None

    def ids(self, text: str) -> list[int]:
        """[CLS], the text's pieces, [SEP]; at most `max_length` ids."""
        limit = self.max_length - 1  # ids before [SEP]
        out = [self.cls]
        for part, added in self._parts(text):
            if added is not None:
                out.append(added)
            else:
                for word in pre_tokenize(normalize(part)):
                    out.extend(self._pieces(word))
                    if len(out) >= limit:
                        break
            if len(out) >= limit:
                del out[limit:]
                break
        out.append(self.sep)
        return out

    def _parts(self, text: str) -> list[tuple[str, int | None]]:
        """The text cut around its added tokens: (text, None) or (token, its id)."""
        if self._added is None or "[" not in text:
            return [(text, None)]
        parts: list[tuple[str, int | None]] = []
        start = 0
        for match in self._added.finditer(text):
            parts.append((text[start : match.start()], None))
            parts.append((match.group(), self.added[match.group()]))
            start = match.end()
        parts.append((text[start:], None))
        return parts

    def _word_pieces(self, word: str) -> tuple[int, ...]:
        if len(word) > self.max_word_chars:
            return (self.unk,)
        vocab, pieces, start = self.vocab, [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                found = vocab.get(piece)
                if found is not None:
                    pieces.append(found)
                    break
                end -= 1
            else:
                return (self.unk,)  # a part no piece covers: the whole word is unknown
            start = end
        return tuple(pieces)


def load(path: Path, max_length: int) -> WordPiece:
    """The tokenizer a Hugging Face tokenizer.json describes, if it is BERT's WordPiece
    (else UnsupportedTokenizer, saying what differs)."""
    spec = json.loads(path.read_text(encoding="utf-8"))
    model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
    bert_normalizer = {
        "type": "BertNormalizer",
        "clean_text": True,
        "handle_chinese_chars": True,
        "lowercase": True,
    }
    differs = [
        f"{key} is {normalizer.get(key)!r}, not {want!r}"
        for key, want in bert_normalizer.items()
        if normalizer.get(key) != want
    ]
    if normalizer.get("strip_accents") not in (None, True):
        differs.append("accents are kept")
    if (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
        differs.append("the pre-tokenizer is not BertPreTokenizer")
    if model.get("type") != "WordPiece":
        differs.append(f"the model is {model.get('type')!r}, not WordPiece")
    if differs:
        raise UnsupportedTokenizer(f"{path}: not BERT's WordPiece ({'; '.join(differs)})")
    vocab: dict[str, int] = model["vocab"]
    return WordPiece(
        vocab=vocab,
        max_length=max_length,
        unk=vocab[model.get("unk_token", "[UNK]")],
        cls=vocab["[CLS]"],
        sep=vocab["[SEP]"],
        prefix=model.get("continuing_subword_prefix", "##"),
        max_word_chars=model.get("max_input_chars_per_word", 100),
        added={token["content"]: token["id"] for token in spec.get("added_tokens") or []},
    )


def normalize(text: str) -> str:
    """BertNormalizer: clean, space out CJK ideographs, strip accents, lowercase."""
    if not text.isascii():
        text = "".join(_clean(c) for c in text)
        text = unicodedata.normalize("NFD", text)
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        # One character at a time, as the Rust normalizer does: str.lower() would turn a
        # word-final capital sigma into "ς", the normalizer into "σ".
        return "".join(c.lower() for c in text) if "Σ" in text else text.lower()
    if not text.isprintable():
        text = "".join(_clean(c) for c in text)
    return text.lower()


def _clean(c: str) -> str:
    """One character, cleaned: '' for a control character (tab, newline and carriage
    return are whitespace), ' ' for whitespace, an ideograph between spaces."""
    if c in "\t\n\r":
        return " "
    if c.isspace():
        # Python's whitespace beyond Unicode's White_Space (U+001C-U+001F) are controls.
        return "" if unicodedata.category(c) == "Cc" else " "
    if c == "\ufffd" or unicodedata.category(c) in _REMOVED:
        return ""
    point = ord(c)
    if point >= 0x3400 and any(low <= point <= high for low, high in _CJK):
        return f" {c} "
    return c


def pre_tokenize(text: str) -> list[str]:
    """BertPreTokenizer: words split on whitespace, each punctuation mark a word of its own."""
    words: list[str] = []
    for chunk in text.split():
        if chunk.isalnum():
            words.append(chunk)
            continue
        start = 0
        for at, c in enumerate(chunk):
            if c in _ASCII_PUNCTUATION or (not c.isascii() and unicodedata.category(c)[0] == "P"):
                if at > start:
                    words.append(chunk[start:at])
                words.append(c)
                start = at + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words
