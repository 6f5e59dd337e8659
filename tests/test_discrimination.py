"""Each Gemma quirk, done wrong, moves the logits far outside the tolerance on at least one case.

This shows the goldens pin every numerical detail: a port that forgets one of them fails `verify`.
Wrong variants are made by swapping one function of gemma_ref.model, or one config field.
"""

from __future__ import annotations

import dataclasses
import math

import ml_dtypes
import numpy as np
import pytest

import gemma_ref.model as M
from gemma_ref import load_model
from gemma_ref.config import GemmaConfig, Rope
from tests.conftest import CASES, golden_prompts

TOL = 1e-4
FAR = 10 * TOL  # "far outside": at least ten times the tolerance
R = dataclasses.replace


def worst_error(case: str, edit_config=None) -> float:
    model = load_model(f"tests/data/models/{case}")
    cfg = edit_config(model.config) if edit_config else model.config
    prompts = golden_prompts(case)
    outs = M.forward(model.weights, cfg, [ids for ids, _ in prompts])
    return max(float(np.abs(o - g).max()) for o, (_, g) in zip(outs, prompts))


CONFIG_QUIRKS = {
    "attention soft-cap": ("gemma2_gqa_softcap", lambda c: R(c, attn_logit_softcapping=None)),
    "final soft-cap": ("gemma2_gqa_softcap", lambda c: R(c, final_logit_softcapping=None)),
    "sliding window (Gemma 2)": ("gemma2_gqa_softcap", lambda c: R(c, sliding_window=None)),
    "sliding window (Gemma 3)": ("gemma3_1b_style", lambda c: R(c, sliding_window=None)),
    "query_pre_attn_scalar": ("gemma2_gqa_softcap", lambda c: R(c, query_pre_attn_scalar=float(c.head_dim))),
    "local rope base": ("gemma3_1b_style", lambda c: R(c, rope_local=c.rope_global)),
    "rope linear scaling": ("gemma3_rope_linear", lambda c: R(c, rope_global=Rope(c.rope_global.theta))),
    "q/k norm": ("gemma3_1b_style", lambda c: R(c, use_qk_norm=False)),
    "sandwich norms": ("gemma2_gqa_softcap", lambda c: R(c, sandwich_norms=False)),
}


@pytest.mark.parametrize("quirk", CONFIG_QUIRKS)
def test_config_quirk_is_pinned(quirk):
    case, edit = CONFIG_QUIRKS[quirk]
    assert worst_error(case) <= TOL  # the right model passes...
    assert worst_error(case, edit) > FAR  # ...and the wrong one fails by a wide margin


def _no_plus_one(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * w


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _exact_gelu(x):
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)


def _tile_kv(x, n_rep):
    return np.tile(x, (n_rep, 1, 1))  # query head h reads kv head h % K: the wrong GQA mapping


def _interleaved_rotate(x):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return np.stack([-x2, x1], axis=-1).reshape(x.shape)  # GPT-J/Meta layout instead of HF's halves


FUNCTION_QUIRKS = {
    "RMSNorm +1": ("rms_norm", _no_plus_one, CASES),
    "tanh GELU": ("gelu_tanh", _exact_gelu, CASES),
    "GQA head mapping": ("repeat_kv", _tile_kv, ["gemma2_gqa_softcap", "gemma3_rope_linear", "gemma3_nested"]),
    "RoPE half-split layout": ("rotate_half", _interleaved_rotate, CASES),
}


@pytest.mark.parametrize("quirk", FUNCTION_QUIRKS)
def test_function_quirk_is_pinned(quirk, monkeypatch):
    name, wrong, cases = FUNCTION_QUIRKS[quirk]
    monkeypatch.setattr(M, name, wrong)
    assert max(worst_error(c) for c in cases) > FAR


def test_bf16_rounded_embedding_scale_is_pinned(monkeypatch):
    """sqrt(48) = 6.9282 in float32 but 6.9375 in bf16: the rounded factor fails the hidden-48 case."""
    monkeypatch.setattr(GemmaConfig, "embed_scale", property(lambda c: float(ml_dtypes.bfloat16(c.hidden_size ** 0.5))))
    assert worst_error("gemma1_mha_f32") > FAR


def test_gemma1_name_trap(monkeypatch):
    """Gemma 1's post_attention_layernorm is the pre-MLP norm; applying it after attention is wrong."""
    def wrong_block(h, w, cfg, layer_type, positions, cache=None, blocks=None):
        eps = cfg.rms_norm_eps
        a = M.attention(M.rms_norm(h, w["input_layernorm.weight"], eps), w, cfg, layer_type, positions)
        h = h + M.rms_norm(a, w["post_attention_layernorm.weight"], eps)
        return h + M.mlp(h, w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"])

    monkeypatch.setattr(M, "block", wrong_block)
    assert worst_error("gemma1_mqa_bf16") > FAR
