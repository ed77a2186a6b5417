"""Where a `mirror` process's log goes: the log format, the rotating log file, the short
lines a person at a terminal sees, and the relay a supervisor sends its children's lines to.

Kept free of typer and pydantic: the supervisor of `mirror up` sets its logging up from
these alone once it has replaced itself with a lean process (bot/supervisor.py `main`).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# "[console] 2026-12-02 10:45:04,358 WARNING bot.soul: …", as `mirror up` relays a child.
_CHILD_PREFIX = re.compile(r"^(\[[\w-]+\] )\S+ \S+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


class AbovePrompt(logging.Handler):
    """Log records for a person at a terminal: one short line each, on stderr, above the
    chat's prompt when there is one (the details are in the log file)."""

    def __init__(self, log_file: Path, terminal: Any | None) -> None:
        super().__init__()
        self.log_file = log_file
        self.terminal = terminal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # A child's relayed line keeps its name, not its own date, level and logger.
            message = _CHILD_PREFIX.sub(r"\1", record.getMessage())
            text = f"{record.levelname.lower()}: {message}"
            if record.exc_info:
                text += f" (details in {self.log_file})"
            if self.terminal is not None:
                self.terminal.above_prompt(text)
            else:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


def log_file(path: Path, max_bytes: int, backups: int) -> logging.Handler | None:
    """The rotating log file handler ([logging] path), or None (said once) when the file
    cannot be opened."""
    from logging.handlers import RotatingFileHandler

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "cannot write the log to %s (%s); logging to stderr only", path, exc.strerror or exc
        )
        return None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def to_stderr(verbose: bool) -> None:
    """Every process's first handler: its records on stderr (DEBUG too with -v)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr
    )


def quiet_terminal(
    path: Path,
    max_bytes: int,
    backups: int,
    *,
    verbose: bool,
    terminal: Any | None = None,
    service: bool = False,
) -> logging.Logger | None:
    """Where this process's log goes, and the logger a supervisor relays its children's
    lines to (None: straight to stderr, as they come).

    In a terminal (stdin is a tty): to the rotating log file at `path`, and only warnings
    and errors (with -v, INFO too) on screen, above `terminal`'s prompt.
    Elsewhere, for a `service` (`mirror up` under systemd, in a pipe): to stderr as before
    and to the log file too, so `mirror logs` can read it; the children's lines keep their
    own format on stderr. Otherwise nothing changes (stderr only). Only the supervising
    process writes the file: its children log to stderr, which it relays, so no two
    processes ever rotate the same file."""
    root = logging.getLogger()
    if not sys.stdin.isatty():
        if not service:
            return None
        to_file = log_file(path, max_bytes, backups)
        if to_file is None:
            return None
        root.addHandler(to_file)
        relay = logging.getLogger("mirror.children")
        relay.propagate = False
        relay.setLevel(logging.DEBUG)
        as_they_come = logging.StreamHandler(sys.stderr)
        as_they_come.setFormatter(logging.Formatter("%(message)s"))
        relay.addHandler(to_file)  # first: a line the journal shows is in the file already
        relay.addHandler(as_they_come)
        return relay
    to_file = log_file(path, max_bytes, backups)
    if to_file is None:
        return None
    on_screen = AbovePrompt(path, terminal)
    on_screen.setLevel(logging.INFO if verbose else logging.WARNING)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(to_file)
    root.addHandler(on_screen)
    return logging.getLogger("bot.supervisor")
