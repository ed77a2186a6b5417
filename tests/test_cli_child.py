"""`mirror run NAME` without Typer (bot/cli/child.py): the command lines `mirror up` and the
service units write take the lean door, every other one Typer's, and both doors say the
same thing when the process cannot run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.cli import plain_run
from bot.supervisor import mirror_argv
from tests.conftest import run_mirror


def test_the_command_lines_mirror_up_writes_take_the_lean_door() -> None:
    argv = mirror_argv("run", "telegram", "--standby", "--config", "c.toml", "--db", "m.db")
    assert plain_run(argv[3:]) == {
        "entrance": "telegram",
        "standby": True,
        "config": "c.toml",
        "db": "m.db",
        "verbose": False,
    }
    # Global options before the command, as a service unit may write them.
    assert plain_run(["-v", "--config", "a.toml", "run", "scheduler"]) == {
        "entrance": "scheduler",
        "standby": False,
        "config": "a.toml",
        "db": None,
        "verbose": True,
    }
    # The command's --config overrides the global one, as under Typer.
    found = plain_run(["--config", "a.toml", "run", "email", "--config", "b.toml"])
    assert found is not None and found["config"] == "b.toml"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "--help"],
        ["--help", "run", "telegram"],
        ["run", "telegram", "extra"],
        ["run", "telegram", "--no-standby"],
        ["run", "telegram", "-v"],  # -v is a global option: Typer says so
        ["run", "telegram", "--config"],
        ["run", "telegram", "--config=c.toml"],
        ["--standby", "run", "telegram"],
        ["status"],
        ["up"],
    ],
)
def test_every_other_command_line_goes_through_typer(argv: list[str]) -> None:
    assert plain_run(argv) is None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", "nosuch"), "mirror: unknown entrance 'nosuch'"),
        (("run", "local"), "mirror: the local entrance runs in a terminal: use `mirror chat`"),
        (("run", "telegram"), "mirror: telegram: set MIRROR_TELEGRAM_TOKEN in the environment"),
    ],
)
def test_both_doors_refuse_alike(
    write_config: Callable[..., Path], args: tuple[str, ...], says: str
) -> None:
    config = write_config("")
    lean = run_mirror(*args, "--config", str(config), MIRROR_TELEGRAM_TOKEN="")
    # `--config=` is not a spelling the lean door takes: this one goes through Typer.
    typer = run_mirror(*args, f"--config={config}", MIRROR_TELEGRAM_TOKEN="")
    assert (lean.returncode, typer.returncode) == (2, 2), (lean.stderr, typer.stderr)
    assert says in lean.stderr.splitlines()[-1]
    assert lean.stderr.splitlines()[-1] == typer.stderr.splitlines()[-1]


def test_a_bad_config_is_one_line_through_the_lean_door(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text("[model\n", encoding="utf-8")
    result = run_mirror("run", "scheduler", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith("mirror: config error:"), result.stderr
    assert "Traceback" not in result.stderr
