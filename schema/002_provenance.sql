-- Version 2: provenance of replies and model usage.

-- Which memory rows the context of an outgoing message used (kind: message, note,
-- intention, conflict, soul).
CREATE TABLE message_context (
    message_id  INTEGER NOT NULL REFERENCES messages (id),
    kind        TEXT NOT NULL,
    row_id      INTEGER NOT NULL,
    PRIMARY KEY (message_id, kind, row_id)
) WITHOUT ROWID;

-- Tokens and cost per model call, for budgets.
CREATE TABLE model_usage (
    id                 INTEGER PRIMARY KEY,
    at                 REAL NOT NULL,
    instance_id        TEXT NOT NULL,
    model              TEXT NOT NULL,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0
);
CREATE INDEX model_usage_at ON model_usage (at);
