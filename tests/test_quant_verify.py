"""The quantized-variant machinery every format shares: the registry, detection, QuantWeights, bounds, the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from gemma_ref.config import load_config
from gemma_ref.model import forward
from release.errors import InputError
from release.weights import quant
from release.weights.gguf_verify import BOUNDS
from release.weights.quant.base import Scheme
from release.weights.quant.weights import QuantWeights
from release.weights.quant_verify import (
    QUANT_BOUNDS,
    quant_family,
    quant_tolerance,
    verify_quant,
)
from tests.conftest import MODELS
from tests.quant_fixtures import QUANT_DATA, write_mlx_variant
from tests.test_quant_mlx import id_args, ids_of

MLX4 = QUANT_DATA / "gemma3_1b_style-mlx-4bit"


def test_registry_lists_every_present_format_and_skips_absent_modules(monkeypatch):
    names = [m.NAME for m in quant.FORMATS]
    assert names[:2] == ["mlx", "bitsandbytes"] and len(set(names)) == len(names)
    for m in quant.FORMATS:
        for attr in ("NAME", "recognise", "quantized_modules", "stored_names", "dequantize"):
            assert hasattr(m, attr), (m.__name__, attr)
    monkeypatch.setattr(quant, "MODULE_NAMES", ("mlx", "no_such_format"))
    assert [m.NAME for m in quant._load()] == ["mlx"]  # a format module not in the tree (yet) is skipped


def test_a_format_module_that_imports_something_missing_is_an_error(monkeypatch, tmp_path):
    """Only the format module's own absence is skipped; a module that is there but broken is not hidden."""
    (tmp_path / "broken_fmt.py").write_text("import no_such_dependency_xyz\nNAME = 'broken'\n")
    monkeypatch.setattr(quant, "__path__", [*quant.__path__, str(tmp_path)])
    monkeypatch.setattr(quant, "MODULE_NAMES", ("mlx", "broken_fmt"))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        quant._load()
    sys.modules.pop("release.weights.quant.broken_fmt", None)


def test_detect_float_model_is_none_and_unknown_method_names_it(tmp_path):
    assert quant.detect(MODELS / "gemma2_gqa_softcap") is None
    c = json.loads((MODELS / "gemma2_gqa_softcap" / "config.json").read_text())
    with pytest.raises(InputError, match=r"quant_method 'hqq' is not supported \(supported: mlx, bitsandbytes"):
        quant.recognise({**c, "quantization_config": {"quant_method": "hqq", "nbits": 4}}, set())
    # Gemma 3 multimodal configs keep it in text_config
    with pytest.raises(InputError, match="'eetq'"):
        quant.recognise({**c, "text_config": {"quantization_config": {"quant_method": "eetq"}}}, set())


def test_bounds_follow_the_bits_with_int8_looser():
    assert QUANT_BOUNDS == {**BOUNDS}
    for bits in (2, 3, 4, 5, 6, 8):
        assert quant_family(Scheme("mlx", "affine", bits, 64)) == f"{bits}-bit"
    assert quant_family(Scheme("bitsandbytes", "int8", 8, None)) == "6-bit"
    for fmt, method in (("compressed-tensors", "float-quantized"), ("fp8", "fbgemm_fp8"), ("fp8", "fp8-block"), ("mlx", "mxfp8")):
        assert quant_family(Scheme(fmt, method, 8, None)) == "6-bit"  # FP8's 3-bit mantissa: not Q8_0's grid
    assert quant_family(Scheme("compressed-tensors", "pack-quantized", 8, 128)) == "8-bit"
    t = quant_tolerance(Scheme("mlx", "affine", 4, 64), max_kl=0.5)
    assert (t.atol, t.max_mean_kl, t.min_overall_top1, t.max_kl) == (None, *BOUNDS["4-bit"], 0.5)
    with pytest.raises(InputError, match="--max-mean-kl"):
        quant_family(Scheme("x", "y", 7, None))
    assert quant_tolerance(Scheme("x", "y", 7, None), max_mean_kl=1.0, min_top1=0.5).max_mean_kl == 1.0


def test_quant_weights_duck_types_weights_lazily():
    cfg = load_config(MODELS / "gemma3_1b_style")
    w = QuantWeights(MLX4, cfg)
    try:
        layer = w.layer(2)
        assert layer["mlp.down_proj.weight"].dtype == np.float32 and layer["mlp.down_proj.weight"].shape == (64, 128)
        assert layer["input_layernorm.weight"].dtype == np.float32
        rows = w.embedding_rows(np.array([2, 5, 2]))
        assert rows.shape == (3, 64) and np.array_equal(rows[0], rows[2])
        blocks = list(w.embedding_blocks(200))
        assert [s for s, _ in blocks] == [0, 200, 400] and sum(b.shape[0] for _, b in blocks) == cfg.vocab_size
        assert np.array_equal(np.concatenate([b for _, b in blocks])[[2, 5]], rows[:2])
        d = w.describe()
        assert d["quantized_modules"] == 43 and d["bits_per_weight"] == 4.5 and d["tensor_types"] == {"BF16": 86, "U32": 43}
    finally:
        w.close()


def test_the_forward_on_an_8_bit_variant_is_close_to_the_original(tmp_path):
    case = "gemma3_1b_style"
    cfg = load_config(MODELS / case)
    v = write_mlx_variant(MODELS / case, tmp_path / "v", 8, 32)
    from gemma_ref.weights import Weights

    ids = np.array([2, 17, 99, 4])
    (a,) = forward(Weights(MODELS / case, cfg), cfg, [ids])
    (b,) = forward(QuantWeights(v, cfg), cfg, [ids])
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_variant_of_another_model_is_exit_2_with_a_hint(cli):
    r = cli("verify", MLX4, "--against", MODELS / "gemma2_gqa_softcap", "--ids", "2,3")
    assert r.code == 2 and "does not fit the original's config.json" in r.err and "is --against" in r.err


def test_cli_usage_errors(cli, tmp_path):
    case = "gemma3_1b_style"
    r = cli("verify", MLX4, "--against", MODELS / case, "--golden", "x.safetensors")
    assert r.code == 2 and "not --golden or --repo" in r.err
    r = cli("verify", MLX4, "--against", MODELS / case, "--atol", "1e-3")
    assert r.code == 2 and "--atol does not apply" in r.err
    r = cli("verify", MODELS / case, "--against", MODELS / case, "--ids", "2,3")
    assert r.code == 2 and "no quantization recognised" in r.err and "--golden" in r.err
    r = cli("verify", MLX4, "--against", tmp_path / "nope", "--ids", "2,3")
    assert r.code == 2 and "not a directory" in r.err
    r = cli("verify", MLX4, "--against", MODELS / case)  # text prompts need the original's tokenizer
    assert r.code == 2 and "tokenizer" in r.err


def test_json_report_and_out_file(cli, tmp_path):
    case = "gemma3_1b_style"
    out = tmp_path / "r.json"
    r = cli("verify", MLX4, "--against", MODELS / case, *id_args(case), "--json", "--out", out)
    assert r.code == 0
    report = json.loads(r.out)
    assert report == json.loads(out.read_text())
    v = report["variant"]
    assert report["kind"] == "quant" and v["quant"] == v["scheme"] == "mlx affine 4-bit g64"
    assert v["file"] == MLX4.name and v["bits"] == 4 and v["group_size"] == 64 and v["quantized_modules"] == 43
    assert report["tolerance"]["atol"] is None and report["tolerance"]["max_mean_kl"] == BOUNDS["4-bit"][0]
    text = cli("verify", MLX4, "--against", MODELS / case, *id_args(case), "--max-mean-kl", "1e-12")
    assert text.code == 1 and "FAIL" in text.out and "mlx affine 4-bit g64" in text.out


def test_library_call_matches_cli(tmp_path):
    report = verify_quant(MLX4, MODELS / "gemma3_1b_style", ids_of("gemma3_1b_style"))
    assert report.ok and [p.n_tokens for p in report.prompts] == [len(p.ids) for p in ids_of("gemma3_1b_style")]


def test_modules_import_without_the_format_libraries():
    """The dequantizers are NumPy: importing them pulls in none of mlx, torch, bitsandbytes."""
    import subprocess

    code = ("import sys; import release.weights.quant, release.weights.quant.weights, release.weights.quant_verify; "
            "print([m for m in ('mlx', 'mlx.core', 'torch', 'bitsandbytes', 'transformers') if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr
