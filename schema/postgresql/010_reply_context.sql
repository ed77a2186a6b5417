-- Version 10 (mirrors schema/010_reply_context.sql): a reply's provenance in one row.

CREATE TABLE reply_context (
    message_id  bigint PRIMARY KEY REFERENCES messages (id),
    used        text NOT NULL
);

INSERT INTO reply_context (message_id, used)
SELECT message_id, json_object_agg(kind, ids)::text
FROM (
    SELECT message_id, kind, json_agg(row_id ORDER BY row_id) AS ids
    FROM message_context
    GROUP BY message_id, kind
) AS used
GROUP BY message_id;

DROP TABLE message_context;
