-- Version 10: a reply's provenance in one row.

-- Which memory rows the context of an outgoing message used, as JSON: {kind: [row ids]}
-- (kind: message, note, intention, conflict, soul). It was a row per (reply, kind, row id),
-- about 90 rows a turn, each an index entry written in the turn's transaction; it is only
-- ever read whole, by the reply's id (`mirror memory why`).
CREATE TABLE reply_context (
    message_id  INTEGER PRIMARY KEY REFERENCES messages (id),
    used        TEXT NOT NULL
);

INSERT INTO reply_context (message_id, used)
SELECT message_id, json_group_object(kind, json(ids))
FROM (
    SELECT message_id, kind, json_group_array(row_id) AS ids
    FROM (SELECT message_id, kind, row_id FROM message_context ORDER BY message_id, kind, row_id)
    GROUP BY message_id, kind
)
GROUP BY message_id;

DROP TABLE message_context;
