"""`mirror status`: the quick local view of memory, soul, instances and what is pending."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bot.cli import common
from bot.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    _global,
    app,
    echo_json,
    fail,
    get_config,
)

if TYPE_CHECKING:
    from bot.memory.snapshot import StatusLines
    from bot.models import Status


@app.command()
def status(config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Memory, soul, instances and what is pending."""
    # No event loop, no aiosqlite and, for the text, no pydantic: this is the command people
    # run to see if all is well, and it should answer at once (bench/startup.py measures it
    # against `python -c "import pydantic, typer"`). A config file that passed validation
    # before is not validated again while it and the code are unchanged (bot/cli/checked.py).
    from bot.cli.checked import checked_config
    from bot.memory.schema import MemoryDbError
    from bot.memory.snapshot import read_status, read_status_lines

    cfg = checked_config(
        config or _global["config"],
        db or _global["db"],
        lambda: get_config(config, db),
        remembered=common.own_process,
    )
    try:
        if as_json:
            full = read_status(
                cfg.memory_path, cfg.dead_after_s, busy_timeout_ms=cfg.busy_timeout_ms
            )
            data = full.model_dump(mode="json")
            if data["soul"]:
                data["soul"].pop("text")
            echo_json(data)
            return
        report = read_status_lines(
            cfg.memory_path, cfg.dead_after_s, busy_timeout_ms=cfg.busy_timeout_ms
        )
    except MemoryDbError as exc:
        raise fail(str(exc)) from None
    soul = report.soul
    typer.echo(f"memory      {report.memory_path} (schema {report.schema_version})")
    typer.echo(
        f"soul        {f'v{soul.id} {soul.name} sha256:{soul.sha256[:12]}' if soul else 'none'}"
    )
    typer.echo(f"messages    {report.messages}")
    typer.echo(f"intentions  {report.open_intentions} open")
    typer.echo(f"conflicts   {report.open_conflicts} open")
    typer.echo(f"outbox      {report.pending_outbox} pending")
    typer.echo("instances" + ("   none" if not report.instances else ""))
    for item in report.instances:
        state = "alive" if report.alive[item.id] else item.status
        typer.echo(
            f"  {item.id:<14} {item.entrance:<9} {state:<7} last seen "
            f"{item.last_seen:%Y-%m-%d %H:%M:%S} UTC (pid {item.pid} on {item.host})"
        )
    off = looks_off(report, cfg.soul_path)
    if off:
        typer.echo(f"check       run `mirror doctor` ({'; '.join(off)})")


def looks_off(report: Status | StatusLines, soul_path: Path) -> list[str]:
    """What in the quick local view calls for `mirror doctor` (no network, no imports)."""
    found = []
    if not soul_path.is_file():
        found.append(f"no SOUL.md at {soul_path}")
    elif report.soul is None:
        found.append("no soul in memory yet")
    silent = [i.id for i in report.instances if i.status == "alive" and not report.alive[i.id]]
    if silent:
        found.append(f"silent without stopping: {', '.join(silent)}")
    if report.pending_outbox and not any(report.alive.values()):
        found.append(f"{report.pending_outbox} outbox item(s) waiting, no instance running")
    return found
