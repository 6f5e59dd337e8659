"""`golden`, `verify` and `inspect` end to end through the CLI entry point."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import load_file, save_file

from tests.conftest import GOLDENS, MODELS

CASE = "gemma3_1b_style"


def test_golden_then_verify_round_trip(cli, tmp_path):
    out = tmp_path / "g.safetensors"
    r = cli("golden", MODELS / CASE, "--ids", "2,17,99,4", "--ids", "2", "--out", out, "--name", "acme/tiny",
            "--revision", "abc123")
    assert r.code == 0, r.err
    r = cli("verify", MODELS / CASE, "--golden", out, "--json")
    report = json.loads(r.out)
    assert r.code == 0 and report["ok"] and report["max_abs_diff"] == 0.0
    assert [p["n_tokens"] for p in report["prompts"]] == [4, 1]


def test_topk_golden_round_trip(cli, tmp_path):
    out = tmp_path / "g.safetensors"
    assert cli("golden", MODELS / CASE, "--ids", "2,17,99", "--out", out, "--storage", "topk", "--topk", "5").code == 0
    t = load_file(str(out))
    assert t["topk_ids.0"].shape == (3, 5) and t["lse.0"].shape == (3,)
    assert cli("verify", MODELS / CASE, "--golden", out).code == 0


def test_perturbed_weights_fail_with_exit_1(cli, model_copy):
    """A converter bug in one norm (here: the +1 baked in twice) is caught as a logit mismatch."""
    d = model_copy(CASE)
    t = load_file(str(d / "model.safetensors"))
    name = next(k for k in t if k.endswith("layers.2.post_feedforward_layernorm.weight"))
    t[name] = (t[name].astype(np.float32) + 1.0).astype(t[name].dtype)
    save_file(t, str(d / "model.safetensors"))
    r = cli("verify", d, "--golden", GOLDENS / f"{CASE}.safetensors", "--json")
    report = json.loads(r.out)
    assert r.code == 1 and not report["ok"]
    assert {f["rule"] for f in report["findings"]} == {"LOGITS001"}
    r = cli("verify", d, "--golden", GOLDENS / f"{CASE}.safetensors")
    assert r.code == 1 and "FAIL" in r.out and "MISMATCH" in r.out


def test_nan_weights_are_reported_by_name(cli, model_copy):
    d = model_copy(CASE)
    t = load_file(str(d / "model.safetensors"))
    name = next(k for k in t if k.endswith("layers.4.mlp.down_proj.weight"))
    w = t[name].astype(np.float32)
    w[3, 7] = np.nan
    t[name] = w.astype(t[name].dtype)
    save_file(t, str(d / "model.safetensors"))
    r = cli("verify", d, "--golden", GOLDENS / f"{CASE}.safetensors", "--json")
    report = json.loads(r.out)
    assert r.code == 1
    assert any(f["rule"] == "WEIGHTS005" and name in f["message"] for f in report["findings"])


def test_tolerances_can_be_set(cli, model_copy):
    d = model_copy(CASE)
    t = load_file(str(d / "model.safetensors"))
    name = next(k for k in t if k.endswith("norm.weight") and "layers" not in k)
    t[name] = (t[name].astype(np.float32) * 1.001).astype(np.float32)
    save_file(t, str(d / "model.safetensors"))
    golden = GOLDENS / f"{CASE}.safetensors"
    assert cli("verify", d, "--golden", golden).code == 1
    assert cli("verify", d, "--golden", golden, "--atol", "1", "--rtol", "0.01").code == 0
    assert cli("verify", d, "--golden", golden, "--atol", "1", "--rtol", "0.01", "--max-kl", "1e-14").code == 1  # measured max KL here: 3e-13


def test_lm_head_and_stray_tensors_are_warned(cli, model_copy):
    d = model_copy(CASE)
    t = load_file(str(d / "model.safetensors"))
    t["lm_head.weight"] = t["model.embed_tokens.weight"]
    t["model.layers.0.mlp.extra.weight"] = np.zeros(3, np.float32)
    save_file(t, str(d / "model.safetensors"))
    r = cli("verify", d, "--golden", GOLDENS / f"{CASE}.safetensors", "--json")
    report = json.loads(r.out)
    assert r.code == 0  # warnings do not fail
    assert sorted(f["rule"] for f in report["findings"]) == ["WEIGHTS004", "WEIGHTS004"]  # lm_head, and the stray one


def test_inspect(cli):
    r = cli("inspect", MODELS / "gemma3_nested", "--json")
    info = json.loads(r.out)
    assert r.code == 0
    assert info["generation"] == 3 and info["nested_multimodal_config"]
    assert info["tensor_prefix"] in ("language_model.model.", "model.language_model.")
    assert info["parameters"] == info["parameters_expected_from_config"]
    assert info["storage_dtypes"] == {"bfloat16": 80}
    r = cli("inspect", MODELS / "gemma1_mha_f32")
    assert r.code == 0 and "Gemma 1" in r.out and "float32" in r.out
