"""`mirror setup`, driven through its prompts on stdin (a real process), against the fake
Telegram and Discord, the fake model and a real Dovecot, and from flags (`--yes`).

What it must do: check each token live and name the bot, catch the coordinator's /whoami,
write the config (keeping an existing file's comments), a .env with mode 0600 and a SOUL.md,
never show or store a secret anywhere but .env, and end with the command to run.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import ROOT, SOUL_EXAMPLE, mirror_env
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.mail_servers import Dovecot, SmtpSink
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram
from tests.processes import MirrorProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADA = 777  # the coordinator's Telegram user id
# The persona's mailbox here: a password no output could contain by chance.
MAILBOX, MAILBOX_PASSWORD = "wren@mirror.test", "pw-Zq81-mailbox"
OWN_KEYS = ("OPENAI_API_KEY", "MIRROR_TELEGRAM_TOKEN", "MIRROR_DISCORD_TOKEN")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mail() -> AsyncIterator[tuple[Dovecot, SmtpSink]]:
    dovecot = Dovecot()
    dovecot.add_user(MAILBOX, MAILBOX_PASSWORD)
    await dovecot.start()
    smtp = SmtpSink(dovecot)
    await smtp.start()
    try:
        yield dovecot, smtp
    finally:
        await smtp.stop()
        await dovecot.stop(wait=False)


@pytest_asyncio.fixture(loop_scope="module")
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


class Setup(MirrorProcess):
    """`mirror setup --dir FOLDER …` with stdin a pipe (a person typing, line by line)."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__("setup", "--dir", str(folder), *args, env=env)
        for key in OWN_KEYS:
            if key not in (env or {}):
                self.env.pop(key, None)

    async def answer(self, *lines: str) -> None:
        for line in lines:
            await self.write(line)

    async def finish(self, timeout: float = 60) -> int:
        await self.close_stdin()
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self.stop()
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines + self.stderr)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_env(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {key: value or "" for key, value in dotenv_values(path).items()}


async def test_a_person_with_a_telegram_token_is_set_up_and_found_by_whoami(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    folder = tmp_path / "mirroros"
    async with FakeOpenAI() as model:
        model_url = model.base_url
        wizard = await Setup(folder, "--telegram-base-url", telegram.base_url).start()
        await wizard.answer(
            "y",  # Telegram
            "n",  # Discord
            "n",  # email
            telegram.token,
            "",  # who may talk: [pairing]
        )
        await wizard.wait_for_line(lambda line: "Send /whoami to @mirror_test_bot" in line)
        telegram.push_message(ADA, "/whoami", user_id=ADA, first_name="Ada")
        await wizard.wait_for_line(lambda line: f"Found you: Ada (telegram:{ADA})" in line)
        await wizard.answer(
            "openai/fake-model",
            model_url,  # API base URL
            "",  # its key variable: [OPENAI_API_KEY]
            "sk-the-key",
        )
        assert await wizard.finish() == 0, wizard.tail()
        assert model.requests, "no test call reached the model"
        # From anywhere, `mirror --config …` finds the .env beside the config: the token and
        # the model's key (which litellm reads only from the environment).
        doctor = await asyncio.to_thread(
            run_in, ROOT, "--config", str(folder / "mirror.toml"), "doctor"
        )
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "ok    telegram token: accepted" in doctor.stdout
        assert "ok    model: openai/fake-model answered" in doctor.stdout

    assert "ok    telegram token: accepted: the bot is @mirror_test_bot" in wizard.output
    assert "ok    model: openai/fake-model answered" in wizard.output
    # Ada is told who she is, in her private chat.
    assert telegram.sent[-1]["chat_id"] == ADA
    assert f"telegram:{ADA}" in telegram.sent[-1]["text"]
    # The last line is the one command to run.
    assert wizard.lines[-1].strip() == f"mirror --config {folder.resolve() / 'mirror.toml'} up"

    config_text = (folder / "mirror.toml").read_text(encoding="utf-8")
    config = tomllib.loads(config_text)
    assert config["entrances"]["telegram"] == {
        **config["entrances"]["telegram"],
        "enabled": True,
        "base_url": telegram.base_url,
    }
    assert config["coordinator"]["address"] == f"telegram:{ADA}"
    assert f"telegram:{ADA}" in config["access"]["admins"]
    assert config["access"]["telegram"]["policy"] == "pairing"
    assert config["model"]["name"] == "openai/fake-model"
    assert config["model"]["api_base"] == model_url
    assert config["soul"]["path"] == str((folder / "SOUL.md").resolve())
    assert (folder / "SOUL.md").read_bytes() == SOUL_EXAMPLE.read_bytes()
    assert "# ENTRANCE:ID" in config_text  # the template's comments came along

    env = folder / ".env"
    assert mode(env) == 0o600
    assert read_env(env) == {
        "MIRROR_TELEGRAM_TOKEN": telegram.token,
        "OPENAI_API_KEY": "sk-the-key",
    }
    for secret in (telegram.token, "sk-the-key"):
        assert secret not in config_text
        assert secret not in wizard.output


async def test_a_refused_token_is_asked_again_and_never_shown(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    wizard = await Setup(
        tmp_path, "--telegram-base-url", telegram.base_url, "--coordinator", "telegram:5"
    ).start()
    await wizard.answer("y", "n", "n", "999:WRONG-TOKEN", "y", telegram.token, "open", "")
    assert await wizard.finish() == 0, wizard.tail()
    assert "fail  telegram token: Telegram refused the token (401" in wizard.output
    assert "@BotFather" in wizard.output
    assert "ok    telegram token: accepted" in wizard.output
    assert "999:WRONG-TOKEN" not in wizard.output
    assert read_env(tmp_path / ".env") == {"MIRROR_TELEGRAM_TOKEN": telegram.token}
    config = tomllib.loads((tmp_path / "mirror.toml").read_text(encoding="utf-8"))
    assert config["access"]["telegram"]["policy"] == "open"
    assert config["model"]["name"] == "mirror/offline"


async def test_no_whoami_in_time_falls_back_to_typing_the_id(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    wizard = await Setup(
        tmp_path, "--telegram-base-url", telegram.base_url, "--whoami-wait", "1"
    ).start()
    await wizard.answer("y", "n", "n", telegram.token, "", "4321", "")
    assert await wizard.finish() == 0, wizard.tail()
    assert "No /whoami arrived in time." in wizard.output
    config = tomllib.loads((tmp_path / "mirror.toml").read_text(encoding="utf-8"))
    assert config["coordinator"]["address"] == "telegram:4321"


async def test_discord_and_mail_are_checked_live(
    tmp_path: Path, mail: tuple[Dovecot, SmtpSink]
) -> None:
    dovecot, smtp = mail
    async with FakeDiscord() as discord:
        wizard = await Setup(tmp_path, "--discord-api-base", discord.api_base).start()
        await wizard.answer(
            "n",  # Telegram
            "y",  # Discord
            "y",  # email
            discord.token,
            MAILBOX,
            "127.0.0.1",
            str(dovecot.imap_port),
            "127.0.0.1",
            str(smtp.port),
            "none",
            "",  # login: the address
            MAILBOX_PASSWORD,
            "",  # Discord access: [pairing]
            "email",  # where the coordinator talks
            "ada@example.test",
            "mirror/offline",
        )
        assert await wizard.finish() == 0, wizard.tail()
    output = wizard.output
    assert f"ok    discord token: accepted: the bot is mirror (id {discord.bot_user_id})" in output
    assert f"ok    mail IMAP: IMAP 127.0.0.1:{dovecot.imap_port} accepted the login" in output
    assert f"ok    mail SMTP: SMTP 127.0.0.1:{smtp.port} answered EHLO" in output
    assert MAILBOX_PASSWORD not in output and discord.token not in output
    config = tomllib.loads((tmp_path / "mirror.toml").read_text(encoding="utf-8"))
    email = config["entrances"]["email"]
    assert email["enabled"] and email["address"] == MAILBOX
    assert (email["imap_port"], email["smtp_port"], email["security"]) == (
        dovecot.imap_port,
        smtp.port,
        "none",
    )
    assert config["entrances"]["discord"]["enabled"]
    assert not config["entrances"]["telegram"]["enabled"]
    assert config["coordinator"]["address"] == "email:ada@example.test"
    assert read_env(tmp_path / ".env") == {
        "MIRROR_DISCORD_TOKEN": discord.token,
        "MIRROR_EMAIL_PASSWORD": MAILBOX_PASSWORD,
    }


async def test_a_wrong_mail_password_stops_a_script_with_one_line(
    tmp_path: Path, mail: tuple[Dovecot, SmtpSink]
) -> None:
    dovecot, smtp = mail
    result = await asyncio.to_thread(
        run_setup,
        tmp_path,
        "--yes",
        "--entrance",
        "email",
        "--email-password-env",
        "MAIL_PW",
        "--email-address",
        MAILBOX,
        "--imap-host",
        "127.0.0.1",
        "--imap-port",
        str(dovecot.imap_port),
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        str(smtp.port),
        "--email-security",
        "none",
        "--coordinator",
        "email:ada@example.test",
        MAIL_PW="not-the-password",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"mirror: setup: mail IMAP: IMAP 127.0.0.1:{dovecot.imap_port} refused the login"
        )
    )
    assert "not-the-password" not in result.stdout + result.stderr
    assert not (tmp_path / "mirror.toml").exists()  # nothing half-written
    assert not (tmp_path / ".env").exists()


def run_setup(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    merged = mirror_env(**env)
    for key in OWN_KEYS:
        if key not in env:
            merged.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "setup", "--dir", str(folder), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=merged,
        stdin=subprocess.DEVNULL,
    )


async def test_rerunning_from_flags_edits_the_config_and_keeps_its_comments(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    soul = tmp_path / "persona.md"
    soul.write_bytes(SOUL_EXAMPLE.read_bytes())
    config = tmp_path / "mirror.toml"
    config.write_text(
        "# My MirrorOS, hand-written.\n"
        f'[memory]\npath = "{tmp_path / "memory.db"}"  # keep me\n\n'
        f'[soul]\npath = "{soul}"\n\n'
        "[persona]\n"
        'timezone = "Europe/Berlin"  # where we live\n\n'
        "[entrances.telegram]\nenabled = false  # not yet\n"
        f'base_url = "{telegram.base_url}"\n',
        encoding="utf-8",
    )
    env = tmp_path / ".env"
    env.write_text("# mine\nSOMETHING_ELSE='kept'\n", encoding="utf-8")
    env.chmod(0o644)
    result = await asyncio.to_thread(
        run_setup,
        tmp_path,
        "--yes",
        "--entrance",
        "telegram",
        "--telegram-token-env",
        "TG",
        "--coordinator",
        "telegram:55",
        "--model",
        "mirror/offline",
        TG=telegram.token,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted: the bot is @mirror_test_bot" in result.stdout
    assert f"Soul: {soul} (Wren) is kept." in result.stdout
    text = config.read_text(encoding="utf-8")
    assert text.startswith("# My MirrorOS, hand-written.\n")
    assert "# keep me" in text and "# where we live" in text and "# not yet" in text
    assert "enabled = true  # not yet" in text
    data = tomllib.loads(text)
    assert data["persona"]["timezone"] == "Europe/Berlin"
    assert data["memory"]["path"] == str(tmp_path / "memory.db")
    assert data["soul"]["path"] == str(soul)
    assert data["coordinator"]["address"] == "telegram:55"
    assert not (tmp_path / "SOUL.md").exists()
    assert mode(env) == 0o600
    assert read_env(env) == {"SOMETHING_ELSE": "kept", "MIRROR_TELEGRAM_TOKEN": telegram.token}
    assert env.read_text(encoding="utf-8").startswith("# mine\n")
    assert telegram.token not in text and telegram.token not in result.stdout

    # The doctor agrees with what setup wrote (the token comes from .env in that folder).
    doctor = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot.cli", "--config", str(config), "doctor"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in mirror_env().items() if k not in OWN_KEYS},
    )
    assert "ok    telegram token: accepted: the bot is @mirror_test_bot" in doctor.stdout
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


async def test_a_script_without_the_token_stops_naming_what_to_give(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        run_setup, tmp_path, "--yes", "--entrance", "telegram", "--whoami-wait", "0"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "mirror: setup: no Telegram bot token with --yes: put it in an environment variable "
        "and name that variable with --telegram-token-env"
    )
    assert not os.path.exists(tmp_path / "mirror.toml")


def run_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`mirror ARGS…` with `folder` as the working directory and no secrets of this machine."""
    merged = mirror_env(**env)
    for key in OWN_KEYS:
        if key not in env:
            merged.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env=merged,
        stdin=subprocess.DEVNULL,
    )


async def test_a_service_layout_keeps_the_secrets_in_its_environment_file(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    etc = tmp_path / "etc"
    (etc / "soul").mkdir(parents=True)
    (etc / "soul" / "SOUL.md").write_bytes(SOUL_EXAMPLE.read_bytes())
    config = etc / "mirror.toml"
    config.write_text(
        f'[memory]\npath = "{tmp_path / "lib" / "memory.db"}"\n'
        f'[soul]\npath = "{etc / "soul" / "SOUL.md"}"\n'
        f'[entrances.telegram]\nbase_url = "{telegram.base_url}"\n',
        encoding="utf-8",
    )
    secrets = etc / "env"
    secrets.write_text("# Secrets for MirrorOS\n", encoding="utf-8")
    secrets.chmod(0o600)
    flags = ("--yes", "--entrance", "telegram", "--telegram-token-env", "TG")
    result = await asyncio.to_thread(
        run_in,
        tmp_path,
        *("--config", str(config), "setup", "--env-file", str(secrets), *flags),
        *("--coordinator", "telegram:9", "--model", "mirror/offline"),
        TG=telegram.token,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].strip() == (
        f"set -a && . {secrets} && set +a && mirror --config {config} up"
    )
    assert read_env(secrets) == {"MIRROR_TELEGRAM_TOKEN": telegram.token}
    assert secrets.read_text(encoding="utf-8").startswith("# Secrets for MirrorOS\n")
    assert mode(secrets) == 0o600
    assert not (etc / ".env").exists()

    checked = await asyncio.to_thread(
        run_in, tmp_path, "--config", str(config), "doctor", "--env-file", str(secrets)
    )
    assert "ok    telegram token: accepted" in checked.stdout, checked.stdout + checked.stderr
    unchecked = await asyncio.to_thread(run_in, tmp_path, "--config", str(config), "doctor")
    assert unchecked.returncode == 1
    assert "fail  telegram token: MIRROR_TELEGRAM_TOKEN is not set" in unchecked.stdout


async def test_the_coordinator_is_found_by_whoami_on_discord(tmp_path: Path) -> None:
    async with FakeDiscord() as discord:
        wizard = await Setup(
            tmp_path,
            *("--discord-api-base", discord.api_base, "--discord-gateway-url", discord.gateway_url),
        ).start()
        await wizard.answer("n", "y", "n", discord.token, "")
        await wizard.wait_for_line(
            lambda line: "Send /whoami to mirror in a direct message" in line
        )
        try:
            await discord.wait_until_connected(timeout=30)
        except TimeoutError:
            raise AssertionError(wizard.tail()) from None
        discord.add_user(555, "ada")
        await discord.push_message(9_000_001, "/whoami", author_id=555)
        await wizard.wait_for_line(lambda line: "Found you: ada (discord:555)" in line)
        await wizard.answer("mirror/offline")
        assert await wizard.finish() == 0, wizard.tail()
        told = await discord.wait_for_sent(lambda sent: "discord:555" in str(sent))
        assert told
    config = tomllib.loads((tmp_path / "mirror.toml").read_text(encoding="utf-8"))
    assert config["coordinator"]["address"] == "discord:555"


async def test_secrets_of_any_shape_survive_the_env_file(tmp_path: Path) -> None:
    """What EnvFile writes, python-dotenv (pydantic-settings' reader) and MirrorOS's own
    `.env` loader read back unchanged, and the file's other lines stay."""
    from dotenv import dotenv_values

    from bot.config import read_dotenv
    from bot.setup_wizard import EnvFile

    values = {
        "PLAIN": "123456:ABC-def_ghi",
        "SPACES": "pass word",
        "QUOTES": 'it\'s "quoted"',
        "BACKSLASH": "back\\slash",
        "HASH": "a#b #c",
        "DOLLAR": "x${HOME}y$z",
    }
    path = tmp_path / ".env"
    path.write_text("# mine\nexport OTHER=kept  # a comment\n", encoding="utf-8")
    env = EnvFile(path)
    for key, value in values.items():
        env.set(key, value)
    env.save()
    assert mode(path) == 0o600
    assert read_dotenv(path) == {"OTHER": "kept", **values}
    assert dotenv_values(path, interpolate=False) == {"OTHER": "kept", **values}
    assert EnvFile(path).get("QUOTES") == values["QUOTES"]


async def test_a_script_without_a_coordinator_stops_naming_the_flag(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    result = await asyncio.to_thread(
        run_setup,
        tmp_path,
        *("--yes", "--entrance", "telegram", "--telegram-token-env", "TG"),
        *("--telegram-base-url", telegram.base_url),
        TG=telegram.token,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("mirror: setup: no coordinator with --yes: give --coordinator ENTRANCE:ID")
    )
    assert not (tmp_path / ".env").exists()


async def test_setup_does_not_poll_a_bot_whose_entrance_is_running(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    import socket

    from bot.memory import Memory

    memory = Memory(tmp_path / "memory.db")
    await memory.open()
    try:  # a live process (this one) holds the Telegram entrance
        await memory.acquire_lease(
            "entrance:telegram", "telegram@test", socket.gethostname(), os.getpid(), 600
        )
    finally:
        await memory.close()
    (tmp_path / "mirror.toml").write_text(
        f'[memory]\npath = "{tmp_path / "memory.db"}"\n'
        f'[entrances.telegram]\nenabled = true\nbase_url = "{telegram.base_url}"\n',
        encoding="utf-8",
    )
    wizard = await Setup(tmp_path).start()
    await wizard.answer("y", "n", "n", telegram.token, "", "31337", "")
    assert await wizard.finish() == 0, wizard.tail()
    assert f"The Telegram entrance is running (pid {os.getpid()}" in wizard.output
    assert not [name for name, _ in telegram.requests if name.lower() == "getupdates"]
    config = tomllib.loads((tmp_path / "mirror.toml").read_text(encoding="utf-8"))
    assert config["coordinator"]["address"] == "telegram:31337"
    assert config["access"]["telegram"]["policy"] == "open"  # it was running: unchanged
