"""Gemma 3n text and VaultGemma: quirks pinned by the goldens, config forms, weights, KV cache, sizes, terms.

The golden-logit and cached-decoding tests of gemma3n_nested and vaultgemma_layer_types run in
test_golden_logits.py and test_generate.py (their cases come from tests/data/models); this file
holds what is their own. Checkpoints and goldens: tests/make_goldens_gemma3n.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import gemma_ref.model as M
from gemma_ref import load_model
from gemma_ref.config import FULL, SLIDING, config_from_dict, load_config, match_variant, variant_config_json
from gemma_ref.errors import InputError
from gemma_ref.generate import generate, stop_ids
from release.card.terms import generation_of_model_type
from release.weights.golden import read_golden
from tests.conftest import GOLDENS, MODELS, golden_prompts

TOL = 1e-4
FAR = 10 * TOL
R = dataclasses.replace
G3N, VAULT = "gemma3n_nested", "vaultgemma_layer_types"
# The cases this file adds (the Gemma 3n GGUF path has its own tests: test_gguf_gemma3n.py).
GEMMA3N_VAULT_CASES = (G3N, VAULT)


def worst_error(case: str, edit_config=None) -> float:
    """Max |Δlogit| against the golden, optionally with the config edited."""
    model = load_model(MODELS / case)
    cfg = edit_config(model.config) if edit_config else model.config
    prompts = golden_prompts(case)
    outs = M.forward(model.weights, cfg, [ids for ids, _ in prompts])
    return max(float(np.abs(o - g).max()) for o, (_, g) in zip(outs, prompts))


def test_both_cases_match_transformers():
    assert worst_error(G3N) <= TOL and worst_error(VAULT) <= TOL


# --- every quirk, done wrong, fails by far (wrong variants swap one small function of model.py) ----


def _plus_one(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * (1 + w)


def _no_correction_coefs(pred, out, w, cfg):
    return pred + (out - pred[cfg.altup_active_idx])[None]  # every stream gets the innovation as it is


FUNCTION_QUIRKS = {
    "RMSNorm without +1": ("rms_norm_gemma4", _plus_one),
    "AltUp predict": ("altup_predict", lambda streams, w, cfg: streams.copy()),
    "AltUp correct coefficients": ("altup_correct", _no_correction_coefs),
    "LAuReL": ("laurel", lambda x, w, eps: x),
    "activation sparsity": ("gaussian_topk", lambda g, sparsity: g),
    "four-stream average": ("altup_merge", lambda streams, weights: streams[0]),
    "ids past the PLE table read row 0": ("ple_ids", lambda ids, cfg: np.minimum(ids, cfg.vocab_size_per_layer_input - 1)),
}


@pytest.mark.parametrize("quirk", FUNCTION_QUIRKS)
def test_gemma3n_function_quirk_is_pinned(quirk, monkeypatch):
    name, wrong = FUNCTION_QUIRKS[quirk]
    assert worst_error(G3N) <= TOL
    monkeypatch.setattr(M, name, wrong)
    assert worst_error(G3N) > FAR


def _no_sharing(c):
    return R(c, layers=tuple(R(s, kv_source=None) for s in c.layers))


def _gemma2_alternation(c):
    return R(c, layer_types=tuple(FULL if (i + 1) % 2 == 0 else SLIDING for i in range(c.num_hidden_layers)))


CONFIG_QUIRKS = {
    "3n: attention scale 1.0": (G3N, lambda c: R(c, query_pre_attn_scalar=float(c.head_dim))),
    "3n: correct_output_scale before the PLE gate": (G3N, lambda c: R(c, altup_correct_scale=False)),
    "3n: per-layer sparsity": (G3N, lambda c: R(c, layers=tuple(R(s, activation_sparsity=0.95) for s in c.layers))),
    "3n: local / global RoPE bases": (G3N, lambda c: R(c, rope_local=c.rope_global)),
    "3n: final soft-cap 30": (G3N, lambda c: R(c, final_logit_softcapping=None)),
    "VaultGemma: layer_types, not Gemma 2's alternation": (VAULT, _gemma2_alternation),
    "VaultGemma: sliding window": (VAULT, lambda c: R(c, sliding_window=None, layer_types=(FULL,) * 6)),
    "VaultGemma: attention soft-cap": (VAULT, lambda c: R(c, attn_logit_softcapping=None)),
    "VaultGemma: query_pre_attn_scalar": (VAULT, lambda c: R(c, query_pre_attn_scalar=float(c.head_dim))),
}


@pytest.mark.parametrize("quirk", CONFIG_QUIRKS)
def test_config_quirk_is_pinned(quirk):
    case, edit = CONFIG_QUIRKS[quirk]
    assert worst_error(case) <= TOL
    assert worst_error(case, edit_config=edit) > FAR


def test_kv_sharing_is_pinned(model_copy):
    """Computing K/V on the shared layers (from tensors a file might carry) instead of sharing fails."""
    d = model_copy(G3N)
    t = load_file(str(d / "model.safetensors"))
    rng = np.random.default_rng(0)
    for i in (5, 6, 7):
        p = f"model.language_model.layers.{i}.self_attn."
        t[p + "k_proj.weight"] = (rng.standard_normal((32, 64)) * 0.5).astype(t[p + "q_proj.weight"].dtype)
        t[p + "v_proj.weight"] = (rng.standard_normal((32, 64)) * 0.5).astype(t[p + "q_proj.weight"].dtype)
        t[p + "k_norm.weight"] = np.full(16, 0.5, dtype=t[p + "q_proj.weight"].dtype)
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    model = load_model(d)
    issues = {i.code: i for i in model.weights.issues}
    assert issues["kv_shared"].severity == "info" and "9 K/V tensors" in issues["kv_shared"].message
    prompts = golden_prompts(G3N)
    assert max(np.abs(model.forward(ids) - g).max() for ids, g in prompts) <= TOL  # ignored, as transformers does
    from gemma_ref.weights import Weights
    cfg = _no_sharing(model.config)
    w = Weights(d, cfg, check=False)
    assert max(np.abs(M.forward(w, cfg, [ids])[0] - g).max() for ids, g in prompts) > FAR


def test_fixtures_bite():
    """The quirks are live in the fixtures: ids past the PLE table occur, sparsity is on some layers only,
    the VaultGemma logits sit on the final cap."""
    cfg = load_config(MODELS / G3N)
    assert any((ids >= cfg.vocab_size_per_layer_input).any() for ids, _ in golden_prompts(G3N))
    assert [s.activation_sparsity for s in cfg.layers] == [0.95, 0.9, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0]
    assert 29.0 < max(np.abs(lg).max() for _, lg in golden_prompts(VAULT)) <= 30.0
    t = load_file(str(MODELS / G3N / "model.safetensors"))
    scales = [v for k, v in t.items() if k.endswith("altup.correct_output_scale")]
    assert len(scales) == 8 and all(np.abs(s.astype(np.float32)).min() > 0.3 for s in scales)  # not the zero init


# --- config forms -------------------------------------------------------------------------------------


def test_gemma3n_release_config():
    raw = json.loads((MODELS / G3N / "config.json").read_text())
    assert raw["model_type"] == "gemma3n" and "rope_theta" in raw["text_config"]
    assert "rope_parameters" not in raw["text_config"]  # legacy keys only, as the releases wrote them
    c = load_config(MODELS / G3N)
    assert (c.model_type, c.generation, c.nested) == ("gemma3n_text", 3, True)
    assert (c.vocab_size, c.vocab_size_per_layer_input) == (512, 480)
    assert [s.intermediate_size for s in c.layers] == [96, 128, 96, 64, 96, 96, 128, 96]
    assert [s.kv_source for s in c.layers] == [None] * 5 + [4, 4, 3]  # last non-shared of the same type
    assert (c.rope_global.theta, c.rope_local.theta, c.query_pre_attn_scalar) == (1e6, 1e4, 1.0)
    assert (c.altup_num_inputs, c.altup_active_idx, c.altup_correct_scale, c.laurel_rank) == (4, 0, True, 8)
    assert c.final_logit_softcapping == 30.0 and c.hidden_size_per_layer_input == 8


def test_gemma3n_other_forms_read_the_same():
    raw = json.loads((MODELS / G3N / "config.json").read_text())
    nested = config_from_dict(raw)
    flat = config_from_dict(raw["text_config"])  # a Gemma3nForCausalLM save
    same = dict(nested=False, architectures=(), storage_dtype=None)  # the dtype sits at the top level only
    assert R(flat, **same) == R(nested, **same)
    text = dict(raw["text_config"])  # transformers 5.24's save: rope_parameters per layer type
    th, loc = text.pop("rope_theta"), text.pop("rope_local_base_freq")
    text["rope_parameters"] = {FULL: {"rope_type": "default", "rope_theta": th},
                               SLIDING: {"rope_type": "default", "rope_theta": loc}}
    assert config_from_dict(text).rope_global == nested.rope_global
    assert config_from_dict(text).rope_local == nested.rope_local
    one_width = config_from_dict(dict(raw["text_config"], intermediate_size=96))
    assert {s.intermediate_size for s in one_width.layers} == {96}


def test_gemma3n_defaults_are_the_e4b():
    c = config_from_dict({"model_type": "gemma3n", "text_config": {"model_type": "gemma3n_text"}})
    assert (c.hidden_size, c.num_hidden_layers, c.vocab_size, c.vocab_size_per_layer_input) == (2048, 35, 262400, 262144)
    assert [s.activation_sparsity for s in c.layers] == [0.95] * 10 + [0.0] * 25
    assert [i for i, t in enumerate(c.layer_types) if t == FULL] == [4, 9, 14, 19, 24, 29, 34]
    assert [s.kv_source for s in c.layers][20:] == [18, 18, 18, 18, 19] * 3  # 15 shared layers
    assert round(c.expected_parameters() / 1e9, 2) == 6.84


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(intermediate_size=[96] * 7), "intermediate_size lists 7 widths for 8 layers"),
    (lambda t: t.update(intermediate_size=[96] * 7 + ["x"]), "intermediate_size entries"),
    (lambda t: t.update(activation_sparsity_pattern=[0.5] * 7), "activation_sparsity_pattern"),
    (lambda t: t.update(activation_sparsity_pattern=[1.0] * 8), "activation_sparsity_pattern"),
    (lambda t: t.update(altup_active_idx=4), "altup_active_idx"),
    (lambda t: t.update(altup_num_inputs=10**6), "altup_num_inputs"),
    (lambda t: t.update(laurel_rank=0), "laurel_rank"),
    (lambda t: t.update(num_kv_shared_layers=8), "num_kv_shared_layers"),
])
def test_bad_gemma3n_configs(edit, message):
    raw = json.loads((MODELS / G3N / "config.json").read_text())
    edit(raw["text_config"])
    with pytest.raises(InputError, match=message) as e:
        config_from_dict(raw, source="x/config.json")
    assert "x/config.json" in str(e.value)


def test_vaultgemma_config():
    c = load_config(MODELS / VAULT)
    assert (c.model_type, c.generation, c.post_norms, c.use_qk_norm, c.sandwich_norms) == (
        "vaultgemma", 3, False, False, True)
    assert c.layer_types == (FULL, SLIDING, SLIDING, FULL, FULL, SLIDING)  # as listed, not alternating
    assert c.rope_local == c.rope_global  # Gemma 2's one RoPE, not Gemma 3's two bases
    raw = json.loads((MODELS / VAULT / "config.json").read_text())
    raw.pop("layer_types")  # VaultGemmaConfig's default: Gemma 2's alternation
    assert config_from_dict(raw).layer_types == (SLIDING, FULL) * 3


# --- weights ---------------------------------------------------------------------------------------


def test_towers_are_reported_and_never_read():
    model = load_model(MODELS / G3N)
    (issue,) = model.weights.issues
    assert issue.code == "foreign" and issue.severity == "info" and issue.message.startswith("8 tensors")
    assert model.weights.prefix == "model.language_model."
    assert not any("post_attention_layernorm" in k for k in load_model(MODELS / VAULT).weights.layer(0))


def test_missing_altup_tensor_is_an_error_naming_it(model_copy):
    d = model_copy(G3N)
    t = load_file(str(d / "model.safetensors"))
    del t["model.language_model.layers.2.laurel.linear_left.weight"]
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"layers\.2\.laurel\.linear_left\.weight"):
        load_model(d)


# --- golden --backend transformers (development extra: skipped without torch and transformers) ------------


@pytest.mark.parametrize("case", GEMMA3N_VAULT_CASES)
def test_golden_transformers_backend_reads_the_nested_3n_layout(cli, tmp_path, case):
    """The backend runs the release as it is (3n: model.language_model.* and towers, nested config) and
    reproduces the goldens the make-script computed from transformers' own in-memory model."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    gold = read_golden(GOLDENS / f"{case}.safetensors")
    out = tmp_path / "g.safetensors"
    r = cli("golden", MODELS / case, "--backend", "transformers",
            "--ids", ",".join(map(str, gold.prompts[0].ids)), "-o", out)
    assert r.code == 0, r.err
    assert np.abs(read_golden(out).prompts[0].logits - gold.prompts[0].logits).max() <= 1e-5


def test_golden_transformers_backend_refuses_weights_it_would_make_up(cli, tmp_path):
    """transformers initialises a missing weight at random and carries on: no golden may come from that."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    d = tmp_path / "m"
    shutil.copytree(MODELS / G3N, d)
    tensors = load_file(d / "model.safetensors")
    del tensors["model.language_model.layers.2.laurel.linear_left.weight"]
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "g.safetensors"
    r = cli("golden", d, "--backend", "transformers", "--ids", "2,17,300", "-o", out)
    assert r.code == 2 and "layers.2.laurel.linear_left.weight" in r.err and "random" in r.err
    assert not out.exists()


# --- generation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", GEMMA3N_VAULT_CASES)
def test_decoding_past_the_window_equals_the_full_pass(case):
    model = load_model(MODELS / case)
    prompt = golden_prompts(case)[0][0].tolist()
    result = generate(model, prompt, max_new_tokens=8, stop=(), keep_logits=True)
    full = model.forward(prompt + result.ids[:-1])
    assert len(prompt) > model.config.sliding_window
    for step, row in enumerate(result.logits):
        np.testing.assert_allclose(row, full[len(prompt) - 1 + step], rtol=0, atol=TOL)


def test_shared_layers_read_the_source_layers_cache():
    model = load_model(MODELS / G3N)
    cache = M.new_cache(model.config)
    assert [c is None for c in cache] == [False] * 5 + [True] * 3
    ids = golden_prompts(G3N)[0][0]
    M.forward(model.weights, model.config, [ids[:10]], caches=[cache])
    cache[4].v[:, :cache[4].length] *= 0.5  # tamper with the source's cache: the shared layers must see it
    out = M.forward(model.weights, model.config, [ids[10:]], caches=[cache])[0]
    assert np.abs(out - model.forward(ids)[10:]).max() > FAR
    assert stop_ids(model.config) == {1}  # Gemma 3-era: <eos>; <end_of_turn> comes from the tokenizer


# --- the published sizes, and the terms ----------------------------------------------------------------


# E4B: 6.84B (GEMMA4.md §5, meta instantiation). E2B: 4.44B without the KV-shared layers' K/V; a third-party
# export card says 4.46B, which is this plus those layers' leftover k/v/k_norm (10 x 2.1M) had they been counted.
@pytest.mark.parametrize("name, billions", [("gemma-3n-E4B", 6.84), ("gemma-3n-E2B", 4.44), ("vaultgemma-1b", 1.04)])
def test_parameter_counts(name, billions):
    c = config_from_dict(variant_config_json(name))
    assert match_variant(c) == name
    assert round(c.expected_parameters() / 1e9, 2) == billions


def test_e4b_ple_table():
    c = config_from_dict(variant_config_json("gemma-3n-E4B"))
    assert c.vocab_size_per_layer_input * c.num_hidden_layers * c.hidden_size_per_layer_input == 262144 * 8960


@pytest.mark.parametrize("model_type", ["gemma3n", "gemma3n_text", "vaultgemma"])
def test_both_stay_under_the_gemma_terms(model_type):
    assert generation_of_model_type(model_type) == 3  # Gemma 3-era: Gemma Terms of Use, not Gemma 4's Apache-2.0
