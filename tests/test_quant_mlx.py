"""MLX (mlx-lm) quantized variants: the NumPy dequantizer against mlx itself, and their measured fidelity.

Exactness (mlx 0.32.4, CPU backend): ``release.weights.quant.mlx.dequantize`` is bit-exact in float32 against
``mx.dequantize`` for affine 1/2/3/4/5/6/8-bit x group 32/64/128, mxfp4, nvfp4 (± global scale) and mxfp8,
given float32 scales and biases -- the stored bf16/f16 ones cast to float32, which is exact, and the
arithmetic mlx's matmul kernels do. mlx's own dequantize with bf16/f16 scales rounds twice in that dtype
(after the product, after the bias): against it the float32 weight rounded to that dtype is within 1 ulp
of the group's largest term. Tests needing mlx (or mlx-lm) skip where it is not installed; the verify tests
run everywhere, on variants written by tests/quant_fixtures.py (mlx's CPU quantizer ported to NumPy, held
bit-exact against ``mx.quantize`` here) and on tests/data/quant/gemma3_1b_style-mlx-4bit, made by mlx-lm.
"""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from release.errors import InputError
from release.weights.gguf_verify import BOUNDS
from release.weights.golden import PromptSpec
from release.weights.quant import detect, recognise
from release.weights.quant import mlx as M
from release.weights.quant.base import Scheme
from release.weights.quant_verify import verify_quant
from tests.conftest import MODELS, golden_prompts
from tests.quant_fixtures import (
    QUANT_DATA,
    damage,
    mlx_affine_quantize,
    pack_codes,
    write_mlx_variant,
)

SCHEME = Scheme("mlx", "affine", 4, 64, {"overrides": {}})
AFFINE = [(b, g) for b in (1, 2, 3, 4, 5, 6, 8) for g in (32, 64, 128)]
MLX_LM_FIXTURE = QUANT_DATA / "gemma3_1b_style-mlx-4bit"
NP_DTYPE = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def ids_of(case: str) -> list[PromptSpec]:
    return [PromptSpec(f"golden-{i}", ids=ids.tolist()) for i, (ids, _) in enumerate(golden_prompts(case))]


def id_args(case: str) -> list[str]:
    return [a for ids, _ in golden_prompts(case) for a in ("--ids", ",".join(map(str, ids.tolist())))]


def _mx():
    return pytest.importorskip("mlx.core")


# --- the dequantizer against mlx ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("bits,group", AFFINE)
def test_affine_is_bit_exact_against_mx_dequantize(bits, group, dtype):
    mx = _mx()
    rng = np.random.default_rng(bits * 1000 + group)
    w = mx.array(rng.standard_normal((24, 256)).astype(np.float32)).astype(getattr(mx, dtype))
    wq, s, b = mx.quantize(w, group_size=group, bits=bits)
    stored = {"m.weight": np.array(wq),  # the scales and biases as mlx-lm saves them: in the model's dtype
              "m.scales": np.array(s.astype(mx.float32)).astype(NP_DTYPE[dtype]),
              "m.biases": np.array(b.astype(mx.float32)).astype(NP_DTYPE[dtype])}
    ours = M.dequantize(SCHEME, "m", stored.__getitem__, (24, 256))
    ref = np.array(mx.dequantize(wq, s.astype(mx.float32), b.astype(mx.float32), group_size=group, bits=bits))
    assert ours.dtype == np.float32 and np.array_equal(ours.view(np.uint32), ref.view(np.uint32))
    rows = np.array([5, 0, 23])
    assert np.array_equal(M.dequantize(SCHEME, "m", stored.__getitem__, (24, 256), rows), ours[rows])
    if dtype != "float32":  # mlx's own dequantize in bf16/f16: two roundings in that dtype; ours rounded once
        own = np.array(mx.dequantize(wq, s, b, group_size=group, bits=bits).astype(mx.float32))
        mine = ours.astype(NP_DTYPE[dtype]).astype(np.float32)
        largest = np.maximum(np.abs(ours).reshape(24, -1, group).max(-1),
                             np.maximum(np.abs(stored["m.biases"].astype(np.float32)),
                                        np.abs(stored["m.scales"].astype(np.float32)) * ((1 << bits) - 1)))
        ulp = (np.nextafter(largest.astype(NP_DTYPE[dtype]), np.array(np.inf, NP_DTYPE[dtype])).astype(np.float32)
               - largest.astype(NP_DTYPE[dtype]).astype(np.float32))
        assert np.all(np.abs(mine - own).reshape(24, -1, group).max(-1) <= ulp)


@pytest.mark.parametrize("mode,group,bits", [("mxfp4", 32, 4), ("nvfp4", 16, 4), ("mxfp8", 32, 8)])
def test_fp_modes_are_bit_exact_against_mx_dequantize(mode, group, bits):
    mx = _mx()
    rng = np.random.default_rng(7)
    w = mx.array((rng.standard_normal((16, 128)) * np.exp(rng.standard_normal((16, 1)) * 3)).astype(np.float32))
    wq, s = mx.quantize(w, mode=mode)
    stored = {"m.weight": np.array(wq), "m.scales": np.array(s)}
    scheme = Scheme("mlx", mode, bits, group, {"overrides": {}})
    ours = M.dequantize(scheme, "m", stored.__getitem__, (16, 128))
    ref = np.array(mx.dequantize(wq, s, group_size=group, bits=bits, mode=mode, dtype=mx.float32))
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))
    if mode == "nvfp4":  # with a global scale (mlx-lm writes one for switch layers)
        g = mx.array(np.float32(3.5))
        wq, s = mx.quantize(w, mode=mode, global_scale=g)
        stored = {"m.weight": np.array(wq), "m.scales": np.array(s), "m.global_scale": np.array(g)}
        ours = M.dequantize(scheme, "m", stored.__getitem__, (16, 128))
        ref = np.array(mx.dequantize(wq, s, group_size=group, bits=bits, mode=mode, global_scale=g, dtype=mx.float32))
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("bits,group", [(b, g) for b, g in AFFINE if b > 1])
def test_numpy_quantizer_of_the_fixtures_is_mx_quantize(bits, group):
    """tests/quant_fixtures.py's port of mlx's CPU quantizer (2-8 bits; mlx's 1-bit rule differs) is bit-exact."""
    mx = _mx()
    w = np.random.default_rng(bits + group).standard_normal((16, 256)).astype(ml_dtypes.bfloat16)
    ref = mx.quantize(mx.array(w.astype(np.float32)).astype(mx.bfloat16), group_size=group, bits=bits)
    ours = mlx_affine_quantize(w.astype(np.float32), group, bits, ml_dtypes.bfloat16)
    assert np.array_equal(ours[0], np.array(ref[0]))
    for a, b in zip(ours[1:], ref[1:]):
        assert np.array_equal(a.view(np.uint16), np.array(b.astype(mx.float32)).astype(ml_dtypes.bfloat16).view(np.uint16))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 8])
def test_codes_round_trip_through_the_bit_stream(bits):
    """3-, 5- and 6-bit codes straddle bytes and uint32 words: unpack(pack(q)) == q on every code value."""
    codes = (np.arange(2 * 384) % (1 << bits)).reshape(2, 384).astype(np.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint32 and packed.shape == (2, 384 * bits // 32)
    assert np.array_equal(M.unpack_codes(packed, bits, 384), codes)


# --- recognising, and bad input --------------------------------------------------------------------------


def test_recognises_mlx_lm_config_and_tensor_names():
    config = json.loads((MLX_LM_FIXTURE / "config.json").read_text())
    mod, scheme = detect(MLX_LM_FIXTURE)
    assert mod is M and scheme.label == "mlx affine 4-bit g64"
    names = set(json.loads((MLX_LM_FIXTURE / "model.safetensors.index.json").read_text())["weight_map"])
    mods = M.quantized_modules(scheme, names)
    assert "model.embed_tokens" in mods and "model.layers.5.mlp.down_proj" in mods and len(mods) == 1 + 6 * 7
    assert M.stored_names(scheme, "model.embed_tokens", names) == {f"model.embed_tokens.{t}" for t in ("weight", "scales", "biases")}
    assert recognise({**config, "quantization": {"group_size": 64, "bits": 8}}, names)[1].bits == 8


@pytest.mark.parametrize("quant,message", [
    ({"group_size": 64, "bits": 7}, "7-bit"),
    ({"group_size": 48, "bits": 4}, "group size 48"),
    ({"group_size": 64, "bits": 4, "mode": "q4_k"}, "mode 'q4_k'"),
    ({"group_size": 16, "bits": 8, "mode": "nvfp4"}, "nvfp4 8-bit"),
])
def test_unsupported_bits_group_or_mode_is_exit_2_naming_it(cli, tmp_path, quant, message):
    v = write_mlx_variant(MODELS / "gemma3_1b_style", tmp_path / "v", 4, 64)
    config = json.loads((v / "config.json").read_text())
    config["quantization"] = config["quantization_config"] = quant
    (v / "config.json").write_text(json.dumps(config))
    r = cli("verify", v, "--against", MODELS / "gemma3_1b_style", "--ids", "2,3")
    assert r.code == 2 and "MLX" in r.err and message in r.err, r.err
    with pytest.raises(InputError, match="MLX"):
        detect(v)


@pytest.mark.parametrize("damage_kind,message", [
    ("missing_scales", "model.layers.1.mlp.up_proj.scales is missing"),
    ("packed_shape", "model.layers.1.mlp.up_proj.weight has shape [128, 3]"),
    ("biases_shape", "model.layers.1.mlp.up_proj.biases"),
    ("float_scales_dtype", "model.layers.1.mlp.up_proj.scales is uint8"),
])
def test_broken_tensors_are_exit_2_naming_the_tensor(cli, tmp_path, damage_kind, message):
    from safetensors.numpy import load_file, save_file

    v = write_mlx_variant(MODELS / "gemma3_1b_style", tmp_path / "v", 4, 64)
    t = load_file(str(v / "model.safetensors"))
    m = "model.layers.1.mlp.up_proj"
    if damage_kind == "missing_scales":
        del t[m + ".scales"]
    elif damage_kind == "packed_shape":
        t[m + ".weight"] = t[m + ".weight"][:, :3].copy()  # [:, :4] would be a valid 2-bit layer (mlx-lm infers it)
    elif damage_kind == "biases_shape":
        t[m + ".biases"] = t[m + ".biases"][:, :0].copy()
    else:
        t[m + ".scales"] = t[m + ".scales"].view(np.uint8)[:, ::2].copy()
    save_file(t, str(v / "model.safetensors"))
    r = cli("verify", v, "--against", MODELS / "gemma3_1b_style", "--ids", "2,3")
    assert r.code == 2 and message in r.err, r.err


def test_truncated_file_is_exit_2_naming_it(cli, tmp_path):
    v = write_mlx_variant(MODELS / "gemma3_1b_style", tmp_path / "v", 4, 64)
    data = (v / "model.safetensors").read_bytes()
    (v / "model.safetensors").write_bytes(data[: len(data) // 2])
    r = cli("verify", v, "--against", MODELS / "gemma3_1b_style", "--ids", "2,3")
    assert r.code == 2 and "model.safetensors" in r.err


# --- measured fidelity -----------------------------------------------------------------------------------------

#: mean KL the tiny fixtures must stay under per bits (measured: README "Quantized variants"), over the
#: NumPy-quantized variants; gemma2_gqa_softcap's soft-capped, random head makes it the touchy one.
MEASURED = {  # (case, bits, group): (mean KL ceiling, must pass the default bound)
    ("gemma3_1b_style", 8, 64): (1e-9, True),
    ("gemma3_1b_style", 6, 32): (1e-9, True),
    ("gemma3_1b_style", 4, 64): (1e-7, True),
    ("gemma3_1b_style", 3, 64): (1e-7, True),
    ("gemma3_1b_style", 2, 32): (1e-7, True),
    ("gemma2_gqa_softcap", 8, 64): (2e-3, True),
    ("gemma2_gqa_softcap", 6, 32): (1e-2, True),
    ("gemma2_gqa_softcap", 4, 64): (0.1, True),
    ("gemma2_gqa_softcap", 4, 128): (1e-3, True),
}


@pytest.mark.parametrize("case,bits,group", list(MEASURED))
def test_variants_measure_within_their_bits_bound(tmp_path, case, bits, group):
    v = write_mlx_variant(MODELS / case, tmp_path / "v", bits, group)
    report = verify_quant(v, MODELS / case, ids_of(case))
    ceiling, passes = MEASURED[(case, bits, group)]
    assert report.mean_kl <= ceiling, report.verdict()
    assert report.tolerance.max_mean_kl == BOUNDS[f"{bits}-bit"][0]  # judged by its bit width's bound
    assert report.ok is passes, [f.message for f in report.findings]
    assert report.kind == "quant" and report.variant["format"] == "mlx" and report.variant["bits"] == bits
    # g128 leaves every 64-wide layer (q/k/v/o, gate/up, the embedding) in float: only down_proj is quantized
    assert report.variant["quantized_modules"] == (cfg_layers(case) if group == 128 else 1 + 7 * cfg_layers(case))


def cfg_layers(case: str) -> int:
    return json.loads((MODELS / case / "config.json").read_text())["num_hidden_layers"]


def test_two_bit_is_judged_by_the_two_bit_bound(tmp_path):
    case = "gemma2_gqa_softcap"  # its random soft-capped head loses the most: fails 2-bit's bound, 1.0 nats
    report = verify_quant(write_mlx_variant(MODELS / case, tmp_path / "v", 2, 32), MODELS / case, ids_of(case))
    assert (report.tolerance.max_mean_kl, report.tolerance.min_overall_top1) == BOUNDS["2-bit"]
    assert not report.ok and any("mean KL" in f.message for f in report.findings)
    relaxed = verify_quant(tmp_path / "v", MODELS / case, ids_of(case), max_mean_kl=5.0)
    assert relaxed.ok


def test_mixed_precision_as_mlx_lm_writes_it(tmp_path):
    """Per-module {group_size, bits} entries (mlx-lm's mixed_3_6 recipe shape) and a module mapped to false."""
    case = "gemma3_1b_style"
    per = {f"model.layers.{i}.mlp.down_proj": {"group_size": 64, "bits": 6, "mode": "affine"} for i in range(6)}
    per["model.layers.0.self_attn.v_proj"] = {"group_size": 32, "bits": 3, "mode": "affine"}
    per["model.layers.2.self_attn.q_proj"] = False
    v = write_mlx_variant(MODELS / case, tmp_path / "v", 4, 64, per_module=per)
    _, scheme = detect(v)
    assert scheme.bits == 3 and scheme.details["bits_used"] == [3, 4, 6] and scheme.group_size is None
    report = verify_quant(v, MODELS / case, ids_of(case))
    assert report.ok and report.tolerance.max_mean_kl == BOUNDS["3-bit"][0]  # the fewest bits rule the bound
    assert report.variant["quantized_modules"] == 1 + 6 * 7 - 1
    assert report.mean_kl < 1e-7


def test_mlx_lm_fixture_passes_and_a_damaged_copy_fails(cli, tmp_path):
    import shutil

    case = "gemma3_1b_style"
    r = cli("verify", MLX_LM_FIXTURE, "--against", MODELS / case, *id_args(case), "--json")
    assert r.code == 0, r.out + r.err
    report = json.loads(r.out)
    assert report["kind"] == "quant" and report["variant"]["scheme"] == "mlx affine 4-bit g64"
    assert report["variant"]["bits_per_weight"] == 4.5  # 4 bits + a bf16 scale and bias per 64
    assert report["overall"]["top1_agreement"] == 1.0 and report["overall"]["mean_kl"] < 1e-7
    bad = shutil.copytree(MLX_LM_FIXTURE, tmp_path / "bad")
    # one block's scales zeroed in layer 0: that block's weights collapse to its bias
    damage(bad, "model.layers.0.mlp.down_proj.scales", lambda s: np.where(np.arange(s.shape[0])[:, None] < 64, 0, s).astype(s.dtype))
    damage(bad, "model.embed_tokens.scales", lambda s: (s.astype(np.float32) * 0).astype(s.dtype))
    r = cli("verify", bad, "--against", MODELS / case, *id_args(case))
    assert r.code == 1 and "FAIL" in r.out, r.out


def test_a_zeroed_block_of_scales_fails(cli, tmp_path):
    """One block of scales zeroed. The block every prompt reads (BOS's embedding row: MLX quantizes the embedding,
    which is also the tied head) fails the default 8-bit bound. One group in layer 0's down_proj is measured (max
    |Δlogit| and KL rise) but stays within it: the tiny fixtures' random layers add little to the embedding's
    residual stream, and Gemma 2's post-norms undo a scale on a whole matrix."""
    case = "gemma2_gqa_softcap"
    v = write_mlx_variant(MODELS / case, tmp_path / "v", 8, 64)
    intact = verify_quant(v, MODELS / case, ids_of(case))
    assert intact.ok
    emb = tmp_path / "emb"
    import shutil

    shutil.copytree(v, emb)
    damage(emb, "model.embed_tokens.scales", lambda s: np.where(np.arange(s.shape[0])[:, None] == 2, 0, s).astype(s.dtype))
    r = cli("verify", emb, "--against", MODELS / case, *id_args(case))
    assert r.code == 1 and "FAIL" in r.out and "LOGITS002" in r.out
    damage(v, "model.layers.0.mlp.down_proj.scales",  # one group: row 0's first 64 inputs
           lambda s: np.where((np.arange(s.shape[0])[:, None] == 0) & (np.arange(s.shape[1]) == 0), 0, s).astype(s.dtype))
    damaged = verify_quant(v, MODELS / case, ids_of(case))
    assert damaged.mean_kl > intact.mean_kl and damaged.max_abs_diff > intact.max_abs_diff


def test_matches_mlx_lm_forward_on_its_own_file():
    """End to end: the reference on the dequantized mlx-lm file equals mlx-lm's own float32 forward on it."""
    mx = _mx()
    pytest.importorskip("mlx_lm")
    from mlx.utils import tree_map
    from mlx_lm.utils import load_model

    from gemma_ref.config import load_config
    from gemma_ref.model import forward
    from release.weights.quant.weights import QuantWeights

    model, _ = load_model(MLX_LM_FIXTURE)
    model.update(tree_map(lambda x: x.astype(mx.float32) if mx.issubdtype(x.dtype, mx.floating) else x,
                          model.parameters()))
    cfg = load_config(MODELS / "gemma3_1b_style")
    qw = QuantWeights(MLX_LM_FIXTURE, cfg)
    for ids, _ in golden_prompts("gemma3_1b_style"):
        ref = np.array(model(mx.array(ids[None]))[0])
        (ours,) = forward(qw, cfg, [ids])
        assert np.abs(ours - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_mlx_lm_mixed_recipe_is_read(tmp_path):
    pytest.importorskip("mlx_lm")
    from tests.quant_fixtures import write_mlx_lm_variant

    v = write_mlx_lm_variant(MODELS / "gemma3_1b_style", tmp_path / "v", 4, 64, recipe="mixed_3_6")
    report = verify_quant(v, MODELS / "gemma3_1b_style", ids_of("gemma3_1b_style"))
    assert report.ok and report.variant["bits"] == 3 and report.variant["details"]["bits_used"] == [3, 6]


# --- inspect ---------------------------------------------------------------------------------------------------


def test_inspect_names_format_bits_group_and_effective_bits(cli):
    r = cli("inspect", MLX_LM_FIXTURE, "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    q = info["quantization"]
    assert (q["format"], q["method"], q["bits"], q["group_size"]) == ("mlx", "affine", 4, 64)
    assert q["quantized_modules"] == 43 and q["quantized_tensors"] == 129 and q["bits_per_weight"] == 4.5
    assert "model.embed_tokens" in q["modules"] and info["errors"] == []
    assert info["parameters"] == info["parameters_expected_from_config"]
    text = cli("inspect", MLX_LM_FIXTURE)
    assert text.code == 0 and "mlx affine 4-bit g64" in text.out and "4.500 bits per weight" in text.out


def test_verify_without_against_says_to_use_against(cli):
    r = cli("verify", MLX_LM_FIXTURE, "--golden", "tests/data/goldens/gemma3_1b_style.safetensors")
    assert r.code == 2 and "mlx quantized variant" in r.err and "--against ORIGINAL_DIR" in r.err
    r = cli("verify", MLX_LM_FIXTURE)
    assert r.code == 2 and "--against ORIGINAL_DIR" in r.err
