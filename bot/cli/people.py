"""People: pairing (`mirror pair …`), `people` (and `people revoke`), `link`, `unlink`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    app,
    echo_json,
    fail,
    get_config,
    with_memory,
)
from bot.config import Config

if TYPE_CHECKING:
    from bot.outcome import Outcome

pair_app = typer.Typer(
    help="Pairing: let in people who asked for it (entrances with policy 'pairing').",
    no_args_is_help=True,
)
app.add_typer(pair_app, name="pair")


ActorOption = Annotated[str, typer.Option("--as", help="Who does it (audited).")]


def _people_command(cfg: Config, action: Callable[[Any], Awaitable[Outcome]]) -> None:
    """Run one of bot.people's actions; exit 2 unless its outcome is ok."""

    try:
        outcome = with_memory(cfg, action)
    except ValueError as exc:  # a bad ENTRANCE:ID
        raise fail(str(exc)) from None
    typer.echo(outcome.text)
    if not outcome.ok:
        raise typer.Exit(2)


@pair_app.command("approve")
def pair_approve(
    code: str, config: ConfigOption = None, db: DbOption = None, actor: ActorOption = "cli"
) -> None:
    """Let in the account that was given CODE (it is told on its entrance)."""
    from bot.people import approve_pairing

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: approve_pairing(memory, code, actor))


@pair_app.command("deny")
def pair_deny(
    code: str, config: ConfigOption = None, db: DbOption = None, actor: ActorOption = "cli"
) -> None:
    """Refuse the account that was given CODE (told once, then silence)."""
    from bot.people import deny_pairing

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: deny_pairing(memory, code, actor))


@pair_app.command("list")
def pair_list(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Pairing codes waiting for approval."""
    cfg = get_config(config, db)

    from bot.people import pending_pairings

    found = with_memory(cfg, pending_pairings)
    if as_json:
        echo_json([vars(item) for item in found])
        return
    if not found:
        typer.echo("no pairing request is waiting")
    for item in found:
        minutes = max(0, round((item.expires_at - time.time()) / 60))
        name = f" ({item.display_name})" if item.display_name else ""
        typer.echo(f"{item.code}  {item.account}{name}  expires in {minutes} min")


people_app = typer.Typer(
    help="Everyone the persona knows, with their linked accounts; `revoke` takes access back.",
    invoke_without_command=True,
)
app.add_typer(people_app, name="people")


@people_app.callback()
def people(
    ctx: typer.Context,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Everyone the persona knows, with their linked accounts."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = get_config(config, db)

    from bot.people import list_people

    found = with_memory(cfg, list_people)
    if as_json:
        echo_json([person.model_dump(mode="json") for person in found])
        return
    for person in found:
        typer.echo(f"{person.id:>5} {person.name}: {', '.join(person.identities)}")


@people_app.command("revoke")
def people_revoke(
    account: Annotated[str, typer.Argument(help="ENTRANCE:ID")],
    config: ConfigOption = None,
    db: DbOption = None,
    actor: ActorOption = "cli",
) -> None:
    """Take back ACCOUNT's access (linked accounts too): told once, then silence."""
    from bot.people import revoke_access

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: revoke_access(memory, cfg, account, actor))


@people_app.command("allow")
def people_allow(
    account: Annotated[str, typer.Argument(help="ENTRANCE:ID")],
    config: ConfigOption = None,
    db: DbOption = None,
    actor: ActorOption = "cli",
) -> None:
    """Let ACCOUNT in without a code (also after a denial or a revocation)."""
    from bot.people import allow_access

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: allow_access(memory, cfg, account, actor))


@app.command()
def link(
    first: Annotated[str, typer.Argument(help="An account, ENTRANCE:ID.")],
    second: Annotated[str, typer.Argument(help="Another account, ENTRANCE:ID.")],
    config: ConfigOption = None,
    db: DbOption = None,
    actor: ActorOption = "cli",
) -> None:
    """Link two accounts to one person (privacy follows: each sees the other's DMs)."""
    from bot.people import link_accounts

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: link_accounts(memory, first, second, actor))


@app.command()
def unlink(
    account: Annotated[str, typer.Argument(help="ENTRANCE:ID")],
    config: ConfigOption = None,
    db: DbOption = None,
    actor: ActorOption = "cli",
) -> None:
    """Give an account a person of its own again."""
    from bot.people import unlink_account

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: unlink_account(memory, account, actor))
