"""Reading MirrorOS's log file and its rotated copies, for `mirror logs`.

A record starts with the log format's timestamp ("2026-12-02 08:46:20,123 LEVEL name: …");
lines that do not (a traceback) belong to the record before them. `mirror up` writes its
children's lines prefixed with their name ("[telegram] …"), which is what `--entrance`
matches (or a logger under `adapters.<name>`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

_STAMP = re.compile(r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,\d+)? (?P<level>[A-Z]+) ")
_AGO = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class BadSince(ValueError):
    """--since was neither a duration (10m, 2h, 1d) nor a date (2026-12-01[ 08:00])."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `1d`, `1w` ago, or a date/time (local clock of the log, naive)."""
    now = now or datetime.now()
    text = text.strip()
    if match := _AGO.match(text):
        return now - timedelta(seconds=float(match["n"]) * _UNITS[match["unit"]])
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise BadSince(
            f"--since {text!r}: give a duration (30s, 10m, 2h, 1d, 1w) or a date "
            "(2026-12-01 or 2026-12-01T08:00)"
        ) from None
    return found.astimezone().replace(tzinfo=None) if found.tzinfo else found


def log_files(path: Path) -> list[Path]:
    """The log and its rotated copies, oldest first (mirror.log.3, .2, .1, mirror.log)."""
    rotated = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)]
    return files + ([path] if path.exists() else [])


@dataclass(frozen=True)
class Filter:
    since: datetime | None = None
    entrance: str | None = None
    level: str = "DEBUG"

    def keeps(self, record: str) -> bool:
        match = _STAMP.match(record)
        if match is None:
            return self.since is None and self.entrance is None
        if self.since is not None:
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S")
            if at < self.since:
                return False
        if LEVELS.index(_level(record, match["level"])) < LEVELS.index(self.level):
            return False
        if self.entrance is not None:
            name = re.escape(self.entrance)
            if not re.search(rf"(: \[{name}\] |\badapters\.{name}\b)", record):
                return False
        return True


def _level(record: str, own: str) -> str:
    """The level of the line a child logged, when `mirror up` relayed it; else its own."""
    relayed = re.search(r": \[[\w-]+\] \S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", record)
    level = relayed.group(1) if relayed else own
    return level if level in LEVELS else "WARNING"


def records(lines: Iterator[str]) -> Iterator[str]:
    """Group lines into records (a record's continuation lines joined to it)."""
    current: list[str] = []
    for line in lines:
        line = line.rstrip("\n")
        if _STAMP.match(line) and current:
            yield "\n".join(current)
            current = []
        current.append(line)
    if current:
        yield "\n".join(current)


def read(path: Path, keep: Filter) -> Iterator[str]:
    for file in log_files(path):
        with file.open(encoding="utf-8", errors="replace") as handle:
            yield from (record for record in records(handle) if keep.keeps(record))


def follow(path: Path, keep: Filter, *, poll_s: float = 0.5) -> Iterator[str]:
    """New records as they are written, across rotation (runs until interrupted)."""
    handle = None
    inode = None
    pending = ""
    while True:
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        if stat is not None and (handle is None or stat.st_ino != inode):
            if handle is not None:  # rotated: finish the old file first
                pending += handle.read()
                handle.close()
            handle = path.open(encoding="utf-8", errors="replace")
            if inode is None:  # first open: start at the end, like tail -f
                handle.seek(0, 2)
            inode = stat.st_ino
        if handle is not None:
            pending += handle.read()
        if "\n" in pending:
            complete, pending = pending.rsplit("\n", 1)
            for record in records(iter(complete.split("\n"))):
                if keep.keeps(record):
                    yield record
        else:
            time.sleep(poll_s)
