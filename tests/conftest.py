"""Shared fixtures: a temporary memory.db, a config written to disk, and the `mirror` command."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.memory import Memory
from tests.pg import memory_location, parametrize_engines, pg_cluster, pg_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SOUL_EXAMPLE = ROOT / "soul" / "SOUL.md"

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# `mirror status` remembers checked configs under $XDG_CACHE_HOME (bot/cli/checked.py): the
# tests' `mirror` processes keep theirs in a folder of this run, not in the user's ~/.cache.
_CACHE = tempfile.TemporaryDirectory(prefix="mirror-tests-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE.name


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_engines: each test using `memory` runs on SQLite and PostgreSQL"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_engines(metafunc)


@pytest.fixture
async def memory(memory_location: Path | str) -> AsyncIterator[Memory]:  # noqa: F811
    """An open memory: a SQLite file, or on both engines in a `both_engines` module."""
    store = Memory(memory_location)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def soul_file(tmp_path: Path) -> Path:
    path = tmp_path / "soul" / "SOUL.md"
    path.parent.mkdir()
    shutil.copy(SOUL_EXAMPLE, path)
    return path


def sqlite_memory_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A SQLite memory.db made by the first `version` schema files only (an older memory,
    to fill and then upgrade by opening it), open in autocommit."""
    from bot.memory.database import schema_files, split_statements

    conn = sqlite3.connect(path, isolation_level=None)
    for number, file in schema_files()[:version]:
        for statement in split_statements(file.read_text(encoding="utf-8")):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    return conn


@pytest.fixture
def write_config(
    tmp_path: Path,
    soul_file: Path,
    memory_location: Path | str,  # noqa: F811
) -> Callable[..., Path]:
    """Write a mirror.toml for this test: memory (in tmp_path, or PostgreSQL in a
    `both_engines` module) and soul in tmp_path, plus extra TOML. On PostgreSQL the log
    file goes to tmp_path too: by default it is var/log/mirror.log under the working
    directory, the checkout's own, which `mirror logs` reads."""

    def write(extra: str = "", *, name: str = "mirror.toml") -> Path:
        path = tmp_path / name
        logging = ""
        if isinstance(memory_location, str) and "[logging]" not in extra:
            logging = f'[logging]\npath = "{tmp_path / "log" / "mirror.log"}"\n\n'
        path.write_text(
            f'[memory]\npath = "{memory_location}"\n\n[soul]\npath = "{soul_file}"\n\n'
            + logging
            + extra,
            encoding="utf-8",
        )
        return path

    return write


def mirror_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MIRROR_") and key not in {"PYTEST_CURRENT_TEST"}
    }
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_mirror(
    *args: str, cwd: Path | None = None, input: str | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real `mirror` command in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd or ROOT,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=mirror_env(**env),
    )
