"""Vectors beside the rows they embed (schema 008), the index each process searches, and
the embedder that writes them.

The only SQL of recall by meaning. Who writes a vector: under `mirror up`, the host's
recall (the scheduler process, bot/recall_host.py) for every instance's rows, with the one
index; for a process run alone, the process that wrote the row: it runs one embedder task
for its own instance's rows (incoming messages, notes, intentions; never the persona's
replies): a turn's incoming message needs no second pass (its vector is the query's,
handed over by `bot.recall.meaning`), and whatever else the turn wrote is embedded in the
background, off the turn, within a poll (`mirror memory reindex` catches up anything else:
rows from before recall was on, or of a process that died first). Numbers behind that
choice: one sentence costs 11-25 ms to embed on this host, about the whole budget of a turn
(bench/recall.py).

Each process (the host's recall under `mirror up`) keeps the newest vectors in a numpy
`VectorIndex` (bot/recall.py), loaded in the turn's own read snapshot and refreshed when
memory changed (PRAGMA data_version, the pollers' check): only vectors after the last one
held are read. Who may see a row is read from the row itself (conversation, person,
visibility) when its vector is loaded, so the audience mask applies before ranking; an
identity link moves rows to another person, so a new link reloads the index; and the rows
the search returns are read back through `bot.memory.mirror_store.visible`, the one
privacy rule, before anything is returned.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bot.memory.database import Database
from bot.models import Audience, ViewIntention, ViewMessage, ViewNote, from_epoch
from bot.timeouts import wait_event

if TYPE_CHECKING:
    from bot.config import RecallConfig
    from bot.recall import Hit, Scored, VectorIndex
    from bot.recall_host import Search

log = logging.getLogger(__name__)

R = TypeVar("R")
# Issues the read-back of recalled rows (ids) in a read snapshot; returns the function that
# reads the ones the audience may see (bot.memory.mirror_store.visible_messages_in).
VisibleReader = Callable[[sqlite3.Connection, list[int]], Callable[[], dict[int, R]]]

EMBED_BATCH = 32  # rows read and written per transaction
EMBED_CALL = 8  # rows per call on the encoder thread: a turn's query waits for one call at most
INTENTIONS_RECALLED = 3  # a turn's recalled intentions, nearest first (the open list shows more)
# An intention recalled is told as a promise (the offline brain answers with it): a floor
# above the facts' 0.2. Measured on a few: questions about one 0.57-0.58, unrelated ones
# (small talk, other facts) up to 0.22 (no bench set of intentions yet).
INTENTION_FLOOR = 0.3
POLL_S = 0.5  # the embedder looks for new rows of its instance this often (when memory changed)

# What is embedded: rows people wrote and the persona noted, never its own replies.
_SOURCES = {
    "message": "SELECT m.id, m.text FROM messages m WHERE m.direction = 'in'",
    "note": "SELECT n.id, n.text FROM notes n WHERE TRUE",
    "intention": "SELECT i.id, i.text FROM intentions i WHERE TRUE",
}
_TABLE = {"message": "messages", "note": "notes", "intention": "intentions"}
_ALIAS = {"message": "m", "note": "n", "intention": "i"}
_OWNER = {"message": "m.instance_id", "note": "n.instance_id", "intention": "i.owner_instance"}
# Who may see each row, read when its vector is loaded into the index.
_INDEX_ROWS = {
    "message": (
        "SELECT v.id, v.row_id, s.conversation_id, s.person_id, s.visibility, v.vector"
        " FROM vectors v JOIN messages s ON s.id = v.row_id"
        " WHERE v.kind = 'message' AND v.id > :after AND s.direction = 'in'"
        " ORDER BY v.id DESC LIMIT :cap"
    ),
    "note": (
        "SELECT v.id, v.row_id, s.conversation_id, s.person_id, s.visibility, v.vector"
        " FROM vectors v JOIN notes s ON s.id = v.row_id"
        " WHERE v.kind = 'note' AND v.id > :after ORDER BY v.id DESC LIMIT :cap"
    ),
    # Active intentions only: one that is over (done, cancelled, expired) never becomes
    # active again, and one that ends after loading is left out by the read-back.
    "intention": (
        "SELECT v.id, v.row_id, s.conversation_id, s.person_id, s.visibility, v.vector"
        " FROM vectors v JOIN intentions s ON s.id = v.row_id"
        " WHERE v.kind = 'intention' AND v.id > :after"
        " AND s.status IN ('open', 'conflicted', 'resolved') ORDER BY v.id DESC LIMIT :cap"
    ),
}
# The recalled intentions, read back through the one privacy rule (`visible('i')`, the
# same as the mirror view's list of open intentions): only active ones, text and all.
_RECALLED_INTENTIONS = (
    "SELECT i.id, i.owner_instance, i.entrance, i.person_id, p.name AS person_name, i.text,"
    " i.subject, i.due_at, i.status, i.target_entrance"
    " FROM intentions i LEFT JOIN people p ON p.id = i.person_id"
    " WHERE i.id IN (SELECT value FROM json_each(:ids))"
    " AND i.status IN ('open', 'conflicted', 'resolved') AND {visible}"
)


def missing_in(
    conn: sqlite3.Connection, kind: str, after: int, limit: int, instance: str | None = None
) -> list[tuple[int, str]]:
    """Rows of `kind` after id `after` that have no vector yet, oldest first."""
    alias = _ALIAS[kind]
    owner = f" AND {_OWNER[kind]} = :instance" if instance is not None else ""
    return [
        (row[0], row[1])
        for row in conn.execute(
            f"{_SOURCES[kind]} AND {alias}.id > :after{owner}"
            f" AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.kind = :kind"
            f"   AND v.row_id = {alias}.id)"
            f" ORDER BY {alias}.id LIMIT :limit",
            {"after": after, "limit": limit, "kind": kind, "instance": instance},
        )
    ]


def store_vectors_in(
    conn: sqlite3.Connection, now: float, model: str, items: Iterable[tuple[str, int, Any]]
) -> int:
    """Write vectors (kind, row_id, float32 array); a row that has one keeps it."""
    cursor = conn.executemany(
        "INSERT OR IGNORE INTO vectors (kind, row_id, model, vector, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (kind, row_id, model, vector.astype("<f4").tobytes(), now)
            for kind, row_id, vector in items
        ],
    )
    return cursor.rowcount


def store_recall_scores_in(conn: sqlite3.Connection, query_id: int, scores: list[Scored]) -> None:
    conn.executemany(
        "INSERT INTO recall_scores (query_id, kind, row_id, fts_rank, vector_rank, similarity,"
        " fused) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (query_id, kind, row_id) DO UPDATE"
        " SET fts_rank = excluded.fts_rank, vector_rank = excluded.vector_rank,"
        " similarity = excluded.similarity, fused = excluded.fused",
        [
            (query_id, s.kind, s.row_id, s.fts_rank, s.vector_rank, s.similarity, s.fused)
            for s in scores
        ],
    )


def ask_index_news_in(
    conn: sqlite3.Connection, index: VectorIndex, version: int | None
) -> sqlite3.Cursor | None:
    """Issue the read `refresh_index_in` starts from (None: nothing to read). Issued with a
    turn view's other reads, it travels in their message on PostgreSQL: one round trip
    fewer. `version`: memory's change counter (`Database.data_version_now`, read just
    before the snapshot): unchanged since the last refresh, nothing is read at all; None
    (unknown), two indexed maxima."""
    if version is not None and version == index.data_version:
        return None
    # Both maxima in one statement: memory changes with every turn, so this runs each turn.
    return conn.execute(
        "SELECT (SELECT coalesce(max(id), 0) FROM audit WHERE action = 'identity.linked'),"
        " (SELECT coalesce(max(id), 0) FROM vectors)"
    )


def refresh_index_in(
    conn: sqlite3.Connection,
    index: VectorIndex,
    version: int | None,
    asked: sqlite3.Cursor | bool | None = False,
) -> None:
    """Bring the index up to date in the caller's read snapshot (`asked`: what
    `ask_index_news_in` issued in it for `version`, if the caller did; False if not)."""
    news = ask_index_news_in(conn, index, version) if asked is False else asked
    if news is None or isinstance(news, bool):
        return
    index.data_version = version
    maxima = news.fetchone()
    link, newest = maxima[0], maxima[1]
    if link != index.last_link:  # rows moved to another person: read who may see them anew
        from bot.recall import VectorIndex

        fresh = VectorIndex({k: s.cap for k, s in index.shelves.items()}, index_dimensions(index))
        index.shelves, index.last_vector_id, index.last_link = fresh.shelves, 0, link
    if newest <= index.last_vector_id:
        return
    # Every shelf's read issued before any is consumed: one message on PostgreSQL.
    issued = [
        (shelf, conn.execute(_INDEX_ROWS[kind], {"after": index.last_vector_id, "cap": shelf.cap}))
        for kind, shelf in index.shelves.items()
    ]
    for shelf, rows in issued:
        shelf.append([(r[1], r[2], r[3], r[4], r[5]) for r in reversed(rows.fetchall())])
    index.last_vector_id = newest


def index_dimensions(index: VectorIndex) -> int:
    return next(iter(index.shelves.values())).matrix.shape[1]


class VectorStore(Database):
    _recall_settings: RecallConfig | None = None
    _vector_index: VectorIndex | None = None
    _embedder: asyncio.Task[None] | None = None
    _embedder_instance: str | None = None  # None: every instance's rows (the host's recall)
    _embeds = True  # False: the host's recall embeds this process's rows
    _version_seen: int | None = None  # data_version_now() just before the turn's snapshot
    _embedder_wake: asyncio.Event | None = None
    _handed: list[tuple[str, int, Any]] | None = None  # vectors computed in the turn
    _scores: list[tuple[int, list[Scored]]] | None = None  # recall provenance, to write

    # The turn's side --------------------------------------------------------------------

    def start_embedder(
        self, instance_id: str | None, settings: RecallConfig, *, embeds: bool = True
    ) -> None:
        """Recall by meaning for this process: the index, and the embedder of its rows
        (`instance_id` None: every instance's, as the host's recall does, bot/recall_host.py;
        `embeds` False: none, the host embeds them, and the embedder only writes the turns'
        recall provenance). Called before each turn's read (it notes memory's change counter
        for the index)."""
        self._recall_settings = settings
        self._version_seen = self.data_version_now()
        if self._embedder is None:
            self._handed, self._scores = [], []
            self._embedder_wake = asyncio.Event()
            self._embedder_instance = instance_id
            self._embeds = embeds
            self._embedder = asyncio.get_running_loop().create_task(
                self._embed_own_rows(instance_id), name=f"embedder:{instance_id or 'host'}"
            )

    def ask_recall_in(self, conn: sqlite3.Connection, request: RecallRequest) -> RecallAsked | None:
        """Issue recall by meaning's reads with the caller's other reads (on PostgreSQL: in
        their message, one round trip fewer each), for `recall_by_meaning_in(asked=…)`: the
        index's news (`ask_index_news_in`), and the rows the index as it stands finds,
        read back through the privacy rule. None: nothing to issue (recall by meaning is
        off, or the host's recall searches)."""
        from bot.recall_host import Asked

        settings, query = self._recall_settings, request.query
        index = self._index() if query is not None and not isinstance(query, Asked) else None
        if settings is None or index is None:
            return None
        news = ask_index_news_in(conn, index, self._version_seen)
        floor = settings.min_similarity
        hits = index.search(
            query, request.audience, here=request.here, limit=request.limit * 2, floor=floor
        )
        return RecallAsked(news, hits, _ask_rows_in(conn, request, hits, floor))

    async def search_by_meaning(
        self, query: Any, search: Search
    ) -> tuple[dict[str, list[Hit]], dict[str, dict[int, float]]]:
        """For the host's recall: `_search` in the index, brought up to date first."""
        index = self._index()
        if index is None:
            raise RuntimeError("recall by meaning is not started here")
        await self.read(refresh_index_in, index, self.data_version_now())
        return _search(index, query, search)

    def recall_by_meaning_in(
        self,
        conn: sqlite3.Connection,
        request: RecallRequest,
        *,
        incoming_id: int,
        text: str,
        words: list[ViewMessage],
        word_notes: list[ViewNote],
        asked: RecallAsked | None = None,
    ) -> tuple[list[ViewMessage], list[ViewNote], list[ViewIntention]]:
        """Word matches fused with the nearest rows this audience may see (in the turn's
        read snapshot), and the active intentions nearest the text. The incoming message's
        vector is handed to the embedder, and the scores are kept as the reply's provenance
        (written by the embedder, off the turn). `asked`: what `ask_recall_in` issued in
        this snapshot."""
        from bot.recall import fuse
        from bot.recall_host import Asked, Search, unanswered

        query, audience, here, limit = request.query, request.audience, request.here, request.limit
        settings = self._recall_settings
        if settings is None:
            return words, word_notes, []
        floor = settings.min_similarity
        word_ids = {"message": [m.id for m in words], "note": [n.id for n in word_notes]}
        search = Search(audience, here, limit * 2, floor, word_ids)
        if isinstance(query, Asked):  # the host's recall searches its index (its own mask)
            try:
                hits, word_similarities = query.search(search)
            except OSError as exc:
                unanswered(exc)
                return words, word_notes, []
        else:
            index = self._index()
            if index is None:
                return words, word_notes, []
            held = (index.last_vector_id, index.last_link)
            refresh_index_in(conn, index, self._version_seen, asked.news if asked else False)
            if asked is not None and (index.last_vector_id, index.last_link) == held:
                hits = {kind: list(found) for kind, found in asked.hits.items()}  # no news
                word_similarities = _similarities(index, query, search)
            else:
                hits, word_similarities = _search(index, query, search)
        terms = _meaningful_words(text)
        # Read back through the one privacy rule before anything is ranked: the index's view
        # of who may see a row is as of its loading; the rows' own columns decide. Most were
        # read with the view's first reads (`ask_recall_in`: the hits of the index before
        # its news); what its news added to the hits is read now, its three reads issued
        # before any is consumed (one message on PostgreSQL).
        known = {m.id: m for m in words}
        known_notes = {n.id: n for n in word_notes}
        intentions: dict[int, ViewIntention] = {}
        early = asked.rows if asked else _RowsAsked()
        later = _ask_rows_in(
            conn,
            request,
            hits,
            floor,
            skip={
                "message": early.ids["message"] | known.keys(),
                "note": early.ids["note"] | known_notes.keys(),
                "intention": early.ids["intention"],
            },
        )
        for rows in (early, later):
            known.update(rows.messages())
            known_notes.update(rows.notes())
            intentions.update(rows.intentions())
        hits["intention"] = [h for h in hits.get("intention", []) if h.row_id in intentions]
        # The same question asked before (elsewhere) is the nearest row of all, and no
        # answer to it: leave it out.
        question = " ".join(text.lower().split())
        known = {
            i: m for i, m in known.items() if " ".join((m.text or "").lower().split()) != question
        }

        def ranked(
            kind: str, word_ids: list[int], texts: dict[int, str], count: int
        ) -> list[Scored]:
            return fuse(
                [i for i in word_ids if i in texts],
                [h for h in hits.get(kind, []) if h.row_id in texts],
                kind,
                count,
                overlap=_overlaps(terms, texts),
                word_similarity=word_similarities.get(kind, {}),
                floor=floor,
            )

        fused_messages = ranked(
            "message", word_ids["message"], {i: m.text or "" for i, m in known.items()}, limit
        )
        fused_notes = ranked(
            "note", word_ids["note"], {i: n.text for i, n in known_notes.items()}, limit
        )
        fused_intentions = ranked(
            "intention",
            [],
            {i: item.text or "" for i, item in intentions.items()},
            INTENTIONS_RECALLED,
        )
        if self._handed is not None and self._scores is not None:
            if not isinstance(query, Asked):  # (the host embeds the message itself)
                self._handed.append(("message", incoming_id, query))
            # Written with the next poll's batch (within POLL_S), never in the turn's way.
            self._scores.append((incoming_id, fused_messages + fused_notes + fused_intentions))
        return (
            [known[s.row_id] for s in fused_messages],
            [known_notes[s.row_id] for s in fused_notes],
            [intentions[s.row_id] for s in fused_intentions],
        )

    def _index(self) -> VectorIndex | None:
        settings = self._recall_settings
        if settings is None:
            return None
        if self._vector_index is None:
            from bot.embedding import DIMENSIONS
            from bot.recall import VectorIndex

            caps = {
                "message": settings.max_messages,
                "note": settings.max_notes,
                "intention": settings.max_intentions,
            }
            self._vector_index = VectorIndex(caps, DIMENSIONS)
        return self._vector_index

    async def close(self) -> None:
        task, self._embedder = self._embedder, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await super().close()

    # The embedder -----------------------------------------------------------------------

    async def _embed_own_rows(self, instance_id: str | None) -> None:
        """Every POLL_S (sooner when `flush_embedder` asks), until closed: write what turns
        handed over in one transaction, then embed this instance's rows that have no vector
        (when memory changed since the last look)."""
        from bot.embedding import MODEL_NAME, release_memory
        from bot.recall import encoder_thread

        async def start_at(kind: str) -> int:
            # A short look back on start: rows a previous run of this instance left.
            return max(await self.read(lambda conn: _newest_of(conn, kind, instance_id)) - 200, 0)

        # (Under a host's recall this loop embeds nothing: no look back, no looks.)
        after = {kind: await start_at(kind) if self._embeds else 0 for kind in _SOURCES}
        # Each kind's newest id at the previous poll's first look: once a look finds every
        # missing row, `after` moves up to it. Without that, `after` stayed where the last
        # row embedded here was (a turn's incoming message is handed over, never found
        # missing), and each poll read every row written since (notes and intentions of
        # every instance, by primary key): 0.65 ms a look after 300 turns at 1M, growing.
        # One poll behind, not this look's newest: on PostgreSQL ids are drawn before
        # commit, so a row may show up after a higher one (a write transaction longer than
        # POLL_S would still be left to `mirror memory reindex`); on SQLite ids follow
        # commits.
        newest_before = dict(after)
        seen_version: int | None = None
        assert self._embedder_wake is not None
        while True:
            await wait_event(self._embedder_wake, POLL_S)  # memory closing: cancelled
            self._embedder_wake.clear()
            try:
                handed, scores = self._handed or [], self._scores or []
                self._handed, self._scores = [], []
                # One transaction a poll (turns back to back hand over ~100: 1.6-2 ms at
                # 1M). Tried: 16 turns' worth per transaction, so that a turn's own write
                # waits behind less; the turn's p99 rose instead (bench.recall --turns-at
                # 1000000, 7 paired runs: 16.8 against 12.7 ms), the writes then spread
                # over more turns.
                if handed or scores:
                    await self.write(_store_handed_in, self.now, MODEL_NAME, handed, scores)
                if not self._embeds:
                    continue
                version = self.data_version_now()
                if version is not None and version == seen_version:
                    continue
                seen_version = version
                embedded = 0
                newest_now: dict[str, int] | None = None
                while True:
                    # The three kinds in one read (one hop to the reader thread, not three).
                    looked = await self.read(_look_in, after, EMBED_BATCH, instance_id)
                    if newest_now is None:
                        newest_now = {kind: newest for kind, (_, newest) in looked.items()}
                    for kind, (rows, _) in looked.items():
                        if rows:
                            await self.write(
                                store_vectors_in, self.now, MODEL_NAME, await _embed(kind, rows)
                            )
                            after[kind] = rows[-1][0]
                            embedded += len(rows)
                        if len(rows) < EMBED_BATCH:  # all the missing rows this look saw
                            after[kind] = max(after[kind], newest_before[kind])
                    if all(len(rows) < EMBED_BATCH for rows, _ in looked.values()):
                        break
                newest_before = newest_now
                if embedded > EMBED_BATCH:  # a backlog: give its buffers back to the system
                    await asyncio.get_running_loop().run_in_executor(
                        encoder_thread(), release_memory
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # memory busy or gone: the next poll tries again
                log.warning("embedder of %s: %s", instance_id, exc)

    async def flush_embedder(self) -> bool:
        """Wait (up to 20 s) until what turns handed over and this instance's rows so far are
        embedded and written; False if they were not (for tests: a turn never waits)."""
        instance = self._embedder_instance
        if self._embedder is None or self._embedder_wake is None:
            return True
        for _ in range(400):
            pending = self._embeds and await self.read(
                lambda conn: any(missing_in(conn, kind, 0, 1, instance) for kind in _SOURCES)
            )
            if not pending and not self._handed and not self._scores:
                return True
            self._embedder_wake.set()
            await asyncio.sleep(0.05)
        return False

    # Reindex and provenance ------------------------------------------------------------------

    async def rows_without_vectors(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            counts = {}
            for kind in _SOURCES:
                alias = _ALIAS[kind]
                counts[kind] = conn.execute(
                    f"SELECT count(*) FROM ({_SOURCES[kind]} AND NOT EXISTS (SELECT 1 FROM"
                    f" vectors v WHERE v.kind = :kind AND v.row_id = {alias}.id)) AS missing",
                    {"kind": kind},
                ).fetchone()[0]
            return counts

        return await self.read(run)

    async def rows_to_embed(self, kind: str, after: int, limit: int) -> list[tuple[int, str]]:
        """Rows of any instance with no vector yet (for `mirror memory reindex`)."""
        return await self.read(missing_in, kind, after, limit)

    async def store_vectors(self, model: str, items: list[tuple[str, int, Any]]) -> int:
        return await self.write(store_vectors_in, self.now, model, items)

    async def vector_counts(self) -> dict[str, int]:
        rows = await self.read(
            lambda conn: conn.execute("SELECT kind, count(*) FROM vectors GROUP BY kind").fetchall()
        )
        return {row[0]: row[1] for row in rows}

    async def recall_scores(self, message_id: int) -> list[dict[str, Any]]:
        """The scores that recalled each row for a message (an incoming one, or the reply to
        it: then its incoming message's), best first."""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            row = conn.execute(
                "SELECT direction, reply_to FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                return []
            query = row["reply_to"] if row["direction"] == "out" else message_id
            return [
                dict(found)
                for found in conn.execute(
                    "SELECT kind, row_id, fts_rank, vector_rank, similarity, fused"
                    " FROM recall_scores WHERE query_id = ? ORDER BY fused DESC, kind, row_id",
                    (query,),
                )
            ]

        return await self.read(run)


def _search(
    index: VectorIndex, query: Any, search: Search
) -> tuple[dict[str, list[Hit]], dict[str, dict[int, float]]]:
    """The nearest rows the audience may see, by kind, and the word matches'
    similarities."""
    hits = index.search(
        query, search.audience, here=search.here, limit=search.limit, floor=search.floor
    )
    return hits, _similarities(index, query, search)


def _similarities(index: VectorIndex, query: Any, search: Search) -> dict[str, dict[int, float]]:
    """The word matches' similarities to the query, by kind."""
    return {
        kind: index.shelves[kind].similarities(query, ids)
        for kind, ids in search.words.items()
        if kind in index.shelves
    }


def _meaningful_words(text: str) -> list[str]:
    """The question's words that word recall searches for (stopwords and short words out)."""
    from bot.memory.mirror_store import recall_query

    return list(dict.fromkeys(w.strip('"') for w in (recall_query(text) or "").split(" OR ") if w))


def _overlaps(terms: list[str], texts: dict[int, str]) -> dict[int, float]:
    from bot.recall import word_overlap

    return {row_id: word_overlap(terms, text) for row_id, text in texts.items()} if terms else {}


@dataclass(frozen=True)
class RecallRequest:
    """What a turn view's recall by meaning looks for: rows near `query` that `audience`
    may see (less conversation `here`'s messages), `limit` of each kind; how the view reads
    recalled rows back (`visible_message`, `visible_note`); who is speaking (`speaker`,
    for `about_this_person`)."""

    query: Any
    audience: Audience
    here: int
    limit: int
    visible_message: VisibleReader[ViewMessage]
    visible_note: VisibleReader[ViewNote]
    speaker: int | None = None


@dataclass(frozen=True)
class _RowsAsked:
    """Recalled rows' read-back, issued (`_ask_rows_in`): the ids asked for, by kind, and
    the functions that read the rows the audience may see among them."""

    ids: dict[str, set[int]] = field(
        default_factory=lambda: {"message": set(), "note": set(), "intention": set()}
    )
    messages: Callable[[], dict[int, ViewMessage]] = dict
    notes: Callable[[], dict[int, ViewNote]] = dict
    intentions: Callable[[], dict[int, ViewIntention]] = dict


@dataclass(frozen=True)
class RecallAsked:
    """What `VectorStore.ask_recall_in` issued with a turn view's first reads: the index's
    news, the hits of the index before it, and their read-back."""

    news: sqlite3.Cursor | None
    hits: dict[str, list[Hit]]
    rows: _RowsAsked


def _ask_rows_in(
    conn: sqlite3.Connection,
    request: RecallRequest,
    hits: dict[str, list[Hit]],
    floor: float,
    skip: dict[str, set[int]] | None = None,
) -> _RowsAsked:
    """Issue the read-back of the rows `hits` found (those in `skip` left out): intentions
    only above `INTENTION_FLOOR`. Nothing left to read: no statement."""
    skip = skip or {}
    floor_of = {"intention": max(floor, INTENTION_FLOOR)}
    ids = {
        kind: {
            h.row_id
            for h in hits.get(kind, [])
            if h.row_id not in skip.get(kind, ()) and h.similarity >= floor_of.get(kind, floor)
        }
        for kind in ("message", "note", "intention")
    }
    return _RowsAsked(
        ids,
        request.visible_message(conn, sorted(ids["message"])),
        request.visible_note(conn, sorted(ids["note"])),
        _visible_intentions_in(conn, request.audience, request.speaker, sorted(ids["intention"])),
    )


def _visible_intentions_in(
    conn: sqlite3.Connection, audience: Audience, speaker: int | None, ids: list[int]
) -> Callable[[], dict[int, ViewIntention]]:
    """The active intentions among `ids` the audience may read (recall by meaning): the read
    is issued now, its rows read when the returned function is called."""
    if not ids:
        return dict
    from bot.memory.mirror_store import visible

    params = {
        "everyone": audience.everyone,
        "person": audience.person_id,
        "conversation": audience.conversation_id,
        "ids": json.dumps(ids),
    }
    found = conn.execute(_RECALLED_INTENTIONS.format(visible=visible("i")), params)
    return lambda: {
        row["id"]: ViewIntention(
            id=row["id"],
            owner_instance=row["owner_instance"],
            entrance=row["entrance"],
            person_name=row["person_name"],
            about_this_person=speaker is not None and row["person_id"] == speaker,
            text=row["text"],
            subject=row["subject"],
            due_at=from_epoch(row["due_at"]),
            status=row["status"],
            target_entrance=row["target_entrance"],
        )
        for row in found
    }


async def _embed(kind: str, rows: list[tuple[int, str]]) -> list[tuple[str, int, Any]]:
    """(kind, row_id, vector) for rows, in calls of EMBED_CALL rows of similar length (short
    calls: a turn's query, queued on the same encoder thread, runs between two of them).
    A text the process embedded lately (a turn's query, a note that repeats it) comes from
    `bot.recall`'s cache, not the encoder."""
    from bot.recall import vectors as vectors_of

    ordered = sorted(rows, key=lambda row: len(row[1]))
    found: list[tuple[str, int, Any]] = []
    for start in range(0, len(ordered), EMBED_CALL):
        part = ordered[start : start + EMBED_CALL]
        vectors = await vectors_of([text for _, text in part])
        found += [(kind, row_id, v) for (row_id, _), v in zip(part, vectors, strict=True)]
    return found


def _look_in(
    conn: sqlite3.Connection, after: dict[str, int], limit: int, instance: str | None
) -> dict[str, tuple[list[tuple[int, str]], int]]:
    """For each kind: this instance's rows (None: every instance's) after `after[kind]`
    that have no vector yet (oldest first, up to `limit`), and the kind's newest id in this
    snapshot."""
    return {
        kind: (
            missing_in(conn, kind, after[kind], limit, instance),
            int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {_TABLE[kind]}").fetchone()[0]),
        )
        for kind in _SOURCES
    }


def _newest_of(conn: sqlite3.Connection, kind: str, instance_id: str | None) -> int:
    alias = _ALIAS[kind]
    table = _TABLE[kind]
    if instance_id is None:  # every instance's (the host's recall)
        found = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
        return int(found[0])
    found = conn.execute(
        f"SELECT coalesce(max({alias}.id), 0) FROM {table} {alias} WHERE {_OWNER[kind]} = ?",
        (instance_id,),
    ).fetchone()
    return int(found[0])


def _store_handed_in(
    conn: sqlite3.Connection,
    now: float,
    model: str,
    handed: list[tuple[str, int, Any]],
    scores: list[tuple[int, list[Scored]]],
) -> None:
    store_vectors_in(conn, now, model, handed)
    for query_id, found in scores:
        store_recall_scores_in(conn, query_id, found)
