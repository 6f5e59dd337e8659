"""Gemma 4 text: config forms, weights, quirks pinned by the goldens, KV cache, chat, bad input, variants.

The golden-logit and cached-decoding tests of the six gemma4_* cases run in test_golden_logits.py
and test_generate.py (their cases come from tests/data/models); this file holds what is Gemma 4's own.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import gemma_ref.model as M
import gemma_ref.weights as W
from gemma_ref import load_model
from gemma_ref.config import FULL, KNOWN_VARIANTS, SLIDING, config_from_dict, load_config, match_variant, variant_config_json
from gemma_ref.errors import InputError
from gemma_ref.generate import generate, stop_ids
from gemma_ref.tokenizer import Tokenizer
from tests.conftest import DATA, MODELS, golden_prompts

TOL = 1e-4
FAR = 10 * TOL
R = dataclasses.replace
G4 = ["gemma4_e2b_style", "gemma4_e4b_style", "gemma4_31b_style", "gemma4_26b_moe", "gemma4_per_layer_config",
      "gemma4_unified"]


def worst_error(case: str, edit_config=None, edit_layer=None) -> float:
    """Max |Δlogit| against the golden, optionally with a config edited or each layer's tensors edited."""
    model = load_model(MODELS / case)
    cfg = edit_config(model.config) if edit_config else model.config
    weights = W.Weights(MODELS / case, cfg, check=False) if edit_config else model.weights
    if edit_layer:
        original = weights.layer
        weights.layer = lambda i: edit_layer(dict(original(i)))
    prompts = golden_prompts(case)
    outs = M.forward(weights, cfg, [ids for ids, _ in prompts])
    return max(float(np.abs(o - g).max()) for o, (_, g) in zip(outs, prompts))


# --- every quirk, done wrong, fails by far ---------------------------------------------------------


def _plus_one(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * (1 + w)


def _v_after_norm(x, w, spec, eps, cos, sin):
    k, _ = ORIGINAL_PROJECT_KV(x, w, spec, eps, cos, sin)
    if spec.k_eq_v:
        return k, M.rms_norm_unscaled(k, eps)  # V forked from K after k_norm and RoPE: the pegainfer bug
    return ORIGINAL_PROJECT_KV(x, w, spec, eps, cos, sin)


def _partial_rotary(head_dim, rope):
    """Ordinary partial rotary: exponents over the rotated dims only (the Megatron-Bridge / pegainfer bug)."""
    if rope.proportion == 1.0:
        return ORIGINAL_INV_FREQ(head_dim, rope)
    rotated = int(rope.proportion * head_dim)
    inv = ORIGINAL_INV_FREQ(rotated, dataclasses.replace(rope, proportion=1.0))
    return np.concatenate([inv, np.zeros(head_dim // 2 - len(inv), np.float32)])


def _route_on_normed(r, w, cfg):
    return ORIGINAL_ROUTE(M.rms_norm_gemma4(r, w["pre_feedforward_layernorm_2.weight"], cfg.rms_norm_eps), w, cfg)


ORIGINAL_PROJECT_KV, ORIGINAL_INV_FREQ, ORIGINAL_ROUTE = M.project_kv, M.rope_inv_freq, M.route

FUNCTION_QUIRKS = {
    "RMSNorm without +1": ("rms_norm_gemma4", _plus_one, G4),
    "v_norm": ("rms_norm_unscaled", lambda x, eps: x, ["gemma4_e4b_style", "gemma4_31b_style"]),
    "K=V from the raw k_proj": ("project_kv", _v_after_norm, ["gemma4_31b_style", "gemma4_per_layer_config"]),
    "proportional RoPE": ("rope_inv_freq", _partial_rotary, ["gemma4_31b_style", "gemma4_per_layer_config"]),
    "router on the raw residual": ("route", _route_on_normed, ["gemma4_26b_moe"]),
}


@pytest.mark.parametrize("quirk", FUNCTION_QUIRKS)
def test_function_quirk_is_pinned(quirk, monkeypatch):
    name, wrong, cases = FUNCTION_QUIRKS[quirk]
    assert max(worst_error(c) for c in cases) <= TOL
    monkeypatch.setattr(M, name, wrong)
    assert max(worst_error(c) for c in cases) > FAR


def _no_sharing(c):
    return R(c, layers=tuple(R(s, kv_source=None) for s in c.layers))


CONFIG_QUIRKS = {
    "attention scale 1.0": ("gemma4_31b_style", lambda c: R(c, query_pre_attn_scalar=float(c.head_dim))),
    "final soft-cap 30": ("gemma4_e4b_style", lambda c: R(c, final_logit_softcapping=None)),
    "per-layer embeddings": ("gemma4_e2b_style", lambda c: R(c, hidden_size_per_layer_input=0)),
    # Not sharing: the KV-shared layers compute K/V from the leftover tensors real E2B files carry.
    "KV sharing": ("gemma4_e2b_style", _no_sharing),
    "full layers' own RoPE (1M, proportional)": ("gemma4_unified", lambda c: R(c, rope_global=c.rope_local)),
}


@pytest.mark.parametrize("quirk", CONFIG_QUIRKS)
def test_config_quirk_is_pinned(quirk):
    case, edit = CONFIG_QUIRKS[quirk]
    assert worst_error(case) <= TOL
    assert worst_error(case, edit_config=edit) > FAR


def _set(name, value):
    def edit(w):
        if name in w:
            w[name] = value(w[name])
        return w
    return edit


LAYER_QUIRKS = {
    "layer_scalar": ("gemma4_unified", _set("layer_scalar", np.ones_like)),
    "per_expert_scale": ("gemma4_26b_moe", _set("router.per_expert_scale", np.ones_like)),
    "router.scale": ("gemma4_26b_moe", _set("router.scale", np.ones_like)),
    "gate rows then up rows": ("gemma4_26b_moe", _set("experts.gate_up_proj", lambda g: np.concatenate(
        [g[:, g.shape[1] // 2:], g[:, :g.shape[1] // 2]], axis=1))),
}


@pytest.mark.parametrize("quirk", LAYER_QUIRKS)
def test_weight_quirk_is_pinned(quirk):
    case, edit = LAYER_QUIRKS[quirk]
    assert worst_error(case, edit_layer=edit) > FAR


def test_fixtures_bite():
    """The fixtures are only useful if their quirks are live: scalars != 1, logits bent by the cap."""
    t = load_file(str(MODELS / "gemma4_e4b_style" / "model.safetensors"))
    scalars = [float(v[0]) for k, v in t.items() if k.endswith("layer_scalar")]
    assert len(scalars) == 8 and max(scalars) < 0.95 and min(scalars) > 0.25
    assert max(np.abs(lg).max() for _, lg in golden_prompts("gemma4_26b_moe")) > 5  # tanh(z/30) bends visibly


# --- config forms ----------------------------------------------------------------------------------


def test_e2b_layer_geometry_and_sharing():
    c = load_config(MODELS / "gemma4_e2b_style")
    assert c.nested and c.model_type == "gemma4_text" and c.eos_token_id == (1, 106)
    assert [i for i, t in enumerate(c.layer_types) if t == FULL] == [4, 9]  # 4:1, only via layer_types
    assert [s.kv_source for s in c.layers] == [None] * 6 + [5, 5, 5, 4]  # last non-shared of the same type
    assert [s.intermediate_size for s in c.layers] == [96] * 6 + [192] * 4  # double-wide on shared layers
    assert {s.head_dim for s in c.layers if s.type == FULL} == {32}
    assert c.rope_global.proportion == 0.25 and c.rope_local.proportion == 1.0


def test_default_layer_rule_forces_the_last_layer_full():
    c = load_config(MODELS / "gemma4_31b_style")  # its config.json has no layer_types
    assert [i for i, t in enumerate(c.layer_types) if t == FULL] == [5, 7]
    assert [(s.head_dim, s.num_key_value_heads, s.k_eq_v) for s in c.layers if s.type == FULL] == [(32, 1, True)] * 2


def test_per_layer_config_form():
    raw = json.loads((MODELS / "gemma4_per_layer_config" / "config.json").read_text())
    assert "global_head_dim" not in raw and set(raw["per_layer_config"]) == {"2", "6"}
    c = config_from_dict(raw)
    assert [(s.head_dim, s.num_key_value_heads) for s in c.layers] == [
        (48, 1) if i in (2, 6) else (16, 2) for i in range(7)]
    # Zero-padded keys, as written for 10+ layers.
    raw2 = dict(raw, num_hidden_layers=12, layer_types=[SLIDING] * 11 + [FULL],
                per_layer_config={"11": {"head_dim": 48}, "02": {"num_key_value_heads": 1}})
    c2 = config_from_dict(raw2)
    assert c2.layers[11].head_dim == 48 and c2.layers[11].num_key_value_heads == 2 and c2.layers[2].num_key_value_heads == 1


def test_global_defaults():
    raw = json.loads((MODELS / "gemma4_e4b_style" / "config.json").read_text())
    for k in ("global_head_dim", "hidden_size_per_layer_input", "vocab_size_per_layer_input", "rope_parameters"):
        raw.pop(k)
    c = config_from_dict(raw)
    assert {s.head_dim for s in c.layers if s.type == FULL} == {512}  # the builder default
    assert c.hidden_size_per_layer_input == 256 and c.vocab_size_per_layer_input == 262144  # gemma4_text: PLE on
    assert (c.rope_global.theta, c.rope_global.proportion, c.rope_local.theta) == (1e6, 0.25, 1e4)
    # num_global_key_value_heads applies only with attention_k_eq_v (E2B/E4B store it, ignored).
    assert {s.num_key_value_heads for s in config_from_dict(dict(raw, num_global_key_value_heads=1)).layers} == {2}
    # gemma4_unified: absent PLE keys mean no PLE.
    unified = json.loads((MODELS / "gemma4_unified" / "config.json").read_text())
    assert config_from_dict(unified).hidden_size_per_layer_input == 0


@pytest.mark.parametrize("model_type, what", [
    ("embedding_gemma2", "encoder"), ("gemma4_assistant", "drafter"), ("diffusion_gemma", "diffusion"),
    ("t5gemma2", "encoder-decoder"),
])
def test_not_causal_lms_are_refused_by_name(model_type, what):
    raw = json.loads((MODELS / "gemma4_e4b_style" / "config.json").read_text())
    with pytest.raises(InputError, match=what):
        config_from_dict(dict(raw, model_type=model_type), source="x/config.json")
    with pytest.raises(InputError, match=what):  # as a wrapper too
        config_from_dict({"model_type": model_type, "text_config": raw}, source="x/config.json")


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("hidden_size"), "no 'hidden_size'"),
    (lambda r: r.pop("num_hidden_layers"), "no 'num_hidden_layers'"),
    (lambda r: r.update(num_hidden_layers=1e9), "num_hidden_layers must be an integer"),
    (lambda r: r.update(num_hidden_layers=10**9), "num_hidden_layers is 1000000000, more than any Gemma"),
    (lambda r: r.update(vocab_size=2**40), "vocab_size"),
    (lambda r: r.update(global_head_dim=10**6), "global_head_dim"),
    (lambda r: r.update(enable_moe_block=True, num_experts=8, top_k_experts=2), "'moe_intermediate_size' is missing"),
    (lambda r: r.update(enable_moe_block=True, num_experts=10**6, top_k_experts=2, moe_intermediate_size=8),
     "num_experts"),
    (lambda r: r.update(hidden_size_per_layer_input=None), "hidden_size_per_layer_input is null"),
    (lambda r: r.update(num_kv_shared_layers=8), "num_kv_shared_layers"),
    (lambda r: r.update(per_layer_config={"3": {"sliding_window": 8}}), "per_layer_config"),
    (lambda r: r.update(use_bidirectional_attention="all"), "non-causal"),
    (lambda r: r.update(rope_parameters={FULL: {"rope_type": "proportional", "rope_theta": 1e6,
                                                "partial_rotary_factor": 2}}), "partial_rotary_factor"),
])
def test_bad_gemma4_configs(edit, message):
    raw = json.loads((MODELS / "gemma4_e4b_style" / "config.json").read_text())
    edit(raw)
    with pytest.raises(InputError, match=message) as e:
        config_from_dict(raw, source="x/config.json")
    assert "x/config.json" in str(e.value)


def test_absurd_sizes_fail_fast_for_every_generation():
    raw = json.loads((DATA / "configs" / "gemma-3-1b-it.json").read_text())
    t0 = time.perf_counter()
    for bad in (dict(num_hidden_layers=10**9), dict(num_hidden_layers=1e9), dict(hidden_size=10**7),
                dict(sliding_window_pattern=10**9), dict(max_position_embeddings=2**40)):
        with pytest.raises(InputError):
            config_from_dict({**raw, **bad}, source="x/config.json")
    assert time.perf_counter() - t0 < 1.0


# --- weights ---------------------------------------------------------------------------------------


def test_towers_and_leftover_kv_are_reported_never_used():
    model = load_model(MODELS / "gemma4_e2b_style")
    issues = {i.code: i for i in model.weights.issues}
    assert issues["kv_shared"].severity == "info" and "12 K/V tensors" in issues["kv_shared"].message
    assert issues["foreign"].severity == "info"
    assert not any(i.severity in ("error", "warning") for i in model.weights.issues)
    assert "self_attn.k_proj.weight" not in model.weights.layer(7)  # shared layer: never handed out


def test_v_proj_on_a_k_eq_v_layer_is_unused(model_copy):
    d = model_copy("gemma4_31b_style")
    t = load_file(str(d / "model.safetensors"))
    t["model.layers.5.self_attn.v_proj.weight"] = np.full_like(t["model.layers.5.self_attn.k_proj.weight"], 7)
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    model = load_model(d)
    (issue,) = [i for i in model.weights.issues if i.code == "unexpected"]
    assert issue.severity == "warning" and issue.tensor == "model.layers.5.self_attn.v_proj.weight"
    assert "K=V" in issue.message
    for ids, expected in golden_prompts("gemma4_31b_style"):
        assert np.abs(model.forward(ids) - expected).max() <= TOL  # never used


@pytest.mark.parametrize("case, tensor, shape", [
    ("gemma4_e4b_style", "model.embed_tokens_per_layer.weight", (512, 72)),
    ("gemma4_26b_moe", "model.layers.3.experts.gate_up_proj", (8, 32, 64)),
    ("gemma4_26b_moe", "model.layers.0.experts.down_proj", (8, 32, 64)),
    ("gemma4_e4b_style", "model.layers.2.layer_scalar", (2,)),
])
def test_wrong_shapes_are_errors_naming_the_tensor(case, tensor, shape, model_copy, cli):
    d = model_copy(case)
    t = load_file(str(d / "model.safetensors"))
    t[tensor] = np.zeros(shape, dtype=t[tensor].dtype)
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=tensor.replace(".", r"\.")):
        load_model(d)
    issues = W.check_structure(load_config(d), W.read_headers([d / "model.safetensors"]), "model.")
    (bad,) = [i for i in issues if i.severity == "error"]
    assert bad.code == "shape" and bad.tensor == tensor
    r = cli("verify", d, "--golden", DATA / "goldens" / f"{case}.safetensors")
    assert r.code == 2 and tensor in r.err


def test_ple_table_is_gathered_by_rows_and_experts_read_per_routed_expert(monkeypatch):
    model = load_model(MODELS / "gemma4_e2b_style")
    ids = golden_prompts("gemma4_e2b_style")[0][0]
    rows = model.weights.per_layer_rows(ids)
    assert rows.shape == (len(ids), 80) and rows.dtype == np.float32

    moe = load_model(MODELS / "gemma4_26b_moe")
    seen = []
    original = M.mlp
    monkeypatch.setattr(M, "mlp", lambda x, g, u, d: (seen.append((x.shape[0], g.shape)), original(x, g, u, d))[1])
    ids = golden_prompts("gemma4_26b_moe")[0][0]
    moe.forward(ids)
    per_layer = len(seen) // moe.config.num_hidden_layers
    expert_calls = [s for s in seen if s[1] == (32, 64)]  # the experts' [I, D] gate halves (dense MLP: [96, 64])
    assert len(expert_calls) <= moe.config.num_hidden_layers * moe.config.num_experts  # each expert at most once a layer
    assert sum(n for n, _ in expert_calls) == moe.config.num_hidden_layers * len(ids) * moe.config.top_k_experts
    assert per_layer >= 2


# --- generation ------------------------------------------------------------------------------------


def test_shared_layers_read_the_source_layers_cache():
    model = load_model(MODELS / "gemma4_e2b_style")
    cache = M.new_cache(model.config)
    assert [c is None for c in cache] == [False] * 6 + [True] * 4  # no cache of their own
    ids = golden_prompts("gemma4_e2b_style")[0][0]
    M.forward(model.weights, model.config, [ids[:10]], caches=[cache])
    cache[5].v[:, :cache[5].length] *= 0.5  # tamper with the source's cache: shared layers must see it
    out = M.forward(model.weights, model.config, [ids[10:]], caches=[cache])[0]
    assert np.abs(out - model.forward(ids)[10:]).max() > FAR


@pytest.mark.parametrize("case", G4)
def test_decoding_past_the_window_equals_the_full_pass(case):
    model = load_model(MODELS / case)
    prompt = golden_prompts(case)[0][0].tolist()
    result = generate(model, prompt, max_new_tokens=8, stop=(), keep_logits=True)
    full = model.forward(prompt + result.ids[:-1])
    assert len(prompt) > model.config.sliding_window
    for step, row in enumerate(result.logits):
        np.testing.assert_allclose(row, full[len(prompt) - 1 + step], rtol=0, atol=TOL)


def test_stop_ids():
    assert stop_ids(load_config(MODELS / "gemma4_e2b_style")) == {1, 106}
    assert 106 in stop_ids(load_config(MODELS / "gemma4_e4b_style"))  # <turn|> ends a Gemma 4 turn
    assert 106 not in stop_ids(load_config(MODELS / "gemma3_1b_style"))


class _FakeGemma4Tokenizer:
    """The parts of gemma_ref.Tokenizer the chat template uses, with Gemma 4's special ids."""

    bos_id = 2
    special_ids = {"bos": 2, "eos": 1, "turn_open": 105, "turn_close": 106}

    def special_id(self, name):
        return self.special_ids[name]

    def encode(self, text, bos=False):
        return [ord(ch) + 1000 for ch in text]

    def _newline(self):
        return self.encode("\n")

    _gemma4_chat = Tokenizer._gemma4_chat


def test_gemma4_chat_template():
    tok = _FakeGemma4Tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    ids = Tokenizer.apply_chat_template(tok, messages, generation="gemma4_text")
    text = "".join({2: "<bos>", 105: "<|turn>", 106: "<turn|>"}.get(i) or chr(i - 1000) for i in ids)
    assert text == ("<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\nHello.<turn|>\n"
                    "<|turn>user\nBye<turn|>\n<|turn>model\n")
    assert ids.count(105) == 5 and ids.count(106) == 4
    # Without an explicit generation, a vocabulary holding <|turn> picks Gemma 4's template.
    assert Tokenizer.apply_chat_template(tok, messages[1:2]) == [2, 105, *tok.encode("user\nHi"), 106,
                                                                 *tok.encode("\n"), 105, *tok.encode("model\n")]


# --- the published sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, billions", [
    ("gemma-4-E2B", 4.629), ("gemma-4-E4B", 7.463), ("gemma-4-31B", 30.697), ("gemma-4-26B-A4B", 25.233),
    ("gemma-3-270m", 0.268), ("gemma-3-1b", 1.000),
])
def test_parameter_counts_match_the_published_ones(name, billions):
    c = config_from_dict(variant_config_json(name))
    assert match_variant(c) == name
    assert round(c.expected_parameters() / 1e9, 3) == billions


def test_e2b_ple_table_and_moe_active_count():
    e2b = config_from_dict(variant_config_json("gemma-4-E2B"))
    assert e2b.vocab_size_per_layer_input * e2b.num_hidden_layers * e2b.hidden_size_per_layer_input == 262144 * 8960
    assert [s.kv_source for s in e2b.layers][15:] == [13, 13, 13, 13, 14] * 4  # layers 15-34 reuse 13 / 14
    moe = config_from_dict(variant_config_json("gemma-4-26B-A4B"))
    assert round(moe.expected_parameters(active=True) / 1e9, 2) == 3.82  # the "A4B": ~3.8B active per token
    assert "gemma-3-270m" in KNOWN_VARIANTS and KNOWN_VARIANTS["gemma-3-270m"]["sliding_window"] == 512
