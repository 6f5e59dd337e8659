"""The Gemma forward pass in NumPy: Gemma 1, 2 and 3 (text), one code path, float32.

Read it top to bottom: each block of the architecture is one small pure
function, in the order the data flows, with the tensor shapes on the lines that
change them. Shape letters: T tokens, D hidden_size, F intermediate_size,
H query heads, K key/value heads, Hd head_dim, V vocab_size.

The three generations differ only through the config (see config.py):

=====================  ==========  ===========================  ======================
                       Gemma 1     Gemma 2                      Gemma 3
=====================  ==========  ===========================  ======================
norms per layer        2           4 (sandwich)                 4 (sandwich)
attention scale        Hd ** -0.5  query_pre_attn_scalar ** -.5  query_pre_attn_scalar ** -.5
attention soft-cap     none        50 * tanh(s / 50)            none
final logit soft-cap   none        30 * tanh(z / 30)            none
local (sliding) layers none        every other layer            5 of every 6
q/k RMSNorm per head   no          no                           yes
RoPE base              10k         10k                          10k local, 1M global (+ linear scaling)
=====================  ==========  ===========================  ======================

Every number is computed in float32 whatever the storage dtype, to match
Hugging Face transformers run in float32 (the golden-logit tests pin this to
1e-4). Weights are read one layer at a time (weights.py), so a checkpoint never
sits in memory in float32 as a whole.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from gemma_ref.config import SLIDING, GemmaConfig, Rope, load_config
from gemma_ref.errors import InputError
from gemma_ref.weights import Weights, matmul_stored

f32 = np.float32


# --- building blocks ---------------------------------------------------------------------------


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm with Gemma's (1 + w) gain.  [..., n] -> [..., n]"""
    inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f32(eps))  # [..., 1]
    return x * inv_rms * (f32(1.0) + w)  # Gemma stores w without the +1 (a zero w means gain 1)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: every Gemma uses it, even configs that say plain "gelu".  [..., n] -> [..., n]

    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), computed in one buffer: written as
    a one-liner it allocates nine arrays the size of the MLP's hidden layer (2.6x slower).
    """
    y = x * x * x  # x*x*x, not x**3: for float32 200x faster
    y *= f32(0.044715)
    y += x
    y *= f32(np.sqrt(2.0 / np.pi))
    np.tanh(y, out=y)
    y += f32(1.0)
    y *= x
    y *= f32(0.5)
    return y


def linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A projection by a weight stored [out, in], as PyTorch stores it.  [T, in] -> [T, out]"""
    if w.dtype == f32:
        return (w @ x.T).T  # = x @ w.T; BLAS runs this orientation ~10% faster for a prompt's worth of rows
    return matmul_stored(x, w)  # still bf16/f16 in the file: converted to float32 a few rows at a time


def mlp(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Gated GELU feed-forward.  [T, D] -> [T, D]"""
    h = gelu_tanh(linear(x, gate)) * linear(x, up)  # [T, D] -> [T, F]
    return linear(h, down)  # [T, F] -> [T, D]


def softcap(x: np.ndarray, cap: float | None) -> np.ndarray:
    """Gemma 2's soft-capping: squash values smoothly into (-cap, cap). None leaves x alone."""
    if cap is None:
        return x
    return f32(cap) * np.tanh(x / f32(cap))


# --- rotary position embedding -----------------------------------------------------------------


def rope_inv_freq(head_dim: int, rope: Rope) -> np.ndarray:
    """Rotation speed of each pair of dimensions.  -> [Hd/2]"""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(f32) / f32(head_dim)  # [Hd/2], 2i/d in float32
    inv_freq = f32(1.0) / (f32(rope.theta) ** exponents)  # 1 / base^(2i/d)
    return inv_freq / f32(rope.linear_factor)  # linear scaling stretches positions: pos / factor


def rope_cos_sin(positions: np.ndarray, inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables for the given positions.  [T], [Hd/2] -> [T, Hd], [T, Hd]"""
    angles = positions.astype(f32)[:, None] * inv_freq[None, :]  # [T, Hd/2]
    angles = np.concatenate([angles, angles], axis=-1)  # [T, Hd]: half-split layout, both halves share angles
    return np.cos(angles), np.sin(angles)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis.  [..., Hd] -> [..., Hd]"""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # HF layout: halves, not interleaved pairs


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate each head's vector by its position's angles.  [heads, T, Hd] -> [heads, T, Hd]"""
    return x * cos + rotate_half(x) * sin  # cos/sin [T, Hd] broadcast over heads


# --- attention ---------------------------------------------------------------------------------


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis.  [..., n] -> [..., n]"""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def attention_mask(q_positions: np.ndarray, k_positions: np.ndarray, window: int | None) -> np.ndarray:
    """True where a query may see a key: causal, and within the window on local layers.  [Tq], [Tk] -> [Tq, Tk]"""
    q, k = q_positions[:, None], k_positions[None, :]
    allowed = k <= q  # causal: nothing from the future
    if window is not None:
        allowed &= k > q - window  # sliding window: only the last `window` keys, including q itself
    return allowed


def repeat_kv(x: np.ndarray, n_rep: int) -> np.ndarray:
    """Share each key/value head among n_rep query heads (GQA/MQA).  [K, T, Hd] -> [K*n_rep, T, Hd]"""
    return np.repeat(x, n_rep, axis=0)  # query head h reads kv head h // n_rep (np.tile would be h % K: wrong)


class LayerCache:
    """The keys and values one layer has computed so far for one sequence (the KV cache).  [K, length, Hd] each

    Decoding feeds one new token at a time; its query needs every earlier key and value, which
    never change once computed, so they are kept instead of recomputed. Storage grows by doubling.
    """

    def __init__(self, n_kv_heads: int, head_dim: int, capacity: int = 64):
        self.k = np.empty((n_kv_heads, capacity, head_dim), dtype=f32)
        self.v = np.empty((n_kv_heads, capacity, head_dim), dtype=f32)
        self.length = 0  # tokens stored; they sit at positions 0 .. length-1

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store the new tokens' keys and values; return all of them.  [K, T, Hd] -> [K, length + T, Hd]"""
        n = self.length + k.shape[1]
        if n > self.k.shape[1]:  # full: move to storage twice as large (or as large as needed)
            capacity = max(n, 2 * self.k.shape[1])
            self.k, self.v = self._moved(self.k, capacity), self._moved(self.v, capacity)
        self.k[:, self.length:n], self.v[:, self.length:n] = k, v
        self.length = n
        return self.k[:, :n], self.v[:, :n]

    def _moved(self, a: np.ndarray, capacity: int) -> np.ndarray:
        """`a`'s stored tokens in new storage of `capacity` tokens.  [K, old, Hd] -> [K, capacity, Hd]"""
        new = np.empty((a.shape[0], capacity, a.shape[2]), dtype=f32)
        new[:, :self.length] = a[:, :self.length]
        return new


def new_cache(cfg: GemmaConfig, capacity: int = 64) -> list[LayerCache]:
    """An empty KV cache for one sequence: one LayerCache per layer (room for `capacity` tokens before growing)."""
    return [LayerCache(cfg.num_key_value_heads, cfg.head_dim, capacity) for _ in range(cfg.num_hidden_layers)]


def attention(
    x: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig, layer_type: str, positions: np.ndarray,
    cache: LayerCache | None = None,
) -> np.ndarray:
    """Multi-head self-attention with RoPE, optional q/k norm, soft-cap and sliding window.  [T, D] -> [T, D]

    `positions` are the tokens' absolute positions; with a `cache`, the keys and values of the
    earlier positions come from it and this call's are added to it.
    """
    T = x.shape[0]
    H, K, Hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = linear(x, w["self_attn.q_proj.weight"]).reshape(T, H, Hd).transpose(1, 0, 2)  # [T, D] -> [H, T, Hd]
    k = linear(x, w["self_attn.k_proj.weight"]).reshape(T, K, Hd).transpose(1, 0, 2)  # [T, D] -> [K, T, Hd]
    v = linear(x, w["self_attn.v_proj.weight"]).reshape(T, K, Hd).transpose(1, 0, 2)  # [T, D] -> [K, T, Hd]

    if cfg.use_qk_norm:  # Gemma 3 normalises every query and key head (again with 1 + w) before RoPE
        q = rms_norm(q, w["self_attn.q_norm.weight"], cfg.rms_norm_eps)  # [H, T, Hd]
        k = rms_norm(k, w["self_attn.k_norm.weight"], cfg.rms_norm_eps)  # [K, T, Hd]

    local = layer_type == SLIDING
    rope = cfg.rope_local if local else cfg.rope_global  # Gemma 3: local layers keep a 10k base, unscaled
    cos, sin = rope_cos_sin(positions, rope_inv_freq(Hd, rope))  # [T, Hd] each
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # keys are cached after RoPE: positions never change

    if cache is not None:
        k, v = cache.append(k, v)  # [K, T, Hd] -> [K, S, Hd]: every key so far, this call's last
    k_positions = np.arange(positions[-1] + 1 - k.shape[1], positions[-1] + 1)  # [S]
    window = cfg.sliding_window if local else None
    if window is not None:  # keys older than the first query's window are never seen: skip them
        first = max(0, int(positions[0]) - window + 1 - int(k_positions[0]))  # index of the oldest key still seen
        k, v, k_positions = k[:, first:], v[:, first:], k_positions[first:]

    k, v = repeat_kv(k, H // K), repeat_kv(v, H // K)  # [K, S, Hd] -> [H, S, Hd]
    scale = f32(cfg.query_pre_attn_scalar ** -0.5)  # Gemma 1: Hd ** -0.5; Gemma 2/3: query_pre_attn_scalar ** -0.5
    scores = (q @ k.transpose(0, 2, 1)) * scale  # [H, T, Hd] @ [H, Hd, S] -> [H, T, S]
    scores = softcap(scores, cfg.attn_logit_softcapping)  # Gemma 2: cap *before* the mask
    mask = attention_mask(positions, k_positions, window)  # [T, S]
    scores = np.where(mask, scores, f32(-np.inf))
    probs = softmax(scores)  # [H, T, S]
    out = (probs @ v).transpose(1, 0, 2).reshape(T, H * Hd)  # [H, T, Hd] -> [T, H*Hd]
    return linear(out, w["self_attn.o_proj.weight"])  # [T, H*Hd] -> [T, D]


# --- one transformer block -----------------------------------------------------------------------


def block(
    h: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig, layer_type: str, positions: np.ndarray,
    cache: LayerCache | None = None,
) -> np.ndarray:
    """One decoder layer: attention then MLP, each in a residual branch.  [T, D] -> [T, D]"""
    eps = cfg.rms_norm_eps
    a = attention(rms_norm(h, w["input_layernorm.weight"], eps), w, cfg, layer_type, positions, cache)  # [T, D]
    if cfg.sandwich_norms:
        # Gemma 2/3: the branch output is normalised too, and the MLP gets its own pre-norm.
        h = h + rms_norm(a, w["post_attention_layernorm.weight"], eps)
        m = mlp(rms_norm(h, w["pre_feedforward_layernorm.weight"], eps),
                w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"])
        return h + rms_norm(m, w["post_feedforward_layernorm.weight"], eps)
    # Gemma 1: name trap, its "post_attention_layernorm" is the norm *before* the MLP.
    h = h + a
    m = mlp(rms_norm(h, w["post_attention_layernorm.weight"], eps),
            w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"])
    return h + m


# --- the whole model -----------------------------------------------------------------------------


def embed(weights: Weights, ids: np.ndarray, cfg: GemmaConfig) -> np.ndarray:
    """Token embeddings scaled by sqrt(D).  [T] -> [T, D]"""
    # The factor is a float32 value (55.425625 for D = 3072); rounding it to bf16 (55.5) is a classic port bug.
    return weights.embedding_rows(ids) * f32(cfg.embed_scale)


def unembed(h: np.ndarray, weights: Weights, cfg: GemmaConfig, block_rows: int = 4096) -> np.ndarray:
    """Logits against the tied (unscaled) embedding, read in blocks of rows.  [T, D] -> [T, V]"""
    logits = np.empty((h.shape[0], cfg.vocab_size), dtype=f32)  # [T, V]
    for start, E in weights.embedding_blocks(block_rows):  # E: [n, D], never all V rows in float32 at once
        logits[:, start:start + E.shape[0]] = linear(h, E)  # [T, D] -> [T, n]
    return softcap(logits, cfg.final_logit_softcapping)  # Gemma 2: 30 * tanh(z / 30)


def forward(
    weights: Weights,
    cfg: GemmaConfig,
    sequences: list[np.ndarray],
    progress: Callable[[int, int], None] | None = None,
    caches: list[list[LayerCache]] | None = None,
    last_only: bool = False,
) -> list[np.ndarray]:
    """Token ids to next-token logits for independent sequences.  [T_s] each -> [T_s, V] each

    Each layer's weights are read once for all the sequences, and only one layer is in
    memory at a time. With `caches` (one per sequence, from new_cache), the ids continue
    what each cache holds and their keys/values are added to it; `last_only` computes
    the logits of each sequence's last token only ([1, V] each), all that decoding needs.
    """
    caches = caches if caches is not None else [None] * len(sequences)
    starts = [c[0].length if c else 0 for c in caches]  # the first new token's position in each sequence
    hs = [embed(weights, ids, cfg) for ids in sequences]  # [T_s, D] each
    for i, layer_type in enumerate(cfg.layer_types):
        w = weights.layer(i)  # this layer's tensors
        hs = [block(h, w, cfg, layer_type, np.arange(s, s + len(h)), c[i] if c else None)  # BOS at position 0
              for h, s, c in zip(hs, starts, caches)]
        if progress:
            progress(i + 1, cfg.num_hidden_layers)
    if last_only:
        hs = [h[-1:] for h in hs]  # [1, D] each
    norm = weights.final_norm()  # [D]
    h_all = np.concatenate([rms_norm(h, norm, cfg.rms_norm_eps) for h in hs])  # [sum T_s, D]
    logits = unembed(h_all, weights, cfg)  # [sum T_s, V]: the output matrix is read once for all sequences
    return np.split(logits, np.cumsum([len(h) for h in hs])[:-1])  # [T_s, V] each


# --- loading -----------------------------------------------------------------------------------


class Model:
    """A Gemma checkpoint on disk, ready to run: ``load_model(dir).forward(ids)``."""

    def __init__(self, path: str | os.PathLike, check: bool = True, cache_weights: bool = False):
        """`cache_weights` keeps every weight in float32 after first use (faster repeats, 2x the bf16 size in RAM)."""
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise InputError("model path is not a directory", self.path,
                             hint="pass the directory holding config.json and the safetensors")
        self.config: GemmaConfig = load_config(self.path)
        self.weights = Weights(self.path, self.config, check=check, cache=cache_weights)

    def forward(self, token_ids: Sequence[int] | np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """float32 logits of shape [len(token_ids), vocab_size] for a 1-D sequence of token ids."""
        return self.forward_many([token_ids], progress)[0]

    def forward_many(
        self, sequences: Sequence[Sequence[int] | np.ndarray], progress: Callable[[int, int], None] | None = None
    ) -> list[np.ndarray]:
        """Logits for several independent sequences, reading each layer's weights once for all."""
        ids = [validate_ids(s, self.config.vocab_size) for s in sequences]
        return forward(self.weights, self.config, ids, progress)

    def close(self) -> None:
        self.weights.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def validate_ids(token_ids: Sequence[int] | np.ndarray, vocab_size: int) -> np.ndarray:
    """A 1-D int64 array of ids in [0, vocab_size), or an InputError saying what is wrong."""
    try:
        ids = np.asarray(token_ids)
    except (TypeError, ValueError) as e:
        raise InputError(f"token ids must be a 1-D sequence of integers ({e})") from None
    if ids.ndim != 1:
        raise InputError(f"token ids must be a 1-D sequence, got shape {list(ids.shape)}")
    if ids.size == 0:
        raise InputError("token ids are empty; give at least one token (usually BOS = 2)")
    if ids.dtype.kind not in "iu":
        if ids.dtype.kind == "f" and np.all(ids == np.round(ids)):
            ids = ids.astype(np.int64)
        else:
            raise InputError(f"token ids must be integers, got dtype {ids.dtype}")
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        raise InputError(f"token id {int(ids[bad[0]])} at position {int(bad[0])} is outside the vocabulary "
                         f"[0, {vocab_size}) ({bad.size} out of range in all)")
    return ids.astype(np.int64)


def load_model(path: str | os.PathLike, cache_weights: bool = False) -> Model:
    """Open a model directory (config.json + safetensors) after checking its structure."""
    return Model(path, cache_weights=cache_weights)
