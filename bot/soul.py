"""SOUL.md: parse and validate the persona's identity, version it in memory, watch the file.

The file is data edited by admins while everything runs. A valid change becomes a new
`soul_versions` row (memory is the source of truth for the active version); an invalid one
is rejected with the reason logged and audited, and the last good version stays active.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.memory import Memory
from bot.models import SoulVersion

log = logging.getLogger(__name__)

REQUIRED_SECTIONS = ("voice", "values", "boundaries")
DEFAULT_MAX_BYTES = 32 * 1024
_HEADING = re.compile(r"^(#{1,2})\s+(.+?)\s*#*\s*$")


class SoulError(ValueError):
    """Why a SOUL.md text is not a valid soul (one line)."""


@dataclass(frozen=True)
class Soul:
    """A parsed, valid SOUL.md."""

    name: str
    sections: dict[str, str]  # lower-cased heading -> body, in file order
    text: str
    sha256: str = field(repr=False)

    @property
    def voice(self) -> str:
        return self.sections["voice"]

    @property
    def values(self) -> str:
        return self.sections["values"]

    @property
    def boundaries(self) -> str:
        return self.sections["boundaries"]


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_soul(data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Soul:
    """Parse SOUL.md; raise SoulError naming what is missing or wrong."""
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
    except UnicodeEncodeError as exc:  # a lone surrogate, as JSON's "\ud800" decodes to
        raise SoulError(f"SOUL.md is not valid Unicode (character {exc.start})") from None
    if len(raw) > max_bytes:
        raise SoulError(f"SOUL.md is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SoulError(f"SOUL.md is not UTF-8 (byte {exc.start})") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise SoulError("SOUL.md is empty")

    sections: dict[str, list[str]] = {}
    current: str | None = None
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        heading = None if in_code else _HEADING.match(line)
        if heading:
            title = heading.group(2).strip().lower()
            if title in sections:
                raise SoulError(f"section '{heading.group(2).strip()}' appears twice")
            current = title
            sections[current] = []
        elif current is not None:
            sections[current].append(line)

    bodies = {title: "\n".join(lines).strip() for title, lines in sections.items()}
    if "name" not in bodies:
        raise SoulError("missing section '# Name'")
    name_lines = [line.strip() for line in bodies["name"].splitlines() if line.strip()]
    if not name_lines:
        raise SoulError("the name is empty: write it on the line after '# Name'")
    name = name_lines[0].strip("*_` ")
    if not name:
        raise SoulError("the name is empty: write it on the line after '# Name'")
    if len(name) > 64:
        raise SoulError(f"the name is {len(name)} characters; keep it under 64")
    for required in REQUIRED_SECTIONS:
        if required not in bodies:
            raise SoulError(f"missing section '## {required.capitalize()}'")
        if not bodies[required]:
            raise SoulError(f"section '## {required.capitalize()}' is empty")
    return Soul(name=name, sections=bodies, text=text, sha256=sha256_of(text))


def soul_from_version(version: SoulVersion) -> Soul:
    return parse_soul(version.text, max_bytes=max(DEFAULT_MAX_BYTES, len(version.text) * 4))


async def read_soul_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Soul:
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise SoulError(f"{path} does not exist") from None
    except OSError as exc:
        raise SoulError(f"{path} is unreadable: {exc.strerror}") from None
    return parse_soul(data, max_bytes=max_bytes)


async def sync_soul_file(
    memory: Memory, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, actor: str = "file"
) -> SoulVersion | None:
    """Record the file's content as the active soul if it is valid and new.

    Returns the version now active (None when the file is invalid and memory has none yet).
    """
    try:
        soul = await read_soul_file(path, max_bytes)
    except SoulError as exc:
        log.error("SOUL.md rejected, keeping the active version: %s", exc)
        await memory.audit(actor, "soul.rejected", str(path), reason=str(exc))
        return await memory.active_soul()
    version, created = await memory.record_soul_version(
        text=soul.text, name=soul.name, sha256=soul.sha256, source="file", author=actor
    )
    if created:
        log.info("soul: version %d is active (%s)", version.id, version.name)
    return version


async def write_soul_file(path: Path, text: str) -> None:
    """Replace the file atomically (watchers never see a half-written soul)."""

    def write() -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)

    await asyncio.to_thread(write)


class SoulWatcher:
    """Watches SOUL.md and records each valid save as a new version (owned task)."""

    def __init__(self, memory: Memory, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.memory = memory
        self.path = path.resolve()
        self.max_bytes = max_bytes
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await sync_soul_file(self.memory, self.path, max_bytes=self.max_bytes)
        self._task = asyncio.create_task(self._watch(), name="soul-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        from watchfiles import awatch

        directory = self.path.parent
        target = str(self.path)

        def relevant(_change: object, changed: str) -> bool:
            return changed == target

        while True:
            try:
                self.ready.set()
                async for _changes in awatch(
                    directory, watch_filter=relevant, debounce=200, step=50, recursive=False
                ):
                    await sync_soul_file(self.memory, self.path, max_bytes=self.max_bytes)
            except FileNotFoundError:
                log.error("not watching SOUL.md: folder %s does not exist", directory)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("soul watcher failed; restarting it")
                await asyncio.sleep(1)
