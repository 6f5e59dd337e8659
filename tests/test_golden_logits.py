"""The NumPy reference against goldens made by transformers (tests/make_goldens.py, make_goldens_gemma4.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gemma_ref import load_model
from tests.conftest import CASES, GOLDENS, golden_arrays, golden_prompts

TOL = 1e-4  # the bar: max |Δlogit| <= 1e-4 on every case


def test_all_cases_are_present():
    assert set(CASES) == {"gemma1_mqa_bf16", "gemma1_mha_f32", "gemma2_gqa_softcap", "gemma3_1b_style",
                          "gemma3_rope_linear", "gemma3_nested",
                          "gemma4_e2b_style", "gemma4_e4b_style", "gemma4_31b_style", "gemma4_26b_moe",
                          "gemma4_per_layer_config", "gemma4_unified", "gemma3n_nested", "vaultgemma_layer_types",
                          "gemma3_vision", "gemma4_vision", "gemma4_vision_e2b"}  # with images: make_goldens_vision.py


@pytest.mark.parametrize("case", CASES)
def test_matches_transformers(case):
    model = load_model(f"tests/data/models/{case}")
    for ids, expected in golden_prompts(case):
        logits = model.forward(ids.tolist())
        assert logits.dtype == np.float32 and logits.shape == expected.shape
        assert np.abs(logits - expected).max() <= TOL


def test_softcaps_bite_in_the_gemma2_case():
    """The fixture is only useful if the caps change things: golden logits sit at the final cap."""
    worst = max(np.abs(lg).max() for _, lg in golden_prompts("gemma2_gqa_softcap"))
    assert 29.0 < worst <= 30.0


def test_topk_golden_from_transformers(cli):
    r = cli("verify", "tests/data/models/gemma2_gqa_softcap", "--golden",
            GOLDENS / "gemma2_gqa_softcap.topk.safetensors", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["ok"] and report["storage"] == "topk" and report["max_abs_diff"] <= TOL


@pytest.mark.parametrize("case", CASES)
def test_cli_verify_passes(cli, case):
    r = cli("verify", f"tests/data/models/{case}", "--golden", GOLDENS / f"{case}.safetensors")
    assert r.code == 0, r.out + r.err
    assert "PASS" in r.out


def test_newer_nested_prefix(model_copy):
    """Gemma 3 multimodal saves put text weights under model.language_model. (newer) or language_model.model."""
    d = model_copy("gemma3_nested")
    tensors = load_file(str(d / "model.safetensors"))
    renamed = {}
    for k, v in tensors.items():
        if k.startswith("language_model.model."):
            k = "model.language_model." + k[len("language_model.model."):]
        elif k.startswith("model.language_model."):
            k = "language_model.model." + k[len("model.language_model."):]
        renamed[k] = v
    assert renamed.keys() != tensors.keys()
    save_file(renamed, str(d / "model.safetensors"))
    model = load_model(d)
    for ids, expected in golden_prompts("gemma3_nested"):
        assert np.abs(model.forward(ids) - expected).max() <= TOL


def test_sharded_checkpoint(model_copy):
    """The same weights split over two shards with an index give the same logits."""
    d = model_copy("gemma3_1b_style")
    tensors = load_file(str(d / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for fname, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(d / fname))
    (d / "model.safetensors").unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}))
    model = load_model(d)
    assert len(model.weights.files) == 2
    for ids, expected in golden_prompts("gemma3_1b_style"):
        assert np.abs(model.forward(ids) - expected).max() <= TOL


def test_f16_storage(model_copy):
    """float16 storage is read and computed in float32 (compared with f32 logits of the same rounded weights)."""
    d = model_copy("gemma1_mha_f32")
    t32 = load_file(str(d / "model.safetensors"))
    save_file({k: v.astype(np.float16) for k, v in t32.items()}, str(d / "model.safetensors"))
    ids = golden_prompts("gemma1_mha_f32")[0][0]
    f16_logits = load_model(d).forward(ids)
    save_file({k: v.astype(np.float16).astype(np.float32) for k, v in t32.items()}, str(d / "model.safetensors"))
    # Same values, different code path (f16 is converted in chunks): equal up to float32 summation order.
    np.testing.assert_allclose(f16_logits, load_model(d).forward(ids), rtol=0, atol=2e-5)


def test_golden_file_is_what_make_goldens_wrote():
    t = golden_arrays("gemma1_mqa_bf16")
    assert {k.split(".")[0] for k in t} == {"ids", "logits"}
    assert all(t[f"ids.{i}"][0] == 2 for i in range(3))  # every prompt starts with BOS
