"""bitsandbytes variants (transformers' save format): the NumPy dequantizer against bitsandbytes, and fidelity.

Exactness (bitsandbytes 0.50.2, CPU backend): bit-exact against ``bitsandbytes.functional.dequantize_4bit``
(nf4 and fp4, with and without double quantization; float32 compare of its output in the quant_state's dtype)
and against ``int8_vectorwise_dequant`` for LLM.int8, on every module of files transformers 5.25 wrote. Those
tests skip without torch + bitsandbytes (+ transformers and accelerate to write fresh files); the verify and
bad-input tests run everywhere on the committed fixtures tests/data/quant/gemma2_gqa_softcap-bnb-{nf4-dq,int8}
(tests/make_quant_fixtures.py).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from release.errors import InputError
from release.weights.gguf_verify import BOUNDS
from release.weights.quant import bitsandbytes as B
from release.weights.quant import detect, recognise
from release.weights.quant_verify import QUANT_BOUNDS, quant_tolerance, verify_quant
from tests.conftest import MODELS, golden_prompts
from tests.quant_fixtures import QUANT_DATA, damage, write_bnb_variant
from tests.test_quant_mlx import id_args, ids_of

CASE = "gemma2_gqa_softcap"
NF4_DQ = QUANT_DATA / f"{CASE}-bnb-nf4-dq"
INT8 = QUANT_DATA / f"{CASE}-bnb-int8"


def _bnb():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bitsandbytes looks for an optional kernel on the Hub, then falls back
    pytest.importorskip("torch")
    return pytest.importorskip("bitsandbytes.functional")


def _writer():
    _bnb()
    for lib in ("transformers", "accelerate"):
        pytest.importorskip(lib)
    return write_bnb_variant


def assert_bit_exact_with_bitsandbytes(variant) -> int:
    """Every quantized module of ``variant`` dequantized by us and by bitsandbytes; returns the module count."""
    F = _bnb()
    import torch
    from safetensors import safe_open

    config = json.loads((variant / "config.json").read_text())
    path = str(variant / "model.safetensors")
    with safe_open(path, "np") as f, safe_open(path, "pt") as pt:
        names = set(f.keys())
        scheme = B.recognise(config, names)
        modules = sorted(B.quantized_modules(scheme, names))
        for m in modules:
            if scheme.method == "int8":
                shape = f.get_slice(m + ".weight").get_shape()
                ref = F.int8_vectorwise_dequant(pt.get_tensor(m + ".weight"), pt.get_tensor(m + ".SCB")).numpy()
            else:
                parts = {k[len(m) + len(".weight."):]: pt.get_tensor(k) for k in names if k.startswith(m + ".weight.")}
                state = F.QuantState.from_dict(parts, device=torch.device("cpu"))
                shape = tuple(state.shape)
                ref = F.dequantize_4bit(pt.get_tensor(m + ".weight"), state).float().numpy()
            ours = B.dequantize(scheme, m, f.get_tensor, tuple(shape))
            assert ours.dtype == np.float32 and np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), m
    return len(modules)


# --- against bitsandbytes --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [NF4_DQ, INT8], ids=["nf4-dq", "int8"])
def test_committed_fixtures_are_bit_exact_against_bitsandbytes(variant):
    assert assert_bit_exact_with_bitsandbytes(variant) == 7 * 4


@pytest.mark.parametrize("kind", ["nf4", "fp4", "fp4-dq"])
def test_fresh_transformers_files_are_bit_exact_and_pass(tmp_path, kind):
    v = _writer()(MODELS / CASE, tmp_path / kind, kind)
    assert assert_bit_exact_with_bitsandbytes(v) == 28
    report = verify_quant(v, MODELS / CASE, ids_of(CASE))
    assert report.ok and report.top1_agreement == 1.0 and report.mean_kl < 2e-3, report.verdict()
    assert report.variant["method"] == kind.split("-")[0] and report.variant["details"]["double_quant"] is kind.endswith("-dq")


def test_rows_are_the_rows_of_the_whole_matrix():
    t = load_file(str(NF4_DQ / "model.safetensors"))
    config = json.loads((NF4_DQ / "config.json").read_text())
    scheme = B.recognise(config, set(t))
    whole = B.dequantize(scheme, "model.layers.1.mlp.down_proj", t.__getitem__, (64, 128))
    rows = np.array([63, 0, 17, 17])
    assert np.array_equal(B.dequantize(scheme, "model.layers.1.mlp.down_proj", t.__getitem__, (64, 128), rows), whole[rows])
    assert np.array_equal(B.dequantize(scheme, "model.layers.1.mlp.down_proj", t.__getitem__, (64, 128), slice(3, 9)),
                          whole[3:9])


# --- fidelity --------------------------------------------------------------------------------------------------


def test_nf4_double_quant_and_int8_pass_their_bounds(cli):
    for variant, fam, ceiling in ((NF4_DQ, "4-bit", 2e-3), (INT8, "6-bit", 1e-4)):
        r = cli("verify", variant, "--against", MODELS / CASE, *id_args(CASE), "--json")
        assert r.code == 0, r.out + r.err
        report = json.loads(r.out)
        assert report["kind"] == "quant" and report["variant"]["format"] == "bitsandbytes"
        assert report["tolerance"]["max_mean_kl"] == QUANT_BOUNDS[fam][0]
        assert report["overall"]["mean_kl"] < ceiling and report["overall"]["top1_agreement"] == 1.0
        assert report["variant"]["quantized_modules"] == 28


def test_int8_is_held_to_the_six_bit_bound():
    _, scheme = detect(INT8)
    assert (scheme.method, scheme.bits, scheme.group_size) == ("int8", 8, None)
    assert quant_tolerance(scheme).max_mean_kl == BOUNDS["6-bit"][0]
    assert quant_tolerance(scheme, max_mean_kl=1e-3, min_top1=0.5).max_mean_kl == 1e-3


@pytest.mark.parametrize("variant,name,fn", [
    # one row's scale zeroed: that row of layer 0's down_proj becomes 0
    (INT8, "model.layers.0.mlp.down_proj.SCB", lambda a: np.where(np.arange(a.size) == 0, 0, a).astype(a.dtype)),
    # the second-level scale of layer 0's o_proj blown up (x50): every block's absmax moves (the offset does not)
    (NF4_DQ, "model.layers.0.self_attn.o_proj.weight.nested_absmax", lambda a: (a * 50).astype(a.dtype)),
], ids=["int8-SCB-row", "nf4-nested-absmax"])
def test_a_damaged_variant_fails_where_the_intact_one_passes(cli, tmp_path, variant, name, fn):
    """The tiny fixtures' random layers add little to the residual stream, so layer-0 damage stays within the
    default bounds; against a bound at 2x the intact variant's mean KL the intact one passes, the damaged one fails."""
    intact = verify_quant(variant, MODELS / CASE, ids_of(CASE))
    bad = shutil.copytree(variant, tmp_path / "bad")
    damage(bad, name, fn)
    bound = f"{2 * intact.mean_kl:.3g}"
    assert cli("verify", variant, "--against", MODELS / CASE, *id_args(CASE), "--max-mean-kl", bound).code == 0
    r = cli("verify", bad, "--against", MODELS / CASE, *id_args(CASE), "--max-mean-kl", bound)
    assert r.code == 1 and "FAIL" in r.out and "LOGITS002" in r.out, r.out


# --- bad input ------------------------------------------------------------------------------------------------


def _copy(tmp_path, variant=NF4_DQ):
    return shutil.copytree(variant, tmp_path / "v")


def _edit(v, fn) -> None:
    t = load_file(str(v / "model.safetensors"))
    fn(t)
    save_file(t, str(v / "model.safetensors"), metadata={"format": "pt"})


def _config(v, **changes) -> None:
    c = json.loads((v / "config.json").read_text())
    c["quantization_config"].update(changes)
    (v / "config.json").write_text(json.dumps(c))


M0 = "model.layers.0.mlp.up_proj"


@pytest.mark.parametrize("what,message", [
    ("no_quant_state", "no tensor holds a quant_state"),
    ("absmax_missing", f"{M0}.weight.absmax is missing"),
    ("packed_shape", f"{M0}.weight holds 4095 bytes"),
    ("state_shape", f"{M0}.weight.quant_state.bitsandbytes__nf4 says shape [64, 128]"),
    ("state_not_json", "is not a JSON quant_state"),
    ("quant_map", f"{M0}.weight.quant_map is not bitsandbytes' nf4 table"),
    ("quant_type", "quant type 'nf3' is not supported (supported: nf4, fp4)"),
    ("both", "both load_in_4bit and load_in_8bit"),
    ("hqq", "quantization_config.quant_method 'hqq' is not supported (supported: mlx, bitsandbytes"),
])
def test_bad_4bit_input_is_exit_2_naming_file_and_tensor(cli, tmp_path, what, message):
    v = _copy(tmp_path)
    if what == "no_quant_state":
        _edit(v, lambda t: [t.pop(k) for k in [k for k in t if ".quant_state." in k]])
    elif what == "absmax_missing":
        _edit(v, lambda t: t.pop(M0 + ".weight.absmax"))
    elif what == "packed_shape":
        _edit(v, lambda t: t.update({M0 + ".weight": t[M0 + ".weight"][:-1].copy()}))
    elif what == "state_shape":
        def swap(t):
            qs = json.loads(bytes(t[M0 + ".weight.quant_state.bitsandbytes__nf4"]).decode())
            qs["shape"] = [64, 128]
            t[M0 + ".weight.quant_state.bitsandbytes__nf4"] = np.frombuffer(json.dumps(qs).encode(), np.uint8).copy()
        _edit(v, swap)
    elif what == "state_not_json":
        _edit(v, lambda t: t.update({M0 + ".weight.quant_state.bitsandbytes__nf4": np.frombuffer(b"\x80\x04K.", np.uint8).copy()}))
    elif what == "quant_map":
        _edit(v, lambda t: t.update({M0 + ".weight.quant_map": (t[M0 + ".weight.quant_map"] * 2).astype(np.float32)}))
    elif what == "quant_type":
        _config(v, bnb_4bit_quant_type="nf3")
    elif what == "both":
        _config(v, load_in_8bit=True)
    else:
        _config(v, quant_method="hqq")
    r = cli("verify", v, "--against", MODELS / CASE, "--ids", "2,3")
    assert r.code == 2 and message in r.err, r.err
    assert str(v) in r.err  # the file (the variant directory or its config.json) is named
    if what == "no_quant_state":
        with pytest.raises(InputError, match="quant_state"):
            detect(v)


@pytest.mark.parametrize("what,message", [
    ("scb_missing", "no tensor is an 8-bit weight's row scale"),
    ("scb_shape", f"{M0}.SCB is float32 [64]; expected float32 [128]"),
    ("weight_format", f"{M0}.weight_format is [1]"),
    ("weight_dtype", f"{M0}.weight is uint8"),
])
def test_bad_int8_input_is_exit_2(cli, tmp_path, what, message):
    v = _copy(tmp_path, INT8)
    if what == "scb_missing":
        _edit(v, lambda t: [t.pop(k) for k in [k for k in t if k.endswith(".SCB")]])
    elif what == "scb_shape":
        _edit(v, lambda t: t.update({M0 + ".SCB": t[M0 + ".SCB"][:64].copy()}))
    elif what == "weight_format":
        _edit(v, lambda t: t.update({M0 + ".weight_format": np.array(1, np.uint8)}))
    else:
        _edit(v, lambda t: t.update({M0 + ".weight": t[M0 + ".weight"].view(np.uint8)}))
    r = cli("verify", v, "--against", MODELS / CASE, "--ids", "2,3")
    assert r.code == 2 and message in r.err, r.err


def test_quantized_looking_tensors_without_a_declaration_are_refused(tmp_path):
    v = _copy(tmp_path, INT8)
    c = json.loads((v / "config.json").read_text())
    del c["quantization_config"]
    (v / "config.json").write_text(json.dumps(c))
    with pytest.raises(InputError, match="look quantized .* declares no quantization"):
        detect(v)
    assert recognise({"model_type": "gemma2"}, {"model.embed_tokens.weight"}) is None  # a float model: None


def test_inspect_names_format_and_effective_bits(cli):
    r = cli("inspect", NF4_DQ, "--json")
    assert r.code == 0, r.err
    q = json.loads(r.out)["quantization"]
    assert (q["format"], q["method"], q["bits"], q["group_size"]) == ("bitsandbytes", "nf4", 4, 64)
    assert q["quantized_modules"] == 28 and q["quantized_tensors"] == 28 * 6 and q["details"]["double_quant"] is True
    # 4 bits + per 64 weights an 8-bit absmax code, plus per module a 1 KB nested code table, a quant_map and the JSON:
    # on the tiny model's 4-8K-weight matrices those fixed costs dominate (a 2304-wide Gemma comes to ~4.13)
    assert 4.1 < q["bits_per_weight"] < 6.1
    r = cli("inspect", INT8, "--json")
    q = json.loads(r.out)["quantization"]
    assert r.code == 0 and (q["method"], q["bits"], q["group_size"]) == ("int8", 8, None)
    assert 8.0 < q["bits_per_weight"] < 8.6  # int8 + a float32 scale per row (+ the weight_format byte)
    assert "bitsandbytes nf4 4-bit g64 + double quantization" in cli("inspect", NF4_DQ).out


def test_verify_golden_on_a_bnb_variant_says_use_against(cli):
    r = cli("verify", INT8, "--golden", f"tests/data/goldens/{CASE}.safetensors")
    assert r.code == 2 and "bitsandbytes quantized variant" in r.err and "--against" in r.err
    assert golden_prompts(CASE)
