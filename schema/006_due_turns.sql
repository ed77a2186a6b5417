-- Version 6: due intentions become turns.
--
-- When an intention with a conversation falls due, the scheduler claims it (follow_up
-- 'queued') and queues one outbox row for the entrance owning the conversation; that
-- entrance runs a turn for it, which marks the intention done and its follow-up 'sent'.
-- 'unreachable': the follow-up could not be delivered (the coordinator was told once);
-- such an intention expires as before, and so does one with no conversation. 'skipped':
-- already past due when this version arrived. `late_noticed_at`: when the coordinator was
-- told a follow-up is still waiting (its entrance is down).
ALTER TABLE intentions ADD COLUMN follow_up TEXT
    CHECK (follow_up IN ('queued', 'sent', 'unreachable', 'skipped'));
ALTER TABLE intentions ADD COLUMN follow_up_at REAL;
ALTER TABLE intentions ADD COLUMN late_noticed_at REAL;

-- Promises already past due when this version arrives are not followed up all at once.
UPDATE intentions SET follow_up = 'skipped'
    WHERE due_at IS NOT NULL AND due_at < CAST(strftime('%s', 'now') AS REAL);

-- The scheduler's question each tick: which intentions fell due and are not yet claimed.
CREATE INDEX intentions_to_follow ON intentions (due_at)
    WHERE follow_up IS NULL AND due_at IS NOT NULL;

-- Follow-ups queued and not yet sent (the late check each tick): a handful of rows.
CREATE INDEX intentions_following ON intentions (due_at) WHERE follow_up = 'queued';
