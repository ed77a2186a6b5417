-- Version 6 (mirrors schema/006_due_turns.sql): due intentions become turns.

ALTER TABLE intentions ADD COLUMN follow_up text
    CHECK (follow_up IN ('queued', 'sent', 'unreachable', 'skipped'));
ALTER TABLE intentions ADD COLUMN follow_up_at double precision;
ALTER TABLE intentions ADD COLUMN late_noticed_at double precision;

UPDATE intentions SET follow_up = 'skipped'
    WHERE due_at IS NOT NULL AND due_at < extract(epoch FROM now());

CREATE INDEX intentions_to_follow ON intentions (due_at)
    WHERE follow_up IS NULL AND due_at IS NOT NULL;

CREATE INDEX intentions_following ON intentions (due_at) WHERE follow_up = 'queued';
