-- Version 8: recall by meaning (bot/recall.py, bot/memory/vector_store.py).
--
-- One float32 vector per row people wrote or the persona noted: incoming messages (never
-- the persona's own replies), notes (facts about people among them) and intentions. A
-- vector sits beside its row, keyed by (kind, row_id); the row itself says who may see it
-- (conversation, person, visibility), so privacy is read from there, never copied here.
-- `id` is the order of writing: each process loads only the vectors after the last it holds.
CREATE TABLE vectors (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('message', 'note', 'intention')),
    row_id      INTEGER NOT NULL,
    model       TEXT NOT NULL,
    vector      BLOB NOT NULL,                  -- little-endian float32, unit length
    created_at  REAL NOT NULL,
    UNIQUE (kind, row_id)
);

-- What recall found for an incoming message, with the scores that ranked it: provenance of
-- the reply to it (`mirror memory why`), beside message_context. Ranks are 1-based within
-- each list (NULL: not in that list); fused is the reciprocal-rank fusion score.
CREATE TABLE recall_scores (
    query_id     INTEGER NOT NULL REFERENCES messages (id),
    kind         TEXT NOT NULL,
    row_id       INTEGER NOT NULL,
    fts_rank     INTEGER,
    vector_rank  INTEGER,
    similarity   REAL,
    fused        REAL NOT NULL,
    PRIMARY KEY (query_id, kind, row_id)
) WITHOUT ROWID;
