"""Running as a service: `mirror up` without a terminal, its log file, `mirror logs`, and
`mirror service install`.

Real processes: `mirror up` with stdin from /dev/null (as systemd starts it), and with the
Telegram entrance against the fake Bot API.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from bot.log_reader import BadSince, Filter, follow, log_files, parse_since, read
from tests.conftest import ROOT, mirror_env, run_mirror
from tests.test_supervisor_signals import (  # noqa: F401  (fixtures)
    fake,
    mirror_up,
    running,
    telegram_config,
)


def test_up_without_a_terminal_and_nothing_to_run_exits_1(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "up", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=mirror_env(),
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mirror: nothing to run:"), result.stderr
    assert "stdin is not a terminal" in last
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # no terminal chat started


async def test_up_as_a_service_writes_the_log_that_mirror_logs_reads(
    telegram_config: Path,  # noqa: F811  (the fixture imported above)
) -> None:
    async with mirror_up(telegram_config) as up:
        await running(up)
        await up.stop(signal.SIGTERM, timeout=60)  # a clean stop: its last words logged too
    log = telegram_config.parent / "log" / "mirror.log"  # no [logging] path: beside memory
    assert log.exists()
    scheduler = run_mirror("logs", "--entrance", "scheduler", "--config", str(telegram_config))
    assert scheduler.returncode == 0, scheduler.stderr
    assert "leader" in scheduler.stdout
    assert "[telegram]" not in scheduler.stdout
    telegram = run_mirror("logs", "-e", "telegram", "--config", str(telegram_config))
    assert "polling as" in telegram.stdout
    assert "[scheduler]" not in telegram.stdout
    later = run_mirror("logs", "--since", "2999-01-01", "--config", str(telegram_config))
    assert later.returncode == 0 and later.stdout == ""


def test_logs_says_where_it_looked_when_there_is_no_log(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    result = run_mirror("logs", "--config", str(config))
    assert result.returncode == 1
    assert f"no log at {config.parent / 'log' / 'mirror.log'}" in result.stderr
    bad = run_mirror("logs", "--since", "yesterday-ish", "--config", str(config))
    assert bad.returncode == 2 and "--since 'yesterday-ish'" in bad.stderr


LINES = [
    "2026-12-01 10:00:00,001 INFO bot.supervisor: [telegram] 2026-12-01 10:00:00,000 INFO "
    "adapters.telegram.runtime: polling as @wren_bot",
    "2026-12-01 10:00:01,000 INFO bot.supervisor: [scheduler] 2026-12-01 10:00:01,000 INFO "
    "bot.scheduler: leader",
    "2026-12-01 11:00:00,000 ERROR bot.supervisor: [telegram] 2026-12-01 11:00:00,000 ERROR "
    "bot.instance: the turn failed",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "2026-12-01 12:00:00,000 WARNING bot.outbox: delivery delayed",
]


def test_records_keep_tracebacks_and_filters_combine(tmp_path: Path) -> None:
    log = tmp_path / "mirror.log"
    (tmp_path / "mirror.log.2").write_text(LINES[0] + "\n", encoding="utf-8")
    (tmp_path / "mirror.log.1").write_text(LINES[1] + "\n", encoding="utf-8")
    log.write_text("\n".join(LINES[2:]) + "\n", encoding="utf-8")
    assert log_files(log) == [tmp_path / "mirror.log.2", tmp_path / "mirror.log.1", log]
    everything = list(read(log, Filter()))
    assert len(everything) == 4  # the traceback belongs to the record before it
    assert everything[0].endswith("@wren_bot") and everything[2].endswith("line 1, in <module>")
    telegram = list(read(log, Filter(entrance="telegram")))
    assert [r.splitlines()[0][-12:] for r in telegram] == ["as @wren_bot", " turn failed"]
    errors = list(read(log, Filter(level="ERROR")))
    assert len(errors) == 1 and "Traceback" in errors[0]  # the child's own level counts
    since = list(read(log, Filter(since=datetime(2026, 12, 1, 10, 30))))
    assert len(since) == 2


def test_since_takes_durations_and_dates() -> None:
    now = datetime(2026, 12, 2, 12, 0)
    assert parse_since("90m", now) == datetime(2026, 12, 2, 10, 30)
    assert parse_since("1d", now) == datetime(2026, 12, 1, 12, 0)
    assert parse_since("2026-11-30", now) == datetime(2026, 11, 30)
    with pytest.raises(BadSince):
        parse_since("last tuesday", now)


def test_follow_goes_on_across_rotation(tmp_path: Path) -> None:
    log = tmp_path / "mirror.log"
    log.write_text(LINES[0] + "\n", encoding="utf-8")  # already there: not repeated
    seen: list[str] = []
    lines = follow(log, Filter(), poll_s=0.02)
    reader = threading.Thread(target=lambda: [seen.append(next(lines)) for _ in range(2)])
    reader.daemon = True
    reader.start()
    time.sleep(0.2)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(LINES[1] + "\n")
    time.sleep(0.2)
    log.rename(tmp_path / "mirror.log.1")  # what RotatingFileHandler does
    log.write_text(LINES[5] + "\n", encoding="utf-8")
    reader.join(10)
    assert seen == [LINES[1], LINES[5]]


def test_service_install_dry_run_says_everything_and_changes_nothing(tmp_path: Path) -> None:
    result = run_mirror(
        "service", "install", "--dry-run", "--user", "mirroros", "--prefix", "/opt/mirroros"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "create system user mirroros" in out
    assert "create folder /var/lib/mirroros (mirroros:mirroros 0750)" in out
    assert "write /etc/mirroros/env (root:root 0600)" in out
    assert "copy " in out and "/etc/mirroros/soul/SOUL.md (mirroros:mirroros 0640)" in out
    assert "ExecStart=/opt/mirroros/.venv/bin/mirror up" in out
    assert "Restart=on-failure" in out and "EnvironmentFile=/etc/mirroros/env" in out
    assert not Path("/etc/mirroros/env").exists() or "exists" not in out


def test_service_install_under_a_root_folder_makes_a_config_that_checks(tmp_path: Path) -> None:
    import getpass

    user = getpass.getuser()
    staged = tmp_path / "root"
    args = ["service", "install", "--user", user, "--root", str(staged)]
    first = run_mirror(*args)
    assert first.returncode == 0, first.stderr
    env = staged / "etc/mirroros/env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert stat.S_IMODE((staged / "var/lib/mirroros").stat().st_mode) == 0o750
    unit = (staged / "etc/systemd/system/mirroros.service").read_text()
    assert f"User={user}" in unit
    config = staged / "etc/mirroros/mirror.toml"
    text = config.read_text()
    assert 'path = "/var/lib/mirroros/memory.db"' in text
    assert 'path = "/etc/mirroros/soul/SOUL.md"' in text
    assert (staged / "etc/mirroros/soul/SOUL.md").read_text().startswith("# ")
    # The written config is valid (paths pointed into the staging folder to load it).
    local = (
        text.replace('"/var/lib/mirroros', f'"{staged}/var/lib/mirroros')
        .replace('"/etc/mirroros', f'"{staged}/etc/mirroros')
        .replace('"/var/log/mirroros', f'"{staged}/var/log/mirroros')
    )
    (tmp_path / "local.toml").write_text(local)
    check = run_mirror("status", "--config", str(tmp_path / "local.toml"))
    assert check.returncode == 0, check.stderr
    # Re-running keeps what an admin changed.
    config.write_text(text + "\n# edited\n")
    again = run_mirror(*args)
    assert again.returncode == 0 and "mirror.toml exists, kept" in again.stdout
    assert config.read_text().endswith("# edited\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="as root the install would really run")
def test_service_install_without_root_says_so() -> None:
    result = run_mirror("service", "install")
    assert result.returncode == 1 and "run it as root" in result.stderr
