"""The SQLite dialect of the stores, spoken to PostgreSQL: every difference, listed once.

The stores (bot/memory/*_store.py) keep one readable SQL text per query, written for
SQLite. On PostgreSQL each text goes through `translate` once (cached), which applies the
rewrites below, and nothing else: a construct not listed here must be written so that both
engines accept it (the contract tests run every store on both). Each rule names the SQLite
construct, its PostgreSQL counterpart, and why they mean the same here.

Never imports psycopg (plain text in, plain text out), so the rules are testable alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

# Tables whose primary key is a generated `id` (SQLite's INTEGER PRIMARY KEY, the rowid):
# an INSERT into one gets `RETURNING id`, which is how `cursor.lastrowid` is answered.
ID_TABLES = frozenset(
    {
        "soul_versions",
        "people",
        "identities",
        "conversations",
        "messages",
        "notes",
        "intentions",
        "conflicts",
        "outbox",
        "audit",
        "model_usage",
        "bot_exchanges",
        "vectors",
        "console_failed_sign_ins",
    }
)

# INSERT OR REPLACE: the key a new row replaces an old one on (its primary key).
REPLACE_KEYS = {
    "recall_scores": ("query_id", "kind", "row_id"),
    "vectors": ("kind", "row_id"),
    "rate_buckets": ("key",),
    "guard_notices": ("key",),
}

# Columns compared with a `json_each` list that hold text (every other such column is an id).
_TEXT_LIST_COLUMNS = frozenset({"target", "entrance", "kind", "status", "key"})

_LITERAL = re.compile(r"'(?:[^']|'')*'")
_INSERT_INTO = re.compile(r"^\s*INSERT\s+(?:OR\s+IGNORE\s+)?INTO\s+(\w+)", re.IGNORECASE)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)

# (pattern, replacement) applied outside string literals, in this order.
_REWRITES: list[tuple[re.Pattern[str], str]] = [
    # Query-plan hints: PostgreSQL's planner keeps statistics (autovacuum analyzes), SQLite's
    # `INDEXED BY` pins an index it would otherwise not pick without them.
    (re.compile(r"\s+INDEXED\s+BY\s+\w+"), ""),
    # SQLite's `IS` / `IS NOT` compare anything null-safely; PostgreSQL spells it out.
    (re.compile(r"\bIS\s+NOT\s+(?!NULL\b|DISTINCT\b|TRUE\b|FALSE\b)"), "IS DISTINCT FROM "),
    (re.compile(r"\bIS\s+(?!NULL\b|NOT\b|DISTINCT\b|TRUE\b|FALSE\b)"), "IS NOT DISTINCT FROM "),
    # FTS5 → the generated tsvector column of schema/postgresql/001 and its GIN index. The
    # query text (bot.memory.conversation_store.fts_query: quoted words joined by OR or
    # spaces) is valid `websearch_to_tsquery` syntax with the same meaning. The stores take
    # the newest matches (ORDER BY rowid DESC), not a rank, on both engines.
    (
        re.compile(r"SELECT\s+rowid\s+FROM\s+(\w+)_fts\s+WHERE\s+\1_fts\s+MATCH\s+(:\w+|\?)"),
        r"SELECT id FROM \1 WHERE search_vector @@ websearch_to_tsquery('mirror_text', \2)",
    ),
    (re.compile(r"\bORDER\s+BY\s+rowid\b"), "ORDER BY id"),
    # `WHERE 1`: SQLite's integer truth; PostgreSQL wants a boolean.
    (re.compile(r"\bWHERE\s+1\b(?!\s*[=<>])"), "WHERE true"),
    # SQLite sorts NULL first ascending and last descending; PostgreSQL the other way round.
    # Only an expression (a sub-select) can be NULL among the stores' descending keys; their
    # columns are NOT NULL or filtered, and `NULLS LAST` on them would lose the index order.
    (re.compile(r"\)\s+DESC\b(?!\s+NULLS)"), ") DESC NULLS LAST"),
]

# json_extract(col, '$.key') of a TEXT column holding JSON (a number comes back as text;
# PostgreSQL casts it where it is compared with an id). Spans a literal: applied first.
_JSON_EXTRACT = re.compile(r"json_extract\((\w+),\s*'\$\.(\w+)'\)")

# A view over the newest word matches (the turn view's recall: `FROM messages m JOIN … WHERE
# m.id IN (newest 200 matches) AND visible … ORDER BY m.id DESC LIMIT :limit`) reads the
# matches as its table instead: `FROM (newest 200 matches) m JOIN … WHERE visible …`. The
# same rows (ids are unique, so the semi-join was a join), but PostgreSQL stops walking the
# ids backwards once it has :limit visible rows, where the IN first hashed all 200 matches:
# for a common word, 1 500 rows checked instead of 10 000 (3.0 -> 0.4 ms at 1M messages).
# Spans the 'mirror_text' literal: applied after the rewrites.
_NEWEST_MATCHES = re.compile(
    r"\bFROM\s+(\w+)\s+(\w+)\b((?:(?!\bWHERE\b)[^()])*?)\bWHERE\s+\2\.id\s+IN\s+\(\s*"
    r"SELECT\s+id\s+(FROM\s+\1\s+WHERE\s+search_vector\s+@@\s+"
    r"websearch_to_tsquery\('mirror_text',\s*(?::\w+|\?)\)\s+ORDER\s+BY\s+id\s+DESC\s+"
    r"LIMIT\s+\d+)\s*\)\s+AND\s+"
)


def _newest_matches(match: re.Match[str]) -> str:
    alias, joins, matches = match.group(2, 3, 4)
    return f"FROM (SELECT * {matches}) {alias}{joins}WHERE "


# `m.id IN (SELECT r.id FROM instances CROSS JOIN messages r …)`: each instance's newest
# messages (mirror_store's RECENT_PER_INSTANCE_SQL). As an IN, the generic plan guessed a
# third of all messages and hash-joined them against a sequential scan (1.2 ms a turn at
# 10k messages; at 1M another guess happened to walk the index); as `= ANY (ARRAY(…))` the
# ids are gathered once (an InitPlan: an index range per instance) and looked up through
# the primary key: 0.26 ms at 10k, 0.13 ms at 1M.
_PER_INSTANCE = re.compile(
    r"\b(\w+\.id)\s+IN\s*\((?=\s*SELECT\s+\w+\.id\s+FROM\s+instances\s+CROSS\s+JOIN\b)",
    re.IGNORECASE,
)


def _per_instance_ids(text: str) -> str:
    match = _PER_INSTANCE.search(text)
    if match is None:
        return text
    opened = match.end() - 1
    close = next(
        (i for i, char, depth in _characters_outside_literals(text, opened) if depth == 0), None
    )
    if close is None:  # unbalanced: left as it is (PostgreSQL will say what is wrong)
        return text
    ids = text[opened + 1 : close]
    return f"{text[: match.start()]}{match.group(1)} = ANY (ARRAY({ids})){text[close + 1 :]}"


# `x IN (SELECT value FROM json_each(:list))`: a JSON array bound as one parameter.
_JSON_EACH = re.compile(
    r"([\w.]+)\s+(NOT\s+)?IN\s+\(\s*SELECT\s+value\s+FROM\s+json_each\((:\w+|\?)\)\s*\)",
    re.IGNORECASE,
)


def _json_each(match: re.Match[str]) -> str:
    """`x = ANY (array)`, the array built once (an InitPlan) from the JSON list: the planner
    looks each element up through x's index. As `x IN (SELECT … json_array_elements_text)`
    it guessed 100 elements and hash-joined them against a sequential scan (2-4 ms for 13
    ids among 13 000 intentions). Same answer, NULLs included: an empty or NULL list
    matches nothing."""
    column, negated, param = match.group(1), match.group(2), match.group(3)
    kind = "text" if column.rsplit(".", 1)[-1] in _TEXT_LIST_COLUMNS else "bigint"
    test = (
        f"{column} = ANY (CAST(ARRAY(SELECT json_array_elements_text(CAST({param} AS json)))"
        f" AS {kind}[]))"
    )
    return f"NOT ({test})" if negated else test


@dataclass(frozen=True)
class Statement:
    """One store statement in PostgreSQL's dialect, with what running it needs to know."""

    sql: str
    returns_id: bool  # `RETURNING id` was added: the first row's id is `lastrowid`
    ignore_unique: bool  # UPDATE OR IGNORE: a unique violation leaves the row as it was
    writes: bool  # INSERT, UPDATE, DELETE (a commit that ran one notifies the listeners)
    # An INSERT … VALUES (row) [ON CONFLICT …] without RETURNING, split around its row:
    # `executemany` sends one statement of many rows, not one statement per row.
    rows: RowsInsert | None = None
    # INSERT, UPDATE or DELETE without the store's own RETURNING: nothing to read back but
    # its rowcount and lastrowid, so it may wait and travel with the next statement.
    deferrable: bool = False
    # A read that searches words (`@@`): the server's slowest reads in a turn, which a
    # reader runs beside the rest of its snapshot's reads (bot/memory/pg_engine.SideLine).
    searches: bool = False


@dataclass(frozen=True)
class RowsInsert:
    """`head VALUES row, row, … tail`; `key`: the positions of the conflict key's items in
    a row, for an upsert (ON CONFLICT … DO UPDATE may not touch one row twice in one
    statement: of rows with the same key the last one wins, as SQLite's INSERT OR REPLACE
    row by row)."""

    head: str
    row: str
    tail: str
    key: tuple[int, ...] | None
    # The key's items as positions among a row's parameters, when each is one `%s` (or a
    # constant): rows are told apart by their values, not by parsing their bound text.
    key_params: tuple[int, ...] | None = None


def _outside_literals(sql: str, change: Callable[[str], str]) -> str:
    """Apply `change` to the parts of `sql` outside '…' literals."""
    parts, last = [], 0
    for literal in _LITERAL.finditer(sql):
        parts.append(change(sql[last : literal.start()]))
        parts.append(literal.group(0))
        last = literal.end()
    parts.append(change(sql[last:]))
    return "".join(parts)


_PLACEHOLDER = re.compile(r"(?<![:\w]):(\w+)|\?|%")


def _placeholders(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        return f"%({match.group(1)})s"

    return _PLACEHOLDER.sub(one, text)


def _rewrite(text: str) -> str:
    text = _JSON_EACH.sub(_json_each, text)
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


# `PRAGMA data_version` in a read snapshot: a number that changes when anything committed.
# The snapshot's text (xmin:xmax:in-progress ids) moves on with every write transaction's
# commit, and is what this snapshot sees.
DATA_VERSION_SQL = "SELECT hashtext(CAST(pg_current_snapshot() AS text))"
_INSERT_COLUMNS = re.compile(r"INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)", re.IGNORECASE)


def _replace_clause(sql: str) -> str:
    found = _INSERT_COLUMNS.search(sql)
    if found is None or found.group(1) not in REPLACE_KEYS:
        raise ValueError(f"INSERT OR REPLACE into an unknown table: {sql[:80]!r}")
    key = REPLACE_KEYS[found.group(1)]
    columns = [column.strip() for column in found.group(2).split(",")]
    rest = [column for column in columns if column not in key]
    if not rest:
        return f" ON CONFLICT ({', '.join(key)}) DO NOTHING"
    updates = ", ".join(f"{column} = excluded.{column}" for column in rest)
    return f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


@lru_cache(maxsize=2048)
def translate(sql: str, with_params: bool = True) -> Statement:
    """`sql` (SQLite dialect, `?` or `:name` parameters) for PostgreSQL (psycopg's `%s` and
    `%(name)s`; a literal `%` doubled when parameters are passed)."""
    if sql.strip().upper() == "PRAGMA DATA_VERSION":
        return Statement(DATA_VERSION_SQL, False, False, False)
    head = sql.lstrip()[:12].upper()
    writes = head.startswith(("INSERT", "UPDATE", "DELETE", "WITH"))
    text = sql
    ignore_insert = bool(re.match(r"\s*INSERT\s+OR\s+IGNORE\b", text, re.IGNORECASE))
    ignore_unique = bool(re.match(r"\s*UPDATE\s+OR\s+IGNORE\b", text, re.IGNORECASE))
    replace = bool(re.match(r"\s*INSERT\s+OR\s+REPLACE\b", text, re.IGNORECASE))
    text = re.sub(
        r"^(\s*(?:INSERT|UPDATE))\s+OR\s+(?:IGNORE|REPLACE)\b", r"\1", text, flags=re.IGNORECASE
    )
    text = _JSON_EXTRACT.sub(r"(CAST(\1 AS json) ->> '\2')", text)
    text = _outside_literals(text, _rewrite)
    text = _NEWEST_MATCHES.sub(_newest_matches, text)
    text = _per_instance_ids(text)
    table = _INSERT_INTO.match(re.sub(r"\bOR\s+REPLACE\s+", "", sql, count=1))
    has_returning = bool(_RETURNING.search(text))
    if ignore_insert:
        text = _append_before_returning(text, " ON CONFLICT DO NOTHING")
    if replace:
        text = _append_before_returning(text, _replace_clause(text))
    returns_id = bool(table and table.group(1) in ID_TABLES and not has_returning)
    if returns_id:
        text = text.rstrip().rstrip(";") + " RETURNING id"
    if with_params:
        text = _outside_literals(text, _placeholders)
        text = _double_percent_in_literals(text)
    rows = None
    if with_params and not ignore_unique:
        rows = _rows_insert(text.removesuffix(" RETURNING id") if returns_id else text)
    deferrable = (
        head.startswith(("INSERT", "UPDATE", "DELETE")) and not has_returning and not ignore_unique
    )
    searches = not writes and "@@" in text
    return Statement(text, returns_id, ignore_unique, writes, rows, deferrable, searches)


_VALUES = re.compile(r"\bVALUES\s*\(", re.IGNORECASE)
_ONE_PARAMETER = re.compile(r"%s(?:::\w+)?")  # one parameter, perhaps cast
_COLUMNS = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)", re.IGNORECASE)


def _characters_outside_literals(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(index, character, parentheses open after it) for each character of `text` from
    `start` that is outside a '…' literal."""
    depth, quoted = 0, False
    for index in range(start, len(text)):
        char = text[index]
        if char == "'":
            quoted = not quoted
        elif not quoted:
            depth += (char == "(") - (char == ")")
            yield index, char, depth


def top_level_items(group: str) -> list[str]:
    """The comma-separated items of `(a, f(b, c), 'x,y')`, without the parentheses."""
    items, start = [], 1
    for index, char, depth in _characters_outside_literals(group):
        if char == "," and depth == 1:
            items.append(group[start:index].strip())
            start = index + 1
    items.append(group[start:-1].strip())
    return items


def _rows_insert(sql: str) -> RowsInsert | None:
    """`sql` split around its one VALUES row, or None when it is not that shape (a SELECT
    as the source, RETURNING, several rows already)."""
    if _RETURNING.search(sql) or not sql.lstrip().upper().startswith("INSERT"):
        return None
    found = _VALUES.search(sql)
    columns = _COLUMNS.match(sql)
    if found is None or columns is None:
        return None
    row_chars = _characters_outside_literals(sql, found.end() - 1)
    end = next((i for i, _, depth in row_chars if depth == 0), -1) + 1  # after its ")"
    if end == 0:
        return None
    head, row, tail = sql[: found.start()] + "VALUES ", sql[found.end() - 1 : end], sql[end:]
    if tail.strip() and not re.match(r"\s*ON\s+CONFLICT\b", tail, re.IGNORECASE):
        return None
    key = None
    if re.search(r"\bDO\s+UPDATE\b", tail, re.IGNORECASE):
        names = [name.strip() for name in columns.group(2).split(",")]
        items = top_level_items(row)
        wanted = REPLACE_KEYS.get(columns.group(1))
        if wanted is None or len(items) != len(names) or not set(wanted) <= set(names):
            return None
        key = tuple(names.index(name) for name in wanted)
        return RowsInsert(head, row, tail, key, _key_params(items, key))
    return RowsInsert(head, row, tail, key)


def _key_params(items: list[str], key: tuple[int, ...]) -> tuple[int, ...] | None:
    """Where the key items' values are among a row's `%s` parameters (a constant item, no
    placeholder, is the same in every row and left out); None when a key item is anything
    else (an expression: two values could make one key), or a placeholder is named."""
    if any("%(" in item for item in items):
        return None
    before = [sum(item.count("%s") for item in items[:i]) for i in range(len(items))]
    positions = []
    for i in key:
        if _ONE_PARAMETER.fullmatch(items[i]):
            positions.append(before[i])
        elif "%s" in items[i]:
            return None
    return tuple(positions)


def _double_percent_in_literals(sql: str) -> str:
    return _LITERAL.sub(lambda literal: literal.group(0).replace("%", "%%"), sql)


def _append_before_returning(sql: str, clause: str) -> str:
    found = _RETURNING.search(sql)
    if found is None:
        return sql.rstrip().rstrip(";") + clause
    return sql[: found.start()].rstrip() + clause + " " + sql[found.start() :]
