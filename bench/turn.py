"""Per-turn overhead with the offline brain, split into ingest, context and store.

python -m bench.turn [N ...]       (default: 10000 100000)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench.prefill import prefill
from bot.config import load_config
from bot.memory import Memory
from bot.mind import Mind
from bot.models import Author, Incoming
from bot.soul import sync_soul_file

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def measure(size: int, turns: int = 300) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "memory.db"
        await prefill(path, size)
        config = load_config(ROOT / "config" / "mirror.toml", db=path)
        async with Memory(path) as memory:
            await sync_soul_file(memory, ROOT / "soul" / "SOUL.md")
            await memory.register_instance("bench", "telegram", "host", os.getpid(), 1)
            mind = Mind(memory, config, instance_id="bench", entrance="telegram")
            totals, parts = [], {"ingest": [], "context": [], "store": []}
            texts = [
                "what did I tell you on discord?",
                "the garden report is late",
                "what have you promised?",
                "where else are you?",
            ]
            for n in range(turns + 20):
                incoming = Incoming(
                    entrance="telegram",
                    conversation_id=f"telegram-conv-{(n * 4 + 1) % 200}",
                    conversation_kind="dm",
                    author=Author(external_id="telegram:person1", display_name="person1"),
                    text=texts[n % len(texts)],
                    platform_message_id=f"bench-{n}",
                )
                await mind.turn(incoming)
                t = mind.last_timings
                if n >= 20:  # warm-up: imports, caches
                    for key in parts:
                        parts[key].append(getattr(t, key) * 1000)
                    totals.append((t.ingest + t.context + t.store) * 1000)
    return {
        "p50": statistics.median(totals),
        "p99": percentile(totals, 0.99),
        **{f"{key}_p50": statistics.median(values) for key, values in parts.items()},
    }


async def main(sizes: list[int]) -> None:
    print(f"{'messages':>10} {'p50 ms':>8} {'p99 ms':>8} {'ingest':>8} {'context':>8} {'store':>8}")
    for size in sizes:
        r = await measure(size)
        print(
            f"{size:>10} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['ingest_p50']:>8.2f} "
            f"{r['context_p50']:>8.2f} {r['store_p50']:>8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [10_000, 100_000]))
