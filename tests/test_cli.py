"""Every `mirror` command of the foundation, run as a real process on a temporary memory.db."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

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


def test_chat_on_the_offline_brain_answers_without_importing_litellm(
    write_config: Callable[..., Path],
) -> None:
    """A real `mirror chat --jsonl` run; at exit it reports whether litellm was imported."""
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps({'type': 'modules', "
        "'litellm': 'litellm' in sys.modules}), flush=True))\n"
        f"sys.argv = ['mirror', 'chat', '--jsonl', '--config', {str(write_config())!r}]\n"
        "from bot.cli import main\n"
        "main()\n"
    )
    import subprocess

    from tests.conftest import ROOT, mirror_env

    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        input="what is your name?\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=mirror_env(),
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    [reply] = [line for line in lines if line["type"] == "reply"]
    assert "Wren" in reply["text"] and reply["model"] == "mirror/offline"
    assert lines[-1] == {"type": "modules", "litellm": False}


def test_the_terminal_person_is_coordinator_and_admin_in_the_shipped_config(
    tmp_path: Path, soul_file: Path
) -> None:
    """`mirror chat` with the shipped config and no --as: /pending and /soul … are answered,
    not refused."""
    from tests.conftest import ROOT

    shipped = (ROOT / "config" / "mirror.toml").read_text(encoding="utf-8")
    config = tmp_path / "mirror.toml"
    config.write_text(
        shipped.replace('"var/memory.db"', f'"{tmp_path / "memory.db"}"').replace(
            '"soul/SOUL.md"', f'"{soul_file}"'
        ),
        encoding="utf-8",
    )
    done = run_mirror("chat", "--jsonl", "--config", str(config), input="/pending\n/soul history\n")
    assert done.returncode == 0, done.stderr
    replies = [json.loads(line)["text"] for line in done.stdout.splitlines() if '"reply"' in line]
    assert len(replies) == 2, done.stdout
    assert not any("Only my" in reply for reply in replies), replies
    assert "Wren" in replies[1]


def test_version() -> None:
    done = run_mirror("--version")
    assert done.returncode == 0 and done.stdout.startswith("mirror (MirrorOS) ")


def test_help_shows_bracketed_config_keys() -> None:
    """Help texts are rich markup; "[memory]" must survive it."""
    done = run_mirror("status", "--help", COLUMNS="200")
    assert done.returncode == 0 and "$MIRROR_DB or [memory] path" in done.stdout


def test_help_shows_no_value_type_beside_flags() -> None:
    done = run_mirror("status", "--help", COLUMNS="200")
    assert "--json" in done.stdout and "<path>" in done.stdout  # options with values keep it
    assert "<bool>" not in done.stdout


def _read_until(fd: int, marker: str, seen: list[str], timeout: float = 60) -> None:
    """Read a pty until `marker` appears in what was read since the call (or EOF/timeout)."""
    import os
    import select
    import time

    start, deadline = len(seen), time.monotonic() + timeout
    while marker not in "".join(seen[start:]):
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in {''.join(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            chunk = b""
        assert chunk, f"terminal closed before {marker!r}: {''.join(seen)!r}"
        seen.append(chunk.decode(errors="replace"))


@pytest.mark.parametrize("command", ["chat", "up"])
def test_terminal_chat_shows_no_info_lines_and_logs_to_the_file(
    write_config: Callable[..., Path], tmp_path: Path, soul_file: Path, command: str
) -> None:
    """`mirror chat` and `mirror up` (with the console, whose link opens and migrates
    memory first) on a real terminal (a pty): the log goes to [logging] path, the screen
    has the banner, the coloured prompt and the reply, no INFO line, and a warning printed
    above the prompt."""
    import os
    import pty
    import socket
    import subprocess

    from tests.conftest import ROOT, mirror_env

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_file = tmp_path / "log" / "mirror.log"
    config = write_config(
        f'[logging]\npath = "{log_file}"\n\n[console]\nenabled = true\nport = {port}\n'
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", command, "--config", str(config)],
        cwd=ROOT,
        env=mirror_env(TERM="xterm"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen: list[str] = []
    try:
        _read_until(master, "you>", seen)
        os.write(master, b"what is your name?\n")
        _read_until(master, "you>", seen)
        soul_file.write_text("# Name\nBroken\n")  # an invalid edit: refused with a warning
        # This chat's own warning (under `up` the console's may come first, relayed).
        _read_until(master, "\x1b[Kwarning: soul: ", seen)
        if "you>" not in "".join(seen).rsplit("\x1b[Kwarning: soul: ", 1)[1]:
            _read_until(master, "you>", seen)  # the prompt drawn again below it
        os.write(master, b"\x04")  # Ctrl-D: the chat ends
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    screen = "".join(seen)
    assert "MirrorOS is running on this terminal" in screen
    assert "\x1b[1;36mWren\x1b[0m: " in screen  # the persona's name, coloured
    assert " INFO " not in screen and "WARNING" not in screen, screen
    # The prompt's line is cleared, the warning printed, the prompt drawn again.
    assert "\r\x1b[Kwarning: soul: " in screen and screen.rstrip().endswith("you>\x1b[0m")
    assert " INFO bot.instance: instance local (local) started" in log_file.read_text()
    if command == "up":
        assert f"console: http://127.0.0.1:{port}/sign-in?token=" in screen


def test_colours_only_on_a_terminal_without_no_color(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io

    from adapters.local.runtime import colour_terminal

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert colour_terminal(Terminal()) and not colour_terminal(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_terminal(Terminal())


def test_remind_stores_a_reminder_that_intentions_due_shows_in_local_time(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    import asyncio
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from bot.memory import Memory
    from bot.models import Author, Incoming

    async def seed() -> None:
        async with Memory(tmp_path / "memory.db") as memory:
            await memory.record_incoming(
                Incoming(
                    entrance="local",
                    conversation_id="local:you",
                    conversation_kind="dm",
                    author=Author(external_id="you", display_name="You"),
                    text="hello",
                    platform_message_id="1",
                ),
                "local",
            )

    asyncio.run(seed())
    config = write_config('[persona]\ntimezone = "Europe/Lisbon"\n')
    assert json.loads(mirror(config, "intentions", "--due", "--json").stdout) == []

    made = mirror(config, "remind", "local:you", "stand up", "--at", "tomorrow 9:00", "--json")
    assert made.returncode == 0, made.stderr
    reminder = json.loads(made.stdout)
    tomorrow = datetime.now(ZoneInfo("Europe/Lisbon")).date() + timedelta(days=1)
    assert reminder["due_local"] == f"{tomorrow:%a %Y-%m-%d} 09:00 Europe/Lisbon"

    due = mirror(config, "intentions", "--due", "--json")
    assert due.returncode == 0, due.stderr
    [item] = json.loads(due.stdout)
    assert (item["id"], item["kind"], item["text"]) == (reminder["id"], "reminder", "stand up")
    assert (item["entrance"], item["owner_instance"]) == ("local", "local")
    assert item["due_local"] == reminder["due_local"]
    listed = mirror(config, "intentions", "--due")
    assert "09:00 Europe/Lisbon  reminder for You on local: stand up" in listed.stdout

    unknown = mirror(config, "remind", "local:nobody", "stand up", "--at", "tomorrow 9:00")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "mirror: I know no account local:nobody"
    bad_time = mirror(config, "remind", "local:you", "stand up", "--at", "when pigs fly")
    assert bad_time.returncode == 2 and "can't read the time" in bad_time.stderr
    assert len(bad_time.stderr.strip().splitlines()) == 1


def test_one_command_is_built_and_the_others_still_suggested() -> None:
    from bot.cli import _command_in

    assert _command_in(["--config", "x.toml", "-v", "soul", "show"]) == "soul"
    assert _command_in(["--db", "m.db", "--help"]) is None
    done = run_mirror("--config", "config/mirror.toml", "statu")
    assert done.returncode == 2 and "Did you mean 'status'" in done.stderr


def test_a_childs_relayed_line_is_shortened_above_the_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In `mirror up` at a terminal a child's warning comes relayed in the log format; on
    screen it keeps the child's name, not its date, level and logger."""
    import logging

    from bot.log_setup import AbovePrompt as _AbovePrompt

    handler = _AbovePrompt(tmp_path / "mirror.log", None)
    line = "[console] 2026-12-02 10:45:04,358 WARNING bot.soul: soul: SOUL.md rejected"
    handler.emit(logging.LogRecord("bot.supervisor", logging.WARNING, "", 0, line, None, None))
    assert capsys.readouterr().err == "warning: [console] soul: SOUL.md rejected\n"
