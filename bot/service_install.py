"""`mirror service install`: what a systemd deployment needs, as a plan of small steps.

The plan is data (`Step`s), made by a pure function, so `--dry-run` prints exactly what a
real run does and tests check it without root. A real run performs the steps in order and
skips what is already in place (an existing user, folder, config, SOUL.md or env file is
never overwritten: re-running is safe). `root` stages everything under another folder
(like DESTDIR), for packaging and tests; users are still looked up on this machine.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "mirroros.service"


@dataclass(frozen=True)
class Layout:
    """Where a deployment lives."""

    user: str = "mirroros"
    prefix: Path = Path("/opt/mirroros")  # the checkout or virtualenv holding bin/mirror
    config_dir: Path = Path("/etc/mirroros")
    data_dir: Path = Path("/var/lib/mirroros")
    log_dir: Path = Path("/var/log/mirroros")
    unit_dir: Path = Path("/etc/systemd/system")

    @property
    def config_file(self) -> Path:
        return self.config_dir / "mirror.toml"

    @property
    def env_file(self) -> Path:
        return self.config_dir / "env"

    @property
    def soul_dir(self) -> Path:
        # Its own folder, writable by the service: a rollback or a console edit replaces
        # SOUL.md through a temporary file beside it.
        return self.config_dir / "soul"

    @property
    def soul_file(self) -> Path:
        return self.soul_dir / "SOUL.md"


@dataclass(frozen=True)
class Step:
    """One thing the installer does: `kind` is user | folder | copy | write."""

    kind: str
    path: Path | None
    detail: str
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644
    content: str | None = None  # write: the text; copy: None (source is in `source`)
    source: Path | None = None

    def describe(self) -> str:
        if self.kind == "user":
            return f"create system user {self.detail} (home {self.path}, no login shell)"
        where = f"{self.path} ({self.owner}:{self.group} {self.mode:04o})"
        if self.kind == "folder":
            return f"create folder {where}: {self.detail}"
        if self.kind == "copy":
            return f"copy {self.source} to {where}: {self.detail}"
        return f"write {where}: {self.detail}"


def unit_text(layout: Layout, mirror_bin: Path) -> str:
    """The systemd unit: `mirror up` as the service user, restarted when it fails."""
    return f"""\
# Written by `mirror service install`. `systemctl daemon-reload` after editing.
[Unit]
Description=MirrorOS persona (mirror up)
After=network-online.target
Wants=network-online.target

[Service]
User={layout.user}
Group={layout.user}
EnvironmentFile={layout.env_file}
Environment=MIRROR_CONFIG={layout.config_file}
Environment=PYTHONUNBUFFERED=1
WorkingDirectory={layout.data_dir}
ExecStart={mirror_bin} up
# SIGTERM lets every entrance finish its current turn; the children stop with `mirror up`.
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=60
# `mirror up` exits 1 when nothing can run, 2 on a bad config or unwritable memory.
Restart=on-failure
RestartSec=5
NoNewPrivileges=true
ProtectSystem=full
ReadWritePaths={layout.data_dir} {layout.log_dir}

[Install]
WantedBy=multi-user.target
"""


ENV_TEMPLATE = """\
# Secrets for MirrorOS (mode 0600; read by systemd as root). One VAR=value a line.
# MIRROR_TELEGRAM_TOKEN=123456:ABC...
# MIRROR_DISCORD_TOKEN=...
# MIRROR_EMAIL_PASSWORD=...
# ANTHROPIC_API_KEY=...
"""


def production_config(example: str, layout: Layout) -> str:
    """The example config with this layout's paths (memory, soul, log)."""
    text = example.replace('"/var/lib/mirroros/memory.db"', f'"{layout.data_dir / "memory.db"}"')
    soul = f'path = "{layout.soul_file}"'
    text = re.sub(r'(?m)^path = "/etc/mirroros/(soul/)?SOUL.md"', soul, text)
    if "[logging]" not in text:
        text += (
            f'\n[logging]\npath = "{layout.log_dir / "mirror.log"}"   # `mirror logs` reads it\n'
        )
    return text


def plan(layout: Layout, *, mirror_bin: Path, example_config: Path, soul: Path) -> list[Step]:
    """Every step of an install, in order."""
    user = layout.user
    steps: list[Step] = []
    if user != "root":
        steps.append(Step("user", layout.data_dir, user))
    steps += [
        Step(
            "folder",
            layout.config_dir,
            "config, SOUL.md and secrets (readable by the service, writable by root)",
            group=user,
            mode=0o750,
        ),
        Step("folder", layout.soul_dir, "SOUL.md (admins edit it live)", user, user, 0o750),
        Step("folder", layout.data_dir, "memory.db", owner=user, group=user, mode=0o750),
        Step("folder", layout.log_dir, "the log `mirror logs` reads", user, user, 0o750),
        Step(
            "write",
            layout.config_file,
            "the config (edit it, or run `mirror setup`)",
            group=user,
            mode=0o640,
            content=production_config(example_config.read_text(encoding="utf-8"), layout),
        ),
        Step(
            "copy",
            layout.soul_file,
            "the persona; admins edit it live",
            owner=user,
            group=user,
            mode=0o640,
            source=soul,
        ),
        Step("write", layout.env_file, "the secrets", mode=0o600, content=ENV_TEMPLATE),
        Step(
            "write",
            layout.unit_dir / UNIT_NAME,
            "the systemd unit",
            content=unit_text(layout, mirror_bin),
        ),
    ]
    return steps


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def staged(path: Path, root: Path | None) -> Path:
    return path if root is None else root / path.relative_to(path.anchor)


def perform(step: Step, *, root: Path | None = None) -> str:
    """Do one step (skipping what is in place); returns what happened, in a few words."""
    if step.kind == "user":
        if user_exists(step.detail):
            return f"user {step.detail} exists"
        home = str(step.path)
        subprocess.run(
            [
                "useradd",
                "--system",
                "--home-dir",
                home,
                "--shell",
                "/usr/sbin/nologin",
                step.detail,
            ],
            check=True,
            capture_output=True,
        )
        return f"created user {step.detail}"
    assert step.path is not None
    target = staged(step.path, root)
    if step.kind == "folder":
        existed = target.is_dir()
        target.mkdir(parents=True, exist_ok=True)
        _own(target, step)
        return f"{target} {'exists' if existed else 'created'}"
    if target.exists() and step.kind in {"copy", "write"} and not target.name.endswith(".service"):
        return f"{target} exists, kept"
    target.parent.mkdir(parents=True, exist_ok=True)
    if step.kind == "copy":
        assert step.source is not None
        shutil.copyfile(step.source, target)
    else:
        # Created with its final mode: the env file must never be readable by others.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, step.mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(step.content or "")
    _own(target, step)
    return f"{target} written"


def _own(target: Path, step: Step) -> None:
    os.chmod(target, step.mode)
    if os.geteuid() == 0:
        shutil.chown(target, step.owner, step.group)
