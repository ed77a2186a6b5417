"""The registry of entrances: every entrance's manifest, and the contract its runtime follows.

An entrance is a package `adapters/<name>/` whose `manifest.py` holds a `Manifest`: the
entrance's name, what the persona calls it in a sentence, its settings model for
`[entrances.<name>]`, the environment variable of its secret, its runtime class as a lazy
"module:Class" string, its message limit and splitter, what the platform can do. `REGISTRY`
lists the shipped manifests, one line each; `register()` adds one at run time (tests,
third-party entrances) without touching `bot/`. This is the only module in `bot/` that
names entrances, and it must stay cheap to import: pydantic only, never a platform SDK. A
manifest imports only its package's pure modules; the runtime is imported on first use,
so listing the entrances (`mirror --help`, `mirror status`, config validation) costs nothing.

The runtime contract: a class built as `Runtime(config, secret)` (secret: the value of the
manifest's `secret_env`, "" when it declares none) with
  async run()       start its `bot.instance.Instance`, connect to the platform, turn events
                    into `Incoming`, send `Instance.handle` replies split to the platform's
                    limits, deliver outbox rows (`Instance.deliver_outbox`), and return
                    after request_stop() once the current turn has finished;
  request_stop()    ask run() to finish (called from a signal handler).
Start-up problems the admin must fix (invalid token, refused intent) raise
`EntranceFailure` with one line: the CLI prints it and exits with code 2. The terminal
entrance (`terminal=True`, run by `mirror chat`) is built with keyword arguments instead:
`Runtime(config, instance_id=..., person=..., jsonl=..., banner=...)`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError


class HasEntrances(Protocol):
    """What `Manifest.settings_of` reads of a `bot.config.Config` (no import of config:
    config builds on this registry, not the other way round)."""

    def entrance(self, name: str) -> EntranceSettings: ...


Policy = Literal["open", "allowlist", "pairing"]


class EntranceAccess(BaseModel):
    """`[access.<name>]`: who may talk to the persona on one entrance."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    policy: Policy = "open"
    allow: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    bots: list[str] = Field(default_factory=list)


def read_secret(env: str) -> str | None:
    """A token or password: environment variable `env`, else the user's `.env` file.

    pydantic-settings is imported here, not at module level, to keep `mirror status` fast.
    """
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Secret(BaseSettings):
        model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

        value: str | None = Field(default=None, validation_alias=env)

    return Secret().value


# The one registry line per shipped entrance ("module:ATTRIBUTE" of its manifest), in the
# order they are listed to people.
REGISTRY = [
    "adapters.local.manifest:MANIFEST",
    "adapters.telegram.manifest:MANIFEST",
    "adapters.discord.manifest:MANIFEST",
    "adapters.email.manifest:MANIFEST",
    "adapters.web.manifest:MANIFEST",
]

# What a platform can do, as a manifest declares it:
#   buttons       outbox rows' payload["buttons"] become buttons; presses go to Instance.press
#   edits         it can edit a message it sent (a decision replaces the item's buttons)
#   typing        it shows "typing…" while a turn runs
#   command_menu  it publishes the slash commands in the platform's own menu
CAPABILITIES = frozenset({"buttons", "edits", "typing", "command_menu"})

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RUNTIME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class EntranceFailure(Exception):
    """A problem the admin must fix; the message is one line that says what to do."""


class UnknownEntrance(ValueError):
    """A name no manifest in the registry has; the message lists the known ones."""


class Entrance(Protocol):
    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


class EntranceSettings(BaseModel):
    """`[entrances.<name>]`: what every entrance has. A manifest's model adds its own keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = False
    style: str = "conversational"


S = TypeVar("S", bound=EntranceSettings)


def keep_whole(text: str, limit: int) -> list[str]:
    """The splitter of an entrance with no message limit: one message, none when blank."""
    return [text] if text.strip() else []


@dataclass(frozen=True, kw_only=True)
class Manifest(Generic[S]):
    """What `bot/` knows about one entrance, without importing its runtime or SDK."""

    name: str  # "telegram": [entrances.telegram], `mirror run telegram`, ENTRANCE:ID
    label: str  # in the persona's sentences: "my Telegram side", "my email side"
    runtime: str  # "module:Class", imported on first use (`runtime_class`)
    settings: type[S]  # the model of [entrances.<name>]
    access: type[EntranceAccess] = EntranceAccess  # the model of [access.<name>]
    aliases: tuple[str, ...] = ()  # other words people use for it ("mail")
    secret_env: str | None = None  # the environment variable holding its token or password
    message_limit: int | None = None  # longest message the platform takes; None: no limit
    split: Callable[[str, int], list[str]] = keep_whole  # (text, limit) -> messages, pure
    capabilities: frozenset[str] = field(default_factory=frozenset)  # from CAPABILITIES
    exclusive: bool = True  # one process holds the entrance at a time (its lease)
    terminal: bool = False  # the entrance of this terminal, run by `mirror chat`
    casefold_ids: bool = False  # account ids compare case-insensitively (mail addresses)
    hosted: bool = False  # runs inside the console process (`mirror console`), not its own

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"entrance name {self.name!r}: lowercase letters, digits and _")
        if not _RUNTIME.match(self.runtime):
            raise ValueError(f"entrance {self.name}: runtime {self.runtime!r} is not module:Class")
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(
                f"entrance {self.name}: unknown capabilities {sorted(unknown)}; "
                f"one of {', '.join(sorted(CAPABILITIES))}"
            )
        if self.message_limit is not None and self.message_limit < 1:
            raise ValueError(f"entrance {self.name}: message_limit must be positive")

    def settings_of(self, config: HasEntrances) -> S:
        """This entrance's `[entrances.<name>]`, typed as its own model."""
        found = config.entrance(self.name)
        if not isinstance(found, self.settings):
            raise TypeError(f"[entrances.{self.name}] is a {type(found).__name__}")
        return found

    def chunks(self, text: str) -> list[str]:
        """`text` as the messages this platform takes, in order."""
        if self.message_limit is None:
            return keep_whole(text, 0)
        return self.split(text, self.message_limit)

    def secret(self) -> str | None:
        """Its secret from the environment or `.env`; None when unset or none is needed."""
        if self.secret_env is None:
            return None
        return read_secret(self.secret_env)

    def words(self) -> tuple[str, ...]:
        """The words a person may use for this entrance: its name, label and aliases."""
        return tuple(dict.fromkeys((self.name, self.label.lower(), *self.aliases)))


# The registry ---------------------------------------------------------------------------

_shipped: dict[str, Manifest[Any]] | None = None
_added: dict[str, Manifest[Any]] = {}


def _attribute(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def manifests() -> dict[str, Manifest[Any]]:
    """Every known entrance by name: the shipped ones (`REGISTRY`, loaded once), then those
    added with `register`. A fresh dict: changing it changes nothing."""
    global _shipped
    if _shipped is None:
        loaded: dict[str, Manifest[Any]] = {}
        for path in REGISTRY:
            found = _attribute(path)
            if not isinstance(found, Manifest):
                raise TypeError(f"{path} is not a bot.entrance.Manifest")
            if found.name in loaded:
                raise ValueError(f"{path}: a second entrance named {found.name!r}")
            loaded[found.name] = found
        _shipped = loaded
    return {**_shipped, **_added}


def names() -> list[str]:
    return list(manifests())


def known() -> str:
    """The known entrances for an error message: "local, telegram, discord, email"."""
    return ", ".join(manifests())


def manifest(name: str) -> Manifest[Any]:
    found = manifests().get(name)
    if found is None:
        raise UnknownEntrance(f"unknown entrance {name!r}; one of {known()}")
    return found


def register(new: Manifest[Any]) -> None:
    """Add an entrance at run time (tests, third-party entrances): no line in bot/ changes.

    Registering the same manifest again is a no-op; another one under a taken name is refused.
    """
    current = manifests().get(new.name)
    if current is not None and current != new:
        raise ValueError(f"an entrance named {new.name!r} is already registered")
    if current is None:
        _added[new.name] = new


def unregister(name: str) -> None:
    """Forget an entrance `register` added (the shipped ones stay)."""
    _added.pop(name, None)


def casefolds_ids(entrance: str) -> bool:
    """Does this entrance compare account ids case-insensitively (mail addresses)?"""
    found = manifests().get(entrance)
    return found is not None and found.casefold_ids


def terminal() -> Manifest[Any]:
    """The entrance of this terminal (`mirror chat`, and `mirror up` with nothing else)."""
    for found in manifests().values():
        if found.terminal:
            return found
    raise UnknownEntrance(f"no terminal entrance; entrances: {known()}")


def platforms() -> list[Manifest[Any]]:
    """The entrances `mirror up` runs as processes of their own: all but the terminal one
    and those the console hosts."""
    return [found for found in manifests().values() if not found.terminal and not found.hosted]


def named_by(word: str) -> str | None:
    """The entrance a person means by `word` ("mail" -> "email"), if any."""
    word = word.lower()
    for found in manifests().values():
        if word in found.words():
            return found.name
    return None


def runtime_class(name: str) -> Any:
    """The runtime class of an entrance, imported on first use: bot/ never imports adapters/
    at module level (adapters depend on bot, not the other way round)."""
    return _attribute(manifest(name).runtime)


def load_entrance(name: str, config: HasEntrances, secret: str) -> Entrance:
    entrance: Entrance = runtime_class(name)(config, secret)
    return entrance


# Validating per-entrance config tables ---------------------------------------------------


def validate_tables(
    raw: object, model_of: Callable[[Manifest[Any]], type[BaseModel]]
) -> dict[str, Any]:
    """`{name: table}` from the config file as `{name: model}` for every known entrance
    (defaults for the absent ones). Errors keep their full location: an unknown name is
    `(name,)` "unknown entrance; one of …", a bad key `(name, key)`, so the caller's
    one-line message names e.g. `entrances.telegram.base_url`."""
    if isinstance(raw, BaseModel) or not isinstance(raw, Mapping):
        raise PydanticCustomError("entrance_tables", "a table of entrances, one per name")
    known_manifests = manifests()
    tables: dict[str, Any] = {}
    for name, value in raw.items():
        found = known_manifests.get(name)
        if found is None:
            raise ValidationError.from_exception_data(
                "entrances",
                [
                    {
                        "type": PydanticCustomError(
                            "unknown_entrance",
                            "unknown entrance; one of {known}",
                            {"known": known()},
                        ),
                        "loc": (name,),
                        "input": value,
                    }
                ],
            )
        try:
            tables[name] = model_of(found).model_validate(value)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(
                exc.title,
                [
                    # The message as pydantic wrote it, its type kept (e.g. extra_forbidden).
                    {
                        "type": PydanticCustomError(e["type"], e["msg"]),
                        "loc": (name, *e["loc"]),
                        "input": e["input"],
                    }
                    for e in exc.errors()
                ],
            ) from None
    # Registry order, whatever the file's order.
    return {
        name: tables[name] if name in tables else model_of(found)()
        for name, found in known_manifests.items()
    }
