"""Configuration: config/mirror.toml (data, defaults that run offline) plus the environment.

Secrets come only from the environment or a user-made `.env` (pydantic-settings), never
from the TOML file. A bad config raises `ConfigError` with one line naming the key; the CLI
turns that into exit code 2. This module must stay cheap to import (no litellm, no SDKs).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.guard_config import AccessConfig, GuardConfig, LimitsConfig

DEFAULT_CONFIG_PATH = Path("config/mirror.toml")
ENTRANCES = ("local", "telegram", "discord", "email")
_ADDRESS = re.compile(r"^(?P<entrance>[a-z][a-z0-9_]*):(?P<id>\S+)$")


class ConfigError(Exception):
    """A configuration problem, described in one line that names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MemoryConfig(Section):
    path: Path = Path("var/memory.db")
    busy_timeout_ms: int = Field(default=5000, ge=0)


class SoulConfig(Section):
    path: Path = Path("soul/SOUL.md")
    max_bytes: int = Field(default=32 * 1024, gt=0)


class ModelConfig(Section):
    name: str = "mirror/offline"
    fallbacks: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=60, gt=0)
    retries: int = Field(default=2, ge=0)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    api_base: str | None = None
    temperature: float | None = None
    max_tokens: int = Field(default=800, gt=0)


class PersonaConfig(Section):
    timezone: str = "UTC"
    instance_dead_after_s: float = Field(default=30, gt=0)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value


class Address(BaseModel):
    """ENTRANCE:ID, e.g. "telegram:123456" or "email:carol@example.org"."""

    entrance: str
    id: str

    @classmethod
    def parse(cls, value: str) -> Address:
        match = _ADDRESS.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not ENTRANCE:ID (for example 'telegram:123456')")
        entrance = match["entrance"]
        if entrance not in ENTRANCES:
            raise ValueError(f"unknown entrance {entrance!r} in {value!r}; one of {ENTRANCES}")
        # Mail addresses compare case-insensitively; platform ids are exact.
        external_id = match["id"].lower() if entrance == "email" else match["id"]
        return cls(entrance=entrance, id=external_id)

    def __str__(self) -> str:
        return f"{self.entrance}:{self.id}"


class SchedulerConfig(Section):
    interval_s: float = Field(default=2.0, gt=0)
    lease_s: float = Field(default=6.0, gt=0)
    expire_after_s: float = Field(default=7 * 86400, gt=0)


class CoordinatorConfig(Section):
    address: str = "local:coordinator"
    remind_after_s: float = Field(default=3600, gt=0)
    escalate_after_s: float = Field(default=86400, gt=0)

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return str(Address.parse(value))

    @property
    def parsed(self) -> Address:
        return Address.parse(self.address)


class EntranceConfig(Section):
    enabled: bool = False
    style: str = "conversational"


class LocalEntrance(EntranceConfig):
    enabled: bool = True


class TelegramEntrance(EntranceConfig):
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    style: str = "short answers for a phone screen"
    group_reply: Literal["mention", "always"] = "mention"


class DiscordEntrance(EntranceConfig):
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg"
    channels: list[str] = Field(default_factory=list)


class EmailEntrance(EntranceConfig):
    address: str = ""
    username: str = ""
    imap_host: str = ""
    imap_port: int = Field(default=993, gt=0, lt=65536)
    smtp_host: str = ""
    smtp_port: int = Field(default=465, gt=0, lt=65536)
    security: Literal["ssl", "starttls", "none"] = "ssl"
    style: str = "complete, structured, with greeting and sign-off"
    allow_senders: list[str] = Field(default_factory=list)
    max_message_bytes: int = Field(default=1_000_000, gt=0)
    poll_interval_s: float = Field(default=30, gt=0)


class Entrances(Section):
    local: LocalEntrance = Field(default_factory=LocalEntrance)
    telegram: TelegramEntrance = Field(default_factory=TelegramEntrance)
    discord: DiscordEntrance = Field(default_factory=DiscordEntrance)
    email: EmailEntrance = Field(default_factory=EmailEntrance)


class Config(Section):
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    soul: SoulConfig = Field(default_factory=SoulConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    persona: PersonaConfig = Field(default_factory=PersonaConfig)
    coordinator: CoordinatorConfig = Field(default_factory=CoordinatorConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    entrances: Entrances = Field(default_factory=Entrances)
    access: AccessConfig = Field(default_factory=AccessConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    # Where the file came from (None: embedded defaults). Not a TOML key.
    source: Path | None = Field(default=None, exclude=True)
    # `mirror run ENTRANCE --standby`: wait for the entrance's lease instead of refusing.
    standby: bool = Field(default=False, exclude=True)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = first["msg"].removeprefix("Value error, ")
    return f"{key}: {message}"


def load_config(path: Path | str | None = None, *, db: Path | str | None = None) -> Config:
    """Load the config file (flag > MIRROR_CONFIG > config/mirror.toml > embedded defaults).

    The memory path is overridden by `db`, else by MIRROR_DB.
    """
    env_config = os.environ.get("MIRROR_CONFIG") or None
    explicit = path is not None or env_config is not None
    chosen = Path(path) if path is not None else Path(env_config or DEFAULT_CONFIG_PATH)

    data: dict[str, Any] = {}
    source: Path | None = None
    if explicit or chosen.exists():
        try:
            with chosen.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {chosen} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"config file {chosen} is unreadable: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {chosen} is not valid TOML: {exc}") from None
        source = chosen

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}{_describe(exc)}") from None

    env_db = os.environ.get("MIRROR_DB") or None
    if db is not None or env_db is not None:
        config.memory.path = Path(db if db is not None else env_db)  # type: ignore[arg-type]
    config.source = source
    return config


class SecretValues(BaseModel):
    telegram_token: str | None = None
    discord_token: str | None = None
    email_password: str | None = None


def load_secrets() -> SecretValues:
    """Tokens and passwords: environment variables or a `.env` the user creates.

    pydantic-settings is imported here, not at module level, to keep `mirror status` fast.
    """
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Secrets(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="MIRROR_", env_file=".env", extra="ignore", env_ignore_empty=True
        )

        telegram_token: str | None = None
        discord_token: str | None = None
        email_password: str | None = None

    return SecretValues.model_validate(Secrets().model_dump())


def entrance_secret_env(entrance: str) -> str | None:
    """The environment variable holding an entrance's secret, if it needs one."""
    return {
        "telegram": "MIRROR_TELEGRAM_TOKEN",
        "discord": "MIRROR_DISCORD_TOKEN",
        "email": "MIRROR_EMAIL_PASSWORD",
    }.get(entrance)


def secret_for(entrance: str, secrets: SecretValues | None = None) -> str | None:
    secrets = secrets or load_secrets()
    return {
        "telegram": secrets.telegram_token,
        "discord": secrets.discord_token,
        "email": secrets.email_password,
    }.get(entrance)
