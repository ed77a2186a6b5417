"""The `mirror` command: one module per group of commands.

Each module in COMMANDS declares its commands on `bot.cli.common.app` when imported (and its
sub-app, e.g. `mirror soul …`, with `app.add_typer`). To add commands, write a module here
and add its name to COMMANDS; keep it cheap to import (heavy imports inside the command
functions: `mirror status` start-up time is measured by bench/startup.py). The order of
COMMANDS is the order of `mirror --help`.
"""

from __future__ import annotations

from importlib import import_module

from bot.cli.common import app

COMMANDS = (
    "status",
    "run",
    "coordinator",
    "people",
    "soul",
    "memory",
    "service",
)

for _module in COMMANDS:
    import_module(f"bot.cli.{_module}")

from bot.cli.run import LOCAL_PERSON  # noqa: E402  (for tests and scripts)


def main() -> None:
    app()


__all__ = ["COMMANDS", "LOCAL_PERSON", "app", "main"]
