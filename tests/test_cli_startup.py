"""`mirror status` starts fast (issue 18) and still says what it said: only the named
command's modules, no pydantic for the text of a config that passed validation before
(bot/cli/checked.py), Typer's option values without pydantic. Timing is bench/startup.py's."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.memory import Memory
from tests.conftest import ROOT, mirror_env, run_mirror


def imported(stderr: str) -> set[str]:
    """Top-level packages a process imported, from its `-X importtime` lines."""
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in stderr.splitlines()
        if "import time:" in line and line.count("|") == 2
    }
    assert "bot" in names, "no -X importtime output: the check would pass for nothing"
    return names


def status(config: Path, cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "status", "--config", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=mirror_env(XDG_CACHE_HOME=str(cache), **env),
    )


def status_importing(config: Path, cache: Path) -> tuple[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bot.cli", "status", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=mirror_env(XDG_CACHE_HOME=str(cache)),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, imported(done.stderr)


async def seed(db: Path) -> None:
    """A soul, a live instance and a stopped one: every line of the status has content."""
    async with Memory(db) as memory:
        await memory.record_soul_version(
            text="# Wren", name="Wren", sha256="ab" * 32, source="file"
        )
        await memory.register_instance("phone", "telegram", "host", 7, None)
        await memory.register_instance("laptop", "local", "host", 8, None)
        await memory.stop_instance("laptop")


def test_homes_name_the_modules_that_declare_each_command() -> None:
    from bot.cli import HOMES, app

    def modules(typer_app: Any) -> set[str]:
        found = {info.callback.__module__ for info in typer_app.registered_commands}
        for group in typer_app.registered_groups:
            found |= modules(group.typer_instance)
        return found

    declared = {
        (info.name or getattr(info.callback, "__name__", "").replace("_", "-")): {
            info.callback.__module__
        }
        for info in app.registered_commands
    }
    declared |= {group.name: modules(group.typer_instance) for group in app.registered_groups}
    homes = {name: {f"bot.cli.{module}" for module in found} for name, found in HOMES.items()}
    assert homes == declared, "bot.cli.HOMES must name each command's modules"


def test_a_command_imports_only_its_modules_and_help_lists_them_all() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['mirror', 'status', '--help']\n"
        "from bot.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('CLI', sorted(m for m in sys.modules if m.startswith('bot.cli.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "--config" in done.stdout, done.stderr
    assert "CLI ['bot.cli.common', 'bot.cli.status']" in done.stdout

    from bot.cli import HOMES

    listed = run_mirror("--help", COLUMNS="200").stdout
    assert all(f" {name} " in listed for name in HOMES), listed


def test_status_of_a_checked_config_says_the_same_without_pydantic(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    asyncio.run(seed(tmp_path / "memory.db"))
    config, cache = write_config(), tmp_path / "cache"
    first, first_imports = status_importing(config, cache)  # validated, then remembered
    again, again_imports = status_importing(config, cache)
    assert "pydantic" in first_imports and "pydantic" not in again_imports
    assert again == first
    assert "soul        v1 Wren sha256:abababababab" in again
    assert "  laptop         local     stopped last seen" in again
    assert "  phone          telegram  alive   last seen" in again
    report = json.loads(status(config, cache, "--json").stdout)
    assert report["soul"]["name"] == "Wren" and len(report["instances"]) == 2


def test_a_changed_config_is_validated_again(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config, cache = write_config(), tmp_path / "cache"
    assert status(config, cache).returncode == 0
    assert status(config, cache).returncode == 0  # from the cache
    config.write_text(config.read_text() + "\n[persona]\ntimezone = 'Mars/Olympus'\n")
    bad = status(config, cache)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"mirror: config error: {config}: persona.timezone: unknown timezone 'Mars/Olympus'"
    ]


def test_a_checked_config_is_trusted_only_while_the_code_is_unchanged(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config, cache = write_config(), tmp_path / "cache"
    assert status(config, cache).returncode == 0
    (cache_file,) = (cache / "mirroros" / "checked-configs").glob("*.json")
    entry = json.loads(cache_file.read_text())
    # Make the remembered verdict say something the config does not: were it trusted
    # blindly, status would show this other memory.db.
    elsewhere = tmp_path / "elsewhere.db"
    entry["memory"] = str(elsewhere)
    cache_file.write_text(json.dumps(entry))
    assert f"memory      {elsewhere} " in status(config, cache).stdout  # the cache is used

    stamp = next(stamp for stamp in entry["files"] if stamp[0].endswith("bot/config.py"))
    stamp[1] += 1  # bot/config.py "changed" since the config was checked
    cache_file.write_text(json.dumps(entry))
    shown = status(config, cache).stdout
    assert f"memory      {tmp_path / 'memory.db'} " in shown


def test_db_overrides_are_part_of_what_was_checked(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config, cache = write_config(), tmp_path / "cache"
    for _ in range(2):  # validated, then from the cache
        assert f"memory      {tmp_path / 'memory.db'} " in status(config, cache).stdout
        other = status(config, cache, "--db", str(tmp_path / "other.db")).stdout
        assert f"memory      {tmp_path / 'other.db'} " in other
        third = status(config, cache, MIRROR_DB=str(tmp_path / "third.db")).stdout
        assert f"memory      {tmp_path / 'third.db'} " in third


def test_a_cli_runner_in_a_test_process_never_uses_the_cache(
    write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["status", "--config", str(write_config())])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "cache").exists()


def test_the_status_lines_are_the_status_of_the_models(tmp_path: Path) -> None:
    from bot.memory.snapshot import read_status, read_status_lines

    asyncio.run(seed(tmp_path / "memory.db"))
    full = read_status(tmp_path / "memory.db", 60)
    lines = read_status_lines(tmp_path / "memory.db", 60)
    assert full.soul is not None and lines.soul is not None
    assert (lines.soul.id, lines.soul.name, lines.soul.sha256) == (
        full.soul.id,
        full.soul.name,
        full.soul.sha256,
    )
    fields = ("id", "entrance", "host", "pid", "last_seen", "status")
    assert [tuple(getattr(i, f) for f in fields) for i in lines.instances] == [
        tuple(getattr(i, f) for f in fields) for i in full.instances
    ]
    assert lines.alive == full.alive == {"laptop": False, "phone": True}
    counts = "memory_path schema_version messages open_intentions open_conflicts pending_outbox"
    assert [getattr(lines, f) for f in counts.split()] == [getattr(full, f) for f in counts.split()]


@pytest.mark.parametrize("annotation", [str, Path])
@pytest.mark.parametrize(
    "value",
    ["x", " spaced ", "a//b/", "/tmp", str(ROOT / "README.md"), "~", "a\udcffb", "\x00", "é", ""],
)
def test_option_values_without_pydantic_are_typers_own(annotation: type, value: str) -> None:
    from typer import core
    from typer._coercion import build_runtime_param, resolve_type_descriptor
    from typer.models import OptionInfo

    import bot.cli.common  # noqa: F401  (patches core.build_runtime_param)

    class Param:
        multiple, nargs, name, human_readable_name = False, 1, "x", "x"

    def coerced(runtime: Any) -> tuple[Any, ...]:
        try:
            found = runtime.coerce(value, param=Param(), ctx=None)
        except Exception as exc:  # the same error, in the same words
            return ("error", type(exc).__name__, str(exc))
        return (type(found), found)

    descriptor = resolve_type_descriptor(annotation, OptionInfo())
    assert core.build_runtime_param is not build_runtime_param
    assert coerced(core.build_runtime_param(descriptor)) == coerced(build_runtime_param(descriptor))


def test_the_default_config_path_is_the_configs() -> None:
    from bot.cli.checked import DEFAULT_CONFIG_PATH
    from bot.config import DEFAULT_CONFIG_PATH as CONFIGS

    assert DEFAULT_CONFIG_PATH == CONFIGS


def test_without_a_config_file_the_defaults_are_checked_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = run_mirror("status", cwd=tmp_path, XDG_CACHE_HOME=str(cache))
    again = run_mirror("status", cwd=tmp_path, XDG_CACHE_HOME=str(cache))
    assert first.returncode == again.returncode == 0, first.stderr
    assert again.stdout == first.stdout
    assert "memory      var/memory.db (schema " in again.stdout
    assert len(list((cache / "mirroros" / "checked-configs").glob("*.json"))) == 1


def test_only_the_newest_checked_configs_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.cli import checked
    from bot.config import load_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(checked, "ENTRIES", 2)
    for n in range(3):
        path = tmp_path / f"{n}.toml"
        path.write_text(f'[memory]\npath = "{tmp_path / f"{n}.db"}"\n')
        found = checked.checked_config(path, None, functools.partial(load_config, path))
        assert found.memory_path == tmp_path / f"{n}.db"
    assert len(list(checked.cache_folder().glob("*.json"))) == 2
    path = tmp_path / "2.toml"
    assert checked.checked_config(path, None, lambda: pytest.fail("not validated again")) == found
