"""A realistic memory of N messages: 200 conversations, 50 people, 4 entrances, DMs and groups.

python -m bench.prefill PATH N
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.memory import Memory, NewIntention
from bot.models import Author, Incoming

ENTRANCES = ("discord", "telegram", "email", "local")
WORDS = (
    "meeting friday report garden heron budget train coffee review draft call tomorrow "
    "weekend project deadline lunch music book invoice travel doctor school paint river "
    "kettle lantern harbour orchard violin pebble meadow"
).split()


def conversations() -> list[tuple[str, str, str]]:
    """(entrance, external id, kind): 150 DMs and 50 groups."""
    result = []
    for n in range(200):
        entrance = ENTRANCES[n % 4]
        kind = "dm" if n < 150 else "group"
        result.append((entrance, f"{entrance}-conv-{n}", kind))
    return result


def people() -> list[str]:
    return [f"person{n}" for n in range(50)]


async def prefill(path: Path, count: int, *, seed: int = 7, batch: int = 5000) -> float:
    rng = random.Random(seed)
    convs = conversations()
    folks = people()
    start = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    async with Memory(path) as memory:
        made = 0
        while made < count:
            chunk = []
            for n in range(made, min(count, made + batch)):
                entrance, conv, kind = convs[n % len(convs)]
                person = folks[(n % len(convs)) % 50] if kind == "dm" else rng.choice(folks)
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
                chunk.append(
                    Incoming(
                        entrance=entrance,
                        conversation_id=conv,
                        conversation_kind=kind,  # type: ignore[arg-type]
                        author=Author(external_id=f"{entrance}:{person}", display_name=person),
                        text=text,
                        platform_message_id=f"m{n}",
                        received_at=base + timedelta(seconds=n),
                    )
                )
            made += await memory.record_many(chunk, f"{chunk[0].entrance}-1")
        for n in range(200):
            entrance, conv, kind = convs[n]
            await memory.add_intention(
                NewIntention(
                    owner_instance=f"{entrance}-1",
                    entrance=entrance,
                    conversation_id=n + 1,
                    person_id=(n % 50) + 1,
                    visibility="private" if kind == "dm" else "group",
                    text=f"{rng.choice(WORDS)} {rng.choice(WORDS)}",
                    subject=f"{rng.choice(WORDS)} {n}",
                    due_at=(base + timedelta(days=400 + n)).timestamp(),
                    duration_s=3600,
                    target_entrance=None,
                    source_message_id=None,
                )
            )
    return time.perf_counter() - start


if __name__ == "__main__":
    target, number = Path(sys.argv[1]), int(sys.argv[2])
    seconds = asyncio.run(prefill(target, number))
    print(f"prefilled {number} messages into {target} in {seconds:.1f}s")
