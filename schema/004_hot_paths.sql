-- Version 4: indexes for the hot paths of a turn and a scheduler tick (measured by bench/).
-- Each is partial: it holds only the few rows those queries look for, so it stays small
-- and cheap to keep up at a million messages.

-- "Has this conversation already heard the offline notice?" (the mirror view, every turn):
-- without it, a scan of the conversation's every message (100 ms in a busy one at 1M).
CREATE INDEX messages_offline_replies ON messages (conversation_id)
    WHERE direction = 'out' AND model = 'mirror/offline';

-- The latest coordinator decisions (the mirror view, every turn): newest first without
-- sorting every decision ever made (5 ms at 8 000 decisions).
CREATE INDEX conflicts_decided ON conflicts (resolved_at)
    WHERE status IN ('resolved', 'dismissed');

-- The newest active intentions (the mirror view, every turn): without sorting them all.
CREATE INDEX intentions_active ON intentions (id)
    WHERE status IN ('open', 'conflicted', 'resolved');
