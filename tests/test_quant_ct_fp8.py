"""compressed-tensors and transformers FP8: recognition, NumPy dequantization against the libraries themselves.

Oracles, run live (skipped where the library is missing): compressed-tensors' own compressors
(``PackedQuantizationCompressor`` / ``NaiveQuantizationCompressor`` / ``FloatQuantizationCompressor``
``compress`` then ``decompress``), transformers' FineGrainedFP8 CPU code (``Fp8Quantize._quantize_one``,
``Fp8Dequantize._dequantize_one``, ``_dequantize_fp8_weight``). fbgemm_fp8 has only a CUDA kernel
(``torch.ops.fbgemm.f8f8bf16_rowwise``): it is checked against a torch transcription of the per-row scaling
that ``FbgemmFp8Linear.forward`` hands that kernel. End to end: tiny Gemma 2 variants written with those
libraries, through ``gemma-release verify VARIANT --against ORIGINAL``.
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import MODELS, golden_prompts
from release.errors import InputError
from release.weights.quant import compressed_tensors as ct
from release.weights.quant import fp8

CASE = "gemma2_gqa_softcap"
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def to_numpy(t) -> np.ndarray:
    """A torch tensor as the NumPy array a safetensors reader hands out (bf16 / float8 through ml_dtypes)."""
    import torch

    views = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16), torch.float8_e4m3fn: (torch.uint8, ml_dtypes.float8_e4m3fn)}
    if hasattr(torch, "float8_e8m0fnu"):
        views[torch.float8_e8m0fnu] = (torch.uint8, ml_dtypes.float8_e8m0fnu)
    if t.dtype in views:
        raw, np_dtype = views[t.dtype]
        return t.contiguous().view(raw).numpy().view(np_dtype)
    return t.contiguous().numpy()


# ------------------------------------------------------------------------------------------------------------
# compressed-tensors against the library
# ------------------------------------------------------------------------------------------------------------

W4A16 = {  # RedHatAI/*-quantized.w4a16 config.json (llm-compressor GPTQ, compressed-tensors 0.9)
    "config_groups": {"group_0": {"input_activations": None, "output_activations": None, "targets": ["Linear"],
                                  "weights": {"actorder": "weight", "block_structure": None, "dynamic": False,
                                              "group_size": 128, "num_bits": 4, "observer": "minmax",
                                              "observer_kwargs": {}, "strategy": "group", "symmetric": True,
                                              "type": "int"}}},
    "format": "pack-quantized", "global_compression_ratio": None, "ignore": ["lm_head"], "kv_cache_scheme": None,
    "quant_method": "compressed-tensors", "quantization_status": "compressed", "sparsity_config": {},
    "version": "0.9.2"}
FP8_DYNAMIC = {  # RedHatAI/*-FP8-dynamic config.json
    "config_groups": {"group_0": {"input_activations": {"actorder": None, "block_structure": None, "dynamic": True,
                                                        "group_size": None, "num_bits": 8, "observer": None,
                                                        "observer_kwargs": {}, "strategy": "token",
                                                        "symmetric": True, "type": "float"},
                                  "output_activations": None, "targets": ["Linear"],
                                  "weights": {"actorder": None, "block_structure": None, "dynamic": False,
                                              "group_size": None, "num_bits": 8, "observer": "minmax",
                                              "observer_kwargs": {}, "strategy": "channel", "symmetric": True,
                                              "type": "float"}}},
    "format": "float-quantized", "global_compression_ratio": None,
    "ignore": ["lm_head", "re:.*vision_tower.*", "re:.*multi_modal_projector.*"], "kv_cache_scheme": None,
    "quant_method": "compressed-tensors", "quantization_status": "compressed"}
NAMES = {"model.layers.0.mlp.down_proj.weight_packed", "model.layers.0.mlp.down_proj.weight_scale"}


def library_case(fmt: str, args: dict, out: int = 48, in_: int = 256, scale_dtype: str = "float32", seed: int = 0):
    """compress() a random layer with the library; returns (our scheme, stored arrays, library decompress result)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import (FloatQuantizationCompressor, IntQuantizationCompressor,
                                                NaiveQuantizationCompressor, PackedQuantizationCompressor)
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.utils import calculate_qparams

    compressor = {"pack-quantized": PackedQuantizationCompressor, "naive-quantized": NaiveQuantizationCompressor,
                  "int-quantized": IntQuantizationCompressor, "float-quantized": FloatQuantizationCompressor}[fmt]
    a = QuantizationArgs(**args)
    scheme = QuantizationScheme(targets=["Linear"], weights=a)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, in_, generator=g)
    if a.strategy == "group":
        view = w.reshape(out, -1, a.group_size)
        lo, hi = view.amin(-1), view.amax(-1)
    elif a.strategy == "channel":
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    elif a.strategy == "tensor":
        lo, hi = w.amin().reshape(1), w.amax().reshape(1)
    else:  # block: min/max over each (padded) block, as the library's observers do
        bh, bw = a.block_structure
        padded = torch.nn.functional.pad(w, (0, -in_ % bw, 0, -out % bh))
        blocks = padded.reshape(padded.shape[0] // bh, bh, padded.shape[1] // bw, bw)
        lo, hi = blocks.amin((1, 3)), blocks.amax((1, 3))
    scale, zero = calculate_qparams(lo.clamp(max=0), hi.clamp(min=0), a)
    dtype = getattr(torch, scale_dtype)
    stored = compressor.compress({"weight": w.to(dtype), "weight_scale": scale.to(dtype), "weight_zero_point": zero},
                                 scheme)
    lib = compressor.decompress(dict(stored), scheme)["weight"]
    config = {"quantization_config": {"quant_method": "compressed-tensors", "format": fmt, "ignore": ["lm_head"],
                                      "quantization_status": "compressed",
                                      "config_groups": {"group_0": {"targets": ["Linear"],
                                                                    "weights": a.model_dump()}}}}
    arrays = {f"m.{k}": to_numpy(v) for k, v in stored.items()}
    return ct.recognise(config, set(arrays)), arrays, to_numpy(lib)


CT_CASES = [  # format, weight args, out, in, scale dtype
    ("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32), 64, 128, "bfloat16"),
    ("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="group", group_size=128), 48, 256, "float32"),
    ("pack-quantized", dict(num_bits=4, type="int", symmetric=False, strategy="group", group_size=64), 48, 256, "bfloat16"),
    ("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="channel"), 64, 128, "float16"),
    ("pack-quantized", dict(num_bits=8, type="int", symmetric=False, strategy="channel"), 48, 256, "float32"),
    ("pack-quantized", dict(num_bits=8, type="int", symmetric=True, strategy="group", group_size=64), 64, 128, "bfloat16"),
    ("pack-quantized", dict(num_bits=2, type="int", symmetric=False, strategy="group", group_size=32), 48, 256, "float32"),
    ("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="tensor"), 64, 128, "float32"),
    ("naive-quantized", dict(num_bits=8, type="int", symmetric=False, strategy="group", group_size=32), 64, 128, "bfloat16"),
    ("int-quantized", dict(num_bits=8, type="int", symmetric=True, strategy="channel"), 48, 256, "float32"),
    ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="channel"), 64, 128, "bfloat16"),
    ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="tensor"), 48, 256, "float32"),
    ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="block", block_structure=[32, 64]),
     80, 200, "float32"),
    ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="block", block_structure=[16, 128]),
     48, 256, "bfloat16"),
]


@pytest.mark.parametrize("fmt, args, out, in_, scale_dtype", CT_CASES,
                         ids=[f"{c[0]}-{c[1]['type']}{c[1]['num_bits']}-{c[1]['strategy']}-"
                              f"{'sym' if c[1]['symmetric'] else 'asym'}-{c[4]}" for c in CT_CASES])
def test_compressed_tensors_is_bit_exact_with_the_library(fmt, args, out, in_, scale_dtype):
    scheme, arrays, lib = library_case(fmt, args, out, in_, scale_dtype)
    ours = ct.dequantize(scheme, "m", arrays.__getitem__, (out, in_))
    assert ours.dtype == np.float32 and ours.shape == (out, in_)
    # The library computes in the scale's dtype; ours is the exact float32 product, equal once rounded to it.
    assert np.array_equal(ours.astype(lib.dtype), lib)
    if scale_dtype == "float32":
        assert np.array_equal(ours, lib)
    rows = np.array([out - 1, 0, 33, 2])
    assert np.array_equal(ct.dequantize(scheme, "m", arrays.__getitem__, (out, in_), rows=rows), ours[rows])
    assert np.array_equal(ct.dequantize(scheme, "m", arrays.__getitem__, (out, in_), rows=slice(3, 19)), ours[3:19])


def test_two_four_eight_bit_packing_is_the_same_in_every_library_release():
    """0.20's dense packing equals the older 32 // b codes per word for 2, 4, 8 bits (the widths we accept)."""
    from release.weights.quant.gptq import pack_last

    rng = np.random.default_rng(1)
    for bits in (2, 4, 8):
        codes = rng.integers(0, 2 ** bits, (3, 64))
        per = 32 // bits
        old = (codes.reshape(3, -1, per).astype(np.uint64) << (np.arange(per, dtype=np.uint64) * bits)).sum(-1)
        assert np.array_equal(pack_last(codes, bits).view(np.uint32), old.astype(np.uint32))


def test_weight_g_idx_matches_compressed_tensors_012():
    """actorder "group" layers (weight_g_idx) written and decompressed by compressed-tensors 0.12.2 itself
    (tests/make_quant_oracles.py; 0.20 no longer reads them): equal once rounded to the scales' bfloat16."""
    from safetensors import safe_open

    path = Path(__file__).resolve().parent / "data" / "quant" / "ct012_oracle.safetensors"
    with safe_open(str(path), "numpy") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    arrays = load_file(str(path))
    assert len(meta) == 4
    for case, m in meta.items():
        tensors = {k[len(case) + 1:]: v for k, v in arrays.items() if k.startswith(case + ".")}
        tensors["weight_scale"] = tensors["weight_scale"].view(ml_dtypes.bfloat16)
        want = tensors.pop("expected").view(ml_dtypes.bfloat16)
        stored = {f"m.{k}": v for k, v in tensors.items()}
        config = {"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                          "quantization_status": "compressed", "version": "0.12.2",
                                          "config_groups": {"group_0": {"targets": ["Linear"],
                                                                        "weights": m["weights"]}}}}
        scheme = ct.recognise(config, set(stored))
        got = ct.dequantize(scheme, "m", stored.__getitem__, tuple(m["shape"]))
        assert np.array_equal(got.astype(ml_dtypes.bfloat16), want), case
        assert ("m.weight_g_idx" in stored) == (m["weights"].get("actorder") == "group")


def test_weight_g_idx_of_older_releases_picks_each_columns_group():
    """compressed-tensors 0.12 actorder "group": w[:, i] = (q[:, i] - z[:, g[i]]) * s[:, g[i]] (forward.py, read)."""
    from release.weights.quant.gptq import pack_last

    rng = np.random.default_rng(3)
    out, in_, gs = 16, 64, 16
    q = rng.integers(-8, 8, (out, in_))
    g = rng.permutation(np.arange(in_) // gs).astype(np.int32)
    s = rng.uniform(0.01, 0.1, (out, in_ // gs)).astype(np.float32)
    arrays = {"m.weight_packed": pack_last(q + 8, 4), "m.weight_scale": s, "m.weight_g_idx": g,
              "m.weight_shape": np.array([out, in_])}
    config = {"quantization_config": {**W4A16, "config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {**W4A16["config_groups"]["group_0"]["weights"], "group_size": gs,
                                           "actorder": "group"}}}}}
    scheme = ct.recognise(config, set(arrays))
    got = ct.dequantize(scheme, "m", arrays.__getitem__, (out, in_))
    np.testing.assert_array_equal(got, (q * s[:, g]).astype(np.float32))
    assert "m.weight_g_idx" in ct.stored_names(scheme, "m", set(arrays))
    arrays["m.weight_g_idx"] = np.full(in_, -1, np.int32)  # uninitialised: column order
    np.testing.assert_array_equal(ct.dequantize(scheme, "m", arrays.__getitem__, (out, in_)),
                                  (q * np.repeat(s, gs, axis=1)).astype(np.float32))


def test_recognise_real_world_and_library_written_configs():
    s = ct.recognise({"quantization_config": W4A16}, NAMES)
    assert (s.format, s.method, s.bits, s.group_size, s.details["symmetric"]) == (
        "compressed-tensors", "pack-quantized", 4, 128, True)
    assert s.label == "compressed-tensors pack-quantized 4-bit g128"
    s = ct.recognise({"quantization_config": FP8_DYNAMIC}, NAMES)
    assert (s.method, s.bits, s.details["type"], s.details["strategy"]) == ("float-quantized", 8, "float", "channel")
    assert s.details["activations"]["group_0"] == {"num_bits": 8, "type": "float", "strategy": "token",
                                                    "dynamic": True, "symmetric": True}
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme

    for preset, fmt, want in [("W4A16", "pack-quantized", (4, 128)), ("W8A16", "pack-quantized", (8, 128)),
                              ("W4A16_ASYM", "pack-quantized", (4, 128)), ("FP8", "float-quantized", (8, None)),
                              ("FP8_DYNAMIC", "float-quantized", (8, None)), ("FP8_BLOCK", "float-quantized", (8, None)),
                              ("W8A8", "int-quantized", (8, None))]:
        qc = QuantizationConfig(config_groups={"group_0": preset_name_to_scheme(preset, ["Linear"])}, format=fmt,
                                ignore=["lm_head"], quantization_status="compressed")
        cfg = json.loads(json.dumps({**qc.model_dump(), "quant_method": "compressed-tensors"}))
        s = ct.recognise({"quantization_config": cfg}, NAMES)
        assert (s.bits, s.group_size) == want, preset
    # early releases: `compression_config`, and transformers' nesting
    assert ct.recognise({"compression_config": W4A16}, NAMES).method == "pack-quantized"
    assert ct.recognise({"quantization_config": {"quantization_config": W4A16, "sparsity_config": None}},
                        NAMES).method == "pack-quantized"


def test_mixed_precision_groups_targets_and_ignore():
    w8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    w4 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}
    config = {"quantization_config": {
        "quant_method": "compressed-tensors", "format": "mixed-precision", "quantization_status": "compressed",
        "ignore": ["lm_head", "re:.*layers\\.1\\.self_attn\\.o_proj$"],
        "config_groups": {"attn": {"targets": ["re:.*self_attn.*"], "weights": w8, "format": "int-quantized"},
                          "rest": {"targets": ["Linear"], "weights": w4, "format": "pack-quantized"},
                          "head": {"targets": ["model.layers.0.mlp.down_proj"], "weights": w8,
                                   "format": "naive-quantized"}}}}
    names = set()
    for i in range(2):
        for lin in LINEARS:
            m = f"model.layers.{i}.{lin}"
            if i == 1 and lin == "self_attn.o_proj":
                names.add(f"{m}.weight")  # ignored: stored as floats
            elif "self_attn" in lin or (i == 0 and lin == "mlp.down_proj"):
                names |= {f"{m}.weight", f"{m}.weight_scale"}
            else:
                names |= {f"{m}.weight_packed", f"{m}.weight_scale", f"{m}.weight_shape"}
    s = ct.recognise(config, names)
    assert (s.method, s.bits, s.group_size) == ("mixed-precision", 4, 32)  # the fewest-bit group's
    mods = ct.quantized_modules(s, names)
    assert len(mods) == 13 and "model.layers.1.self_attn.o_proj" not in mods
    assert ct.group_of(s, "model.layers.0.self_attn.k_proj")["format"] == "int-quantized"  # regex beats class
    assert ct.group_of(s, "model.layers.0.mlp.down_proj")["format"] == "naive-quantized"  # exact name beats both
    assert ct.group_of(s, "model.layers.1.mlp.down_proj")["format"] == "pack-quantized"  # only the class
    assert ct.stored_names(s, "model.layers.1.mlp.up_proj", names) == {
        f"model.layers.1.mlp.up_proj.{t}" for t in ("weight_packed", "weight_scale", "weight_shape")}
    assert ct.stored_names(s, "model.layers.0.self_attn.q_proj", names) == {
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight_scale"}
    # a layer stored quantized that `ignore` lists, or that no group targets: named
    bad = names | {"model.layers.1.self_attn.o_proj.weight_scale"}
    with pytest.raises(InputError, match=r"layers\.1\.self_attn\.o_proj is stored quantized but ignore lists it"):
        ct.quantized_modules(s, bad)
    only_attn = {**config["quantization_config"], "config_groups": {"attn": config["quantization_config"]
                                                                    ["config_groups"]["attn"]}}
    s = ct.recognise({"quantization_config": only_attn}, names)
    with pytest.raises(InputError, match="no config group targets it"):
        ct.quantized_modules(s, names)


def test_static_activation_scales_belong_to_their_layer():
    config = {"quantization_config": {**FP8_DYNAMIC, "config_groups": {"group_0": {
        **FP8_DYNAMIC["config_groups"]["group_0"],
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False,
                              "symmetric": True}}}}}
    m = "model.layers.0.self_attn.q_proj"
    names = {f"{m}.weight", f"{m}.weight_scale", f"{m}.input_scale", "model.layers.0.self_attn.k_scale"}
    s = ct.recognise(config, names)
    assert s.details["activations"]["group_0"]["dynamic"] is False
    assert ct.quantized_modules(s, names) == {m}
    assert ct.stored_names(s, m, names) == {f"{m}.weight", f"{m}.weight_scale", f"{m}.input_scale"}


@pytest.mark.parametrize("change, words", [
    ({"format": "nvfp4-pack-quantized"}, ["format 'nvfp4-pack-quantized' is not supported"]),
    ({"format": "marlin-24"}, ["'marlin-24'"]),
    ({"format": "dense"}, ["'dense'"]),
    ({"sparsity_config": {"format": "sparse-24-bitmask", "sparsity_structure": "2:4"}},
     ["sparsity format 'sparse-24-bitmask'"]),
    ({"transform_config": {"config_groups": {"u": {}}}}, ["transform_config"]),
    ({"quantization_status": "frozen"}, ["quantization_status 'frozen'"]),
    ({"weights": {"num_bits": 3}}, ["pack-quantized num_bits 3 is not supported", "2, 4, 8"]),
    ({"weights": {"num_bits": 6}}, ["num_bits 6"]),
    ({"weights": {"num_bits": 4, "type": "float"}}, ["float 4-bit"]),
    ({"weights": {"strategy": "tensor_group"}}, ["strategy 'tensor_group'"]),
    ({"weights": {"type": "mx"}}, ["weight type 'mx'"]),
    ({"weights": {"dynamic": "local"}}, ["dynamic weight quantization 'local'"]),
])
def test_unsupported_compressed_tensors_options_are_named(change, words):
    qc = json.loads(json.dumps(W4A16))
    if "weights" in change:
        qc["config_groups"]["group_0"]["weights"].update(change["weights"])
    else:
        qc.update(change)
    with pytest.raises(InputError) as e:
        ct.recognise({"quantization_config": qc}, NAMES)
    assert "compressed-tensors" in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_not_compressed_tensors_is_none():
    for cfg in ({"model_type": "gemma2"}, {"quantization_config": {"quant_method": "gptq", "bits": 4}},
                {"quantization": {"group_size": 64, "bits": 4}}):
        assert ct.recognise(cfg, NAMES) is None


@pytest.mark.parametrize("case, tensor, damage, words", [
    (0, "weight_packed", lambda a: a[:, :-1], ["m.weight_packed", "[64, 15]", "expected [64, 16]"]),
    (0, "weight_packed", lambda a: a[:-2], ["m.weight_packed"]),
    (0, "weight_scale", lambda a: a[:, :3], ["m.weight_scale", "[64, 3]"]),
    (0, "weight_shape", lambda a: np.array([64, 96]), ["m.weight_shape says [64, 96]"]),
    (2, "weight_zero_point", lambda a: a[:-1], ["m.weight_zero_point"]),
    (2, "weight_zero_point", lambda a: None, ["m.weight_zero_point is missing"]),
    (10, "weight", lambda a: a[:, :100], ["m.weight", "[64, 100]"]),
    (10, "weight", lambda a: a.view(np.int8), ["m.weight", "dtype int8"]),
    (8, "weight", lambda a: a.astype(np.int16), ["dtype int16"]),
])
def test_truncated_or_misshapen_compressed_tensors_are_named(case, tensor, damage, words):
    fmt, args, out, in_, dt = CT_CASES[case]
    scheme, arrays, _ = library_case(fmt, args, out, in_, dt)
    bad = damage(arrays[f"m.{tensor}"])
    if bad is None:
        del arrays[f"m.{tensor}"]
    else:
        arrays[f"m.{tensor}"] = bad
    with pytest.raises(InputError) as e:
        ct.dequantize(scheme, "m", arrays.__getitem__, (out, in_))
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("case", [0, 4, 12])
def test_damaged_compressed_tensors_scales_change_the_weights(case):
    fmt, args, out, in_, dt = CT_CASES[case]
    scheme, arrays, _ = library_case(fmt, args, out, in_, dt)
    good = ct.dequantize(scheme, "m", arrays.__getitem__, (out, in_))
    scale = arrays["m.weight_scale"].copy()
    scale[1] = 0
    arrays["m.weight_scale"] = scale
    bad = ct.dequantize(scheme, "m", arrays.__getitem__, (out, in_))
    changed = bad != good
    assert changed.any() and not bad[changed].any()


# ------------------------------------------------------------------------------------------------------------
# transformers FP8 against transformers
# ------------------------------------------------------------------------------------------------------------


def fp8_block_case(block, shape, scale_fmt="float", seed=0):
    """transformers' Fp8Quantize on a random weight; returns (scheme, arrays, transformers' float32 dequantization)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import FineGrainedFP8Config
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize, Fp8Quantize, _dequantize_fp8_weight

    cfg = FineGrainedFP8Config(weight_block_size=block, scale_fmt=scale_fmt)
    hq = types.SimpleNamespace(quantization_config=cfg)
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if block is None or (shape[0] % block[0] == 0 and shape[1] % block[1] == 0):
        r = Fp8Quantize(hq)._quantize_one("m.weight", w)
        q, s = r["m.weight"], r["m.weight_scale_inv"]
        lib = Fp8Dequantize(hq)._dequantize_one(q, s, output_dtype=torch.float32)
    else:  # Fp8Quantize leaves partial blocks unquantized; FP8Linear still holds ceil-sized grids
        q = w.to(torch.float8_e4m3fn)
        s = torch.rand(-(-shape[0] // block[0]), -(-shape[1] // block[1]), generator=torch.Generator().manual_seed(1))
        lib = _dequantize_fp8_weight(q, s, list(block), torch.float32)
    config = {"quantization_config": json.loads(cfg.to_json_string())}
    arrays = {"m.weight": to_numpy(q), "m.weight_scale_inv": to_numpy(s)}
    return fp8.recognise(config, set(arrays)), arrays, lib.numpy()


@pytest.mark.parametrize("block, shape, scale_fmt", [
    ([128, 128], (256, 384), "float"), ([32, 64], (64, 128), "float"), ([16, 32], (48, 256), "float"),
    ([32, 32], (64, 128), "ue8m0"), (None, (64, 128), "float"), ([32, 64], (80, 200), "float"),
])
def test_fp8_block_is_bit_exact_with_transformers(block, shape, scale_fmt):
    scheme, arrays, lib = fp8_block_case(block, shape, scale_fmt)
    if scale_fmt == "ue8m0" and arrays["m.weight_scale_inv"].dtype != np.dtype(ml_dtypes.float8_e8m0fnu):
        pytest.skip("this torch has no float8_e8m0fnu")
    ours = fp8.dequantize(scheme, "m", arrays.__getitem__, shape)
    assert ours.dtype == np.float32 and np.array_equal(ours, lib)
    rows = np.array([shape[0] - 1, 0, 17])
    assert np.array_equal(fp8.dequantize(scheme, "m", arrays.__getitem__, shape, rows=rows), lib[rows])
    assert scheme.method == ("fp8-block" if block else "fp8-tensor")


def fbgemm_reference(q, scale):
    """FbgemmFp8Linear.forward's weight side, in torch: f8f8bf16_rowwise(x_q, W, x_scale, weight_scale) computes
    (x_q @ W.T) * x_scale[:, None] * weight_scale[None, :], i.e. the weight is W * weight_scale per output row."""
    import torch

    weight_scale_float32 = scale.to(torch.float32)  # as forward() casts it
    return q.to(torch.float32) * weight_scale_float32.view(-1, 1)


def test_fbgemm_fp8_matches_the_per_row_scaling():
    torch = pytest.importorskip("torch")
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(0))
    # quantize_fp8_per_row (fbgemm, CUDA): scale = row amax / 448, q = w / scale -- transcribed for the fixture
    scale = (w.abs().amax(dim=1) / torch.finfo(torch.float8_e4m3fn).max).view(-1, 1)
    q = (w / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
    config = {"quantization_config": {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                                      "modules_to_not_convert": ["lm_head"]}}
    arrays = {"m.weight": to_numpy(q), "m.weight_scale": to_numpy(scale.to(torch.float32))}
    s = fp8.recognise(config, set(arrays))
    assert (s.format, s.method, s.bits, s.label) == ("fp8", "fbgemm_fp8", 8, "fp8 fbgemm_fp8 8-bit")
    ours = fp8.dequantize(s, "m", arrays.__getitem__, (48, 256))
    assert np.array_equal(ours, fbgemm_reference(q, scale).numpy())
    assert np.abs(ours - w.numpy()).max() <= np.abs(w.numpy()).max() / 8  # E4M3: 3 mantissa bits
    arrays["m.weight_scale"] = arrays["m.weight_scale"].reshape(-1)  # [out] is accepted too
    assert np.array_equal(fp8.dequantize(s, "m", arrays.__getitem__, (48, 256)), ours)


def test_recognise_fp8_configs_and_layers():
    transformers = pytest.importorskip("transformers")
    cfg = json.loads(transformers.FbgemmFp8Config(modules_to_not_convert=["lm_head"]).to_json_string())
    names = {"model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight_scale",
             "model.embed_tokens.weight"}
    s = fp8.recognise({"quantization_config": cfg}, names)
    assert s.method == "fbgemm_fp8" and fp8.quantized_modules(s, names) == {"model.layers.0.mlp.up_proj"}
    assert fp8.stored_names(s, "model.layers.0.mlp.up_proj", names) == {
        "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight_scale"}
    cfg = json.loads(transformers.FineGrainedFP8Config(activation_scheme="static",
                                                       modules_to_not_convert=["mlp.down_proj"]).to_json_string())
    names = {f"model.layers.0.{lin}.{t}" for lin in LINEARS for t in ("weight", "weight_scale_inv", "activation_scale")}
    s = fp8.recognise({"quantization_config": cfg}, names)
    assert (s.method, s.group_size, s.details["block"], s.details["activation_scheme"]) == (
        "fp8-block", 128, [128, 128], "static")
    with pytest.raises(InputError, match=r"layers\.0\.mlp\.down_proj is stored quantized but modules_to_not_convert"):
        fp8.quantized_modules(s, names)  # a suffix match, as transformers' should_convert_module
    s = fp8.recognise({"quantization_config": {**cfg, "modules_to_not_convert": ["lm_head"]}}, names)
    assert len(fp8.quantized_modules(s, names)) == 7
    assert fp8.stored_names(s, "model.layers.0.mlp.down_proj", names) == {
        f"model.layers.0.mlp.down_proj.{t}" for t in ("weight", "weight_scale_inv", "activation_scale")}
    assert not fp8.not_converted("model.layers.11.mlp.up_proj", ["model.layers.1"])  # at a module boundary only
    assert fp8.not_converted("model.layers.1.mlp.up_proj", ["model.layers.1"])


@pytest.mark.parametrize("qc, words", [
    ({"quant_method": "fp8", "weight_block_size": [128]}, ["fp8 weight_block_size [128] is not supported"]),
    ({"quant_method": "fp8", "weight_block_size": [0, 128]}, ["weight_block_size [0, 128]"]),
    ({"quant_method": "fp8", "expert_dtype": "fp4"}, ["fp8 expert_dtype 'fp4'"]),
    ({"quant_method": "fp8", "scale_fmt": "mx"}, ["fp8 scale_fmt 'mx'"]),
    ({"quant_method": "fp8", "activation_scheme": "per_token"}, ["activation_scheme 'per_token'"]),
    ({"quant_method": "fp8", "modules_to_convert": ["embed_tokens"]}, ["modules_to_convert"]),
])
def test_unsupported_fp8_options_are_named(qc, words):
    with pytest.raises(InputError) as e:
        fp8.recognise({"quantization_config": qc}, {"m.weight_scale_inv"})
    for w in words:
        assert w in str(e.value)


def test_not_fp8_is_none_and_no_scales_is_refused():
    for cfg in ({"model_type": "gemma2"}, {"quantization_config": {"quant_method": "compressed-tensors"}},
                {"quantization_config": {"quant_method": "mxfp8"}}):
        assert fp8.recognise(cfg, {"m.weight"}) is None
    with pytest.raises(InputError, match="no .weight_scale_inv"):
        fp8.recognise({"quantization_config": {"quant_method": "fp8"}}, {"m.weight"})


@pytest.mark.parametrize("tensor, damage, words", [
    ("weight", lambda a: a[:-1], ["m.weight", "[63, 128]", "expected [64, 128]"]),
    ("weight", lambda a: a.view(np.uint8), ["m.weight", "dtype uint8"]),
    ("weight_scale_inv", lambda a: a[:, :1], ["m.weight_scale_inv", "expected [2, 2]"]),
    ("weight_scale_inv", lambda a: a.astype(np.int32), ["m.weight_scale_inv", "dtype int32"]),
])
def test_truncated_or_misshapen_fp8_tensors_are_named(tensor, damage, words):
    scheme, arrays, _ = fp8_block_case([32, 64], (64, 128))
    arrays[f"m.{tensor}"] = damage(arrays[f"m.{tensor}"])
    with pytest.raises(InputError) as e:
        fp8.dequantize(scheme, "m", arrays.__getitem__, (64, 128))
    for w in words:
        assert w in str(e.value)


def test_damaged_fp8_scales_change_the_weights():
    scheme, arrays, lib = fp8_block_case([32, 64], (64, 128))
    s = arrays["m.weight_scale_inv"].copy()
    s[0, 1] = 0
    arrays["m.weight_scale_inv"] = s
    bad = fp8.dequantize(scheme, "m", arrays.__getitem__, (64, 128))
    changed = bad != lib
    assert changed[:32, 64:].any() and not changed[32:].any() and not changed[:, :64].any()
    assert not bad[:32, 64:].any()


# ------------------------------------------------------------------------------------------------------------
# End to end: compressed-tensors and FP8 copies of a tiny Gemma 2 through `verify VARIANT --against ORIGINAL`
# ------------------------------------------------------------------------------------------------------------


def id_args() -> list[str]:
    return [a for ids, _ in golden_prompts(CASE) for a in ("--ids", ",".join(map(str, ids.tolist())))]


def write_variant(dst: Path, kind: str, bits: int = 8, zero_layers: tuple[int, ...] = ()) -> Path:
    """A copy of the tiny Gemma 2 written by the libraries themselves: compressed-tensors' compressors
    ("ct-pack" W{bits}A16 group 32, "ct-fp8" FP8 per channel) or transformers' Fp8Quantize ("fp8", blocks of
    32x32); ``zero_layers``: decoder blocks whose scales are zeroed."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    src = MODELS / CASE
    shutil.copytree(src, dst)
    config = json.loads((src / "config.json").read_text())
    tensors = {k: torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) if v.dtype == ml_dtypes.bfloat16
               else torch.from_numpy(v) for k, v in load_file(str(src / "model.safetensors")).items()}
    out = {}
    if kind.startswith("ct"):
        pytest.importorskip("compressed_tensors")
        from compressed_tensors.compressors import FloatQuantizationCompressor, PackedQuantizationCompressor
        from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme
        from compressed_tensors.quantization.utils import calculate_qparams

        preset, fmt, comp = (("FP8", "float-quantized", FloatQuantizationCompressor) if kind == "ct-fp8" else
                             (f"W{bits}A16", "pack-quantized", PackedQuantizationCompressor))
        scheme = preset_name_to_scheme(preset, ["Linear"])
        if kind == "ct-pack":
            scheme.weights.strategy, scheme.weights.group_size = "group", 32
        if kind == "ct-fp8":
            scheme.weights.strategy, scheme.input_activations = "channel", None
        qc = QuantizationConfig(config_groups={"group_0": scheme}, format=fmt, ignore=["lm_head"],
                                quantization_status="compressed")
        config["quantization_config"] = {**qc.model_dump(), "quant_method": "compressed-tensors"}
    else:
        from transformers import FineGrainedFP8Config
        from transformers.integrations.finegrained_fp8 import Fp8Quantize

        cfg = FineGrainedFP8Config(weight_block_size=[32, 32])
        quantizer = Fp8Quantize(types.SimpleNamespace(quantization_config=cfg))
        config["quantization_config"] = json.loads(cfg.to_json_string())
    for name, t in tensors.items():
        module = name[: -len(".weight")]
        if not (name.endswith(".weight") and module.endswith(LINEARS)):
            out[name] = t
            continue
        w = t.float()
        if kind.startswith("ct"):
            a = scheme.weights
            view = w.reshape(w.shape[0], -1, 32) if a.strategy == "group" else w.unsqueeze(1)
            scale, zp = calculate_qparams(view.amin(-1).clamp(max=0), view.amax(-1).clamp(min=0), a)
            scale = scale.reshape(w.shape[0], -1).to(torch.bfloat16)  # llm-compressor keeps scales in the model dtype
            stored = comp.compress({"weight": w.to(torch.bfloat16), "weight_scale": scale,
                                    "weight_zero_point": zp.reshape(scale.shape)}, scheme)
            stored = {f"{module}.{k}": v for k, v in stored.items()}
            scale_key = f"{module}.weight_scale"
        else:
            stored = quantizer._quantize_one(name, w)
            scale_key = f"{module}.weight_scale_inv"
        if any(f".layers.{i}." in name for i in zero_layers):
            stored[scale_key] = torch.zeros_like(stored[scale_key])
        out.update(stored)
    save_file({k: v.contiguous() for k, v in out.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


#: See tests/test_quant_gptq_awq.py TIGHT: the tiny fixture's logits hardly depend on its layers, so a damaged
#: block is told from a clean variant with this bound, not the 4-/8-bit defaults.
TIGHT = ("--max-mean-kl", "0.001")


@pytest.mark.parametrize("kind, bits, label", [("ct-pack", 8, "pack-quantized 8-bit g32"),
                                               ("ct-pack", 4, "pack-quantized 4-bit g32"),
                                               ("ct-fp8", 8, "float-quantized 8-bit"),
                                               ("fp8", 8, "fp8-block 8-bit g32")])
def test_verify_a_quantized_variant_against_its_original(cli, tmp_path, kind, bits, label):
    variant = write_variant(tmp_path / kind, kind, bits)
    r = cli("verify", variant, "--against", MODELS / CASE, *id_args())
    assert r.code == 0, r.out + r.err
    assert label in r.out


@pytest.mark.parametrize("kind, bits", [("ct-pack", 4), ("fp8", 8)])
def test_verify_fails_a_variant_with_one_block_of_scales_zeroed(cli, tmp_path, kind, bits):
    clean = write_variant(tmp_path / "clean", kind, bits)
    r = cli("verify", clean, "--against", MODELS / CASE, *id_args(), *TIGHT)
    assert r.code == 0, r.out + r.err
    damaged = write_variant(tmp_path / "damaged", kind, bits, zero_layers=(0,))
    r = cli("verify", damaged, "--against", MODELS / CASE, *id_args(), *TIGHT)
    assert r.code == 1, r.out + r.err


def test_verify_names_a_misshapen_packed_tensor(cli, tmp_path):
    from safetensors.numpy import save_file

    variant = write_variant(tmp_path / "ct", "ct-pack", 4)
    tensors = load_file(str(variant / "model.safetensors"))
    name = "model.layers.3.self_attn.v_proj.weight_packed"
    tensors[name] = tensors[name][:, :-1].copy()
    save_file(tensors, str(variant / "model.safetensors"))
    r = cli("verify", variant, "--against", MODELS / CASE, *id_args())
    assert r.code == 2 and name in r.out + r.err
