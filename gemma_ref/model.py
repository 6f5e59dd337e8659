"""The Gemma forward pass in NumPy: Gemma 1, 2, 3, 3n and 4 (text) and VaultGemma, float32.

Read it top to bottom: each block of the architecture is one small pure
function, in the order the data flows, with the tensor shapes on the lines that
change them. Shape letters: T tokens, D hidden_size, F intermediate_size,
H query heads, K key/value heads, Hd head_dim, V vocab_size; Gemma 4 adds L layers,
P per-layer-embedding width, E experts, I expert width;
Gemma 3n n AltUp streams, r LAuReL rank.

Gemma 1-3 differ only through the config (see config.py) and share ``block``; Gemma 4's
layer differs enough to have its own functions (``gemma4_block`` and the ones it calls):

=====================  ==========  ==================  ==================  ================================
                       Gemma 1     Gemma 2             Gemma 3             Gemma 4
=====================  ==========  ==================  ==================  ================================
RMSNorm gain           1 + w       1 + w               1 + w               w (no +1)
norms per layer        2           4 (sandwich)        4 (sandwich)        4 (+3 with MoE, +1 with PLE)
attention scale        Hd ** -0.5  qpas ** -0.5        qpas ** -0.5        1.0 (q/k norms carry it)
attention soft-cap     none        50 * tanh(s / 50)   none                none
final logit soft-cap   none        30 * tanh(z / 30)   none                30 * tanh(z / 30)
local (sliding) layers none        every other layer   5 of every 6        per layer_types (4:1 or 5:1)
q/k RMSNorm per head   no          no                  yes                 yes, and a weightless v_norm
head width             Hd          Hd                  Hd                  Hd local, global_head_dim full
RoPE                   10k         10k                 10k local, 1M glob  10k local, 1M proportional full
K/V                    own         own                 own                 K=V on full layers (31B, 26B);
                                                                           last N layers share (E2B, E4B)
extras                 -           -                   -                   per-layer embeddings (E2B/E4B),
                                                                           MoE next to the MLP (26B-A4B),
                                                                           layer_scalar on the whole stream
=====================  ==========  ==================  ==================  ================================

Two more members of the family, against their nearest relative (VaultGemma shares ``block``; Gemma 3n
has ``gemma3n_block`` and reuses Gemma 4's attention and per-layer embeddings):

=====================  ==========================  ===============================================
                       VaultGemma (vs Gemma 2)     Gemma 3n (vs Gemma 4 E2B/E4B)
=====================  ==========================  ===============================================
RMSNorm gain           1 + w                       w (no +1)
norms per layer        2: no post-attention and    4 + LAuReL's + AltUp router's + PLE's
                       no post-feedforward norm
attention              Gemma 2's (qpas, cap 50)    Gemma 4's: scale 1.0, q/k/v norms, one Hd
local (sliding) layers per layer_types, NOT the    per layer_types (4:1); last layer not forced
                       alternation (1b: none)
RoPE                   10k everywhere              10k local, 1M full, no proportional RoPE
residual stream        one                         AltUp: n = 4 streams, predicted and corrected
                                                   around each layer, averaged before the norm
extras                 -                           LAuReL (low-rank residual next to attention),
                                                   gaussian-top-k sparse MLP gate (early layers),
                                                   PLE into streams 1..3 only, ids past the PLE
                                                   table read row 0; KV sharing as Gemma 4
=====================  ==========================  ===============================================

Images (multimodal Gemma 3 / Gemma 4): vision.py turns each image into soft tokens; here they only
replace the image tokens' embeddings (``merge_images``) and let the tokens of one image attend to each
other both ways (``attention_mask``'s ``blocks``). The rest of the text model is unchanged.

Every number is computed in float32 whatever the storage dtype, to match
Hugging Face transformers run in float32 (the golden-logit tests pin this to
1e-4). Weights are read one layer at a time (weights.py), so a checkpoint never
sits in memory in float32 as a whole.
"""

from __future__ import annotations

import os
import statistics
from typing import Callable, Sequence

import numpy as np

from gemma_ref.config import SLIDING, GemmaConfig, LayerSpec, Rope, load_config
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


def linear(x: np.ndarray, w: np.ndarray, lora=None) -> np.ndarray:
    """A projection by a weight stored [out, in], as PyTorch stores it.  [T, in] -> [T, out]

    `lora`: an adapter's low-rank update of this projection (adapters.py), added on the fly as
    W x + scale * B (A x); an adapted model's layer hands its weights out with it (`w.lora`).
    """
    if lora is None and hasattr(w, "lora"):
        w, lora = w.base, w.lora
    if w.dtype == f32:
        y = (w @ x.T).T  # = x @ w.T; BLAS runs this orientation ~10% faster for a prompt's worth of rows
    else:
        y = matmul_stored(x, w)  # still bf16/f16 in the file: converted to float32 a few rows at a time
    return y if lora is None else lora.apply(x, y, w)


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
    """Rotation speed of each pair of dimensions.  -> [Hd/2]

    As transformers computes it: ``1.0 / (base ** (arange(0, d, 2).float() / d))`` in float32. The
    exponents 2i/d are rounded to float32 first (as torch does); the power is then taken in float64
    and rounded once, which is the correctly rounded float32 power: torch's scalar path (``std::pow``)
    gives exactly that, while NumPy's own float32 power is machine-dependent (SIMD code paths) and was
    seen 1 ulp off in 19 of 128 entries. torch's vectorized power (Sleef, 1-ulp bound) itself differs
    from the correctly rounded value in ~1 entry in 128 (tests/test_real_model.py pins both tables).
    """
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(f32) / f32(head_dim)  # [Hd/2], 2i/d in float32
    power = (np.float64(np.float32(rope.theta)) ** exponents.astype(np.float64)).astype(f32)  # base^(2i/d), rounded once
    inv_freq = f32(1.0) / power  # 1 / base^(2i/d), float32 division like torch's
    if rope.proportion < 1.0:
        # Gemma 4 "proportional" (full layers): only the first p*Hd/2 pairs rotate, their exponents still over
        # the FULL Hd; the other pairs get angle 0 (cos 1, sin 0). Not "partial rotary" over p*Hd dims.
        inv_freq[int(rope.proportion * head_dim // 2):] = 0
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


def attention_mask(q_positions: np.ndarray, k_positions: np.ndarray, window: int | None,
                   blocks: np.ndarray | None = None) -> np.ndarray:
    """True where a query may see a key: causal, and within the window on local layers.  [Tq], [Tk] -> [Tq, Tk]

    `blocks` (multimodal prompts, vision.py): each position's image block, -1 for text; the tokens of
    one image also see each other's future (bidirectional), and the window still applies after that.
    """
    q, k = q_positions[:, None], k_positions[None, :]
    allowed = k <= q  # causal: nothing from the future
    if blocks is not None:
        bq, bk = blocks[q_positions][:, None], blocks[k_positions][None, :]  # [Tq, 1], [1, Tk]
        allowed |= (bq == bk) & (bq >= 0)  # within one image: every token sees every other
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


def new_cache(cfg: GemmaConfig, capacity: int = 64) -> list[LayerCache | None]:
    """An empty KV cache for one sequence: one LayerCache per layer (room for `capacity` tokens before growing).

    Gemma 4: each layer's own geometry; KV-shared layers get None, they read the cache of the layer they share.
    """
    if cfg.layers:
        return [None if s.kv_source is not None else LayerCache(s.num_key_value_heads, s.head_dim, capacity)
                for s in cfg.layers]
    return [LayerCache(cfg.num_key_value_heads, cfg.head_dim, capacity) for _ in range(cfg.num_hidden_layers)]


def attention(
    x: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig, layer_type: str, positions: np.ndarray,
    cache: LayerCache | None = None, blocks: np.ndarray | None = None,
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
    out = attend(q, k, v, positions, cfg.sliding_window if local else None, cfg, blocks)  # [T, H*Hd]
    return linear(out, w["self_attn.o_proj.weight"])  # [T, H*Hd] -> [T, D]


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, positions: np.ndarray, window: int | None,
           cfg: GemmaConfig, blocks: np.ndarray | None = None) -> np.ndarray:
    """Scaled dot-product attention of the queries over every key so far.  [H, T, Hd], [K, S, Hd] x2 -> [T, H*Hd]

    The keys are those of positions up to the last query's (the cache's, then this call's).
    """
    H, T, Hd = q.shape
    k_positions = np.arange(positions[-1] + 1 - k.shape[1], positions[-1] + 1)  # [S]
    if window is not None:  # keys older than the first query's window are never seen: skip them
        first = max(0, int(positions[0]) - window + 1 - int(k_positions[0]))  # index of the oldest key still seen
        k, v, k_positions = k[:, first:], v[:, first:], k_positions[first:]

    k, v = repeat_kv(k, H // k.shape[0]), repeat_kv(v, H // v.shape[0])  # [K, S, Hd] -> [H, S, Hd]
    # Gemma 1: Hd ** -0.5; Gemma 2/3: query_pre_attn_scalar ** -0.5; Gemma 4: 1.0 (config sets the scalar to 1).
    scale = f32(cfg.query_pre_attn_scalar ** -0.5)
    scores = (q @ k.transpose(0, 2, 1)) * scale  # [H, T, Hd] @ [H, Hd, S] -> [H, T, S]
    scores = softcap(scores, cfg.attn_logit_softcapping)  # Gemma 2: cap *before* the mask
    mask = attention_mask(positions, k_positions, window, blocks)  # [T, S]
    scores = np.where(mask, scores, f32(-np.inf))
    probs = softmax(scores)  # [H, T, S]
    return (probs @ v).transpose(1, 0, 2).reshape(T, H * Hd)  # [H, T, Hd] -> [T, H*Hd]


# --- one transformer block -----------------------------------------------------------------------


def block(
    h: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig, layer_type: str, positions: np.ndarray,
    cache: LayerCache | None = None, blocks: np.ndarray | None = None,
) -> np.ndarray:
    """One decoder layer: attention then MLP, each in a residual branch.  [T, D] -> [T, D]

    `blocks`: image blocks that attend bidirectionally (multimodal prompts), else None.
    """
    eps = cfg.rms_norm_eps
    a = attention(rms_norm(h, w["input_layernorm.weight"], eps), w, cfg, layer_type, positions, cache, blocks)  # [T, D]
    if cfg.sandwich_norms:
        # Gemma 2/3: the branch output is normalised too, and the MLP gets its own pre-norm.
        # VaultGemma (post_norms False) keeps the pre-MLP norm but drops both post-branch norms.
        h = h + (rms_norm(a, w["post_attention_layernorm.weight"], eps) if cfg.post_norms else a)
        m = mlp(rms_norm(h, w["pre_feedforward_layernorm.weight"], eps),
                w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"])
        return h + (rms_norm(m, w["post_feedforward_layernorm.weight"], eps) if cfg.post_norms else m)
    # Gemma 1: name trap, its "post_attention_layernorm" is the norm *before* the MLP.
    h = h + a
    m = mlp(rms_norm(h, w["post_attention_layernorm.weight"], eps),
            w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"])
    return h + m


# --- Gemma 4 ----------------------------------------------------------------------------------------


def rms_norm_gemma4(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm as Gemma 4 has it: gain w.  [..., n] -> [..., n]"""
    inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f32(eps))  # [..., 1]
    return x * inv_rms * w  # Gemma 4: w without the +1, unlike 1-3 (its checkpoints store ones, not zeros)


def rms_norm_unscaled(x: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm with no gain at all: Gemma 4's v_norm and router norm (no weight tensor).  [..., n] -> [..., n]"""
    return x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f32(eps)))


def per_layer_inputs(weights: Weights, ids: np.ndarray, h0: np.ndarray, cfg: GemmaConfig) -> np.ndarray:
    """Gemma 4 per-layer embeddings (PLE, E2B/E4B): one P-vector per token for each layer.  [T], [T, D] -> [L, T, P]

    A token part (a second embedding table, gathered by rows) plus a context part (a projection
    of the scaled input embedding), each brought to the same scale, then averaged.
    """
    T, L, P, D = len(ids), cfg.num_hidden_layers, cfg.hidden_size_per_layer_input, cfg.hidden_size
    tok = weights.per_layer_rows(ids).reshape(T, L, P) * f32(P ** 0.5)  # [T, L, P]: scaled like an embedding
    W, norm_w = weights.per_layer_projection()  # [L*P, D], [P]
    ctx = (linear(h0, W) * f32(D ** -0.5)).reshape(T, L, P)  # [T, D] -> [T, L, P], from the *scaled* embedding
    ctx = rms_norm_gemma4(ctx, norm_w, cfg.rms_norm_eps)  # each layer's slice normalised on its own
    return ((ctx + tok) * f32(2 ** -0.5)).transpose(1, 0, 2)  # [L, T, P]


def project_kv(x: np.ndarray, w: dict[str, np.ndarray], spec: LayerSpec, eps: float, cos: np.ndarray,
               sin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Gemma 4 layer's own keys and values, normed, keys rotated.  [T, D] -> [K, T, Hd], [K, T, Hd]"""
    T, K, Hd = x.shape[0], spec.num_key_value_heads, spec.head_dim
    k = linear(x, w["self_attn.k_proj.weight"]).reshape(T, K, Hd).transpose(1, 0, 2)  # [T, D] -> [K, T, Hd]
    if spec.k_eq_v:
        v = k  # K=V full layers (31B, 26B, 12B): V is the RAW k_proj output, before k_norm and RoPE
    else:
        v = linear(x, w["self_attn.v_proj.weight"]).reshape(T, K, Hd).transpose(1, 0, 2)  # [K, T, Hd]
    k = apply_rope(rms_norm_gemma4(k, w["self_attn.k_norm.weight"], eps), cos, sin)  # [K, T, Hd]
    v = rms_norm_unscaled(v, eps)  # Gemma 4's v_norm: RMSNorm without a weight, on every own V
    return k, v


def gemma4_attention(
    x: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig, spec: LayerSpec, positions: np.ndarray,
    cache: LayerCache | None = None, shared: tuple[np.ndarray, np.ndarray] | None = None,
    blocks: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Gemma 4 self-attention.  [T, D] -> [T, D], plus the (K, V) attended over ([K, S, Hd] each)

    `shared`: on a KV-shared layer, the keys and values of the layer it shares (already normed and
    rotated: positions are the same); such a layer has no K/V projections and no cache of its own.
    """
    T, H, Hd, eps = x.shape[0], cfg.num_attention_heads, spec.head_dim, cfg.rms_norm_eps
    q = linear(x, w["self_attn.q_proj.weight"]).reshape(T, H, Hd).transpose(1, 0, 2)  # [T, D] -> [H, T, Hd]
    q = rms_norm_gemma4(q, w["self_attn.q_norm.weight"], eps)  # [H, T, Hd]
    rope = cfg.rope_local if spec.type == SLIDING else cfg.rope_global  # full layers: proportional, 1M base
    cos, sin = rope_cos_sin(positions, rope_inv_freq(Hd, rope))  # [T, Hd]: Hd of this layer's type (256 / 512)
    q = apply_rope(q, cos, sin)

    if spec.kv_source is None:
        k, v = project_kv(x, w, spec, eps, cos, sin)  # [K, T, Hd] each
        if cache is not None:
            k, v = cache.append(k, v)  # [K, S, Hd]: every key so far
    else:
        k, v = shared  # KV sharing (E2B/E4B): reuse an earlier layer's keys and values, computed once
    out = attend(q, k, v, positions, cfg.sliding_window if spec.type == SLIDING else None, cfg, blocks)  # [T, H*Hd]
    return linear(out, w["self_attn.o_proj.weight"]), (k, v)  # [T, H*Hd] -> [T, D]


def route(r: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig) -> tuple[np.ndarray, np.ndarray]:
    """The MoE router: each token's top-k experts and their weights.  [T, D] -> [T, k], [T, k] ids"""
    x = rms_norm_unscaled(r, cfg.rms_norm_eps) * w["router.scale"] * f32(cfg.hidden_size ** -0.5)  # [T, D]
    probs = softmax(linear(x, w["router.proj.weight"]))  # [T, E]: softmax over ALL experts, then top-k
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :cfg.top_k_experts]  # [T, k]
    top = np.take_along_axis(probs, idx, axis=-1)  # [T, k]
    top = top / top.sum(axis=-1, keepdims=True)  # renormalised over the chosen k
    return top * w["router.per_expert_scale"][idx], idx  # per-expert scale, after the renormalisation


def moe(r: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig) -> np.ndarray:
    """Gemma 4's experts (26B-A4B): each token through its routed experts, weighted.  [T, D] -> [T, D]

    Only the routed experts run: tokens are grouped by expert, so each expert's weights are read
    (and, from bf16, converted) once per call, and the other experts' never.
    """
    weights, idx = route(r, w, cfg)  # the router reads the RAW residual r, not the experts' pre-norm
    x = rms_norm_gemma4(r, w["pre_feedforward_layernorm_2.weight"], cfg.rms_norm_eps)  # [T, D]
    gate_up, down = w["experts.gate_up_proj"], w["experts.down_proj"]  # [E, 2I, D], [E, D, I]: stored views
    I = cfg.moe_intermediate_size
    out = np.zeros_like(x)  # [T, D]
    for e in np.unique(idx):
        tokens, slot = np.nonzero(idx == e)  # the tokens routed to expert e, and where in their top-k
        y = mlp(x[tokens], gate_up[e][:I], gate_up[e][I:], down[e])  # gate rows first, then up rows
        out[tokens] += y * weights[tokens, slot][:, None]  # [n, D]
    return out


def gemma4_block(
    h: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig, spec: LayerSpec, positions: np.ndarray,
    ple: np.ndarray | None = None, cache: LayerCache | None = None,
    shared: tuple[np.ndarray, np.ndarray] | None = None, blocks: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One Gemma 4 decoder layer.  [T, D] -> [T, D], plus this layer's (K, V) for layers that share them

    `ple`: this layer's per-layer embedding [T, P] (E2B/E4B), else None. `blocks`: image blocks
    attending bidirectionally (sliding layers of use_bidirectional_attention "vision"), else None.
    """
    eps = cfg.rms_norm_eps
    a, kv = gemma4_attention(rms_norm_gemma4(h, w["input_layernorm.weight"], eps), w, cfg, spec, positions,
                             cache, shared, blocks)  # [T, D]
    h = h + rms_norm_gemma4(a, w["post_attention_layernorm.weight"], eps)
    r = h  # [T, D]
    m = mlp(rms_norm_gemma4(r, w["pre_feedforward_layernorm.weight"], eps),
            w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"])  # [T, D]; E2B: 2x wide on shared layers
    if cfg.num_experts:  # 26B-A4B: the experts run next to the dense MLP, each branch with its own norms
        m = (rms_norm_gemma4(m, w["post_feedforward_layernorm_1.weight"], eps)
             + rms_norm_gemma4(moe(r, w, cfg), w["post_feedforward_layernorm_2.weight"], eps))
    h = r + rms_norm_gemma4(m, w["post_feedforward_layernorm.weight"], eps)
    if ple is not None:  # PLE: a gated bottleneck mixes this layer's per-layer embedding into the stream
        g = gelu_tanh(linear(h, w["per_layer_input_gate.weight"])) * ple  # [T, D] -> [T, P]
        h = h + rms_norm_gemma4(linear(g, w["per_layer_projection.weight"]), w["post_per_layer_input_norm.weight"], eps)
    return h * w["layer_scalar"], kv  # layer_scalar scales the WHOLE stream, residual included (real: 0.005-0.92)


def gemma4_forward(
    weights: Weights, cfg: GemmaConfig, sequences: list[np.ndarray],
    progress: Callable[[int, int], None] | None = None,
    caches: list[list[LayerCache | None]] | None = None, last_only: bool = False,
    images: list | None = None,
) -> list[np.ndarray]:
    """forward() for Gemma 4.  [T_s] each -> [T_s, V] each"""
    caches = caches if caches is not None else [None] * len(sequences)
    images = images if images is not None else [None] * len(sequences)
    starts = [c[0].length if c else 0 for c in caches]  # layer 0 always has its own cache
    looked_up = [text_ids(ids, im) for ids, im in zip(sequences, images)]  # image tokens read the pad row
    hs = [merge_images(embed(weights, ids, cfg), im) for ids, im in zip(looked_up, images)]  # [T_s, D] each
    ples = [per_layer_inputs(weights, ids, h, cfg) if cfg.hidden_size_per_layer_input else None
            for ids, h in zip(looked_up, hs)]  # [L, T_s, P] each, or None: token part at pad, context part merged
    sources = {s.kv_source for s in cfg.layers if s.kv_source is not None}
    kept: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in sequences]  # source layer -> its (K, V)
    for i, spec in enumerate(cfg.layers):
        w = weights.layer(i)
        for n, (h, s, c) in enumerate(zip(hs, starts, caches)):
            ple = ples[n][i] if ples[n] is not None else None  # [T, P]
            shared = kept[n][spec.kv_source] if spec.kv_source is not None else None
            hs[n], kv = gemma4_block(h, w, cfg, spec, np.arange(s, s + len(h)), ple, c[i] if c else None, shared,
                                     layer_blocks(images[n], spec.type))
            if i in sources:
                kept[n][i] = kv  # with a cache: every key so far, so shared layers see the whole past too
        if progress:
            progress(i + 1, cfg.num_hidden_layers)
    if last_only:
        hs = [h[-1:] for h in hs]  # [1, D] each
    norm = weights.final_norm()  # [D]
    h_all = np.concatenate([rms_norm_gemma4(h, norm, cfg.rms_norm_eps) for h in hs])  # [sum T_s, D]
    logits = unembed(h_all, weights, cfg)  # [sum T_s, V], soft-capped at 30 again (Gemma 2's cap is back)
    return np.split(logits, np.cumsum([len(h) for h in hs])[:-1])  # [T_s, V] each


# --- Gemma 3n ---------------------------------------------------------------------------------------
#
# Gemma 3n's layer attends like Gemma 4 (gain-w RMSNorm, scale 1.0, q/k/v norms, KV sharing: it reuses
# gemma4_attention) but its residual is n = 4 streams [n, T, D] (AltUp): each layer predicts all streams
# from a mix of them, computes on stream 0 only, then corrects every stream with what that computation
# added. Next to attention runs LAuReL, a low-rank residual; early layers' MLPs zero most of their gate.


def altup_router(x: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig) -> np.ndarray:
    """AltUp's per-token mixing signal.  [T, D] -> [T, n], in (-1, 1)"""
    x = rms_norm_gemma4(x, w["altup.router_norm.weight"], cfg.rms_norm_eps) * f32(1.0 / cfg.hidden_size)  # 1/D, not D**-0.5
    return np.tanh(linear(x, w["altup.modality_router.weight"]))  # [T, D] -> [T, n]


def altup_predict(streams: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig) -> np.ndarray:
    """Each stream predicted as itself plus a token-dependent mix of all streams.  [n, T, D] -> [n, T, D]"""
    n, T, _ = streams.shape
    m = altup_router(streams[cfg.altup_active_idx], w, cfg)  # [T, n]: routed on the active stream only
    c = linear(m, w["altup.prediction_coefs.weight"]).reshape(T, n, n)  # [T, n*n] -> [T, i, k]: row i = output
    return streams + np.einsum("tik,ktd->itd", c, streams)  # pred_i = h_i + sum_k c[i*n + k] h_k (HF's permute)


def altup_correct(pred: np.ndarray, out: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig) -> np.ndarray:
    """Every stream moved by what the layer added to the active one, scaled per stream.  [n, T, D], [T, D] -> [n, T, D]"""
    innovation = out - pred[cfg.altup_active_idx]  # [T, D]: the layer's change to the stream it computed on
    coefs = linear(altup_router(out, w, cfg), w["altup.correction_coefs.weight"]) + f32(1.0)  # [T, n]: +1, so 0 = copy
    return pred + coefs.T[:, :, None] * innovation[None]  # [n, T, D]; altup_coef_clip only clamps in training


def laurel(x: np.ndarray, w: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """LAuReL, a learned low-rank residual next to attention.  [T, D] -> [T, D]"""
    low = linear(linear(x, w["laurel.linear_left.weight"]), w["laurel.linear_right.weight"])  # [T, D] -> [T, r] -> [T, D]
    return x + rms_norm_gemma4(low, w["laurel.post_laurel_norm.weight"], eps)  # x is the NORMED input, not the residual


def gaussian_topk(g: np.ndarray, sparsity: float) -> np.ndarray:
    """Activation sparsity: keep only the gate values above the `sparsity` quantile of a fitted normal.  [T, F] -> [T, F]

    Not a real top-k: the cutoff is mean + std * Phi^-1(sparsity) of each token's gate row (std with
    ddof 0), and what survives is shifted down by it (relu(g - cutoff)), so the gelu sees small values.
    """
    z = f32(statistics.NormalDist().inv_cdf(sparsity))  # Phi^-1(0.95) = 1.6448536 in float32
    cutoff = np.mean(g, axis=-1, keepdims=True) + np.std(g, axis=-1, keepdims=True) * z  # [T, 1]
    return np.maximum(g - cutoff, f32(0.0))


def sparse_mlp(x: np.ndarray, w: dict[str, np.ndarray], sparsity: float) -> np.ndarray:
    """Gemma 3n's MLP: gated GELU, the gate sparsified first on the layers that say so.  [T, D] -> [T, D]"""
    g = linear(x, w["mlp.gate_proj.weight"])  # [T, D] -> [T, F]
    if sparsity > 0:
        g = gaussian_topk(g, sparsity)  # before the gelu: E4B's layers 0-9 keep ~5% of their gate
    return linear(gelu_tanh(g) * linear(x, w["mlp.up_proj.weight"]), w["mlp.down_proj.weight"])  # [T, F] -> [T, D]


def gemma3n_block(
    streams: np.ndarray, w: dict[str, np.ndarray], cfg: GemmaConfig, spec: LayerSpec, positions: np.ndarray,
    ple: np.ndarray, cache: LayerCache | None = None, shared: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One Gemma 3n decoder layer.  [n, T, D] -> [n, T, D], plus this layer's (K, V) for layers that share them

    `ple`: this layer's per-layer embedding [T, P].
    """
    eps = cfg.rms_norm_eps
    pred = altup_predict(streams, w, cfg)  # [n, T, D]
    a = pred[cfg.altup_active_idx]  # [T, D]: the one stream the layer computes on
    x = rms_norm_gemma4(a, w["input_layernorm.weight"], eps)
    attn, kv = gemma4_attention(x, w, cfg, spec, positions, cache, shared)  # [T, D]: Gemma 4's attention, one Hd
    h = a + rms_norm_gemma4(attn, w["post_attention_layernorm.weight"], eps)
    h = (h + laurel(x, w, eps)) / f32(np.sqrt(2.0))  # two residual paths averaged, kept at unit scale
    m = sparse_mlp(rms_norm_gemma4(h, w["pre_feedforward_layernorm.weight"], eps), w, spec.activation_sparsity)
    out = h + rms_norm_gemma4(m, w["post_feedforward_layernorm.weight"], eps)  # [T, D]
    streams = altup_correct(pred, out, w, cfg)  # [n, T, D]

    first = streams[cfg.altup_active_idx]
    if cfg.altup_correct_scale:
        first = first * w["altup.correct_output_scale"]  # [T, D]: a learned per-channel scale, only for the gate
    g = gelu_tanh(linear(first, w["per_layer_input_gate.weight"])) * ple  # [T, D] -> [T, P]
    g = rms_norm_gemma4(linear(g, w["per_layer_projection.weight"]), w["post_per_layer_input_norm.weight"], eps)
    streams[1:] += g  # PLE feeds streams 1..n-1 only (HF hard-codes [1:]): stream 0 is NOT updated by it
    return streams, kv


def rms_matched(x: np.ndarray, target_rms: np.ndarray) -> np.ndarray:
    """x rescaled to a given per-token RMS (AltUp's streams all keep the embedding's size).  [T, D], [T, 1] -> [T, D]"""
    rms = np.sqrt(np.maximum(np.mean(x * x, axis=-1, keepdims=True), f32(1e-5)))  # clamp the mean square, then sqrt
    return x * target_rms / rms


def altup_streams(h0: np.ndarray, weights: Weights) -> np.ndarray:
    """The n AltUp streams from the scaled embedding: itself, then n-1 projections of it.  [T, D] -> [n, T, D]"""
    target = np.sqrt(np.mean(h0 * h0, axis=-1, keepdims=True))  # [T, 1]
    return np.stack([h0] + [rms_matched(linear(h0, P), target) for P in weights.altup_projections()])


def altup_merge(streams: np.ndarray, weights: Weights) -> np.ndarray:
    """Streams 1..n-1 projected back (sized like stream 0), then all n averaged.  [n, T, D] -> [T, D]"""
    target = np.sqrt(np.mean(streams[0] * streams[0], axis=-1, keepdims=True))  # [T, 1]
    back = [rms_matched(linear(s, P), target) for s, P in zip(streams[1:], weights.altup_unembed_projections())]
    return np.mean(np.stack([streams[0]] + back), axis=0)  # the four-stream average, before the final norm


def ple_ids(ids: np.ndarray, cfg: GemmaConfig) -> np.ndarray:
    """The rows of the PLE table the ids read.  [T] -> [T]

    Gemma 3n's table has 262144 rows for a 262400-id vocabulary: ids past it (the multimodal soft
    tokens) read row 0, not the last row and not an error (transformers' get_per_layer_inputs).
    """
    return np.where(ids < cfg.vocab_size_per_layer_input, ids, 0)


def gemma3n_forward(
    weights: Weights, cfg: GemmaConfig, sequences: list[np.ndarray],
    progress: Callable[[int, int], None] | None = None,
    caches: list[list[LayerCache | None]] | None = None, last_only: bool = False,
) -> list[np.ndarray]:
    """forward() for Gemma 3n (text).  [T_s] each -> [T_s, V] each"""
    caches = caches if caches is not None else [None] * len(sequences)
    starts = [c[0].length if c else 0 for c in caches]
    hs = [embed(weights, ids, cfg) for ids in sequences]  # [T_s, D] each
    ples = [per_layer_inputs(weights, ple_ids(ids, cfg), h, cfg)
            for ids, h in zip(sequences, hs)]  # [L, T_s, P] each; the context part still projects the real embedding
    streams = [altup_streams(h, weights) for h in hs]  # [n, T_s, D] each
    sources = {s.kv_source for s in cfg.layers if s.kv_source is not None}
    kept: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in sequences]  # source layer -> its (K, V)
    for i, spec in enumerate(cfg.layers):
        w = weights.layer(i)
        for n, (s, start, c) in enumerate(zip(streams, starts, caches)):
            shared = kept[n][spec.kv_source] if spec.kv_source is not None else None
            streams[n], kv = gemma3n_block(s, w, cfg, spec, np.arange(start, start + s.shape[1]), ples[n][i],
                                           c[i] if c else None, shared)
            if i in sources:
                kept[n][i] = kv
        if progress:
            progress(i + 1, cfg.num_hidden_layers)
    if last_only:
        streams = [s[:, -1:] for s in streams]  # [n, 1, D] each
    norm = weights.final_norm()  # [D]
    h_all = np.concatenate([rms_norm_gemma4(altup_merge(s, weights), norm, cfg.rms_norm_eps) for s in streams])
    logits = unembed(h_all, weights, cfg)  # [sum T_s, V], soft-capped at 30
    return np.split(logits, np.cumsum([s.shape[1] for s in streams])[:-1])  # [T_s, V] each


# --- the whole model -----------------------------------------------------------------------------


def embed(weights: Weights, ids: np.ndarray, cfg: GemmaConfig) -> np.ndarray:
    """Token embeddings scaled by sqrt(D).  [T] -> [T, D]"""
    # The factor is a float32 value (55.425625 for D = 3072); rounding it to bf16 (55.5) is a classic port bug.
    return weights.embedding_rows(ids) * f32(cfg.embed_scale)


def text_ids(ids: np.ndarray, images) -> np.ndarray:
    """The ids whose embedding rows are read: image tokens read the pad row (Gemma 4's PLE sees it too).  [T] -> [T]"""
    if images is None:
        return ids
    ids = ids.copy()
    ids[images.rows] = images.pad_token_id  # the image id may lie past the table (Gemma 3: 262144 is its last row)
    return ids


def merge_images(h: np.ndarray, images) -> np.ndarray:
    """The image tokens' rows replaced by their soft tokens, NOT scaled by sqrt(D) like the text.  [T, D] -> [T, D]"""
    if images is not None:
        h[images.rows] = images.values  # in order: image 0's tokens first
    return h


def layer_blocks(images, layer_type: str) -> np.ndarray | None:
    """The image blocks this layer lets attend bidirectionally, or None (causal)."""
    if images is None or images.blocks is None:
        return None
    if images.block_layers == "all" or (images.block_layers == "sliding" and layer_type == SLIDING):
        return images.blocks  # Gemma 3: every layer; Gemma 4 ("vision"): sliding layers only
    return None


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
    images: list | None = None,
) -> list[np.ndarray]:
    """Token ids to next-token logits for independent sequences.  [T_s] each -> [T_s, V] each

    Each layer's weights are read once for all the sequences, and only one layer is in
    memory at a time. With `caches` (one per sequence, from new_cache), the ids continue
    what each cache holds and their keys/values are added to it; `last_only` computes
    the logits of each sequence's last token only ([1, V] each), all that decoding needs.
    `images` (one per sequence, None for text): the vision.ImageTokens of a prompt's images,
    whose soft tokens replace the image tokens' embeddings (vision.prompt_image_tokens).
    """
    if cfg.altup_num_inputs:
        if images is not None and any(im is not None for im in images):
            raise InputError("Gemma 3n's vision tower (MobileNet) is not run by gemma_ref: its images cannot be verified")
        return gemma3n_forward(weights, cfg, sequences, progress, caches, last_only)
    if cfg.generation >= 4:
        return gemma4_forward(weights, cfg, sequences, progress, caches, last_only, images)
    caches = caches if caches is not None else [None] * len(sequences)
    images = images if images is not None else [None] * len(sequences)
    starts = [c[0].length if c else 0 for c in caches]  # the first new token's position in each sequence
    hs = [merge_images(embed(weights, text_ids(ids, im), cfg), im) for ids, im in zip(sequences, images)]  # [T_s, D]
    for i, layer_type in enumerate(cfg.layer_types):
        w = weights.layer(i)  # this layer's tensors
        hs = [block(h, w, cfg, layer_type, np.arange(s, s + len(h)), c[i] if c else None,  # BOS at position 0
                    layer_blocks(im, layer_type))
              for h, s, c, im in zip(hs, starts, caches, images)]
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
        self.vision = None  # vision.TowerWeights, opened when a prompt first holds an image
        self.vision_config = None

    def forward(self, token_ids: Sequence[int] | np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """float32 logits of shape [len(token_ids), vocab_size] for a 1-D sequence of token ids."""
        return self.forward_many([token_ids], progress)[0]

    def forward_many(
        self, sequences: Sequence[Sequence[int] | np.ndarray], progress: Callable[[int, int], None] | None = None,
        images: Sequence[Sequence[np.ndarray] | None] | None = None,
    ) -> list[np.ndarray]:
        """Logits for several independent sequences, reading each layer's weights once for all.

        `images`: per sequence, its images (uint8 [H, W, 3], in prompt order) or None; the sequence
        then holds each image's run of image tokens, already expanded (vision.expand_placeholders).
        """
        ids = [validate_ids(s, self.config.vocab_size, self.config.max_position_embeddings) for s in sequences]
        return forward(self.weights, self.config, ids, progress, images=self.image_tokens(ids, images))

    def image_tokens(self, ids: list[np.ndarray], images: Sequence[Sequence[np.ndarray] | None] | None,
                     observe: Callable | None = None) -> list | None:
        """vision.ImageTokens for each sequence with images (None for the others), or None without images."""
        if images is None or not any(images):
            return None
        if len(images) != len(ids):
            raise InputError(f"{len(images)} image lists for {len(ids)} sequences; give one (or None) per sequence")
        from gemma_ref import vision  # the image path is only read when a prompt has images

        if self.vision is None:
            self.vision_config = vision.load_vision_config(self.weights.dir)  # an adapter: its base's
            if self.vision_config is None:
                raise InputError("this checkpoint has no vision tower gemma_ref runs (Gemma 3 or Gemma 4 with a "
                                 "vision_config); its prompts cannot hold images", self.path)
            self.vision = vision.TowerWeights(self.weights, self.vision_config)
        return [vision.prompt_image_tokens(s, list(im), self.vision, observe) if im else None
                for s, im in zip(ids, images)]

    def close(self) -> None:
        self.weights.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ContextLengthWarning(UserWarning):
    """A sequence longer than the model's context (max_position_embeddings): run, but its tail was never trained."""


def validate_ids(token_ids: Sequence[int] | np.ndarray, vocab_size: int, context: int | None = None) -> np.ndarray:
    """A 1-D int64 array of ids in [0, vocab_size), or an InputError saying what is wrong.

    `context` (the config's max_position_embeddings): a longer sequence is run, with a ContextLengthWarning.
    """
    if not isinstance(token_ids, np.ndarray):  # Python ints are unbounded; NumPy would make a huge one a float
        for pos, v in enumerate(token_ids):
            if isinstance(v, int) and not -2**63 <= v < 2**63:
                raise InputError(f"token id {v} at position {pos} does not fit a 64-bit integer; "
                                 f"the vocabulary is [0, {vocab_size})")
    try:
        ids = np.asarray(token_ids)
    except (TypeError, ValueError) as e:
        raise InputError(f"token ids must be a 1-D sequence of integers ({e})") from None
    if ids.ndim != 1:
        raise InputError(f"token ids must be a 1-D sequence, got shape {list(ids.shape)}")
    if ids.size == 0:
        raise InputError("token ids are empty; give at least one token (usually BOS = 2)")
    if context is not None and len(ids) > context:
        import warnings

        warnings.warn(f"a prompt of {len(ids)} tokens is longer than the model's context (max_position_embeddings "
                      f"{context}): positions past it were never trained, so their logits say little about the weights",
                      ContextLengthWarning, stacklevel=2)
    if ids.dtype.kind not in "iu":
        if ids.dtype.kind == "f" and np.all(ids == np.round(ids)) and np.all(np.abs(ids) < 2**63):
            ids = ids.astype(np.int64)
        else:
            raise InputError(f"token ids must be integers, got dtype {ids.dtype}")
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        raise InputError(f"token id {int(ids[bad[0]])} at position {int(bad[0])} is outside the vocabulary "
                         f"[0, {vocab_size}) ({bad.size} out of range in all)")
    return ids.astype(np.int64)


def load_model(path: str | os.PathLike, cache_weights: bool = False, base: str | os.PathLike | None = None) -> Model:
    """Open a model directory (config.json + safetensors) after checking its structure.

    An adapter directory (adapter_config.json, PEFT's LoRA) runs on its `base` model directory
    (default: the config's base_model_name_or_path, when that is a local directory); see adapters.py.
    """
    from gemma_ref import adapters

    if not adapters.is_adapter_dir(path):
        if base is not None:
            raise InputError("--base / base= is for adapters, but this directory has no adapter_config.json", path)
        return Model(path, cache_weights=cache_weights)
    model = Model(adapters.resolve_base(path, base), cache_weights=cache_weights)
    model.adapter = adapters.load_adapter(path, model.weights)
    model.weights = adapters.AdaptedWeights(model.weights, model.adapter)
    model.path = os.fspath(path)
    return model
