"""The console's change feed: a commit by another process's connection wakes every open
page once, and says whether a message arrived (heartbeats do not redraw the timeline)."""

from __future__ import annotations

from pathlib import Path

from bot.console.live import ChangeFeed
from bot.memory import Memory
from bot.models import Author, Incoming


async def test_a_commit_elsewhere_wakes_the_page_and_a_message_says_so(tmp_path: Path) -> None:
    async with Memory(tmp_path / "m.db") as console, Memory(tmp_path / "m.db") as other:
        feed = ChangeFeed(console, interval_s=0.01)
        await feed.start()
        gone = False

        async def is_gone() -> bool:
            return gone

        stream = feed.events(is_gone)
        try:
            assert (await anext(stream)).startswith("retry:")
            await other.register_instance("phone", "local", "h", 1, None)  # not a message
            assert (await anext(stream)).startswith("event: changed\n")
            await other.record_incoming(
                Incoming(
                    entrance="local",
                    conversation_id="c",
                    author=Author(external_id="a"),
                    text="hello",
                ),
                "phone",
            )
            # A background checkpoint may count as one more change; the message's comes next.
            events = [await anext(stream) for _ in range(2)]
            if not events[0].startswith("event: messages\n"):
                events = [await anext(stream) for _ in range(2)]
            assert events[0].startswith("event: messages\n"), events
            assert events[1].startswith("event: changed\n"), events
        finally:
            gone = True
            await feed.stop()
            await stream.aclose()
