-- Version 3: the guard (access, pairing, identity links, rate limits, loops, echoes, budgets).

-- A person merged into another by an identity link keeps its row (a turn in flight may still
-- write with the old id); merged_into points at the person that now holds everything.
ALTER TABLE people ADD COLUMN merged_into INTEGER REFERENCES people (id);

-- Accounts let in by a pairing approval (policy 'pairing'); access follows identity links.
CREATE TABLE access_grants (
    identity_id  INTEGER PRIMARY KEY REFERENCES identities (id),
    granted_by   TEXT NOT NULL,
    granted_at   REAL NOT NULL,
    code         TEXT
);

-- One-time codes: 'pair' (an unknown account asks to be let in; an admin approves) and
-- 'link' (an account proves it belongs to the same person as another).
CREATE TABLE guard_codes (
    code          TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('pair', 'link')),
    identity_id   INTEGER NOT NULL REFERENCES identities (id),
    conversation  TEXT,                          -- where to say "you're in" (pairing)
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    used_at       REAL,
    used_by       TEXT
);
CREATE INDEX guard_codes_identity ON guard_codes (identity_id, kind, created_at);

-- Token buckets shared by every process: updated inside one BEGIN IMMEDIATE transaction.
-- warned: the limited party was told once in this episode (reset when a token is taken).
CREATE TABLE rate_buckets (
    key         TEXT PRIMARY KEY,
    tokens      REAL NOT NULL,
    updated_at  REAL NOT NULL,
    warned      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The persona's exchange with bots, per conversation: the consecutive streak and a stop.
CREATE TABLE bot_streaks (
    conversation_id  INTEGER PRIMARY KEY REFERENCES conversations (id),
    streak           INTEGER NOT NULL,
    last_at          REAL NOT NULL,
    stopped_at       REAL,
    stop_reason      TEXT,
    stop_kind        TEXT CHECK (stop_kind IN ('streak', 'hour'))
);
-- Each bot message it answered (bounded by the hourly budget; pruned after a day).
CREATE TABLE bot_exchanges (
    id               INTEGER PRIMARY KEY,
    conversation_id  INTEGER NOT NULL REFERENCES conversations (id),
    at               REAL NOT NULL
);
CREATE INDEX bot_exchanges_conversation ON bot_exchanges (conversation_id, at);

-- "Say it once" markers shared by every process (INSERT OR IGNORE claims one).
CREATE TABLE guard_notices (
    key  TEXT PRIMARY KEY,
    at   REAL NOT NULL
) WITHOUT ROWID;

-- Every outgoing message by id and time, kept by a trigger (turns are stored elsewhere) and
-- pruned after two days: each process feeds its in-memory echo index (bot.guard.EchoWindow)
-- from here with an indexed "message_id > last seen" read.
CREATE TABLE outgoing_log (
    message_id  INTEGER PRIMARY KEY,
    at          REAL NOT NULL
);
CREATE INDEX outgoing_log_at ON outgoing_log (at);
CREATE TRIGGER outgoing_log_insert AFTER INSERT ON messages WHEN new.direction = 'out' BEGIN
    INSERT OR IGNORE INTO outgoing_log (message_id, at) VALUES (new.id, new.created_at);
END;
INSERT INTO outgoing_log (message_id, at)
    SELECT id, created_at FROM messages
    WHERE direction = 'out' AND created_at > CAST(strftime('%s', 'now') AS REAL) - 172800;

-- Model usage per UTC day (days since the epoch), kept by a trigger: the daily budget is a
-- primary-key lookup instead of a sum over the day's model_usage rows.
CREATE TABLE usage_daily (
    day                INTEGER PRIMARY KEY,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0
);
CREATE TRIGGER usage_daily_insert AFTER INSERT ON model_usage BEGIN
    INSERT INTO usage_daily (day, prompt_tokens, completion_tokens, cost_usd)
    VALUES (CAST(new.at / 86400 AS INTEGER), new.prompt_tokens, new.completion_tokens,
            new.cost_usd)
    ON CONFLICT (day) DO UPDATE SET
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cost_usd = cost_usd + excluded.cost_usd;
END;
INSERT INTO usage_daily (day, prompt_tokens, completion_tokens, cost_usd)
    SELECT CAST(at / 86400 AS INTEGER), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd)
    FROM model_usage GROUP BY CAST(at / 86400 AS INTEGER);
