"""The numpy encoder (bot.embedding) against reference vectors made once by
sentence-transformers + torch (tests/data/minilm_reference.json; see its generated_by)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bot import embedding
from tests.privacy_world import needs_recall

pytestmark = needs_recall

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


def test_numpy_encoder_agrees_with_sentence_transformers() -> None:
    import numpy as np

    reference = json.loads(REFERENCE.read_text())
    expected = np.array(reference["vectors"], dtype=np.float32)
    got = embedding.encoder().encode(reference["sentences"])
    assert got.dtype == np.float32
    assert got.shape == (len(reference["sentences"]), embedding.DIMENSIONS)
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    worst = int(np.argmin(cosines))
    # float32 throughout (the token table too): measured 1 - 6e-8 at worst.
    assert cosines.min() >= 0.999995, (reference["sentences"][worst], float(cosines[worst]))
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_one_sentence_alone_equals_the_same_sentence_in_a_padded_batch() -> None:
    import numpy as np

    encoder = embedding.encoder()
    alone = encoder.encode(["I'm allergic to peanuts"])[0]
    batched = encoder.encode(["I'm allergic to peanuts", "a far longer sentence " * 20])[0]
    assert float(np.dot(alone, batched)) >= 0.99999


def test_texts_of_every_length_in_one_call_come_back_in_order_as_if_alone() -> None:
    """Texts are sorted by length and cut into several token-bounded batches (one text is
    truncated at MAX_TOKENS); each row still belongs to its own text."""
    import numpy as np

    encoder = embedding.encoder()
    texts = [f"note {n}: " + "the heron crossed the harbour " * (n * 5 % 13) for n in range(12)]
    texts += ["a very long letter " * 80, "ok"]
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([text]) for text in texts])
    assert together.shape == (len(texts), embedding.DIMENSIONS)
    assert float((together * alone).sum(axis=1).min()) >= 0.99999


def test_the_weights_are_read_only_views_on_the_model_file_not_copies() -> None:
    """Every process maps the same file: its pages are the page cache's one copy."""
    import numpy as np

    encoder = embedding.encoder()
    assert encoder.w["embeddings.word_embeddings.weight"].dtype == np.float32
    assert encoder.wt is not None  # the layers' transposed copy, mapped the same way
    for name, array in [*encoder.w.items(), *encoder.wt.items()]:
        assert not array.flags.owndata and not array.flags.writeable, name


def test_without_a_writable_cache_the_stored_layout_gives_the_same_vectors(
    tmp_path: Path,
) -> None:
    """The transposed copy cannot be written: the encoder multiplies by the stored weights'
    transposed views instead, a query's few rows the other way round; same vectors."""
    import subprocess
    import sys

    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache directory below a file: it cannot be made
    code = (
        "import json, sys\n"
        "from bot import embedding\n"
        "encoder = embedding.Encoder()\n"
        "assert encoder.wt is None\n"
        "texts = json.loads(sys.stdin.read())\n"
        "print(json.dumps([encoder.encode(texts).tolist(), encoder.encode(texts[:1]).tolist()]))\n"
    )
    reference = json.loads(REFERENCE.read_text())
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(reference["sentences"]),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(blocked / "cache")},
    )
    assert done.returncode == 0, done.stderr
    import numpy as np

    batch, alone = (np.array(v, dtype=np.float32) for v in json.loads(done.stdout))
    expected = np.array(reference["vectors"], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert float((batch * expected).sum(axis=1).min()) >= 0.999995
    assert float(alone[0] @ expected[0]) >= 0.999995


def test_embedding_batches_after_batches_does_not_grow_the_process() -> None:
    """Before the fix, these 6 batches of made-up lines (a query after each, as a turn
    would), run from the default thread pool, left 129 MiB of freed temporaries resident
    (glibc: an arena per thread, and its dynamic mmap threshold); after it, 4 MiB."""
    import subprocess
    import sys

    code = (
        "import asyncio, random\n"
        "from bot import recall\n"
        "def anon():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('RssAnon:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "rng = random.Random(5)\n"
        "syllables = 'ka fel no ost lo bi mar hu be pra gon mi'.split()\n"
        "def word():\n"
        "    return ''.join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))\n"
        "lines = [' '.join(word() for _ in range(rng.randint(4, 24))) for _ in range(192)]\n"
        "async def main():\n"
        "    await recall.encode(['hello'])\n"
        "    start = anon()\n"
        "    for i in range(0, 192, 32):\n"
        "        await recall.encode(lines[i : i + 32])\n"
        "        await recall.encode([lines[i]])\n"
        "    print(anon() - start)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 25.0, f"anonymous memory grew by {done.stdout.strip()} MiB"


def test_a_paraphrase_is_nearer_than_an_unrelated_sentence() -> None:
    import numpy as np

    fact, question, other = embedding.encoder().encode(
        ["I'm allergic to peanuts", "is there anything I can't eat?", "the train was late again"]
    )
    assert float(np.dot(fact, question)) > float(np.dot(other, question)) + 0.2


def test_the_encoder_runs_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bot.embedding import encoder\n"
        "encoder().encode(['hello'])\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_idle_process_gives_the_weights_pages_back_and_embeds_the_same_after() -> None:
    """`[recall] release_after_s`: after that long without an embedding, the weights' pages
    stop counting as the process's resident memory (50-60 MiB before); the next embedding
    maps them again and gives the same vector."""
    import subprocess
    import sys

    code = (
        "import asyncio\n"
        "from bot import recall\n"
        "from bot.config import Config, RecallConfig\n"
        "def weights_kib():\n"
        "    total, counting = 0, False\n"
        "    for line in open('/proc/self/smaps'):\n"
        "        head = line.split()\n"
        "        if '-' in head[0] and not head[0].endswith(':'):\n"
        "            counting = line.rstrip().endswith('.safetensors')\n"
        "        elif counting and head[0] == 'Rss:':\n"
        "            total += int(head[1])\n"
        "    return total\n"
        "async def main():\n"
        "    await recall.preload(Config(recall=RecallConfig(release_after_s=0.3)))\n"
        "    first = (await recall.vectors(['the weights are read for this sentence']))[0]\n"
        "    busy = weights_kib()\n"
        "    await asyncio.sleep(1.0)\n"
        "    idle = weights_kib()\n"
        "    recall._cache.clear()\n"
        "    again = (await recall.vectors(['the weights are read for this sentence']))[0]\n"
        "    print(busy, idle, weights_kib(), float(first @ again))\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    busy, idle, again, same = (float(x) for x in done.stdout.split())
    assert busy > 30_000, f"only {busy:.0f} KiB of weights resident after an embedding"
    assert idle < 0.1 * busy, f"{idle:.0f} KiB of weights still resident when idle"
    assert again > 30_000 and same > 0.999999
