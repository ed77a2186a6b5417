"""The `mirror` command: one module per group of commands.

Each module in COMMANDS declares its commands on `bot.cli.common.app` when imported (and its
sub-app, e.g. `mirror soul …`, with `app.add_typer`). To add commands, write a module here,
add its name to COMMANDS and its commands to HOMES (tests/test_cli_startup.py checks that
HOMES matches what the modules declare); keep it cheap to import (heavy imports inside the
command functions: `mirror status` start-up time is measured by bench/startup.py). The order
of COMMANDS is the order of `mirror --help`.

`mirror NAME …` imports only the modules that declare NAME (HOMES); help, a mistyped name
and shell completion import them all, as does `from bot.cli import app` (PEP 562).
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.cli.common import app
    from bot.cli.run import LOCAL_PERSON

COMMANDS = (
    "setup",
    "status",
    "doctor",
    "run",
    "coordinator",
    "people",
    "soul",
    "memory",
    "pgmigrate",
    "recall",
    "service",
    "console",
)

# The modules that declare each command or group of commands (a group's subcommands may
# come from several modules: `mirror memory …`).
HOMES: dict[str, tuple[str, ...]] = {
    "setup": ("setup",),
    "status": ("status",),
    "doctor": ("doctor",),
    **dict.fromkeys(("chat", "up", "run", "entrances", "scheduler"), ("run",)),
    **dict.fromkeys(
        ("pending", "resolve", "dismiss", "intentions", "remind", "conflicts"), ("coordinator",)
    ),
    **dict.fromkeys(("link", "unlink", "pair", "people"), ("people",)),
    "soul": ("soul",),
    "backup": ("memory",),
    "memory": ("memory", "pgmigrate", "recall"),
    "logs": ("service",),
    "service": ("service",),
    "console": ("console",),
}


def _import(modules: tuple[str, ...] = COMMANDS) -> Any:
    """Import these command modules (in COMMANDS order); the app they declared on."""
    for name in COMMANDS:
        if name in modules:
            import_module(f"bot.cli.{name}")
    return import_module("bot.cli.common").app


def __getattr__(name: str) -> Any:
    """`app` with every command declared, `LOCAL_PERSON`, on first use (PEP 562)."""
    if name == "app":
        return _import()
    if name == "LOCAL_PERSON":
        return import_module("bot.cli.run").LOCAL_PERSON
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _only(app: Any, command: str | None) -> bool:
    """Keep only `command` in the app, when it names one: Typer turns every command into a
    click command at each start, and `mirror status` should not pay for forty of them.
    False when the app has no such command."""
    commands = [
        info
        for info in app.registered_commands
        if (info.name or (info.callback.__name__ if info.callback else "").replace("_", "-"))
        == command
    ]
    groups = [info for info in app.registered_groups if info.name == command]
    if not (commands or groups):
        return False
    app.registered_commands[:] = commands
    app.registered_groups[:] = groups
    return True


def _command_in(argv: list[str]) -> str | None:
    """The command named on a command line (after the global options), if any."""
    with_value = {"--config", "-c", "--db"}
    args = iter(argv)
    for arg in args:
        if arg in with_value:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def plain_run(argv: list[str]) -> dict[str, Any] | None:
    """The arguments of a `mirror run` command line that needs nothing from Typer (the
    global -v/--config/--db, then `run NAME` with --standby/--config/--db, each option
    spelled as `mirror up` and the service units write it), or None."""
    options: dict[str, Any] = {"verbose": False, "standby": False, "config": None, "db": None}
    entrance: str | None = None
    args = iter(argv)
    seen_run = False
    for arg in args:
        if arg in ("-v", "--verbose") and not seen_run:
            options["verbose"] = True
        elif arg in ("--config", "-c", "--db"):
            value = next(args, None)
            if value is None or value.startswith("-"):
                return None
            options["db" if arg == "--db" else "config"] = value
        elif arg == "--standby" and seen_run:
            options["standby"] = True
        elif arg == "run" and not seen_run:
            seen_run = True
        elif seen_run and entrance is None and not arg.startswith("-"):
            entrance = arg
        else:
            return None  # --help, --no-standby, a typo...: Typer says what it says
    if entrance is None:
        return None
    return {"entrance": entrance, **options}


def _app_for(command: str | None) -> Any:
    """The app to run for this command line: only the modules of a named command (and only
    that command in the app); all of them for help (no command), a mistyped command (its
    suggestions) and shell completion."""
    if command is None or "_MIRROR_COMPLETE" in os.environ:
        return _import()
    homes = HOMES.get(command)
    if homes is not None:
        app = _import(homes)
        if _only(app, command):
            return app
    app = _import()
    _only(app, command)
    return app


def main() -> None:
    plain = plain_run(sys.argv[1:])
    if plain is not None:  # an entrance or the scheduler, for days: no Typer
        from bot.cli import child

        sys.exit(child.main(plain))
    from bot.cli import common

    app = _app_for(_command_in(sys.argv[1:]))
    common.own_process = True
    app()


__all__ = ["COMMANDS", "HOMES", "LOCAL_PERSON", "app", "main", "plain_run"]
