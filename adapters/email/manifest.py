"""What `bot/` knows about the email entrance, without importing the mail libraries."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bot.entrance import EntranceSettings, Manifest


class EmailSettings(EntranceSettings):
    """`[entrances.email]`; the password comes from MIRROR_EMAIL_PASSWORD."""

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


MANIFEST = Manifest(
    name="email",
    label="email",
    aliases=("mail",),
    runtime=f"{__package__}.runtime:EmailEntrance",
    settings=EmailSettings,
    secret_env="MIRROR_EMAIL_PASSWORD",
    # A letter has no length limit worth splitting for: one reply, one mail.
    casefold_ids=True,
)
