"""config.json as the real releases write it (tests/data/configs/ are the published files of google/*)."""

from __future__ import annotations

import json

import pytest

from gemma_ref.config import FULL, SLIDING, KNOWN_VARIANTS, config_from_dict, load_config, match_variant, variant_config_json
from gemma_ref.errors import InputError

CONFIGS = "tests/data/configs"


def test_gemma_7b_legacy():
    c = load_config(f"{CONFIGS}/gemma-7b.json")
    assert (c.generation, c.hidden_size, c.q_width, c.num_key_value_heads) == (1, 3072, 4096, 16)  # q_proj 4096 wide
    assert c.query_pre_attn_scalar == 256  # Gemma 1 scales by head_dim ** -0.5
    assert c.attn_logit_softcapping is None and c.final_logit_softcapping is None
    assert set(c.layer_types) == {FULL} and c.sliding_window is None
    assert c.storage_dtype == "bfloat16"  # from the legacy torch_dtype
    assert round(c.expected_parameters() / 1e9, 2) == 8.54  # the "7B" that has 8.54B parameters
    assert match_variant(c) == "gemma-7b"
    assert c.embed_scale == pytest.approx(55.425625, abs=1e-5)  # float32 sqrt(3072), not bf16's 55.5


def test_gemma_2_9b():
    c = load_config(f"{CONFIGS}/gemma-2-9b.json")
    assert (c.generation, c.attn_logit_softcapping, c.final_logit_softcapping) == (2, 50.0, 30.0)
    assert c.layer_types[:4] == (SLIDING, FULL, SLIDING, FULL)  # even layers local
    assert c.sliding_window == 4096 and c.queries_per_kv == 2
    assert round(c.expected_parameters() / 1e9, 2) == 9.24


def test_gemma_3_1b_legacy_names():
    c = load_config(f"{CONFIGS}/gemma-3-1b-it.json")
    assert c.generation == 3 and c.use_qk_norm
    assert [i for i, t in enumerate(c.layer_types) if t == FULL] == [5, 11, 17, 23]  # (i + 1) % 6 == 0
    assert (c.rope_global.theta, c.rope_local.theta) == (1e6, 1e4)
    assert c.rope_global.linear_factor == 1.0
    assert c.eos_token_id == (1, 106)
    assert round(c.expected_parameters() / 1e9, 2) == 1.00


def test_gemma_3_4b_sparse_nested():
    """text_config lists six fields; the rest are Gemma3TextConfig's defaults."""
    c = load_config(f"{CONFIGS}/gemma-3-4b-it.json")
    assert c.nested and c.model_type == "gemma3_text"
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.vocab_size) == (8, 4, 256, 262208)
    assert c.query_pre_attn_scalar == 256 and c.rms_norm_eps == 1e-6
    assert c.rope_global.theta == 1e6 and c.rope_global.linear_factor == 8.0  # global layers scaled
    assert c.rope_local.theta == 1e4 and c.rope_local.linear_factor == 1.0  # local layers not
    assert sum(t == FULL for t in c.layer_types) == 5 and c.sliding_window == 1024
    assert c.storage_dtype == "bfloat16"  # top-level torch_dtype carried into the text model


def test_current_rope_parameters_form():
    raw = json.load(open(f"{CONFIGS}/gemma-3-1b-it.json"))
    for k in ("rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern", "torch_dtype"):
        raw.pop(k)
    raw["dtype"] = "bfloat16"
    raw["layer_types"] = [SLIDING, FULL] * 13
    raw["rope_parameters"] = {FULL: {"rope_type": "linear", "factor": 4.0, "rope_theta": 5e5},
                              SLIDING: {"rope_type": "default", "rope_theta": 2e4}}
    c = config_from_dict(raw)
    assert c.rope_global.theta == 5e5 and c.rope_global.linear_factor == 4.0
    assert c.rope_local.theta == 2e4 and c.rope_local.linear_factor == 1.0
    assert c.layer_types[:2] == (SLIDING, FULL) and c.storage_dtype == "bfloat16"


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(model_type="mistral"), "unknown model_type 'mistral'"),
    (lambda r: r.update(model_type="recurrent_gemma"), "Gemma 1 family.*different architecture"),
    (lambda r: r.update(model_type="embedding_gemma2"), "encoder"),
    (lambda r: r.update(num_key_value_heads=3), "multiple of num_key_value_heads"),
    (lambda r: r.update(hidden_size="big"), "hidden_size must be an integer"),
    (lambda r: r.update(hidden_activation="relu"), "not Gemma's GELU"),
    (lambda r: r.update(rope_scaling={"rope_type": "yarn", "factor": 2}), "rope type 'yarn' is not supported"),
    (lambda r: r.update(layer_types=[FULL]), "layer_types must list 26"),
    (lambda r: r.update(torch_dtype="int8"), "dtype 'int8'"),
])
def test_bad_configs(edit, message):
    raw = json.load(open(f"{CONFIGS}/gemma-3-1b-it.json"))
    edit(raw)
    with pytest.raises(InputError, match=message):
        config_from_dict(raw, source="x/config.json")


def test_config_must_be_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        load_config(tmp_path)


@pytest.mark.parametrize("name", KNOWN_VARIANTS)
def test_registry_round_trips(name):
    assert match_variant(config_from_dict(variant_config_json(name))) == name
