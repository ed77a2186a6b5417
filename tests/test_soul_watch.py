"""The soul watcher follows the configured path, whatever happens to the folder, link or inode.

Each test runs a real watcher (inotify: bot/inotify.py) on a real memory.db. The
periodic look is pushed out to a minute in the tests of events, so what they see is the
watch following the path; the last test shows the periodic look catching what no watched
folder reports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import bot.soul
from bot.config import Config, SoulConfig
from bot.memory import Memory
from bot.soul import SoulWatcher, parse_soul
from bot.soul_admin import rollback_soul
from tests.conftest import SOUL_EXAMPLE
from tests.waiting import wait_until

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines

SOUL = SOUL_EXAMPLE.read_text(encoding="utf-8")
NO_PERIODIC_LOOK_S = 60.0  # longer than any wait below: only the watch can see a change
SEEN_S = 10.0


def soul_named(name: str) -> str:
    return SOUL.replace("Wren", name)


def active_is(memory: Memory, name: str) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        active = await memory.active_soul()
        return active is not None and active.name == name

    return check


@asynccontextmanager
async def watching(
    memory: Memory, path: Path, check_every_s: float = NO_PERIODIC_LOOK_S
) -> AsyncIterator[SoulWatcher]:
    watcher = SoulWatcher(memory, path, check_every_s=check_every_s)
    await watcher.start()
    try:
        await wait_until(watcher.ready.is_set, SEEN_S, "the watcher armed")
        yield watcher
    finally:
        await watcher.stop()


async def test_a_replaced_soul_folder_is_followed(
    memory: Memory, soul_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.soul")
    async with watching(memory, soul_file):
        assert await active_is(memory, "Wren")()
        folder = soul_file.parent
        folder.rename(folder.with_name("soul.old"))
        folder.mkdir()
        soul_file.write_text(soul_named("Kestrel"), encoding="utf-8")
        await wait_until(active_is(memory, "Kestrel"), SEEN_S, "the new folder's soul")

        # The watch moved to the new folder: a later edit there is seen too.
        soul_file.write_text(soul_named("Robin"), encoding="utf-8")
        await wait_until(active_is(memory, "Robin"), SEEN_S, "an edit in the new folder")

    active = await memory.active_soul()
    assert active is not None
    assert any(
        record.levelno == logging.INFO
        and str(soul_file) in record.getMessage()
        and f"version {active.id} is active (Robin)" in record.getMessage()
        for record in caplog.records
    ), caplog.text


def configmap(folder: Path, stamp: str, text: str) -> None:
    """Publish `text` the way the kubelet updates a ConfigMap volume: a new timestamped
    folder, then the `..data` link swapped atomically, then the old folder removed."""
    (folder / stamp).mkdir()
    (folder / stamp / "SOUL.md").write_text(text, encoding="utf-8")
    data = folder / "..data"
    previous = os.readlink(data) if data.is_symlink() else None
    (folder / "..data_tmp").symlink_to(stamp)
    os.replace(folder / "..data_tmp", data)
    if previous is not None:
        shutil.rmtree(folder / previous)
    if not (folder / "SOUL.md").is_symlink():
        (folder / "SOUL.md").symlink_to("..data/SOUL.md")


async def test_a_configmap_update_swapping_the_data_link_is_followed(
    memory: Memory, tmp_path: Path
) -> None:
    folder = tmp_path / "configmap"
    folder.mkdir()
    configmap(folder, "..2026_12_02_10_00_00.1", SOUL)
    async with watching(memory, folder / "SOUL.md"):
        assert await active_is(memory, "Wren")()
        configmap(folder, "..2026_12_02_10_05_00.2", soul_named("Kestrel"))
        await wait_until(active_is(memory, "Kestrel"), SEEN_S, "the swapped ConfigMap")
        configmap(folder, "..2026_12_02_10_10_00.3", soul_named("Robin"))
        await wait_until(active_is(memory, "Robin"), SEEN_S, "the second ConfigMap update")
    assert [v.name for v in await memory.soul_history()] == ["Robin", "Kestrel", "Wren"]


async def test_a_soul_folder_created_after_start_is_watched(memory: Memory, tmp_path: Path) -> None:
    path = tmp_path / "later" / "soul" / "SOUL.md"
    async with watching(memory, path):
        assert await memory.active_soul() is None
        [missing] = await memory.audit_log("soul.rejected")
        assert "does not exist" in str(missing.detail["reason"])

        path.parent.mkdir(parents=True)
        path.write_text(SOUL, encoding="utf-8")
        await wait_until(active_is(memory, "Wren"), SEEN_S, "the soul in the new folder")
        path.write_text(soul_named("Kestrel"), encoding="utf-8")
        await wait_until(active_is(memory, "Kestrel"), SEEN_S, "an edit in the new folder")
    # The missing file was reported once, not on every look.
    assert len(await memory.audit_log("soul.rejected")) == 1


async def test_the_periodic_look_catches_a_change_no_watched_folder_reports(
    memory: Memory, tmp_path: Path
) -> None:
    # SOUL.md -> ../shared/current/SOUL.md: swapping `current` happens in shared/, a folder
    # no watch covers (the watches are on soul/, its parent and shared/v1/).
    shared = tmp_path / "shared"
    for version, text in (("v1", SOUL), ("v2", soul_named("Kestrel"))):
        (shared / version).mkdir(parents=True)
        (shared / version / "SOUL.md").write_text(text, encoding="utf-8")
    (shared / "current").symlink_to("v1")
    path = tmp_path / "soul" / "SOUL.md"
    path.parent.mkdir()
    path.symlink_to("../shared/current/SOUL.md")
    async with watching(memory, path, check_every_s=0.2):
        assert await active_is(memory, "Wren")()
        (shared / "next").symlink_to("v2")
        os.replace(shared / "next", shared / "current")
        await wait_until(active_is(memory, "Kestrel"), SEEN_S, "the periodic look")


@pytest.mark.parametrize("without", ["no inotify", "no watch left"])
async def test_where_no_watch_can_be_armed_the_watcher_looks_every_second(
    memory: Memory, soul_file: Path, monkeypatch: pytest.MonkeyPatch, without: str
) -> None:
    if without == "no inotify":  # not Linux
        monkeypatch.setattr(bot.soul.Inotify, "open", classmethod(lambda cls: None))
    else:  # the user's inotify watches are used up (fs.inotify.max_user_watches)

        def add(self: bot.soul.Inotify, path: str, mask: int) -> None:
            raise OSError(28, f"cannot watch {path}: No space left on device", path)

        monkeypatch.setattr(bot.soul.Inotify, "add", add)
    async with watching(memory, soul_file):  # the periodic look a minute away
        assert await active_is(memory, "Wren")()
        soul_file.write_text(soul_named("Kestrel"), encoding="utf-8")
        await wait_until(active_is(memory, "Kestrel"), 3 * bot.soul.POLL_S, "a look")


async def test_a_save_in_several_writes_becomes_one_version(
    memory: Memory, soul_file: Path
) -> None:
    # An editor saving in place writes SOUL.md in pieces: the watcher waits for the folder
    # to be quiet, so the half-written file (valid on its own: its sections are complete)
    # never becomes a version.
    text = soul_named("Kestrel")
    half = text.index("## Boundaries")
    async with watching(memory, soul_file):
        versions = len(await memory.soul_history())
        with soul_file.open("w", encoding="utf-8") as out:
            out.write(text[:half] + "## Boundaries\n- brief\n")
            out.flush()
            await asyncio.sleep(bot.soul.SETTLE_S / 3)
            out.seek(0)
            out.write(text)
            out.truncate()
        await wait_until(active_is(memory, "Kestrel"), SEEN_S, "the save")
        await asyncio.sleep(2 * bot.soul.DEBOUNCE_S)
        assert len(await memory.soul_history()) == versions + 1


async def test_stopping_never_waits_for_the_periodic_look(memory: Memory, soul_file: Path) -> None:
    # The watch thread only returns on a change, its stop event or the periodic timeout; a
    # stop must end it at once, however it is cancelled, in whatever state.
    for _ in range(5):
        watcher = SoulWatcher(memory, soul_file, check_every_s=NO_PERIODIC_LOOK_S)
        await watcher.start()
        await wait_until(watcher.ready.is_set, SEEN_S, "the watcher armed")
        await asyncio.wait_for(watcher.stop(), 3)


async def test_a_look_overtaken_by_a_rollback_does_not_undo_it(
    memory: Memory, soul_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process's watcher reads SOUL.md (Robin) just before an admin rolls back to
    # Wren, and records what it read just after: the stale read must not become a version
    # over the rollback (CI saw it once in the e2e rollback test: v4 Robin after v3 Wren).
    config = Config(soul=SoulConfig(path=soul_file))
    async with watching(memory, soul_file):
        soul_file.write_text(soul_named("Robin"), encoding="utf-8")
        await wait_until(active_is(memory, "Robin"), SEEN_S, "Robin recorded")

    look_at = bot.soul._look_at
    read, go_on = threading.Event(), threading.Event()

    def held_look(path: Path, max_bytes: int) -> bot.soul._Look:
        look = look_at(path, max_bytes)
        if not read.is_set():
            read.set()
            go_on.wait(10)
        return look

    monkeypatch.setattr(bot.soul, "_look_at", held_look)
    # A watcher that last handled Wren: its first look reads Robin and is held there.
    late = SoulWatcher(memory, soul_file, check_every_s=NO_PERIODIC_LOOK_S)
    late._seen = "the key of Wren"
    looking = asyncio.create_task(late._check())
    await asyncio.to_thread(read.wait, 10)
    rolled = await rollback_soul(memory, config, 1, "admin")
    go_on.set()
    await looking

    versions = [(v.id, v.name, v.source) for v in await memory.soul_history()]
    assert versions == [(rolled.id, "Wren", "rollback"), (2, "Robin", "file"), (1, "Wren", "file")]
    assert (await memory.active_soul()) == rolled
    assert "Robin" not in soul_file.read_text(encoding="utf-8")


async def test_a_rollback_that_cannot_write_soul_md_changes_nothing(
    memory: Memory, soul_file: Path
) -> None:
    # Memory and the file change together: a version SOUL.md does not hold would be undone
    # by the next start's look at the file.
    config = Config(soul=SoulConfig(path=soul_file))
    async with watching(memory, soul_file):
        soul_file.write_text(soul_named("Robin"), encoding="utf-8")
        await wait_until(active_is(memory, "Robin"), SEEN_S, "Robin recorded")
    # The rollback writes a temporary file beside SOUL.md, then renames it over: a folder
    # in its place fails the write (even for root).
    (soul_file.parent / f".{soul_file.name}.tmp").mkdir()
    with pytest.raises(IsADirectoryError):
        await rollback_soul(memory, config, 1, "admin")
    assert [v.name for v in await memory.soul_history()] == ["Robin", "Wren"]
    assert await memory.audit_log("soul.rollback") == []
    assert "Robin" in soul_file.read_text(encoding="utf-8")


async def test_a_restart_does_not_make_an_older_soul_md_active_again(
    memory: Memory, soul_file: Path
) -> None:
    # Entrances on two hosts (PostgreSQL): a rollback on the other host wrote only its own
    # SOUL.md. This host's file, older than that decision, is a stale copy when its
    # processes start again, not an edit; an edit after it still counts.
    async with watching(memory, soul_file):
        assert await active_is(memory, "Wren")()
    robin = parse_soul(soul_named("Robin"))
    await memory.record_soul_version(
        text=robin.text, name=robin.name, sha256=robin.sha256, source="rollback", author="bo"
    )
    async with watching(memory, soul_file):
        assert await active_is(memory, "Robin")()
        assert [v.name for v in await memory.soul_history()] == ["Robin", "Wren"]
        soul_file.write_text(soul_named("Kestrel"), encoding="utf-8")
        await wait_until(active_is(memory, "Kestrel"), SEEN_S, "the edit after it recorded")
