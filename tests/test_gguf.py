"""GGUF variants: reading llama.cpp's files back into the reference, and their measured fidelity.

Every GGUF here is written at test time from the tiny safetensors fixtures by
tests/gguf_fixtures.py, which converts the way llama.cpp's convert_hf_to_gguf.py
does (gguf's name map, norms stored as 1 + w, the same metadata keys, F16 fallback
for rows that do not fill whole quant blocks). Q8_0 blocks are 32 wide: every fixture's
rows are 64 or 128 long except gemma1_mha_f32's (hidden 48), whose embedding, q/k/v and
gate/up stay F16 there, as llama.cpp would leave them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from gemma_ref import load_model
from gemma_ref.config import load_config
from gemma_ref.model import forward
from release.errors import InputError
from release.weights.gguf_verify import BOUNDS, family, gguf_tolerance, verify_gguf
from release.weights.gguf_reader import GGUFWeights, gguf_tensor_names
from release.weights.golden import PromptSpec
from tests.conftest import CASES as ALL_CASES
from tests.conftest import MODELS, golden_prompts

#: The model types the GGUF path implements (llama.cpp archs gemma, gemma2, gemma3, gemma3n, gemma4); VaultGemma
#: (llama.cpp's vaultgemma converter) has no GGUF path here yet.
GGUF_MODEL_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "gemma4", "gemma4_text",
                    "gemma4_unified")
# ... and not gemma4_per_layer_config, whose config (the per_layer_config form, no global_head_dim)
# llama.cpp's Gemma 4 converter cannot convert (tests/gguf_fixtures.py).
CASES = [c for c in ALL_CASES if c != "gemma4_per_layer_config"
         and json.loads((MODELS / c / "config.json").read_text()).get("model_type") in GGUF_MODEL_TYPES]
# The KL bounds below are the Gemma 1-3 fixtures'; the Gemma 4 and 3n ones are far more sensitive to rounding
# (attention scale 1.0, MoE routing, AltUp) and have their own measured bounds in tests/test_gguf_gemma4.py and
# tests/test_gguf_gemma3n.py.
LOSSY_CASES = [c for c in CASES if not c.startswith(("gemma4", "gemma3n"))]
from tests.gguf_fixtures import write_gguf

TOL = 1e-4  # the reference's bar against transformers, kept for a lossless (F32) GGUF
#: Bounds on the mean KL(original || GGUF) the tiny fixtures must stay under, per type, with headroom over
#: what they measure (README, "GGUF variants"): F16 <= 2e-13, Q8_0 <= 2.4e-4 (gemma2_gqa_softcap: the soft-capped
#: logits make its distributions the least peaked; the others measure <= 4e-9).
MEAN_KL_BOUND = {"F16": 1e-9, "Q8_0": 1e-3}


def ids_of(case: str) -> list[PromptSpec]:
    """The golden file's prompts as id prompts (the tiny fixtures ship no tokenizer)."""
    return [PromptSpec(f"golden-{i}", ids=ids.tolist()) for i, (ids, _) in enumerate(golden_prompts(case))]


def id_args(case: str) -> list[str]:
    return [a for ids, _ in golden_prompts(case) for a in ("--ids", ",".join(map(str, ids.tolist())))]


@pytest.fixture
def make_gguf(tmp_path):
    def make(case: str, qtype: str = "F32", name: str | None = None, **kw) -> Path:
        return write_gguf(MODELS / case, tmp_path / (name or f"{case}.{qtype}.gguf"), qtype, **kw)

    return make


# --- reading: names, shapes, the +1 ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_f32_gguf_matches_the_original_and_transformers(case, make_gguf):
    """Lossless GGUF: the reference on its tensors equals the original, and both match transformers' goldens."""
    cfg = load_config(MODELS / case)
    w = GGUFWeights(make_gguf(case), cfg)
    original = load_model(MODELS / case)
    prompts = golden_prompts(case)
    ours = forward(w, cfg, [ids for ids, _ in prompts])
    for (ids, expected), logits in zip(prompts, ours):
        assert logits.dtype == np.float32 and logits.shape == expected.shape
        assert np.abs(logits - original.forward(ids)).max() <= TOL
        assert np.abs(logits - expected).max() <= TOL  # the independent reference: transformers, float32


def test_norms_are_stored_plus_one_and_read_back_without(make_gguf):
    """llama.cpp stores 1 + w for every norm (Gemma 3's q_norm/k_norm too); the reader subtracts it."""
    case = "gemma3_1b_style"
    path = make_gguf(case)
    raw = {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}
    hf = {k.removeprefix("model."): v.astype(np.float32) for k, v in load_file(str(MODELS / case / "model.safetensors")).items()}
    for rel, gname in (("layers.0.self_attn.q_norm.weight", "blk.0.attn_q_norm.weight"),
                       ("layers.0.self_attn.k_norm.weight", "blk.0.attn_k_norm.weight"),
                       ("layers.3.input_layernorm.weight", "blk.3.attn_norm.weight"),
                       ("layers.3.pre_feedforward_layernorm.weight", "blk.3.ffn_norm.weight"),
                       ("norm.weight", "output_norm.weight")):
        np.testing.assert_array_equal(raw[gname], hf[rel] + np.float32(1))
    w = GGUFWeights(path, load_config(MODELS / case))
    np.testing.assert_array_equal(w.layer(0)["self_attn.q_norm.weight"], hf["layers.0.self_attn.q_norm.weight"])
    np.testing.assert_array_equal(w.final_norm(), hf["norm.weight"])
    np.testing.assert_array_equal(w.layer(0)["self_attn.q_proj.weight"], hf["layers.0.self_attn.q_proj.weight"])


def test_ggml_shape_order_is_reversed_on_a_non_square_tensor(make_gguf):
    """k_proj of the MQA fixture is [16, 64] in HF order; GGML records ne = [64, 16]; we hand back [16, 64]."""
    case = "gemma1_mqa_bf16"
    path = make_gguf(case)
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.1.attn_k.weight")
    assert t.shape.tolist() == [64, 16]
    k = GGUFWeights(path, load_config(MODELS / case)).layer(1)["self_attn.k_proj.weight"]
    expected = load_file(str(MODELS / case / "model.safetensors"))["model.layers.1.self_attn.k_proj.weight"]
    assert k.shape == (16, 64) and k.dtype == np.float32
    np.testing.assert_array_equal(k, expected.astype(np.float32))


def test_names_come_from_the_gguf_package_map():
    """Gemma 1's post_attention_layernorm is llama.cpp's ffn_norm; Gemma 2/3's is post_attention_norm."""
    g1 = gguf_tensor_names(load_config(MODELS / "gemma1_mha_f32"))
    g2 = gguf_tensor_names(load_config(MODELS / "gemma2_gqa_softcap"))
    g3 = gguf_tensor_names(load_config(MODELS / "gemma3_1b_style"))
    assert g1["layers.0.post_attention_layernorm.weight"] == "blk.0.ffn_norm.weight"
    assert g2["layers.0.post_attention_layernorm.weight"] == "blk.0.post_attention_norm.weight"
    assert g2["layers.0.pre_feedforward_layernorm.weight"] == "blk.0.ffn_norm.weight"
    assert g3["layers.5.self_attn.k_norm.weight"] == "blk.5.attn_k_norm.weight"
    assert g3["embed_tokens.weight"] == "token_embd.weight" and g3["norm.weight"] == "output_norm.weight"


def test_core_reference_does_not_import_gguf():
    code = "import sys, gemma_ref, gemma_ref.model, gemma_ref.weights; assert 'gguf' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_layers_and_embedding_blocks_are_read_lazily(make_gguf):
    cfg = load_config(MODELS / "gemma2_gqa_softcap")
    w = GGUFWeights(make_gguf("gemma2_gqa_softcap", "Q8_0"), cfg)
    assert set(w.layer(2)) == {k.removeprefix("layers.2.") for k in gguf_tensor_names(cfg) if k.startswith("layers.2.")}
    blocks = list(w.embedding_blocks(200))
    assert [(s, b.shape) for s, b in blocks] == [(0, (200, 64)), (200, (200, 64)), (400, (112, 64))]


# --- the +1, wrong ----------------------------------------------------------------------------------


def test_gguf_without_the_plus_one_fails_clearly(cli, make_gguf):
    case = "gemma3_1b_style"
    path = make_gguf(case, norm_plus_one=False)
    r = cli("verify", path, "--against", MODELS / case, *id_args(case), "--json")
    report = json.loads(r.out)
    assert r.code == 1 and not report["ok"]
    missing = [f for f in report["findings"] if f["rule"] == "GGUF005"]
    assert len(missing) == 1 and "37 norm weights" in missing[0]["message"]  # 6 layers x 6 norms + the final one
    assert "without the +1" in missing[0]["message"]
    assert report["overall"]["mean_kl"] > 0.1 or report["overall"]["top1_agreement"] < 0.5


def test_reading_without_the_correction_fails_clearly(make_gguf):
    case = "gemma2_gqa_softcap"
    report = verify_gguf(make_gguf(case), MODELS / case, ids_of(case), norm_plus_one=False)
    assert not report.ok
    assert any(f.rule == "GGUF005" and "still in them" in f.message for f in report.findings)
    assert report.mean_kl > 0.1


# --- fidelity of lossy types ------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ["F16", "Q8_0"])
@pytest.mark.parametrize("case", LOSSY_CASES)
def test_lossy_types_within_documented_kl_bounds(case, qtype, make_gguf):
    report = verify_gguf(make_gguf(case, qtype), MODELS / case, ids_of(case))
    assert report.ok, [f.message for f in report.findings]
    assert report.mean_kl <= MEAN_KL_BOUND[qtype]
    assert report.top1_agreement == 1.0
    assert report.mean_kl <= report.tolerance.max_mean_kl  # the default bounds for the type hold too


def test_q8_0_falls_back_to_f16_where_rows_do_not_fill_blocks(make_gguf):
    """gemma1_mha_f32's rows of 48 are not a multiple of Q8_0's 32: llama.cpp keeps those tensors in F16."""
    w = GGUFWeights(make_gguf("gemma1_mha_f32", "Q8_0"), load_config(MODELS / "gemma1_mha_f32"))
    types = {t.name: t.tensor_type.name for t in w.reader.tensors}
    assert types["token_embd.weight"] == "F16" and types["blk.0.attn_q.weight"] == "F16"
    assert types["blk.0.attn_output.weight"] == "Q8_0" and types["blk.0.ffn_down.weight"] == "Q8_0"  # rows of 64, 96
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert w.describe()["quant"] == "Q8_0"  # general.file_type, as the converter writes it


def test_default_bounds_per_type_family():
    assert family("Q4_K_M") == "4-bit" and family("IQ2_XXS") == "2-bit" and family("BF16") == "float"
    assert family("Q8_0") == "8-bit" and family("MXFP4_MOE") == "4-bit"
    kl = [BOUNDS[f][0] for f in ("float", "8-bit", "6-bit", "5-bit", "4-bit", "3-bit", "2-bit", "1-bit")]
    assert kl == sorted(kl)  # fewer bits, looser bound
    t = gguf_tolerance("Q4_K_M", min_top1=0.5)
    assert (t.atol, t.max_mean_kl, t.min_overall_top1) == (None, BOUNDS["4-bit"][0], 0.5)
    with pytest.raises(InputError, match="--max-mean-kl"):
        family("XYZ")


# --- metadata -----------------------------------------------------------------------------------------------


def test_every_metadata_mismatch_is_reported(cli, make_gguf):
    case = "gemma2_gqa_softcap"
    path = make_gguf(case, metadata={"{arch}.attention.layer_norm_rms_epsilon": 1e-5, "{arch}.block_count": 5,
                                     "{arch}.attention.sliding_window": 8,
                                     "{arch}.final_logit_softcapping": None,
                                     "{arch}.rope.freq_base": 500000.0})
    r = cli("verify", path, "--against", MODELS / case, *id_args(case), "--json")
    report = json.loads(r.out)
    assert r.code == 1, r.err
    messages = [f["message"] for f in report["findings"] if f["rule"] in ("GGUF001", "GGUF002")]
    for key in ("layer_norm_rms_epsilon", "block_count", "sliding_window", "final_logit_softcapping", "rope.freq_base"):
        assert sum(key in m for m in messages) == 1, (key, messages)
    assert report["overall"]["mean_kl"] < 1e-9  # the weights are right: the metadata alone fails it


def test_missing_keys_fall_back_to_llama_cpp_defaults(make_gguf):
    """gemma1_mha_f32 has 4 heads of 16 in a hidden size of 48: without key_length llama.cpp would use 12."""
    case = "gemma1_mha_f32"
    path = make_gguf(case, metadata={"{arch}.attention.key_length": None, "{arch}.attention.head_count_kv": None})
    findings = GGUFWeights(path, load_config(MODELS / case)).findings
    assert [f.rule for f in findings] == ["GGUF001"]  # head_count_kv's default (= head_count) fits this MHA model
    assert "default 12" in findings[0].message and "head_dim is 16" in findings[0].message


def test_architecture_mismatch_and_llama_cpp_assumptions(make_gguf):
    case = "gemma3_rope_linear"  # 2 layers, local then global; query_pre_attn_scalar 32 != head_dim 16
    findings = GGUFWeights(make_gguf(case, metadata={"general.architecture": "gemma2"}), load_config(MODELS / case)).findings
    assert any(f.rule == "GGUF001" and "general.architecture is 'gemma2'" in f.message for f in findings)
    clean = GGUFWeights(make_gguf(case, name="ok.gguf"), load_config(MODELS / case)).findings
    assert {f.rule for f in clean} == {"GGUF003"}
    text = " ".join(f.message for f in clean)
    assert "16 ** -0.5" in text and "every 6th layer" in text
    # A file that states its layer pattern is held to it instead.
    said = GGUFWeights(make_gguf(case, name="p2.gguf", metadata={"{arch}.attention.sliding_window_pattern": 2}),
                       load_config(MODELS / case)).findings
    assert not any("layer" in f.message and "global" in f.message for f in said)
    wrong = GGUFWeights(make_gguf(case, name="p6.gguf", metadata={"{arch}.attention.sliding_window_pattern": 6}),
                        load_config(MODELS / case)).findings
    assert any(f.rule == "GGUF001" and "sliding_window_pattern is 6" in f.message for f in wrong)


def test_trimmed_vocabulary_is_compared_over_the_rows_it_keeps(cli, make_gguf):
    """llama.cpp's Gemma 3 converter drops the embedding rows past the tokenizer (262144 of 262208)."""
    case = "gemma3_1b_style"
    path = make_gguf(case, vocab_rows=500)
    report = verify_gguf(path, MODELS / case, [PromptSpec("p", ids=[2, 17, 499, 3])])
    assert report.ok and report.max_abs_diff <= TOL
    assert any(f.rule == "GGUF004" and "500 of the original's 512" in f.message for f in report.findings)
    r = cli("verify", path, "--against", MODELS / case, "--ids", "2,17,505")
    assert r.code == 2 and "token id 505 has no row" in r.err and str(path) in r.err


def test_untied_output_head_is_used_as_llama_cpp_would(make_gguf):
    case = "gemma2_gqa_softcap"
    emb = load_file(str(MODELS / case / "model.safetensors"))["model.embed_tokens.weight"].astype(np.float32)
    report = verify_gguf(make_gguf(case, extra={"output.weight": emb * np.float32(3)}), MODELS / case, ids_of(case))
    assert any(f.rule == "GGUF004" and "output.weight is present" in f.message for f in report.findings)
    assert report.max_abs_diff > 1.0  # the tripled head is what the GGUF runs


# --- bad input: exit 2, the file named --------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "header only"])
def test_broken_gguf_exits_2_naming_the_file(cli, make_gguf, tmp_path, damage):
    case = "gemma2_gqa_softcap"
    good = make_gguf(case, "Q8_0").read_bytes()
    bad = tmp_path / "broken.gguf"
    bad.write_bytes({"truncated": good[: len(good) // 2], "garbage": bytes(range(256)) * 4, "empty": b"",
                     "header only": good[:24]}[damage])
    r = cli("verify", bad, "--against", MODELS / case, "--ids", "2,5")
    assert r.code == 2 and "Traceback" not in r.err
    assert str(bad) in r.err and "not a readable GGUF file" in r.err


def test_missing_tensor_wrong_shape_and_unsupported_type_are_bad_input(cli, make_gguf):
    case = "gemma2_gqa_softcap"
    path = make_gguf(case, drop=("blk.1.ffn_up.weight", "blk.0.attn_q.weight"),
                     extra={"blk.0.attn_q.weight": np.zeros((64, 64), dtype=np.int32)})
    r = cli("verify", path, "--against", MODELS / case, "--ids", "2,5")
    assert r.code == 2 and str(path) in r.err
    assert "'blk.1.ffn_up.weight' (layers.1.mlp.up_proj.weight) is missing" in r.err
    assert "'blk.0.attn_q.weight' is I32" in r.err
    r = cli("verify", make_gguf("gemma2_gqa_softcap", name="g2.gguf"), "--against", MODELS / "gemma3_1b_style",
            "--ids", "2,5")
    assert r.code == 2 and "has shape [32, 64] (GGML order [64, 32])" in r.err and "is --against right?" in r.err


def test_usage_errors(cli, make_gguf):
    case = "gemma2_gqa_softcap"
    path = make_gguf(case)
    assert cli("verify", path, "--ids", "2,5").code == 2  # no --against
    assert cli("verify", path, "--against", MODELS / case, "--atol", "1").code == 2
    r = cli("verify", path, "--against", MODELS / case)  # text prompts, but the fixture has no tokenizer
    assert r.code == 2 and "no tokenizer.model" in r.err and "--ids" in r.err


# --- the CLI -----------------------------------------------------------------------------------------------------


def test_cli_pass_json_and_out_file(cli, make_gguf, tmp_path):
    case = "gemma2_gqa_softcap"
    path = make_gguf(case, "Q8_0")
    out = tmp_path / "reports" / "q8.json"
    r = cli("verify", path, "--against", MODELS / case, *id_args(case), "--json", "--out", out)
    assert r.code == 0, r.out + r.err
    report = json.loads(r.out)
    assert report == json.loads(out.read_text())
    assert report["kind"] == "gguf" and report["ok"] and report["verdict"].startswith("PASS")
    assert report["variant"]["file"] == path.name and report["variant"]["quant"] == "Q8_0"
    assert report["tolerance"]["max_mean_kl"] == BOUNDS["8-bit"][0] and report["tolerance"]["atol"] is None
    assert [p["n_tokens"] for p in report["prompts"]] == [len(ids) for ids, _ in golden_prompts(case)]
    assert 0 < report["overall"]["mean_kl"] < 1e-3 and report["overall"]["top1_agreement"] == 1.0
    text = cli("verify", path, "--against", MODELS / case, *id_args(case))
    assert text.code == 0 and "PASS" in text.out and "mean KL" in text.out and "Q8_0" in text.out


def test_cli_fails_with_exit_1_on_a_tight_bound(cli, make_gguf):
    case = "gemma2_gqa_softcap"
    path = make_gguf(case, "Q8_0")
    r = cli("verify", path, "--against", MODELS / case, *id_args(case), "--max-mean-kl", "1e-6")
    assert r.code == 1 and "FAIL" in r.out and "LOGITS002" in r.out
    assert cli("verify", path, "--against", MODELS / case, *id_args(case), "--max-kl", "1e-9").code == 1
    assert cli("verify", path, "--against", MODELS / case, *id_args(case), "--min-top1", "1.0").code == 0


# --- the variants table's fidelity column ----------------------------------------------------------------------

RELEASE_YAML = """\
repo: org/m
base_model: google/gemma-2-2b
base_model_relation: finetune
files: [README.md]
variants:
  - {format: gguf, quant: Q8_0, repo: org/m-GGUF, file: m.Q8_0.gguf, local_dir: m-GGUF}
  - {format: gguf, quant: F16, repo: org/m-GGUF, file: m.F16.gguf, local_dir: m-GGUF}
"""


@pytest.fixture
def release(tmp_path):
    case = "gemma2_gqa_softcap"
    (tmp_path / "m-GGUF").mkdir()
    q8 = write_gguf(MODELS / case, tmp_path / "m-GGUF" / "m.Q8_0.gguf", "Q8_0")
    write_gguf(MODELS / case, tmp_path / "m-GGUF" / "m.F16.gguf", "F16")
    d = tmp_path  # variants' local_dir lies inside the release directory (release.yaml confines every path)
    (d / "release.yaml").write_text(RELEASE_YAML)
    (d / "README.md").write_text("---\nlicense: gemma\n---\n# m\n")
    return d, q8


def test_variants_table_fidelity_column(cli, release, tmp_path):
    from release.card import variants as V

    d, q8 = release
    report = tmp_path / "q8.json"
    assert cli("verify", q8, "--against", MODELS / "gemma2_gqa_softcap", "--ids", "2,5,9,100", "--out", report).code == 0
    measured = json.loads(report.read_text())["overall"]
    r = cli("variants", "table", d, "--fidelity", report)
    assert r.code == 0, r.err
    header, _, q8_row, f16_row = r.out.strip().splitlines()
    assert header.endswith(f"| {V.FIDELITY_HEADER} |")
    assert q8_row.endswith(f"| {measured['mean_kl']:.2g} nats, {measured['top1_agreement']:.1%} |")
    assert f16_row.endswith("| not measured |")  # no report, no number
    assert "Fidelity" not in cli("variants", "table", d).out  # without --fidelity: the table as before

    assert cli("variants", "table", d, "--write", "--fidelity", report).out.startswith("updated")
    assert cli("variants", "table", d, "--write", "--fidelity", report).out.startswith("unchanged")  # idempotent
    assert "nats" in (d / "README.md").read_text()
    assert [f.rule for f in V.check_variants(d)] == []  # measurements do not make the generated table stale


def test_variants_fidelity_bad_reports(cli, release, tmp_path):
    d, _ = release
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "gguf", "ok": True, "variant": {"file": "x.Q2_K.gguf"},
                                 "overall": {"mean_kl": 0.1, "top1_agreement": 0.9}}))
    r = cli("variants", "table", d, "--fidelity", other)
    assert r.code == 2 and "x.Q2_K.gguf matches no variant file" in r.err
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    r = cli("variants", "table", d, "--fidelity", junk)
    assert r.code == 2 and str(junk) in r.err and "not a GGUF fidelity report" in r.err


# --- split GGUFs (NAME-00001-of-0000N.gguf) --------------------------------------------------------------


def _split(tmp_path, name: str, per_part: int, qtype: str = "Q8_0", case: str = "gemma3_1b_style") -> Path:
    d = tmp_path / name
    d.mkdir()
    return write_gguf(MODELS / case, d / "v.gguf", qtype, split_max_tensors=per_part)


def test_a_split_gguf_reads_as_the_whole_file(tmp_path, make_gguf):
    case = "gemma3_1b_style"
    first = _split(tmp_path, "split", 10)
    assert first.name == "v-00001-of-00008.gguf"
    whole = verify_gguf(make_gguf(case, "Q8_0"), MODELS / case, ids_of(case))
    split = verify_gguf(first, MODELS / case, ids_of(case))
    assert split.ok and split.variant["parts"] == 8 and whole.variant["parts"] == 1
    assert split.variant["bytes"] == sum(p.stat().st_size for p in first.parent.iterdir())
    assert [p.max_abs_diff for p in split.prompts] == [p.max_abs_diff for p in whole.prompts]
    assert split.mean_kl == whole.mean_kl and split.variant["quant"] == "Q8_0"


def test_a_later_part_is_refused_with_the_first_parts_name(cli, tmp_path):
    first = _split(tmp_path, "split", 10)
    r = cli("verify", first.with_name("v-00003-of-00008.gguf"), "--against", MODELS / "gemma3_1b_style", "--ids", "2,5")
    assert r.code == 2 and "part 3 of a 8-part split GGUF" in r.err and "v-00001-of-00008.gguf" in r.err


def test_a_missing_part_is_named(cli, tmp_path):
    first = _split(tmp_path, "split", 10)
    first.with_name("v-00005-of-00008.gguf").unlink()
    r = cli("verify", first, "--against", MODELS / "gemma3_1b_style", "--ids", "2,5")
    assert r.code == 2 and "part 5 of this 8-part split GGUF is missing (v-00005-of-00008.gguf)" in r.err


def test_parts_of_another_split_are_refused(cli, tmp_path):
    first = _split(tmp_path, "a", 10)  # 8 parts
    other = _split(tmp_path, "b", 20)  # 4 parts
    other.with_name("v-00002-of-00004.gguf").replace(first.with_name("v-00002-of-00008.gguf"))
    r = cli("verify", first, "--against", MODELS / "gemma3_1b_style", "--ids", "2,5")
    assert r.code == 2 and "do not make it part 2 of 8" in r.err and "v-00002-of-00008.gguf" in r.err


def test_a_renamed_first_part_is_refused(cli, tmp_path):
    first = _split(tmp_path, "split", 10)
    renamed = first.replace(first.with_name("model.gguf"))
    r = cli("verify", renamed, "--against", MODELS / "gemma3_1b_style", "--ids", "2,5")
    assert r.code == 2 and "not named as llama.cpp names parts" in r.err
