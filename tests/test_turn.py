"""One turn in-process: the offline brain, the litellm path against a fake model API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import llm
from bot.config import Config, load_config
from bot.llm import parse_reply
from bot.memory import Memory
from bot.mind import Mind
from bot.models import Author, Incoming
from bot.soul import sync_soul_file
from tests.fakes.openai_api import FakeOpenAI

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines


def message(
    text: str,
    *,
    person: str = "alice",
    entrance: str = "local",
    conversation: str | None = None,
    kind: str = "dm",
) -> Incoming:
    return Incoming(
        entrance=entrance,
        conversation_id=conversation or f"{entrance}:{person}",
        conversation_kind=kind,  # type: ignore[arg-type]
        author=Author(external_id=person, display_name=person.capitalize()),
        text=text,
    )


@pytest.fixture
def config(tmp_path: Path, soul_file: Path) -> Config:
    cfg = load_config(Path(__file__).parents[1] / "config" / "mirror.toml", db=tmp_path / "m.db")
    cfg.soul.path = soul_file
    return cfg


@pytest.fixture
async def mind(config: Config, memory: Memory, soul_file: Path) -> AsyncIterator[Mind]:
    await sync_soul_file(memory, soul_file)
    await memory.register_instance("phone", "local", "host", 1, 1)
    yield Mind(memory, config, instance_id="phone", entrance="local")


def test_parse_reply_accepts_json_fenced_json_and_prose() -> None:
    data = (
        '{"reply": "Sure.", "intentions": [{"text": "call Bob", "subject": "call bob",'
        ' "due_at": "2026-11-27T15:00:00+00:00"}], "notes": ["Bob likes tea"]}'
    )
    reply = parse_reply(data)
    assert reply.text == "Sure." and reply.intentions[0].due_at == datetime(
        2026, 11, 27, 15, tzinfo=UTC
    )
    assert parse_reply(f"```json\n{data}\n```").notes == ["Bob likes tea"]
    assert parse_reply("Just prose, no JSON.").text == "Just prose, no JSON."
    with pytest.raises(ValueError, match="holds no text"):  # never sent to a person
        parse_reply('{"reply": 3, "broken": ')
    assert parse_reply('{"reply": "ok", "intentions": [{"text": "x", "due_at": "whenever"}]}').text
    with pytest.raises(ValueError):
        parse_reply("   ")


async def test_offline_brain_turns_a_dated_request_into_an_intention(
    mind: Mind, memory: Memory
) -> None:
    reply = await mind.turn(message("Can you call me on Friday at 3pm?"))
    assert reply is not None and "call you" in reply.text
    [intention] = await memory.intentions()
    assert intention.subject == "call alice"
    assert intention.due_at is not None and intention.due_at.weekday() == 4
    assert intention.due_at.hour == 15 and intention.person_name == "Alice"

    reply = await mind.turn(message("It's done, thanks"))
    assert reply is not None and "marked it done" in reply.text
    assert (await memory.intention(intention.id)).status == "done"  # type: ignore[union-attr]


async def test_offline_brain_keeps_the_persona_timezone(mind: Mind, memory: Memory) -> None:
    mind.config.persona.timezone = "America/New_York"
    await mind.turn(message("Could you review my draft tomorrow at 9am?"))
    [intention] = await memory.intentions()
    assert intention.due_at is not None
    local = intention.due_at.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (9, 0)


async def test_request_for_another_entrance_sets_the_target(mind: Mind, memory: Memory) -> None:
    await mind.turn(message("Please tell the Discord group the meeting moved to 5pm"))
    [intention] = await memory.intentions()
    assert intention.target_entrance == "discord"


async def test_already_answered_message_is_not_answered_again(mind: Mind) -> None:
    incoming = message("hello").model_copy(update={"platform_message_id": "p1"})
    assert await mind.turn(incoming) is not None
    assert await mind.turn(incoming) is None


async def test_email_style_gets_greeting_and_sign_off(mind: Mind) -> None:
    reply = await mind.turn(message("What is your name?", entrance="email", person="ann@x.org"))
    assert reply is not None
    assert reply.text.startswith("Hi Ann@x.org,") and reply.text.rstrip().endswith("Wren")


async def test_unknown_command_gets_a_clear_reply(mind: Mind) -> None:
    reply = await mind.turn(message("/frobnicate now"))
    assert reply is not None and "I don't know the command /frobnicate" in reply.text
    reply = await mind.turn(message("/start"))
    assert reply is not None and "I'm Wren" in reply.text and "/link" in reply.text


async def test_bad_input_is_cleaned_cut_or_refused_never_lost(
    mind: Mind, memory: Memory, config: Config
) -> None:
    huge = "Tell me about herons. " + "blah " * 5000
    reply = await mind.turn(message(huge, person="hugo"))
    assert reply is not None
    [kept] = await memory.search_messages("herons")
    assert kept.text is not None and len(kept.text) <= config.guard.max_message_chars
    assert kept.text.startswith("Tell me about herons.")
    assert kept.text.rstrip().endswith("characters omitted]")

    assert await mind.turn(message("  \u200b\n ", person="ivy")) is None  # recorded, refused
    reply = await mind.turn(message("what\x00 is\x07 your name?", person="ivy"))
    assert reply is not None and "Wren" in reply.text
    log = await memory.message_log(10)
    statuses = {m.text: m.status for m in log if m.direction == "in"}
    assert statuses["what is your name?"] == "answered"
    assert any(status == "refused" for status in statuses.values())


@pytest.fixture
async def fake_model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    async with FakeOpenAI(models=("fake-model", "fake-b")) as fake:
        yield fake


def use_fake(config: Config, fake: FakeOpenAI, **model: object) -> None:
    config.model.name = "openai/fake-model"
    config.model.api_base = fake.base_url
    config.model.retries = 0
    for key, value in model.items():
        setattr(config.model, key, value)


async def test_json_answer_becomes_reply_and_intentions(
    mind: Mind, memory: Memory, fake_model: FakeOpenAI
) -> None:
    use_fake(mind.config, fake_model)
    fake_model.queue_json(
        {
            "reply": "I'll ring Bob on Friday.",
            "intentions": [
                {
                    "text": "ring Bob",
                    "subject": "call bob",
                    "due_at": "2026-11-27T15:00:00+00:00",
                    "duration_minutes": 30,
                }
            ],
            "notes": ["Alice wants Bob called"],
        }
    )
    reply = await mind.turn(message("Ring Bob on Friday at 3 please"))
    assert reply is not None and reply.text == "I'll ring Bob on Friday."
    assert reply.model == "openai/fake-model"
    [intention] = await memory.intentions()
    assert (intention.subject, intention.duration_s) == ("call bob", 1800)

    request = fake_model.requests[-1]
    assert request["response_format"] == {"type": "json_object"}
    system = request["messages"][0]["content"]
    assert system.startswith("# Name\nWren")
    assert "# Mirror view" in system and "phone on local: alive" in system
    assert request["messages"][-1]["content"] == "Alice: Ring Bob on Friday at 3 please"


async def test_prose_answer_is_used_as_the_reply(mind: Mind, fake_model: FakeOpenAI) -> None:
    use_fake(mind.config, fake_model)
    fake_model.queue_reply("Hello Alice, lovely to hear from you.")
    reply = await mind.turn(message("hi"))
    assert reply is not None and reply.text == "Hello Alice, lovely to hear from you."


async def test_json_without_text_is_asked_again_never_sent(
    mind: Mind, fake_model: FakeOpenAI
) -> None:
    use_fake(mind.config, fake_model, retries=1, retry_backoff_s=0.01)
    fake_model.queue_reply("{}")
    fake_model.queue_reply('{"reply": "Hello again."}')
    reply = await mind.turn(message("hi"))
    assert reply is not None and reply.text == "Hello again."
    assert len(fake_model.requests) == 2


async def test_timeout_falls_back_to_the_next_model(mind: Mind, fake_model: FakeOpenAI) -> None:
    use_fake(mind.config, fake_model, timeout_s=0.5, fallbacks=["openai/fake-b"])
    fake_model.slow_model("fake-model", 3)
    fake_model.queue_reply("from the fallback")
    reply = await mind.turn(message("hi"))
    assert (
        reply is not None and reply.text == "from the fallback" and reply.model == "openai/fake-b"
    )


async def test_every_model_failing_gives_an_apology_and_keeps_the_message(
    mind: Mind, memory: Memory, fake_model: FakeOpenAI
) -> None:
    use_fake(mind.config, fake_model, retries=1, retry_backoff_s=0.01)
    fake_model.fail_model("fake-model", 500, should_retry=False)
    reply = await mind.turn(message("are you there?"))
    assert reply is not None and not reply.answered and "Sorry" in reply.text
    assert len(fake_model.requests) == 2  # one retry, as configured
    [_, incoming] = await memory.message_log()
    assert incoming.direction == "in" and incoming.status == "unanswered"


async def test_refused_key_is_tried_once_not_retried(mind: Mind, fake_model: FakeOpenAI) -> None:
    use_fake(mind.config, fake_model, retries=2, retry_backoff_s=0.01)
    fake_model.fail_model("fake-model", 401, "invalid api key", should_retry=False)
    reply = await mind.turn(message("are you there?"))
    assert reply is not None and not reply.answered
    assert len(fake_model.requests) == 1


async def test_unknown_model_is_tried_once_not_retried(mind: Mind, fake_model: FakeOpenAI) -> None:
    use_fake(mind.config, fake_model, retries=2, retry_backoff_s=0.01)
    fake_model.fail_model("fake-model", 404, "model not found", should_retry=False)
    reply = await mind.turn(message("are you there?"))
    assert reply is not None and not reply.answered
    assert len(fake_model.requests) == 1


async def test_missing_key_is_not_retried_and_the_offline_brain_names_it(
    mind: Mind, fake_model: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    use_fake(mind.config, fake_model, retries=2, retry_backoff_s=0.01, fallbacks=["mirror/offline"])
    reply = await mind.turn(message("what is your name?"))
    assert reply is not None and reply.model == "mirror/offline" and "Wren" in reply.text
    assert "openai/fake-model needs OPENAI_API_KEY" in reply.text
    assert fake_model.requests == []  # the SDK refused before sending; nothing was retried


async def test_offline_notice_names_the_config_file_in_use(mind: Mind) -> None:
    reply = await mind.turn(message("hello"))
    assert reply is not None and "offline brain" in reply.text
    assert f"set [model] name in {mind.config.source}" in reply.text


async def test_a_spent_daily_budget_says_so_rather_than_asking_for_a_model(
    mind: Mind, fake_model: FakeOpenAI
) -> None:
    use_fake(mind.config, fake_model)
    mind.config.limits.daily_tokens = 1
    first = await mind.turn(message("hello"))
    assert first is not None and first.model == "openai/fake-model"
    spent = await mind.turn(message("what is your name?"))
    assert spent is not None and spent.model == "mirror/offline" and "Wren" in spent.text
    assert "model budget is spent" in spent.text and "openai/fake-model" in spent.text
    assert "set [model] name" not in spent.text  # a model is set: it is only resting


def test_offline_notice_without_a_config_file_says_so() -> None:
    notice = llm.offline_notice(Config().model)
    assert "set [model] name in a config file (none is in use" in notice
    assert "embedded defaults" in notice


async def notes_of(memory: Memory) -> list[str]:
    rows = await memory.read(
        lambda conn: conn.execute("SELECT text FROM notes ORDER BY id").fetchall()
    )
    return [row[0] for row in rows]


async def test_small_talk_is_answered_in_the_persona_voice_and_never_noted(
    mind: Mind, memory: Memory
) -> None:
    for said in ["hello", "Hi Wren!", "thanks!", "bye", "good night", "tell me a joke"]:
        reply = await mind.turn(message(said))
        assert reply is not None and "Noted" not in reply.text, said
    hello = await mind.turn(message("hello", person="bob"))
    assert hello is not None and "I'm Wren" in hello.text
    assert "Plain-spoken" not in hello.text  # composed from the soul, not its Voice read aloud
    assert await notes_of(memory) == []


async def test_a_given_name_is_stored_and_facts_about_oneself_are_kept_in_it(
    mind: Mind, memory: Memory
) -> None:
    named = await mind.turn(message("My name is Sam"))
    assert named is not None and named.person_name == "Sam" and "Sam" in named.text
    for fact in ["I'm allergic to peanuts.", "I'm moving to Lisbon in March", "I live in Porto"]:
        await mind.turn(message(fact))
    await mind.turn(message("my favourite colour is green"))
    assert await notes_of(memory) == [
        "Sam is allergic to peanuts",
        "Sam is moving to Lisbon in March",
        "Sam lives in Porto",
        "Sam's favourite colour is green",
    ]
    known = await mind.turn(message("What do you know about me?"))
    assert known is not None and "Lisbon" in known.text and "green" in known.text
    stranger = await mind.turn(message("What do you know about me?", person="bob"))
    assert stranger is not None and "Lisbon" not in stranger.text  # only facts about bob


async def test_facts_before_a_name_is_given_say_they_and_are_told_back_as_you(
    mind: Mind, memory: Memory
) -> None:
    """The terminal's person is "you" until they give a name: "you is allergic" was both
    stored and said back. Now the note says "They", the reply "you", each verb agreeing."""
    said = {
        "I'm allergic to peanuts": ("They are allergic to peanuts", "you are allergic"),
        "I've got two cats": ("They have two cats", "you have two cats"),
        "I never drink coffee": ("They never drink coffee", "you never drink coffee"),
        "I don't eat meat": ("They don't eat meat", "you don't eat meat"),
        "I live in Porto": ("They live in Porto", "you live in Porto"),
        "I was born in Lisbon": ("They were born in Lisbon", "you were born in Lisbon"),
        "I love my job": ("They love their job", "you love your job"),
    }
    for text, (_, told) in said.items():
        reply = await mind.turn(message(text, person="you"))
        assert reply is not None and f"Noted: {told}" in reply.text, reply
    assert await notes_of(memory) == [note for note, _ in said.values()]


async def test_im_and_a_name_names_the_person_but_im_and_a_state_does_not(
    mind: Mind, memory: Memory
) -> None:
    named = await mind.turn(message("Hi, I'm Sam"))
    assert named is not None and named.person_name == "Sam" and "Sam" in named.text
    for said in ["I'm tired", "I'm Happy to help", "i'm back"]:
        reply = await mind.turn(message(said, person="bob"))
        assert reply is not None and reply.person_name is None, said


async def test_call_me_with_a_time_is_a_request_not_a_name(mind: Mind) -> None:
    reply = await mind.turn(message("Call me tomorrow at 3pm"))
    assert reply is not None and reply.person_name is None


async def test_who_are_you_introduces_the_persona_from_its_soul(mind: Mind) -> None:
    reply = await mind.turn(message("Who are you?"))
    assert reply is not None and reply.text.startswith("I'm Wren")
    assert "one persona living in several places" in reply.text  # its first value
    assert "Plain-spoken" not in reply.text


async def test_where_else_leaves_the_scheduler_out(mind: Mind, memory: Memory) -> None:
    await memory.register_instance("scheduler", "scheduler", "host", 2, 1)
    await memory.register_instance("desk", "local", "host", 3, 1)
    reply = await mind.turn(message("Where else are you?"))
    assert reply is not None and "'desk'" in reply.text and "scheduler" not in reply.text


def test_parse_reply_reads_the_name_a_person_gave() -> None:
    assert parse_reply('{"reply": "Hi Sam.", "person_name": " Sam "}').person_name == "Sam"
    assert parse_reply('{"reply": "Hi."}').person_name is None


async def test_recall_quotes_the_person_rather_than_the_persona_itself(mind: Mind) -> None:
    await mind.turn(message("Can you water the ferns tomorrow at 9am?"))  # "Yes, I'll water…"
    reply = await mind.turn(message("What about the ferns?", conversation="local:alice-2"))
    assert reply is not None and "Alice on local" in reply.text, reply.text
