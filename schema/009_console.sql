-- Version 9: the web console's accounts, sessions, one-time sign-in links and failed
-- sign-ins (bot/memory/console_store.py). Secrets are stored only as hashes: passwords as
-- argon2 hashes, session and sign-in tokens as their sha256.

CREATE TABLE console_users (
    name           TEXT PRIMARY KEY,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'coordinator', 'viewer')),
    password_hash  TEXT,                          -- argon2; NULL: signs in by link only
    created_at     REAL NOT NULL,
    created_by     TEXT
);

CREATE TABLE console_sessions (
    token_sha256  TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'coordinator', 'viewer')),
    csrf          TEXT NOT NULL,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- A link `mirror console` prints: usable once, before it expires.
CREATE TABLE console_sign_in_links (
    token_sha256  TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'coordinator', 'viewer')),
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    used_at       REAL
);

CREATE TABLE console_failed_sign_ins (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    name    TEXT NOT NULL,
    client  TEXT NOT NULL
);
CREATE INDEX console_failed_sign_ins_name ON console_failed_sign_ins (name, at);
CREATE INDEX console_failed_sign_ins_client ON console_failed_sign_ins (client, at);

-- The console's timeline filtered by entrance walks this backwards from the newest row.
CREATE INDEX messages_entrance ON messages (entrance, id);
