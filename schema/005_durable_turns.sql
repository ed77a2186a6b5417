-- Version 5: turns that survive a crash.
--
-- An incoming message not addressed to the persona (a group's chatter) is now recorded as
-- 'observed', so 'received' means "to be answered": a process that dies mid-turn leaves it
-- so, and the next holder of the entrance takes it up. Before this version chatter was
-- 'received' too: mark every such row observed, so an upgrade answers no old chatter.
UPDATE messages SET status = 'observed' WHERE direction = 'in' AND status = 'received';

-- The turns left unfinished by a dead process, per entrance (read when an instance takes
-- its entrance): a handful of rows at most, so the index stays tiny.
CREATE INDEX messages_unfinished ON messages (entrance, id)
    WHERE direction = 'in' AND status IN ('received', 'unanswered');

-- How often a turn was tried: an unanswered one (every model failed) is retried with
-- backoff a few times, then given up (missed).
ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
