"""Configuration of the guard: [access], [guard] and [limits] in config/mirror.toml.

Pydantic models only (cheap to import, no IO). The defaults keep MirrorOS open and
offline-friendly: every entrance is `open`, no admin list, no daily model budget, and the
loop, echo and rate limits are generous enough that a person chatting never meets them.

```toml
[access]
admins = ["telegram:123456"]     # ENTRANCE:ID; may use /soul …, /pending, /approve-pair
pairing_code_ttl_s = 3600        # a pairing code is valid this long, once
pairing_codes_per_day = 3        # codes one unknown account can obtain per 24 h
link_code_ttl_s = 600            # /link CODE must be repeated within this time

[access.telegram]                # [access.NAME] for any entrance in bot.entrance's registry
policy = "pairing"               # open | allowlist | pairing
allow = ["123456"]               # external ids always let in
groups = ["-100200300"]          # group chats / channels / guilds it speaks in; [] = all
bots = []                        # bot accounts it may talk to (others are ignored)

[guard]
max_message_chars = 8000         # longer incoming text is cut with a note
echo_window_s = 86400            # text it sent this recently is recognised coming back
bot_exchanges_per_conversation = 8
bot_exchanges_per_hour = 20

[limits]
person_per_minute = 30           # token bucket per person (linked accounts share it); 0 = off
person_burst = 20
entrance_per_minute = 600        # token bucket per entrance, across all processes; 0 = off
entrance_burst = 200
daily_tokens = 0                 # model tokens per UTC day, then the offline brain; 0 = off
daily_cost_usd = 0.0             # model cost per UTC day, then the offline brain; 0 = off
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    field_validator,
    model_validator,
)

from bot.accounts import AccountRef
from bot.entrance import EntranceAccess

if TYPE_CHECKING:  # bot.guard imports bot.models: not for every command's start-up
    from bot.guard import BotBudget


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AccessConfig(_Section):
    """[access]: admins, pairing and link codes, and per-entrance policies.

    `[access.NAME]` is a table for an entrance of the registry (`bot.entrance`), validated
    by its manifest's access model; a table for no known entrance is an error naming them.
    """

    admins: list[str] = Field(default_factory=list)
    pairing_code_ttl_s: float = Field(default=3600, gt=0)
    pairing_codes_per_day: int = Field(default=3, ge=1)
    link_code_ttl_s: float = Field(default=600, gt=0)
    code_attempts_per_hour: int = Field(default=10, ge=1)
    _entrances: dict[str, EntranceAccess] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _entrance_tables(
        cls, data: Any, handler: ModelWrapValidatorHandler[AccessConfig]
    ) -> AccessConfig:
        if not isinstance(data, dict):
            return handler(data)
        # Tables are entrances; any other unknown key stays for pydantic ("unknown key").
        tables = {k: v for k, v in data.items() if k not in cls.model_fields and _table(v)}
        config = handler({k: v for k, v in data.items() if k not in tables})
        from bot.entrance import validate_tables

        config._entrances = validate_tables(tables, lambda found: found.access)
        return config

    @field_validator("admins")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [AccountRef.parse(item).key for item in value]

    def entrance(self, name: str) -> EntranceAccess:
        """`[access.<name>]` (the defaults for an entrance the file does not mention)."""
        found = self._entrances.get(name)
        if found is None:
            from bot.entrance import manifests

            known = manifests().get(name)
            if known is None:
                return EntranceAccess()
            found = self._entrances[name] = known.access()  # registered after loading
        return found


def _table(value: object) -> bool:
    return isinstance(value, dict | EntranceAccess)


class GuardConfig(_Section):
    """[guard]: bad input, echoes and loops."""

    max_message_chars: int = Field(default=8000, ge=256)
    echo_window_s: float = Field(default=86400, gt=0)
    echo_min_chars: int = Field(default=32, ge=1)
    echo_min_fragment_chars: int = Field(default=48, ge=1)
    echo_candidates: int = Field(default=64, ge=1)  # sent texts compared per check, at most
    acknowledge_echo: bool = True
    bot_exchanges_per_conversation: int = Field(default=8, ge=0)
    bot_exchanges_per_hour: int = Field(default=20, ge=0)
    bot_streak_gap_s: float = Field(default=600, gt=0)
    bot_cooldown_s: float = Field(default=3600, gt=0)
    bot_ack_run: int = Field(default=2, ge=0)
    bot_repeat_run: int = Field(default=3, ge=0)

    @property
    def bot_budget(self) -> BotBudget:
        from bot.guard import BotBudget

        return BotBudget(
            per_conversation=self.bot_exchanges_per_conversation,
            per_hour=self.bot_exchanges_per_hour,
            streak_gap_s=self.bot_streak_gap_s,
            cooldown_s=self.bot_cooldown_s,
        )


class LimitsConfig(_Section):
    """[limits]: rate limits (token buckets in memory.db) and the daily model budget."""

    person_per_minute: float = Field(default=30, ge=0)
    person_burst: int = Field(default=20, ge=1)
    entrance_per_minute: float = Field(default=600, ge=0)
    entrance_burst: int = Field(default=200, ge=1)
    daily_tokens: int = Field(default=0, ge=0)
    daily_cost_usd: float = Field(default=0.0, ge=0)
