"""`gemma-release inspect` on Gemma 4: per-layer-type geometry, PLE, KV sharing, MoE, active parameters.

The expected values are read from the fixtures' own config.json (and safetensors headers), so the
tests check that inspect reports what the files say, not numbers copied from its output.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from gemma_ref.config import FULL, SLIDING, config_from_dict, variant_config_json
from gemma_ref.weights import expected_shapes
from tests.conftest import MODELS


def text_config(case: str) -> dict:
    raw = json.loads((MODELS / case / "config.json").read_text())
    return raw.get("text_config") or raw


def inspect_json(cli, model: Path) -> dict:
    r = cli("inspect", model, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_31b_style_full_layers_are_k_eq_v_with_their_own_geometry(cli):
    tc = text_config("gemma4_31b_style")
    info = inspect_json(cli, MODELS / "gemma4_31b_style")
    g = info["per_layer"]
    assert g["attention_scale"] == 1.0  # not query_pre_attn_scalar ** -0.5, not head_dim ** -0.5
    full, sliding = g["layer_types"][FULL], g["layer_types"][SLIDING]
    n = tc["num_hidden_layers"]  # no layer_types in this config: transformers' rule, the last layer forced full
    assert full["layers"] == [i for i in range(n - 1) if (i + 1) % 6 == 0] + [n - 1]
    assert sliding["layers"] == [i for i in range(n) if i not in full["layers"]]
    assert full["k_eq_v"] is True and sliding["k_eq_v"] is False
    assert full["num_key_value_heads"] == tc["num_global_key_value_heads"] == 1
    assert full["head_dim"] == tc["global_head_dim"]
    assert sliding["num_key_value_heads"] == tc["num_key_value_heads"]
    assert sliding["head_dim"] == tc["head_dim"] and sliding["sliding_window"] == tc["sliding_window"]
    rp = tc["rope_parameters"]
    assert full["rope"]["type"] == "proportional"
    assert full["rope"]["partial_rotary_factor"] == rp[FULL]["partial_rotary_factor"]
    assert full["rope"]["theta"] == rp[FULL]["rope_theta"]
    assert full["rope"]["rotated_dims"] == 2 * int(rp[FULL]["partial_rotary_factor"] * tc["global_head_dim"] // 2)
    assert sliding["rope"] == {"type": "default", "theta": rp[SLIDING]["rope_theta"], "linear_factor": 1.0,
                               "partial_rotary_factor": 1.0, "rotated_dims": tc["head_dim"]}
    assert g["per_layer_embeddings"] is None and g["kv_sharing"] is None and g["moe"] is None
    assert g["double_wide_mlp"] is None
    assert g["parameters_active_per_token"] == info["parameters"] == info["parameters_expected_from_config"]
    assert info["variant"] is None  # a tiny model is shaped like no release


def test_e2b_style_ple_kv_sharing_and_double_wide_mlp(cli):
    tc = text_config("gemma4_e2b_style")
    info = inspect_json(cli, MODELS / "gemma4_e2b_style")
    g = info["per_layer"]
    n, shared = tc["num_hidden_layers"], tc["num_kv_shared_layers"]
    ple = g["per_layer_embeddings"]
    assert ple["hidden_size_per_layer_input"] == tc["hidden_size_per_layer_input"]
    assert ple["vocab_size_per_layer_input"] == tc["vocab_size_per_layer_input"]
    assert ple["table_parameters"] == tc["vocab_size_per_layer_input"] * n * tc["hidden_size_per_layer_input"]
    kv = g["kv_sharing"]
    assert kv["num_kv_shared_layers"] == shared
    types = list(tc["layer_types"][:-1]) + [FULL]
    first_shared = n - shared
    want = {str(i): max(j for j in range(first_shared) if types[j] == types[i]) for i in range(first_shared, n)}
    assert kv["sources"] == want  # the last non-shared layer of the same type
    assert g["double_wide_mlp"] == {"layers": list(range(first_shared, n)),
                                    "intermediate_size": 2 * tc["intermediate_size"]}
    r = cli("inspect", MODELS / "gemma4_e2b_style")
    assert r.code == 0
    for text in ("per-layer embeddings", "KV sharing", "double-wide MLP", "proportional", "attention scale"):
        assert text in r.out


def test_26b_moe_experts_and_active_parameters(cli):
    tc = text_config("gemma4_26b_moe")
    info = inspect_json(cli, MODELS / "gemma4_26b_moe")
    moe = info["per_layer"]["moe"]
    E, k, I, D = tc["num_experts"], tc["top_k_experts"], tc["moe_intermediate_size"], tc["hidden_size"]
    assert moe == {"num_experts": E, "top_k_experts": k, "moe_intermediate_size": I,
                   "dense_intermediate_size": tc["intermediate_size"], "expert_parameters": 3 * D * I}
    idle = (E - k) * 3 * D * I * tc["num_hidden_layers"]  # the experts a token is not routed to
    assert info["per_layer"]["parameters_active_per_token"] == info["parameters"] - idle
    assert info["per_layer"]["parameters_active_expected_from_config"] == info["parameters_expected_from_config"] - idle
    r = cli("inspect", MODELS / "gemma4_26b_moe")
    assert r.code == 0 and "active per token" in r.out and f"top-{k}" in r.out


def test_gemma1_to_3_keep_their_output(cli):
    for case in ("gemma1_mha_f32", "gemma2_gqa_softcap", "gemma3_nested"):
        info = inspect_json(cli, MODELS / case)
        assert "per_layer" not in info
        r = cli("inspect", MODELS / case)
        assert "query_pre_attn_scalar" in r.out and "KV sharing" not in r.out and "proportional" not in r.out


def write_header_only(model: Path, raw: dict) -> None:
    """A checkpoint of the variant's real shapes whose tensor data is a hole (a sparse file): headers only."""
    model.mkdir()
    (model / "config.json").write_text(json.dumps(raw))
    header, offset = {}, 0
    for name, shape in expected_shapes(config_from_dict(raw)).items():
        n = 2
        for s in shape:
            n *= s
        header["model." + name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(model / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)  # never written: no disk used


@pytest.mark.parametrize("variant, total, active", [
    ("gemma-4-E2B", 4.63, 4.63), ("gemma-4-26B-A4B", 25.23, 3.82), ("gemma-4-31B", 30.70, 30.70),
])
def test_real_sizes_name_their_variant(cli, tmp_path, variant, total, active):
    raw = variant_config_json(variant)
    write_header_only(tmp_path / variant, raw)
    info = inspect_json(cli, tmp_path / variant)
    assert info["variant"] == variant
    assert round(info["parameters"] / 1e9, 2) == total  # the published text-model counts
    assert round(info["per_layer"]["parameters_active_per_token"] / 1e9, 2) == active
    r = cli("inspect", tmp_path / variant)
    assert f"shaped like {variant}" in r.out
