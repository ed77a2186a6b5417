"""Every `mirror` command of the foundation, run as a real process on a temporary memory.db."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import run_mirror


def mirror(config: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_mirror(*args, "--config", str(config))


def test_help_does_not_import_litellm_or_sdks() -> None:
    code = (
        "import sys; sys.argv=['mirror','--help']\n"
        "from bot.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('litellm','discord','telegram','aioimaplib') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout


def test_status_json_on_a_new_database(write_config: Callable[..., Path], tmp_path: Path) -> None:
    result = mirror(write_config(), "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["memory_path"] == str(tmp_path / "memory.db")
    assert report["schema_version"] >= 1
    assert report["soul"] is None
    for key in ("instances", "messages", "open_intentions", "open_conflicts", "pending_outbox"):
        assert key in report


def test_soul_show_history_diff_rollback(
    write_config: Callable[..., Path], soul_file: Path
) -> None:
    config = write_config()
    shown = mirror(config, "soul", "show")
    assert shown.returncode == 0 and "Wren" in shown.stdout

    soul_file.write_text(soul_file.read_text().replace("Wren", "Kestrel"))
    assert "Kestrel" in mirror(config, "soul", "show").stdout

    history = json.loads(mirror(config, "soul", "history", "--json").stdout)
    assert [v["name"] for v in history] == ["Kestrel", "Wren"]

    diff = mirror(config, "soul", "diff", "1", "2")
    assert "-Wren" in diff.stdout and "+Kestrel" in diff.stdout

    rolled = mirror(config, "soul", "rollback", "1")
    assert rolled.returncode == 0, rolled.stderr
    assert "Wren" in soul_file.read_text()
    history = json.loads(mirror(config, "soul", "history", "--json").stdout)
    assert [v["name"] for v in history] == ["Wren", "Kestrel", "Wren"]
    assert history[0]["source"] == "rollback"

    assert mirror(config, "soul", "diff", "1", "99").returncode == 2
    assert mirror(config, "soul", "rollback", "99").returncode == 2


def test_soul_check(tmp_path: Path, soul_file: Path) -> None:
    good = run_mirror("soul", "check", str(soul_file))
    assert good.returncode == 0 and "valid" in good.stdout
    bad = tmp_path / "bad.md"
    bad.write_text("# Name\nX\n## Voice\nv\n")
    result = run_mirror("soul", "check", str(bad))
    assert result.returncode == 2 and "missing section '## Values'" in result.stderr


def test_memory_search_log_and_backup(write_config: Callable[..., Path], tmp_path: Path) -> None:
    import asyncio

    from bot.memory import Memory
    from bot.models import Author, Incoming

    async def seed() -> None:
        async with Memory(tmp_path / "memory.db") as memory:
            for n, text in enumerate(["the heron flew", "a quiet morning"]):
                await memory.record_incoming(
                    Incoming(
                        entrance="telegram",
                        conversation_id="7",
                        author=Author(external_id="7", display_name="Alice"),
                        text=text,
                        platform_message_id=str(n),
                    ),
                    "phone",
                )

    asyncio.run(seed())
    config = write_config()
    found = json.loads(mirror(config, "memory", "search", "heron", "--json").stdout)
    assert [m["text"] for m in found] == ["the heron flew"]
    assert found[0]["entrance"] == "telegram" and found[0]["instance_id"] == "phone"

    log = mirror(config, "memory", "log", "--limit", "1")
    assert log.returncode == 0 and "a quiet morning" in log.stdout and "heron" not in log.stdout
    assert json.loads(mirror(config, "memory", "log", "--json").stdout)[0]["person_name"] == "Alice"

    copy = tmp_path / "backup.db"
    assert mirror(config, "backup", str(copy)).returncode == 0
    assert mirror(config, "backup", str(copy)).returncode == 2  # never overwrites
    copied = run_mirror("memory", "log", "--json", "--db", str(copy))
    assert len(json.loads(copied.stdout)) == 2
