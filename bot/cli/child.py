"""`mirror run NAME`, the command of a process that runs for days, without Typer.

`mirror up` starts each entrance and the scheduler as `mirror run NAME [--standby]
[--config PATH] [--db PATH]`, and a service unit runs the same line. Typer is about 30
modules (its click core included) and 1 MiB that such a process would keep resident after
one parse (bench/lean.py), so `bot.cli.main` hands exactly these command lines here
(`bot.cli.plain_run`; anything else, help included, still goes through Typer), and
`mirror run` under Typer calls the same `run_child`: one implementation, two doors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as bot/cli/common.py


class Refused(Exception):
    """Why the process cannot run: one line on stderr, then this exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def run_child(entrance: str, *, standby: bool, config: Path | None, db: Path | None) -> None:
    """Run one entrance (or the scheduler) in this process until it is asked to stop.
    Raises Refused when it cannot."""
    from bot.heap import limit_arenas

    limit_arenas()  # before any thread starts: a long-running process
    from bot.config import ConfigError, load_config

    try:
        cfg = load_config(config, db=db)
    except ConfigError as exc:
        raise Refused(f"config error: {exc}") from None
    cfg.standby = standby
    if entrance == "scheduler":
        from bot.scheduler import Scheduler

        serve(Scheduler(cfg))
        return
    from bot.entrance import EntranceFailure, UnknownEntrance, load_entrance, manifest

    try:
        found = manifest(entrance)
    except UnknownEntrance as exc:
        raise Refused(f"{exc}, scheduler") from None
    if found.terminal:
        raise Refused(f"the {entrance} entrance runs in a terminal: use `mirror chat`")
    if found.hosted:
        raise Refused(f"the {entrance} entrance runs inside the console: use `mirror console`")
    secret = found.secret() if found.secret_env is not None else ""
    if not secret:
        raise Refused(f"{entrance}: set {found.secret_env} in the environment or .env")
    try:
        serve(load_entrance(entrance, cfg, secret))
    except EntranceFailure as exc:
        raise Refused(f"{entrance}: {exc}") from None


def serve(service: Any) -> None:
    """Run an entrance or the scheduler until it ends or SIGINT/SIGTERM/SIGHUP asks it to
    stop (bot/service_loop.py); memory that cannot be opened is a Refused."""
    import asyncio

    from bot.memory import MemoryDbError
    from bot.service_loop import serve_until_stopped

    try:
        asyncio.run(serve_until_stopped(service))
    except MemoryDbError as exc:
        raise Refused(str(exc)) from None


def main(arguments: dict[str, Any]) -> int:
    """`mirror run` without Typer: the exit code."""
    from bot.log_setup import to_stderr

    to_stderr(arguments["verbose"])
    try:
        run_child(
            arguments["entrance"],
            standby=arguments["standby"],
            config=_path(arguments["config"]),
            db=_path(arguments["db"]),
        )
    except Refused as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return 0


def _path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None
