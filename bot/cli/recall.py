"""`mirror memory reindex`: embed every row that has no vector yet (recall by meaning).

Resumable: each batch of vectors is its own transaction, and a row that has a vector is
never embedded again, so a run killed in the middle is finished by running it again.
numpy, the encoder and rich load inside the command (`mirror --help` stays cheap).
"""

from __future__ import annotations

from typing import Annotated

import typer

from bot.cli.common import CommandError, ConfigOption, DbOption, get_config, run_async
from bot.cli.memory import memory_app


@memory_app.command("reindex")
def memory_reindex(
    config: ConfigOption = None,
    db: DbOption = None,
    batch: Annotated[int, typer.Option(min=1, help="Rows embedded per transaction.")] = 128,
) -> None:
    """Embed the messages people wrote, notes and intentions that have no vector yet."""
    cfg = get_config(config, db)

    async def go() -> None:
        import time

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Task as ProgressTask
        from rich.text import Text

        from bot import recall
        from bot.cli.common import open_memory
        from bot.crash import crash_point
        from bot.embedding import MODEL_NAME

        if not recall.active(cfg.recall):
            raise CommandError(f"recall by meaning is off: {recall.describe(cfg)}")

        class Rate(TextColumn):
            def __init__(self) -> None:
                super().__init__("")

            def render(self, task: ProgressTask) -> Text:
                return Text(f"{task.speed or 0:.1f} rows/s")

        memory = await open_memory(cfg)
        try:
            todo = await memory.rows_without_vectors()
            total = sum(todo.values())
            if total == 0:
                typer.echo("every row has a vector; nothing to embed")
                return
            started, done, batches = time.perf_counter(), 0, 0
            with Progress(
                TextColumn("embedding"),
                BarColumn(),
                MofNCompleteColumn(),
                Rate(),
                TimeRemainingColumn(),
                transient=False,
            ) as progress:
                task = progress.add_task("embedding", total=total)
                for kind in todo:
                    after = 0
                    while rows := await memory.rows_to_embed(kind, after, batch):
                        vectors = await recall.encode([text for _, text in rows])
                        batches += 1
                        if batches == 3:
                            crash_point("during-reindex")  # two batches kept, one in hand
                        done += await memory.store_vectors(
                            MODEL_NAME,
                            [
                                (kind, row_id, v)
                                for (row_id, _), v in zip(rows, vectors, strict=True)
                            ],
                        )
                        after = rows[-1][0]
                        progress.advance(task, len(rows))
            spent = time.perf_counter() - started
            typer.echo(
                f"embedded {done} rows in {spent:.1f} s ({done / max(spent, 1e-9):.1f} rows/s)"
            )
        finally:
            await memory.close()

    run_async(go)
