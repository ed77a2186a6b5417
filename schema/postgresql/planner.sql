-- PostgreSQL only: what its planner and executor need beyond the numbered files, which
-- mirror schema/*.sql file for file (SQLite pins its plans with INDEXED BY instead). Applied by
-- bot/memory/pg_engine.py after the numbered files, under the write lock, whenever this
-- text changes (`schema_engine` keeps its hash): every statement must be idempotent.

-- said_before (bot/memory/admission_store.py: what a person told the persona lately).
-- Through messages_person (person_id, id) the planner read every message of a talkative
-- person to keep the last hours' (65 000 rows in 28 000 pages: 200-330 ms, in 6% of the
-- turns at 1M messages); through this index, the rows of the window (under 1 ms).
CREATE INDEX IF NOT EXISTS messages_person_said ON messages (person_id, created_at)
    WHERE direction = 'in';

-- Notes recalled for a group (mirror_store's turn view: visible to the audience when the
-- note belongs to this conversation): without it, a sequential scan of every note
-- (22 000 notes beside 1M messages: 5-8 ms a turn), with it the conversation's own.
CREATE INDEX IF NOT EXISTS notes_conversation ON notes (conversation_id, id);

