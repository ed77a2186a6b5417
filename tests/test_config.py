"""Configuration: embedded defaults, overrides, and one clear line for every bad config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from tests.conftest import ROOT, run_mirror


def test_shipped_config_runs_offline() -> None:
    config = load_config(ROOT / "config" / "mirror.toml")
    assert config.model.name == "mirror/offline"
    assert not config.entrance("telegram").enabled
    assert config.coordinator.parsed.entrance == "local"


def test_shipped_config_makes_the_terminal_person_coordinator_and_admin() -> None:
    from bot.cli import LOCAL_PERSON

    config = load_config(ROOT / "config" / "mirror.toml")
    assert config.coordinator.address == f"local:{LOCAL_PERSON}"
    assert config.access.admins == [f"local:{LOCAL_PERSON}"]


def test_embedded_defaults_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIRROR_CONFIG", raising=False)
    config = load_config()
    assert config.source is None and config.memory.path == Path("var/memory.db")


def test_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: Callable[..., Path]
) -> None:
    path = write_config()
    monkeypatch.setenv("MIRROR_CONFIG", str(path))
    monkeypatch.setenv("MIRROR_DB", str(tmp_path / "other.db"))
    config = load_config()
    assert config.source == path and config.memory.path == tmp_path / "other.db"
    assert load_config(db=tmp_path / "flag.db").memory.path == tmp_path / "flag.db"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[model]\nnmae = 'x'\n", "model.nmae: unknown key"),
        ("[entrances.telegram]\nenabled = 'perhaps'\n", "entrances.telegram.enabled"),
        ("[coordinator]\naddress = 'carol'\n", "coordinator.address: 'carol' is not ENTRANCE:ID"),
        ("[coordinator]\naddress = 'fax:123'\n", "coordinator.address: unknown entrance 'fax'"),
        ("[persona]\ntimezone = 'Mars/Olympus'\n", "persona.timezone: unknown timezone"),
        ("[model\nname=", "is not valid TOML"),
        ("[entrances.email]\nsecurity = 'maybe'\n", "entrances.email.security"),
        (
            "[entrances.foo]\nenabled = true\n",
            "entrances.foo: unknown entrance; one of local, telegram, discord, email, web",
        ),
    ],
)
def test_bad_config_is_one_line_naming_the_key(
    toml: str, message: str, write_config: Callable[..., Path]
) -> None:
    path = write_config(toml)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(path)
    result = run_mirror("status", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config error" in lines[0] and "Traceback" not in result.stderr


def test_missing_and_unreadable_config(tmp_path: Path) -> None:
    result = run_mirror("status", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    result = run_mirror("status", "--config", str(directory))
    assert result.returncode == 2 and "unreadable" in result.stderr


def test_a_config_that_is_not_utf8_is_one_line_naming_the_file_and_the_byte(
    tmp_path: Path,
) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[persona]\n# the café on the corner\ntimezone = "UTC"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"config file {path} is not UTF-8: byte 0xe9 on line 2 (save it as UTF-8)"
    )
    result = run_mirror("--config", str(path), "status")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"mirror: config error: {raised.value}"]
