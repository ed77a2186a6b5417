"""The coordinator's commands: `pending`, `resolve`, `dismiss`, `conflicts`, and the
promises: `intentions`, `remind`."""

from __future__ import annotations

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
from bot.config import Config

if TYPE_CHECKING:
    pass


def _coordinator_command(cfg: Config, name: str, args: list[str]) -> None:
    async def go() -> None:
        from bot.commands import Command, Commands
        from bot.speaker import operator

        memory = await open_memory(cfg)
        try:
            outcome = await Commands(memory, cfg).run(operator(), Command(name, args))
        finally:
            await memory.close()
        assert outcome is not None  # a declared command
        typer.echo(outcome.text)
        if not outcome.ok:
            raise typer.Exit(2)

    run_async(go)


@app.command()
def pending(config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Items waiting for the coordinator."""
    cfg = get_config(config, db)
    if not as_json:
        _coordinator_command(cfg, "pending", [])
        return

    items = with_memory(cfg, lambda memory: memory.pending_items())
    echo_json([item.model_dump(mode="json") for item in items])


@app.command()
def resolve(
    item_id: int,
    choice: Annotated[str, typer.Argument(help="A, B, both, neither, approve, deny, or words.")],
    note: Annotated[str | None, typer.Option(help="A note kept with the decision.")] = None,
    notify: Annotated[bool, typer.Option(help="Tell each affected person.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Decide an item as the coordinator."""
    cfg = get_config(config, db)
    args = (
        [str(item_id), choice] + (note.split() if note else []) + (["--notify"] if notify else [])
    )
    _coordinator_command(cfg, "resolve", args)


@app.command()
def dismiss(item_id: int, config: ConfigOption = None, db: DbOption = None) -> None:
    """Close an item without a decision."""
    _coordinator_command(get_config(config, db), "dismiss", [str(item_id)])


def _upcoming_json(item: Any, timezone: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    from bot.reminders import local_time

    due = item.due_at
    return {
        "id": item.id,
        "kind": item.kind,
        "text": item.text,
        "status": item.status,
        "due_at": datetime.fromtimestamp(due, UTC).isoformat() if due is not None else None,
        "due_local": local_time(due, timezone) if due is not None else None,
        "timezone": timezone,
        "recurring": item.recurring,
        "entrance": item.entrance,
        "owner_instance": item.owner_instance,
        "person_id": item.person_id,
        "person_name": item.person_name,
    }


@app.command()
def intentions(
    status: Annotated[str | None, typer.Option(help="open, done, conflicted, …")] = None,
    due: Annotated[
        bool,
        typer.Option(
            "--due",
            help="What falls due next, soonest first, in each person's local time.",
        ),
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The persona's intentions across every instance."""
    cfg = get_config(config, db)

    if due:
        coming = with_memory(cfg, lambda memory: memory.due_intentions())
        rows = [_upcoming_json(item, item.timezone or cfg.persona.timezone) for item in coming]
        if as_json:
            echo_json(rows)
            return
        if not rows:
            typer.echo("nothing falls due")
        for row in rows:
            who = f" for {row['person_name']}" if row["person_name"] else ""
            repeats = " (repeats)" if row["recurring"] else ""
            typer.echo(
                f"{row['id']:>5} {row['due_local']}  {row['kind']}{who} on {row['entrance']}: "
                f"{row['text']}{repeats}"
            )
        return
    found = with_memory(cfg, lambda memory: memory.intentions(status))
    if as_json:
        echo_json([item.model_dump(mode="json") for item in found])
        return
    for item in found:
        when = f" due {item.due_at:%Y-%m-%d %H:%M} UTC" if item.due_at else ""
        target = f" -> {item.target_entrance}" if item.target_entrance else ""
        typer.echo(
            f"{item.id:>5} [{item.status}] {item.owner_instance}/{item.entrance} "
            f"'{item.subject}': {item.text}{when}{target}"
        )


@app.command()
def remind(
    account: Annotated[str, typer.Argument(help="Who to remind, ENTRANCE:ID.")],
    text: Annotated[str, typer.Argument(help="What to remind them of.")],
    at: Annotated[
        str,
        typer.Option(
            "--at", help=r'When, in words ("tomorrow 9:00", "in 2 hours"), in \[persona] timezone.'
        ),
    ],
    config: ConfigOption = None,
    db: DbOption = None,
    actor: Annotated[str, typer.Option("--as", help="Who sets it (audited).")] = "cli",
    as_json: JsonOption = False,
) -> None:
    """Remind someone of something, in their private chat on that entrance."""
    cfg = get_config(config, db)
    from bot.accounts import AccountRef

    try:
        ref = AccountRef.parse(account)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not text.strip():
        raise fail("say what to remind them of")
    timezone = cfg.persona.timezone
    import dateparser

    when = dateparser.parse(
        at,
        settings={
            "TIMEZONE": timezone,
            "TO_TIMEZONE": "UTC",
            "RETURN_AS_TIMEZONE_AWARE": True,
            "PREFER_DATES_FROM": "future",
        },
    )
    if when is None:
        raise fail(f'I can\'t read the time {at!r}; try "tomorrow 9:00" or "2026-12-24 18:00"')
    due_at = when.timestamp()

    async def store(memory: Any) -> int:
        from bot.memory import ReminderError

        try:
            return int(
                await memory.add_reminder(
                    ref.entrance, ref.external_id, text.strip(), due_at, actor=actor
                )
            )
        except ReminderError as exc:
            raise CommandError(str(exc)) from None

    intention_id = with_memory(cfg, store)
    from bot.reminders import local_time

    if as_json:
        echo_json(
            {
                "id": intention_id,
                "account": ref.key,
                "text": text.strip(),
                "due_at": when.isoformat(),
                "due_local": local_time(due_at, timezone),
            }
        )
        return
    typer.echo(f"reminder #{intention_id} for {ref.key} at {local_time(due_at, timezone)}")


@app.command()
def conflicts(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Conflicts and requests, with their decisions."""
    cfg = get_config(config, db)

    found = with_memory(cfg, lambda memory: memory.conflicts())
    if as_json:
        echo_json([item.model_dump(mode="json") for item in found])
        return
    for item in found:
        decided = f" -> {item.resolution}" if item.resolution else ""
        typer.echo(
            f"{item.id:>5} {item.kind} [{item.status}] '{item.subject}': {item.reason}{decided}"
        )
