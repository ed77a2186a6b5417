"""`mirror soul …`: the persona's identity (SOUL.md) and its versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

soul_app = typer.Typer(
    help="The persona's identity (SOUL.md) and its versions.", no_args_is_help=True
)
app.add_typer(soul_app, name="soul")


@soul_app.command("show")
def soul_show(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Print the active soul version."""
    cfg = get_config(config, db)

    async def go() -> None:
        from bot.soul import sync_soul_file

        memory = await open_memory(cfg)
        try:
            version = await sync_soul_file(memory, cfg.soul.path, max_bytes=cfg.soul.max_bytes)
        finally:
            await memory.close()
        if version is None:
            raise CommandError(f"no valid soul yet: check {cfg.soul.path}")
        if as_json:
            echo_json(version.model_dump(mode="json"))
        else:
            typer.echo(f"# version {version.id} · {version.name} · sha256:{version.sha256[:12]}")
            typer.echo(version.text)

    run_async(go)


@soul_app.command("history")
def soul_history(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Every soul version, newest first."""
    cfg = get_config(config, db)

    versions = with_memory(cfg, lambda memory: memory.soul_history())
    if as_json:
        echo_json([v.model_dump(mode="json", exclude={"text"}) for v in versions])
        return
    for v in versions:
        typer.echo(
            f"{v.id:>4}  {v.created_at:%Y-%m-%d %H:%M:%S}  {v.source:<8} "
            f"sha256:{v.sha256[:12]}  {v.name}"
        )


@soul_app.command("diff")
def soul_diff(a: int, b: int, config: ConfigOption = None, db: DbOption = None) -> None:
    """Unified diff between two soul versions."""
    cfg = get_config(config, db)

    async def go() -> None:
        memory = await open_memory(cfg)
        try:
            first, second = await memory.soul_version(a), await memory.soul_version(b)
        finally:
            await memory.close()
        for number, version in ((a, first), (b, second)):
            if version is None:
                raise CommandError(f"no soul version {number}")
        assert first and second
        import difflib

        lines = difflib.unified_diff(
            first.text.splitlines(keepends=True),
            second.text.splitlines(keepends=True),
            fromfile=f"version {a}",
            tofile=f"version {b}",
        )
        typer.echo("".join(lines), nl=False)

    run_async(go)


@soul_app.command("rollback")
def soul_rollback(
    version_id: int,
    config: ConfigOption = None,
    db: DbOption = None,
    author: Annotated[str, typer.Option(help="Who rolls back (audited).")] = "cli",
) -> None:
    """Make an earlier version active again and write it back to SOUL.md."""
    cfg = get_config(config, db)

    async def go() -> None:
        from bot.soul_admin import RollbackError, rollback_soul

        memory = await open_memory(cfg)
        try:
            version = await rollback_soul(memory, cfg, version_id, author)
        except RollbackError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"nothing changed: SOUL.md not written: {exc}") from None
        finally:
            await memory.close()
        typer.echo(
            f"soul version {version.id} is active ({version.name}, from version {version_id})"
        )

    run_async(go)


@soul_app.command("check")
def soul_check(file: Path) -> None:
    """Validate a SOUL.md without recording it (exit 0 valid, 2 invalid)."""
    from bot.soul import SoulError, parse_soul

    try:
        soul = parse_soul(file.read_bytes())
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    except SoulError as exc:
        raise fail(f"{file}: invalid: {exc}") from None
    typer.echo(f"{file}: valid soul '{soul.name}' ({len(soul.sections)} sections)")
