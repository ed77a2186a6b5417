"""The `mirror` command: one module per group of commands.

Each module in COMMANDS declares its commands on `bot.cli.common.app` when imported (and its
sub-app, e.g. `mirror soul …`, with `app.add_typer`). To add commands, write a module here
and add its name to COMMANDS; keep it cheap to import (heavy imports inside the command
functions: `mirror status` start-up time is measured by bench/startup.py). The order of
COMMANDS is the order of `mirror --help`.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

from bot.cli.common import app

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

for _module in COMMANDS:
    import_module(f"bot.cli.{_module}")

from bot.cli.run import LOCAL_PERSON  # noqa: E402  (for tests and scripts)


def _only(command: str | None) -> None:
    """Keep only `command` in the app, when it names one: Typer turns every command into a
    click command at each start, and `mirror status` should not pay for forty of them. Help
    (no command), a mistyped command (its suggestions) and shell completion keep them all."""
    if command is None or "_MIRROR_COMPLETE" in os.environ:
        return
    commands = [
        info
        for info in app.registered_commands
        if (info.name or (info.callback.__name__ if info.callback else "").replace("_", "-"))
        == command
    ]
    groups = [info for info in app.registered_groups if info.name == command]
    if commands or groups:
        app.registered_commands[:] = commands
        app.registered_groups[:] = groups


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


def main() -> None:
    _only(_command_in(sys.argv[1:]))
    app()


__all__ = ["COMMANDS", "LOCAL_PERSON", "app", "main"]
