"""The registry of entrances: manifests, config validated by their models, and an entrance
added from tests (tests/entrances/loopback) that runs a turn without a line of bot/ naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot import entrance as registry
from bot.accounts import AccountRef
from bot.config import ConfigError, load_config
from bot.entrance import Manifest, UnknownEntrance, manifest, manifests, register, runtime_class
from bot.instance import Instance
from bot.models import Author, Incoming
from bot.offline_brain import entrance_label, target_entrance
from tests.conftest import ROOT
from tests.entrances.loopback.manifest import MANIFEST as LOOPBACK
from tests.entrances.loopback.manifest import LoopbackSettings
from tests.entrances.loopback.runtime import LoopbackEntrance

SHIPPED = ["local", "telegram", "discord", "email", "web"]


@pytest.fixture
def loopback() -> Iterator[Manifest[LoopbackSettings]]:
    register(LOOPBACK)
    try:
        yield LOOPBACK
    finally:
        registry.unregister(LOOPBACK.name)


LOOPBACK_TOML = """
[entrances.loopback]
greeting = "hi there"
style = "one line, lowercase"

[access.loopback]
policy = "allowlist"
allow = ["u1"]
"""


# The shipped registry -----------------------------------------------------------------------


def test_the_shipped_entrances_in_registry_order() -> None:
    assert list(manifests()) == SHIPPED
    # The web entrance is hosted by the console process, not a process of its own.
    assert [found.name for found in registry.platforms()] == SHIPPED[1:-1]
    assert registry.terminal().name == "local"
    assert manifest("telegram").secret_env == "MIRROR_TELEGRAM_TOKEN"
    assert manifest("local").secret_env is None and not manifest("local").exclusive


def test_an_unknown_name_is_an_error_naming_the_known_entrances() -> None:
    known = "local, telegram, discord, email, web"
    with pytest.raises(UnknownEntrance, match=rf"'fax'; one of {known}$"):
        manifest("fax")


def test_listing_manifests_imports_no_platform_sdk() -> None:
    code = (
        "import sys\n"
        "from bot.entrance import manifests\n"
        "found = manifests()\n"
        "heavy = [m for m in ('telegram', 'discord', 'aioimaplib', 'aiosmtplib', 'litellm',"
        " 'starlette', 'uvicorn')"
        " if m in sys.modules]\n"
        "print('FOUND', sorted(found), 'HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "FOUND ['discord', 'email', 'local', 'telegram', 'web'] HEAVY []" in out.stdout


def test_mail_ids_fold_case_and_platform_ids_do_not() -> None:
    assert registry.casefolds_ids("email") and not registry.casefolds_ids("telegram")
    assert AccountRef.parse("email:Carol@Example.org").external_id == "carol@example.org"
    assert AccountRef.parse("discord:AbC").external_id == "AbC"


def test_words_for_entrances_come_from_the_manifests() -> None:
    assert registry.named_by("mail") == "email" and registry.named_by("terminal") == "local"
    assert registry.named_by("fax") is None
    assert entrance_label("telegram") == "Telegram" and entrance_label("email") == "email"
    assert target_entrance("please tell them on the mail") == "email"
    assert target_entrance("please post it in the terminal") is None


def test_chunks_follow_the_platform_limit() -> None:
    long = "word " * 1000  # 5000 characters
    assert [len(part) <= 4096 for part in manifest("telegram").chunks(long)] == [True, True]
    assert len(manifest("discord").chunks(long)) == 3
    assert manifest("email").chunks(long) == [long]
    assert manifest("local").chunks("   ") == []


def test_a_manifest_is_checked_when_it_is_made() -> None:
    with pytest.raises(ValueError, match="unknown capabilities"):
        Manifest(
            name="x", label="X", runtime="m:C", settings=LoopbackSettings, capabilities={"fax"}
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not module:Class"):
        Manifest(name="x", label="X", runtime="m.C", settings=LoopbackSettings)
    with pytest.raises(ValueError, match="entrance name"):
        Manifest(name="X-1", label="X", runtime="m:C", settings=LoopbackSettings)


# Secrets ------------------------------------------------------------------------------------


def test_the_secret_is_read_from_the_manifests_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("MIRROR_TELEGRAM_TOKEN", raising=False)
    assert manifest("telegram").secret() is None
    monkeypatch.setenv("MIRROR_TELEGRAM_TOKEN", "123:abc")
    assert manifest("telegram").secret() == "123:abc"
    monkeypatch.setenv("MIRROR_TELEGRAM_TOKEN", "")
    assert manifest("telegram").secret() is None  # empty is unset
    assert manifest("local").secret() is None


def test_the_secret_may_come_from_a_dot_env_file(
    loopback: Manifest[LoopbackSettings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIRROR_LOOPBACK_SECRET", raising=False)
    (tmp_path / ".env").write_text("MIRROR_LOOPBACK_SECRET=from-dotenv\n")
    assert loopback.secret() == "from-dotenv"
    monkeypatch.setenv("MIRROR_LOOPBACK_SECRET", "from-env")
    assert loopback.secret() == "from-env"  # the environment wins


# Config -------------------------------------------------------------------------------------


def test_every_entrance_has_settings_even_when_the_file_has_none(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(write_config())
    assert list(config.entrances) == SHIPPED
    assert config.entrance("local").enabled and not config.entrance("discord").enabled
    assert config.entrance("email").style.startswith("complete")
    assert config.access.entrance("telegram").policy == "open"
    with pytest.raises(UnknownEntrance):
        config.entrance("fax")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[entrances.fax]\nenabled = true\n",
            "entrances.fax: unknown entrance; one of local, telegram, discord, email, web",
        ),
        (
            "[access.fax]\npolicy = 'open'\n",
            "access.fax: unknown entrance; one of local, telegram, discord, email, web",
        ),
        ("[entrances.telegram]\nbase_url = 3\n", "entrances.telegram.base_url: Input should be"),
        ("[entrances.discord]\nchanels = []\n", "entrances.discord.chanels: unknown key"),
        ("[access.email]\npolicy = 'closed'\n", "access.email.policy: Input should be"),
        ("[access]\nadmin = []\n", "access.admin: unknown key"),
        ("[coordinator]\naddress = 'fax:1'\n", "coordinator.address: unknown entrance 'fax'"),
    ],
)
def test_entrance_tables_are_validated_by_the_registry(
    toml: str, message: str, write_config: Callable[..., Path]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(toml))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_registered_entrance_gets_its_config_tables(
    loopback: Manifest[LoopbackSettings], write_config: Callable[..., Path]
) -> None:
    config = load_config(write_config(LOOPBACK_TOML))
    settings = loopback.settings_of(config)
    assert isinstance(settings, LoopbackSettings) and settings.greeting == "hi there"
    assert config.entrance("loopback") is settings
    assert config.access.entrance("loopback").allow == ["u1"]
    with pytest.raises(ConfigError, match=r"entrances\.loopback\.greting: unknown key"):
        load_config(write_config("[entrances.loopback]\ngreting = 'x'\n"))


def test_an_entrance_registered_after_loading_has_its_defaults(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(write_config())
    register(LOOPBACK)
    try:
        assert LOOPBACK.settings_of(config).greeting == "hello"
        assert config.access.entrance("loopback").policy == "open"
    finally:
        registry.unregister(LOOPBACK.name)


def test_the_coordinator_may_be_on_a_registered_entrance(
    loopback: Manifest[LoopbackSettings], write_config: Callable[..., Path]
) -> None:
    config = load_config(write_config("[coordinator]\naddress = 'loopback:u1'\n"))
    assert config.coordinator.parsed == AccountRef("loopback", "u1")


# The loopback entrance, registered from tests -------------------------------------------------


def test_register_refuses_a_taken_name(loopback: Manifest[LoopbackSettings]) -> None:
    register(loopback)  # the same manifest again: nothing changes
    assert list(manifests()) == [*SHIPPED, "loopback"]
    with pytest.raises(ValueError, match="already registered"):
        register(Manifest(name="telegram", label="T", runtime="m:C", settings=LoopbackSettings))


def test_mirror_entrances_lists_a_registered_entrance(
    loopback: Manifest[LoopbackSettings],
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from bot.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIRROR_LOOPBACK_SECRET", "s3cret")
    config = write_config(LOOPBACK_TOML.replace('greeting = "hi there"', "enabled = true"))
    result = CliRunner().invoke(app, ["entrances", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert list(rows) == [*SHIPPED, "loopback"]
    assert rows["loopback"]["ready"] and rows["loopback"]["label"] == "Loopback"
    assert rows["telegram"]["why_not"] == "set [entrances.telegram] enabled = true"
    assert runtime_class("loopback") is LoopbackEntrance


async def test_a_turn_on_a_registered_entrance(
    loopback: Manifest[LoopbackSettings], write_config: Callable[..., Path]
) -> None:
    config = load_config(write_config(LOOPBACK_TOML))
    inst = Instance(config, instance_id="loopback", entrance="loopback")
    await inst.start()
    try:
        reply = await inst.handle(
            Incoming(
                entrance="loopback",
                conversation_id="c1",
                conversation_kind="dm",
                author=Author(external_id="u1"),
                text="hello",
            )
        )
    finally:
        await inst.stop()
    assert reply is not None and reply.text
