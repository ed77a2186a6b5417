-- Version 4 (mirrors schema/004_hot_paths.sql): partial indexes for the hot paths.

CREATE INDEX messages_offline_replies ON messages (conversation_id)
    WHERE direction = 'out' AND model = 'mirror/offline';

CREATE INDEX conflicts_decided ON conflicts (resolved_at)
    WHERE status IN ('resolved', 'dismissed');

CREATE INDEX intentions_active ON intentions (id)
    WHERE status IN ('open', 'conflicted', 'resolved');
