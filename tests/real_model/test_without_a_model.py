"""What the real-model tier relies on, checked without a model (these run in `make test`):
JSON a small model cut off or misnamed still reaches the person as prose, and a prompt is cut
to a window counted by a tokenizer, oldest history first, the soul and the new message kept.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.context import Context, fit_to_window, render_messages
from bot.llm import parse_reply
from bot.models import TurnView, ViewMessage, ViewNote


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"reply": "Hello, I am Wr', "Hello, I am Wr"),  # cut by max_tokens
        ('{"reply": "Caf\\u00', "Caf"),  # cut inside an escape
        ('{"reply": "Fine.", "notes": ["she likes', "Fine."),  # cut after the reply
        ('{"answer": "I am here."}', "I am here."),  # the reply under another name
        ('{"reply": "All good."}', "All good."),
        ('{\n  "Hello! Here is an example of', "Hello! Here is an example of"),  # no key
        ('{"reply": "say \\"hi\\" now"}', 'say "hi" now'),
        ("Just prose.", "Just prose."),
    ],
)
def test_json_a_small_model_breaks_still_reaches_the_person_as_prose(
    content: str, said: str
) -> None:
    assert parse_reply(content).text == said


@pytest.mark.parametrize("content", ["{}", '{"mood": 3', '{"reply": 3, "broken": '])
def test_json_with_no_text_in_it_is_no_answer(content: str) -> None:
    with pytest.raises(ValueError, match="holds no text"):
        parse_reply(content)


def message(n: int, text: str) -> ViewMessage:
    return ViewMessage(
        id=n,
        entrance="local",
        instance_id="desk",
        conversation_kind="dm",
        direction="in" if n % 2 else "out",
        person_name="Ann",
        text=text,
        at=datetime(2026, 12, 2, 9, n % 60, tzinfo=UTC),
    )


def context(history: int, recall: int = 0, notes: int = 0) -> Context:
    return Context(
        soul_name="Wren",
        soul_text="# Name\nWren\n\n## Voice\nPlain.",
        soul_version=1,
        instance_id="desk",
        entrance="local",
        style="conversational",
        timezone="UTC",
        now=datetime(2026, 12, 2, 10, 0, tzinfo=UTC),
        person_id=1,
        person_name="Ann",
        conversation_kind="dm",
        incoming_id=999,
        text="What now?",
        view=TurnView(
            history=[message(n, f"history line {n} " + "word " * 20) for n in range(history)],
            recall=[message(100 + n, f"recalled {n} " + "word " * 20) for n in range(recall)],
            about_person=[
                ViewNote(id=n, instance_id="desk", person_name="Ann", text=f"fact {n}", at=now)
                for n in range(notes)
                for now in [datetime(2026, 12, 1, tzinfo=UTC)]
            ],
        ),
    )


def words(messages: list[dict[str, str]]) -> int:
    """A stand-in tokenizer: one token a word."""
    return sum(len(m["content"].split()) for m in messages)


def test_a_prompt_that_fits_is_left_as_it_is() -> None:
    whole = context(history=10, recall=3)
    assert fit_to_window(whole, 10_000, words) == render_messages(whole)


def test_a_prompt_is_cut_to_the_window_oldest_history_first_soul_and_question_kept() -> None:
    whole = context(history=40, recall=5, notes=3)
    limit = words(render_messages(whole)) - 300
    fitted = fit_to_window(whole, limit, words)
    assert words(fitted) <= limit
    assert fitted[0]["content"].startswith("# Name\nWren")
    assert fitted[-1]["content"] == "Ann: What now?"
    kept = [m["content"] for m in fitted[1:-1]]
    # The newest history stays, in order; the oldest went first; recall was still there.
    assert kept == [
        m.text if m.direction == "out" else f"Ann: {m.text}"
        for m in whole.view.history[-len(kept) :]
    ]
    assert 8 <= len(kept) < 40 and "recalled 0" in fitted[0]["content"]


def test_a_tight_window_drops_recall_before_the_last_messages() -> None:
    whole = context(history=40, recall=5, notes=3)
    bare = context(history=2)
    fitted = fit_to_window(whole, words(render_messages(bare)), words)
    assert "recalled" not in fitted[0]["content"] and "fact 0" not in fitted[0]["content"]
    assert len(fitted) == 4  # soul, the last two messages, the question


def test_a_window_too_small_for_the_soul_sends_what_is_left() -> None:
    fitted = fit_to_window(context(history=5, recall=2), 3, words)
    assert [m["role"] for m in fitted] == ["system", "user"]
