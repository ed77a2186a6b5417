"""SOUL.md: parse and validate the persona's identity, version it in memory, watch the file.

The file is data edited by admins while everything runs. A valid change becomes a new
`soul_versions` row (memory is the source of truth for the active version); an invalid one
is rejected with the reason logged and audited, and the last good version stays active. The
watcher follows the configured path, never an inode: the folder may be replaced or created
late, and SOUL.md may be a symlink whose target is swapped (a Kubernetes ConfigMap).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bot.inotify import FOLDER_CHANGES, IN_ONLYDIR, Event, Inotify
from bot.memory import Memory
from bot.models import SoulVersion

log = logging.getLogger(__name__)

REQUIRED_SECTIONS = ("voice", "values", "boundaries")
DEFAULT_MAX_BYTES = 32 * 1024
_HEADING = re.compile(r"^(#{1,2})\s+(.+?)\s*#*\s*$")


class SoulError(ValueError):
    """Why a SOUL.md text is not a valid soul (one line)."""


class StaleRead(Exception):
    """SOUL.md changed between reading it and recording what was read: read it again."""


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


def _read_soul_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; a file over the limit is refused without reading it all."""
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
            if len(data) > max_bytes:
                size = os.fstat(file.fileno()).st_size
                raise SoulError(f"SOUL.md is {size} bytes; the limit is {max_bytes}")
    except FileNotFoundError:
        raise SoulError(f"{path} does not exist") from None
    except OSError as exc:
        raise SoulError(f"{path} is unreadable: {exc.strerror}") from None
    return data


async def read_soul_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Soul:
    data = await asyncio.to_thread(_read_soul_bytes, path, max_bytes)
    return parse_soul(data, max_bytes=max_bytes)


async def sync_soul_file(
    memory: Memory, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, actor: str = "file"
) -> SoulVersion | None:
    """Record the file's content as the active soul if it is valid and new.

    Returns the version now active (None when the file is invalid and memory has none yet).
    """
    while True:
        try:
            content: bytes | SoulError = await asyncio.to_thread(_read_soul_bytes, path, max_bytes)
        except SoulError as exc:
            content = exc
        with contextlib.suppress(StaleRead):
            return await _record_soul(memory, path, content, max_bytes=max_bytes, actor=actor)


async def _record_soul(
    memory: Memory,
    path: Path,
    content: bytes | SoulError,
    *,
    max_bytes: int,
    actor: str,
    changed: bool = False,
) -> SoulVersion | None:
    """Make `content` (read from `path`) the active soul, or log and audit why it is not.

    `changed`: the caller saw the file change, so the outcome is logged even when another
    process recorded the same version first. Without it (a first look: a process starting,
    `mirror soul show`), a file that holds an earlier version's text and was last written
    before the active version was recorded is an older copy, not an edit, and is not
    recorded: with entrances on several hosts (PostgreSQL) a rollback or a console save
    writes only its own host's SOUL.md, and another host's restart would otherwise make
    its old file the soul again.
    Raises StaleRead, recording nothing, when the file no longer holds `content` by the
    time memory is written: a rollback or a console edit may have replaced it (under the
    same write lock) since it was read, and the stale content must not undo that."""
    reason = content if isinstance(content, SoulError) else None
    soul = None
    if not isinstance(content, SoulError):
        try:
            soul = parse_soul(content, max_bytes=max_bytes)
        except SoulError as exc:
            reason = exc
    if soul is None:
        active = await memory.active_soul()
        kept = f"version {active.id}" if active is not None else "no version yet"
        log.warning("soul: %s rejected, keeping %s: %s", path, kept, reason)
        await memory.audit(actor, "soul.rejected", str(path), reason=str(reason))
        return active
    if not changed:
        active = await memory.active_soul()
        if active is not None and active.sha256 != soul.sha256:
            earlier = await memory.soul_version_with_sha(soul.sha256)
            with contextlib.suppress(OSError):
                written = os.stat(path).st_mtime
                if earlier is not None and written < active.created_at.timestamp():
                    log.warning(
                        "soul: %s holds version %d (%s), older than the active version %d"
                        " (%s, %s): keeping version %d (to make the file's text active"
                        " again: /soul rollback %d, or mirror soul rollback %d)",
                        path,
                        earlier.id,
                        earlier.name,
                        active.id,
                        active.name,
                        active.source,
                        active.id,
                        earlier.id,
                        earlier.id,
                    )
                    return active
    read = content

    def still_there() -> None:
        try:
            now = _read_soul_bytes(path, max_bytes)
        except SoulError:
            raise StaleRead from None
        if now != read:
            raise StaleRead

    version, created = await memory.record_soul_version(
        text=soul.text,
        name=soul.name,
        sha256=soul.sha256,
        source="file",
        author=actor,
        inside=still_there,
    )
    if created or changed:
        log.info("soul: %s: version %d is active (%s)", path, version.id, version.name)
    return version


def write_soul_file(path: Path, text: str) -> None:
    """Replace the file atomically (watchers never see a half-written soul). Blocking: run
    it as `record_soul_version(inside=…)`, so memory and the file change together."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


@dataclass(frozen=True)
class _Look:
    """One look at the configured path: what it holds, and where its next change will show."""

    content: bytes | SoulError
    key: str  # equal keys mean nothing changed: the content's sha256, or the reason
    target: str  # the path with every symlink resolved
    # Folders to watch, each with its identity (device, inode): a replaced folder has a new
    # identity under the same path, and the watch must move to it.
    folders: tuple[tuple[str, int, int], ...]


def _look_at(path: Path, max_bytes: int) -> _Look:
    """Read the path as it is now, following whatever folder and symlinks it names today."""
    content: bytes | SoulError
    try:
        data = _read_soul_bytes(path, max_bytes)
        content, key = data, hashlib.sha256(data).hexdigest()
    except SoulError as exc:
        content, key = exc, f"unreadable: {exc}"
    target = Path(os.path.realpath(path))
    return _Look(content, key, str(target), _folders_to_watch(path, target))


def _folders_to_watch(path: Path, target: Path) -> tuple[tuple[str, int, int], ...]:
    folder = path.parent
    nearest = folder  # a folder created after start shows up in its nearest existing ancestor
    while not nearest.is_dir() and nearest != nearest.parent:
        nearest = nearest.parent
    candidates = [nearest]
    # A folder moved or deleted reports itself gone in its own watch (then a look re-arms on
    # its successor), so its parent, maybe a busy project root, is not watched: noise there
    # would cost ~1 % of a core (bench/soul_watcher.py). Only a symlinked folder, retargeted
    # where the link lives, needs that parent.
    if nearest == folder and folder.is_symlink():
        candidates.append(folder.parent)
    # A symlinked SOUL.md edited in place changes in its target's folder, not in ours.
    candidates.append(target.parent)
    folders: list[tuple[str, int, int]] = []
    for candidate in candidates:
        try:
            stat = candidate.stat()
        except OSError:
            continue  # a dangling symlink's target folder: nothing to watch there
        if not any((dev, ino) == (stat.st_dev, stat.st_ino) for _, dev, ino in folders):
            folders.append((str(candidate), stat.st_dev, stat.st_ino))
    return tuple(folders)


# Without inotify (not Linux, or the user's watches used up) the watcher looks this often.
POLL_S = 1.0
# A look waits until the watched folders are quiet this long (an editor's save is several
# changes: write a temporary file, rename it over SOUL.md), at most DEBOUNCE_S.
SETTLE_S = 0.05
DEBOUNCE_S = 0.2


class SoulWatcher:
    """Follows the configured SOUL.md path and records each valid save as a new version.

    It watches (inotify: bot/inotify.py) the soul's folder (or, until it exists, its
    nearest existing ancestor) and the folder of the symlink's target, and moves the watch
    whenever a look at the path shows that one of them was replaced, created or retargeted.
    A look reads the file (at most `max_bytes`) and acts only when its hash differs from the
    last one handled, so noise in the watched folders costs a read, never a version or an
    audit row. Every `check_every_s` it looks anyway: a change no event reported (a save
    landing while the watch moves, a symlink swapped higher up the path, a network
    filesystem) is still picked up.
    """

    def __init__(
        self,
        memory: Memory,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        check_every_s: float = 5.0,
    ):
        self.memory = memory
        # Absolute, never resolved: the symlinks and folders it names are followed anew on
        # every look.
        self.path = Path(os.path.abspath(path))
        self.max_bytes = max_bytes
        self.check_every_s = check_every_s
        self._seen: str | None = None  # the key of the last look handled
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await self._check()
        self._task = asyncio.create_task(self._watch(), name="soul-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _check(self) -> _Look:
        """Look at the path; record (or reject) its content if it changed since last time."""
        while True:
            look = await asyncio.to_thread(_look_at, self.path, self.max_bytes)
            if look.key == self._seen:
                return look
            try:
                await _record_soul(
                    self.memory,
                    self.path,
                    look.content,
                    max_bytes=self.max_bytes,
                    actor="file",
                    changed=self._seen is not None,  # the first look at start is no change
                )
            except StaleRead:
                continue  # replaced since the look (a rollback, say): look again
            self._seen = look.key  # only once handled: a failed write is retried
            return look

    async def _watch(self) -> None:
        while True:
            try:
                look = await self._check()
                await self._follow(look)
            except asyncio.CancelledError:
                raise
            except FileNotFoundError:
                # A folder vanished between the look and the watch: look again.
                await asyncio.sleep(0.05)
            except Exception:
                log.exception("soul watcher failed; restarting it")
                await asyncio.sleep(1)

    async def _follow(self, look: _Look) -> None:
        """Watch the folders `look` named, looking again on each change that concerns
        SOUL.md and every `check_every_s`; return once a look names other folders."""
        loop = asyncio.get_running_loop()
        queue = Inotify.open()
        if queue is None:
            await self._poll(look)
            return
        try:
            for folder, _, _ in look.folders:
                try:
                    queue.add(folder, FOLDER_CHANGES | IN_ONLYDIR)
                except FileNotFoundError:
                    raise  # gone since the look: `_watch` looks again
                except OSError as exc:  # the user's inotify watches used up, say
                    log.warning("soul: %s; looking every %.0f s instead", exc, POLL_S)
                    await self._poll(look)
                    return
            log.debug("soul: watching %s in %s", self.path, [f for f, _, _ in look.folders])
            # A look once the watches are armed sees whatever was saved while none was
            # (a folder created and filled at once); every later save is an event.
            latest = await self._check()
            self.ready.set()
            looked_at = loop.time()
            while latest.folders == look.folders:
                look = latest
                due_in = self.check_every_s - (loop.time() - looked_at)
                changes = await queue.wait(due_in)
                if queue.closed:
                    return  # the caller arms a new queue
                if changes:
                    changes += await self._settle(queue)
                due = loop.time() - looked_at >= self.check_every_s
                if changes and not due and not self._concerns(changes, look):
                    continue  # something else in a watched folder changed
                latest = await self._check()
                looked_at = loop.time()
            # A folder was replaced, created or retargeted: the caller re-arms.
        finally:
            queue.close()

    async def _settle(self, queue: Inotify) -> list[Event]:
        """The rest of a burst of changes (an editor's save is several): until the folders
        are quiet for SETTLE_S, at most DEBOUNCE_S, so a look reads the whole save."""
        loop = asyncio.get_running_loop()
        end = loop.time() + DEBOUNCE_S
        more: list[Event] = []
        while (left := end - loop.time()) > 0:
            burst = await queue.wait(min(SETTLE_S, left))
            if not burst:
                break
            more += burst
        return more

    async def _poll(self, look: _Look) -> None:
        """No watch can be armed here (no inotify, or none left): a look every POLL_S (or
        `check_every_s`, if sooner) until a look names other folders."""
        log.debug("soul: no watch here, looking at %s every %.1f s", self.path, POLL_S)
        self.ready.set()
        while True:
            await asyncio.sleep(min(POLL_S, self.check_every_s))
            latest = await self._check()
            if latest.folders != look.folders:
                return

    def _concerns(self, changes: Iterable[Event], look: _Look) -> bool:
        """Whether a change may be one of SOUL.md: in its folder, to a folder on its path,
        or to the symlink's target (or any, when the queue overflowed)."""
        folder = str(self.path.parent)
        path = str(self.path)
        for change in changes:
            changed = change.path
            if (
                change.overflow
                or changed == look.target
                or os.path.dirname(changed) == folder
                or path.startswith(changed.rstrip(os.sep) + os.sep)
            ):
                return True
        return False
