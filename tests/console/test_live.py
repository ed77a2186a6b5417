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
            # A background checkpoint may count as one more change, before the message's or
            # with it: what matters is that the message's change says so, once.
            seen = [await anext(stream)]
            while not seen[-1].startswith("event: messages\n") and len(seen) < 4:
                seen.append(await anext(stream))
            assert seen[-1].startswith("event: messages\n"), seen
            assert all(event.startswith("event: changed\n") for event in seen[:-1]), seen
            after = await anext(stream)
            # The same generation: `changed` follows `messages` with its number.
            assert after == seen[-1].replace("event: messages", "event: changed"), after
        finally:
            gone = True
            await feed.stop()
            await stream.aclose()
