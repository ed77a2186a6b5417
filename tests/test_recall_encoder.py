"""The numpy encoder (bot.embedding) against reference vectors made once by
sentence-transformers + torch (tests/data/minilm_reference.json; see its generated_by), and
the onnxruntime int8 encoder (bot/embedding_onnx.py) against the numpy one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import embedding
from tests.privacy_world import needs_recall

pytestmark = needs_recall

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def numpy_encoder() -> embedding.NumpyEncoder:
    return embedding.NumpyEncoder()


@pytest.fixture(scope="module")
def onnx_encoder() -> embedding.Encoder:
    """The int8 backend whatever this CPU is (its kernels run everywhere; `encoder()` loads
    it only where int8 dot products make it faster, and only when the config asks)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from bot.embedding_onnx import OnnxEncoder

    return OnnxEncoder()


@pytest.fixture(params=["numpy", "onnxruntime int8"])
def any_encoder(request: pytest.FixtureRequest) -> embedding.Encoder:
    name = "numpy_encoder" if request.param == "numpy" else "onnx_encoder"
    found: embedding.Encoder = request.getfixturevalue(name)
    return found


def test_numpy_encoder_agrees_with_sentence_transformers(numpy_encoder: embedding.Encoder) -> None:
    import numpy as np

    reference = json.loads(REFERENCE.read_text())
    expected = np.array(reference["vectors"], dtype=np.float32)
    got = numpy_encoder.encode(reference["sentences"])
    assert got.dtype == np.float32
    assert got.shape == (len(reference["sentences"]), embedding.DIMENSIONS)
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    worst = int(np.argmin(cosines))
    # float32 throughout (the token table too): measured 1 - 6e-8 at worst.
    assert cosines.min() >= 0.999995, (reference["sentences"][worst], float(cosines[worst]))
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_encoder_agrees_with_the_numpy_encoder_on_every_reference_sentence(
    numpy_encoder: embedding.Encoder, onnx_encoder: embedding.Encoder
) -> None:
    """int8 weights per channel, activations smoothed and quantised per token: measured
    0.9962 at the worst sentence, 0.9984 on average (per-token scales without the
    smoothing: 0.984 and 0.994; per-tensor dynamic quantisation gave 0.81-0.976)."""
    import numpy as np

    sentences = json.loads(REFERENCE.read_text())["sentences"]
    expected = numpy_encoder.encode(sentences)
    got = onnx_encoder.encode(sentences)
    assert got.dtype == np.float32
    assert got.shape == (len(sentences), embedding.DIMENSIONS)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * expected).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= 0.99, (sentences[worst], float(cosines[worst]))
    assert cosines.mean() >= 0.997


def test_one_sentence_alone_equals_the_same_sentence_in_a_padded_batch(
    any_encoder: embedding.Encoder,
) -> None:
    import numpy as np

    encoder = any_encoder
    longer = "a far longer sentence " * 5
    assert 2 * len(encoder.tokenizer.ids(longer)) <= embedding.BATCH_TOKENS  # one batch
    alone = encoder.encode(["I'm allergic to peanuts"])[0]
    batched = encoder.encode(["I'm allergic to peanuts", longer])[0]
    assert float(np.dot(alone, batched)) >= 0.99999


def test_texts_of_every_length_in_one_call_come_back_in_order_as_if_alone(
    any_encoder: embedding.Encoder,
) -> None:
    """Texts are sorted by length and cut into several token-bounded batches (one text is
    truncated at MAX_TOKENS); each row still belongs to its own text."""
    import numpy as np

    encoder = any_encoder
    texts = [f"note {n}: " + "the heron crossed the harbour " * (n * 5 % 13) for n in range(12)]
    texts += ["a very long letter " * 80, "ok"]
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([text]) for text in texts])
    assert together.shape == (len(texts), embedding.DIMENSIONS)
    assert float((together * alone).sum(axis=1).min()) >= 0.99999


def test_the_weights_are_read_only_views_on_the_model_file_not_copies(
    numpy_encoder: embedding.NumpyEncoder,
) -> None:
    """Every process maps the same file: its pages are the page cache's one copy."""
    import numpy as np

    encoder = numpy_encoder
    assert encoder.w["embeddings.word_embeddings.weight"].dtype == np.float32
    assert encoder.wt is not None  # the layers' transposed copy, mapped the same way
    for name, array in [*encoder.w.items(), *encoder.wt.items()]:
        assert not array.flags.owndata and not array.flags.writeable, name


def test_without_a_writable_cache_the_stored_layout_gives_the_same_vectors(
    tmp_path: Path,
) -> None:
    """The transposed copy cannot be written: the encoder multiplies by the stored weights'
    transposed views instead, a query's few rows the other way round; same vectors. Nor
    can the int8 model be: `encoder()` falls back to numpy."""
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache directory below a file: it cannot be made
    code = (
        "import json, sys\n"
        "from bot import embedding\n"
        "assert embedding.encoder().backend == 'numpy', embedding.encoder().backend\n"
        "encoder = embedding.NumpyEncoder()\n"
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


@pytest.mark.parametrize("backend", embedding.BACKENDS)
def test_embedding_batches_after_batches_does_not_grow_the_process(backend: str) -> None:
    """Before the fix, these 6 batches of made-up lines (a query after each, as a turn
    would), run from the default thread pool, left 129 MiB of freed temporaries resident
    (glibc: an arena per thread, and its dynamic mmap threshold); after it, 4 MiB. With
    onnxruntime's arena on, the int8 encoder kept its largest batch's buffers."""
    code = (
        "import asyncio, random, sys\n"
        "from bot import embedding, recall\n"
        "embedding.choose(sys.argv[1])\n"
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
    done = subprocess.run(
        [sys.executable, "-c", code, backend], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 25.0, f"anonymous memory grew by {done.stdout.strip()} MiB"


def test_a_paraphrase_is_nearer_than_an_unrelated_sentence(any_encoder: embedding.Encoder) -> None:
    import numpy as np

    fact, question, other = any_encoder.encode(
        ["I'm allergic to peanuts", "is there anything I can't eat?", "the train was late again"]
    )
    assert float(np.dot(fact, question)) > float(np.dot(other, question)) + 0.2


def test_the_encoder_runs_without_torch() -> None:
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
    maps them again and gives the same vector. The numpy encoder's (the default): the int8
    one's layers are onnxruntime's anonymous memory (below)."""
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


def test_the_int8_encoder_reads_its_token_rows_from_the_int8_table_without_mapping_it(
    onnx_encoder: embedding.Encoder,
) -> None:
    """A query reads a few rows of the int8 table (a quarter of the model's float one), as
    it needs them: no page of the table is mapped, so none stays resident (a mapping's
    faults brought the whole table in, 16 pages at a time)."""
    import numpy as np

    from bot import embedding_onnx

    before = onnx_encoder.encode(["the heron crossed the harbour at dawn"])[0]
    source = embedding.model_dir() / "model.safetensors"
    table = embedding_onnx.token_table_path(source)
    assert table.stat().st_size * 3 < source.stat().st_size
    maps = Path("/proc/self/maps").read_text()
    assert str(table) not in maps
    assert any(
        os.readlink(fd) == str(table) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()
    )
    again = onnx_encoder.encode(["the heron crossed the harbour at dawn"])[0]
    assert float(np.dot(before, again)) > 0.999999


def test_the_token_table_gives_each_id_its_own_row(tmp_path: Path) -> None:
    import numpy as np

    from bot.embedding_onnx import TokenTable

    width = TokenTable.WIDTH
    rows = np.arange(5 * width, dtype=np.int64).reshape(5, width).astype(np.int8)
    path = tmp_path / "tokens.bin"
    path.write_bytes(rows.tobytes())
    table = TokenTable(path)
    try:
        ids = np.array([[4, 0, 4], [2, 2, 1]], dtype=np.int64)
        assert (table.rows(ids) == rows[ids]).all()
        with pytest.raises(IndexError):
            table.rows(np.array([[5]], dtype=np.int64))
    finally:
        table.close()
    path.write_bytes(rows.tobytes()[:-1])
    with pytest.raises(ValueError, match="not a token table"):
        TokenTable(path)


def test_describe_names_the_encoder_that_runs(
    onnx_encoder: embedding.Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mirror status` and `mirror doctor` say which backend embeds: the loaded one, or,
    before any embedding, the one `[recall] encoder` would load (without loading it)."""
    from bot import embedding_onnx
    from bot.config import Config, RecallConfig
    from bot.recall import describe

    monkeypatch.setattr(embedding, "_encoder", onnx_encoder)
    assert "-d, onnxruntime int8;" in describe(Config())
    monkeypatch.setattr(embedding, "_encoder", None)
    assert "-d, numpy;" in describe(Config())  # the default
    int8 = describe(Config(recall=RecallConfig(encoder="int8")))
    why = embedding_onnx.unusable()
    assert ("-d, onnxruntime int8;" if why is None else f"int8 asked, but {why}") in int8
    assert embedding.loaded() is None  # describing loaded nothing


@pytest.fixture
def fresh_cache(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}


def test_the_int8_model_is_built_once_per_host_in_the_cache(
    fresh_cache: dict[str, str], tmp_path: Path
) -> None:
    """Named by the model's hash and the format, written whole (no temporary left), and the
    next process loads it instead of building it again."""
    pytest.importorskip("onnxruntime")
    from bot import embedding_onnx

    if embedding_onnx.unusable() is not None:
        pytest.skip(f"encoder() would not load onnxruntime here: {embedding_onnx.unusable()}")
    code = (
        "from bot import embedding\n"
        "embedding.choose('int8')\n"
        "encoder = embedding.encoder()\n"
        "print(encoder.backend, float(encoder.encode(['hello there'])[0] @ "
        "embedding.NumpyEncoder().encode(['hello there'])[0]))\n"
    )
    built = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env=fresh_cache,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("onnxruntime int8 "), done.stdout
        assert float(done.stdout.split()[-1]) >= 0.99
        found = sorted((tmp_path / "cache" / "mirroros").glob("*-int8-*"))
        built.append([(path.name, path.stat().st_mtime_ns) for path in found])
    source = embedding.model_dir() / "model.safetensors"
    name = embedding_onnx.model_path(source).name
    assert embedding_onnx.model_key(source) in name and f"-o{embedding_onnx.ONNX_FORMAT}." in name
    tokens = embedding_onnx.token_table_path(source).name
    assert embedding_onnx.model_key(source) in tokens
    assert [n for n, _ in built[0]] == sorted([name, tokens])
    assert built[1] == built[0]  # loaded, not built again


def test_without_onnx_to_build_the_model_the_encoder_is_numpy(
    fresh_cache: dict[str, str], tmp_path: Path
) -> None:
    """onnxruntime installed but `onnx` unimportable, and no model built yet: numpy serves,
    and the log says why, once."""
    pytest.importorskip("onnxruntime")
    from bot import embedding_onnx

    if embedding_onnx.unusable() is not None:
        pytest.skip(f"encoder() would not load onnxruntime here: {embedding_onnx.unusable()}")
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "onnx.py").write_text("raise ImportError('onnx is broken here')\n")
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "from bot import embedding\n"
        "embedding.choose('int8')\n"
        "print(embedding.encoder().backend, embedding.encoder().encode(['hi']).shape)\n"
    )
    env = {**fresh_cache, "PYTHONPATH": str(shadow)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy (1, 384)"
    said = [line for line in done.stderr.splitlines() if "sentence vectors in numpy" in line]
    assert len(said) == 1 and "onnx is broken here" in said[0], done.stderr


def test_the_int8_graph_refuses_two_different_constants_under_one_name() -> None:
    """The graph builder names its constants; the same name asked for again with the same
    value is shared, with another value it would silently be the first: refused."""
    pytest.importorskip("onnx")
    from bot.embedding_onnx import _Graph

    graph = _Graph()
    assert graph.const("axis", [1]) == graph.const("axis", [1]) == "axis"
    assert len(graph.initializers) == 1
    with pytest.raises(ValueError, match="two different constants named 'axis'"):
        graph.const("axis", [2])
