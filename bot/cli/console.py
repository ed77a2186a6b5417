"""`mirror console`: the web console (serve it, its accounts, a new sign-in link).

Cheap to import: Starlette, uvicorn and argon2 load inside the commands.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.common import (
    ConfigOption,
    DbOption,
    app,
    fail,
    get_config,
    run_service,
    with_memory,
)

if TYPE_CHECKING:
    from bot.config import Config

console_app = typer.Typer(
    help="The web console: mirror view, coordinator queue, chat (see README: Console).",
    invoke_without_command=True,
)
user_app = typer.Typer(help="Console accounts.", no_args_is_help=True)
console_app.add_typer(user_app, name="user")
app.add_typer(console_app, name="console")

ROLE_HELP = "admin (everything), coordinator (decide items), viewer (watch; no private content)"


def _configured(config: Any, db: Any, host: str | None = None, port: int | None = None) -> Config:
    cfg = get_config(config, db)
    if host is not None:
        cfg.console.host = host
    if port is not None:
        cfg.console.port = port
    return cfg


async def _link(cfg: Config, memory: Any, user: str, role: Any) -> str:
    from bot.console.auth import mint_sign_in_link

    return await mint_sign_in_link(memory, cfg, user=user, role=role)


def print_sign_in_link(cfg: Config, *, user: str = "admin", role: str = "admin") -> str:
    """Mint a one-time sign-in link and print it (also what `mirror up` shows)."""
    link = with_memory(cfg, lambda memory: _link(cfg, memory, user, role))
    minutes = round(cfg.console.sign_in_link_minutes)
    typer.echo(f"console: {link}  (sign-in link for {user}, once, within {minutes} min)")
    return link


@console_app.callback()
def console(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help=r"Address to listen on (default: \[console] host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help=r"Port to listen on (default: \[console] port).")
    ] = None,
    link: Annotated[
        bool, typer.Option(help="Print a one-time sign-in link for the local admin.")
    ] = True,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Serve the web console (bound to 127.0.0.1 unless [console] says otherwise)."""
    if ctx.invoked_subcommand is not None:
        return
    from bot.console.auth import refuse_unsafe_bind

    cfg = _configured(config, db, host, port)
    refusal = refuse_unsafe_bind(cfg)
    if refusal is not None:
        raise fail(refusal)
    if link:
        print_sign_in_link(cfg)
    sys.stdout.flush()
    from bot.console.server import ConsoleFailed, ConsoleServer

    try:
        run_service(ConsoleServer(cfg))
    except ConsoleFailed:
        raise fail(
            f"the console could not listen on {cfg.console.host}:{cfg.console.port} "
            "(in use? set [console] port)"
        ) from None


@console_app.command("link")
def console_link(
    user: Annotated[str, typer.Option(help="Who the link signs in.")] = "admin",
    role: Annotated[str, typer.Option(help=ROLE_HELP)] = "admin",
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Print a new one-time sign-in link for a running console."""
    from bot.console.auth import ROLES

    if role not in ROLES:
        raise fail(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    print_sign_in_link(_configured(config, db), user=user, role=role)


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[str, typer.Option(help=ROLE_HELP)],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Create a console account (or change its role and password); the password is kept
    as an argon2 hash."""
    from bot.console.auth import ROLES, hash_password

    if role not in ROLES:
        raise fail(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or len(name) > 64 or any(ch.isspace() for ch in name):
        raise fail("a console user's name is 1-64 characters without spaces")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise fail("the password needs at least 8 characters")
    cfg = _configured(config, db)
    hashed = hash_password(password)
    new = with_memory(cfg, lambda memory: memory.add_console_user(name, role, hashed, actor="cli"))
    typer.echo(f"{'created' if new else 'updated'} console user {name} ({role})")


@user_app.command("list")
def user_list(config: ConfigOption = None, db: DbOption = None) -> None:
    """The console's accounts and their roles."""
    cfg = _configured(config, db)
    for found in with_memory(cfg, lambda memory: memory.console_users()):
        typer.echo(f"{found.name}\t{found.role}")


def console_children(cfg: Config, flags: list[str]) -> list[Any]:
    """What `mirror up` runs for `[console]`: the console as one more supervised process
    (not an entrance: alone it serves nobody), after printing its one-time sign-in link.
    Nothing when it is off; a line saying why when its config would be refused."""
    from bot.console.auth import refuse_unsafe_bind
    from bot.supervisor import ChildSpec, mirror_argv

    if not cfg.console.enabled:
        return []
    refusal = refuse_unsafe_bind(cfg)
    if refusal is not None:
        typer.echo(f"skipping the console: {refusal}", err=True)
        return []
    print_sign_in_link(cfg)
    return [ChildSpec("console", mirror_argv("console", "--no-link", *flags), entrance=False)]
