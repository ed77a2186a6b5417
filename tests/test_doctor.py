"""`mirror doctor` tells the truth about a healthy set-up and about each broken one.

The real `mirror doctor` process checks against the fake Telegram and Discord, the fake
OpenAI-compatible model, a real Dovecot and an SMTP sink, all on 127.0.0.1 and shared by
the module (starting Dovecot is the slow part). Each test writes its own config and memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bot.memory import Memory
from bot.models import Author, Incoming
from bot.soul import sync_soul_file
from tests.conftest import ROOT, SOUL_EXAMPLE, mirror_env
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.mail_servers import PERSONA, PERSONA_PASSWORD, Dovecot, SmtpSink
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.asyncio(loop_scope="module")

COORDINATOR_ID = 4242
REAL_MODEL = "openai/fake-model"  # litellm against the fake (seconds to import: 3 tests)
MODEL_KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE")


@dataclass
class World:
    telegram: FakeTelegram
    discord: FakeDiscord
    model: FakeOpenAI
    dovecot: Dovecot
    smtp: SmtpSink


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    dovecot = Dovecot()
    dovecot.add_user(PERSONA, PERSONA_PASSWORD)
    await dovecot.start()
    smtp = SmtpSink(dovecot)
    await smtp.start()
    async with FakeTelegram() as telegram, FakeDiscord() as discord, FakeOpenAI() as model:
        try:
            yield World(telegram, discord, model, dovecot, smtp)
        finally:
            await smtp.stop()
            await dovecot.stop(wait=False)


@dataclass
class SetUp:
    folder: Path
    config: Path
    soul: Path
    memory: Path
    env: dict[str, str]

    def write(
        self,
        world: World,
        *,
        imap_port: int | None = None,
        smtp_port: int | None = None,
        model: str = "mirror/offline",
    ) -> None:
        self.config.write_text(
            f'[memory]\npath = "{self.memory}"\n\n'
            f'[soul]\npath = "{self.soul}"\n\n'
            f'[model]\nname = "{model}"\napi_base = "{world.model.base_url}"\n'
            "retries = 0\ntimeout_s = 20\n\n"
            f'[coordinator]\naddress = "telegram:{COORDINATOR_ID}"\n\n'
            f'[entrances.telegram]\nenabled = true\nbase_url = "{world.telegram.base_url}"\n\n'
            f'[entrances.discord]\nenabled = true\napi_base = "{world.discord.api_base}"\n\n'
            f'[entrances.email]\nenabled = true\naddress = "{PERSONA}"\n'
            f'imap_host = "127.0.0.1"\nimap_port = {imap_port or world.dovecot.imap_port}\n'
            f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp_port or world.smtp.port}\n'
            'security = "none"\n',
            encoding="utf-8",
        )

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`mirror --config … doctor` in the set-up's folder (no .env there)."""
        merged = mirror_env(**{**self.env, **env})
        for key in MODEL_KEYS:
            if key not in env and key not in self.env:
                merged.pop(key, None)
        merged = {key: value for key, value in merged.items() if value != ""}
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", "--config", str(self.config), "doctor", *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            env=merged,
        )


@pytest.fixture
def setup(tmp_path: Path, world: World) -> Iterator[SetUp]:
    soul = tmp_path / "SOUL.md"
    shutil.copy(SOUL_EXAMPLE, soul)
    found = SetUp(
        folder=tmp_path,
        config=tmp_path / "mirror.toml",
        soul=soul,
        memory=tmp_path / "var" / "memory.db",
        env={
            "MIRROR_TELEGRAM_TOKEN": world.telegram.token,
            "MIRROR_DISCORD_TOKEN": world.discord.token,
            "MIRROR_EMAIL_PASSWORD": PERSONA_PASSWORD,
            "OPENAI_API_KEY": "sk-test",
        },
    )
    found.write(world)
    yield found


async def known_coordinator(setup: SetUp) -> None:
    """Memory as a running Telegram entrance leaves it: the soul recorded, and a private
    chat with the coordinator."""
    memory = Memory(setup.memory)
    await memory.open()
    try:
        await sync_soul_file(memory, setup.soul)
        await memory.record_incoming(
            Incoming(
                entrance="telegram",
                conversation_id=str(COORDINATOR_ID),
                conversation_kind="dm",
                author=Author(external_id=str(COORDINATOR_ID), display_name="Coordinator"),
                text="hello",
                platform_message_id="1",
            ),
            "telegram",
        )
    finally:
        await memory.close()


async def doctor(setup: SetUp, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the fakes are served by this event loop.
    return await asyncio.to_thread(setup.run, *args, **env)


def line_of(result: subprocess.CompletedProcess[str], check: str) -> str:
    for line in result.stdout.splitlines():
        if line.split(maxsplit=1)[-1].startswith(f"{check}:"):
            return line
    raise AssertionError(f"no {check!r} line in:\n{result.stdout}\n{result.stderr}")


async def test_a_healthy_set_up_is_all_ok_and_exits_0(setup: SetUp, world: World) -> None:
    await known_coordinator(setup)
    setup.write(world, model=REAL_MODEL)
    result = await doctor(setup)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("ok ") for line in lines), result.stdout
    assert "@mirror_test_bot" in line_of(result, "telegram token")
    assert f"id {world.discord.bot_user_id}" in line_of(result, "discord token")
    assert "accepted the login" in line_of(result, "mail IMAP")
    assert "EHLO" in line_of(result, "mail SMTP")
    assert "openai/fake-model answered" in line_of(result, "model")
    assert "private chat" in line_of(result, "coordinator")
    assert "is the file's" in line_of(result, "soul in memory")
    assert "quick_check: ok" in line_of(result, "memory integrity")
    assert line_of(result, "clock").startswith("ok ")
    assert "FTS5 + vectors (all-MiniLM-L6-v2" in line_of(result, "recall")  # which recall
    # No secret is ever printed.
    for secret in setup.env.values():
        assert secret not in result.stdout + result.stderr


async def test_json_lists_every_check(setup: SetUp, world: World) -> None:
    await known_coordinator(setup)
    setup.write(world, model=REAL_MODEL)
    result = await doctor(setup, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)
    assert {item["status"] for item in checks} == {"ok"}
    names = [item["check"] for item in checks]
    for name in (
        "config",
        "soul",
        "memory",
        "recall",
        "telegram token",
        "discord token",
        "model",
        "clock",
    ):
        assert name in names


async def test_a_refused_telegram_token_fails_with_what_to_do(setup: SetUp) -> None:
    await known_coordinator(setup)
    result = await doctor(setup, MIRROR_TELEGRAM_TOKEN="999:WRONG")
    assert result.returncode == 1, result.stdout + result.stderr
    line = line_of(result, "telegram token")
    assert line.startswith("fail  telegram token: Telegram refused the token (401")
    assert "@BotFather" in line and "MIRROR_TELEGRAM_TOKEN" in line
    assert "999:WRONG" not in result.stdout + result.stderr
    assert line_of(result, "discord token").startswith("ok ")  # the others are still checked


async def test_a_missing_soul_fails(setup: SetUp) -> None:
    setup.soul.unlink()
    result = await doctor(setup)
    assert result.returncode == 1
    line = line_of(result, "soul")
    assert line.startswith(f"fail  soul: {setup.soul} does not exist")
    assert "cp " in line and str(SOUL_EXAMPLE) in line


async def test_a_model_without_its_key_fails_naming_the_key(setup: SetUp, world: World) -> None:
    await known_coordinator(setup)
    setup.write(world, model=REAL_MODEL)
    result = await doctor(setup, OPENAI_API_KEY="")
    assert result.returncode == 1, result.stdout + result.stderr
    line = line_of(result, "model")
    assert line.startswith("fail  model: openai/fake-model did not answer")
    assert "OPENAI_API_KEY" in line


async def test_the_offline_brain_is_a_warning_not_a_failure(setup: SetUp) -> None:
    await known_coordinator(setup)
    result = await doctor(setup)
    assert result.returncode == 0, result.stdout + result.stderr
    assert line_of(result, "model").startswith("warn  model: mirror/offline: the offline brain")


async def test_a_stopped_mail_server_fails(setup: SetUp, world: World) -> None:
    await known_coordinator(setup)
    stopped_imap = Dovecot()
    stopped_imap.add_user(PERSONA, PERSONA_PASSWORD)
    await stopped_imap.start()
    stopped_smtp = SmtpSink()
    await stopped_smtp.start()
    setup.write(world, imap_port=stopped_imap.imap_port, smtp_port=stopped_smtp.port)
    assert (await doctor(setup)).returncode == 0  # running: fine
    await stopped_imap.stop()
    await stopped_smtp.stop()
    result = await doctor(setup)
    assert result.returncode == 1, result.stdout + result.stderr
    imap = line_of(result, "mail IMAP")
    assert imap.startswith(f"fail  mail IMAP: cannot reach IMAP 127.0.0.1:{stopped_imap.imap_port}")
    assert "imap_host" in imap
    assert line_of(result, "mail SMTP").startswith(
        f"fail  mail SMTP: cannot reach SMTP 127.0.0.1:{stopped_smtp.port}"
    )
    assert PERSONA_PASSWORD not in result.stdout


async def test_an_unknown_coordinator_chat_is_a_warning(setup: SetUp) -> None:
    result = await doctor(setup)  # nothing recorded yet: a fresh memory
    assert result.returncode == 0, result.stdout + result.stderr
    line = line_of(result, "coordinator")
    assert line.startswith(f"warn  coordinator: telegram:{COORDINATOR_ID}: memory knows no")
    assert "write to the bot once" in line
    assert line_of(result, "memory").startswith("warn  memory:")  # created by the first start
    assert not setup.memory.exists()  # the doctor neither creates nor migrates it


def _mount(path: Path, *options: str) -> None:
    subprocess.run(["mount", *options, str(path)], check=True, capture_output=True)


async def test_read_only_memory_fails(setup: SetUp, tmp_path: Path, world: World) -> None:
    await known_coordinator(setup)
    disk = tmp_path / "disk"
    disk.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        try:
            _mount(disk, "-t", "tmpfs", "-o", "size=8m", "tmpfs")
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        shutil.copy(setup.memory, disk / "memory.db")
        setup.memory = disk / "memory.db"
        setup.write(world)
        if as_root:
            _mount(disk, "-o", "remount,ro")
        else:
            (disk / "memory.db").chmod(0o444)
            disk.chmod(0o555)
        result = await doctor(setup)
        assert result.returncode == 1, result.stdout + result.stderr
        line = line_of(result, "memory")
        assert line.startswith("fail  memory: "), line
        assert str(setup.memory) in line and "is not writable" in line
        assert "make it and its folder writable" in line
    finally:
        if as_root:
            subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)
        else:
            disk.chmod(0o755)


async def test_a_bad_config_is_one_failing_line(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text('[model]\nname = "x"\nbogus = 1\n', encoding="utf-8")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot.cli", "--config", str(config), "doctor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=mirror_env(),
    )
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"fail  config: {config}: model.bogus: unknown key — fix that key "
        "(config/mirror.example.toml shows them all)"
    )


def status(setup: SetUp) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(setup.config), "status"],
        cwd=setup.folder,
        capture_output=True,
        text=True,
        timeout=60,
        env=mirror_env(),
    )


async def test_status_points_to_doctor_only_when_something_looks_off(setup: SetUp) -> None:
    await known_coordinator(setup)
    fine = await asyncio.to_thread(status, setup)
    assert fine.returncode == 0, fine.stderr
    assert "mirror doctor" not in fine.stdout
    setup.soul.unlink()
    off = await asyncio.to_thread(status, setup)
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines()[-1] == (
        f"check       run `mirror doctor` (no SOUL.md at {setup.soul})"
    )


async def test_a_lease_held_by_a_gone_process_is_a_warning(setup: SetUp) -> None:
    import socket

    await known_coordinator(setup)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now names no process
    memory = Memory(setup.memory)
    await memory.open()
    try:
        here = socket.gethostname()
        await memory.acquire_lease("entrance:telegram", "t@x", here, os.getpid(), 600)
        await memory.acquire_lease("entrance:discord", "d@x", here, gone.pid, 600)
    finally:
        await memory.close()
    result = await doctor(setup)
    assert result.returncode == 0, result.stdout + result.stderr
    assert line_of(result, "lease entrance:telegram") == (
        f"ok    lease entrance:telegram: held by pid {os.getpid()} on {here}, which is running"
    )
    assert line_of(result, "lease entrance:discord") == (
        f"warn  lease entrance:discord: held by pid {gone.pid} on {here}, which is gone — "
        "the next process to start takes it over at once"
    )


async def test_clock_skew_is_measured_against_the_platforms_date() -> None:
    from bot.probes import clock_skew

    def sample(where: str, skew: float) -> tuple[str, dict[str, float]]:
        return where, {"server_time": 1000.0 + skew, "local_time": 1000.0}

    assert clock_skew([sample("telegram", 0.6)]).line() == "ok    clock: within 1s of telegram"
    late = clock_skew([sample("telegram", 2), sample("discord", 45)])
    assert late.status == "warn" and late.detail == "45s behind discord"
    early = clock_skew([sample("telegram", -400)])
    assert early.status == "fail" and early.detail == "400s ahead of telegram"
    assert "timedatectl" in early.todo
    assert clock_skew([]).status == "ok"


async def test_memory_on_postgresql_is_checked_connection_schema_and_listen(
    setup: SetUp, pg_url: str
) -> None:
    result = await doctor(setup, MIRROR_DB=pg_url)
    memory = [line for line in result.stdout.splitlines() if " memory: " in line]
    assert any(line.startswith("ok") and "PostgreSQL" in line for line in memory), memory
    assert any("LISTEN/NOTIFY heard in" in line for line in memory), memory
    assert any(line.startswith("ok") and "is current" in line for line in memory), memory


async def test_an_unreachable_postgresql_fails_without_showing_its_password(
    setup: SetUp,
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    url = f"postgresql://mirror:s3cret-pw@127.0.0.1:{port}/mirror?connect_timeout=3"
    result = await doctor(setup, MIRROR_DB=url)
    assert result.returncode == 1
    line = line_of(result, "memory")
    assert line.startswith("fail") and "cannot reach" in line, line
    assert "s3cret-pw" not in result.stdout + result.stderr
