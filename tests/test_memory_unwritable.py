"""Memory that cannot be written — a read-only disk, a full disk — is one line and exit 2
for every command and process, with no hang and no traceback.

The disks are real: a small tmpfs, remounted read-only or filled up. Mounting needs root
(CI runs as root); elsewhere these tests are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_mirror

COMMANDS = [
    ["chat"],
    ["run", "scheduler"],
    ["up", "--chat"],
    ["soul", "show"],
    ["link", "telegram:1", "discord:2"],
    ["resolve", "1", "A"],
    ["memory", "log"],
]


def mount(path: Path, *options: str) -> None:
    subprocess.run(["mount", *options, path], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mount(disk, "-t", "tmpfs", "-o", "size=2m", "tmpfs")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {exc}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", disk], check=False, capture_output=True)


def made_memory(disk: Path) -> Path:
    db = disk / "memory.db"
    assert run_mirror("status", MIRROR_DB=str(db)).returncode == 0
    return db


def assert_one_clean_line(db: Path, what: str) -> None:
    for command in COMMANDS:
        result = run_mirror(*command, MIRROR_DB=str(db), input="hello\n", timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert lines[-1].startswith(f"mirror: cannot open {db}: {what}"), (command, lines)


def test_a_read_only_disk_is_one_line_and_exit_2_everywhere(small_disk: Path) -> None:
    db = made_memory(small_disk)
    mount(small_disk, "-o", "remount,ro")
    assert_one_clean_line(db, "")


def test_a_full_disk_is_one_line_and_exit_2_everywhere(small_disk: Path) -> None:
    db = made_memory(small_disk)
    filler = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(filler, b"\0" * 4096):
            pass
    except OSError:
        pass  # the disk is full
    finally:
        os.close(filler)
    assert_one_clean_line(db, "")
