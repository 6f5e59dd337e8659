"""Gemma model configuration: one frozen dataclass for Gemma 1, 1.1, 2, 3, 3n, 4 (text) and VaultGemma.

`load_config` reads a Hugging Face ``config.json`` as the real releases write it:

* legacy names (``rope_theta``, ``torch_dtype``, ``hidden_act: gelu``,
  ``sliding_window_pattern``, ``rope_local_base_freq``, ``rope_scaling``) and the
  current ones (``rope_parameters`` per layer type, ``dtype``, ``layer_types``);
* Gemma 3's multimodal configs, where the text model sits in ``text_config`` and
  is *sparse*: every field left out takes transformers' ``Gemma3TextConfig``
  default (``DEFAULTS`` below);
* Gemma 4 (``gemma4`` with ``text_config``, ``gemma4_text``, ``gemma4_unified``): two head
  geometries (``global_head_dim`` or the ``per_layer_config`` table transformers 5.24 saves),
  K=V full layers, per-layer embeddings, KV sharing, MoE; resolved into one small
  :class:`LayerSpec` per layer;
* Gemma 3n (``gemma3n`` with ``text_config``, ``gemma3n_text``): legacy rope keys, one MLP width
  and one activation sparsity per layer (in the LayerSpecs), AltUp and LAuReL sizes, a PLE table
  with fewer rows (262144) than the vocabulary (262400);
* VaultGemma (``vaultgemma``): Gemma 2's numbers without the two post-branch norms.

Every size is bounded (``BOUNDS``) to what any Gemma could be, so a config saying
``num_hidden_layers: 1e9`` is refused at once, naming the key and the file.

Everything the forward pass needs is resolved here, so ``model.py`` never looks at
raw JSON and never asks "which generation is this?" except through these fields.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from gemma_ref.errors import InputError

SLIDING = "sliding_attention"  # layer type: local attention over a window of recent keys
FULL = "full_attention"  # layer type: global (causal) attention over every earlier key

# HF model_type -> Gemma generation, for the whole family: release rules use it to tell which terms apply.
GENERATION_OF_MODEL_TYPE: dict[str, int] = {
    "gemma": 1,
    "recurrent_gemma": 1,  # RecurrentGemma: Gemma 1 era terms, a different (Griffin) architecture
    "gemma2": 2,
    "gemma3_text": 3,
    "gemma3": 3,  # multimodal wrapper; the text model is in text_config
    "gemma3n": 3,  # Gemma 3n: Gemma 3 era terms, a different (per-layer embedding) architecture
    "gemma3n_text": 3,
    "vaultgemma": 3,  # VaultGemma (2025, Gemma Terms of Use): Gemma 2's architecture (see ARCHITECTURE_OF_MODEL_TYPE)
    "gemma4": 4,  # Apache-2.0; multimodal wrapper, the text model is in text_config
    "gemma4_text": 4,
    "gemma4_unified": 4,  # the later 12B: encoder-free vision/audio, Gemma 4 text without PLE / MoE
    "gemma4_unified_text": 4,
}
# The model types this reference's forward pass implements (the others are refused by name).
FORWARD_MODEL_TYPES = ("gemma", "gemma2", "gemma3_text", "gemma3", "gemma3n", "gemma3n_text", "vaultgemma", "gemma4",
                       "gemma4_text", "gemma4_unified", "gemma4_unified_text")
# Whose numerics a model type has, where that is not its generation's (the generation says which terms apply).
ARCHITECTURE_OF_MODEL_TYPE: dict[str, int] = {"vaultgemma": 2}
# Gemma-family model types that have no next-token logits to verify: refused, saying what they are.
NOT_CAUSAL_LM: dict[str, str] = {
    "embedding_gemma2": "EmbeddingGemma 2 is an encoder (bidirectional, pooled embeddings): it has no logits to verify",
    "embedding_gemma": "EmbeddingGemma is an encoder (bidirectional, pooled embeddings): it has no logits to verify",
    "gemma4_assistant": "gemma4_assistant is a multi-token-prediction drafter that reads a Gemma 4 target's shared "
                        "KV states; it is not a standalone causal LM",
    "diffusion_gemma": "diffusion_gemma is a block-diffusion model, not an autoregressive causal LM",
    "t5gemma": "T5Gemma is an encoder-decoder model, not a decoder-only causal LM",
    "t5gemma2": "T5Gemma 2 is an encoder-decoder model, not a decoder-only causal LM",
}

# Upper bounds for every size a config states: generous for any Gemma that could exist, small
# enough that a typo (or a hostile 1e9) is refused before anything is allocated.
BOUNDS: dict[str, int] = {
    "vocab_size": 1 << 22,  # 4.2M rows (Gemma: 256000 / 262144 / 262208)
    "vocab_size_per_layer_input": 1 << 22,
    "hidden_size": 65536,  # d_model (Gemma: up to 5376)
    "intermediate_size": 1 << 20,  # MLP width (Gemma: up to 36864)
    "moe_intermediate_size": 1 << 20,
    "num_hidden_layers": 1024,  # (Gemma: up to 62)
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "num_global_key_value_heads": 1024,
    "head_dim": 4096,  # (Gemma: 128 / 256 / 512)
    "global_head_dim": 4096,
    "hidden_size_per_layer_input": 65536,  # PLE width per layer (Gemma 4 E2B/E4B: 256)
    "max_position_embeddings": 1 << 24,  # 16.7M tokens (Gemma: up to 262144)
    "sliding_window": 1 << 24,
    "sliding_window_pattern": 1024,
    "num_experts": 4096,  # (26B-A4B: 128)
    "top_k_experts": 4096,
    "num_kv_shared_layers": 1024,
    "altup_num_inputs": 64,  # Gemma 3n AltUp streams (4)
    "laurel_rank": 65536,  # Gemma 3n LAuReL bottleneck (64)
}

# transformers' defaults for fields a config.json may leave out, per generation
# (GemmaConfig, Gemma2Config, Gemma3TextConfig). Real Gemma 3 4b/12b/27b configs rely on them.
DEFAULTS: dict[int | str, dict[str, Any]] = {
    1: dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
            num_attention_heads=16, num_key_value_heads=16, head_dim=256, rms_norm_eps=1e-6,
            rope_theta=10000.0, max_position_embeddings=8192, query_pre_attn_scalar=None,
            attn_logit_softcapping=None, final_logit_softcapping=None, sliding_window=None,
            rope_local_base_freq=None, sliding_window_pattern=None),
    2: dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
            rope_theta=10000.0, max_position_embeddings=8192, query_pre_attn_scalar=256,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096,
            rope_local_base_freq=None, sliding_window_pattern=2),
    3: dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
            rope_theta=1_000_000.0, max_position_embeddings=131072, query_pre_attn_scalar=256,
            attn_logit_softcapping=None, final_logit_softcapping=None, sliding_window=4096,
            rope_local_base_freq=10_000.0, sliding_window_pattern=6),
    # Gemma4TextConfig: its core sizes (hidden 2304, 30 layers...) match no release, so they are REQUIRED.
    4: dict(vocab_size=262144, head_dim=256, rms_norm_eps=1e-6, max_position_embeddings=131072, rope_theta=1e6,
            query_pre_attn_scalar=None, attn_logit_softcapping=None, final_logit_softcapping=None,
            sliding_window=512, rope_local_base_freq=None, sliding_window_pattern=6,
            hidden_size_per_layer_input=256, vocab_size_per_layer_input=262144, num_kv_shared_layers=0),
}
# Gemma3nTextConfig: its defaults are the E4B's, so sparse 3n configs are complete. Its default layer rule
# is 4 local : 1 full (pattern 5), the last layer NOT forced full; 15 KV-shared layers; no attention soft-cap.
DEFAULTS["gemma3n_text"] = dict(vocab_size=262400, hidden_size=2048, intermediate_size=16384, num_hidden_layers=35,
                                num_attention_heads=8, num_key_value_heads=2, head_dim=256, rms_norm_eps=1e-6,
                                rope_theta=1e6, max_position_embeddings=32768, query_pre_attn_scalar=None,
                                attn_logit_softcapping=None, final_logit_softcapping=30.0, sliding_window=512,
                                rope_local_base_freq=1e4, sliding_window_pattern=5, hidden_size_per_layer_input=256,
                                vocab_size_per_layer_input=262144, num_kv_shared_layers=15, altup_num_inputs=4,
                                altup_active_idx=0, altup_coef_clip=120.0, laurel_rank=64)
# VaultGemmaConfig: Gemma2Config's defaults (alternating layers, window 4096, soft-caps 50 / 30).
DEFAULTS["vaultgemma"] = dict(DEFAULTS[2])
# Gemma4UnifiedTextConfig (the 12B): a longer default window and context, no PLE.
DEFAULTS["gemma4_unified_text"] = {**DEFAULTS[4], "sliding_window": 1024, "max_position_embeddings": 262144,
                                   "hidden_size_per_layer_input": 0}
# Sizes a config must state: a Gemma 4 config without them is broken, not "the default model".
REQUIRED: dict[int, tuple[str, ...]] = {
    4: ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"),
}

_TANH_GELU_NAMES = {"gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_tanh", "gelu"}
STORAGE_DTYPES = {"bfloat16", "float16", "float32"}


@dataclass(frozen=True)
class Rope:
    """Rotary position embedding parameters for one kind of layer."""

    theta: float  # base of the frequencies: inv_freq[i] = 1 / theta^(2i / head_dim)
    linear_factor: float = 1.0  # "linear" rope scaling: positions (equivalently inv_freq) divided by this
    proportion: float = 1.0  # Gemma 4 "proportional": only this fraction of each head's dims rotates (0.25)


@dataclass(frozen=True)
class LayerSpec:
    """The geometry of one Gemma 4 / 3n layer (layers differ by type, and shared layers differ again)."""

    type: str  # SLIDING or FULL
    head_dim: int  # width of one head here: head_dim on sliding layers, global_head_dim (512) on full ones
    num_key_value_heads: int  # kv heads here (full layers of K=V models: num_global_key_value_heads)
    intermediate_size: int  # MLP width here (doubled on KV-shared layers when use_double_wide_mlp; Gemma 3n: listed)
    activation_sparsity: float = 0.0  # Gemma 3n: fraction of the MLP gate zeroed by gaussian top-k (E4B: 0.95 on 0-9)
    k_eq_v: bool = False  # attention_k_eq_v on a full layer: no v_proj, V is the raw k_proj output
    kv_source: int | None = None  # KV sharing: the layer whose post-norm, post-RoPE K and V this one reuses


@dataclass(frozen=True)
class GemmaConfig:
    """Everything the reference forward pass needs, resolved and validated."""

    model_type: str  # HF model_type of the text model: "gemma", "gemma2", "gemma3_text", "gemma4_text", ...
    generation: int  # 1 (Gemma 1 / 1.1 / CodeGemma), 2, 3 (also 3n, VaultGemma: the terms' era) or 4
    vocab_size: int  # rows of the embedding matrix (Gemma 3 pads 262144 pieces to 262208)
    hidden_size: int  # width of the residual stream, d_model
    intermediate_size: int  # width of the MLP's gate/up projections
    num_hidden_layers: int  # number of transformer blocks
    num_attention_heads: int  # query heads
    num_key_value_heads: int  # key/value heads: 1 = MQA, == heads = MHA, in between = GQA
    head_dim: int  # width of one head; heads * head_dim need not equal hidden_size (gemma-7b: 16*256 = 4096 != 3072)
    rms_norm_eps: float  # epsilon inside every RMSNorm
    query_pre_attn_scalar: float  # attention scale is this ** -0.5 (Gemma 1: head_dim; Gemma 4: 1, scale 1.0)
    attn_logit_softcapping: float | None  # Gemma 2: scores -> c * tanh(scores / c) before the mask; None = off
    final_logit_softcapping: float | None  # Gemma 2: logits -> c * tanh(logits / c); None = off
    sliding_window: int | None  # local layers see keys k with q - window < k <= q
    layer_types: tuple[str, ...]  # per layer: SLIDING or FULL
    rope_global: Rope  # RoPE of full-attention layers
    rope_local: Rope  # RoPE of sliding layers (Gemma 3: its own base, 10k; else the same as global)
    use_qk_norm: bool  # Gemma 3: RMSNorm over each query / key head before RoPE
    sandwich_norms: bool  # Gemma 2/3: extra norms after attention and around the MLP (four per layer)
    max_position_embeddings: int  # longest context the model was trained for (not enforced, reported)
    storage_dtype: str | None = None  # dtype the config declares for the weights ("bfloat16", ...), if any
    nested: bool = False  # True when read from a multimodal config's text_config (Gemma 3 4b/12b/27b)
    architectures: tuple[str, ...] = ()  # HF architectures as declared, for reporting
    bos_token_id: int = 2  # Gemma's <bos>
    eos_token_id: int | tuple[int, ...] = 1  # Gemma's <eos> (instruction-tuned Gemma 3 also stops on <end_of_turn>)
    pad_token_id: int = 0  # Gemma's <pad>
    source: str | None = field(default=None, compare=False)  # the config.json this came from
    # --- Gemma 4 only (the defaults are Gemma 1-3's "off") ---
    layers: tuple[LayerSpec, ...] = ()  # Gemma 4: per-layer geometry (head_dim, kv heads, MLP width, sharing)
    hidden_size_per_layer_input: int = 0  # Gemma 4 PLE: width of each layer's per-layer embedding (E2B: 256); 0 = none
    vocab_size_per_layer_input: int = 0  # rows of the PLE table embed_tokens_per_layer (262144)
    num_kv_shared_layers: int = 0  # the last N layers reuse an earlier layer's K/V (E2B: 20, E4B: 18)
    attention_k_eq_v: bool = False  # full layers have no v_proj: V is the raw k_proj output (31B, 26B-A4B, 12B)
    use_double_wide_mlp: bool = False  # E2B: KV-shared layers have an MLP twice as wide
    num_experts: int = 0  # MoE (26B-A4B: 128 experts next to the dense MLP); 0 = no MoE block
    top_k_experts: int = 0  # experts each token is routed to (26B-A4B: 8)
    moe_intermediate_size: int = 0  # width of one expert's gate/up projections (26B-A4B: 704)
    # --- VaultGemma ---
    post_norms: bool = True  # with sandwich_norms: branch outputs normalised too; VaultGemma has no such norms
    # --- Gemma 3n (also uses layers, PLE and KV sharing above) ---
    altup_num_inputs: int = 0  # AltUp: the residual is this many streams (4); 0 = not Gemma 3n
    altup_active_idx: int = 0  # the stream the layer actually computes on (0)
    altup_correct_scale: bool = True  # scale the corrected active stream by correct_output_scale before PLE
    laurel_rank: int = 0  # LAuReL: width of the low-rank residual branch (64)

    # --- derived quantities, used by weights.py, inspect and the forward pass -------------------

    @property
    def q_width(self) -> int:
        """Output width of q_proj: heads * head_dim."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Output width of k_proj and v_proj: kv_heads * head_dim."""
        return self.num_key_value_heads * self.head_dim

    @property
    def queries_per_kv(self) -> int:
        """How many query heads share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def embed_scale(self) -> float:
        """Embedding multiplier sqrt(hidden_size), as a float32 value (not bf16-rounded)."""
        import numpy as np

        return float(np.float32(self.hidden_size**0.5))

    def layer_summary(self) -> str:
        n_local = sum(t == SLIDING for t in self.layer_types)
        n_global = len(self.layer_types) - n_local
        if n_local == 0:
            return f"{n_global} global layers"
        return f"{n_local} local (window {self.sliding_window}) + {n_global} global layers"

    @property
    def global_head_dim(self) -> int:
        """Head width of full-attention layers (Gemma 4: 512; Gemma 1-3: head_dim)."""
        return next((s.head_dim for s in self.layers if s.type == FULL), self.head_dim)

    def expected_parameters(self, active: bool = False) -> int:
        """Parameter count implied by the shapes (tied embedding counted once).

        `active`: Gemma 4 MoE, count only the top_k experts a token runs through (the "A4B").
        """
        d, L = self.hidden_size, self.num_hidden_layers
        if self.altup_num_inputs:
            return self._gemma3n_parameters()
        if self.generation >= 4:
            return self._gemma4_parameters(active)
        attn = d * self.q_width + 2 * d * self.kv_width + self.q_width * d
        mlp = 3 * d * self.intermediate_size
        norms = (4 if self.sandwich_norms and self.post_norms else 2) * d + (2 * self.head_dim if self.use_qk_norm else 0)
        return self.vocab_size * d + L * (attn + mlp + norms) + d

    def _gemma3n_parameters(self) -> int:
        d, P, L, n, hd = (self.hidden_size, self.hidden_size_per_layer_input, self.num_hidden_layers,
                          self.altup_num_inputs, self.head_dim)
        total = self.vocab_size * d + d  # tied embedding, final norm
        total += self.vocab_size_per_layer_input * L * P + L * P * d + P  # PLE table, projection, its norm
        total += 2 * (n - 1) * d * d  # altup_projections, altup_unembed_projections
        for s in self.layers:
            q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
            if s.kv_source is None:
                total += 2 * d * kv + hd  # k_proj, v_proj, k_norm
            total += 2 * d * q + hd + 3 * d * s.intermediate_size + 4 * d  # q_proj, o_proj, q_norm, MLP, norms
            total += d + n * n + n * n * n + n * d + d  # AltUp: output scale, coefficients, router, its norm
            total += 2 * d * self.laurel_rank + d  # LAuReL: left, right, its norm
            total += 2 * d * P + d  # per_layer_input_gate, per_layer_projection, post_per_layer_input_norm
        return total

    def _gemma4_parameters(self, active: bool) -> int:
        d, P, L = self.hidden_size, self.hidden_size_per_layer_input, self.num_hidden_layers
        total = self.vocab_size * d + d  # tied embedding, final norm
        if P:
            total += self.vocab_size_per_layer_input * L * P + L * P * d + P  # PLE table, projection, its norm
        for s in self.layers:
            q, kv = self.num_attention_heads * s.head_dim, s.num_key_value_heads * s.head_dim
            if s.kv_source is None:
                total += d * kv * (1 if s.k_eq_v else 2) + s.head_dim  # k_proj (+ v_proj), k_norm
            total += 2 * d * q + s.head_dim  # q_proj, o_proj, q_norm
            total += 3 * d * s.intermediate_size + 4 * d + 1  # MLP, four norms, layer_scalar
            if P:
                total += 2 * d * P + d  # per_layer_input_gate, per_layer_projection, post_per_layer_input_norm
            if self.num_experts:
                n = self.top_k_experts if active else self.num_experts
                total += n * 3 * d * self.moe_intermediate_size  # experts.gate_up_proj, experts.down_proj
                total += self.num_experts * d + d + self.num_experts + 3 * d  # router, three extra norms
        return total


# The published checkpoints' shapes: one registry from which the benchmark scripts'
# choices, `inspect`'s variant name and the docs derive.
KNOWN_VARIANTS: dict[str, dict[str, Any]] = {
    "gemma-2b": dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                     num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=256000),
    "gemma-7b": dict(model_type="gemma", hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                     num_attention_heads=16, num_key_value_heads=16, head_dim=256, vocab_size=256000),
    "gemma-2-2b": dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000),
    "gemma-2-9b": dict(model_type="gemma2", hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=256000),
    "gemma-2-27b": dict(model_type="gemma2", hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=128, vocab_size=256000,
                        query_pre_attn_scalar=144),
    "gemma-3-270m": dict(model_type="gemma3_text", hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
                         sliding_window=512, query_pre_attn_scalar=256, rope_theta=1_000_000.0,
                         rope_local_base_freq=10_000.0),
    "gemma-3-1b": dict(model_type="gemma3_text", hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
                       sliding_window=512),
    "gemma-3-4b": dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=262208,
                       sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0}),
    "gemma-3-12b": dict(model_type="gemma3_text", hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=262208,
                        sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0}),
    "gemma-3-27b": dict(model_type="gemma3_text", hidden_size=5376, intermediate_size=21504, num_hidden_layers=62,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=128, vocab_size=262208,
                        query_pre_attn_scalar=168, sliding_window=1024,
                        rope_scaling={"rope_type": "linear", "factor": 8.0}),
    # Gemma 4 (GEMMA4.md §1). Text-only parameter counts: E2B 4.629B (2.35B of it the PLE table),
    # E4B 7.463B, 31B 30.697B, 26B-A4B 25.233B total (tests/test_gemma4.py pins them).
    "gemma-4-E2B": dict(model_type="gemma4_text", hidden_size=1536, intermediate_size=6144, num_hidden_layers=35,
                        num_attention_heads=8, num_key_value_heads=1, head_dim=256, global_head_dim=512,
                        vocab_size=262144, sliding_window=512, layer_types=([SLIDING] * 4 + [FULL]) * 7,
                        hidden_size_per_layer_input=256, vocab_size_per_layer_input=262144,
                        num_kv_shared_layers=20, use_double_wide_mlp=True, final_logit_softcapping=30.0,
                        max_position_embeddings=131072),
    "gemma-4-E4B": dict(model_type="gemma4_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=42,
                        num_attention_heads=8, num_key_value_heads=2, head_dim=256, global_head_dim=512,
                        vocab_size=262144, sliding_window=512, layer_types=([SLIDING] * 5 + [FULL]) * 7,
                        hidden_size_per_layer_input=256, vocab_size_per_layer_input=262144,
                        num_kv_shared_layers=18, final_logit_softcapping=30.0, max_position_embeddings=131072),
    "gemma-4-31B": dict(model_type="gemma4_text", hidden_size=5376, intermediate_size=21504, num_hidden_layers=60,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=256, global_head_dim=512,
                        num_global_key_value_heads=4, attention_k_eq_v=True, vocab_size=262144,
                        sliding_window=1024, layer_types=([SLIDING] * 5 + [FULL]) * 10,
                        hidden_size_per_layer_input=0, final_logit_softcapping=30.0,
                        max_position_embeddings=262144),
    "gemma-4-26B-A4B": dict(model_type="gemma4_text", hidden_size=2816, intermediate_size=2112, num_hidden_layers=30,
                            num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                            num_global_key_value_heads=2, attention_k_eq_v=True, vocab_size=262144,
                            sliding_window=1024, layer_types=([SLIDING] * 5 + [FULL]) * 5,
                            hidden_size_per_layer_input=0, enable_moe_block=True, num_experts=128,
                            top_k_experts=8, moe_intermediate_size=704, final_logit_softcapping=30.0,
                            max_position_embeddings=262144),
    # The later 12B (gemma4_unified): sizes third-party (GEMMA4.md §1), count not published.
    "gemma-4-12B": dict(model_type="gemma4_unified_text", hidden_size=3840, intermediate_size=15360,
                        num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                        global_head_dim=512, num_global_key_value_heads=1, attention_k_eq_v=True,
                        vocab_size=262144, sliding_window=1024, layer_types=([SLIDING] * 5 + [FULL]) * 8,
                        final_logit_softcapping=30.0, max_position_embeddings=262144),
    # Gemma 3n (GEMMA4.md §5): E4B text 6.84B with its [262144, 8960] PLE table. E2B's sizes are third-party
    # (an ai-edge-torch Gemma 3n config, mlx fixtures of google/gemma-3n-E2B-it): 30 layers, MLP 8192, 10 shared.
    "gemma-3n-E4B": dict(model_type="gemma3n_text", hidden_size=2048, intermediate_size=16384, num_hidden_layers=35,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=256, vocab_size=262400,
                         vocab_size_per_layer_input=262144, hidden_size_per_layer_input=256, sliding_window=512,
                         layer_types=([SLIDING] * 4 + [FULL]) * 7, num_kv_shared_layers=15, laurel_rank=64,
                         altup_num_inputs=4, activation_sparsity_pattern=[0.95] * 10 + [0.0] * 25,
                         rope_theta=1e6, rope_local_base_freq=1e4, final_logit_softcapping=30.0,
                         max_position_embeddings=32768),
    "gemma-3n-E2B": dict(model_type="gemma3n_text", hidden_size=2048, intermediate_size=8192, num_hidden_layers=30,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=256, vocab_size=262400,
                         vocab_size_per_layer_input=262144, hidden_size_per_layer_input=256, sliding_window=512,
                         layer_types=([SLIDING] * 4 + [FULL]) * 6, num_kv_shared_layers=10, laurel_rank=64,
                         altup_num_inputs=4, activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20,
                         rope_theta=1e6, rope_local_base_freq=1e4, final_logit_softcapping=30.0,
                         max_position_embeddings=32768),
    # VaultGemma (GEMMA4.md §6; sizes from a keras-hub conversion fixture): Gemma 2's block without post-norms,
    # every layer full attention per the HF model doc.
    "vaultgemma-1b": dict(model_type="vaultgemma", hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                          num_attention_heads=4, num_key_value_heads=4, head_dim=256, vocab_size=256000,
                          query_pre_attn_scalar=256, sliding_window=512, layer_types=[FULL] * 26,
                          attn_logit_softcapping=50.0, final_logit_softcapping=30.0, max_position_embeddings=1024),
}


def variant_config_json(name: str) -> dict[str, Any]:
    """A config.json (as a dict) for a known variant, e.g. to write benchmark checkpoints."""
    if name not in KNOWN_VARIANTS:
        raise InputError(f"unknown variant {name!r}; known: {', '.join(KNOWN_VARIANTS)}")
    raw = dict(KNOWN_VARIANTS[name])
    raw.setdefault("torch_dtype", "bfloat16")
    raw["architectures"] = [{"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
                             "gemma3_text": "Gemma3ForCausalLM", "gemma4_text": "Gemma4ForCausalLM",
                             "gemma4_unified_text": "Gemma4UnifiedForCausalLM", "gemma3n_text": "Gemma3nForCausalLM",
                             "vaultgemma": "VaultGemmaForCausalLM"}[raw["model_type"]]]
    return raw


def match_variant(cfg: GemmaConfig) -> str | None:
    """Name of the known variant with exactly these shapes, if any."""
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim")
    for name, v in KNOWN_VARIANTS.items():
        if v["model_type"] == cfg.model_type and all(v[k] == getattr(cfg, k) for k in keys):
            return name
    return None


# --- reading config.json -----------------------------------------------------------------------


def read_config_json(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """Read ``config.json`` (or the one inside a directory) as a dict, with clear errors."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise InputError("no config.json found", p.parent if p.name == "config.json" else p,
                         hint="a model directory needs config.json next to its safetensors")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"config.json is not UTF-8 text ({e.reason})", p) from None
    except json.JSONDecodeError as e:
        raise InputError(f"config.json is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", p) from None
    if not isinstance(raw, dict):
        raise InputError(f"config.json must hold a JSON object, not {type(raw).__name__}", p)
    return raw, p


def load_config(path: str | os.PathLike) -> GemmaConfig:
    """Parse a Gemma ``config.json`` (a file or a model directory) into a :class:`GemmaConfig`."""
    raw, p = read_config_json(path)
    return config_from_dict(raw, source=str(p))


def config_from_dict(raw: dict[str, Any], source: str | None = None) -> GemmaConfig:
    """Resolve a raw HF config dict (possibly multimodal with ``text_config``) into a GemmaConfig."""
    where = source or "config.json"
    top_type = raw.get("model_type")
    nested = isinstance(raw.get("text_config"), dict)
    text = dict(raw["text_config"]) if nested else dict(raw)
    if nested:
        # Multimodal Gemma 3/4: the text model's dtype and token ids often sit at the top level only.
        for k in ("torch_dtype", "dtype", "bos_token_id", "eos_token_id", "pad_token_id"):
            if k not in text and k in raw:
                text[k] = raw[k]
    model_type = text.get("model_type") or top_type
    for t in (top_type, model_type):
        if t in NOT_CAUSAL_LM:
            raise InputError(f"model_type {t!r}: {NOT_CAUSAL_LM[t]}; the reference computes causal-LM logits only",
                             where)
    if nested and model_type in (None, "gemma3"):
        model_type = "gemma3_text"  # text_config of a gemma3 config may omit its model_type
    if nested and model_type in ("gemma4", "gemma4_unified", "gemma3n"):
        model_type += "_text"
    if model_type not in GENERATION_OF_MODEL_TYPE:
        raise InputError(f"unknown model_type {model_type!r}; this reference runs Gemma 1, 2, 3, 3n, 4 and VaultGemma "
                         f"({', '.join(FORWARD_MODEL_TYPES)})", where)
    generation = GENERATION_OF_MODEL_TYPE[model_type]
    if model_type not in FORWARD_MODEL_TYPES:
        raise InputError(
            f"model_type {model_type!r} (Gemma {generation} family) is a different architecture the reference "
            "forward pass does not implement (release checks still apply)", where)
    if model_type == "gemma3":
        model_type = "gemma3_text"
    if model_type in ("gemma4", "gemma4_unified", "gemma3n"):
        model_type += "_text"
    arch = ARCHITECTURE_OF_MODEL_TYPE.get(model_type, generation)  # whose numerics (VaultGemma: Gemma 2's)
    gemma3n = model_type == "gemma3n_text"

    d = DEFAULTS[model_type] if model_type in DEFAULTS else DEFAULTS[generation]

    def get(key: str, *aliases: str) -> Any:
        for k in (key, *aliases):
            if k in text and text[k] is not None:
                return text[k]
        if key in REQUIRED.get(generation, ()):
            raise InputError(f"config.json has no {key!r}, and a Gemma {generation} config has no default for it", where)
        return d.get(key)

    def integer(key: str, *aliases: str, minimum: int = 1) -> int:
        v = get(key, *aliases)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise InputError(f"{key} must be an integer >= {minimum}, got {v!r}", where)
        return bounded(key, v, where)

    def number(key: str, *aliases: str, allow_none: bool = False, positive: bool = True) -> float | None:
        v = get(key, *aliases)
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            raise InputError(f"{key} must be a positive number, got {v!r}", where)
        return float(v)

    vocab = integer("vocab_size")
    hidden = integer("hidden_size")
    n_layers = integer("num_hidden_layers")
    if gemma3n and isinstance(text.get("intermediate_size"), list):  # Gemma 3n: one MLP width per layer
        widths = text["intermediate_size"]
        if len(widths) != n_layers:
            raise InputError(f"intermediate_size lists {len(widths)} widths for {n_layers} layers", where)
        for w in widths:
            if isinstance(w, bool) or not isinstance(w, int) or w < 1:
                raise InputError(f"intermediate_size entries must be positive integers, got {w!r}", where)
            bounded("intermediate_size", w, where)
        inter = max(widths)
    else:
        inter = integer("intermediate_size")
    heads = integer("num_attention_heads")
    kv_heads = integer("num_key_value_heads", "num_kv_heads")
    head_dim = integer("head_dim")  # transformers' default (256) when absent, not hidden // heads
    if heads % kv_heads:
        raise InputError(f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})", where)

    act = text.get("hidden_activation") or text.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in _TANH_GELU_NAMES:
        raise InputError(f"hidden activation {act!r} is not Gemma's GELU; expected gelu_pytorch_tanh", where)
    # "gelu" in Gemma 1 configs is legacy and still means the tanh approximation (transformers #29402).

    bidirectional = text.get("use_bidirectional_attention")
    if generation >= 4 and bidirectional == "all":
        raise InputError("use_bidirectional_attention 'all' makes a non-causal encoder; not supported", where)
    if bidirectional and not (generation >= 4 and bidirectional == "vision"):
        # Gemma 4's "vision" only changes the mask around image tokens: text-only input stays causal.
        raise InputError("use_bidirectional_attention (EmbeddingGemma) is not a causal LM; not supported", where)

    qpas = number("query_pre_attn_scalar", allow_none=True)
    if generation == 1 or qpas is None:
        qpas = float(head_dim)  # Gemma 1 scales scores by head_dim ** -0.5
    if generation >= 4 or gemma3n:
        qpas = 1.0  # Gemma 4 and 3n: attention scale 1.0; the learned q_norm / k_norm carry the temperature

    attn_cap = number("attn_logit_softcapping", allow_none=True)
    final_cap = number("final_logit_softcapping", allow_none=True)

    layer_types = _layer_types(text, generation, n_layers, where, d["sliding_window_pattern"])
    window = get("sliding_window")
    if any(t == SLIDING for t in layer_types):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise InputError(f"sliding_window must be a positive integer for sliding layers, got {window!r}", where)
        bounded("sliding_window", window, where)
    else:
        window = None

    rope_global, rope_local = _rope(text, arch, where, d)

    dtype = text.get("dtype") or text.get("torch_dtype")
    if dtype is not None and dtype not in STORAGE_DTYPES:
        raise InputError(f"dtype {dtype!r} is not one of {sorted(STORAGE_DTYPES)}", where)

    eos = text.get("eos_token_id", 1)
    eos = tuple(eos) if isinstance(eos, list) else eos
    if generation >= 4 and nested and raw.get("eos_token_id") is not None:
        # Gemma 4 releases: text_config says 1, the top level [1, 106] (<eos> and <turn|>): stop on all of them.
        top = raw["eos_token_id"] if isinstance(raw["eos_token_id"], list) else [raw["eos_token_id"]]
        both = [e for e in (list(eos) if isinstance(eos, tuple) else [eos]) + top if isinstance(e, int)]
        eos = tuple(dict.fromkeys(both)) if len(set(both)) > 1 else both[0]
    if gemma3n:
        gemma4 = _gemma3n(text, layer_types, inter, integer, where)
    elif generation >= 4:
        gemma4 = _gemma4(text, model_type, layer_types, head_dim, kv_heads, inter, integer, where)
    else:
        gemma4 = {}
    return GemmaConfig(
        model_type=model_type,
        generation=generation,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=number("rms_norm_eps"),
        query_pre_attn_scalar=qpas,
        attn_logit_softcapping=attn_cap,
        final_logit_softcapping=final_cap,
        sliding_window=window,
        layer_types=layer_types,
        rope_global=rope_global,
        rope_local=rope_local,
        use_qk_norm=arch >= 3,
        sandwich_norms=arch >= 2,
        post_norms=model_type != "vaultgemma",  # VaultGemma deletes post_attention / post_feedforward_layernorm
        max_position_embeddings=integer("max_position_embeddings"),
        storage_dtype=dtype,
        nested=nested,
        architectures=tuple(raw.get("architectures") or ()),
        bos_token_id=text.get("bos_token_id", 2) if isinstance(text.get("bos_token_id", 2), int) else 2,
        eos_token_id=eos,
        pad_token_id=text.get("pad_token_id", 0) if isinstance(text.get("pad_token_id", 0), int) else 0,
        source=source,
        **gemma4,
    )


def bounded(key: str, v: int, where: str) -> int:
    """v itself when within BOUNDS[key] (when there is one), else an InputError naming the key."""
    cap = BOUNDS.get(key)
    if cap is not None and v > cap:
        raise InputError(f"{key} is {v}, more than any Gemma could have (at most {cap})", where)
    return v


def _gemma4(text: dict[str, Any], model_type: str, layer_types: tuple[str, ...], head_dim: int, kv_heads: int,
            inter: int, integer: Callable[..., int], where: str) -> dict[str, Any]:
    """The Gemma 4 fields of GemmaConfig: per-layer geometry, PLE, KV sharing, MoE."""
    n_layers = len(layer_types)
    unified = model_type == "gemma4_unified_text"  # Gemma4UnifiedTextConfig deletes the PLE and MoE fields

    def flag(key: str) -> bool:
        v = text.get(key, False)
        if v is None:
            v = False
        if not isinstance(v, bool):
            raise InputError(f"{key} must be true or false, got {v!r}", where)
        return v

    k_eq_v = flag("attention_k_eq_v")
    double_wide = flag("use_double_wide_mlp")
    n_shared = integer("num_kv_shared_layers", minimum=0)
    if n_shared >= n_layers:
        raise InputError(f"num_kv_shared_layers ({n_shared}) must be less than num_hidden_layers ({n_layers}): "
                         "some layer has to compute the keys and values the others share", where)

    # Two head geometries: the 5.24 per_layer_config table, else global_head_dim / num_global_key_value_heads.
    table = text.get("per_layer_config")
    overrides: dict[int, dict[str, int]] = {}
    if table is not None:
        if not isinstance(table, dict):
            raise InputError(f"per_layer_config must be an object keyed by layer index, got {type(table).__name__}",
                             where)
        for key, value in table.items():
            if not (isinstance(key, str) and key.isdigit() and int(key) < n_layers) or not isinstance(value, dict):
                raise InputError(f"per_layer_config key {key!r} is not a layer index below {n_layers} "
                                 "mapped to an object", where)
            unknown = set(value) - {"head_dim", "num_key_value_heads"}
            if unknown:
                raise InputError(f"per_layer_config[{key!r}] sets {sorted(unknown)}; the reference knows per-layer "
                                 "head_dim and num_key_value_heads only", where)
            for k, v in value.items():
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise InputError(f"per_layer_config[{key!r}].{k} must be a positive integer, got {v!r}", where)
                bounded(k, v, where)
            overrides[int(key)] = value
    else:
        g_head_dim = integer("global_head_dim") if text.get("global_head_dim") is not None else 512
        g_kv = text.get("num_global_key_value_heads")
        full = {"head_dim": g_head_dim}
        if k_eq_v and g_kv is not None:  # the global kv heads apply only with attention_k_eq_v (E2B/E4B store null)
            full["num_key_value_heads"] = integer("num_global_key_value_heads")
        overrides = {i: full for i, t in enumerate(layer_types) if t == FULL}

    # KV sharing: each of the last n_shared layers reuses the last non-shared layer of its own type.
    first_shared = n_layers - n_shared
    sources: list[int | None] = [None] * n_layers
    for i in range(first_shared, n_layers):
        earlier = [j for j in range(first_shared) if layer_types[j] == layer_types[i]]
        if not earlier:
            raise InputError(f"layer {i} ({layer_types[i]}) is KV-shared but no earlier layer of that type "
                             "computes keys and values", where)
        sources[i] = earlier[-1]

    specs = []
    for i, t in enumerate(layer_types):
        o = overrides.get(i, {})
        kv = o.get("num_key_value_heads", kv_heads)
        specs.append(LayerSpec(type=t, head_dim=o.get("head_dim", head_dim), num_key_value_heads=kv,
                               intermediate_size=inter * (2 if double_wide and sources[i] is not None else 1),
                               k_eq_v=k_eq_v and t == FULL, kv_source=sources[i]))
    heads = integer("num_attention_heads")
    for i, s in enumerate(specs):
        if heads % s.num_key_value_heads:
            raise InputError(f"layer {i}: num_attention_heads ({heads}) must be a multiple of its "
                             f"{s.num_key_value_heads} key/value heads", where)
    for i in range(first_shared, n_layers):
        src = specs[sources[i]]
        if (src.head_dim, src.num_key_value_heads) != (specs[i].head_dim, specs[i].num_key_value_heads):
            raise InputError(f"KV-shared layer {i} has another head geometry than layer {sources[i]} it shares with",
                             where)

    if "hidden_size_per_layer_input" in text and text["hidden_size_per_layer_input"] is None:
        raise InputError("hidden_size_per_layer_input is null; write 0 for no per-layer embeddings "
                         "(transformers refuses null too)", where)
    ple = 0 if unified else integer("hidden_size_per_layer_input", minimum=0)
    ple_vocab = integer("vocab_size_per_layer_input") if ple else 0
    moe = False if unified else flag("enable_moe_block")
    experts = dict(num_experts=0, top_k_experts=0, moe_intermediate_size=0)
    if moe:
        for key in experts:
            if text.get(key) is None:
                raise InputError(f"enable_moe_block is true but {key!r} is missing", where)
            experts[key] = integer(key)
        if experts["top_k_experts"] > experts["num_experts"]:
            raise InputError(f"top_k_experts ({experts['top_k_experts']}) is more than num_experts "
                             f"({experts['num_experts']})", where)
    return dict(layers=tuple(specs), hidden_size_per_layer_input=ple, vocab_size_per_layer_input=ple_vocab,
                num_kv_shared_layers=n_shared, attention_k_eq_v=k_eq_v, use_double_wide_mlp=double_wide, **experts)


def _gemma3n(text: dict[str, Any], layer_types: tuple[str, ...], inter: int, integer: Callable[..., int],
             where: str) -> dict[str, Any]:
    """The Gemma 3n fields of GemmaConfig: per-layer MLP width and sparsity, KV sharing, PLE, AltUp, LAuReL."""
    n_layers = len(layer_types)
    widths = text.get("intermediate_size")
    widths = list(widths) if isinstance(widths, list) else [inter] * n_layers
    sparsity = text.get("activation_sparsity_pattern")
    if sparsity is None:  # Gemma3nTextConfig's default: the first 10 layers 95% sparse (when there are more than 10)
        sparsity = [0.95] * (10 if n_layers > 10 else 0) + [0.0] * (n_layers - (10 if n_layers > 10 else 0))
    if not isinstance(sparsity, list) or len(sparsity) != n_layers or any(
            isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1 for s in sparsity):
        raise InputError(f"activation_sparsity_pattern must list {n_layers} numbers in [0, 1)", where)

    n_shared = integer("num_kv_shared_layers", minimum=0)
    if n_shared >= n_layers:
        raise InputError(f"num_kv_shared_layers ({n_shared}) must be less than num_hidden_layers ({n_layers})", where)
    first_shared = n_layers - n_shared
    specs = []
    for i, t in enumerate(layer_types):
        source = None
        if i >= first_shared:  # the same rule as Gemma 4: the last non-shared layer of the same type
            earlier = [j for j in range(first_shared) if layer_types[j] == t]
            if not earlier:
                raise InputError(f"layer {i} ({t}) is KV-shared but no earlier layer of that type computes keys "
                                 "and values", where)
            source = earlier[-1]
        specs.append(LayerSpec(type=t, head_dim=integer("head_dim"), num_key_value_heads=integer("num_key_value_heads"),
                               intermediate_size=widths[i], activation_sparsity=float(sparsity[i]), kv_source=source))

    n_streams = integer("altup_num_inputs", minimum=2)
    active = integer("altup_active_idx", minimum=0)
    if active >= n_streams:
        raise InputError(f"altup_active_idx ({active}) must be below altup_num_inputs ({n_streams})", where)
    correct_scale = text.get("altup_correct_scale", True)
    if not isinstance(correct_scale, bool):
        raise InputError(f"altup_correct_scale must be true or false, got {correct_scale!r}", where)
    # altup_coef_clip only clamps coefficients while training (transformers: `if self.training`): unused here.
    return dict(layers=tuple(specs), hidden_size_per_layer_input=integer("hidden_size_per_layer_input"),
                vocab_size_per_layer_input=integer("vocab_size_per_layer_input"), num_kv_shared_layers=n_shared,
                altup_num_inputs=n_streams, altup_active_idx=active, altup_correct_scale=correct_scale,
                laurel_rank=integer("laurel_rank"))


def _layer_types(text: dict[str, Any], generation: int, n_layers: int, where: str,
                 default_pattern: int | None) -> tuple[str, ...]:
    """Per-layer attention kind, from ``layer_types`` or the legacy ``sliding_window_pattern``."""
    explicit = text.get("layer_types")
    if explicit is not None:
        if not isinstance(explicit, list) or len(explicit) != n_layers or any(t not in (SLIDING, FULL) for t in explicit):
            raise InputError(
                f"layer_types must list {n_layers} entries, each {SLIDING!r} or {FULL!r}", where)
        if generation >= 4:
            return tuple(explicit[:-1]) + (FULL,)  # Gemma 4: the last layer is forced to full attention
        return tuple(explicit)
    if generation == 1:
        return (FULL,) * n_layers
    pattern = text.get("sliding_window_pattern") or default_pattern
    if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 1:
        raise InputError(f"sliding_window_pattern must be a positive integer, got {pattern!r}", where)
    bounded("sliding_window_pattern", pattern, where)
    # Layer i is global when (i + 1) % pattern == 0: Gemma 2 alternates local/global, Gemma 3 has 5 local : 1 global.
    types = tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(n_layers))
    if generation >= 4:
        types = types[:-1] + (FULL,)  # Gemma 4 forces the last layer to full attention (transformers warns)
    return types


def _rope_scaling_factor(spec: Any, where: str, what: str) -> float:
    """Linear scaling factor of a rope spec dict (1.0 for default); other rope types are refused."""
    if spec is None:
        return 1.0
    if not isinstance(spec, dict):
        raise InputError(f"{what} must be an object, got {type(spec).__name__}", where)
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind == "default":
        return 1.0
    if kind in ("linear", "proportional"):
        factor = spec.get("factor", 1.0 if kind == "proportional" else None)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
            raise InputError(f"{what}: linear rope scaling needs a positive 'factor', got {factor!r}", where)
        return float(factor)
    raise InputError(f"{what}: rope type {kind!r} is not supported by the reference "
                     "(default, linear and Gemma 4's proportional are)", where)


def _rope_proportion(spec: Any, where: str, what: str) -> float:
    """partial_rotary_factor of a "proportional" rope spec (1.0 for every other type)."""
    if not isinstance(spec, dict) or spec.get("rope_type", spec.get("type")) != "proportional":
        return 1.0
    p = spec.get("partial_rotary_factor", 1.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise InputError(f"{what}: partial_rotary_factor must be in (0, 1], got {p!r}", where)
    return float(p)


def _rope(text: dict[str, Any], generation: int, where: str, d: dict[str, Any]) -> tuple[Rope, Rope]:
    """(global, local) RoPE parameters from legacy fields or ``rope_parameters``; `d`: the defaults in force."""
    params = text.get("rope_parameters")
    if generation >= 4 and params is None:
        # Gemma4TextConfig's default: proportional RoPE (a quarter of each head rotates) on full layers.
        params = {FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6},
                  SLIDING: {"rope_type": "default", "rope_theta": 1e4}}
    legacy_scaling = text.get("rope_scaling")
    theta = text.get("rope_theta", d["rope_theta"])
    local_theta = text.get("rope_local_base_freq", d["rope_local_base_freq"])
    if isinstance(params, dict) and (FULL in params or SLIDING in params):
        # Current transformers: one rope spec per layer type.
        g = params.get(FULL) or {}
        loc = params.get(SLIDING) or {}
        g_theta = g.get("rope_theta", theta)
        l_theta = loc.get("rope_theta", local_theta if local_theta is not None else theta)
        g_factor = _rope_scaling_factor(g, where, f"rope_parameters.{FULL}")
        l_factor = _rope_scaling_factor(loc, where, f"rope_parameters.{SLIDING}")
        g_part = _rope_proportion(g, where, f"rope_parameters.{FULL}")
        l_part = _rope_proportion(loc, where, f"rope_parameters.{SLIDING}")
    else:
        g_part = l_part = 1.0
        if isinstance(params, dict):  # one spec for every layer
            theta = params.get("rope_theta", theta)
            legacy_scaling = legacy_scaling or params
        g_theta = theta
        g_factor = _rope_scaling_factor(legacy_scaling, where, "rope_scaling")
        if generation >= 3:
            # Gemma 3: local layers have their own base (10k) and no scaling; only global layers are scaled.
            l_theta, l_factor = (local_theta if local_theta is not None else d["rope_local_base_freq"]), 1.0
        else:
            l_theta, l_factor = g_theta, g_factor
    for name, v in (("rope_theta", g_theta), ("rope_local_base_freq", l_theta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 1:
            raise InputError(f"{name} must be a number > 1, got {v!r}", where)
    return Rope(float(g_theta), g_factor, g_part), Rope(float(l_theta), l_factor, l_part)


def config_fields() -> list[str]:
    """Names of the dataclass fields (for docs and `inspect --json`)."""
    return [f.name for f in fields(GemmaConfig)]
