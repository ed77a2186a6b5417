"""`mirror memory …` and `mirror backup`: look into memory.db, copy it safely."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.common import (
    CommandError,
    ConfigOption,
    DbOption,
    JsonOption,
    app,
    echo_json,
    fail,
    get_config,
    open_memory,
    run_async,
    with_memory,
)

if TYPE_CHECKING:
    pass

memory_app = typer.Typer(help="Look into memory.db.", no_args_is_help=True)
app.add_typer(memory_app, name="memory")


def _message_line(message: Any) -> str:
    arrow = "<-" if message.direction == "in" else "->"
    who = message.person_name or "-"
    soul = f" soul v{message.soul_version}" if message.soul_version else ""
    return (
        f"{message.id:>6} {message.created_at:%Y-%m-%d %H:%M:%S} {message.entrance}/"
        f"{message.instance_id} {arrow} {who}{soul}: {message.text}"
    )


@memory_app.command("search")
def memory_search(
    text: str,
    config: ConfigOption = None,
    db: DbOption = None,
    limit: int = 20,
    as_json: JsonOption = False,
) -> None:
    """Full-text search over every message (newest first)."""
    cfg = get_config(config, db)

    found = with_memory(cfg, lambda memory: memory.search_messages(text, limit=limit))
    if as_json:
        echo_json([m.model_dump(mode="json") for m in found])
    else:
        for message in found:
            typer.echo(_message_line(message))


@memory_app.command("log")
def memory_log(
    config: ConfigOption = None,
    db: DbOption = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: JsonOption = False,
) -> None:
    """The latest messages with entrance, instance, direction, person and soul version."""
    cfg = get_config(config, db)

    found = with_memory(cfg, lambda memory: memory.message_log(limit))
    if as_json:
        echo_json([m.model_dump(mode="json") for m in found])
    else:
        for message in reversed(found):
            typer.echo(_message_line(message))


@memory_app.command("why")
def memory_why(
    message_id: int, config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Why a reply said what it said: soul version, model, and the memory rows it used."""
    cfg = get_config(config, db)

    async def go() -> None:
        memory = await open_memory(cfg)
        try:
            found = await memory.provenance(message_id)
            message = await memory.message(message_id)
            scores = await memory.recall_scores(message_id)
        finally:
            await memory.close()
        if found is None or message is None:
            raise CommandError(f"no message {message_id}")
        if as_json:
            echo_json(
                {
                    "message_id": found.message_id,
                    "direction": message.direction,
                    "text": message.text,
                    "soul_version": found.soul_version,
                    "model": found.model,
                    "context": [{"kind": kind, "id": row_id} for kind, row_id in found.rows],
                    "recall": scores,
                }
            )
            return
        typer.echo(_message_line(message))
        typer.echo(f"soul version  {found.soul_version or '-'}")
        typer.echo(f"model         {found.model or '-'}")
        typer.echo(f"context rows  {len(found.rows)}")
        for kind, row_id in found.rows:
            typer.echo(f"  {kind} {row_id}")
        if scores:
            typer.echo(f"recalled      {len(scores)} (words #rank, meaning #rank cosine, fused)")
        for score in scores:
            words = f"#{score['fts_rank']}" if score["fts_rank"] else "-"
            rank, cosine = score["vector_rank"], score["similarity"]
            meaning = f"#{rank} {cosine:.3f}" if rank else "-"
            typer.echo(
                f"  {score['kind']} {score['row_id']}  words {words}  meaning {meaning}"
                f"  fused {score['fused']:.4f}"
            )

    run_async(go)


@app.command()
def backup(path: Path, config: ConfigOption = None, db: DbOption = None) -> None:
    """Copy memory.db with SQLite's online backup API (safe while others write)."""
    cfg = get_config(config, db)
    if path.exists():
        raise fail(f"{path} exists; choose a new file")

    with_memory(cfg, lambda memory: memory.backup(path))
    typer.echo(f"backed up {cfg.memory.path} to {path}")
