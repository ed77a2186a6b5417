"""`mirror memory migrate --to URL_OR_PATH`: move a whole memory to another engine.

SQLite → an empty PostgreSQL database, or PostgreSQL → a new SQLite file, every table
(soul history, audit and provenance included) in one transaction on the target, with a
progress bar, then verified table by table (rows and a checksum). Stop the persona's
processes first: what they write during the copy stays behind. The work is
`bot.memory.pg_copy`'s; this module only reads the options and shows the progress.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bot.cli.common import ConfigOption, DbOption, JsonOption, echo_json, fail, get_config
from bot.cli.memory import memory_app


@memory_app.command("migrate")
def memory_migrate(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Target: postgresql://user:pass@host/db (empty) or a new SQLite file path.",
        ),
    ],
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy this memory into an empty one on the other engine, verified per table."""
    cfg = get_config(config, db)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from bot.config import memory_location
    from bot.memory.pg_copy import CopyError, copy_memory
    from bot.memory.schema import MemoryDbError

    source = cfg.memory.path
    target = memory_location(to)
    with Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=as_json,
        disable=as_json,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=max(total, 1))
            bar.update(tasks[table], completed=done if total else 1)

        try:
            reports = copy_memory(source, target, progress=progress)
        except CopyError as exc:
            raise fail(str(exc)) from None
        except MemoryDbError as exc:
            raise fail(str(exc)) from None
    if as_json:
        echo_json(
            [
                {
                    "table": r.name,
                    "rows": r.target_rows,
                    "checksum": r.target_checksum,
                    "ok": r.ok,
                }
                for r in reports
            ]
        )
        return
    rows = sum(report.target_rows for report in reports)
    typer.echo(
        f"copied {rows} rows in {len(reports)} tables; every table's row count and checksum match"
    )
