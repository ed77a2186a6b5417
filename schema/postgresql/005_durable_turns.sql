-- Version 5 (mirrors schema/005_durable_turns.sql): turns that survive a crash.

UPDATE messages SET status = 'observed' WHERE direction = 'in' AND status = 'received';

CREATE INDEX messages_unfinished ON messages (entrance, id)
    WHERE direction = 'in' AND status IN ('received', 'unanswered');

ALTER TABLE messages ADD COLUMN attempts bigint NOT NULL DEFAULT 0;
