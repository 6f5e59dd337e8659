"""GPTQ and AWQ: recognition from real-world configs, NumPy dequantization against the libraries' own code.

The oracles ran once in tests/make_quant_oracles.py (GPTQModel ``convert_gptq_file`` on AutoGPTQ-packed
layers; AutoAWQ ``from_linear`` packing and ``dequantize_gemm``) and their outputs are committed in
tests/data/quant/{gptq,awq}_oracle.safetensors: these tests need neither library. The end-to-end tests
write a quantized copy of a tiny Gemma 2 with this file's NumPy packers (checked here against the oracle
fixtures' layout) and run ``gemma-release verify VARIANT --against ORIGINAL``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from conftest import MODELS, golden_prompts
from release.errors import InputError
from release.weights.quant import awq, gptq
from release.weights.quant.gptq import pack_last, unpack_last

QUANT = Path(__file__).resolve().parent / "data" / "quant"
CASE = "gemma2_gqa_softcap"
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def oracle(fmt: str) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """The committed oracle fixture: case -> quantization_config (with its layer shape), and every array."""
    path = QUANT / f"{fmt}_oracle.safetensors"
    with safe_open(str(path), "numpy") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    return meta, load_file(str(path))


GPTQ_META, GPTQ_ARRAYS = oracle("gptq")
AWQ_META, AWQ_ARRAYS = oracle("awq")


def scheme_and_getter(mod, meta: dict, arrays: dict, case: str, **override):
    cfg = dict(meta[case])
    shape = tuple(cfg.pop("shape"))
    cfg.update(override)
    tensors = {k: v for k, v in arrays.items() if k.startswith(case + ".")}
    return mod.recognise({"quantization_config": cfg}, set(tensors)), tensors, shape


# ------------------------------------------------------------------------------------------------------------
# GPTQ against GPTQModel
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(GPTQ_META))
def test_gptq_is_bit_exact_with_gptqmodel(case):
    scheme, tensors, shape = scheme_and_getter(gptq, GPTQ_META, GPTQ_ARRAYS, case)
    got = gptq.dequantize(scheme, case, tensors.__getitem__, shape)
    want = GPTQ_ARRAYS[f"{case}.expected"]
    assert got.dtype == np.float32 and got.shape == shape
    assert np.array_equal(got, want)  # bit for bit
    rows = np.array([shape[0] - 1, 0, 17, 5])
    assert np.array_equal(gptq.dequantize(scheme, case, tensors.__getitem__, shape, rows=rows), want[rows])
    assert np.array_equal(gptq.dequantize(scheme, case, tensors.__getitem__, shape, rows=slice(8, 24)), want[8:24])


def test_gptq_fixture_covers_the_edge_cases():
    cases = {c: m for c, m in GPTQ_META.items()}
    assert {m["bits"] for m in cases.values()} == {2, 3, 4, 8}
    assert any(m["desc_act"] for m in cases.values()) and any(not m["sym"] for m in cases.values())
    assert {m["checkpoint_format"] for m in cases.values()} == {"gptq", "gptq_v2"}
    assert any(m["group_size"] == -1 for m in cases.values())
    g = GPTQ_ARRAYS["b3_g32_sym_descact_v1.g_idx"]
    assert not np.array_equal(g, np.arange(g.size) // 32) and np.bincount(g).tolist() == [32] * 4  # a permutation


def test_gptq_v1_zero_offset_and_v2_agree():
    """v1 stores zero - 1 per field: read as v2 the same words give weights shifted by one scale."""
    case = "b4_g32_asym_zero0_v1"
    s1, tensors, shape = scheme_and_getter(gptq, GPTQ_META, GPTQ_ARRAYS, case)
    s2, _, _ = scheme_and_getter(gptq, GPTQ_META, GPTQ_ARRAYS, case, checkpoint_format="gptq_v2")
    assert (s1.method, s1.details["zero_offset"], s2.method, s2.details["zero_offset"]) == ("gptq", 1, "gptq_v2", 0)
    v1 = gptq.dequantize(s1, case, tensors.__getitem__, shape)
    v2 = gptq.dequantize(s2, case, tensors.__getitem__, shape)
    stored = unpack_last(tensors[f"{case}.qzeros"], 4, shape[0])  # [G, out]
    real = (stored.astype(int) + 1) & 15  # GPTQModel _shift_gptq_qzeros(delta=1)
    assert (real == 0).any()  # the wrap-around (stored 15 -> zero 0) is exercised
    scales = tensors[f"{case}.scales"].astype(np.float32)
    g = np.arange(shape[1]) // 32
    np.testing.assert_array_equal(v2 - v1, ((real - stored.astype(int))[g] * scales[g]).T.astype(np.float32))


def test_gptq_three_bit_codes_straddle_words_like_autogptq():
    """AutoGPTQ's 3-bit rows: code 10 is word0 bits 30-31 + word1 bit 0, code 21 word1 bit 31 + word2 bits 0-1."""
    codes = np.arange(32) % 8
    words = pack_last(codes[None], 3)[0].view(np.uint32).astype(np.uint64)
    assert words.shape == (3,)
    assert (words[0] >> 30) | ((words[1] & 1) << 2) == codes[10]
    assert (words[1] >> 31) | ((words[2] & 3) << 1) == codes[21]
    assert [(int(words[2]) >> (2 + 3 * k)) & 7 for k in range(10)] == codes[22:].tolist()


def test_gptq_packer_reproduces_the_oracle_layout():
    """The NumPy packer used for the end-to-end variants writes what AutoGPTQ wrote (so the e2e tests mean something)."""
    for case in ("b3_g32_sym_descact_v1", "b8_perchannel_sym_v1", "b2_g64_asym_v2"):
        bits = GPTQ_META[case]["bits"]
        qweight = GPTQ_ARRAYS[f"{case}.qweight"]
        out, in_ = GPTQ_META[case]["shape"]
        codes = unpack_last(qweight.T, bits, in_)  # [out, in]
        assert np.array_equal(pack_last(codes, bits).T, qweight)


# ------------------------------------------------------------------------------------------------------------
# AWQ against AutoAWQ
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(AWQ_META))
def test_awq_matches_autoawq(case):
    scheme, tensors, shape = scheme_and_getter(awq, AWQ_META, AWQ_ARRAYS, case)
    got = awq.dequantize(scheme, case, tensors.__getitem__, shape)
    want = AWQ_ARRAYS[f"{case}.expected"]
    assert got.dtype == np.float32 and got.shape == shape
    assert np.array_equal(got, want)
    if f"{case}.expected_fp16" in AWQ_ARRAYS:  # dequantize_gemm with the stored fp16 scales: our result rounded
        assert np.array_equal(got.astype(np.float16), AWQ_ARRAYS[f"{case}.expected_fp16"])
    rows = np.array([shape[0] - 1, 0, 9, 3])
    assert np.array_equal(awq.dequantize(scheme, case, tensors.__getitem__, shape, rows=rows), want[rows])


def test_awq_gemm_interleaved_nibble_order():
    """A GEMM word whose nibble j holds j: output 8c + k reads nibble AWQ_REVERSE_ORDER[k]."""
    word = sum(j << (4 * j) for j in range(8))
    tensors = {"m.qweight": np.full((32, 1), word, np.uint32).view(np.int32),
               "m.qzeros": np.zeros((1, 1), np.int32), "m.scales": np.ones((1, 8), np.float16)}
    scheme = awq.recognise({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32,
                                                    "zero_point": True, "version": "gemm"}}, {"m.qweight"})
    w = awq.dequantize(scheme, "m", tensors.__getitem__, (8, 32))
    assert w[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    # GEMV packs in order: nibble j of word c is input 8c + j
    tensors = {"m.qweight": np.full((8, 4), word, np.uint32).view(np.int32),
               "m.qzeros": np.zeros((8, 4), np.int32), "m.scales": np.ones((8, 32), np.float16)}
    scheme = awq.recognise({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32,
                                                    "zero_point": True, "version": "gemv"}}, {"m.qweight"})
    assert awq.dequantize(scheme, "m", tensors.__getitem__, (8, 32))[0].tolist() == list(range(8)) * 4


def test_awq_gemv_zero_width_and_padding_follow_autoawq():
    assert [awq.gemv_zeros_width(i, g) for i, g in ((128, 32), (256, 64), (256, 128), (4096, 128), (4096, 64))] == \
        [4, 2, 1, 4, 8]
    case = "gemv_g32"
    s = AWQ_ARRAYS[f"{case}.scales"]
    assert s.shape == (64, 32) and not s[:, 4:].any()  # 4 real groups, 28 padding columns


# ------------------------------------------------------------------------------------------------------------
# Recognition: real configs, unsupported options, not the format
# ------------------------------------------------------------------------------------------------------------

THEBLOKE_GPTQ = {  # TheBloke/*-GPTQ config.json (AutoGPTQ via optimum): no checkpoint_format, so v1
    "bits": 4, "group_size": 128, "damp_percent": 0.1, "desc_act": True, "static_groups": False, "sym": True,
    "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "model", "quant_method": "gptq"}
GPTQMODEL = {  # GPTQModel QuantizeConfig.to_dict() (gptqmodel/quantization/config.py)
    "bits": 4, "group_size": 128, "desc_act": False, "lm_head": False, "method": "gptq", "quant_method": "gptq",
    "format": "gptq_v2", "checkpoint_format": "gptq_v2", "pack_dtype": "int32", "dynamic": {"-:.*lm_head": {}},
    "meta": {"quantizer": ["gptqmodel:5.0.0"], "uri": "https://github.com/modelcloud/gptqmodel",
             "damp_percent": 0.05, "damp_auto_increment": 0.01, "static_groups": False, "true_sequential": True,
             "mse": 0.0}, "sym": False}
HUGGING_QUANTS_AWQ = {  # hugging-quants/*-AWQ-INT4 config.json
    "backend": "autoawq", "bits": 4, "do_fuse": False, "fuse_max_seq_len": None, "group_size": 128,
    "modules_to_fuse": None, "modules_to_not_convert": None, "quant_method": "awq", "version": "gemm",
    "zero_point": True}
NAMES = {"model.layers.0.self_attn.q_proj.qweight", "model.embed_tokens.weight"}


def test_recognise_real_world_configs():
    s = gptq.recognise({"quantization_config": THEBLOKE_GPTQ}, NAMES)
    assert (s.format, s.method, s.bits, s.group_size, s.details["desc_act"]) == ("gptq", "gptq", 4, 128, True)
    assert s.label == "gptq gptq 4-bit g128"
    s = gptq.recognise({"quantization_config": GPTQMODEL}, NAMES)
    assert (s.method, s.details["sym"], s.details["zero_offset"]) == ("gptq_v2", False, 0)
    s = awq.recognise({"quantization_config": HUGGING_QUANTS_AWQ}, NAMES)
    assert (s.format, s.method, s.bits, s.group_size) == ("awq", "awq-gemm", 4, 128)
    # AutoAWQ's own quant_config.json field names
    s = awq.recognise({"quantization_config": {"quant_method": "awq", "w_bit": 4, "q_group_size": 64,
                                               "zero_point": True, "version": "GEMV"}}, NAMES)
    assert (s.method, s.group_size) == ("awq-gemv", 64)


def test_recognise_what_transformers_writes():
    transformers = pytest.importorskip("transformers")
    cfg = json.loads(transformers.GPTQConfig(bits=3, group_size=-1, desc_act=True, sym=False,
                                             format="gptq_v2").to_json_string())  # as config.json holds it
    s = gptq.recognise({"quantization_config": cfg}, NAMES)
    assert (s.bits, s.group_size, s.method, s.details["desc_act"]) == (3, None, "gptq_v2", True)
    cfg = transformers.AwqConfig(bits=4, group_size=32, version="gemv").to_dict()  # enums, before JSON
    s = awq.recognise({"quantization_config": cfg}, NAMES)
    assert (s.method, s.group_size) == ("awq-gemv", 32)


@pytest.mark.parametrize("mod, change, words", [
    (gptq, {"bits": 5}, ["gptq bits 5", "2, 3, 4, 8"]),
    (gptq, {"bits": 6}, ["gptq bits 6"]),
    (gptq, {"checkpoint_format": "marlin"}, ["gptq checkpoint_format 'marlin'"]),
    (gptq, {"checkpoint_format": "gptq_p"}, ["'gptq_p'"]),
    (gptq, {"format": "bitblas", "checkpoint_format": None}, ["'bitblas'"]),
    (gptq, {"is_marlin_format": True}, ["is_marlin_format"]),
    (gptq, {"pack_dtype": "int16"}, ["pack_dtype 'int16'"]),
    (gptq, {"group_size": 0}, ["group_size 0"]),
    (gptq, {"rotation": "hadamard"}, ["rotation 'hadamard'"]),
    (gptq, {"dynamic": {r"+:.*down_proj": {"bits": 8}}}, ["dynamic override", "bits"]),
    (awq, {"version": "gemv_fast"}, ["awq version 'gemv_fast' is not supported"]),
    (awq, {"version": "marlin"}, ["awq version 'marlin'"]),
    (awq, {"version": "llm-awq"}, ["'llm-awq'"]),
    (awq, {"bits": 3}, ["awq bits 3", "supported: 4"]),
    (awq, {"bits": 8}, ["awq bits 8"]),
    (awq, {"zero_point": False}, ["awq zero_point False"]),
    (awq, {"version": "gemv", "group_size": 16}, ["gemv group_size 16"]),
])
def test_unsupported_options_are_named(mod, change, words):
    base = dict(THEBLOKE_GPTQ if mod is gptq else HUGGING_QUANTS_AWQ)
    base.update(change)
    with pytest.raises(InputError) as e:
        mod.recognise({"quantization_config": base}, NAMES)
    for w in words:
        assert w in str(e.value)


def test_not_this_format_is_none():
    for mod in (gptq, awq):
        assert mod.recognise({"model_type": "gemma2"}, NAMES) is None
        assert mod.recognise({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}, NAMES) is None
        assert mod.recognise({"quantization": {"group_size": 64, "bits": 4}}, NAMES) is None  # MLX
    assert gptq.recognise({"quantization_config": HUGGING_QUANTS_AWQ}, NAMES) is None
    assert awq.recognise({"quantization_config": THEBLOKE_GPTQ}, NAMES) is None


def test_a_config_without_packed_tensors_is_refused():
    with pytest.raises(InputError, match="no .qweight"):
        gptq.recognise({"quantization_config": THEBLOKE_GPTQ}, {"model.layers.0.mlp.down_proj.weight"})
    with pytest.raises(InputError, match="no .qweight"):
        awq.recognise({"quantization_config": HUGGING_QUANTS_AWQ}, {"model.layers.0.mlp.down_proj.weight"})


# ------------------------------------------------------------------------------------------------------------
# Which tensors belong to which layer, on a realistic Gemma name set
# ------------------------------------------------------------------------------------------------------------


def gemma_names(tensors: tuple[str, ...], layers: int = 2, prefix: str = "model.") -> set[str]:
    names = {f"{prefix}embed_tokens.weight", f"{prefix}norm.weight"}
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        names |= {p + n for n in ("input_layernorm.weight", "post_attention_layernorm.weight",
                                  "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight")}
        names |= {f"{p}{lin}.{t}" for lin in LINEARS for t in tensors}
    return names


def test_quantized_modules_and_stored_names_on_gemma_names():
    names = gemma_names(("qweight", "qzeros", "scales", "g_idx"), prefix="model.language_model.")
    s = gptq.recognise({"quantization_config": THEBLOKE_GPTQ}, names)
    mods = gptq.quantized_modules(s, names)
    assert len(mods) == 14 and "model.language_model.layers.1.mlp.down_proj" in mods
    assert gptq.stored_names(s, "model.language_model.layers.0.self_attn.o_proj", names) == {
        f"model.language_model.layers.0.self_attn.o_proj.{t}" for t in ("qweight", "qzeros", "scales", "g_idx")}
    accounted = set().union(*(gptq.stored_names(s, m, names) for m in mods))
    assert sorted(names - accounted) == sorted(n for n in names if "norm" in n or "embed" in n)

    names = gemma_names(("qweight", "qzeros", "scales"))
    s = awq.recognise({"quantization_config": HUGGING_QUANTS_AWQ}, names)
    mods = awq.quantized_modules(s, names)
    assert len(mods) == 14
    assert awq.stored_names(s, "model.layers.1.mlp.up_proj", names) == {
        f"model.layers.1.mlp.up_proj.{t}" for t in ("qweight", "qzeros", "scales")}
    s = awq.recognise({"quantization_config": {**HUGGING_QUANTS_AWQ, "modules_to_not_convert": ["down_proj"]}}, names)
    with pytest.raises(InputError, match="down_proj is stored quantized but modules_to_not_convert"):
        awq.quantized_modules(s, names)


# ------------------------------------------------------------------------------------------------------------
# Damaged tensors
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mod, meta, arrays, case, tensor, damage, words", [
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_sym_v1", "qweight", lambda a: a[:-1], ["b4_g32_sym_v1.qweight", "[15, 64]"]),
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b3_g32_sym_descact_v1", "qweight", lambda a: a[:, :-1], ["qweight", "shape"]),
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_sym_v1", "qzeros", lambda a: a[:, :-1], ["b4_g32_sym_v1.qzeros"]),
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_sym_v1", "scales", lambda a: a[:2], ["b4_g32_sym_v1.scales"]),
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_sym_v1", "scales", lambda a: a.astype(np.int16), ["scales", "dtype int16"]),
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_sym_v1", "g_idx", lambda a: a[:-3], ["b4_g32_sym_v1.g_idx", "[125]"]),
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_sym_v1", "g_idx", lambda a: a + 2, ["g_idx holds group 5", "0..3"]),
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_sym_v1", "qweight", lambda a: a.astype(np.float32), ["dtype float32"]),
    (awq, AWQ_META, AWQ_ARRAYS, "gemm_g32", "qweight", lambda a: a[:-1], ["gemm_g32.qweight", "[127, 8]"]),
    (awq, AWQ_META, AWQ_ARRAYS, "gemm_g32", "qzeros", lambda a: a.reshape(-1)[:-1], ["gemm_g32.qzeros"]),
    (awq, AWQ_META, AWQ_ARRAYS, "gemv_g64", "scales", lambda a: a[:, :8], ["gemv_g64.scales"]),
    (awq, AWQ_META, AWQ_ARRAYS, "gemv_g64", "qweight", lambda a: a.T, ["gemv_g64.qweight"]),
])
def test_truncated_or_misshapen_tensors_are_named(mod, meta, arrays, case, tensor, damage, words):
    scheme, tensors, shape = scheme_and_getter(mod, meta, arrays, case)
    tensors[f"{case}.{tensor}"] = damage(tensors[f"{case}.{tensor}"])
    with pytest.raises(InputError) as e:
        mod.dequantize(scheme, case, tensors.__getitem__, shape)
    for w in words:
        assert w in str(e.value)


def test_a_missing_tensor_is_named():
    scheme, tensors, shape = scheme_and_getter(gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_sym_v1")
    del tensors["b4_g32_sym_v1.qzeros"]
    with pytest.raises(InputError, match=r"b4_g32_sym_v1\.qzeros is missing"):
        gptq.dequantize(scheme, "b4_g32_sym_v1", tensors.__getitem__, shape)
    del tensors["b4_g32_sym_v1.g_idx"]  # g_idx is optional without desc_act: i // group_size
    tensors["b4_g32_sym_v1.qzeros"] = GPTQ_ARRAYS["b4_g32_sym_v1.qzeros"]
    assert np.array_equal(gptq.dequantize(scheme, "b4_g32_sym_v1", tensors.__getitem__, shape),
                          GPTQ_ARRAYS["b4_g32_sym_v1.expected"])


@pytest.mark.parametrize("mod, meta, arrays, case", [
    (gptq, GPTQ_META, GPTQ_ARRAYS, "b4_g32_asym_descact_v1"),
    (awq, AWQ_META, AWQ_ARRAYS, "gemm_g32"),
    (awq, AWQ_META, AWQ_ARRAYS, "gemv_g32"),
])
def test_damaged_scales_change_the_weights(mod, meta, arrays, case):
    """The checks can fail: one group's scales zeroed zero that group's weights, and only those."""
    scheme, tensors, shape = scheme_and_getter(mod, meta, arrays, case)
    good = mod.dequantize(scheme, case, tensors.__getitem__, shape)
    scales = tensors[f"{case}.scales"].copy()
    gemv = scheme.method == "awq-gemv"
    if gemv:
        scales[:, 1] = 0  # [out, groups]
    else:
        scales[1] = 0  # [groups, out]
    tensors[f"{case}.scales"] = scales
    bad = mod.dequantize(scheme, case, tensors.__getitem__, shape)
    changed = bad != good
    assert changed.any() and not bad[changed].any()
    if mod is gptq:
        in_group = tensors[f"{case}.g_idx"] == 1
    else:
        in_group = np.arange(shape[1]) // scheme.group_size == 1
    assert not changed[:, ~in_group].any()


# ------------------------------------------------------------------------------------------------------------
# End to end: a GPTQ / AWQ copy of a tiny Gemma 2 through `verify VARIANT --against ORIGINAL`
# ------------------------------------------------------------------------------------------------------------


def rtn(w: np.ndarray, bits: int, group: int, sym: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-to-nearest per group along in, GPTQ's quantizer grid.  w [out, in] -> codes [out, in], zeros, fp16 scales [out, G]"""
    out, in_ = w.shape
    maxq = 2 ** bits - 1
    g = w.reshape(out, in_ // group, group)
    lo, hi = np.minimum(g.min(-1), 0), np.maximum(g.max(-1), 0)
    if sym:  # GPTQ's sym: symmetric range, zero in the middle
        hi = np.maximum(-lo, hi)
        lo = -hi
    scale = ((hi - lo) / maxq).astype(np.float16).astype(np.float32)
    scale[scale == 0] = 1
    zero = np.full(scale.shape, (maxq + 1) // 2) if sym else np.clip(np.round(-lo / scale), 0, maxq)
    q = np.clip(np.round(g / scale[..., None]) + zero[..., None], 0, maxq).reshape(out, in_)
    return q.astype(np.int64), zero.astype(np.int64), scale.astype(np.float16)


def write_variant(dst: Path, fmt: str, bits: int, group: int = 32, zero_layers: tuple[int, ...] = ()) -> Path:
    """A GPTQ (v1, sym) or AWQ (GEMM) copy of the tiny Gemma 2, as AutoGPTQ / AutoAWQ lay it out.

    ``zero_layers``: decoder blocks whose scales are all zeroed (the damaged variant)."""
    src = MODELS / CASE
    shutil.copytree(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    out_tensors = {}
    for name, t in tensors.items():
        module = name[: -len(".weight")]
        if not (name.endswith(".weight") and module.endswith(LINEARS)):
            out_tensors[name] = t
            continue
        w = t.astype(np.float32)
        out, in_ = w.shape
        q, zero, scale = rtn(w, bits, group, sym=fmt == "gptq")
        if any(f".layers.{i}." in name for i in zero_layers):
            scale = np.zeros_like(scale)
        if fmt == "gptq":
            out_tensors[f"{module}.qweight"] = pack_last(q, bits).T.copy()  # [in * bits / 32, out]
            out_tensors[f"{module}.qzeros"] = pack_last((zero.T - 1) & (2 ** bits - 1), bits)  # v1: zero - 1
            out_tensors[f"{module}.scales"] = scale.T.copy()  # [G, out]
            out_tensors[f"{module}.g_idx"] = (np.arange(in_) // group).astype(np.int32)
        else:
            order = (np.arange(out) // 8) * 8 + np.array(awq.AWQ_ORDER)[np.arange(out) % 8]  # output in each nibble
            out_tensors[f"{module}.qweight"] = pack_last(q.T[:, order], 4)  # [in, out / 8]
            out_tensors[f"{module}.qzeros"] = pack_last(zero.T[:, order], 4)  # [G, out / 8]
            out_tensors[f"{module}.scales"] = scale.T.copy()
    save_file(out_tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text())
    if fmt == "gptq":
        config["quantization_config"] = {**THEBLOKE_GPTQ, "bits": bits, "group_size": group, "desc_act": False}
    else:
        config["quantization_config"] = {**HUGGING_QUANTS_AWQ, "group_size": group}
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def test_the_e2e_writer_matches_the_oracle_layout():
    """write_variant's AWQ packing is AutoAWQ's: dequantizing a GEMM fixture's codes through it gives them back."""
    case = "gemm_g32"
    scheme, tensors, shape = scheme_and_getter(awq, AWQ_META, AWQ_ARRAYS, case)
    nat = unpack_last(tensors[f"{case}.qweight"], 4, shape[0])  # [in, out] in nibble order
    order = (np.arange(shape[0]) // 8) * 8 + np.array(awq.AWQ_ORDER)[np.arange(shape[0]) % 8]
    codes = np.empty_like(nat)
    codes[:, order] = nat  # back to output order
    assert np.array_equal(pack_last(codes[:, order], 4), tensors[f"{case}.qweight"])


def id_args() -> list[str]:
    """The golden prompts' token ids (the tiny fixture has no tokenizer to encode text prompts with)."""
    return [a for ids, _ in golden_prompts(CASE) for a in ("--ids", ",".join(map(str, ids.tolist())))]




@pytest.mark.parametrize("fmt, bits", [("gptq", 8), ("gptq", 4), ("awq", 4)])
def test_verify_a_quantized_variant_against_its_original(cli, tmp_path, fmt, bits):
    variant = write_variant(tmp_path / f"{fmt}{bits}", fmt, bits)
    r = cli("verify", variant, "--against", MODELS / CASE, *id_args())
    assert r.code == 0, r.out + r.err
    assert fmt in r.out


#: A bound between what the tiny fixture gives a clean variant and one with a block's scales zeroed. Its random
#: weights barely steer its logits (Gemma 2's post-norms cancel any scaling, and zeroing *every* layer's scales
#: gives a mean KL of only 0.0098), so the 4-bit default bound (0.1) cannot tell; measured: clean 8-bit 2.1e-6,
#: clean 4-bit 3.8e-4 (AWQ) / 5.2e-4 (GPTQ), block 0 zeroed 2.2e-3 (8-bit) / 2.5e-3 (AWQ 4-bit).
TIGHT = ("--max-mean-kl", "0.001")


@pytest.mark.parametrize("fmt, bits", [("gptq", 8), ("awq", 4)])
def test_verify_fails_a_variant_with_one_block_of_scales_zeroed(cli, tmp_path, fmt, bits):
    clean = write_variant(tmp_path / "clean", fmt, bits)
    assert cli("verify", clean, "--against", MODELS / CASE, *id_args(), *TIGHT).code == 0
    damaged = write_variant(tmp_path / "damaged", fmt, bits, zero_layers=(0,))
    r = cli("verify", damaged, "--against", MODELS / CASE, *id_args(), *TIGHT)
    assert r.code == 1, r.out + r.err


def test_verify_fails_an_8bit_variant_with_every_scale_zeroed_at_default_bounds(cli, tmp_path):
    variant = write_variant(tmp_path / "gptq", "gptq", 8, zero_layers=(0, 1, 2, 3))
    r = cli("verify", variant, "--against", MODELS / CASE, *id_args())
    assert r.code == 1, r.out + r.err


def test_verify_names_a_truncated_packed_tensor(cli, tmp_path):
    variant = write_variant(tmp_path / "gptq", "gptq", 4)
    tensors = load_file(str(variant / "model.safetensors"))
    name = "model.layers.2.mlp.down_proj.qweight"
    tensors[name] = tensors[name][:-1].copy()
    save_file(tensors, str(variant / "model.safetensors"))
    r = cli("verify", variant, "--against", MODELS / CASE, *id_args())
    assert r.code == 2 and name in r.out + r.err
