"""Every text that comes from outside is cleaned where it enters: in the models that carry
it (`Author`, `Incoming`), so no path — a name, a group title, a subject, an address, a
file name — can forget. A lone surrogate (broken escaping on a platform) once made
`record_incoming` raise for every later message from that person or group."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import Config, load_config
from bot.instance import Instance
from bot.memory import Memory
from bot.models import Author, Incoming

ROOT = Path(__file__).resolve().parents[1]
SURROGATE = "\ud83d"  # half of an emoji: valid in a Python str, not in UTF-8


def dirty(text: str) -> str:
    return f"{text}{SURROGATE}\x00\x07"


@pytest.fixture
def config(tmp_path: Path, soul_file: Path) -> Config:
    cfg = load_config(ROOT / "config" / "mirror.toml", db=tmp_path / "m.db")
    cfg.soul.path = soul_file
    return cfg


def test_the_models_clean_every_outside_field() -> None:
    incoming = Incoming(
        entrance="telegram",
        conversation_id=dirty("-100"),
        conversation_kind="group",
        conversation_title=dirty("Book club"),
        author=Author(external_id=dirty("42"), display_name=dirty("Ann")),
        text=dirty("hello"),
        platform_message_id=dirty("-100:7"),
        reply_to_platform_id=dirty("-100:6"),
        places=(dirty("guild"),),
    )
    fields = [
        incoming.conversation_id,
        incoming.conversation_title,
        incoming.author.external_id,
        incoming.author.display_name,
        incoming.text,
        incoming.platform_message_id,
        incoming.reply_to_platform_id,
        *incoming.places,
    ]
    for value in fields:
        assert value is not None
        value.encode("utf-8")  # would raise on a lone surrogate
        assert "\x00" not in value and "\x07" not in value
    assert incoming.author.display_name == "Ann\ufffd"


async def test_a_surrogate_in_a_name_or_title_loses_no_message(config: Config) -> None:
    async with Instance(config, instance_id="telegram", entrance="telegram") as instance:
        for n in range(3):  # the first, and every later message from them, is kept
            reply = await instance.handle(
                Incoming(
                    entrance="telegram",
                    conversation_id="-100",
                    conversation_kind="group",
                    conversation_title=dirty("Book club"),
                    author=Author(external_id="42", display_name=dirty("Ann")),
                    text=f"what is your name? ({n})",
                    platform_message_id=f"-100:{n}",
                ),
                deliver=False,
            )
            assert reply is not None and reply.answered
    async with Memory(config.memory.path) as memory:
        log = await memory.message_log(20)
    asked = [m for m in log if m.direction == "in"]
    assert len(asked) == 3 and {m.status for m in asked} == {"answered"}
    assert {m.person_name for m in asked} == {"Ann\ufffd"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(), st.text(), st.text())
def test_any_outside_text_can_be_stored_as_utf8(name: str, title: str, text: str) -> None:
    incoming = Incoming(
        entrance="discord",
        conversation_id="1",
        conversation_title=title,
        author=Author(external_id="2", display_name=name),
        text=text,
    )
    for value in (incoming.author.display_name, incoming.conversation_title, incoming.text):
        assert value is not None
        value.encode("utf-8")
