-- MirrorOS memory.db, version 1: everything instances share.
-- Times are UNIX epoch seconds (REAL, UTC). Applied by bot/memory inside one transaction.

CREATE TABLE soul_versions (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL,
    name        TEXT NOT NULL,
    text        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('file', 'chat', 'cli', 'rollback')),
    author      TEXT
);
CREATE INDEX soul_versions_sha ON soul_versions (sha256);

CREATE TABLE instances (
    id            TEXT PRIMARY KEY,            -- instance name: "phone", "telegram", "scheduler"
    entrance      TEXT NOT NULL,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    last_seen     REAL NOT NULL,
    status        TEXT NOT NULL DEFAULT 'alive' CHECK (status IN ('alive', 'stopped', 'dead')),
    status_since  REAL NOT NULL,
    soul_version  INTEGER REFERENCES soul_versions (id)
);

CREATE TABLE people (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE identities (
    id            INTEGER PRIMARY KEY,
    entrance      TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    display_name  TEXT,
    person_id     INTEGER NOT NULL REFERENCES people (id),
    is_bot        INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    UNIQUE (entrance, external_id)
);
CREATE INDEX identities_person ON identities (person_id);

CREATE TABLE conversations (
    id           INTEGER PRIMARY KEY,
    entrance     TEXT NOT NULL,
    external_id  TEXT NOT NULL,                 -- channel / chat / thread id on the platform
    kind         TEXT NOT NULL CHECK (kind IN ('dm', 'group', 'thread')),
    title        TEXT,
    person_id    INTEGER REFERENCES people (id), -- the other party of a DM
    created_at   REAL NOT NULL,
    UNIQUE (entrance, external_id)
);

CREATE TABLE messages (
    id                   INTEGER PRIMARY KEY,
    conversation_id      INTEGER NOT NULL REFERENCES conversations (id),
    instance_id          TEXT NOT NULL,
    entrance             TEXT NOT NULL,
    direction            TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    identity_id          INTEGER REFERENCES identities (id),
    person_id            INTEGER REFERENCES people (id),
    text                 TEXT NOT NULL,
    created_at           REAL NOT NULL,
    platform_message_id  TEXT,
    reply_to             INTEGER REFERENCES messages (id),
    visibility           TEXT NOT NULL CHECK (visibility IN ('private', 'group')),
    -- in: received | observed | answered | unanswered | refused | echo | missed;
    -- out: pending | sent (see bot/models.py MessageStatus)
    status               TEXT NOT NULL DEFAULT 'received',
    soul_version         INTEGER REFERENCES soul_versions (id),
    model                TEXT,
    UNIQUE (entrance, platform_message_id)
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_person ON messages (person_id, id);
CREATE INDEX messages_instance ON messages (instance_id, id);

CREATE VIRTUAL TABLE messages_fts USING fts5 (
    text, content = 'messages', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;

CREATE TABLE notes (
    id                 INTEGER PRIMARY KEY,
    instance_id        TEXT NOT NULL,
    conversation_id    INTEGER REFERENCES conversations (id),
    person_id          INTEGER REFERENCES people (id),
    visibility         TEXT NOT NULL CHECK (visibility IN ('private', 'group')),
    text               TEXT NOT NULL,
    source_message_id  INTEGER REFERENCES messages (id),
    created_at         REAL NOT NULL
);
CREATE INDEX notes_person ON notes (person_id, id);

CREATE VIRTUAL TABLE notes_fts USING fts5 (
    text, content = 'notes', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER notes_fts_insert AFTER INSERT ON notes BEGIN
    INSERT INTO notes_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER notes_fts_delete AFTER DELETE ON notes BEGIN
    INSERT INTO notes_fts (notes_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

CREATE TABLE intentions (
    id                 INTEGER PRIMARY KEY,
    owner_instance     TEXT NOT NULL,
    entrance           TEXT NOT NULL,
    conversation_id    INTEGER REFERENCES conversations (id),
    person_id          INTEGER REFERENCES people (id),
    visibility         TEXT NOT NULL CHECK (visibility IN ('private', 'group')),
    text               TEXT NOT NULL,
    subject            TEXT NOT NULL,
    due_at             REAL,
    duration_s         INTEGER NOT NULL DEFAULT 3600,
    target_entrance    TEXT,                     -- set when another entrance must act
    status             TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'done', 'cancelled', 'expired', 'conflicted', 'resolved')),
    source_message_id  INTEGER REFERENCES messages (id),
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL
);
CREATE INDEX intentions_status ON intentions (status, due_at);
CREATE INDEX intentions_subject ON intentions (subject, status);
CREATE INDEX intentions_person ON intentions (person_id, status);

-- A conflict is an item for the coordinator: two intentions that collide, an intention
-- against an earlier decision, or (kind = 'request') one intention asking another entrance to act.
CREATE TABLE conflicts (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('conflict', 'request')),
    intention_a     INTEGER NOT NULL REFERENCES intentions (id),
    intention_b     INTEGER REFERENCES intentions (id),
    decision_of     INTEGER REFERENCES conflicts (id),  -- the earlier decision contradicted
    reason          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    due_at          REAL,                        -- the earliest due time of its intentions
    status          TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'surfaced', 'resolved', 'dismissed')),
    choice          TEXT,
    resolution      TEXT,                        -- the decision in words, for every instance
    kept            TEXT,                        -- JSON list of the intention texts it kept
    note            TEXT,
    resolved_by     TEXT,
    resolved_at     REAL,
    created_at      REAL NOT NULL,
    surfaced_at     REAL,
    reminded_at     REAL,
    next_remind_at  REAL,
    escalated_at    REAL,
    epoch           INTEGER
);
-- One row per pair (NULLs made comparable, so re-detection is idempotent).
CREATE UNIQUE INDEX conflicts_pair
    ON conflicts (kind, intention_a, COALESCE(intention_b, 0), COALESCE(decision_of, 0));
CREATE INDEX conflicts_status ON conflicts (status, id);
CREATE INDEX conflicts_remind ON conflicts (status, next_remind_at);
CREATE INDEX conflicts_due ON conflicts (status, escalated_at, due_at);
CREATE INDEX conflicts_subject ON conflicts (subject, status);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    entrance         TEXT NOT NULL,
    target           TEXT NOT NULL,
    text             TEXT NOT NULL,
    payload          TEXT,                       -- JSON: buttons, reply-to, subject line
    status           TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    claimed_by       TEXT,
    claimed_until    REAL,
    last_error       TEXT,
    dedupe_key       TEXT UNIQUE,
    epoch            INTEGER,
    created_at       REAL NOT NULL,
    sent_at          REAL
);
CREATE INDEX outbox_due ON outbox (entrance, status, next_attempt_at);

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at       REAL NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    subject  TEXT,
    detail   TEXT                                -- JSON
);
CREATE INDEX audit_action ON audit (action, id);

CREATE TABLE leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    epoch        INTEGER NOT NULL,
    acquired_at  REAL NOT NULL,
    expires_at   REAL NOT NULL
);
