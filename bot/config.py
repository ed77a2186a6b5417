"""Configuration: config/mirror.toml (data, defaults that run offline) plus the environment.

Secrets come only from the environment or a user-made `.env` (pydantic-settings), never
from the TOML file. A bad config raises `ConfigError` with one line naming the key; the CLI
turns that into exit code 2. `[entrances.<name>]` and `[access.<name>]` are validated by
the models of the entrance registry (`bot.entrance`): read them with `Config.entrance(name)`
and `AccessConfig.entrance(name)`. This module must stay cheap to import (no litellm, no
SDKs; the registry loads manifests, never runtimes).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from bot.accounts import AccountRef
from bot.entrance import (
    EntranceSettings,
    manifest,
    manifests,
    terminal,
    validate_tables,
)
from bot.guard_config import AccessConfig, GuardConfig, LimitsConfig

DEFAULT_CONFIG_PATH = Path("config/mirror.toml")


class ConfigError(Exception):
    """A configuration problem, described in one line that names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def memory_location(value: Any) -> Any:
    """A `postgresql://` URL stays text (memory on PostgreSQL); anything else is a path.

    A URL that went through a `Path` (a `--db` option: "postgresql:/user@host/db") gets
    its second slash back; give a socket folder as a percent-encoded host
    (postgresql://%2Frun%2Fpostgresql/db), which survives that."""
    if isinstance(value, Path | str):
        text = str(value)
        for scheme in ("postgresql:", "postgres:"):
            if text.startswith(scheme + "/") and not text.startswith(scheme + "//"):
                return scheme + "/" + text[len(scheme) :]
            if text.startswith(scheme + "//"):
                return text
        return Path(value)
    return value


class MemoryConfig(Section):
    # A SQLite file, or a postgresql:// URL (the memory of entrances on several hosts).
    path: Annotated[Path | str, BeforeValidator(memory_location)] = Path("var/memory.db")
    # postgresql://user:password@host:5432/db?sslmode=verify-full: wins over `path` (env
    # MIRROR_DB overrides both).
    url: str | None = None
    busy_timeout_ms: int = Field(default=5000, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _url_is_the_location(cls, data: Any) -> Any:
        if isinstance(data, dict) and str(data.get("url") or "").startswith("postgres"):
            data = {**data, "path": data["url"]}
        return data

    @field_validator("url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (a SQLite file goes in `path`)")
        return value

    @property
    def engine(self) -> str:
        """'postgresql' or 'sqlite'."""
        return "postgresql" if isinstance(self.path, str) else "sqlite"

    @property
    def shown(self) -> str:
        """Where memory is, for logs and status lines: a URL without its password."""
        return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", str(self.path))


class RecallConfig(Section):
    """`[recall]`: recall by meaning (bot.recall) beside FTS5. "auto": on when the
    `mirroros[recall]` extra and the model package are installed."""

    enabled: bool | Literal["auto"] = "auto"
    # Vectors a process keeps in RAM (int8, 0.65 KiB each), newest first: messages and
    # notes (facts) separately, so a flood of chatter never pushes the facts out.
    max_messages: int = Field(default=16_000, ge=0)
    max_notes: int = Field(default=4_000, ge=0)
    max_intentions: int = Field(default=2_000, ge=0)  # intentions, newest first (issue 21)
    # Cosine below it: not recalled by meaning alone. 0.2: the highest floor that keeps the
    # recall bench's paraphrase recall@5 (0.3 cut it from 64% to 53%: half the facts told
    # are within 0.32 of the question asking for them; bench/recall.py).
    min_similarity: float = Field(default=0.2, ge=-1, le=1)
    # Seconds without an embedding after which a process gives the encoder's weight pages
    # back (bot.embedding `release_pages`: 50-60 MiB resident; mapping them again costs the
    # next embedding about 1 ms). 0: keep them.
    release_after_s: float = Field(default=5.0, ge=0)
    # What embeds: "numpy" (float32, the reference; its weights are file pages an idle
    # process gives back) or "int8" (onnxruntime, the `recall-int8` extra: ~7x less CPU a
    # query, ~50 MiB more resident a process, kept when idle; bot/embedding_onnx.py).
    # "auto": int8 where one process embeds for a host's entrances (bot/recall_host.py:
    # its memory is paid once) when installed, numpy in a process that embeds for itself.
    encoder: Literal["auto", "numpy", "int8"] = "auto"


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
    # The model's context window in tokens (prompt + answer); None: litellm's model info
    # when it knows the model, else only the per-section budgets of bot.context apply.
    context_tokens: int | None = Field(default=None, gt=0)
    # The model's tokenizer.json (Hugging Face format), so prompts are measured in its real
    # tokens; None: litellm's default tokenizer (tiktoken), an approximation.
    tokenizer: Path | None = None
    # The config file these settings came from, for the offline brain's notice (None: the
    # embedded defaults). Not a TOML key.
    source: Path | None = Field(default=None, exclude=True)
    # Why the offline brain answers instead of the configured model (the daily budget is
    # spent), for its notice. Not a TOML key.
    offline_because: str | None = Field(default=None, exclude=True)


class LoggingConfig(Section):
    """[logging]: the log file `mirror up` always writes (with its children's lines), and
    `mirror chat` when run in a terminal (which then shows only warnings and errors on
    screen); `mirror logs` reads it. Without a path, it is `log/mirror.log` beside
    memory.db. Not in a terminal, the log also goes to stderr (journald, pipes, tests)."""

    path: Path | None = None
    max_bytes: int = Field(default=1024 * 1024, gt=0)
    backups: int = Field(default=3, ge=0)


class PersonaConfig(Section):
    timezone: str = "UTC"
    instance_dead_after_s: float = Field(default=30, gt=0)
    # A reminder asked for a day without a time of day ("tomorrow") is due then (HH:MM).
    reminder_time: str = "09:00"

    @field_validator("reminder_time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        import re

        match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise ValueError(f"not a time of day (HH:MM): {value!r}")
        return f"{int(match.group(1)):02d}:{match.group(2)}"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value


class SchedulerConfig(Section):
    interval_s: float = Field(default=2.0, gt=0)
    lease_s: float = Field(default=6.0, gt=0)
    expire_after_s: float = Field(default=7 * 86400, gt=0)
    # A follow-up of a due intention still not delivered this long after it fell due (its
    # entrance is down): the coordinator is told once; it still goes out when it can.
    due_give_up_after_s: float = Field(default=6 * 3600, gt=0)


class TurnsConfig(Section):
    """[turns]: what happens to a message whose turn a crash or a failing model cut short.

    The next holder of the entrance answers it (saying it is late past `late_after_s`);
    a turn every model failed is tried again after `retry_after_s`, doubling, at most
    `attempts` times; past `give_up_after_s` it is marked missed and the coordinator told.
    """

    late_after_s: float = Field(default=300, gt=0)
    give_up_after_s: float = Field(default=6 * 3600, gt=0)
    retry_after_s: float = Field(default=60, gt=0)
    attempts: int = Field(default=3, ge=1)
    check_every_s: float = Field(default=30, gt=0)


class ConsoleConfig(Section):
    """[console]: the web console (`mirror console`; `mirror up` runs it when enabled).

    Bound to loopback by default. Any other host is refused unless `behind_proxy` says a
    TLS-terminating proxy is in front (then session cookies are also marked Secure)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8377, ge=0, le=65535)
    behind_proxy: bool = False
    session_hours: float = Field(default=12, gt=0)
    sign_in_link_minutes: float = Field(default=15, gt=0)
    failed_sign_ins_per_hour: int = Field(default=10, ge=1)


class CoordinatorConfig(Section):
    # The terminal entrance's "coordinator" account, so a fresh install runs offline.
    address: str = Field(default_factory=lambda: f"{terminal().name}:coordinator")
    remind_after_s: float = Field(default=3600, gt=0)
    escalate_after_s: float = Field(default=86400, gt=0)

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        account = AccountRef.parse(value)
        if account.entrance not in manifests():
            raise ValueError(
                f"unknown entrance {account.entrance!r} in {value!r}; "
                f"one of {', '.join(manifests())}"
            )
        return account.key

    @property
    def parsed(self) -> AccountRef:
        return AccountRef.parse(self.address)


class EntranceTable(dict[str, EntranceSettings]):
    """`[entrances.*]`: each entrance's settings, as its manifest's model, by name.

    Validated against the registry: an unknown name is an error naming the known ones, and
    every known entrance has an entry (its defaults when the file has no table for it).
    Read it with `Config.entrance(name)` or `MANIFEST.settings_of(config)`.
    """

    @classmethod
    def of(cls, raw: object) -> EntranceTable:
        return cls(validate_tables(raw, lambda found: found.settings))

    @classmethod
    def defaults(cls) -> EntranceTable:
        return cls.of({})

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda raw: raw if isinstance(raw, cls) else cls.of(raw),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda table: {name: settings.model_dump() for name, settings in table.items()}
            ),
        )


class Config(Section):
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    soul: SoulConfig = Field(default_factory=SoulConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    persona: PersonaConfig = Field(default_factory=PersonaConfig)
    coordinator: CoordinatorConfig = Field(default_factory=CoordinatorConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    turns: TurnsConfig = Field(default_factory=TurnsConfig)
    entrances: EntranceTable = Field(default_factory=EntranceTable.defaults)
    access: AccessConfig = Field(default_factory=AccessConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    recall: RecallConfig = Field(default_factory=RecallConfig)

    # Where the file came from (None: embedded defaults). Not a TOML key.
    source: Path | None = Field(default=None, exclude=True)
    # `mirror run ENTRANCE --standby`: wait for the entrance's lease instead of refusing.
    standby: bool = Field(default=False, exclude=True)

    @property
    def log_path(self) -> Path:
        """The log file: [logging] path, else `log/mirror.log` beside memory.db (under
        var/ when memory is on PostgreSQL)."""
        beside = self.memory.path.parent if isinstance(self.memory.path, Path) else Path("var")
        return self.logging.path or beside / "log" / "mirror.log"

    def entrance(self, name: str) -> EntranceSettings:
        """`[entrances.<name>]` as that entrance's settings model (its defaults when absent).

        Raises `bot.entrance.UnknownEntrance` for a name no manifest has."""
        found = self.entrances.get(name)
        if found is None:  # registered after this config was loaded
            found = self.entrances[name] = manifest(name).settings()
        return found


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
        except UnicodeDecodeError as exc:
            line = exc.object[: exc.start].count(b"\n") + 1
            raise ConfigError(
                f"config file {chosen} is not UTF-8: byte 0x{exc.object[exc.start]:02x} on "
                f"line {line} (save it as UTF-8)"
            ) from None
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
        config.memory.path = memory_location(db if db is not None else env_db)
    config.source = config.model.source = source
    if source is not None:
        environment_from_dotenv(source.parent / ".env")
    environment_from_dotenv(Path(".env"))
    return config


def environment_from_dotenv(path: Path) -> None:
    """Copy a `.env`'s variables into the environment, never over one already set.

    Read: the `.env` beside the config file (where `mirror setup` writes it), then the one in
    the working directory. Secrets and a model's key (OPENAI_API_KEY, …, which litellm
    reads only from the environment) reach every process this way; children inherit them."""
    if path.is_file():
        for key, value in read_dotenv(path).items():
            os.environ.setdefault(key, value)


_DOTENV_LINE = re.compile(
    r"""^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"""
    r"""(?:'([^']*)'|"((?:[^"\\]|\\.)*)"|(.*?))(?:\s+\#.*)?\s*$"""
)
_DOTENV_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=value lines of a `.env` (optionally `export`ed; 'single-quoted' literally,
    "double-quoted" with backslash escapes, bare values up to a # comment). No variable
    expansion. Parsed here rather than with python-dotenv, whose import alone would add tens
    of milliseconds to `mirror status`."""
    found: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return found
    for line in text.splitlines():
        match = _DOTENV_LINE.match(line)
        if match is None:
            continue
        key, single, double, bare = match.groups()
        if single is not None:
            value = single
        elif double is not None:
            value = re.sub(r"\\(.)", lambda m: _DOTENV_ESCAPES.get(m.group(1), m.group(1)), double)
        else:
            value = bare.strip()
        found[key] = value
    return found
